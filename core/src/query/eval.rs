//! Evaluating a filter against one flow in memory (live tailing, tests).

use super::{Cmp, Expr, Op, Operand};
use crate::flow::Flow;
use crate::schema::Value;

impl Expr {
    /// Whether the flow satisfies the filter.
    pub fn matches(&self, flow: &Flow) -> bool {
        match self {
            Expr::All => true,
            Expr::And(v) => v.iter().all(|e| e.matches(flow)),
            Expr::Or(v) => v.iter().any(|e| e.matches(flow)),
            Expr::Not(e) => !e.matches(flow),
            Expr::Cmp(c) => c.matches(flow),
        }
    }
}

impl Cmp {
    fn matches(&self, flow: &Flow) -> bool {
        let v = (self.field.get)(flow);
        match (&self.operand, v) {
            (Operand::U64(x), Value::U64(n)) => match self.op {
                Op::Eq => n == *x,
                Op::Lt => n < *x,
                Op::Le => n <= *x,
                Op::Gt => n > *x,
                Op::Ge => n >= *x,
            },
            (Operand::U64Range(lo, hi), Value::U64(n)) => (*lo..=*hi).contains(&n),
            (Operand::FlagsAll(m), Value::U64(n)) => n & u64::from(*m) == u64::from(*m),
            (Operand::IpRange(lo, hi), Value::Ip(ip)) => (*lo..=*hi).contains(&ip),
            (Operand::Str(s), Value::Str(v)) => *s == v,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::flow::Flow;
    use crate::query::parse;

    #[test]
    fn evaluates() {
        let mut f = Flow::empty();
        f.src_addr = "10.1.2.3".parse().unwrap();
        f.dst_addr = "2001:db8::1".parse().unwrap();
        f.dst_port = 8443;
        f.proto = 6;
        f.flags = 0x12;
        f.interface = "veth0".into();
        let yes = [
            "SrcAddr=10.0.0.0/8",
            "Addr=2001:db8::/32",
            "DstPort=8000-9000 and Proto=tcp",
            "not Proto=udp",
            "Flags=SYN",
            "Flags=SYN,ACK",
            "Interface=veth0",
            "DstPort>8442 and DstPort<=8443",
            "SrcPort=1 or (Port=8443 and !SrcAddr=11.0.0.0/8)",
            "",
        ];
        for q in yes {
            assert!(parse(q).unwrap().matches(&f), "{q}");
        }
        let no = [
            "SrcAddr=11.0.0.0/8",
            "Flags=FIN",
            "DstPort!=8443",
            "Interface=veth1",
            "Addr=10.1.2.4",
        ];
        for q in no {
            assert!(!parse(q).unwrap().matches(&f), "{q}");
        }
    }
}
