//! Guest SDK for weir plugins. Each world of `weir:plugin` (see `wit/`) is a module with its
//! bindings and an `export!` macro; implement the module's `Guest` trait and export it:
//!
//! ```ignore
//! use weir_plugin_sdk::flow_processor::{self, Guest, Processed};
//! struct MyPlugin;
//! impl Guest for MyPlugin {
//!     fn process(batch: Vec<flow_processor::Flow>) -> Result<Processed, flow_processor::PluginError> { .. }
//! }
//! flow_processor::export!(MyPlugin);
//! ```
//! Build with `cargo build --release --target wasm32-wasip2`: the result is a component.

/// The flow-processor world: batches of flows in, metric samples and annotations out.
pub mod flow_processor {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "flow-processor",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::flow_processor",
    });
    pub use self::weir::plugin::types::*;
}

/// The visualization world: a render request in, a view out.
pub mod visualization {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "visualization",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::visualization",
    });
    pub use self::weir::plugin::types::*;
}

/// The alert-rule world: a time window in, alerts out.
pub mod alert_rule {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "alert-rule",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::alert_rule",
    });
    pub use self::weir::plugin::types::*;
}

/// An address from its WIT form (IPv4-mapped addresses become IPv4).
pub fn ip(hi: u64, lo: u64) -> std::net::IpAddr {
    let v6 = std::net::Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo));
    match v6.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(v6),
    }
}
