//! The syntax both dumps share: comma-separated items, each `name(items)` (with whatever is
//! printed right after the parenthesis, as in `check_pkt_larger(200)->reg0`), `name=value`,
//! `name:value`, or a bare word. Values keep brackets, braces and nested parentheses whole.

use crate::json::W;

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
    let w = word.as_bytes();
    let first = *w.first()?;
    let mut depth = 0i32;
    let mut i = 0;
    while i < b.len() {
        // Eight bytes with no bracket and no first letter of `word` are passed at once (most
        // of a line: this scan was a tenth of decoding).
        if let Some(c) = b.get(i..i + 8) {
            let mut x = [0u8; 8];
            x.copy_from_slice(c);
            if !has_any(
                u64::from_le_bytes(x),
                &[b'(', b')', b'[', b']', b'{', b'}', first],
            ) {
                i += 8;
                continue;
            }
        }
        let at = i;
        i += 1;
        match b[at] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            c if c != first => continue,
            _ => {}
        }
        if depth == 0 && b[at..].starts_with(w) && (at == 0 || matches!(b[at - 1], b' ' | b',')) {
            return Some(at);
        }
    }
    None
}

/// Whether any of the eight bytes in `x` is one of `bytes` (exact: the lowest equal byte
/// always sets its high bit in the test).
pub fn has_any(x: u64, bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    bytes.iter().any(|&b| {
        let y = x ^ (ONES * u64::from(b));
        y.wrapping_sub(ONES) & !y & HIGH != 0
    })
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
pub fn generic(w: &mut W, args: &[Node]) {
    if let [Node::Atom(a)] = args {
        return w.str(a);
    }
    w.open_obj();
    for a in args {
        generic_item(w, a);
    }
    w.close_obj();
}

/// One item of a [`generic`] object: a field is its text, a call nests, a word is a flag.
pub fn generic_item(w: &mut W, a: &Node) {
    match a {
        Node::Field { name, value } => w.field(name, value),
        Node::Call { name, args, .. } => {
            w.key(name);
            generic(w, args);
        }
        Node::Atom(a) if !a.is_empty() => {
            w.key(a);
            w.bool(true);
        }
        Node::Atom(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::find_top;

    /// The byte-at-a-time scan the word-at-a-time one replaced.
    fn reference(line: &str, word: &str) -> Option<usize> {
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

    #[test]
    fn finds_the_word_outside_brackets_wherever_it_falls() {
        let parts = [
            "in_port(1)",
            "eth(src=00:00:00:00:00:01)",
            "x",
            " actions:",
            ",actions:drop",
            "tcp(actions:1)",
            "{actions:2}",
            "[a]",
            "ufid:ab",
            "packets:3",
        ];
        let mut n = 0;
        for a in parts {
            for b in parts {
                for c in parts {
                    for pad in 0..9 {
                        let line = format!("{}{a},{b}{c}", "p".repeat(pad));
                        for word in ["actions:", "dp-extra-info:", "a"] {
                            assert_eq!(find_top(&line, word), reference(&line, word), "{line:?}");
                            n += 1;
                        }
                    }
                }
            }
        }
        assert!(n > 20_000);
    }
}
