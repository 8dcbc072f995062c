//! How flows are stored in sled: in blocks of up to [`BLOCK_FLOWS`] records, keyed by the
//! first record's sequence number (big-endian, so sled keeps arrival order). A block is a
//! version byte, then lz4-compressed bincode of `(seq, flow)` pairs in ascending seq order.
//! Blocks make ingest a few large sled writes instead of one per flow.

use super::StoreError;
use crate::flow::Flow;

const VERSION: u8 = 2;

/// Most records in one block: small enough that fetching one record decodes little.
pub const BLOCK_FLOWS: usize = 64;

pub fn encode_block(items: &[(u64, &Flow)]) -> Result<Vec<u8>, StoreError> {
    let raw = bincode::serialize(items).map_err(|e| StoreError::Codec(e.to_string()))?;
    let mut out = Vec::with_capacity(raw.len() / 2 + 8);
    out.push(VERSION);
    out.extend_from_slice(&lz4_flex::compress_prepend_size(&raw));
    Ok(out)
}

pub fn decode_block(bytes: &[u8]) -> Result<Vec<(u64, Flow)>, StoreError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => {
            let raw = lz4_flex::decompress_size_prepended(rest)
                .map_err(|e| StoreError::Codec(format!("block decompression: {e}")))?;
            bincode::deserialize(&raw).map_err(|e| StoreError::Codec(e.to_string()))
        }
        Some((v, _)) => Err(StoreError::Codec(format!("unknown block version {v}"))),
        None => Err(StoreError::Codec("empty block".into())),
    }
}

pub fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_versions() {
        let mut f = Flow::empty();
        f.interface = "eth0".into();
        f.dst_addr = "2001:db8::2".parse().unwrap();
        let mut g = f.clone();
        g.bytes = 99;
        let b = encode_block(&[(5, &f), (9, &g)]).unwrap();
        assert_eq!(decode_block(&b).unwrap(), vec![(5, f), (9, g)]);
        let mut bad = b.clone();
        bad[0] = 9;
        assert!(
            decode_block(&bad)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
        assert!(decode_block(&[]).is_err());
        assert!(decode_block(&[VERSION, 1, 2]).is_err());
        assert_eq!(key(77), 77u64.to_be_bytes());
    }
}
