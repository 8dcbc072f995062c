//! The syntax both dumps share: comma-separated items, each `name(items)` (with whatever is
//! printed right after the parenthesis, as in `check_pkt_larger(200)->reg0`), `name=value`,
//! `name:value`, or a bare word. Values keep brackets, braces and nested parentheses whole.

use crate::json::J;

/// Where a line stops making sense (a byte offset into the line) and why.
#[derive(Debug)]
pub struct ParseError {
    pub at: usize,
    pub message: String,
}

/// One item, borrowing the line's text (no copies while parsing).
#[derive(Debug, Clone)]
pub enum Node<'a> {
    Atom(&'a str),
    Call {
        name: &'a str,
        args: Vec<Node<'a>>,
        /// Text printed right after the closing parenthesis (`->NXM_NX_REG0[0]`), usually empty.
        tail: &'a str,
    },
    Field {
        name: &'a str,
        value: &'a str,
    },
}

impl<'a> Node<'a> {
    pub fn name(&self) -> &'a str {
        match self {
            Node::Atom(a) => a,
            Node::Call { name, .. } | Node::Field { name, .. } => name,
        }
    }
}

/// A parser over `text`, reporting offsets relative to the start of the line (`base`).
pub struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    base: usize,
    depth: usize,
}

/// Deepest nesting of parentheses read (OVS itself nests a few levels; a hostile line must
/// not exhaust the sandbox's stack).
pub const MAX_DEPTH: usize = 32;

impl<'a> Parser<'a> {
    pub fn new(text: &'a str, base: usize) -> Parser<'a> {
        Parser {
            s: text.as_bytes(),
            text,
            pos: 0,
            base,
            depth: 0,
        }
    }

    fn err(&self, at: usize, message: String) -> ParseError {
        ParseError {
            at: self.base + at,
            message,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Items up to `close` (consumed) or, with `None`, up to the end of the text.
    pub fn list(&mut self, close: Option<u8>) -> Result<Vec<Node<'a>>, ParseError> {
        let mut items = Vec::new();
        let open_at = self.pos;
        loop {
            self.skip_ws();
            match (self.peek(), close) {
                (None, None) => return Ok(items),
                (None, Some(c)) => {
                    return Err(self.err(
                        self.pos,
                        format!(
                            "missing '{}' for the '(' at column {} (the line ends first)",
                            c as char,
                            self.base + open_at
                        ),
                    ));
                }
                (Some(b), Some(c)) if b == c && items.is_empty() => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => {}
            }
            items.push(self.item()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b) if Some(b) == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                None if close.is_none() => return Ok(items),
                None => continue, // reported as a missing close above
                Some(b) => {
                    return Err(self.err(self.pos, format!("unexpected '{}'", b as char)));
                }
            }
        }
    }

    /// Raw text up to a ',' or an unmatched ')' outside brackets.
    fn raw(&mut self) -> Result<&'a str, ParseError> {
        let start = self.pos;
        let mut depth: Vec<u8> = Vec::new();
        while let Some(b) = self.peek() {
            match b {
                b'(' => depth.push(b')'),
                b'[' => depth.push(b']'),
                b'{' => depth.push(b'}'),
                b')' | b']' | b'}' => match depth.last() {
                    Some(&want) if want == b => {
                        depth.pop();
                    }
                    None if b == b')' => break,
                    _ => {
                        return Err(self.err(self.pos, format!("unbalanced '{}'", b as char)));
                    }
                },
                b',' if depth.is_empty() => break,
                _ => {}
            }
            self.pos += 1;
        }
        if let Some(&want) = depth.last() {
            return Err(self.err(
                self.pos,
                format!("missing '{}' (the line ends first)", want as char),
            ));
        }
        Ok(self.text[start..self.pos].trim_end())
    }

    fn item(&mut self) -> Result<Node<'a>, ParseError> {
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                b',' | b'(' | b')' | b'=' | b':' | b' ' if depth == 0 => break,
                _ => {}
            }
            self.pos += 1;
        }
        let name = &self.text[start..self.pos];
        match self.peek() {
            Some(b'(') => {
                if name.is_empty() {
                    return Err(self.err(self.pos, "expected a name before '('".into()));
                }
                if self.depth >= MAX_DEPTH {
                    return Err(self.err(
                        self.pos,
                        format!("nested deeper than {MAX_DEPTH} parentheses"),
                    ));
                }
                self.pos += 1;
                self.depth += 1;
                let args = self.list(Some(b')'))?;
                self.depth -= 1;
                let tail = self.raw()?;
                Ok(Node::Call { name, args, tail })
            }
            Some(b'=' | b':') => {
                if name.is_empty() {
                    let c = self.s[self.pos] as char;
                    return Err(self.err(self.pos, format!("expected a name before '{c}'")));
                }
                self.pos += 1;
                let value = self.raw()?;
                Ok(Node::Field { name, value })
            }
            _ => Ok(Node::Atom(name)),
        }
    }
}

/// Byte offset of `word` in `line` outside any brackets, where it starts an item (at the
/// start, or after a space or comma).
pub fn find_top(line: &str, word: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut depth = 0i32;
    for i in 0..b.len() {
        match b[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth == 0
            && b[i..].starts_with(word.as_bytes())
            && (i == 0 || matches!(b[i - 1], b' ' | b','))
        {
            return Some(i);
        }
    }
    None
}

/// Parses a number as OVS prints it: decimal or `0x` hex.
pub fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Arguments with no masks: one word is its text, else an object where words are flags and
/// fields are text.
pub fn generic(args: &[Node]) -> J {
    if let [Node::Atom(a)] = args {
        return J::s(*a);
    }
    let mut o = J::obj();
    for a in args {
        match a {
            Node::Field { name, value } => o.set(*name, J::s(*value)),
            Node::Call { name, args, .. } => o.set(*name, generic(args)),
            Node::Atom(a) if !a.is_empty() => o.set(*a, J::Bool(true)),
            Node::Atom(_) => {}
        }
    }
    o
}

/// `{"name": v}`.
pub fn one(name: &str, v: J) -> J {
    let mut o = J::obj();
    o.set(name, v);
    o
}
