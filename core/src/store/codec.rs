//! How a flow is stored in sled: a version byte, then bincode. The key is the record's
//! sequence number, big-endian, so sled keeps records in arrival order.

use super::StoreError;
use crate::flow::Flow;

const VERSION: u8 = 1;

pub fn encode(flow: &Flow) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(160);
    out.push(VERSION);
    bincode::serialize_into(&mut out, flow).map_err(|e| StoreError::Codec(e.to_string()))?;
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<Flow, StoreError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => {
            bincode::deserialize(rest).map_err(|e| StoreError::Codec(e.to_string()))
        }
        Some((v, _)) => Err(StoreError::Codec(format!("unknown record version {v}"))),
        None => Err(StoreError::Codec("empty record".into())),
    }
}

pub fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_versions() {
        let mut f = Flow::empty();
        f.interface = "eth0".into();
        f.dst_addr = "2001:db8::2".parse().unwrap();
        let b = encode(&f).unwrap();
        assert_eq!(decode(&b).unwrap(), f);
        let mut bad = b.clone();
        bad[0] = 9;
        assert!(decode(&bad).unwrap_err().to_string().contains("version 9"));
        assert!(decode(&[]).is_err());
        assert_eq!(seq_of(&key(77)), Some(77));
    }
}
