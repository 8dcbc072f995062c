//! Just enough of a BTF reader to name the running kernel's drop reasons: the numbers of
//! `enum skb_drop_reason` differ between kernels, so they are read from
//! `/sys/kernel/btf/vmlinux` at start-up, never from a table compiled in.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const KIND_ENUM: u32 = 6;
const KIND_ENUM64: u32 = 19;

/// Members of one enum, by value.
#[derive(Debug, Clone, Default)]
pub struct EnumNames {
    by_value: HashMap<u64, String>,
}

impl EnumNames {
    pub fn name(&self, value: u64) -> Option<&str> {
        self.by_value.get(&value).map(String::as_str)
    }

    pub fn value(&self, name: &str) -> Option<u64> {
        self.by_value
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
    }

    pub fn len(&self) -> usize {
        self.by_value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_value.is_empty()
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn str_at(strings: &[u8], off: u32) -> Option<&str> {
    let rest = strings.get(off as usize..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Finds `enum <name>` in a raw BTF blob (little-endian, as the running kernel writes it).
pub fn find_enum(btf: &[u8], name: &str) -> Result<EnumNames, String> {
    let bad = |what: &str| format!("malformed BTF: {what}");
    if u16_at(btf, 0) != Some(MAGIC) {
        return Err(bad("wrong magic (not little-endian BTF?)"));
    }
    let hdr_len = u32_at(btf, 4).ok_or_else(|| bad("header"))? as usize;
    let type_off = u32_at(btf, 8).ok_or_else(|| bad("header"))? as usize;
    let type_len = u32_at(btf, 12).ok_or_else(|| bad("header"))? as usize;
    let str_off = u32_at(btf, 16).ok_or_else(|| bad("header"))? as usize;
    let str_len = u32_at(btf, 20).ok_or_else(|| bad("header"))? as usize;
    let types = btf
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or_else(|| bad("type section out of bounds"))?;
    let strings = btf
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or_else(|| bad("string section out of bounds"))?;
    let mut off = 0usize;
    while off + 12 <= types.len() {
        let name_off = u32_at(types, off).ok_or_else(|| bad("type"))?;
        let info = u32_at(types, off + 4).ok_or_else(|| bad("type"))?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        off += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 | 15 | 19 => vlen * 12,
            6 | 13 => vlen * 8,
            2 | 7..=12 | 16 | 18 => 0,
            k => return Err(bad(&format!("unknown type kind {k}"))),
        };
        if (kind == KIND_ENUM || kind == KIND_ENUM64) && str_at(strings, name_off) == Some(name) {
            let step = if kind == KIND_ENUM { 8 } else { 12 };
            let mut by_value = HashMap::new();
            for i in 0..vlen {
                let m = off + i * step;
                let n = u32_at(types, m).ok_or_else(|| bad("enum member"))?;
                let lo = u32_at(types, m + 4).ok_or_else(|| bad("enum member"))?;
                let value = if kind == KIND_ENUM {
                    u64::from(lo)
                } else {
                    let hi = u32_at(types, m + 8).ok_or_else(|| bad("enum member"))?;
                    (u64::from(hi) << 32) | u64::from(lo)
                };
                if let Some(s) = str_at(strings, n) {
                    by_value.insert(value, s.to_string());
                }
            }
            return Ok(EnumNames { by_value });
        }
        off += extra;
    }
    Err(format!("enum {name} is not in the kernel's BTF"))
}

/// The running kernel's drop reasons, from /sys/kernel/btf/vmlinux.
pub fn drop_reasons() -> Result<EnumNames, String> {
    let raw = std::fs::read("/sys/kernel/btf/vmlinux")
        .map_err(|e| format!("reading /sys/kernel/btf/vmlinux: {e}"))?;
    find_enum(&raw, "skb_drop_reason")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with an int and one enum, built by hand.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0colour\0RED\0GREEN\0".to_vec();
        let mut types = Vec::new();
        // int: name "int" (1), kind 1, size 4, + 4 bytes of encoding
        types.extend_from_slice(&1u32.to_le_bytes());
        types.extend_from_slice(&(1u32 << 24).to_le_bytes());
        types.extend_from_slice(&4u32.to_le_bytes());
        types.extend_from_slice(&32u32.to_le_bytes());
        // enum colour (5) with 2 members
        types.extend_from_slice(&5u32.to_le_bytes());
        types.extend_from_slice(&((6u32 << 24) | 2).to_le_bytes());
        types.extend_from_slice(&4u32.to_le_bytes());
        types.extend_from_slice(&12u32.to_le_bytes());
        types.extend_from_slice(&0u32.to_le_bytes());
        types.extend_from_slice(&16u32.to_le_bytes());
        types.extend_from_slice(&7u32.to_le_bytes());
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.push(1);
        b.push(0);
        b.extend_from_slice(&24u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(types.len() as u32).to_le_bytes());
        b.extend_from_slice(&(types.len() as u32).to_le_bytes());
        b.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        b.extend_from_slice(&types);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn finds_enum_members() {
        let e = find_enum(&blob(), "colour").unwrap();
        assert_eq!(e.name(0), Some("RED"));
        assert_eq!(e.name(7), Some("GREEN"));
        assert_eq!(e.value("GREEN"), Some(7));
        assert!(find_enum(&blob(), "nope").unwrap_err().contains("not in"));
        assert!(
            find_enum(&[1, 2, 3], "colour")
                .unwrap_err()
                .contains("magic")
        );
    }

    #[test]
    fn reads_the_running_kernel() {
        // Every machine weir supports has BTF; the CI machine does.
        let e = drop_reasons().unwrap();
        assert_eq!(e.value("SKB_NOT_DROPPED_YET"), Some(0));
        assert!(e.value("SKB_DROP_REASON_NO_SOCKET").is_some());
        assert!(e.len() > 10);
    }
}
