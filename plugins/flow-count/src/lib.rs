//! Bundled flow-processor: sums flows, bytes and packets per IP protocol of each batch.
//! Reads four columns of the batch; the others never cross the boundary.

use weir_plugin_sdk::flow_processor::{
    self, Batch, FlowBatch, Guest, MetricKind, MetricSample, PluginError, Processed,
};

struct FlowCount;

impl Guest for FlowCount {
    fn process(batch: &FlowBatch) -> Result<Processed, PluginError> {
        let batch = Batch::new(batch);
        // Indexed by protocol number: (flows, bytes, packets).
        let mut per_proto = vec![(0u64, 0u64, 0u64); 256];
        let (proto, bytes, packets, sampling) = (
            batch.proto(),
            batch.bytes(),
            batch.packets(),
            batch.sampling(),
        );
        for i in 0..batch.len() {
            let scale = u64::from(sampling[i].max(1));
            let e = &mut per_proto[usize::from(proto[i])];
            e.0 += 1;
            e.1 += bytes[i] * scale;
            e.2 += packets[i] * scale;
        }
        let mut samples = Vec::new();
        for (proto, &(flows, bytes, packets)) in per_proto.iter().enumerate() {
            if flows == 0 {
                continue;
            }
            let labels = vec![("proto".to_string(), proto.to_string())];
            for (name, value) in [
                ("flow_count_flows", flows),
                ("flow_count_bytes", bytes),
                ("flow_count_packets", packets),
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
