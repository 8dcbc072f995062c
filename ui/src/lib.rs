//! weir's HTTP API (and, later, the web UI) on axum. Never sees wasmtime or aya types: it
//! talks to the store and to the capture through `weir-core`.

pub mod error;
mod handlers;
pub mod limits;
pub mod openapi;
mod params;
pub mod schema_check;
pub mod serve;

pub use error::ApiError;

use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::Instant;
use tokio::sync::broadcast;
use tower_http::trace::TraceLayer;
use weir_core::capture::CaptureSource;
use weir_core::ingest::{Batch, IngestStats};
use weir_core::{Flow, Store};

/// The "live tail" stage after the store (`weir_core::ingest`): stored batches to the
/// clients following them (`weir flows --follow`, the UI), copied only while someone is.
pub struct LiveTail(pub broadcast::Sender<Arc<Vec<Flow>>>);

impl weir_core::ingest::StoredStage for LiveTail {
    fn name(&self) -> &'static str {
        "live-tail"
    }

    fn accept(&self, batch: &weir_core::ingest::Stored<'_>) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(batch.shared());
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    /// Where the flow listing, aggregation and time series read: the store, or a cluster's
    /// ClickHouse under `weir server`.
    pub flows: Arc<dyn weir_core::flowquery::FlowQuery>,
    /// None when the agent runs without capture (e.g. `--no-capture`).
    pub capture: Option<Arc<dyn CaptureSource>>,
    pub ingest: Arc<IngestStats>,
    /// New flows as they are stored, for live tailing.
    pub live: broadcast::Sender<Arc<Vec<Flow>>>,
    /// Plugin management; None when the agent runs without plugins.
    pub plugins: Option<Arc<dyn weir_core::plugins::PluginAdmin>>,
    /// Where imported flows go (the ingest stage); None refuses imports.
    pub ingest_tx: Option<SyncSender<Batch>>,
    pub started: Instant,
    /// When set, every `/api/v1` request must carry `Authorization: Bearer <token>` (the web
    /// page itself loads without it and asks for the token in a login form).
    pub token: Option<Arc<str>>,
    /// The identity source (inventory file), shown by the status API.
    pub enricher: Option<Arc<dyn weir_core::enrich::Enricher>>,
    /// Flow metrics served on `/metrics`; None answers 503.
    pub metrics: Option<Arc<weir_core::metrics::FlowMetrics>>,
    /// Alert state (None: alerting off).
    pub alerts: Option<Arc<weir_core::alerts::AlertStore>>,
    pub alerting: Option<weir_core::notify::AlertingConfig>,
    /// The records store (None: the agent keeps none).
    pub records: Option<Arc<weir_core::records::RecordStore>>,
    /// OVS collections and their decoder (None: no OVS support).
    pub ovs: Option<Arc<weir_core::ovs::OvsService>>,
    /// The network-policy engine and the live objects it reads (None: no policy support).
    pub policy: Option<Arc<weir_core::policy::PolicyService>>,
    /// OTLP spans and logs received and joined to flows (None: not received).
    pub telemetry: Option<Arc<weir_core::telemetry::TelemetryService>>,
    /// Storage sampling (which flows the store keeps), when the agent samples.
    pub sampling: Option<Arc<weir_core::sampling::StorageSampler>>,
    /// Summaries across the cluster: an agent publishing its summarizer windows, or `weir
    /// server` gathering them.
    pub summary_exchange: Option<Arc<weir_core::summaries::ExchangeStatus>>,
    /// The agent's settings (capture, inventory, alerting) as an incident file records them.
    pub settings: Arc<serde_json::Value>,
    /// Set when the agent replays an incident: what it replays; changes are refused.
    pub read_only: Option<Arc<str>>,
    /// The HTTP limits and what each client holds against them.
    pub clients: Arc<limits::Clients>,
}

impl AppState {
    pub fn new(
        store: Arc<Store>,
        capture: Option<Arc<dyn CaptureSource>>,
        ingest: Arc<IngestStats>,
    ) -> Self {
        let (live, _) = broadcast::channel(1024);
        AppState {
            flows: store.clone(),
            store,
            capture,
            ingest,
            live,
            ingest_tx: None,
            plugins: None,
            started: Instant::now(),
            token: None,
            enricher: None,
            metrics: None,
            alerts: None,
            alerting: None,
            records: None,
            ovs: None,
            policy: None,
            telemetry: None,
            sampling: None,
            summary_exchange: None,
            settings: Arc::new(serde_json::Value::Object(Default::default())),
            read_only: None,
            clients: limits::Clients::new(limits::Limits::default()),
        }
    }
}

/// Largest accepted import body.
pub const IMPORT_LIMIT: usize = 64 * 1024 * 1024;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/flows",
            get(handlers::flows::list)
                .post(handlers::flows::import)
                .layer(axum::extract::DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route("/flows/aggregate", get(handlers::flows::aggregate))
        .route("/flows/timeseries", get(handlers::flows::timeseries))
        .route("/flows/follow", get(handlers::flows::follow))
        .route(
            "/plugins",
            get(handlers::plugins::list)
                .post(handlers::plugins::install)
                .layer(axum::extract::DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route(
            "/plugins/{name}",
            axum::routing::delete(handlers::plugins::remove),
        )
        .route("/plugins/{name}/enable", post(handlers::plugins::enable))
        .route("/plugins/{name}/run", post(handlers::plugins::run_plugin))
        .route("/plugins/{name}/snapshot", get(handlers::plugins::snapshot))
        .route("/plugins/{name}/grants", post(handlers::plugins::grants))
        .route(
            "/plugins/{name}/merge",
            // A summarizer keeps at most 16 MiB per window; a merged snapshot may be larger.
            post(handlers::plugins::merge)
                .layer(axum::extract::DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route("/plugins/{name}/disable", post(handlers::plugins::disable))
        .route("/alerts", get(handlers::alerts::list))
        .route("/alerts/history", get(handlers::alerts::history))
        .route("/alerts/evaluate", post(handlers::alerts::evaluate))
        .route("/alerts/silences", post(handlers::alerts::silence))
        .route(
            "/alerts/silences/{id}",
            axum::routing::delete(handlers::alerts::unsilence),
        )
        .route("/records", get(handlers::records::list))
        .route("/ovs", get(handlers::ovs::status))
        .route(
            "/ovs/import",
            post(handlers::ovs::import).layer(axum::extract::DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route("/ovs/flows", get(handlers::ovs::flows))
        .route("/ovs/tree", get(handlers::ovs::tree_view))
        .route("/ovs/graph", get(handlers::ovs::graph_view))
        .route("/ovs/openflow", get(handlers::ovs::openflow))
        .route("/ovs/churn", get(handlers::ovs::churn_view))
        .route("/ovs/conversations", get(handlers::ovs::conversations))
        .route("/ovs/path", get(handlers::ovs::path))
        .route("/policy/describe", post(handlers::policy::describe))
        .route("/policy/table", post(handlers::policy::truth_table))
        .route("/policy/explain", post(handlers::policy::explain))
        .route("/policy/whatif", post(handlers::policy::whatif_run))
        .route("/policy/pod", post(handlers::policy::pod_view))
        .route("/traces/{trace_id}", get(handlers::otlp::trace))
        .route("/timeline", get(handlers::timeline::get))
        .route("/incident", get(handlers::incident::export))
        .route("/fields", get(handlers::meta::fields))
        .route("/status", get(handlers::meta::status))
        .route("/openapi.json", get(handlers::meta::openapi))
        .route("/capture/flush", post(handlers::meta::flush))
        .route(
            "/capture/filters",
            get(handlers::meta::filters).put(handlers::meta::set_filters),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            handlers::auth::require_token,
        ));
    // Prometheus' conventional path; behind the token when the agent has one (scrape with
    // `authorization: {credentials: ...}`).
    let metrics = Router::new()
        .route("/metrics", get(handlers::meta::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            handlers::auth::require_token,
        ));
    Router::new()
        .nest("/api/v1", api)
        .merge(metrics)
        .merge(otlp_routes(state.clone()))
        .route("/healthz", get(handlers::meta::healthz))
        .route("/", get(handlers::meta::index))
        .route("/assets/{file}", get(handlers::meta::asset))
        .fallback(handlers::meta::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            handlers::incident::read_only_guard,
        ))
        .layer(axum::middleware::from_fn(handlers::security::same_origin))
        .layer(axum::middleware::from_fn(handlers::security::headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            handlers::limits::per_request,
        ))
        .with_state(state)
        .layer(TraceLayer::new_for_http())
}

/// The OTLP/HTTP receivers (`/v1/traces`, `/v1/logs`), behind the token when the agent has
/// one (exporters send it with `OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer ...`).
fn otlp_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/traces", post(handlers::otlp::traces))
        .route("/v1/logs", post(handlers::otlp::logs))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            handlers::auth::require_token,
        ))
}

/// The OTLP receivers alone, for a second listener on OTLP's usual port (4318).
pub fn otlp_router(state: AppState) -> Router {
    otlp_routes(state.clone())
        .fallback(handlers::meta::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            handlers::incident::read_only_guard,
        ))
        .layer(axum::middleware::from_fn(handlers::security::same_origin))
        .layer(axum::middleware::from_fn(handlers::security::headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            handlers::limits::per_request,
        ))
        .with_state(state)
        .layer(TraceLayer::new_for_http())
}

#[cfg(test)]
mod tests;
