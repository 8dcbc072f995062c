//! weir core: the flow model, storage (sled + tantivy), the query language, aggregation and
//! the ingest pipeline. Depends on none of aya, wasmtime or axum.

pub mod aggregate;
pub mod alerts;
pub mod aside;
pub mod capture;
pub mod control;
pub mod enrich;
pub mod events;
pub mod flow;
pub mod flowquery;
pub mod import;
pub mod incident;
pub mod ingest;
pub mod metrics;
pub mod notify;
pub mod objects;
pub mod ovs;
pub mod plugins;
pub mod policy;
pub mod probe;
pub mod query;
pub mod records;
pub mod sampling;
pub mod schema;
pub mod sink;
pub mod spikes;
pub mod store;
pub mod summaries;
pub mod telemetry;
pub mod timeline;

pub use flow::Flow;
pub use store::{Store, StoreConfig, StoreError};
