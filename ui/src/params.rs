//! Reading query-string parameters with errors that name the parameter.

use crate::error::ApiError;
use std::collections::HashMap;
use weir_core::query::{self, Expr, Metric, SortBy, TimeRange};
use weir_core::schema::FieldDef;

pub struct Params {
    map: HashMap<String, String>,
}

impl Params {
    /// Refuses parameters the endpoint does not know (typos should not pass silently).
    pub fn new(map: HashMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(
                k,
                format!(
                    "unknown parameter '{k}'; this endpoint takes {}",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Params { map })
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).map(String::as_str)
    }

    pub fn filter(&self) -> Result<Expr, ApiError> {
        query::parse(self.get("filter").unwrap_or("")).map_err(|e| ApiError::query("filter", e))
    }

    pub fn range(&self) -> Result<TimeRange, ApiError> {
        TimeRange::parse(self.get("from"), self.get("to"), query::now_ms())
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
        if self.get("from").is_none() {
            range.from_ms = range.to_ms.min(query::now_ms()).saturating_sub(3_600_000);
        }
        if range.to_ms == u64::MAX {
            range.to_ms = query::now_ms();
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

    pub fn usize_or(&self, k: &str, default: usize, max: usize) -> Result<usize, ApiError> {
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

    pub fn offset(&self) -> Result<usize, ApiError> {
        match self.get("offset") {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| {
                ApiError::bad_request(
                    "offset",
                    format!("offset must be a whole number, got '{v}'"),
                )
            }),
        }
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
