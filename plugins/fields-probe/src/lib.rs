//! Test fixture and benchmark plugin for the `flow-fields` capability. Config `mode`:
//! - `by-name` (default): reads each field of `fields` from the batch by name and emits
//!   `field_sum` (numbers), `field_distinct` (texts) or `field_count` (addresses) per field;
//! - `columns`: reads five built-in columns instead (the benchmark's baseline);
//! - `select`: pages through stored history matching `filter` with `select` (`page` rows a
//!   call) and emits `select_rows`, `select_pages` and `select_sum` of the first field;
//! - `select-loop`: selects the widest range forever (the deadline must stop it).

use weir_plugin_sdk::flow_processor::{
    self, Batch, Column, FlowBatch, Guest, MetricKind, MetricSample, PluginError, Processed,
    TimeRange, config, flow_fields,
};

struct Probe;

fn sample(name: &str, field: &str, value: f64) -> MetricSample {
    MetricSample {
        name: name.into(),
        kind: MetricKind::Gauge,
        labels: vec![("field".into(), field.into())],
        value,
    }
}

fn fields() -> Vec<String> {
    config::get("fields")
        .unwrap_or_else(|| {
            "TimeFlowRttNs,DnsLatencyUs,PktDropPackets,SrcK8S_Namespace,DstK8S_Namespace".into()
        })
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

fn summary(field: &str, c: &Column) -> MetricSample {
    match c {
        Column::Numbers(v) => sample("field_sum", field, v.iter().sum::<u64>() as f64),
        Column::Addrs(v) => sample("field_count", field, v.len() as f64),
        Column::Texts(t) => sample("field_distinct", field, t.values.len() as f64),
    }
}

impl Guest for Probe {
    fn process(batch: &FlowBatch) -> Result<Processed, PluginError> {
        let batch = Batch::new(batch);
        let mode = config::get("mode").unwrap_or_else(|| "by-name".into());
        let mut samples = Vec::new();
        match mode.as_str() {
            "by-name" => {
                for f in fields() {
                    let c = batch.field(&f)?;
                    if c.len() != batch.len() {
                        return Err(PluginError::Failed(format!(
                            "{f}: {} values for {} flows",
                            c.len(),
                            batch.len()
                        )));
                    }
                    samples.push(summary(&f, &c));
                }
            }
            "columns" => {
                let sums = [
                    ("Bytes", batch.bytes().iter().sum::<u64>()),
                    ("Packets", batch.packets().iter().sum::<u64>()),
                    (
                        "SrcPort",
                        batch.src_port().iter().map(|&p| u64::from(p)).sum(),
                    ),
                    (
                        "DstPort",
                        batch.dst_port().iter().map(|&p| u64::from(p)).sum(),
                    ),
                    ("Proto", batch.proto().iter().map(|&p| u64::from(p)).sum()),
                ];
                for (f, s) in sums {
                    samples.push(sample("field_sum", f, s as f64));
                }
            }
            "select" | "select-loop" => {
                let filter = config::get("filter").unwrap_or_default();
                let page = config::get("page")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(1000);
                let fields = fields();
                let names: Vec<&str> = fields.iter().map(String::as_str).collect();
                let all = TimeRange {
                    from_ms: 0,
                    to_ms: u64::MAX,
                };
                let (mut rows, mut pages, mut sum) = (0usize, 0usize, 0u64);
                loop {
                    flow_processor::select_all(&filter, all, &names, page, 0, |sel| {
                        pages += 1;
                        rows += sel.seqs.len();
                        if let Some(first) = sel.columns.first().and_then(Column::numbers) {
                            sum += first.iter().sum::<u64>();
                        }
                    })
                    .map_err(PluginError::InvalidInput)?;
                    if mode == "select" {
                        break;
                    }
                }
                let first = names.first().copied().unwrap_or("");
                samples.push(sample("select_rows", first, rows as f64));
                samples.push(sample("select_pages", first, pages as f64));
                samples.push(sample("select_sum", first, sum as f64));
            }
            "schema" => {
                let all = flow_fields::fields();
                samples.push(sample("schema_fields", "", all.len() as f64));
            }
            other => return Err(PluginError::InvalidInput(format!("unknown mode {other}"))),
        }
        Ok(Processed {
            samples,
            annotations: Vec::new(),
        })
    }
}

flow_processor::export!(Probe);
