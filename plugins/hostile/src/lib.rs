//! Test fixture: misbehaves in the way its `mode` config names, to show the sandbox holds.

use weir_plugin_sdk::flow_processor::weir::plugin::{config, kv};
use weir_plugin_sdk::flow_processor::{
    self, Flow, Guest, MetricKind, MetricSample, PluginError, Processed,
};

struct Hostile;

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(n % 256) as usize] = n as u8;
    let mut next = [0u8; 256];
    next.copy_from_slice(pad);
    recurse(n + 1, &mut next) + u64::from(next[0])
}

impl Guest for Hostile {
    fn process(batch: Vec<Flow>) -> Result<Processed, PluginError> {
        let mode = config::get("mode").unwrap_or_default();
        match mode.as_str() {
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => {
                let mut pad = [0u8; 256];
                let n = recurse(0, &mut pad);
                Err(PluginError::Failed(format!("recursion ended at {n}")))
            }
            "panic" => panic!("hostile plugin panics on purpose"),
            "huge" => {
                let samples = (0..300_000)
                    .map(|i| MetricSample {
                        name: "x".into(),
                        kind: MetricKind::Gauge,
                        labels: Vec::new(),
                        value: f64::from(i),
                    })
                    .collect();
                Ok(Processed {
                    samples,
                    annotations: Vec::new(),
                })
            }
            "file" => match std::fs::read("/etc/passwd") {
                Ok(b) => Err(PluginError::Failed(format!(
                    "read {} bytes of /etc/passwd",
                    b.len()
                ))),
                Err(e) => Err(PluginError::Failed(format!("file denied: {e}"))),
            },
            "socket" => match std::net::TcpStream::connect("127.0.0.1:9") {
                Ok(_) => Err(PluginError::Failed("connected a socket".into())),
                Err(e) => Err(PluginError::Failed(format!("socket denied: {e}"))),
            },
            "kv" => {
                let n = kv::get("count").map(|v| v[0]).unwrap_or(0) + 1;
                kv::set("count", &[n]).map_err(PluginError::Failed)?;
                Ok(Processed {
                    samples: vec![MetricSample {
                        name: "calls".into(),
                        kind: MetricKind::Counter,
                        labels: Vec::new(),
                        value: f64::from(n),
                    }],
                    annotations: Vec::new(),
                })
            }
            _ => Ok(Processed {
                samples: vec![MetricSample {
                    name: "flows".into(),
                    kind: MetricKind::Counter,
                    labels: Vec::new(),
                    value: batch.len() as f64,
                }],
                annotations: Vec::new(),
            }),
        }
    }
}

flow_processor::export!(Hostile);
