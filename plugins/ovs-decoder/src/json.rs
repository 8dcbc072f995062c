//! A JSON writer that appends straight to a string as the parser walks a line: no tree of
//! owned values is built (that tree and its freeing were most of a flow's cost). Keys are
//! written in the order the caller gives them, which is the order the dump printed them in.

use crate::syntax::has_any;
use std::fmt::Write;

/// Appends JSON values to [`W::out`]; commas are placed by the writer.
#[derive(Debug, Default)]
pub struct W {
    pub out: String,
    /// A value was just completed at this level: the next key or item needs a comma.
    comma: bool,
    /// A key was just written: the next value is its value (no comma).
    after_key: bool,
}

/// Whether any byte of `s` needs escaping in a JSON string (a quote, a backslash or a control
/// character), looked at eight bytes at a time: nearly every string of a dump needs none, and
/// a byte-by-byte scan was the decoder's costliest loop.
fn needs_escape(s: &str) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.as_bytes().chunks_exact(8);
    for c in chunks.by_ref() {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let x = u64::from_le_bytes(b);
        // Bytes below 0x20: (x - 0x20 per byte) borrows into the high bit of such bytes.
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if control != 0 || has_any(x, b"\"\\") {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends `s` as a JSON string: unescaped runs are copied whole.
fn string(out: &mut String, s: &str) {
    if !needs_escape(s) {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
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

impl W {
    pub fn with_capacity(n: usize) -> W {
        W {
            out: String::with_capacity(n),
            ..W::default()
        }
    }

    /// Before a value: a comma unless it is a key's value or the first item.
    fn pre(&mut self) {
        if self.after_key {
            self.after_key = false;
        } else if self.comma {
            self.out.push(',');
        }
    }

    /// Writes an object key; the next call writes its value.
    pub fn key(&mut self, k: &str) {
        if self.comma {
            self.out.push(',');
        }
        string(&mut self.out, k);
        self.out.push(':');
        self.after_key = true;
    }

    pub fn open_obj(&mut self) {
        self.pre();
        self.out.push('{');
        self.comma = false;
    }

    pub fn close_obj(&mut self) {
        self.out.push('}');
        self.comma = true;
    }

    pub fn open_arr(&mut self) {
        self.pre();
        self.out.push('[');
        self.comma = false;
    }

    pub fn close_arr(&mut self) {
        self.out.push(']');
        self.comma = true;
    }

    pub fn str(&mut self, s: &str) {
        self.pre();
        string(&mut self.out, s);
        self.comma = true;
    }

    pub fn u64(&mut self, n: u64) {
        self.pre();
        let _ = write!(self.out, "{n}");
        self.comma = true;
    }

    /// A finite number as Rust prints it (`0.011`, `4`); anything else is `null`.
    pub fn f64(&mut self, n: f64) {
        self.pre();
        if n.is_finite() {
            let _ = write!(self.out, "{n}");
        } else {
            self.out.push_str("null");
        }
        self.comma = true;
    }

    pub fn bool(&mut self, b: bool) {
        self.pre();
        self.out.push_str(if b { "true" } else { "false" });
        self.comma = true;
    }

    /// A value another writer made (its whole JSON text).
    pub fn raw(&mut self, json: &str) {
        self.pre();
        self.out.push_str(json);
        self.comma = true;
    }

    /// `"k": "v"`.
    pub fn field(&mut self, k: &str, v: &str) {
        self.key(k);
        self.str(v);
    }

    /// `{"k": <what f writes>}`.
    pub fn one(&mut self, k: &str, f: impl FnOnce(&mut W)) {
        self.open_obj();
        self.key(k);
        f(self);
        self.close_obj();
    }
}

#[cfg(test)]
mod tests {
    use super::W;

    #[test]
    fn strings_are_escaped_wherever_the_byte_falls() {
        for c in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
            for at in 0..20 {
                let mut s: String = "abcdefghijklmnopqrst".chars().take(at).collect();
                s.push(c);
                s.push_str("xyz0123456789");
                let mut out = String::new();
                super::string(&mut out, &s);
                let back: String = serde_json::from_str(&out).expect("valid JSON");
                assert_eq!(back, s, "{out}");
                assert!(super::needs_escape(&s));
            }
        }
        for s in ["", "plain", "0x1/0xff 10.0.0.1/255.255.255.0 \u{7f}~ é ü"] {
            assert!(!super::needs_escape(s), "{s:?}");
        }
    }

    #[test]
    fn commas_keys_and_nesting() {
        let mut w = W::default();
        w.open_obj();
        w.field("a", "x\"y");
        w.key("b");
        w.open_arr();
        w.u64(1);
        w.f64(0.5);
        w.one("c", |w| w.bool(true));
        w.open_arr();
        w.close_arr();
        w.close_arr();
        w.key("d");
        w.raw("{\"e\":null}");
        w.key("f");
        w.f64(f64::NAN);
        w.close_obj();
        assert_eq!(
            w.out,
            r#"{"a":"x\"y","b":[1,0.5,{"c":true},[]],"d":{"e":null},"f":null}"#
        );
    }
}
