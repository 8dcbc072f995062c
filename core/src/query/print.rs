//! A parsed filter written back as filter text: `parse(&e.to_string()) == Ok(e)` for every
//! filter [`parse`](super::parse) returns (the fuzz target `filter` checks it), so the API and
//! plugins can show the filter they actually ran, canonically spelled.
//!
//! Canonical means: field names as the schema spells them, numbers in decimal, named values
//! (`tcp`, `egress`) as their numbers, addresses as `a.b.c.d/n` or `v6/n`, text always quoted,
//! `!=` as `not F=v`, and every nested `and`/`or` in parentheses. The one expression that has no
//! spelling is a nested [`Expr::All`] (a `TraceId` comparison checked for syntax only): it is
//! written `TraceId=*` and does not parse back.

use super::parse::{Cmp, Expr, Op, Operand};
use crate::flow::flags_text;
use std::fmt::{self, Display, Formatter, Write};
use std::net::Ipv6Addr;

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => Ok(()),
            other => nested(other, f),
        }
    }
}

/// One operand of `and`/`or`/`not`: compound expressions in parentheses.
fn nested(e: &Expr, f: &mut Formatter<'_>) -> fmt::Result {
    match e {
        Expr::All => f.write_str("TraceId=*"),
        Expr::And(parts) => join(parts, " and ", f),
        Expr::Or(parts) => join(parts, " or ", f),
        Expr::Not(inner) => {
            f.write_str("not ")?;
            grouped(inner, f)
        }
        Expr::Cmp(c) => c.fmt(f),
    }
}

fn grouped(e: &Expr, f: &mut Formatter<'_>) -> fmt::Result {
    if matches!(e, Expr::And(_) | Expr::Or(_)) {
        f.write_char('(')?;
        nested(e, f)?;
        f.write_char(')')
    } else {
        nested(e, f)
    }
}

fn join(parts: &[Expr], sep: &str, f: &mut Formatter<'_>) -> fmt::Result {
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        grouped(p, f)?;
    }
    Ok(())
}

impl Display for Cmp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Eq => "=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        };
        write!(f, "{}{op}", self.field.name)?;
        match &self.operand {
            Operand::U64(n) => write!(f, "{n}"),
            Operand::U64Range(lo, hi) => write!(f, "{lo}-{hi}"),
            Operand::IpRange(lo, hi) => network(*lo, *hi, f),
            Operand::Str(s) => quoted(s, f),
            Operand::FlagsAll(mask) => f.write_str(&flags_text(*mask)),
        }
    }
}

/// The network whose first and last addresses are `lo` and `hi`, IPv4 when it lies in the
/// IPv4-mapped range.
fn network(lo: Ipv6Addr, hi: Ipv6Addr, f: &mut Formatter<'_>) -> fmt::Result {
    let bits = (u128::from(lo) ^ u128::from(hi)).leading_zeros();
    match lo.to_ipv4_mapped() {
        Some(v4) if bits >= 96 => write!(f, "{v4}/{}", bits - 96),
        _ => write!(f, "{lo}/{bits}"),
    }
}

fn quoted(s: &str, f: &mut Formatter<'_>) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    #[test]
    fn printed_filters_parse_back_to_themselves() {
        for q in [
            "",
            "SrcAddr=10.0.0.0/8 and DstPort=8000-9000 and not Proto=udp",
            "Addr=2001:db8::1 or (Interface=\"veth0\" and Flags=SYN,ACK)",
            "not (Port=53 or Port=80) Bytes>=10 Packets<3",
            "Interface=\"a \\\"b\\\" \\\\c\" or DnsName=''",
            "((SrcPort=1 and DstPort=2) and Proto=tcp) or Flags=OPEN",
            "SrcAddr=::ffff:10.1.2.3 and DstAddr=::/0 and Mac!=00:11:22:33:44:55",
            "Etype=ipv6 IfDirection=egress Sampling>1",
        ] {
            let e = parse(q).unwrap();
            let text = e.to_string();
            assert_eq!(parse(&text).as_ref(), Ok(&e), "{q:?} printed as {text:?}");
        }
        assert_eq!(
            parse("proto=TCP and not srcaddr=10.0.0.1/8")
                .unwrap()
                .to_string(),
            "Proto=6 and not SrcAddr=10.0.0.0/8"
        );
    }
}
