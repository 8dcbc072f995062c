//! Bundled visualization: a chord diagram of who talks to whom. `group_by` names the two
//! ends (default `SrcAddr,DstAddr`); `matrix[i][j]` is the traffic from `labels[i]` to
//! `labels[j]` over the `top` largest pairs, so in and out stay told apart.

use std::collections::BTreeMap;
use weir_plugin_sdk::visualization::{
    self, Chord, Grouped, Guest, PluginError, RenderRequest, View, grouped, pick, unit, value_text,
};

struct Plugin;

impl Guest for Plugin {
    fn render(req: RenderRequest) -> Result<View, PluginError> {
        let Grouped { metric, groups, .. } = grouped(
            &req,
            "SrcAddr,DstAddr",
            2..=2,
            "exactly two fields: from, to",
            500,
        )?;
        let pairs: Vec<(String, String, f64)> = groups
            .iter()
            .filter_map(|g| match g.key.as_slice() {
                [a, b] => Some((value_text(a), value_text(b), pick(g, metric) as f64)),
                _ => None,
            })
            .collect();
        // Labels ordered by total traffic, then name, for a stable drawing.
        let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
        for (a, b, v) in &pairs {
            *totals.entry(a).or_default() += v;
            *totals.entry(b).or_default() += v;
        }
        let mut labels: Vec<(&str, f64)> = totals.into_iter().collect();
        labels.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(y.0)));
        let index: BTreeMap<&str, usize> = labels
            .iter()
            .enumerate()
            .map(|(i, (l, _))| (*l, i))
            .collect();
        let mut matrix = vec![vec![0.0; labels.len()]; labels.len()];
        for (a, b, v) in &pairs {
            matrix[index[a.as_str()]][index[b.as_str()]] += v;
        }
        Ok(View::Chord(Chord {
            labels: labels.iter().map(|(l, _)| l.to_string()).collect(),
            matrix,
            unit: unit(metric).into(),
        }))
    }
}

visualization::export!(Plugin);
