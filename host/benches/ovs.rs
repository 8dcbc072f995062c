//! OVS benchmark: decoding 100 k datapath flows with the bundled `ovs-decoder` in the real
//! sandbox, against the OVS project's own parser (PyPI `ovs`, `ODPFlow`) on the same dump in
//! the same run; then the tree and graph of 10 k flows as the API builds and serializes them.
//! Prints markdown tables; see docs/PERFORMANCE.md. Needs the plugins built
//! (`cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml`) and,
//! for the reference, `scripts/deps.sh bench` (the venv /opt/weir-ovsref). Run:
//! `cargo bench -p weir-host --bench ovs` (`WEIR_BENCH_OVS_FLOWS` changes the 100 k).

use std::path::PathBuf;
use std::time::Instant;
use weir_core::ovs::views::{FlowFilter, graph, tree};
use weir_core::ovs::{Syntax, decode_dump};
use weir_host::Runtime;
use weir_host::ovs::SandboxDecoder;

/// The same allocator as the `weir` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A busy switch: 8 ports; half the flows at recirc_id 0 (conntrack, then recirculation to
/// one of 100 ids), half after recirculation (meter and check_pkt_len, or a plain output);
/// exact source addresses, destination /24s, masked source ports.
pub fn dump(n: usize) -> String {
    let mut s = String::with_capacity(n * 600);
    for i in 0..n {
        let port = i % 8;
        let r = if i % 2 == 0 { 0 } else { 1 + (i / 2) % 100 };
        let act = if r == 0 {
            format!("ct(zone={}),recirc({:#x})", 1 + i % 4, 1 + (i / 2) % 100)
        } else if i % 3 == 0 {
            format!(
                "meter(0),check_pkt_len(size=1500,gt(p{o}),le(push_vlan(vid=10,pcp=0),p{o}))",
                o = (port + 1) % 8
            )
        } else {
            format!("p{}", (port + 1) % 8)
        };
        let ct = if r == 0 {
            "ct_state(0/0),ct_zone(0/0)".to_string()
        } else {
            "ct_state(0x22/0x23),ct_zone(0x1/0)".to_string()
        };
        s.push_str(&format!(
            "ufid:{:08x}-0000-4000-8000-{:012x}, skb_priority(0/0),skb_mark(0/0),{ct},ct_mark(0/0),ct_label(0/0),recirc_id({r:#x}),dp_hash(0/0),in_port(p{port}),packet_type(ns=0,id=0),eth(src=02:00:00:00:{:02x}:{:02x}/00:00:00:00:00:00,dst=02:00:00:01:00:01/00:00:00:00:00:00),eth_type(0x0800),ipv4(src=10.{}.{}.{}/255.255.255.255,dst=10.9.{}.0/255.255.255.0,proto=6/0xff,tos=0/0,ttl=64/0,frag=no),tcp(src={}/0xff00,dst=443), packets:{}, bytes:{}, used:{:.3}s, flags:SP., dp:ovs, actions:{act}, dp-extra-info:miniflow_bits(5,2)\n",
            i,
            i,
            (i >> 8) % 256,
            i % 256,
            (i >> 16) % 256,
            (i >> 8) % 256,
            i % 256,
            i % 200,
            1024 + i % 60000,
            1 + i % 5000,
            (1 + i % 5000) * 800,
            (i % 1000) as f64 / 100.0
        ));
    }
    s
}

fn main() {
    let n: usize = std::env::var("WEIR_BENCH_OVS_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let wasm = std::fs::read(plugins.join("target/wasm32-wasip2/release/ovs_decoder.wasm"))
        .expect("build the plugins first (see the module docs)");
    let manifest =
        std::fs::read_to_string(plugins.join("ovs-decoder/plugin.toml")).expect("manifest");
    let rt = Runtime::new(None).expect("runtime");
    let dec = SandboxDecoder::load(&rt, &wasm, &manifest).expect("decoder");
    let text = dump(n);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dump.txt");
    std::fs::write(&file, &text).expect("dump");

    // The sandbox call alone (the plugin parsing and answering), chunk by chunk.
    let raw_calls = {
        use weir_core::ovs::DumpDecoder;
        let lines: Vec<&str> = text.lines().collect();
        let t = Instant::now();
        let mut got = 0;
        for (i, c) in lines.chunks(weir_core::ovs::CHUNK_LINES).enumerate() {
            got += dec
                .decode(
                    &c.join("\n"),
                    Syntax::Dpctl,
                    (i * weir_core::ovs::CHUNK_LINES) as u64 + 1,
                )
                .expect("decode")
                .len();
        }
        assert_eq!(got, n);
        t.elapsed().as_secs_f64()
    };
    // weir: the sandboxed decoder, chunk by chunk, into DpFlows (what the agent keeps).
    let mut flows = Vec::new();
    let weir: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let d = decode_dump(&dec, &text, Syntax::Dpctl, "bench", |_, _| {}).expect("decode");
            let s = t.elapsed().as_secs_f64();
            assert_eq!(d.flows.len(), n);
            assert!(d.errors.is_empty());
            flows = d.flows;
            s
        })
        .collect();
    let weir = median(weir);

    // The reference parser on the same file, once (it is slow).
    let py = "import sys,time\nfrom ovs.flow.odp import ODPFlow\nlines=[l.strip() for l in open(sys.argv[1]) if 'actions:' in l]\nt=time.time()\nfor l in lines: ODPFlow(l)\nprint(time.time()-t)";
    let reference = std::process::Command::new("/opt/weir-ovsref/bin/python")
        .args(["-c", py])
        .arg(&file)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        });

    println!(
        "## OVS decoding ({n} datapath flows, {:.1} MB)\n",
        text.len() as f64 / 1e6
    );
    println!("| decoder | time | flows/s | / reference | target |");
    println!("|---|---|---|---|---|");
    match reference {
        Some(r) => {
            println!(
                "| reference: PyPI ovs 3.6.1 `ODPFlow` (Python) | {:.2} s | {:.0} | 1.00 | |",
                r,
                n as f64 / r
            );
            println!(
                "| weir: ovs-decoder in the sandbox, into DpFlows | {:.2} s | {:.0} | {:.3} | <= 1 s |",
                weir,
                n as f64 / weir,
                weir / r
            );
        }
        None => {
            println!("| reference: not run (no /opt/weir-ovsref: scripts/deps.sh bench) | | | | |");
            println!(
                "| weir: ovs-decoder in the sandbox, into DpFlows | {:.2} s | {:.0} | | <= 1 s |",
                weir,
                n as f64 / weir
            );
        }
    }

    println!(
        "| of it: the sandbox calls alone (parse in the plugin, answer to the host) | {raw_calls:.2} s | {:.0} | | |",
        n as f64 / raw_calls
    );

    // Tree and graph of 10 k flows: build and serialize, as an API answer does.
    let ten: Vec<_> = flows.into_iter().take(10_000).collect();
    let all = FlowFilter::default();
    let time = |f: &mut dyn FnMut() -> usize| {
        let mut bytes = 0;
        let m = median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    bytes = f();
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect(),
        );
        (m, bytes)
    };
    let (list_ms, list_b) = time(&mut || {
        serde_json::to_vec(&ten.iter().map(|f| f.to_json()).collect::<Vec<_>>())
            .expect("json")
            .len()
    });
    let (tree_ms, tree_b) =
        time(&mut || serde_json::to_vec(&tree(&ten, &all)).expect("json").len());
    let (graph_ms, graph_b) =
        time(&mut || serde_json::to_vec(&graph(&ten, &all)).expect("json").len());
    let text10: String = text.lines().take(10_000).collect::<Vec<_>>().join("\n");
    let (dec_ms, _) = time(&mut || {
        decode_dump(&dec, &text10, Syntax::Dpctl, "bench", |_, _| {})
            .expect("decode")
            .flows
            .len()
    });
    println!("\n## OVS views of 10 000 flows (build + JSON, medians of 5)\n");
    println!("| answer | time | JSON | / flows list | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| baseline: the flows list as JSON | {list_ms:.1} ms | {:.1} MB | 1.00 | |",
        list_b as f64 / 1e6
    );
    println!(
        "| tree | {tree_ms:.1} ms | {:.1} MB | {:.2} | <= 200 ms |",
        tree_b as f64 / 1e6,
        tree_ms / list_ms
    );
    println!(
        "| graph | {graph_ms:.1} ms | {:.2} MB | {:.2} | <= 200 ms |",
        graph_b as f64 / 1e6,
        graph_ms / list_ms
    );
    println!(
        "| decoding the collection (first view of it; later ones use the cache) | {dec_ms:.0} ms | | {:.2} | |",
        dec_ms / list_ms
    );
}
