//! Test fixture: a visualization returning a view as big as asked, to show the web UI copes
//! (draws it, or says it is too big) instead of throwing. The page sends only `group_by`,
//! `metric` and `top`, so `top` is the size (default 150,000) and `group_by=table` asks for a
//! table instead of a graph.

use weir_plugin_sdk::visualization::{
    self, Graph, GraphNode, Guest, PluginError, RenderRequest, Table, View, param,
};

struct Plugin;

impl Guest for Plugin {
    fn render(req: RenderRequest) -> Result<View, PluginError> {
        let n: u32 = param(&req, "top")
            .and_then(|v| v.parse().ok())
            .unwrap_or(150_000);
        Ok(if param(&req, "group_by") == Some("table") {
            View::Table(Table {
                columns: vec!["row".into()],
                rows: (0..n).map(|i| vec![i.to_string()]).collect(),
            })
        } else {
            View::Graph(Graph {
                nodes: (0..n)
                    .map(|i| GraphNode {
                        id: format!("n{i}"),
                        label: String::new(),
                        weight: f64::from(i),
                        attributes: Vec::new(),
                    })
                    .collect(),
                edges: Vec::new(),
            })
        })
    }
}

visualization::export!(Plugin);
