//! Reading query-string parameters with errors that name the parameter.

use crate::error::ApiError;
use std::collections::HashMap;
use weir_core::query::{self, Expr, Metric, SortBy, TimeRange};
use weir_core::schema::FieldDef;

/// One query parameter an endpoint takes. Each handler reads its query through a list of
/// these, and the OpenAPI description ([`crate::openapi`]) is written from the same lists, so
/// a parameter cannot be taken without being described.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub schema: Schema,
    /// What it means, for the description.
    pub doc: &'static str,
    pub required: bool,
}

/// A parameter's type, as the description gives it.
#[derive(Debug, Clone, Copy)]
pub enum Schema {
    /// Free text (a filter, a time, a list the handler parses and checks).
    Text,
    /// A whole number from 1 to `max`.
    Count { default: u64, max: u64 },
    /// A whole number from 0 to `max`.
    Natural { max: u64 },
    /// Text matching this regular expression (ECMA 262, as JSON Schema has it).
    Pattern(&'static str),
    /// An IPv4 or IPv6 address.
    Ip,
    /// `true` or `false`.
    Flag,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

impl Param {
    const fn of(name: &'static str, schema: Schema, doc: &'static str) -> Param {
        Param {
            name,
            schema,
            doc,
            required: false,
        }
    }

    pub const fn text(name: &'static str, doc: &'static str) -> Param {
        Param::of(name, Schema::Text, doc)
    }

    pub const fn count(name: &'static str, default: u64, max: u64, doc: &'static str) -> Param {
        Param::of(name, Schema::Count { default, max }, doc)
    }

    pub const fn natural(name: &'static str, max: u64, doc: &'static str) -> Param {
        Param::of(name, Schema::Natural { max }, doc)
    }

    pub const fn pattern(name: &'static str, regex: &'static str, doc: &'static str) -> Param {
        Param::of(name, Schema::Pattern(regex), doc)
    }

    pub const fn ip(name: &'static str, doc: &'static str) -> Param {
        Param::of(name, Schema::Ip, doc)
    }

    pub const fn flag(name: &'static str, doc: &'static str) -> Param {
        Param::of(name, Schema::Flag, doc)
    }

    pub const fn one_of(
        name: &'static str,
        words: &'static [&'static str],
        doc: &'static str,
    ) -> Param {
        Param::of(name, Schema::OneOf(words), doc)
    }

    /// The same parameter, required.
    pub const fn required(self) -> Param {
        Param {
            required: true,
            ..self
        }
    }
}

/// `filter`: the flow filter language.
pub const FILTER: Param = Param::text(
    "filter",
    "A flow filter, e.g. `SrcAddr = 10.0.0.1 and DstPort in (53, 443)` (see GET /api/v1/fields).",
);
/// `from`: where a time range starts.
pub const FROM: Param = Param::text(
    "from",
    "Start of the time range: RFC 3339, milliseconds since the epoch, or relative to now (`-1h`).",
);
/// `to`: where a time range ends.
pub const TO: Param = Param::text(
    "to",
    "End of the time range (default now): RFC 3339, epoch milliseconds or relative (`-5m`).",
);
/// `step`: a bucket width.
pub const STEP: Param = Param::text(
    "step",
    "Bucket width as a duration (`10s`, `1m`, `1h`); default: the range over 60 buckets, at least 1s.",
);
/// `group_by`: fields to group by.
pub const GROUP_BY: Param = Param::text(
    "group_by",
    "Comma-separated flow fields to group by (at most 6), e.g. `SrcAddr,DstAddr`.",
);
/// `metric`: what a ranking sums.
pub const METRIC: Param = Param::one_of(
    "metric",
    &["bytes", "packets", "flows", "drop_bytes", "drop_packets"],
    "What to sum and rank by (default bytes).",
);

pub struct Params {
    map: HashMap<String, String>,
    known: &'static [Param],
}

impl Params {
    /// Refuses parameters the endpoint does not know (typos should not pass silently).
    pub fn new(map: HashMap<String, String>, known: &'static [Param]) -> Result<Self, ApiError> {
        if let Some(k) = map
            .keys()
            .find(|k| !known.iter().any(|p| p.name == k.as_str()))
        {
            let names: Vec<&str> = known.iter().map(|p| p.name).collect();
            return Err(ApiError::bad_request(
                k,
                format!(
                    "unknown parameter '{k}'; this endpoint takes {}",
                    names.join(", ")
                ),
            ));
        }
        Ok(Params { map, known })
    }

    /// A [`Schema::Count`] parameter: its default when absent, refused outside 1 to its max.
    pub fn count(&self, k: &str) -> Result<usize, ApiError> {
        let (default, max) = match self.known.iter().find(|p| p.name == k).map(|p| p.schema) {
            Some(Schema::Count { default, max }) => (default as usize, max as usize),
            _ => {
                return Err(ApiError::bad_request(
                    k,
                    format!("{k} is not a count this endpoint takes"),
                ));
            }
        };
        self.usize_or(k, default, max)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).map(String::as_str)
    }

    /// Like [`Params::get`], an empty value as if absent (`from=&to=`, as forms send them).
    pub fn given(&self, k: &str) -> Option<&str> {
        self.get(k).filter(|v| !v.is_empty())
    }

    pub fn filter(&self) -> Result<Expr, ApiError> {
        query::parse(self.get("filter").unwrap_or("")).map_err(|e| ApiError::query("filter", e))
    }

    pub fn range(&self) -> Result<TimeRange, ApiError> {
        TimeRange::parse(self.given("from"), self.given("to"), query::now_ms())
            .map_err(|e| ApiError::bad_request("from", e.message))
    }

    /// The range and step of a bucketed answer: `from` defaults to an hour before `to`, `to`
    /// to now; `step` (a duration) to the range over `default_buckets`, at least a second;
    /// more than `max_buckets` buckets is refused, naming `step`.
    pub fn buckets(
        &self,
        default_buckets: u64,
        max_buckets: u64,
    ) -> Result<(TimeRange, u64), ApiError> {
        let mut range = self.range()?;
        if self.given("from").is_none() {
            range.from_ms = range.to_ms.min(query::now_ms()).saturating_sub(3_600_000);
        }
        if range.to_ms == u64::MAX {
            range.to_ms = query::now_ms();
        }
        if range.from_ms > range.to_ms {
            return Err(ApiError::bad_request(
                "from",
                format!(
                    "from ({}) is after to ({}; now when not given)",
                    range.from_ms, range.to_ms
                ),
            ));
        }
        let span = range.to_ms.saturating_sub(range.from_ms).max(1);
        let step = match self.get("step") {
            Some(s) => query::parse_duration_ms(s)
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "step",
                        format!("step must be a duration like 10s or 1m, got '{s}'"),
                    )
                })?,
            None => (span / default_buckets.max(1)).max(1000),
        };
        let buckets = span.div_ceil(step);
        if buckets > max_buckets {
            return Err(ApiError::bad_request(
                "step",
                format!(
                    "{buckets} buckets is above the maximum of {max_buckets}; use a larger step"
                ),
            ));
        }
        Ok((range, step))
    }

    /// A [`Schema::Flag`]: false when absent; anything but true or false refused.
    pub fn flag(&self, k: &str) -> Result<bool, ApiError> {
        match self.get(k) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(ApiError::bad_request(
                k,
                format!("{k} must be true or false, got '{v}'"),
            )),
        }
    }

    fn usize_or(&self, k: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => {
                let n: usize = v.parse().map_err(|_| {
                    ApiError::bad_request(k, format!("{k} must be a whole number, got '{v}'"))
                })?;
                query::check_limit(k, n, max).map_err(|m| ApiError::bad_request(k, m))
            }
        }
    }

    /// A [`Schema::Natural`] parameter: None when absent; refused when it is not a whole
    /// number or is above the maximum its list gives.
    pub fn natural(&self, k: &str) -> Result<Option<u64>, ApiError> {
        let max = match self.known.iter().find(|p| p.name == k).map(|p| p.schema) {
            Some(Schema::Natural { max }) => max,
            _ => {
                return Err(ApiError::bad_request(
                    k,
                    format!("{k} is not a number this endpoint takes"),
                ));
            }
        };
        let Some(v) = self.get(k) else {
            return Ok(None);
        };
        let n: u64 = v.parse().map_err(|_| {
            let range = if max == u64::MAX {
                String::new()
            } else {
                format!(" from 0 to {max}")
            };
            ApiError::bad_request(k, format!("{k} must be a whole number{range}, got '{v}'"))
        })?;
        if n > max {
            return Err(ApiError::bad_request(
                k,
                format!("{k} {n} is above the maximum of {max}"),
            ));
        }
        Ok(Some(n))
    }

    /// `offset`: 0 when absent; its maximum ([`query::MAX_OFFSET`]) is in the list.
    pub fn offset(&self) -> Result<usize, ApiError> {
        let n = self.natural("offset").map_err(|mut e| {
            if e.message.starts_with("offset ") && e.message.contains(" is above the maximum") {
                e.message
                    .push_str(": narrow the range (from, to) or the filter");
            }
            e
        })?;
        Ok(n.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)))
    }

    pub fn sort(&self) -> Result<SortBy, ApiError> {
        SortBy::parse(self.get("sort").unwrap_or("-TimeFlowEndMs"))
            .map_err(|e| ApiError::query("sort", e))
    }

    pub fn group_by(&self, required: bool) -> Result<Vec<&'static FieldDef>, ApiError> {
        match self.get("group_by") {
            Some(g) if !g.trim().is_empty() => {
                query::parse_group_by(g).map_err(|e| ApiError::query("group_by", e))
            }
            _ if required => Err(ApiError::bad_request(
                "group_by",
                "group_by is required, e.g. group_by=SrcAddr,DstAddr",
            )),
            _ => Ok(Vec::new()),
        }
    }

    pub fn metric(&self) -> Result<Metric, ApiError> {
        self.get("metric")
            .unwrap_or("bytes")
            .parse()
            .map_err(|m: String| ApiError::bad_request("metric", m))
    }
}
