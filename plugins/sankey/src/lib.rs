//! Bundled visualization: a Sankey of traffic between groups. `group_by` lists one field per
//! column, left to right (default `SrcAddr,DstAddr`): sources and destinations are separate
//! columns, so two-way traffic stays acyclic. Each of the `top` largest groups (by `metric`)
//! adds its value to the links between its consecutive columns, so every column's nodes sum to
//! the same total: the sum of the groups the aggregate API returns for the same request.

use std::collections::BTreeMap;
use weir_plugin_sdk::visualization::{
    self, Grouped, Guest, PluginError, RenderRequest, Sankey, SankeyLink, SankeyNode, View,
    grouped, pick, unit, value_text,
};

struct Plugin;

impl Guest for Plugin {
    fn render(req: RenderRequest) -> Result<View, PluginError> {
        let Grouped {
            fields,
            metric,
            groups,
        } = grouped(
            &req,
            "SrcAddr,DstAddr",
            2..=usize::MAX,
            "at least two fields (one per column)",
            200,
        )?;
        let mut nodes: BTreeMap<String, SankeyNode> = BTreeMap::new();
        let mut links: BTreeMap<(String, String), f64> = BTreeMap::new();
        for g in &groups {
            let value = pick(g, metric) as f64;
            let ids: Vec<String> = g
                .key
                .iter()
                .enumerate()
                .map(|(col, v)| {
                    let label = value_text(v);
                    let id = format!("{col}:{label}");
                    nodes.entry(id.clone()).or_insert_with(|| SankeyNode {
                        id: id.clone(),
                        label: format!("{}={label}", fields[col]),
                        column: col as u32,
                    });
                    id
                })
                .collect();
            for pair in ids.windows(2) {
                *links.entry((pair[0].clone(), pair[1].clone())).or_default() += value;
            }
        }
        Ok(View::Sankey(Sankey {
            nodes: nodes.into_values().collect(),
            links: links
                .into_iter()
                .map(|((source, target), value)| SankeyLink {
                    source,
                    target,
                    value,
                })
                .collect(),
            unit: unit(metric).into(),
        }))
    }
}

visualization::export!(Plugin);
