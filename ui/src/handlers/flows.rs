//! /api/v1/flows: listing, aggregation, time series and live tailing.

use super::blocking;
use crate::AppState;
use crate::error::ApiError;
use crate::params::{FILTER, FROM, GROUP_BY, METRIC, Param, Params, STEP, TO};
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use weir_core::aggregate::{self, TimeSeries, TopGroups};
use weir_core::query::{MAX_BUCKETS, MAX_GROUPS, MAX_LIMIT, MAX_OFFSET};
use weir_core::store::{Buckets, ListRequest, ListResult};

/// What `GET /api/v1/flows` takes.
pub const LIST: &[Param] = &[
    FILTER,
    FROM,
    TO,
    Param::text(
        "sort",
        "A flow field to sort by: `Bytes` or `-Bytes` (descending), `Bytes:asc`; default `-TimeFlowEndMs`.",
    ),
    Param::count("limit", 100, MAX_LIMIT as u64, "The most flows to answer."),
    Param::natural(
        "offset",
        MAX_OFFSET as u64,
        "Flows to skip before the first answered.",
    ),
];

/// `GET /api/v1/flows?filter=&from=&to=&sort=&limit=&offset=`
pub async fn list(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ListResult>, ApiError> {
    let p = Params::new(q, LIST)?;
    let req = ListRequest {
        filter: p.filter()?,
        range: p.range()?,
        sort: p.sort()?,
        limit: p.count("limit")?,
        offset: p.offset()?,
    };
    let flows = st.flows.clone();
    Ok(Json(blocking(move || Ok(flows.list(&req)?)).await?))
}

/// `POST /api/v1/flows`: import flows, as a JSON array or newline-delimited JSON, into the
/// store (the same path captured flows take). Answers once they are durable and queryable
/// (after the next flush), so an acknowledged import survives a crash.
pub async fn import(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(tx) = st.ingest_tx.clone() else {
        return Err(ApiError::unavailable("this agent does not accept imports"));
    };
    let flows = weir_core::import::parse_flows(&body)
        .map_err(|e| ApiError::bad_request("body", e.to_string()))?;
    let n = flows.len();
    blocking(move || {
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        tx.send(weir_core::ingest::Batch {
            flows,
            ack: Some(ack_tx),
        })
        .map_err(|_| ApiError::unavailable("the ingest stage has stopped"))?;
        match ack_rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::unavailable(format!(
                "storing the flows failed: {e}"
            ))),
            Err(_) => Err(ApiError::unavailable(
                "the ingest stage stopped before storing the flows",
            )),
        }
    })
    .await?;
    Ok(Json(serde_json::json!({ "accepted": n })))
}

/// What `GET /api/v1/flows/aggregate` takes.
pub const AGGREGATE: &[Param] = &[
    FILTER,
    FROM,
    TO,
    GROUP_BY.required(),
    METRIC,
    Param::count(
        "top",
        10,
        MAX_GROUPS as u64,
        "How many groups to rank; the rest sum into `others`.",
    ),
];

/// `GET /api/v1/flows/aggregate?group_by=SrcAddr,DstAddr&metric=bytes&top=10&filter=&from=&to=`
pub async fn aggregate(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<TopGroups>, ApiError> {
    let p = Params::new(q, AGGREGATE)?;
    let (filter, range, group_by, metric) =
        (p.filter()?, p.range()?, p.group_by(true)?, p.metric()?);
    let top = p.count("top")?;
    let flows = st.flows.clone();
    Ok(Json(
        blocking(move || {
            let ranked = flows.top(&filter, &range, &group_by, metric, top)?;
            Ok(TopGroups::new(&group_by, metric, ranked))
        })
        .await?,
    ))
}

/// What `GET /api/v1/flows/timeseries` takes.
pub const TIMESERIES: &[Param] = &[
    FILTER,
    FROM,
    TO,
    GROUP_BY,
    METRIC,
    Param::count(
        "top",
        5,
        MAX_GROUPS as u64,
        "How many groups get their own series.",
    ),
    STEP,
];

/// `GET /api/v1/flows/timeseries?from=-1h&step=1m&metric=bytes&group_by=&top=5&filter=`
pub async fn timeseries(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<TimeSeries>, ApiError> {
    let p = Params::new(q, TIMESERIES)?;
    let (filter, group_by, metric) = (p.filter()?, p.group_by(false)?, p.metric()?);
    let top = p.count("top")?;
    let (range, step) = p.buckets(60, MAX_BUCKETS)?;
    let buckets = range
        .to_ms
        .saturating_sub(range.from_ms)
        .max(1)
        .div_ceil(step);
    let origin = range.from_ms;
    let flows = st.flows.clone();
    Ok(Json(
        blocking(move || {
            let groups = flows.aggregate(
                &filter,
                &range,
                &group_by,
                Some(Buckets {
                    origin_ms: origin,
                    step_ms: step,
                }),
            )?;
            Ok(aggregate::time_series(
                groups, &group_by, metric, top, origin, step, buckets,
            ))
        })
        .await?,
    ))
}

/// The most `follow` streams open at once, agent-wide.
pub const MAX_FOLLOWERS: usize = 32;

/// What `GET /api/v1/flows/follow` takes.
pub const FOLLOW: &[Param] = &[FILTER];

/// `GET /api/v1/flows/follow?filter=`: new flows as newline-delimited JSON, until the client
/// goes away. At most [`MAX_FOLLOWERS`] at once, and `--max-follows-per-client` from one
/// client address (429 beyond).
pub async fn follow(
    State(st): State<AppState>,
    ext: axum::http::Extensions,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = Params::new(q, FOLLOW)?;
    let filter = p.filter()?;
    // Each open tail holds a queue of batches and filters every stored flow: bounded.
    if st.live.receiver_count() >= MAX_FOLLOWERS {
        return Err(ApiError::busy(format!(
            "{MAX_FOLLOWERS} live tails are open, the most this agent serves at once: close one (each closes with its connection)"
        )));
    }
    // Held by the stream: released when the client goes away.
    let slot = super::limits::client_ip(&ext)
        .map(|ip| st.clients.follow(ip))
        .transpose()
        .map_err(|_| {
            ApiError::busy(format!(
                "this client has {} live tails open, the most one client may hold (--max-follows-per-client): close one",
                st.clients.limits.follows_per_client
            ))
        })?;
    let stream = BroadcastStream::new(st.live.subscribe()).filter_map(move |batch| {
        let _held = &slot;
        let batch = match batch {
            Ok(b) => b,
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                let line = format!("{{\"lagged\":{n}}}\n");
                return Some(Ok::<_, std::io::Error>(line));
            }
        };
        let mut out = String::new();
        for f in batch.iter().filter(|f| filter.matches(f)) {
            if let Ok(s) = serde_json::to_string(f) {
                out.push_str(&s);
                out.push('\n');
            }
        }
        (!out.is_empty()).then_some(Ok(out))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}
