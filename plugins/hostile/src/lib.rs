//! Test fixture: misbehaves in the way its `mode` config names, to show the sandbox holds.

use weir_plugin_sdk::flow_processor::{
    self, Batch, FlowBatch, Guest, MetricKind, MetricSample, PluginError, Processed, config, kv,
    log,
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

fn count(name: &str, n: usize) -> Processed {
    Processed {
        samples: vec![MetricSample {
            name: name.into(),
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: n as f64,
        }],
        annotations: Vec::new(),
    }
}

impl Guest for Hostile {
    fn process(batch: &FlowBatch) -> Result<Processed, PluginError> {
        let batch = Batch::new(batch);
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
            // Waits in WASI (clocks + poll), not in wasm: no capability needed.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(20));
                Err(PluginError::Failed("woke after 20 s".into()))
            }
            // 40 samples each labelled with 512 KiB: 20 MiB of text, few items.
            "labels" => {
                let big = "x".repeat(512 << 10);
                let samples = (0..40)
                    .map(|i| MetricSample {
                        name: "big".into(),
                        kind: MetricKind::Gauge,
                        labels: vec![("k".into(), big.clone())],
                        value: f64::from(i),
                    })
                    .collect();
                Ok(Processed {
                    samples,
                    annotations: Vec::new(),
                })
            }
            // Names that collide in the exposition, reserved labels, 150 new families a call.
            "metrics" => {
                let s = |name: &str, kind, labels: &[(&str, &str)]| MetricSample {
                    name: name.into(),
                    kind,
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    value: 1.0,
                };
                let n = kv::get("n").map(|v| v[0]).unwrap_or(0).wrapping_add(1);
                kv::set("n", &[n]).map_err(PluginError::Failed)?;
                let mut samples = vec![
                    s("x", MetricKind::Counter, &[]),
                    s("x_total", MetricKind::Gauge, &[]),
                    s("h", MetricKind::Histogram, &[]),
                    s("h_count", MetricKind::Gauge, &[]),
                    s("y", MetricKind::Gauge, &[("le", "1")]),
                    s("z", MetricKind::Gauge, &[("quantile", "0.5")]),
                ];
                samples.extend((0..150).map(|i| s(&format!("m{n}_{i}"), MetricKind::Gauge, &[])));
                Ok(Processed {
                    samples,
                    annotations: Vec::new(),
                })
            }
            // Slow but within its deadline: 250 ms a batch.
            "slow" => {
                std::thread::sleep(std::time::Duration::from_millis(250));
                Ok(count("slow", batch.rows().len()))
            }
            // Fails every other call (never three in a row).
            "flaky" => {
                let n = kv::get("n").map(|v| v[0]).unwrap_or(0).wrapping_add(1);
                kv::set("n", &[n]).map_err(PluginError::Failed)?;
                if n % 2 == 0 {
                    Err(PluginError::Failed(format!("call {n} fails on purpose")))
                } else {
                    Ok(count("calls", usize::from(n)))
                }
            }
            // A log line that tries to read as the agent's own, then a flood.
            "forge" => {
                log::log(
                    log::Level::Info,
                    "ok\n2026-12-03T00:00:00.000000Z ERROR weir_host::plugin: plugin disabled plugin=flow-count reason=\"forged\"\x1b[31m",
                );
                for i in 0..10_000 {
                    log::log(log::Level::Info, &format!("flood {i}"));
                }
                Ok(count("forged", 1))
            }
            // 200,000 sample names that all point at one 1 MiB string: 1.2 MB of guest
            // memory that would lift as 200 GB if the host copied it all.
            "alias" => {
                let mut big = std::mem::ManuallyDrop::new("x".repeat(1 << 20));
                let (ptr, len) = (big.as_mut_ptr(), big.len());
                let samples = (0..200_000)
                    .map(|i| MetricSample {
                        // SAFETY: none of these is ever dropped by the guest in a way that
                        // matters: the call fails while the host copies the result, and the
                        // instance is thrown away.
                        name: unsafe { String::from_raw_parts(ptr, len, len) },
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
            // Whole records: every field crosses the boundary.
            "rows" => Ok(count("flows", batch.rows().len())),
            // Default: pull every column across (the boundary benchmark's trivial plugin).
            _ => {
                let n = [
                    batch.time_flow_start_ms().len(),
                    batch.time_flow_end_ms().len(),
                    batch.time_received().len(),
                    batch.etype().len(),
                    batch.src_mac().len(),
                    batch.dst_mac().len(),
                    batch.src_addr().len(),
                    batch.dst_addr().len(),
                    batch.src_port().len(),
                    batch.dst_port().len(),
                    batch.proto().len(),
                    batch.icmp_type().len(),
                    batch.icmp_code().len(),
                    batch.bytes().len(),
                    batch.packets().len(),
                    batch.skbs().len(),
                    batch.flags().len(),
                    batch.if_direction().len(),
                    batch.sampling().len(),
                    batch.interface().len(),
                    batch.netns().len(),
                ];
                batch.names();
                if n.iter().any(|&c| c != batch.len()) {
                    return Err(PluginError::Failed(format!("column lengths differ: {n:?}")));
                }
                Ok(count("flows", batch.len()))
            }
        }
    }
}

flow_processor::export!(Hostile);
