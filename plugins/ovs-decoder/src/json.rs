//! A small ordered JSON value: keys keep the order the dump printed them in.

use std::fmt::{self, Write};

#[derive(Debug, Clone)]
pub enum J {
    Str(String),
    Num(f64),
    Bool(bool),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn obj() -> J {
        J::Obj(Vec::new())
    }

    pub fn s(v: impl Into<String>) -> J {
        J::Str(v.into())
    }

    /// Adds `key` to an object (no-op on other values).
    pub fn set(&mut self, key: impl Into<String>, v: J) {
        if let J::Obj(kv) = self {
            kv.push((key.into(), v));
        }
    }
}

fn string(out: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

impl fmt::Display for J {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            J::Str(s) => string(f, s),
            J::Num(n) if n.is_finite() => write!(f, "{n}"),
            J::Num(_) => f.write_str("null"),
            J::Bool(b) => write!(f, "{b}"),
            J::Arr(items) => {
                f.write_char('[')?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(']')
            }
            J::Obj(kv) => {
                f.write_char('{')?;
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    string(f, k)?;
                    f.write_char(':')?;
                    write!(f, "{v}")?;
                }
                f.write_char('}')
            }
        }
    }
}
