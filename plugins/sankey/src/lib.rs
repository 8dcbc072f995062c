//! Bundled visualization: a Sankey of traffic between groups. `group_by` lists one field per
//! column, left to right (default `SrcAddr,DstAddr`): sources and destinations are separate
//! columns, so two-way traffic stays acyclic. Each of the `top` largest groups (by `metric`)
//! adds its value to the links between its consecutive columns, so every column's nodes sum to
//! the same total: the sum of the groups the aggregate API returns for the same request.
//! What the top groups leave out is drawn as an `other` node in every column (id `COL:*`),
//! so each column sums to the window's whole traffic (`others=false` leaves it out).

use std::collections::BTreeMap;
use weir_plugin_sdk::visualization::{
    self, Grouped, Guest, Metric, PluginError, RenderRequest, Sankey, SankeyLink, SankeyNode, View,
    flow_stats, grouped, param, pick, unit, value_text,
};

/// The window's whole traffic by `metric` (one group of everything).
fn total(req: &RenderRequest, metric: Metric) -> Result<u64, PluginError> {
    let all = flow_stats::aggregate(
        &req.filter,
        req.range,
        &[],
        None,
        flow_stats::Rank::Bytes,
        1,
    )
    .map_err(PluginError::InvalidInput)?;
    Ok(all.first().map_or(0, |g| match metric {
        Metric::Bytes => g.bytes,
        Metric::Packets => g.packets,
        Metric::Flows => g.flows,
    }))
}

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
        let shown: u64 = groups.iter().map(|g| pick(g, metric)).sum();
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
        let others = match param(&req, "others") {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(PluginError::InvalidInput(format!(
                    "others: expected true or false, got {other:?}"
                )));
            }
        };
        let rest = if others {
            total(&req, metric)?.saturating_sub(shown)
        } else {
            0
        };
        if rest > 0 {
            let ids: Vec<String> = (0..fields.len()).map(|col| format!("{col}:*")).collect();
            for (col, id) in ids.iter().enumerate() {
                nodes.insert(
                    id.clone(),
                    SankeyNode {
                        id: id.clone(),
                        label: format!("{}=other", fields[col]),
                        column: col as u32,
                    },
                );
            }
            for pair in ids.windows(2) {
                links.insert((pair[0].clone(), pair[1].clone()), rest as f64);
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
