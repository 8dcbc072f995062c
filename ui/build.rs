//! Embeds the built front end (`ui/web/dist`, from `npm ci && npm run build` in `ui/web`) into
//! the binary. Without it, `/` serves a page saying how to build it.

use std::fmt::Write;
use std::path::PathBuf;

const FILES: &[(&str, &str)] = &[
    ("index.html", "INDEX_HTML"),
    ("app.js", "APP_JS"),
    ("app.css", "APP_CSS"),
];

fn main() {
    let dist =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("web/dist");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let mut code = String::new();
    let built = FILES.iter().all(|(f, _)| dist.join(f).exists());
    for (file, name) in FILES {
        let path = dist.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        if built {
            let _ = writeln!(
                code,
                "pub const {name}: Option<&[u8]> = Some(include_bytes!({:?}));",
                path.display().to_string()
            );
        } else {
            let _ = writeln!(code, "pub const {name}: Option<&[u8]> = None;");
        }
    }
    if !built {
        println!(
            "cargo:warning=the web front end is not built (ui/web/dist); run: cd ui/web && npm ci && npm run build"
        );
    }
    if let Err(e) = std::fs::write(out.join("assets.rs"), code) {
        panic!("writing assets.rs: {e}");
    }
}
