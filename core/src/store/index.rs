//! The tantivy side of a partition: the schema built from [`crate::schema::FIELDS`], documents
//! built from flows, and filters compiled into tantivy queries.

use crate::flow::Flow;
use crate::query::{Cmp, Expr, Op, Operand, TimeRange};
use crate::schema::{FIELDS, FieldDef, FieldKind, Value};
use std::ops::Bound;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, ExistsQuery, Occur, Query, RangeQuery, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, IpAddrOptions, NumericOptions, Schema, TextFieldIndexing,
    TextOptions,
};
use tantivy::{TantivyDocument, Term};

/// Name of the internal field holding the record's sequence number (its sled key).
pub const SEQ_FIELD: &str = "_seq";

/// Tantivy field handles, in the order of [`FIELDS`].
#[derive(Clone)]
pub struct IndexFields {
    pub schema: Schema,
    pub fields: Vec<Field>,
    pub seq: Field,
}

/// Fields every document carries even when zero (the time range is a query on them).
const ALWAYS_WRITTEN: [&str; 2] = ["TimeFlowStartMs", "TimeFlowEndMs"];

impl IndexFields {
    /// Builds the schema from the declarative field list.
    pub fn new() -> Self {
        let mut b = Schema::builder();
        let fields = FIELDS
            .iter()
            .map(|f| match f.kind {
                FieldKind::U64 => {
                    let mut o = NumericOptions::default().set_fast();
                    if f.indexed {
                        o = o.set_indexed();
                    }
                    b.add_u64_field(f.name, o)
                }
                FieldKind::Ip => {
                    let mut o = IpAddrOptions::default().set_fast();
                    if f.indexed {
                        o = o.set_indexed();
                    }
                    b.add_ip_addr_field(f.name, o)
                }
                FieldKind::Str if f.indexed => b.add_text_field(
                    f.name,
                    TextOptions::default()
                        .set_indexing_options(
                            TextFieldIndexing::default()
                                .set_tokenizer("raw")
                                .set_index_option(IndexRecordOption::Basic)
                                .set_fieldnorms(false),
                        )
                        .set_fast("raw"),
                ),
                FieldKind::Str => b.add_text_field(f.name, TextOptions::default().set_fast("raw")),
            })
            .collect();
        let seq = b.add_u64_field(SEQ_FIELD, FAST);
        IndexFields {
            schema: b.build(),
            fields,
            seq,
        }
    }

    fn field_of(&self, def: &FieldDef) -> Field {
        let i = FIELDS
            .iter()
            .position(|f| std::ptr::eq(f, def))
            .unwrap_or_default();
        self.fields[i]
    }

    /// The document indexed for one stored flow. Zero numbers and empty strings are left out
    /// (most flows carry no drops, RTT, DNS or Kubernetes names, and every value costs the
    /// indexer): readers take a missing value as 0 or "", and [`IndexFields::compile`] matches
    /// missing values wherever 0 or "" would match. The time fields are always written.
    pub fn document(&self, seq: u64, flow: &Flow) -> TantivyDocument {
        let mut d = TantivyDocument::default();
        for (def, field) in FIELDS.iter().zip(&self.fields) {
            let always = ALWAYS_WRITTEN.contains(&def.name);
            match (def.get)(flow) {
                Value::U64(0) if !always => {}
                Value::Str(s) if s.is_empty() && !always => {}
                Value::U64(n) => d.add_u64(*field, n),
                Value::Ip(ip) => d.add_ip_addr(*field, ip),
                Value::Str(s) => d.add_text(*field, s),
            }
        }
        d.add_u64(self.seq, seq);
        d
    }

    /// The query for a filter over a time range.
    pub fn compile(&self, expr: &Expr, range: &TimeRange) -> Box<dyn Query> {
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let start = self.by_name("TimeFlowStartMs");
        let end = self.by_name("TimeFlowEndMs");
        if range.to_ms != u64::MAX {
            must.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Unbounded,
                    Bound::Included(Term::from_field_u64(start, range.to_ms)),
                )),
            ));
        }
        if range.from_ms != 0 {
            must.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_u64(end, range.from_ms)),
                    Bound::Unbounded,
                )),
            ));
        }
        if *expr != Expr::All || must.is_empty() {
            must.push((Occur::Must, self.compile_expr(expr)));
        }
        if must.len() == 1 {
            must.remove(0).1
        } else {
            Box::new(BooleanQuery::new(must))
        }
    }

    fn by_name(&self, name: &str) -> Field {
        let i = FIELDS
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_default();
        self.fields[i]
    }

    fn compile_expr(&self, expr: &Expr) -> Box<dyn Query> {
        match expr {
            Expr::All => Box::new(AllQuery),
            Expr::And(v) => Box::new(BooleanQuery::new(
                v.iter()
                    .map(|e| (Occur::Must, self.compile_expr(e)))
                    .collect(),
            )),
            Expr::Or(v) => Box::new(BooleanQuery::new(
                v.iter()
                    .map(|e| (Occur::Should, self.compile_expr(e)))
                    .collect(),
            )),
            Expr::Not(e) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.compile_expr(e)),
            ])),
            Expr::Cmp(c) => self.compile_cmp(c),
        }
    }

    /// A comparison; where 0 or "" satisfies it, documents without the field (see
    /// [`IndexFields::document`]) match too.
    fn compile_cmp(&self, c: &Cmp) -> Box<dyn Query> {
        let q = self.compile_present(c);
        let zero_matches = match (&c.operand, c.op) {
            (Operand::U64(n), Op::Eq | Op::Ge) => *n == 0,
            (Operand::U64(n), Op::Lt) => *n > 0,
            (Operand::U64(_), Op::Le) => true,
            (Operand::U64(_), Op::Gt) => false,
            (Operand::U64Range(lo, _), _) => *lo == 0,
            (Operand::Str(s), _) => s.is_empty(),
            (Operand::FlagsAll(mask), _) => *mask == 0,
            (Operand::IpRange(..), _) => false,
        };
        if !zero_matches || ALWAYS_WRITTEN.contains(&c.field.name) {
            return q;
        }
        let missing: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
            (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
            (
                Occur::MustNot,
                Box::new(ExistsQuery::new(c.field.name.to_string(), false)),
            ),
        ]));
        Box::new(BooleanQuery::new(vec![
            (Occur::Should, q),
            (Occur::Should, missing),
        ]))
    }

    /// A comparison over the values documents carry.
    fn compile_present(&self, c: &Cmp) -> Box<dyn Query> {
        let f = self.field_of(c.field);
        let term = |v: &Value| -> Term {
            match v {
                Value::U64(n) => Term::from_field_u64(f, *n),
                Value::Ip(ip) => Term::from_field_ip_addr(f, *ip),
                Value::Str(s) => Term::from_field_text(f, s),
            }
        };
        let exact = |v: Value| -> Box<dyn Query> {
            if c.field.indexed {
                Box::new(TermQuery::new(term(&v), IndexRecordOption::Basic))
            } else {
                Box::new(RangeQuery::new(
                    Bound::Included(term(&v)),
                    Bound::Included(term(&v)),
                ))
            }
        };
        let range = |lo: Bound<Value>, hi: Bound<Value>| -> Box<dyn Query> {
            Box::new(RangeQuery::new(
                lo.as_ref().map(term),
                hi.as_ref().map(term),
            ))
        };
        match &c.operand {
            Operand::U64(n) => match c.op {
                Op::Eq => exact(Value::U64(*n)),
                Op::Lt if *n == 0 => Box::new(EmptyQuery),
                Op::Lt => range(Bound::Unbounded, Bound::Excluded(Value::U64(*n))),
                Op::Le => range(Bound::Unbounded, Bound::Included(Value::U64(*n))),
                Op::Gt if *n == u64::MAX => Box::new(EmptyQuery),
                Op::Gt => range(Bound::Excluded(Value::U64(*n)), Bound::Unbounded),
                Op::Ge => range(Bound::Included(Value::U64(*n)), Bound::Unbounded),
            },
            Operand::U64Range(lo, hi) => range(
                Bound::Included(Value::U64(*lo)),
                Bound::Included(Value::U64(*hi)),
            ),
            Operand::IpRange(lo, hi) if lo == hi => exact(Value::Ip(*lo)),
            Operand::IpRange(lo, hi) => range(
                Bound::Included(Value::Ip(*lo)),
                Bound::Included(Value::Ip(*hi)),
            ),
            Operand::Str(s) => exact(Value::Str(s.clone())),
            Operand::FlagsAll(mask) => {
                // Every 16-bit value holding the mask's bits (the OPEN bit 0x1000 and any
                // bit an import sets, not only the nine TCP flags: found by fuzzing).
                let m = u64::from(*mask);
                let terms = (0..=u64::from(u16::MAX))
                    .filter(|v| v & m == m)
                    .map(|v| Term::from_field_u64(f, v));
                Box::new(TermSetQuery::new(terms))
            }
        }
    }
}

impl Default for IndexFields {
    fn default() -> Self {
        Self::new()
    }
}
