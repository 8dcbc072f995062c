//! How flows are stored in sled: in blocks of up to [`BLOCK_FLOWS`] records, keyed by the
//! first record's sequence number (big-endian, so sled keeps arrival order). A block is a
//! version byte, then lz4-compressed bincode of `(seq, flow)` pairs in ascending seq order.
//! Blocks make ingest a few large sled writes instead of one per flow.
//!
//! Version 2 blocks (flows before drops, RTT, DNS and enrichment fields) are still read; new
//! blocks are written as version 3.

use super::StoreError;
use crate::flow::Flow;
use serde::Deserialize;
use std::net::IpAddr;

const VERSION: u8 = 3;
const VERSION_2: u8 = 2;

/// The flow record as version 2 blocks hold it (bincode is positional: fields in order).
#[derive(Deserialize)]
struct FlowV2 {
    time_flow_start_ms: u64,
    time_flow_end_ms: u64,
    time_received: u64,
    etype: u16,
    src_mac: String,
    dst_mac: String,
    src_addr: IpAddr,
    dst_addr: IpAddr,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    icmp_type: u8,
    icmp_code: u8,
    bytes: u64,
    packets: u64,
    skbs: u64,
    flags: u16,
    interface: String,
    if_direction: u8,
    sampling: u32,
    netns: String,
}

impl From<FlowV2> for Flow {
    fn from(o: FlowV2) -> Flow {
        Flow {
            time_flow_start_ms: o.time_flow_start_ms,
            time_flow_end_ms: o.time_flow_end_ms,
            time_received: o.time_received,
            etype: o.etype,
            src_mac: o.src_mac,
            dst_mac: o.dst_mac,
            src_addr: o.src_addr,
            dst_addr: o.dst_addr,
            src_port: o.src_port,
            dst_port: o.dst_port,
            proto: o.proto,
            icmp_type: o.icmp_type,
            icmp_code: o.icmp_code,
            bytes: o.bytes,
            packets: o.packets,
            skbs: o.skbs,
            flags: o.flags,
            interface: o.interface,
            if_direction: o.if_direction,
            sampling: o.sampling,
            netns: o.netns,
            ..Flow::empty()
        }
    }
}

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
        Some((&VERSION_2, rest)) => {
            let raw = lz4_flex::decompress_size_prepended(rest)
                .map_err(|e| StoreError::Codec(format!("block decompression: {e}")))?;
            let old: Vec<(u64, FlowV2)> =
                bincode::deserialize(&raw).map_err(|e| StoreError::Codec(e.to_string()))?;
            Ok(old.into_iter().map(|(s, f)| (s, Flow::from(f))).collect())
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

    #[test]
    fn reads_version_2_blocks() {
        #[derive(serde::Serialize)]
        struct Old<'a>(
            u64,
            u64,
            u64,
            u16,
            &'a str,
            &'a str,
            IpAddr,
            IpAddr,
            u16,
            u16,
            u8,
            u8,
            u8,
            u64,
            u64,
            u64,
            u16,
            &'a str,
            u8,
            u32,
            &'a str,
        );
        let src: IpAddr = "10.0.0.1".parse().unwrap();
        let dst: IpAddr = "10.0.0.2".parse().unwrap();
        let old = Old(
            1, 2, 3, 0x800, "aa", "bb", src, dst, 40000, 443, 6, 0, 0, 1500, 3, 2, 0x12, "eth0", 1,
            0, "ns1",
        );
        let raw = bincode::serialize(&vec![(7u64, old)]).unwrap();
        let mut block = vec![VERSION_2];
        block.extend_from_slice(&lz4_flex::compress_prepend_size(&raw));
        let got = decode_block(&block).unwrap();
        assert_eq!(got.len(), 1);
        let (seq, f) = &got[0];
        assert_eq!(*seq, 7);
        assert_eq!((f.src_addr, f.dst_addr, f.dst_port), (src, dst, 443));
        assert_eq!((f.bytes, f.packets, f.skbs, f.flags), (1500, 3, 2, 0x12));
        assert_eq!((f.interface.as_str(), f.netns.as_str()), ("eth0", "ns1"));
        assert_eq!(f.pkt_drop_packets, 0);
        assert!(f.dns_name.is_empty());
        assert_eq!(key(77), 77u64.to_be_bytes());
    }
}
