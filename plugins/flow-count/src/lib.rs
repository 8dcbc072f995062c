//! Bundled flow-processor: sums flows, bytes and packets per IP protocol of each batch.

use std::collections::BTreeMap;
use weir_plugin_sdk::flow_processor::{
    self, Flow, Guest, MetricKind, MetricSample, PluginError, Processed,
};

struct FlowCount;

impl Guest for FlowCount {
    fn process(batch: Vec<Flow>) -> Result<Processed, PluginError> {
        let mut per_proto: BTreeMap<u8, (u64, u64, u64)> = BTreeMap::new();
        for f in &batch {
            let scale = u64::from(f.sampling.max(1));
            let e = per_proto.entry(f.proto).or_default();
            e.0 += 1;
            e.1 += f.bytes * scale;
            e.2 += f.packets * scale;
        }
        let mut samples = Vec::new();
        for (proto, (flows, bytes, packets)) in per_proto {
            let labels = vec![("proto".to_string(), proto.to_string())];
            for (name, value) in [
                ("weir_flows", flows),
                ("weir_bytes", bytes),
                ("weir_packets", packets),
            ] {
                samples.push(MetricSample {
                    name: name.into(),
                    kind: MetricKind::Counter,
                    labels: labels.clone(),
                    value: value as f64,
                });
            }
        }
        Ok(Processed {
            samples,
            annotations: Vec::new(),
        })
    }
}

flow_processor::export!(FlowCount);
