//! Writes the binary seeds of `fuzz/corpus` with weir's own encoders (see Cargo.toml).

#[path = "../../plugins/edge-summary/src/sketches.rs"]
#[allow(dead_code)]
mod sketches;

use std::collections::BTreeMap;
use std::path::Path;
use weir_core::incident::{FORMAT, Incident, Manifest};
use weir_core::store::codec::encode_block;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        std::fs::create_dir_all(corpus.join(target))?;
        std::fs::write(corpus.join(target).join(name), bytes)
    };
    let flows: Vec<weir_core::Flow> = weir_core::import::parse_flows(
        include_str!("../corpus/import/ndjson").as_bytes(),
    )?;
    let mut more = flows.clone();
    more.extend(weir_core::import::parse_flows(
        include_str!("../corpus/import/array").as_bytes(),
    )?);

    // Store blocks: one flow, and several.
    for (name, set) in [("one", &flows[..1]), ("three", &more[..])] {
        let items: Vec<(u64, &weir_core::Flow)> =
            set.iter().enumerate().map(|(i, f)| (100 + i as u64, f)).collect();
        write("block", name, &encode_block(&items)?)?;
    }

    // A summarizer snapshot with every family of sketch.
    let mut s = sketches::Summary::new();
    for (i, item) in ["10.0.0.1", "10.0.0.2", "2001:db8::1"].iter().enumerate() {
        s.top[0][0].update_with_count(item.to_string(), 100 * (i as u64 + 1));
        sketches::add_distinct(&mut s.distinct[0], item.as_bytes());
        sketches::add(&mut s.quantiles[0], 1500.0 / (i as f64 + 1.0));
    }
    write("sketches", "three", &s.snapshot())?;
    write("sketches", "empty", &sketches::Summary::new().snapshot())?;

    // An incident file with flows and settings.
    let mut members = BTreeMap::new();
    let mut ndjson = Vec::new();
    for f in &more {
        ndjson.extend(serde_json::to_vec(f)?);
        ndjson.push(b'\n');
    }
    members.insert("flows.ndjson".to_string(), ndjson);
    members.insert("settings.json".to_string(), br#"{"retention":"7d"}"#.to_vec());
    let manifest = Manifest {
        format: FORMAT.into(),
        created_ms: 1_800_000_000_000,
        node: "node-a".into(),
        weir_version: "0.1.0".into(),
        from_ms: 1_700_000_000_000,
        to_ms: 1_800_000_000_000,
        filter: String::new(),
        counts: BTreeMap::from([("flows".to_string(), more.len() as u64)]),
        members: Vec::new(),
    };
    write("incident", "flows", &Incident::new(manifest, members)?.to_bytes()?)?;

    // DNS: a query for a.test (A) and an NXDOMAIN answer to it.
    let query: Vec<u8> = [
        &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..],
        &[1, b'a', 4, b't', b'e', b's', b't', 0, 0, 1, 0, 1],
    ]
    .concat();
    let mut answer = query.clone();
    answer[2] = 0x81;
    answer[3] = 0x83;
    write("dns", "query", &query)?;
    write("dns", "nxdomain", &answer)?;
    Ok(())
}
