//! WebAssembly's binary framing, read defensively: a cursor whose every read fails past the
//! end ([`Bytes`]: bytes, LEB128 numbers, length-prefixed parts), and the top-level sections
//! of a module or component ([`sections`]). Used where weir reads component bytes itself
//! before wasmtime or wasmsign2 do: the embedded manifest and the signature section's lengths.

/// A cursor over bytes whose every read fails past the end (each read takes at least one
/// byte, so a count read from the input cannot loop longer than the input).
#[derive(Clone, Copy)]
pub(crate) struct Bytes<'a> {
    pub b: &'a [u8],
    pub pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Bytes { b, pos: 0 }
    }

    pub fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    /// An unsigned LEB128 number of at most 32 bits (every length and count in the format).
    pub fn leb(&mut self) -> Option<u32> {
        let mut v = 0u32;
        for i in 0..5 {
            let b = self.byte()?;
            v |= u32::from(b & 0x7f) << (i * 7);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.b.len())?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Some(s)
    }

    /// A length-prefixed part, as a cursor of its own.
    pub fn slice(&mut self) -> Option<Bytes<'a>> {
        let n = usize::try_from(self.leb()?).ok()?;
        Some(Bytes::new(self.take(n)?))
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        &self.b[self.pos.min(self.b.len())..]
    }
}

/// Whether the bytes start like WebAssembly (magic and room for a version).
pub(crate) fn has_magic(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && wasm[..4] == *b"\0asm"
}

/// One top-level section: its id, the byte it starts at, and its contents.
pub(crate) struct Section<'a> {
    pub id: u8,
    pub at: usize,
    pub body: Bytes<'a>,
}

impl<'a> Section<'a> {
    /// A custom section's name and, after it, its data; `Ok(None)` for other sections,
    /// `Err(at)` when the name runs past the section.
    pub fn custom(&self) -> Result<Option<(&'a [u8], Bytes<'a>)>, usize> {
        if self.id != 0 {
            return Ok(None);
        }
        let mut body = self.body;
        let name = body.slice().ok_or(self.at)?;
        Ok(Some((name.b, body)))
    }
}

/// The top-level sections after the 8-byte header (the caller checks the header). An item is
/// `Err(at)` when the section starting at byte `at` runs past the end; iteration stops there.
pub(crate) fn sections(wasm: &[u8]) -> impl Iterator<Item = Result<Section<'_>, usize>> {
    let mut r = Bytes { b: wasm, pos: 8 };
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || r.pos >= wasm.len() {
            return None;
        }
        let at = r.pos;
        let section = r.byte().zip(r.slice());
        failed = section.is_none();
        Some(section.map(|(id, body)| Section { id, at, body }).ok_or(at))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_walked_and_a_length_past_the_end_stops_the_walk() {
        let mut wasm = b"\0asm\x0d\x00\x01\x00".to_vec();
        wasm.extend_from_slice(&[0, 3, 1, b'a', 9]); // custom section "a", data [9]
        wasm.extend_from_slice(&[7, 0]); // an empty section 7
        let got: Vec<(u8, usize, Vec<u8>)> = sections(&wasm)
            .map(|s| s.map(|s| (s.id, s.at, s.body.rest().to_vec())))
            .collect::<Result<_, _>>()
            .expect("sections");
        assert_eq!(got, vec![(0, 8, vec![1, b'a', 9]), (7, 13, vec![])]);
        wasm.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]); // 4 GiB claimed
        let last = sections(&wasm).last().expect("an item");
        assert_eq!(last.err(), Some(15));
        assert!(Bytes::new(&[0x80, 0x80, 0x80, 0x80, 0x80]).leb().is_none());
    }
}
