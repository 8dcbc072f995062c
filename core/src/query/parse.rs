//! Lexer and recursive-descent parser of the filter language.

use super::{QueryError, lookup_field, unknown_field};
use crate::flow::flag_bit;
use crate::schema::{self, EITHER_SIDE, FieldDef, FieldKind};
use std::net::Ipv6Addr;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Matches every flow (the empty filter).
    All,
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(Cmp),
}

/// One comparison of a field with a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Cmp {
    pub field: &'static FieldDef,
    pub op: Op,
    pub operand: Operand,
}

/// A comparison operator (`!=` is parsed as `not =`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The right-hand side of a comparison, already typed for its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    U64(u64),
    /// Inclusive range `a-b` (ports, numbers) — only with `=`.
    U64Range(u64, u64),
    /// An address, or a CIDR as its inclusive first and last address — only with `=`.
    IpRange(Ipv6Addr, Ipv6Addr),
    Str(String),
    /// Every listed TCP flag is set (`Flags=SYN,ACK`).
    FlagsAll(u16),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Op(&'static str),
    LParen,
    RParen,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip_ws(&mut self) {
        while let Some(c) = self.src[self.pos..].chars().next() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    /// The next token and its start; `value` reads a value (which may contain `-`, `:`, `/`).
    fn next(&mut self, value: bool) -> Result<Option<(usize, Tok)>, QueryError> {
        self.skip_ws();
        let start = self.pos;
        let rest = &self.src[self.pos..];
        let Some(c) = rest.chars().next() else {
            return Ok(None);
        };
        for op in ["!=", "<=", ">=", "==", "&&", "||", "=", "<", ">", "!"] {
            if rest.starts_with(op) && !(value && op == "!") {
                self.pos += op.len();
                let op = if op == "==" { "=" } else { op };
                return Ok(Some((start, Tok::Op(op))));
            }
        }
        match c {
            '(' => {
                self.pos += 1;
                Ok(Some((start, Tok::LParen)))
            }
            ')' => {
                self.pos += 1;
                Ok(Some((start, Tok::RParen)))
            }
            '"' | '\'' => {
                let mut out = String::new();
                let mut chars = rest.char_indices().skip(1);
                while let Some((i, ch)) = chars.next() {
                    if ch == c {
                        self.pos += i + 1;
                        return Ok(Some((start, Tok::Quoted(out))));
                    }
                    if ch == '\\' {
                        match chars.next() {
                            Some((_, e)) => out.push(e),
                            None => break,
                        }
                    } else {
                        out.push(ch);
                    }
                }
                Err(QueryError::new(start, "unterminated string"))
            }
            _ => {
                let end = rest
                    .char_indices()
                    .find(|(_, ch)| {
                        ch.is_whitespace()
                            || matches!(ch, '(' | ')' | '"' | '\'')
                            || (!value && matches!(ch, '=' | '!' | '<' | '>' | '&' | '|'))
                    })
                    .map(|(i, _)| i)
                    .unwrap_or(rest.len());
                self.pos += end;
                Ok(Some((start, Tok::Word(rest[..end].to_string()))))
            }
        }
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<(usize, Tok)>,
}

/// Parses a filter. The empty (or all-blank) filter matches every flow.
pub fn parse(src: &str) -> Result<Expr, QueryError> {
    let mut p = Parser {
        lex: Lexer { src, pos: 0 },
        peeked: None,
    };
    if p.peek()?.is_none() {
        return Ok(Expr::All);
    }
    let e = p.or_expr()?;
    match p.take()? {
        None => Ok(e),
        Some((pos, Tok::RParen)) => Err(QueryError::new(pos, "')' without a matching '('")),
        Some((pos, t)) => Err(QueryError::new(pos, format!("unexpected {}", describe(&t)))),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Quoted(s) => format!("string \"{s}\""),
        Tok::Op(o) => format!("'{o}'"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
    }
}

fn is_kw(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<Option<&(usize, Tok)>, QueryError> {
        if self.peeked.is_none() {
            self.peeked = self.lex.next(false)?;
        }
        Ok(self.peeked.as_ref())
    }

    fn take(&mut self) -> Result<Option<(usize, Tok)>, QueryError> {
        self.peek()?;
        Ok(self.peeked.take())
    }

    fn end_pos(&self) -> usize {
        self.lex.src.len()
    }

    fn or_expr(&mut self) -> Result<Expr, QueryError> {
        let mut parts = vec![self.and_expr()?];
        while let Some((_, t)) = self.peek()? {
            if is_kw(t, "or") || *t == Tok::Op("||") {
                self.take()?;
                parts.push(self.and_expr()?);
            } else {
                break;
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and_expr(&mut self) -> Result<Expr, QueryError> {
        let mut parts = vec![self.unary()?];
        loop {
            match self.peek()? {
                Some((_, t)) if is_kw(t, "and") || *t == Tok::Op("&&") => {
                    self.take()?;
                    parts.push(self.unary()?);
                }
                // Adjacent terms are joined by `and`.
                Some((_, t)) if !is_kw(t, "or") && *t != Tok::Op("||") && *t != Tok::RParen => {
                    parts.push(self.unary()?);
                }
                _ => break,
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        match self.take()? {
            Some((_, t)) if is_kw(&t, "not") || t == Tok::Op("!") => {
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some((pos, Tok::LParen)) => {
                let e = self.or_expr()?;
                match self.take()? {
                    Some((_, Tok::RParen)) => Ok(e),
                    Some((p, t)) => Err(QueryError::new(
                        p,
                        format!(
                            "expected ')' to close the '(' at position {pos}, found {}",
                            describe(&t)
                        ),
                    )),
                    None => Err(QueryError::new(
                        self.end_pos(),
                        format!("missing ')' to close the '(' at position {pos}"),
                    )),
                }
            }
            Some((pos, Tok::Word(name))) => self.comparison(pos, &name),
            Some((pos, t)) => Err(QueryError::new(
                pos,
                format!("expected a field name, found {}", describe(&t)),
            )),
            None => Err(QueryError::new(
                self.end_pos(),
                "expected a field name, found the end of the filter",
            )),
        }
    }

    fn comparison(&mut self, pos: usize, name: &str) -> Result<Expr, QueryError> {
        if ["and", "or"].iter().any(|k| name.eq_ignore_ascii_case(k)) {
            return Err(QueryError::new(
                pos,
                format!("'{name}' needs a comparison before it"),
            ));
        }
        let (op_pos, op) = match self.take()? {
            Some((p, Tok::Op(o))) if !matches!(o, "&&" | "||" | "!") => (p, o),
            Some((p, t)) => {
                return Err(QueryError::new(
                    p,
                    format!(
                        "expected an operator (=, !=, <, <=, >, >=) after {name}, found {}",
                        describe(&t)
                    ),
                ));
            }
            None => {
                return Err(QueryError::new(
                    self.end_pos(),
                    format!("expected an operator (=, !=, <, <=, >, >=) after {name}"),
                ));
            }
        };
        let (val_pos, text) = match self.lex.next(true)? {
            Some((p, Tok::Word(w))) => (p, w),
            Some((p, Tok::Quoted(s))) => (p, s),
            Some((p, t)) => {
                return Err(QueryError::new(
                    p,
                    format!("expected a value after '{op}', found {}", describe(&t)),
                ));
            }
            None => {
                return Err(QueryError::new(
                    self.end_pos(),
                    format!("expected a value after '{op}'"),
                ));
            }
        };
        let (negate, op) = match op {
            "=" => (false, Op::Eq),
            "!=" => (true, Op::Eq),
            "<" => (false, Op::Lt),
            "<=" => (false, Op::Le),
            ">" => (false, Op::Gt),
            ">=" => (false, Op::Ge),
            _ => return Err(QueryError::new(op_pos, format!("unknown operator '{op}'"))),
        };
        if name.eq_ignore_ascii_case(super::trace::FIELD) {
            if op != Op::Eq {
                return Err(QueryError::new(
                    op_pos,
                    "TraceId takes = or != (a trace id of 32 hex digits)",
                ));
            }
            let e = trace_expr(&text, val_pos)?;
            return Ok(if negate { Expr::Not(Box::new(e)) } else { e });
        }
        let fields: Vec<&'static FieldDef> =
            match EITHER_SIDE.iter().find(|e| e.0.eq_ignore_ascii_case(name)) {
                Some((_, a, b)) => vec![lookup_field(a, pos)?, lookup_field(b, pos)?],
                None => vec![schema::field(name).ok_or_else(|| unknown_field(name, pos))?],
            };
        let mut cmps = Vec::new();
        for field in fields {
            let operand = operand(field, op, &text, val_pos, op_pos)?;
            cmps.push(Expr::Cmp(Cmp { field, op, operand }));
        }
        let e = if cmps.len() == 1 {
            cmps.remove(0)
        } else {
            Expr::Or(cmps)
        };
        Ok(if negate { Expr::Not(Box::new(e)) } else { e })
    }
}

/// `TraceId=ID`: the flows of the trace's connections, either direction (matches nothing when
/// none was joined).
fn trace_expr(id: &str, pos: usize) -> Result<Expr, QueryError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(QueryError::new(
            pos,
            format!("TraceId expects 32 hex digits, got '{id}'"),
        ));
    }
    if super::trace::syntax_only() {
        return Ok(Expr::All);
    }
    let conns =
        super::trace::connections(&id.to_ascii_lowercase()).map_err(|m| QueryError::new(pos, m))?;
    let field = |n: &str| lookup_field(n, pos);
    let ip = |a: std::net::IpAddr| -> Result<Operand, QueryError> {
        parse_ip_or_cidr(&a.to_string()).map_err(|m| QueryError::new(pos, m))
    };
    let eq = |f: &'static FieldDef, operand: Operand| {
        Expr::Cmp(Cmp {
            field: f,
            op: Op::Eq,
            operand,
        })
    };
    let mut any = Vec::new();
    for (client, server, proto) in conns {
        for (a, b) in [(client, server), (server, client)] {
            any.push(Expr::And(vec![
                eq(field("SrcAddr")?, ip(a.ip())?),
                eq(field("SrcPort")?, Operand::U64(u64::from(a.port()))),
                eq(field("DstAddr")?, ip(b.ip())?),
                eq(field("DstPort")?, Operand::U64(u64::from(b.port()))),
                eq(field("Proto")?, Operand::U64(u64::from(proto))),
            ]));
        }
    }
    Ok(if any.is_empty() {
        Expr::Not(Box::new(Expr::All))
    } else {
        Expr::Or(any)
    })
}

fn operand(
    field: &'static FieldDef,
    op: Op,
    text: &str,
    pos: usize,
    op_pos: usize,
) -> Result<Operand, QueryError> {
    let bad = |m: String| QueryError::new(pos, m);
    match field.kind {
        FieldKind::Ip => {
            if op != Op::Eq {
                return Err(QueryError::new(
                    op_pos,
                    format!(
                        "{} takes = or != (with an address or CIDR), not ordering",
                        field.name
                    ),
                ));
            }
            parse_ip_or_cidr(text).map_err(|m| bad(format!("{}: {m}", field.name)))
        }
        FieldKind::Str => {
            if op != Op::Eq {
                return Err(QueryError::new(
                    op_pos,
                    format!("{} is text and takes only = or !=", field.name),
                ));
            }
            Ok(Operand::Str(text.to_string()))
        }
        FieldKind::U64 => {
            if field.name == "Flags"
                && let Some(mask) = parse_flag_names(text)
            {
                if op != Op::Eq {
                    return Err(QueryError::new(op_pos, "flag names take = or != only"));
                }
                return Ok(Operand::FlagsAll(mask));
            }
            if let Some(n) = parse_number(field, text) {
                return Ok(Operand::U64(n));
            }
            if let Some((a, b)) = text.split_once('-')
                && let (Some(lo), Some(hi)) = (parse_number(field, a), parse_number(field, b))
            {
                if op != Op::Eq {
                    return Err(QueryError::new(op_pos, "a range takes = or != only"));
                }
                if lo > hi {
                    return Err(bad(format!("range {lo}-{hi} is reversed")));
                }
                return Ok(Operand::U64Range(lo, hi));
            }
            Err(bad(format!(
                "{} expects {}, got '{text}'",
                field.name,
                number_hint(field)
            )))
        }
    }
}

fn number_hint(field: &FieldDef) -> &'static str {
    match field.name {
        "Proto" => "a protocol (tcp, udp, icmp, icmpv6, sctp) or a number",
        "IfDirection" => "ingress, egress, 0 or 1",
        "Etype" => "ipv4, ipv6, arp or a number like 0x0800",
        "Flags" => "flag names like SYN or SYN,ACK, or a number",
        "SrcPort" | "DstPort" => "a port (0-65535) or a range like 8000-9000",
        _ => "a number or a range like 10-20",
    }
}

fn parse_number(field: &FieldDef, text: &str) -> Option<u64> {
    let named = match (field.name, text.to_ascii_lowercase().as_str()) {
        ("Proto", "icmp") => Some(1),
        ("Proto", "tcp") => Some(6),
        ("Proto", "udp") => Some(17),
        ("Proto", "icmpv6") => Some(58),
        ("Proto", "sctp") => Some(132),
        ("IfDirection", "ingress") => Some(0),
        ("IfDirection", "egress") => Some(1),
        ("Etype", "ipv4") => Some(0x0800),
        ("Etype", "ipv6") => Some(0x86dd),
        ("Etype", "arp") => Some(0x0806),
        _ => None,
    };
    let n = named.or_else(|| {
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            u64::from_str_radix(hex, 16).ok()
        } else {
            text.parse::<u64>().ok()
        }
    })?;
    let max = match field.name {
        "SrcPort" | "DstPort" | "Etype" | "Flags" => u64::from(u16::MAX),
        "Proto" | "IcmpType" | "IcmpCode" | "IfDirection" => u64::from(u8::MAX),
        "Sampling" => u64::from(u32::MAX),
        _ => u64::MAX,
    };
    (n <= max).then_some(n)
}

fn parse_flag_names(text: &str) -> Option<u16> {
    let mut mask = 0;
    for part in text.split([',', '|']) {
        mask |= flag_bit(part.trim())?;
    }
    Some(mask)
}

/// Parses an address or a CIDR into its inclusive range in index form.
pub fn parse_ip_or_cidr(text: &str) -> Result<Operand, String> {
    let (lo, bits) = schema::parse_network(text)?;
    let hi = lo | !schema::prefix_mask(bits);
    Ok(Operand::IpRange(Ipv6Addr::from(lo), Ipv6Addr::from(hi)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> QueryError {
        parse(q).expect_err(q)
    }

    #[test]
    fn precedence_and_implicit_and() {
        let e = parse("SrcPort=1 or DstPort=2 and Proto=tcp").unwrap();
        match e {
            Expr::Or(v) => {
                assert_eq!(v.len(), 2);
                assert!(matches!(&v[1], Expr::And(a) if a.len() == 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("SrcPort=1 DstPort=2").unwrap(), Expr::And(v) if v.len() == 2));
        assert_eq!(parse("   ").unwrap(), Expr::All);
    }

    #[test]
    fn values_are_typed() {
        let Expr::Cmp(c) = parse("SrcAddr=10.0.0.0/8").unwrap() else {
            panic!()
        };
        assert_eq!(
            c.operand,
            Operand::IpRange(
                "::ffff:10.0.0.0".parse().unwrap(),
                "::ffff:10.255.255.255".parse().unwrap()
            )
        );
        let Expr::Cmp(c) = parse("DstPort=8000-9000").unwrap() else {
            panic!()
        };
        assert_eq!(c.operand, Operand::U64Range(8000, 9000));
        let Expr::Cmp(c) = parse("proto=UDP").unwrap() else {
            panic!()
        };
        assert_eq!(c.operand, Operand::U64(17));
        let Expr::Cmp(c) = parse("Flags=SYN,ACK").unwrap() else {
            panic!()
        };
        assert_eq!(c.operand, Operand::FlagsAll(0x12));
        assert!(matches!(parse("Addr=2001:db8::1").unwrap(), Expr::Or(v) if v.len() == 2));
        assert!(matches!(parse("SrcAddr!=10.0.0.1").unwrap(), Expr::Not(_)));
        assert!(
            matches!(parse("Interface=\"veth 0\"").unwrap(), Expr::Cmp(c) if c.operand == Operand::Str("veth 0".into()))
        );
    }

    #[test]
    fn errors_name_the_problem_and_place() {
        let e = err("SrcAdr=10.0.0.1");
        assert_eq!(e.pos, 0);
        assert!(e.message.contains("did you mean SrcAddr"), "{e}");
        let e = err("SrcPort=80 and DstPort=http");
        assert_eq!(e.pos, 23);
        assert!(e.message.contains("DstPort expects"), "{e}");
        let e = err("(SrcPort=80");
        assert!(e.message.contains("missing ')'"), "{e}");
        let e = err("SrcPort=80)");
        assert_eq!(e.pos, 10);
        let e = err("SrcPort=");
        assert!(e.message.contains("expected a value"), "{e}");
        let e = err("SrcAddr=10.0.0.0/33");
        assert!(e.message.contains("prefix"), "{e}");
        let e = err("SrcAddr>10.0.0.1");
        assert_eq!(e.pos, 7);
        let e = err("SrcPort=70000");
        assert!(e.message.contains("port"), "{e}");
        let e = err("DstPort=9-1");
        assert!(e.message.contains("reversed"), "{e}");
        let e = err("Interface=\"eth0");
        assert!(e.message.contains("unterminated"), "{e}");
        let e = err("and SrcPort=1");
        assert_eq!(e.pos, 0);
        assert!(err("SrcPort 80").message.contains("expected an operator"));
    }

    #[test]
    fn render_points_at_position() {
        let q = "SrcPort=80 and Bogus=1";
        let e = err(q);
        let r = e.render(q);
        assert!(r.contains("^ unknown field 'Bogus'"), "{r}");
        assert_eq!(r.lines().nth(1).unwrap().find('^'), Some(15));
    }
}
