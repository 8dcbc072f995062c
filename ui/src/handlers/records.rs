//! /api/v1/records: the records store (decoded records, events, annotations), read by time,
//! kind, source and labels, paged by sequence number.

use super::blocking;
use crate::AppState;
use crate::error::ApiError;
use crate::params::{FROM, Param, Params, TO};
use axum::Json;
use axum::extract::{Query, State};
use serde::Serialize;
use std::collections::HashMap;
use weir_core::records::{MAX_QUERY, RecordError, RecordQuery, Stored};

/// A page of records; `next_after` resumes after it (absent when the page was not full).
#[derive(Serialize)]
pub struct RecordPage {
    pub records: Vec<Stored>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Invalid(m) => ApiError::bad_request("query", m),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

/// What `GET /api/v1/records` takes.
pub const PARAMS: &[Param] = &[
    FROM,
    TO,
    Param::text(
        "kind",
        "Record kinds, comma-separated (e.g. `ovs-collection,log`).",
    ),
    Param::text(
        "source",
        "Only records from this source (a plugin's name, `ovs`...).",
    ),
    Param::text(
        "label",
        "`name=value` pairs, comma-separated; all must match.",
    ),
    Param::natural(
        "after",
        u64::MAX,
        "Resume after this sequence number (a page's `next_after`).",
    ),
    Param::count(
        "limit",
        100,
        MAX_QUERY as u64,
        "The most records to answer.",
    ),
];

/// `GET /api/v1/records?from=&to=&kind=&source=&label=&after=&limit=`: `kind` a comma list,
/// `label` one or more `name=value` separated by commas (all must match).
pub async fn list(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<RecordPage>, ApiError> {
    let Some(records) = st.records.clone() else {
        return Err(ApiError::unavailable("this agent keeps no records"));
    };
    let p = Params::new(q, PARAMS)?;
    let range = p.range()?;
    let kinds: Vec<String> = p
        .get("kind")
        .map(|k| {
            k.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for k in &kinds {
        weir_core::records::check_kind(k)
            .map_err(|e| ApiError::bad_request("kind", e.to_string()))?;
    }
    let labels = match p.get("label") {
        None => Vec::new(),
        Some(l) => l
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(ApiError::bad_request(
                    "label",
                    format!("label {pair:?}: write name=value"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let after_seq = p.natural("after")?.unwrap_or(0);
    let limit = p.count("limit")?;
    let q = RecordQuery {
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        kinds,
        source: p.get("source").map(str::to_string),
        labels,
        after_seq,
        limit,
    };
    let page = blocking(move || Ok(records.query(&q)?)).await?;
    let next_after = (page.len() == limit)
        .then(|| page.last().map(|s| s.seq))
        .flatten();
    Ok(Json(RecordPage {
        records: page,
        next_after,
    }))
}
