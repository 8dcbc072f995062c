//! `GET /api/v1/timeline?from=&to=&step=&filter=&max_items=`: flow volume and every lane
//! (alerts, Kubernetes events, spans, logs, plugins' timeline entries, annotations, other
//! records) on one time axis; see `weir_core::timeline`.

use super::blocking;
use crate::AppState;
use crate::error::ApiError;
use crate::params::{FILTER, FROM, Param, Params, STEP, TO};
use axum::Json;
use axum::extract::{Query, State};
use std::collections::HashMap;
use weir_core::timeline::{self, MAX_BUCKETS, Timeline, TimelineError, TimelineRequest};

/// Items listed per lane unless `max_items` says otherwise, and the most it may say.
const DEFAULT_ITEMS: usize = 500;
const MAX_ITEMS: usize = 10_000;

impl From<TimelineError> for ApiError {
    fn from(e: TimelineError) -> Self {
        match e {
            TimelineError::Store(s) => ApiError::from(s),
            TimelineError::Records(r) => ApiError::from(r),
        }
    }
}

/// What `GET /api/v1/timeline` takes.
pub const PARAMS: &[Param] = &[
    FILTER,
    FROM,
    TO,
    STEP,
    Param::count(
        "max_items",
        DEFAULT_ITEMS as u64,
        MAX_ITEMS as u64,
        "The most items listed per lane.",
    ),
];

/// `GET /api/v1/timeline?filter=&from=&to=&step=&max_items=`: flows, alerts and records on one
/// time axis.
pub async fn get(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Timeline>, ApiError> {
    let p = Params::new(q, PARAMS)?;
    let filter = p.filter()?;
    // About 200 buckets by default.
    let (range, step_ms) = p.buckets(200, MAX_BUCKETS)?;
    let max_items = p.count("max_items")?;
    let (store, records, alerts) = (st.store.clone(), st.records.clone(), st.alerts.clone());
    blocking(move || {
        let mut all = Vec::new();
        if let Some(a) = &alerts {
            all = a.history(10_000);
            all.extend(a.active());
        }
        let req = TimelineRequest {
            range,
            step_ms,
            filter,
            max_items,
        };
        Ok(Json(timeline::build(
            &store,
            records.as_deref(),
            &all,
            &req,
        )?))
    })
    .await
}
