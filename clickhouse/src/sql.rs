//! weir's filter language as ClickHouse SQL: every operator, ranges, CIDRs (byte ranges of
//! `FixedString(16)` addresses), flag sets and either-side fields (already `or`s in the
//! parsed filter), with the store's time-range semantics. Values are literals the parser has
//! typed (numbers, addresses) or quoted strings with `\` and `'` escaped; column names come
//! from the schema only.

use std::fmt::Write;
use weir_core::query::{Cmp, Expr, Op, Operand, TimeRange};
use weir_core::schema::FieldKind;

/// A string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An address as a `FixedString(16)` literal.
pub fn addr(ip: &std::net::Ipv6Addr) -> String {
    let mut hex = String::with_capacity(32);
    for b in ip.octets() {
        let _ = write!(hex, "{b:02X}");
    }
    format!("toFixedString(unhex('{hex}'), 16)")
}

fn op(o: Op) -> &'static str {
    match o {
        Op::Eq => "=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

fn cmp(c: &Cmp) -> String {
    let col = format!("`{}`", c.field.name);
    match (&c.operand, c.field.kind) {
        (Operand::U64(n), FieldKind::U64) => format!("{col} {} {n}", op(c.op)),
        (Operand::U64Range(lo, hi), FieldKind::U64) => format!("({col} BETWEEN {lo} AND {hi})"),
        (Operand::FlagsAll(m), FieldKind::U64) => format!("(bitAnd({col}, {m}) = {m})"),
        (Operand::IpRange(lo, hi), FieldKind::Ip) => {
            format!("({col} BETWEEN {} AND {})", addr(lo), addr(hi))
        }
        // As the store: a text field matches exactly, whatever the operator.
        (Operand::Str(s), FieldKind::Str) => format!("{col} = {}", quote(s)),
        // An operand of another kind matches nothing (as the store).
        _ => "0".into(),
    }
}

/// The filter as a boolean SQL expression.
pub fn expr(e: &Expr) -> String {
    match e {
        Expr::All => "1".into(),
        Expr::And(v) if v.is_empty() => "1".into(),
        Expr::Or(v) if v.is_empty() => "0".into(),
        Expr::And(v) => format!("({})", v.iter().map(expr).collect::<Vec<_>>().join(" AND ")),
        Expr::Or(v) => format!("({})", v.iter().map(expr).collect::<Vec<_>>().join(" OR ")),
        Expr::Not(e) => format!("(NOT {})", expr(e)),
        Expr::Cmp(c) => cmp(c),
    }
}

/// The WHERE clause of a filter over a time range: flows that started at or before its end
/// and ended at or after its start. The start's bound is also written on the end's minute,
/// the first column of `flows`' sort key, as the key names it: ClickHouse 18.16 does not
/// carry a bound on a column through `intDiv`, and without it reads every granule.
/// `ends_by`, the latest any flow of the range ends (known from how long flows last), bounds
/// the end and its minute from above too.
pub fn where_clause(e: &Expr, range: &TimeRange, ends_by: Option<u64>) -> String {
    let mut parts = Vec::new();
    if range.to_ms != u64::MAX {
        parts.push(format!("TimeFlowStartMs <= {}", range.to_ms));
    }
    if range.from_ms != 0 {
        parts.push(format!(
            "intDiv(TimeFlowEndMs, 60000) >= {} AND TimeFlowEndMs >= {}",
            range.from_ms / 60_000,
            range.from_ms
        ));
    }
    if let Some(b) = ends_by {
        parts.push(format!(
            "intDiv(TimeFlowEndMs, 60000) <= {} AND TimeFlowEndMs <= {b}",
            b / 60_000
        ));
    }
    parts.push(expr(e));
    parts.join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::query::parse;

    #[test]
    fn filters_become_sql() {
        let all = TimeRange {
            from_ms: 0,
            to_ms: u64::MAX,
        };
        let sql = |q: &str| where_clause(&parse(q).expect(q), &all, None);
        assert_eq!(sql(""), "1");
        assert_eq!(sql("DstPort=443"), "`DstPort` = 443");
        assert_eq!(sql("DstPort!=443"), "(NOT `DstPort` = 443)");
        assert_eq!(sql("Bytes>=10"), "`Bytes` >= 10");
        assert_eq!(
            sql("DstPort=8000-9000"),
            "(`DstPort` BETWEEN 8000 AND 9000)"
        );
        assert_eq!(
            sql("SrcAddr=10.0.0.0/8"),
            "(`SrcAddr` BETWEEN toFixedString(unhex('00000000000000000000FFFF0A000000'), 16) AND toFixedString(unhex('00000000000000000000FFFF0AFFFFFF'), 16))"
        );
        assert!(
            sql("Port=53").contains("`SrcPort` = 53 OR `DstPort` = 53"),
            "{}",
            sql("Port=53")
        );
        assert_eq!(sql("Flags=SYN,ACK"), "(bitAnd(`Flags`, 18) = 18)");
        assert_eq!(
            sql("SrcK8S_Namespace=\"it's\""),
            "`SrcK8S_Namespace` = 'it\\'s'"
        );
        assert_eq!(
            sql("Proto=tcp and (DstPort=80 or DstPort=443)"),
            "(`Proto` = 6 AND (`DstPort` = 80 OR `DstPort` = 443))"
        );
        let r = TimeRange {
            from_ms: 5,
            to_ms: 9,
        };
        assert_eq!(
            where_clause(&parse("").expect("empty"), &r, None),
            "TimeFlowStartMs <= 9 AND intDiv(TimeFlowEndMs, 60000) >= 0 AND TimeFlowEndMs >= 5 AND 1"
        );
        assert_eq!(
            where_clause(&parse("").expect("empty"), &r, Some(120_009)),
            "TimeFlowStartMs <= 9 AND intDiv(TimeFlowEndMs, 60000) >= 0 AND TimeFlowEndMs >= 5 \
             AND intDiv(TimeFlowEndMs, 60000) <= 2 AND TimeFlowEndMs <= 120009 AND 1"
        );
        assert_eq!(quote("a\\'b"), "'a\\\\\\'b'");
    }
}
