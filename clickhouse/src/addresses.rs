//! Which listings `flows_addr` answers (each flow by its source and by its destination,
//! ordered by address: [`crate::schema`]): those whose filter requires an address or a CIDR
//! (`SrcAddr=`, `DstAddr=` or either side's `Addr=`, alone or `and`ed with more) and names,
//! like the sort, only columns the table repeats ([`ADDRESS_COLUMNS`]). Their count and their
//! page's last sort value are found there, among the address's rows, instead of by scanning
//! the address columns of every flow in the range; the page itself is then read from `flows`
//! where the bound puts it.

use crate::schema::ADDRESS_COLUMNS;
use crate::sql;
use std::net::Ipv6Addr;
use weir_core::query::{Cmp, Expr, Op, Operand};

/// The address (or CIDR) a filter requires, and on which side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// `Some(0)`: the source; `Some(1)`: the destination; `None`: either.
    pub side: Option<u8>,
    pub lo: Ipv6Addr,
    pub hi: Ipv6Addr,
}

impl Lookup {
    /// The condition on `flows_addr` that finds each matching flow once: by its source row
    /// or its destination row, and for either side by the source row when both match.
    pub fn sql(&self) -> String {
        let range = |col: &str| {
            format!(
                "({col} BETWEEN {} AND {})",
                sql::addr(&self.lo),
                sql::addr(&self.hi)
            )
        };
        match self.side {
            Some(s) => format!("{} AND Side = {s}", range("Addr")),
            None => format!(
                "{} AND (Side = 0 OR NOT {})",
                range("Addr"),
                range("`SrcAddr`")
            ),
        }
    }

    /// How many addresses it spans (the narrowest is looked up).
    fn width(&self) -> u128 {
        u128::from(self.hi).saturating_sub(u128::from(self.lo))
    }
}

/// The lookup a listing by `filter`, sorted on `sort`, can take in `flows_addr`: None when
/// the filter requires no address, or names (as the sort may) a column the table lacks.
pub fn lookup(filter: &Expr, sort: &str) -> Option<Lookup> {
    if !ADDRESS_COLUMNS.contains(&sort) || !only_address_columns(filter) {
        return None;
    }
    let mut found = Vec::new();
    required(filter, &mut found);
    found.into_iter().min_by_key(Lookup::width)
}

fn only_address_columns(e: &Expr) -> bool {
    match e {
        Expr::All => true,
        Expr::And(v) | Expr::Or(v) => v.iter().all(only_address_columns),
        Expr::Not(e) => only_address_columns(e),
        Expr::Cmp(c) => ADDRESS_COLUMNS.contains(&c.field.name),
    }
}

/// The address comparisons every match must pass: the filter itself, or a conjunct of it.
fn required(e: &Expr, out: &mut Vec<Lookup>) {
    match e {
        Expr::And(v) => v.iter().for_each(|e| required(e, out)),
        Expr::Cmp(c) => out.extend(side_of(c)),
        // Either side: `Addr=X` is `SrcAddr=X or DstAddr=X`.
        Expr::Or(v) if v.len() == 2 => {
            if let (Expr::Cmp(a), Expr::Cmp(b)) = (&v[0], &v[1])
                && let (Some(x), Some(y)) = (side_of(a), side_of(b))
                && (x.lo, x.hi) == (y.lo, y.hi)
                && x.side != y.side
            {
                out.push(Lookup { side: None, ..x });
            }
        }
        _ => {}
    }
}

fn side_of(c: &Cmp) -> Option<Lookup> {
    let side = match c.field.name {
        "SrcAddr" => 0,
        "DstAddr" => 1,
        _ => return None,
    };
    match (c.op, &c.operand) {
        (Op::Eq, Operand::IpRange(lo, hi)) => Some(Lookup {
            side: Some(side),
            lo: *lo,
            hi: *hi,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::query::parse;

    fn at(q: &str, sort: &str) -> Option<(Option<u8>, String, String)> {
        lookup(&parse(q).expect(q), sort).map(|l| (l.side, l.lo.to_string(), l.hi.to_string()))
    }

    #[test]
    fn a_required_address_is_looked_up_and_anything_else_is_not() {
        let end = "TimeFlowEndMs";
        let one = |s: u8, a: &str| Some((Some(s), a.to_string(), a.to_string()));
        assert_eq!(at("SrcAddr=10.0.7.42", end), one(0, "::ffff:10.0.7.42"));
        assert_eq!(
            at("SrcAddr=10.0.7.42 and DstPort=1024-1063", end),
            one(0, "::ffff:10.0.7.42")
        );
        assert_eq!(
            at("DstAddr=11.0.3.14", "SrcPort"),
            one(1, "::ffff:11.0.3.14")
        );
        assert_eq!(
            at("Addr=2001:db8:9::/48", end),
            Some((
                None,
                "2001:db8:9::".into(),
                "2001:db8:9:ffff:ffff:ffff:ffff:ffff".into()
            ))
        );
        // The narrowest of two.
        assert_eq!(
            at(
                "SrcAddr=10.0.0.0/8 and DstAddr=11.0.3.14 and Proto=tcp",
                end
            ),
            one(1, "::ffff:11.0.3.14")
        );
        assert_eq!(
            at(
                "Node=node-7 and (Proto=tcp or not SrcAddr=10.0.0.1) and DstAddr=11.0.0.1",
                end
            ),
            one(1, "::ffff:11.0.0.1")
        );
        for (q, sort) in [
            // Not required of every match.
            ("SrcAddr=10.0.0.1 or DstPort=53", end),
            ("not SrcAddr=10.0.0.1", end),
            ("SrcAddr=10.0.0.1 or DstAddr=10.0.0.2", end),
            ("Node=node-7", end),
            ("", end),
            // A column flows_addr does not have, in the filter or the sort.
            ("SrcAddr=10.0.0.1 and Bytes>=0", end),
            ("SrcAddr=10.0.0.1", "Bytes"),
        ] {
            assert_eq!(at(q, sort), None, "{q} by {sort}");
        }
    }

    #[test]
    fn each_side_and_either_side_find_each_flow_once() {
        let l = lookup(&parse("Addr=10.0.0.1").expect("either"), "TimeFlowEndMs").expect("l");
        let s = l.sql();
        assert!(
            s.contains("AND (Side = 0 OR NOT (`SrcAddr` BETWEEN "),
            "{s}"
        );
        let l = lookup(&parse("DstAddr=10.0.0.1").expect("dst"), "TimeFlowEndMs").expect("l");
        assert!(l.sql().ends_with("AND Side = 1"), "{}", l.sql());
    }
}
