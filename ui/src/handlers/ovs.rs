//! /api/v1/ovs: Open vSwitch collections (live or imported), decoded into datapath flows,
//! the recirculation tree and graph, OpenFlow tables, churn, and the join to stored flows.
//!
//! Every view picks its collection with `collection=ID`, or `at=TIME` (the newest taken at or
//! before it), else the newest.

use super::blocking;
use crate::AppState;
use crate::error::ApiError;
use crate::params::{Param, Params};
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use weir_core::ovs::views::{FlowFilter, churn, graph, tables, tree};
use weir_core::ovs::{DecodedCollection, DpFlow, OvsError, OvsService, Syntax, join};
use weir_core::query::{Expr, TimeRange, now_ms, parse_time};

impl From<OvsError> for ApiError {
    fn from(e: OvsError) -> Self {
        match e {
            OvsError::Invalid(m) => ApiError::bad_request("body", m),
            OvsError::NotFound(_) => ApiError::not_found(e.to_string()),
            // The decoder failing on a dump (too deep, too big, too slow): the dump's fault.
            OvsError::Decoder(_) => ApiError::plugin_failed(e.to_string()),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

fn service(st: &AppState) -> Result<Arc<OvsService>, ApiError> {
    st.ovs
        .clone()
        .ok_or_else(|| ApiError::unavailable("this agent has no OVS support"))
}

/// A collection id as the store takes it (empty: the default).
const COLLECTION_ID: &str = "^[0-9-]{0,40}$";
const COLLECTION: Param = Param::pattern(
    "collection",
    COLLECTION_ID,
    "A collection's id (GET /api/v1/ovs lists them); default the newest, or the one at `at`.",
);
const AT: Param = Param::text(
    "at",
    "The collection taken at or before this time (RFC 3339, epoch ms or relative).",
);
const OVS_FILTER: Param = Param::text(
    "filter",
    "A datapath flow filter in ovs-flowviz's language, e.g. `recirc_id=0x1 and nw_dst=10.0.0.2`.",
);
/// What `GET /api/v1/ovs/flows` takes.
pub const FLOWS: &[Param] = &[
    COLLECTION,
    AT,
    OVS_FILTER,
    Param::count(
        "limit",
        10_000,
        200_000,
        "The most datapath flows to answer.",
    ),
];
/// What the tree and graph views take.
pub const VIEW: &[Param] = &[COLLECTION, AT, OVS_FILTER];
/// What `GET /api/v1/ovs/openflow` takes.
pub const OPENFLOW: &[Param] = &[COLLECTION, AT];
/// What `GET /api/v1/ovs/churn` takes.
pub const CHURN: &[Param] = &[
    COLLECTION,
    AT,
    Param::pattern(
        "before",
        COLLECTION_ID,
        "The collection to compare with (default the one taken just before).",
    ),
    Param::count(
        "top",
        10,
        1000,
        "How many of the busiest megaflows to list.",
    ),
];
/// What `GET /api/v1/ovs/conversations` takes.
pub const CONVERSATIONS: &[Param] = &[
    COLLECTION,
    AT,
    Param::natural(
        "flow",
        u64::MAX,
        "The datapath flow's index in the collection.",
    )
    .required(),
];
/// What `GET /api/v1/ovs/path` takes: a conversation, as a row of the flows table.
pub const PATH: &[Param] = &[
    COLLECTION,
    AT,
    Param::ip("SrcAddr", "The conversation's source IP address.").required(),
    Param::ip("DstAddr", "The conversation's destination IP address.").required(),
    Param::natural("Proto", 255, "IP protocol number (0-255)."),
    Param::natural("SrcPort", 65535, "Source port (0-65535)."),
    Param::natural("DstPort", 65535, "Destination port (0-65535)."),
    Param::text("Interface", "The interface the capture saw it on."),
    Param::text("SrcMac", "Source MAC address."),
    Param::text("DstMac", "Destination MAC address."),
];

/// The collection a request names (`collection`, `at`) or the newest.
fn pick(svc: &OvsService, p: &Params) -> Result<Arc<DecodedCollection>, ApiError> {
    let id = match (p.given("collection"), p.given("at")) {
        (Some(id), _) => id.to_string(),
        (None, at) => {
            let t = match at {
                Some(a) => Some(
                    parse_time(a, now_ms())
                        .map_err(|e| ApiError::bad_request("at", e.to_string()))?,
                ),
                None => None,
            };
            svc.store.at(t)?.ok_or_else(|| {
                ApiError::not_found(
                    "no OVS collection yet: run the agent with --ovs, or import a dump (weir ovs import)",
                )
            })?
        }
    };
    svc.decoded(&id).map_err(|e| match e {
        OvsError::Invalid(m) => ApiError::bad_request("collection", m),
        other => other.into(),
    })
}

fn filter(p: &Params) -> Result<FlowFilter, ApiError> {
    FlowFilter::parse(p.get("filter").unwrap_or(""))
        .map_err(|e| ApiError::bad_request("filter", e.to_string()))
}

fn head(d: &DecodedCollection) -> Value {
    json!({"id": d.id, "time_ms": d.time_ms, "origin": d.origin, "problems": d.problems,
           "ports": d.ports, "conntrack": d.conntrack, "errors": d.decoded.errors})
}

/// `GET /api/v1/ovs`: live collection status and the collections kept.
pub async fn status(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    blocking(move || {
        Ok(Json(json!({
            "status": svc.status(),
            "collections": svc.store.list()?,
        })))
    })
    .await
}

/// `POST /api/v1/ovs/import`: `{"text": DUMP, "syntax": "dpctl"|"ofctl" (told from the text
/// when absent), "name": datapath or bridge name, "time": when it was taken (default now)}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    text: String,
    #[serde(default)]
    syntax: Option<Syntax>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

pub async fn import(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let b: ImportBody = super::json_object(&body)?;
    let now = now_ms();
    let time_ms = match &b.time {
        None => now,
        Some(t) => parse_time(t, now).map_err(|e| ApiError::bad_request("time", e.to_string()))?,
    };
    if time_ms > now + 60_000 {
        return Err(ApiError::bad_request(
            "time",
            format!("time {time_ms} is in the future: give when the dump was taken"),
        ));
    }
    let name = b.name.clone().unwrap_or_else(|| "imported".into());
    blocking(move || {
        let d = svc.import(&b.text, b.syntax, &name, time_ms)?;
        Ok(Json(json!({
            "id": d.id,
            "time_ms": d.time_ms,
            "flows": d.decoded.flows.len(),
            "openflow": d.decoded.openflow.len(),
            "errors": d.decoded.errors,
        })))
    })
    .await
}

/// `GET /api/v1/ovs/flows?collection=&at=&filter=&limit=`: datapath flows (OVS's own names).
pub async fn flows(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let p = Params::new(q, FLOWS)?;
    let f = filter(&p)?;
    let limit = p.count("limit")?;
    blocking(move || {
        let d = pick(&svc, &p)?;
        let hits: Vec<usize> = (0..d.decoded.flows.len())
            .filter(|&i| f.matches(&d.decoded.flows[i]))
            .collect();
        let matched = hits.len();
        let flows: Vec<Value> = hits
            .into_iter()
            .take(limit)
            .map(|i| (i, &d.decoded.flows[i]))
            .map(|(i, x)| {
                let mut v = x.to_json();
                v["index"] = json!(i);
                v
            })
            .collect();
        Ok(Json(
            json!({"collection": head(&d), "total": matched, "flows": flows}),
        ))
    })
    .await
}

/// `GET /api/v1/ovs/tree`: the datapath tree (in_port, then recirculation).
pub async fn tree_view(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let p = Params::new(q, VIEW)?;
    let f = filter(&p)?;
    blocking(move || {
        let d = pick(&svc, &p)?;
        let t = tree(&d.decoded.flows, &f);
        let summaries: Vec<Value> = d
            .decoded
            .flows
            .iter()
            .map(|x| json!({"ufid": x.ufid, "text": x.text, "actions": x.text.split_once("actions:").map(|(_, a)| a.split(", dp-extra-info:").next().unwrap_or(a).trim()).unwrap_or("")}))
            .collect();
        Ok(Json(json!({"collection": {"id": d.id, "time_ms": d.time_ms}, "tree": t, "flows": summaries})))
    })
    .await
}

/// `GET /api/v1/ovs/graph`: recirculation ids, outputs and conntrack zones as nodes.
pub async fn graph_view(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let p = Params::new(q, VIEW)?;
    let f = filter(&p)?;
    blocking(move || {
        let d = pick(&svc, &p)?;
        let g = graph(&d.decoded.flows, &f);
        Ok(Json(
            json!({"collection": {"id": d.id, "time_ms": d.time_ms}, "graph": g}),
        ))
    })
    .await
}

/// `GET /api/v1/ovs/openflow`: OpenFlow tables and their flows.
pub async fn openflow(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let p = Params::new(q, OPENFLOW)?;
    blocking(move || {
        let d = pick(&svc, &p)?;
        Ok(Json(json!({
            "collection": {"id": d.id, "time_ms": d.time_ms},
            "tables": tables(&d.decoded.openflow),
            "flows": d.decoded.openflow,
            // How many datapath flows were traced to their rules (each flow's `dp_flows`
            // lists those that went through it; untraced ones cannot be told).
            "traced": d.traced,
            "datapath_flows": d.decoded.flows.len(),
            // Groups and meters, each with the rules (places in `flows`) that use it.
            "groups": d.groups,
            "meters": d.meters,
        })))
    })
    .await
}

/// `GET /api/v1/ovs/churn?collection=&before=&top=`: megaflows added and removed between
/// `before` (default: the collection taken just before) and `collection`, and the busiest.
pub async fn churn_view(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let p = Params::new(q, CHURN)?;
    let top = p.count("top")?;
    blocking(move || {
        let after = pick(&svc, &p)?;
        let before_id = match p.given("before") {
            Some(b) if !b.bytes().all(|c| c.is_ascii_digit() || c == b'-') => {
                return Err(ApiError::bad_request(
                    "before",
                    format!("collection id {b:?}: digits and '-' only"),
                ));
            }
            Some(b) => Some(b.to_string()),
            None => svc
                .store
                .list()?
                .into_iter()
                .filter(|c| c.id < after.id)
                .map(|c| c.id)
                .next_back(),
        };
        let Some(before_id) = before_id else {
            return Err(ApiError::not_found("no earlier collection to compare with"));
        };
        let before = svc.decoded(&before_id)?;
        let c = churn(
            &before.decoded.flows,
            before.time_ms,
            &after.decoded.flows,
            after.time_ms,
            top,
        );
        let top: Vec<Value> = c
            .top
            .iter()
            .map(|(i, p)| {
                let mut v = after.decoded.flows[*i].to_json();
                v["packets_between"] = json!(p);
                v
            })
            .collect();
        Ok(Json(
            json!({"before": before_id, "collection": after.id, "churn": c, "top": top}),
        ))
    })
    .await
}

/// Stored flows in the window a datapath flow's counters cover: from the previous
/// collection (or `window_ms` before this one) to this collection.
fn stored_flows(st: &AppState, from_ms: u64, to_ms: u64) -> Result<Vec<weir_core::Flow>, ApiError> {
    let range = TimeRange {
        from_ms: from_ms.saturating_sub(join::SLACK_MS),
        to_ms: to_ms + join::SLACK_MS,
    };
    let rows = st
        .store
        .select(&Expr::All, &range, 0, 10_000)
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(rows.into_iter().map(|(_, f)| f).collect())
}

/// Earlier collections a window looks back through.
const LOOK_BACK: usize = 10;

/// When a collection's window starts: the collection before it (or a minute before).
fn window_start(svc: &OvsService, d: &DecodedCollection) -> Result<u64, ApiError> {
    Ok(svc
        .store
        .list()?
        .into_iter()
        .filter(|c| c.id < d.id)
        .map(|c| c.time_ms)
        .next_back()
        .unwrap_or(d.time_ms.saturating_sub(60_000)))
}

/// Since when a datapath flow's counters have been counting: a megaflow keeps its counters
/// from its install, so the window goes back through the earlier collections that already
/// held it (same ufid, no more packets), up to [`LOOK_BACK`] of them.
fn flow_since(svc: &OvsService, d: &DecodedCollection, dp: &DpFlow) -> Result<u64, ApiError> {
    let earlier: Vec<_> = svc
        .store
        .list()?
        .into_iter()
        .filter(|c| c.id < d.id)
        .collect();
    let mut since = window_start(svc, d)?;
    let Some(ufid) = &dp.ufid else {
        return Ok(since);
    };
    for c in earlier.iter().rev().take(LOOK_BACK) {
        let before = svc.decoded(&c.id)?;
        let held = before
            .decoded
            .flows
            .iter()
            .any(|f| f.ufid.as_ref() == Some(ufid) && f.packets <= dp.packets);
        if !held {
            break;
        }
        // It existed then: it was installed before this collection, after the one before.
        since = earlier
            .iter()
            .filter(|x| x.id < c.id)
            .map(|x| x.time_ms)
            .next_back()
            .unwrap_or(c.time_ms.saturating_sub(60_000));
    }
    Ok(since)
}

/// `GET /api/v1/ovs/conversations?collection=&flow=INDEX`: the stored flows a datapath flow
/// covered, with the megaflow's packets beside the capture's.
pub async fn conversations(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let p = Params::new(q, CONVERSATIONS)?;
    let index = p.natural("flow")?.ok_or_else(|| {
        ApiError::bad_request("flow", "flow (the datapath flow's index) is required")
    })?;
    let index = usize::try_from(index).unwrap_or(usize::MAX);
    blocking(move || {
        let d = pick(&svc, &p)?;
        let dp = d.decoded.flows.get(index).ok_or_else(|| {
            ApiError::bad_request(
                "flow",
                format!(
                    "no datapath flow {index}: the collection has {}",
                    d.decoded.flows.len()
                ),
            )
        })?;
        let from = flow_since(&svc, &d, dp)?;
        let stored = stored_flows(&st, from, d.time_ms)?;
        let hits = join::conversations(dp, &stored, from);
        let captured: u64 = hits.iter().map(|&i| stored[i].packets).sum();
        Ok(Json(json!({
            "flow": dp.to_json(),
            "window": {"from_ms": from, "to_ms": d.time_ms},
            "megaflow_packets": dp.packets,
            "captured_packets": captured,
            "conversations": hits.iter().map(|&i| &stored[i]).collect::<Vec<_>>(),
        })))
    })
    .await
}

/// `GET /api/v1/ovs/path?collection=&SrcAddr=&DstAddr=&Proto=&SrcPort=&DstPort=&Interface=`:
/// the datapath flows that carried a conversation (a row of the flows table), as paths
/// through recirculation.
pub async fn path(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    let p = Params::new(q, PATH)?;
    let mut f = weir_core::Flow::default();
    let addr = |k: &str| -> Result<std::net::IpAddr, ApiError> {
        p.get(k)
            .ok_or_else(|| ApiError::bad_request(k, format!("{k} is required")))?
            .parse()
            .map_err(|_| ApiError::bad_request(k, format!("{k} is not an IP address")))
    };
    f.src_addr = addr("SrcAddr")?;
    f.dst_addr = addr("DstAddr")?;
    // Their maximums (255, 65535) are in the list: the readings cannot be out of range.
    let num = |k: &str| -> Result<u64, ApiError> { Ok(p.natural(k)?.unwrap_or(0)) };
    f.proto = u8::try_from(num("Proto")?).unwrap_or(u8::MAX);
    f.src_port = u16::try_from(num("SrcPort")?).unwrap_or(u16::MAX);
    f.dst_port = u16::try_from(num("DstPort")?).unwrap_or(u16::MAX);
    f.interface = p.get("Interface").unwrap_or("").to_string();
    f.src_mac = p.get("SrcMac").unwrap_or("").to_string();
    f.dst_mac = p.get("DstMac").unwrap_or("").to_string();
    blocking(move || {
        let d = pick(&svc, &p)?;
        let from = window_start(&svc, &d)?;
        // The row's own times do not matter here: any moment of the window.
        f.time_flow_start_ms = from;
        f.time_flow_end_ms = d.time_ms;
        if f.interface.is_empty() {
            // Without an interface, every in_port is a candidate.
            let ports: std::collections::BTreeSet<&str> =
                d.decoded.flows.iter().map(|x| x.in_port.as_str()).collect();
            let mut all: Vec<Vec<join::Step>> = Vec::new();
            for port in ports {
                let mut g = f.clone();
                g.interface = port.to_string();
                for path in join::paths(&g, &d.decoded.flows, from) {
                    // Numeric ports match any interface: keep each path once.
                    if !all
                        .iter()
                        .any(|q| q.iter().map(|s| s.flow).eq(path.iter().map(|s| s.flow)))
                    {
                        all.push(path);
                    }
                }
            }
            return Ok(Json(json!({"collection": d.id, "paths": all})));
        }
        Ok(Json(
            json!({"collection": d.id, "paths": join::paths(&f, &d.decoded.flows, from)}),
        ))
    })
    .await
}
