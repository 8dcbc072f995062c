//! A visualization installed at run time (not bundled): the top destination ports as a table.

use weir_plugin_sdk::visualization::{
    self, Grouped, Guest, PluginError, RenderRequest, Table, View, grouped, pick, unit, value_text,
};

struct Plugin;

impl Guest for Plugin {
    fn render(req: RenderRequest) -> Result<View, PluginError> {
        let Grouped { metric, groups, .. } =
            grouped(&req, "DstPort", 1..=1, "exactly one field", 20)?;
        Ok(View::Table(Table {
            columns: vec!["DstPort".into(), unit(metric).into()],
            rows: groups
                .iter()
                .map(|g| {
                    vec![
                        g.key.first().map(value_text).unwrap_or_default(),
                        pick(g, metric).to_string(),
                    ]
                })
                .collect(),
        }))
    }
}

visualization::export!(Plugin);
