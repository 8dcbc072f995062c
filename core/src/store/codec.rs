//! How flows are stored in sled: in blocks of up to [`BLOCK_FLOWS`] records, keyed by the
//! first record's sequence number (big-endian, so sled keeps arrival order). A block is a
//! version byte, then lz4-compressed bincode of `(seq, flow)` pairs in ascending seq order.
//! Blocks make ingest a few large sled writes instead of one per flow.
//!
//! Older blocks are still read: version 2 (flows before drops, RTT, DNS and enrichment fields)
//! and version 3 (before namespace labels); new blocks are written as version 4.

use super::StoreError;
use crate::flow::Flow;
use serde::Deserialize;
use std::net::IpAddr;

const VERSION: u8 = 4;
const VERSION_3: u8 = 3;
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

/// The flow record as version 3 blocks hold it (before namespace labels).
#[derive(Deserialize)]
struct FlowV3 {
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
    interfaces: String,
    if_directions: String,
    cgroup: String,
    container_id: String,
    pkt_drop_bytes: u64,
    pkt_drop_packets: u64,
    pkt_drop_latest_drop_cause: String,
    time_flow_rtt_ns: u64,
    dns_id: u16,
    dns_flags: u16,
    dns_flags_response_code: String,
    dns_latency_us: u64,
    dns_name: String,
    dns_qtype: u16,
    src_k8s_name: String,
    src_k8s_namespace: String,
    src_k8s_owner_name: String,
    src_k8s_owner_type: String,
    src_k8s_type: String,
    src_k8s_host_name: String,
    src_k8s_zone: String,
    src_k8s_labels: String,
    dst_k8s_name: String,
    dst_k8s_namespace: String,
    dst_k8s_owner_name: String,
    dst_k8s_owner_type: String,
    dst_k8s_type: String,
    dst_k8s_host_name: String,
    dst_k8s_zone: String,
    dst_k8s_labels: String,
}

impl From<FlowV3> for Flow {
    fn from(o: FlowV3) -> Flow {
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
            interfaces: o.interfaces,
            if_directions: o.if_directions,
            cgroup: o.cgroup,
            container_id: o.container_id,
            pkt_drop_bytes: o.pkt_drop_bytes,
            pkt_drop_packets: o.pkt_drop_packets,
            pkt_drop_latest_drop_cause: o.pkt_drop_latest_drop_cause,
            time_flow_rtt_ns: o.time_flow_rtt_ns,
            dns_id: o.dns_id,
            dns_flags: o.dns_flags,
            dns_flags_response_code: o.dns_flags_response_code,
            dns_latency_us: o.dns_latency_us,
            dns_name: o.dns_name,
            dns_qtype: o.dns_qtype,
            src_k8s_name: o.src_k8s_name,
            src_k8s_namespace: o.src_k8s_namespace,
            src_k8s_owner_name: o.src_k8s_owner_name,
            src_k8s_owner_type: o.src_k8s_owner_type,
            src_k8s_type: o.src_k8s_type,
            src_k8s_host_name: o.src_k8s_host_name,
            src_k8s_zone: o.src_k8s_zone,
            src_k8s_labels: o.src_k8s_labels,
            dst_k8s_name: o.dst_k8s_name,
            dst_k8s_namespace: o.dst_k8s_namespace,
            dst_k8s_owner_name: o.dst_k8s_owner_name,
            dst_k8s_owner_type: o.dst_k8s_owner_type,
            dst_k8s_type: o.dst_k8s_type,
            dst_k8s_host_name: o.dst_k8s_host_name,
            dst_k8s_zone: o.dst_k8s_zone,
            dst_k8s_labels: o.dst_k8s_labels,
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
            let raw = decompress(rest)?;
            bincode::deserialize(&raw).map_err(|e| StoreError::Codec(e.to_string()))
        }
        Some((&VERSION_3, rest)) => decode_old::<FlowV3>(rest),
        Some((&VERSION_2, rest)) => decode_old::<FlowV2>(rest),
        Some((v, _)) => Err(StoreError::Codec(format!("unknown block version {v}"))),
        None => Err(StoreError::Codec("empty block".into())),
    }
}

/// A block of an older version: its records as they were, then as today's.
fn decode_old<T>(rest: &[u8]) -> Result<Vec<(u64, Flow)>, StoreError>
where
    T: serde::de::DeserializeOwned + Into<Flow>,
{
    let raw = decompress(rest)?;
    let old: Vec<(u64, T)> =
        bincode::deserialize(&raw).map_err(|e| StoreError::Codec(e.to_string()))?;
    Ok(old.into_iter().map(|(s, f)| (s, f.into())).collect())
}

/// The most a block may inflate to: 64 flows of 1 MiB each. A corrupted size (the first four
/// bytes) must not make the reader allocate gigabytes (found by fuzzing: 4 GiB from 92 bytes).
const MAX_RAW: usize = 64 << 20;

fn decompress(rest: &[u8]) -> Result<Vec<u8>, StoreError> {
    let bad = |m: String| StoreError::Codec(format!("block decompression: {m}"));
    let Some((size, body)) = rest.split_first_chunk::<4>() else {
        return Err(bad("shorter than its size".into()));
    };
    let size = u32::from_le_bytes(*size) as usize;
    // LZ4 inflates at most 255 times, plus a literal run's few bytes.
    if size > MAX_RAW || size > body.len().saturating_mul(255).saturating_add(16) {
        return Err(bad(format!(
            "says it inflates to {size} bytes from {} (corrupted)",
            body.len()
        )));
    }
    lz4_flex::decompress(body, size).map_err(|e| bad(e.to_string()))
}

pub fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupted_size_is_refused_without_allocating_it() {
        // Found by fuzzing: 92 bytes whose size prefix says 4 GiB.
        let bytes = include_bytes!("../../../fuzz/regressions/block/lz4-size-4gib");
        let e = decode_block(bytes).unwrap_err().to_string();
        assert!(e.contains("says it inflates to"), "{e}");
        let mut f = Flow::empty();
        f.interface = "x".repeat(5000);
        let good = encode_block(&[(1, &f)]).unwrap();
        assert_eq!(decode_block(&good).unwrap(), vec![(1, f)]);
        assert!(decode_block(&good[..3]).is_err());
        assert!(decode_block(&good[..good.len() - 1]).is_err());
    }

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

    /// Blocks are positional bincode: a field added, removed, moved or retyped in `Flow`
    /// changes what every stored block means. This fails until the codec follows.
    #[test]
    fn the_flow_layout_is_the_one_this_codec_version_writes() {
        // Field names in declaration order (the JSON text keeps it), each with its JSON
        // kind, then the bincode size of an empty flow (types' widths).
        let empty = Flow::empty();
        let text = serde_json::to_string(&empty).unwrap();
        let value = serde_json::to_value(&empty).unwrap();
        let mut names: Vec<(usize, &String)> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (text.find(&format!("\"{k}\":")).unwrap(), k))
            .collect();
        names.sort();
        let mut layout = String::new();
        for (_, k) in &names {
            let kind = match &value[k.as_str()] {
                serde_json::Value::String(_) => 's',
                serde_json::Value::Number(_) => 'n',
                _ => '?',
            };
            layout.push_str(&format!("{k}:{kind};"));
        }
        layout.push_str(&bincode::serialize(&empty).unwrap().len().to_string());
        // FNV-1a, stable across Rust versions (unlike std's hasher).
        let fingerprint = layout.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        assert_eq!(
            (VERSION, names.len(), fingerprint),
            (4, 53, 11_556_946_203_030_648_301),
            "Flow's stored layout changed ({} fields: {layout}). Stored blocks are positional \
             bincode: bump VERSION in core/src/store/codec.rs, freeze the previous record as \
             FlowV<old> with its From, decode blocks of the old version with it (a test like \
             reads_version_3_blocks), then put the new (VERSION, fields, fingerprint) here. \
             The checklist for a new field is in core/src/flow.rs.",
            names.len()
        );
    }

    #[test]
    fn reads_version_3_blocks() {
        // A version 3 record is today's without its two trailing namespace-label strings (in
        // bincode, an empty string is its 8-byte zero length).
        let mut f = Flow::empty();
        f.src_addr = "10.0.0.1".parse().unwrap();
        f.dns_name = "example.org".into();
        f.src_k8s_labels = "app=web".into();
        f.dst_k8s_labels = "app=db".into();
        f.time_flow_rtt_ns = 1234;
        let raw = bincode::serialize(&vec![(9u64, &f)]).unwrap();
        assert!(raw.ends_with(&[0; 16]));
        let mut block = vec![VERSION_3];
        block.extend_from_slice(&lz4_flex::compress_prepend_size(&raw[..raw.len() - 16]));
        assert_eq!(decode_block(&block).unwrap(), vec![(9, f)]);
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
