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

/// Appends `s` as a JSON string: unescaped runs are copied whole.
fn string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            b if b < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

impl J {
    /// Appends the value as JSON.
    pub fn write(&self, out: &mut String) {
        match self {
            J::Str(s) => string(out, s),
            J::Num(n) if n.is_finite() => {
                let _ = write!(out, "{n}");
            }
            J::Num(_) => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            J::Obj(kv) => {
                out.push('{');
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    string(out, k);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

impl fmt::Display for J {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(1024);
        self.write(&mut s);
        f.write_str(&s)
    }
}
