//! Host bindings generated from `wit/`. The interfaces come from the `host-imports` world;
//! each plugin world reuses them, so one implementation serves every world.

pub mod imports {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "host-imports",
        with: {
            "weir:plugin/batch.flow-batch": crate::batch::FlowBatch,
        },
    });
}

pub mod flow_processor {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "flow-processor",
        with: {
            "weir:plugin/types": super::imports::weir::plugin::types,
            "weir:plugin/batch": super::imports::weir::plugin::batch,
            "weir:plugin/log": super::imports::weir::plugin::log,
            "weir:plugin/timeline": super::imports::weir::plugin::timeline,
            "weir:plugin/outbound-http": super::imports::weir::plugin::outbound_http,
            "weir:plugin/k8s-objects": super::imports::weir::plugin::k8s_objects,
            "weir:plugin/probe": super::imports::weir::plugin::probe,
            "weir:plugin/capture-control": super::imports::weir::plugin::capture_control,
            "weir:plugin/storage-sampling": super::imports::weir::plugin::storage_sampling,
            "weir:plugin/records": super::imports::weir::plugin::records,
            "weir:plugin/flow-fields": super::imports::weir::plugin::flow_fields,
            "weir:plugin/metrics": super::imports::weir::plugin::metrics,
            "weir:plugin/kv": super::imports::weir::plugin::kv,
            "weir:plugin/clock": super::imports::weir::plugin::clock,
            "weir:plugin/config": super::imports::weir::plugin::config,
        },
    });
}

pub mod visualization {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "visualization",
        with: {
            "weir:plugin/types": super::imports::weir::plugin::types,
            "weir:plugin/log": super::imports::weir::plugin::log,
            "weir:plugin/timeline": super::imports::weir::plugin::timeline,
            "weir:plugin/outbound-http": super::imports::weir::plugin::outbound_http,
            "weir:plugin/k8s-objects": super::imports::weir::plugin::k8s_objects,
            "weir:plugin/probe": super::imports::weir::plugin::probe,
            "weir:plugin/capture-control": super::imports::weir::plugin::capture_control,
            "weir:plugin/records": super::imports::weir::plugin::records,
            "weir:plugin/flow-fields": super::imports::weir::plugin::flow_fields,
            "weir:plugin/kv": super::imports::weir::plugin::kv,
            "weir:plugin/flows": super::imports::weir::plugin::flows,
            "weir:plugin/flow-stats": super::imports::weir::plugin::flow_stats,
            "weir:plugin/clock": super::imports::weir::plugin::clock,
            "weir:plugin/config": super::imports::weir::plugin::config,
        },
    });
}

pub mod alert_rule {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alert-rule",
        with: {
            "weir:plugin/types": super::imports::weir::plugin::types,
            "weir:plugin/log": super::imports::weir::plugin::log,
            "weir:plugin/timeline": super::imports::weir::plugin::timeline,
            "weir:plugin/outbound-http": super::imports::weir::plugin::outbound_http,
            "weir:plugin/k8s-objects": super::imports::weir::plugin::k8s_objects,
            "weir:plugin/probe": super::imports::weir::plugin::probe,
            "weir:plugin/capture-control": super::imports::weir::plugin::capture_control,
            "weir:plugin/records": super::imports::weir::plugin::records,
            "weir:plugin/flow-fields": super::imports::weir::plugin::flow_fields,
            "weir:plugin/metrics": super::imports::weir::plugin::metrics,
            "weir:plugin/kv": super::imports::weir::plugin::kv,
            "weir:plugin/flows": super::imports::weir::plugin::flows,
            "weir:plugin/flow-stats": super::imports::weir::plugin::flow_stats,
            "weir:plugin/clock": super::imports::weir::plugin::clock,
            "weir:plugin/config": super::imports::weir::plugin::config,
        },
    });
}

pub mod correlator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "correlator",
        with: {
            "weir:plugin/types": super::imports::weir::plugin::types,
            "weir:plugin/batch": super::imports::weir::plugin::batch,
            "weir:plugin/log": super::imports::weir::plugin::log,
            "weir:plugin/timeline": super::imports::weir::plugin::timeline,
            "weir:plugin/outbound-http": super::imports::weir::plugin::outbound_http,
            "weir:plugin/k8s-objects": super::imports::weir::plugin::k8s_objects,
            "weir:plugin/probe": super::imports::weir::plugin::probe,
            "weir:plugin/capture-control": super::imports::weir::plugin::capture_control,
            "weir:plugin/records": super::imports::weir::plugin::records,
            "weir:plugin/flow-fields": super::imports::weir::plugin::flow_fields,
            "weir:plugin/flows": super::imports::weir::plugin::flows,
            "weir:plugin/kv": super::imports::weir::plugin::kv,
            "weir:plugin/clock": super::imports::weir::plugin::clock,
            "weir:plugin/config": super::imports::weir::plugin::config,
        },
    });
}

pub mod decoder {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "decoder",
        with: {
            "weir:plugin/types": super::imports::weir::plugin::types,
            "weir:plugin/log": super::imports::weir::plugin::log,
            "weir:plugin/records": super::imports::weir::plugin::records,
            "weir:plugin/config": super::imports::weir::plugin::config,
        },
    });
}

pub mod summarizer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "summarizer",
        with: {
            "weir:plugin/types": super::imports::weir::plugin::types,
            "weir:plugin/batch": super::imports::weir::plugin::batch,
            "weir:plugin/log": super::imports::weir::plugin::log,
            "weir:plugin/timeline": super::imports::weir::plugin::timeline,
            "weir:plugin/records": super::imports::weir::plugin::records,
            "weir:plugin/flow-fields": super::imports::weir::plugin::flow_fields,
            "weir:plugin/kv": super::imports::weir::plugin::kv,
            "weir:plugin/clock": super::imports::weir::plugin::clock,
            "weir:plugin/config": super::imports::weir::plugin::config,
        },
    });
}

pub mod check {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "check",
        with: {
            "weir:plugin/types": super::imports::weir::plugin::types,
            "weir:plugin/log": super::imports::weir::plugin::log,
            "weir:plugin/timeline": super::imports::weir::plugin::timeline,
            "weir:plugin/flows": super::imports::weir::plugin::flows,
            "weir:plugin/flow-stats": super::imports::weir::plugin::flow_stats,
            "weir:plugin/flow-fields": super::imports::weir::plugin::flow_fields,
            "weir:plugin/records": super::imports::weir::plugin::records,
            "weir:plugin/outbound-http": super::imports::weir::plugin::outbound_http,
            "weir:plugin/k8s-objects": super::imports::weir::plugin::k8s_objects,
            "weir:plugin/probe": super::imports::weir::plugin::probe,
            "weir:plugin/capture-control": super::imports::weir::plugin::capture_control,
            "weir:plugin/clock": super::imports::weir::plugin::clock,
            "weir:plugin/config": super::imports::weir::plugin::config,
            "weir:plugin/kv": super::imports::weir::plugin::kv,
        },
    });
}

pub mod exporter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "exporter",
        with: {
            "weir:plugin/types": super::imports::weir::plugin::types,
            "weir:plugin/batch": super::imports::weir::plugin::batch,
            "weir:plugin/log": super::imports::weir::plugin::log,
            "weir:plugin/sink": super::imports::weir::plugin::sink,
            "weir:plugin/records": super::imports::weir::plugin::records,
            "weir:plugin/flow-fields": super::imports::weir::plugin::flow_fields,
            "weir:plugin/metrics": super::imports::weir::plugin::metrics,
            "weir:plugin/kv": super::imports::weir::plugin::kv,
            "weir:plugin/clock": super::imports::weir::plugin::clock,
            "weir:plugin/config": super::imports::weir::plugin::config,
        },
    });
}

pub use imports::weir::plugin::types;
