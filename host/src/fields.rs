//! The `flow-fields` capability: any field of the schema (`weir_core::schema::FIELDS`) by
//! name, as a column of a batch or of a selection over stored history (on `weir server`, the
//! cluster's, through core's flow-query port). Columns are read
//! with the schema's own readers, so a field added there reaches plugins unchanged.

use crate::batch::FlowBatch;
use crate::bindings::imports::weir::plugin::flow_fields::{
    Column, FieldInfo, FieldKind, Host, Selection, TextColumn,
};
use crate::bindings::types as wit;
use crate::convert::ip_to_wit;
use crate::deadline::within;
use crate::state::{HostState, range_of};
use std::collections::HashMap;
use wasmtime::component::Resource;
use weir_core::Flow;
use weir_core::query;
use weir_core::schema::{self, FIELDS, FieldDef, Reader};

/// Most fields one `select` may ask for.
pub const MAX_SELECT_FIELDS: usize = 64;

/// The schema field called `name` (exactly, or case-insensitively), or why there is none.
pub fn field_named(name: &str) -> Result<&'static FieldDef, String> {
    schema::field(name).ok_or_else(|| schema::unknown_field(name))
}

/// `field` of each flow, as a column.
pub fn column_of<'a>(flows: impl ExactSizeIterator<Item = &'a Flow>, field: &FieldDef) -> Column {
    let n = flows.len();
    match field.read {
        Reader::Number(read) => Column::Numbers(flows.map(read).collect()),
        Reader::Addr(read) => Column::Addrs(flows.map(|f| ip_to_wit(&read(f))).collect()),
        Reader::Text(read) => {
            let mut index = Vec::with_capacity(n);
            let mut values: Vec<String> = Vec::new();
            // A fast hasher, randomly seeded (texts such as DNS names come from traffic).
            let mut ids: HashMap<&str, u32, foldhash::fast::RandomState> = HashMap::default();
            // Most flows carry no value (no DNS name, no Kubernetes name): the empty text's
            // id is kept aside. Flows of a batch mostly repeat the previous value otherwise:
            // compare before hashing (the lengths first, so differing texts compare no bytes).
            let mut empty: Option<u32> = None;
            let mut last: Option<(&str, u32)> = None;
            for f in flows {
                let v = read(f);
                let id = match (v.is_empty(), empty, last) {
                    (true, Some(id), _) => id,
                    (false, _, Some((l, id))) if l.len() == v.len() && l == v => id,
                    _ => {
                        let id = *ids.entry(v).or_insert_with(|| {
                            values.push(v.to_string());
                            values.len() as u32 - 1
                        });
                        if v.is_empty() {
                            empty = Some(id);
                        } else {
                            last = Some((v, id));
                        }
                        id
                    }
                };
                index.push(id);
            }
            Column::Texts(TextColumn { index, values })
        }
    }
}

impl Host for HostState {
    fn fields(&mut self) -> Vec<FieldInfo> {
        FIELDS
            .iter()
            .map(|f| FieldInfo {
                name: f.name.to_string(),
                kind: match f.read {
                    Reader::Number(_) => FieldKind::Number,
                    Reader::Addr(_) => FieldKind::Address,
                    Reader::Text(_) => FieldKind::Text,
                },
                doc: f.doc.to_string(),
            })
            .collect()
    }

    fn read(&mut self, batch: Resource<FlowBatch>, field: String) -> Result<Column, String> {
        let field = field_named(&field)?;
        let flows = self.batch(&batch).columns().flows.clone();
        Ok(column_of(flows.iter(), field))
    }

    fn select(
        &mut self,
        filter: String,
        range: wit::TimeRange,
        fields: Vec<String>,
        limit: u32,
        after_seq: u64,
    ) -> Result<Selection, String> {
        if fields.len() > MAX_SELECT_FIELDS {
            return Err(format!(
                "{} fields asked, at most {MAX_SELECT_FIELDS}",
                fields.len()
            ));
        }
        let defs = fields
            .iter()
            .map(|f| field_named(f))
            .collect::<Result<Vec<_>, _>>()?;
        let filter = query::parse(&filter).map_err(|e| e.to_string())?;
        let range = range_of(&range)?;
        let limit = query::check_limit("limit", limit as usize, query::MAX_LIMIT)?;
        // The store's history, or on `weir server` the cluster's.
        let flows = self.flow_query()?;
        let rows = within(self, "flow-fields.select", move || {
            flows
                .select(&filter, &range, after_seq, limit)
                .map_err(|e| e.to_string())
        })?;
        Ok(Selection {
            seqs: rows.iter().map(|(s, _)| *s).collect(),
            columns: defs
                .iter()
                .map(|d| column_of(rows.iter().map(|(_, f)| f), d))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_follow_the_schema_readers() {
        let mut flows = Vec::new();
        for i in 0..4u64 {
            let mut f = Flow::empty();
            f.time_flow_rtt_ns = 1000 * i;
            f.src_k8s_namespace = if i < 2 { "shop".into() } else { "db".into() };
            f.dst_addr = "198.18.0.9".parse().unwrap();
            flows.push(f);
        }
        let rtt = column_of(flows.iter(), field_named("TimeFlowRttNs").unwrap());
        assert!(matches!(rtt, Column::Numbers(v) if v == vec![0, 1000, 2000, 3000]));
        let ns = column_of(flows.iter(), field_named("srck8s_namespace").unwrap());
        match ns {
            Column::Texts(t) => {
                assert_eq!(t.values, vec!["shop", "db"]);
                assert_eq!(t.index, vec![0, 0, 1, 1]);
            }
            other => panic!("{other:?}"),
        }
        // Empty texts between others (most flows carry none) and values coming back: each
        // text one id, ids in order of first sight.
        let names = ["", "a", "", "bb", "a", "", "", "bb", "cc", ""];
        let mixed: Vec<Flow> = names
            .iter()
            .map(|n| {
                let mut f = Flow::empty();
                f.dns_name = n.to_string();
                f
            })
            .collect();
        match column_of(mixed.iter(), field_named("DnsName").unwrap()) {
            Column::Texts(t) => {
                assert_eq!(t.values, vec!["", "a", "bb", "cc"]);
                assert_eq!(t.index, vec![0, 1, 0, 2, 1, 0, 0, 2, 3, 0]);
            }
            other => panic!("{other:?}"),
        }
        let dst = column_of(flows.iter(), field_named("DstAddr").unwrap());
        assert!(matches!(dst, Column::Addrs(a) if a[0].lo == 0xffff_c612_0009));
        let e = field_named("SrcK8S_Namspace").unwrap_err();
        assert!(e.contains("did you mean SrcK8S_Namespace"), "{e}");
    }
}
