//! A weir summarizer: bytes per source address (sampling scaled back), exact and mergeable
//! across nodes. The snapshot is plain text, `address bytes` per line; `query` answers a
//! table sorted by address. (`weir plugin new summarizer NAME` starts from this file; weir
//! builds it as its `src-bytes` test fixture.)

use std::cell::RefCell;
use std::collections::BTreeMap;
use weir_plugin_sdk::summarizer::{self, Batch, FlowBatch, Guest, PluginError, Table, View};

thread_local! {
    static SKETCH: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
}

struct Plugin;

impl Guest for Plugin {
    fn update(batch: &FlowBatch) -> Result<(), PluginError> {
        let batch = Batch::new(batch);
        SKETCH.with_borrow_mut(|s| {
            for (i, a) in batch.src_addr().iter().enumerate() {
                let addr = weir_plugin_sdk::ip(a.hi, a.lo).to_string();
                *s.entry(addr).or_default() += batch.bytes()[i] * batch.scale(i);
            }
        });
        Ok(())
    }

    fn snapshot() -> Vec<u8> {
        SKETCH.with_borrow(|s| {
            s.iter()
                .map(|(a, b)| format!("{a} {b}\n"))
                .collect::<String>()
                .into_bytes()
        })
    }

    fn merge(snapshot: Vec<u8>) -> Result<(), PluginError> {
        let text =
            String::from_utf8(snapshot).map_err(|e| PluginError::InvalidInput(e.to_string()))?;
        SKETCH.with_borrow_mut(|s| {
            for (n, line) in text.lines().enumerate() {
                let (addr, bytes) = line
                    .split_once(' ')
                    .and_then(|(a, b)| Some((a, b.parse::<u64>().ok()?)))
                    .ok_or_else(|| {
                        PluginError::InvalidInput(format!("snapshot line {}: '{line}'", n + 1))
                    })?;
                *s.entry(addr.to_string()).or_default() += bytes;
            }
            Ok(())
        })
    }

    fn query(_request: String) -> Result<View, PluginError> {
        let rows = SKETCH.with_borrow(|s| {
            s.iter()
                .map(|(a, b)| vec![a.clone(), b.to_string()])
                .collect()
        });
        Ok(View::Table(Table {
            columns: vec!["SrcAddr".into(), "Bytes".into()],
            rows,
        }))
    }
}

summarizer::export!(Plugin);
