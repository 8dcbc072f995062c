//! Bundled visualization: a graph of talkers. `group_by` names the two ends (default
//! `SrcAddr,DstAddr`); an edge per pair among the `top` largest, weighted by `metric`; a node
//! per talker weighted by all its traffic (sent + received). Attributes carry the exact bytes,
//! packets and flows for hover.

use std::collections::BTreeMap;
use weir_plugin_sdk::visualization::{
    self, Graph, GraphEdge, GraphNode, Grouped, Guest, PluginError, RenderRequest, View, grouped,
    pick, value_text,
};

struct Plugin;

#[derive(Default)]
struct Totals {
    weight: f64,
    bytes: u64,
    packets: u64,
    flows: u64,
}

fn attributes(bytes: u64, packets: u64, flows: u64) -> Vec<(String, String)> {
    vec![
        ("bytes".into(), bytes.to_string()),
        ("packets".into(), packets.to_string()),
        ("flows".into(), flows.to_string()),
    ]
}

impl Guest for Plugin {
    fn render(req: RenderRequest) -> Result<View, PluginError> {
        let Grouped { metric, groups, .. } = grouped(
            &req,
            "SrcAddr,DstAddr",
            2..=2,
            "exactly two fields: from, to",
            300,
        )?;
        let mut nodes: BTreeMap<String, Totals> = BTreeMap::new();
        let mut edges = Vec::new();
        for g in &groups {
            let [a, b] = g.key.as_slice() else { continue };
            let (a, b) = (value_text(a), value_text(b));
            let w = pick(g, metric) as f64;
            for end in [&a, &b] {
                let t = nodes.entry(end.clone()).or_default();
                t.weight += w;
                t.bytes += g.bytes;
                t.packets += g.packets;
                t.flows += g.flows;
            }
            edges.push(GraphEdge {
                source: a,
                target: b,
                weight: w,
                attributes: attributes(g.bytes, g.packets, g.flows),
            });
        }
        Ok(View::Graph(Graph {
            nodes: nodes
                .into_iter()
                .map(|(id, t)| GraphNode {
                    label: id.clone(),
                    id,
                    weight: t.weight,
                    attributes: attributes(t.bytes, t.packets, t.flows),
                })
                .collect(),
            edges,
        }))
    }
}

visualization::export!(Plugin);
