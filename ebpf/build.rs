//! Builds the kernel programs in src/bpf/ with clang into OUT_DIR. Fails loudly when clang
//! fails, so a stale object can never be embedded.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Kernel programs, each `src/bpf/<name>.bpf.c` built into `OUT_DIR/<name>.bpf.o`.
const PROGRAMS: &[&str] = &["flows"];

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = env::var("WEIR_CLANG").unwrap_or_else(|_| "clang-19".to_string());
    println!("cargo:rerun-if-env-changed=WEIR_CLANG");
    println!("cargo:rerun-if-changed=src/bpf");
    for prog in PROGRAMS {
        let src = format!("src/bpf/{prog}.bpf.c");
        let obj = out.join(format!("{prog}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-Isrc/bpf")
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{clang} failed on {src} ({s}); install clang-19 and libbpf-dev"),
            Err(e) => panic!(
                "cannot run {clang} for {src}: {e}; install it with `apt-get install clang-19 libbpf-dev` or set WEIR_CLANG"
            ),
        }
    }
}
