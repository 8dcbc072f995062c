//! `weir plugin build`, and the Python and JavaScript scaffolds of `weir plugin new`: a plugin
//! project (Rust, Python or JavaScript) becomes an installable directory, `dist/` with its
//! plugin.toml and one component.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The `weir:plugin` package this binary's host serves, copied into script projects.
const WIT: &str = include_str!("../wit/plugin.wit");

/// The languages a project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    #[value(alias = "js")]
    Javascript,
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Javascript => "JavaScript",
        }
    }
}

/// What a project directory holds: Cargo.toml (Rust), app.py (Python, componentize-py) or
/// package.json (JavaScript, jco).
fn detect(dir: &Path) -> Result<Lang> {
    if dir.join("Cargo.toml").exists() {
        Ok(Lang::Rust)
    } else if dir.join("app.py").exists() {
        Ok(Lang::Python)
    } else if dir.join("package.json").exists() {
        Ok(Lang::Javascript)
    } else {
        bail!(
            "{}: not a plugin project (no Cargo.toml, app.py or package.json; `weir plugin new` makes one)",
            dir.display()
        )
    }
}

/// The version on the `package weir:plugin@X;` line of the WIT.
fn wit_version() -> &'static str {
    WIT.lines()
        .find_map(|l| l.trim().strip_prefix("package weir:plugin@"))
        .and_then(|v| v.strip_suffix(';'))
        .unwrap_or("0.1.0")
}

/// The world a script project targets (`world NAME {` in wit/world.wit).
fn world_of(dir: &Path) -> Result<String> {
    let p = dir.join("wit/world.wit");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    text.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("world ")?;
            Some(rest.trim_end_matches('{').trim().to_string())
        })
        .with_context(|| format!("{}: no `world NAME {{` line", p.display()))
}

/// Makes sure the project sees weir's WIT package (written when missing; a copy already there
/// is the version the project was written against and is left alone). A project written
/// against an earlier compatible version (`weir:plugin@0.1.x` in wit/world.wit) gets this
/// version's package under the name it uses: compatible versions only add, so every
/// interface it names is there, unchanged, and the host links its imports by semver.
fn ensure_wit(dir: &Path) -> Result<()> {
    let p = dir.join("wit/deps/weir-plugin/plugin.wit");
    if p.exists() {
        return Ok(());
    }
    let world = dir.join("wit/world.wit");
    let text = std::fs::read_to_string(&world).unwrap_or_default();
    let current = wit_version();
    let wanted = wit_version_used(&text).unwrap_or_else(|| current.to_string());
    let wit = if wanted == current {
        WIT.to_string()
    } else if compatible(&wanted, current) {
        WIT.replacen(
            &format!("package weir:plugin@{current};"),
            &format!("package weir:plugin@{wanted};"),
            1,
        )
    } else {
        bail!(
            "{} uses weir:plugin@{wanted}; this weir builds against {current} and versions compatible with it (the same 0.x minor, not newer)",
            world.display()
        );
    };
    std::fs::create_dir_all(p.parent().unwrap_or(dir))?;
    std::fs::write(&p, wit).with_context(|| format!("writing {}", p.display()))?;
    Ok(())
}

/// The `weir:plugin` version a world file names (`weir:plugin/log@0.1.1` -> `0.1.1`).
fn wit_version_used(world: &str) -> Option<String> {
    let at = world.find("weir:plugin/")?;
    let rest = &world[at..];
    let v = rest.split('@').nth(1)?;
    let v: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v = v.trim_end_matches('.').to_string();
    (!v.is_empty()).then_some(v)
}

/// Whether a project written against `old` builds against `new`: same 0.x minor (or same
/// major from 1.0), and not newer.
fn compatible(old: &str, new: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut it = v.split('.').map(|x| x.parse::<u64>().ok());
        Some((it.next()??, it.next()??, it.next()??))
    };
    match (parse(old), parse(new)) {
        (Some(o), Some(n)) => {
            let same_line = if o.0 == 0 {
                o.0 == n.0 && o.1 == n.1
            } else {
                o.0 == n.0
            };
            same_line && o <= n
        }
        _ => false,
    }
}

/// A tool from an environment variable, else from PATH; the error says how to get it.
fn tool(env: &str, name: &str, how: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.with_context(|| format!("{name} not found on PATH (or in ${env}): {how}"))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let st = cmd.status().with_context(|| format!("starting {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

/// Builds the project in `dir` into `dir/dist/` (plugin.toml + NAME.wasm); returns `dist`.
pub fn build(dir: &Path) -> Result<PathBuf> {
    let started = Instant::now();
    // Absolute from here on: the toolchains run with the project as their working directory,
    // so a relative `./my-rule` (as `weir plugin new` prints it) must not be resolved twice.
    let dir = &std::fs::canonicalize(dir)
        .with_context(|| format!("no plugin project at {}", dir.display()))?;
    let lang = detect(dir)?;
    let toml_path = dir.join("plugin.toml");
    let toml = std::fs::read_to_string(&toml_path)
        .with_context(|| format!("reading {} (every plugin has one)", toml_path.display()))?;
    let manifest = weir_host::Manifest::parse(&toml, &toml_path.display().to_string())?;
    let name = manifest.name.clone();
    let dist = dir.join("dist");
    if dist.exists() {
        std::fs::remove_dir_all(&dist).with_context(|| format!("clearing {}", dist.display()))?;
    }
    std::fs::create_dir_all(&dist)?;
    let out = dist.join(format!("{name}.wasm"));
    match lang {
        Lang::Rust => {
            let built = cargo_build(dir)?;
            std::fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
        }
        Lang::Python => {
            ensure_wit(dir)?;
            let cpy = tool(
                "WEIR_COMPONENTIZE_PY",
                "componentize-py",
                "python3 -m pip install componentize-py==0.25.1",
            )?;
            let world = world_of(dir)?;
            run(
                Command::new(cpy)
                    .current_dir(dir)
                    .args([
                        "-d",
                        "wit",
                        "-w",
                        &world,
                        "componentize",
                        "-p",
                        ".",
                        "app",
                        "-o",
                    ])
                    .arg(&out)
                    .env("PYTHONDONTWRITEBYTECODE", "1"),
                "componentize-py",
            )?;
        }
        Lang::Javascript => {
            ensure_wit(dir)?;
            let local = dir.join("node_modules/.bin/jco");
            let jco = if local.exists() {
                local
            } else if let Ok(t) = tool("WEIR_JCO", "jco", "") {
                t
            } else {
                eprintln!("installing the project's npm dependencies (jco)...");
                run(
                    Command::new("npm").current_dir(dir).args([
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                    ]),
                    "npm install (is node with npm installed?)",
                )?;
                local
            };
            let main = js_main(dir)?;
            let world = world_of(dir)?;
            // --backend-qjs-disable-async: the default QuickJS runtime uses the component
            // model's async ABI, which the host does not enable.
            run(
                Command::new(jco)
                    .current_dir(dir)
                    .args([
                        "componentize",
                        &main,
                        "--wit",
                        "wit",
                        "--world-name",
                        &world,
                    ])
                    .args(["--backend", "quickjs", "--backend-qjs-disable-async", "-o"])
                    .arg(&out)
                    .stdout(Stdio::null()),
                "jco componentize",
            )?;
        }
    }
    std::fs::copy(&toml_path, dist.join("plugin.toml"))?;
    // The same check an install makes first: a component with a readable manifest.
    weir_host::registry::read_source(&dist)?;
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "built {name} ({}) -> {} ({:.1} MiB) in {:.0} s",
        lang.name(),
        out.display(),
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    Ok(dist)
}

/// `cargo build` for wasm32-wasip2; the component it made.
fn cargo_build(dir: &Path) -> Result<PathBuf> {
    let out = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo (is Rust installed? rustup target add wasm32-wasip2)")?;
    if !out.status.success() {
        bail!(
            "cargo build failed ({}); the target needs `rustup target add wasm32-wasip2`",
            out.status
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
        .context("cargo built no .wasm: is the crate a cdylib (`crate-type = [\"cdylib\"]`)?")
}

/// A JavaScript project's entry: package.json's `main`, else its one .js file.
fn js_main(dir: &Path) -> Result<String> {
    let pkg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("package.json"))?)
        .context("package.json is not JSON")?;
    if let Some(m) = pkg["main"].as_str() {
        return Ok(m.to_string());
    }
    let js: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.ends_with(".js"))
        .collect();
    match &js[..] {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{}: set \"main\" in package.json (found {} .js files)",
            dir.display(),
            js.len()
        ),
    }
}

const PY_RULE: &str = r#""""NAME: destination ports that received at least bytes_warning bytes in the window.

Config: bytes_warning (default 100000000), bytes_critical (default 1000000000), filter (a flow
filter applied too). Build and install: weir plugin build . --install
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import config, flows
from wit_world.imports.types import Alert, Metric, PluginError_InvalidInput, Severity, TimeRange


def config_int(key: str, default: int) -> int:
    raw = config.get(key)
    if raw is None:
        return default
    text = raw.strip().replace("_", "")
    if not (text.isascii() and text.isdigit()):
        raise Err(PluginError_InvalidInput(f"config {key}: expected a whole number, got {raw!r}"))
    return int(text)


class WitWorld(wit_world.WitWorld):
    def evaluate(self, window: TimeRange):
        warning = config_int("bytes_warning", 100_000_000)
        critical = config_int("bytes_critical", 1_000_000_000)
        extra = (config.get("filter") or "").strip()
        filter_text = f"(DstPort>0) and ({extra})" if extra else "DstPort>0"
        try:
            groups = flows.aggregate(filter_text, window, ["DstPort"], Metric.BYTES, 1000)
        except Err as e:
            raise Err(PluginError_InvalidInput(str(e.value)))
        secs = max(1, (window.to_ms - window.from_ms) // 1000)
        alerts = []
        for g in groups:  # largest first
            if g.bytes < warning:
                break
            port = str(g.key[0].value)
            alerts.append(Alert(
                name="PortHot",
                severity=Severity.CRITICAL if g.bytes >= critical else Severity.WARNING,
                summary=f"{g.bytes} bytes in {secs} s to dst_port={port}",
                labels=[("dst_port", port)],
                time_ms=window.to_ms,
            ))
        return alerts
"#;

const JS_RULE: &str = r#"// NAME: destination ports that received at least bytes_warning bytes in the window.
// Config: bytes_warning (default 100000000), bytes_critical (default 1000000000), filter (a
// flow filter applied too). Build and install: weir plugin build . --install
// u64 values arrive as Number (QuickJS): read them with Number().
import flows from "weir:plugin/flows@VERSION";
import config from "weir:plugin/config@VERSION";

function configUint(key, dflt) {
  const raw = config.get(key);
  if (raw === null || raw === undefined) return dflt;
  const text = String(raw).trim().replace(/_/g, "");
  if (!/^[0-9]+$/.test(text)) {
    throw { tag: "invalid-input", val: `config ${key}: expected a whole number, got ${JSON.stringify(raw)}` };
  }
  return Number(text);
}

export function evaluate(window) {
  const warning = configUint("bytes_warning", 100000000);
  const critical = configUint("bytes_critical", 1000000000);
  const extra = (config.get("filter") ?? "").trim();
  const filter = extra ? `(DstPort>0) and (${extra})` : "DstPort>0";
  let groups;
  try {
    groups = flows.aggregate(filter, window, ["DstPort"], "bytes", 1000);
  } catch (e) {
    throw { tag: "invalid-input", val: String(e?.payload ?? e) };
  }
  const secs = Math.max(1, Math.floor((Number(window.toMs) - Number(window.fromMs)) / 1000));
  const alerts = [];
  for (const g of groups) { // largest first
    const bytes = Number(g.bytes);
    if (bytes < warning) break;
    const port = String(g.key[0].val);
    alerts.push({
      name: "PortHot",
      severity: bytes >= critical ? "critical" : "warning",
      summary: `${bytes} bytes in ${secs} s to dst_port=${port}`,
      labels: [["dst_port", port]],
      timeMs: window.toMs, // handed back in the form it came in
    });
  }
  return alerts;
}
"#;

/// Scaffolds an alert rule in Python or JavaScript: the rule (destination ports over a byte
/// threshold), plugin.toml, a cut-down `alert-rule` world importing only what it uses (the
/// toolchains import every interface of the world they target, and each import needs a
/// grant), and weir's WIT package.
pub fn scaffold_script(kind: &str, name: &str, lang: Lang, root: &Path) -> Result<()> {
    if kind != "alert-rule" {
        bail!(
            "{} scaffolds exist for alert-rule only; write a {kind} in Rust (--lang rust)",
            lang.name()
        );
    }
    let v = wit_version();
    std::fs::create_dir_all(root.join("wit/deps/weir-plugin"))?;
    std::fs::write(root.join("wit/deps/weir-plugin/plugin.wit"), WIT)?;
    std::fs::write(
        root.join("wit/world.wit"),
        format!(
            "// The alert-rule world of weir:plugin, narrowed to the interfaces this rule uses: each\n// import needs its capability granted. Add `import weir:plugin/log@{v};` (and `log` to\n// plugin.toml's capabilities) to write to the agent's log.\npackage local:{name};\n\nworld alert-rule {{\n    import weir:plugin/flows@{v};\n    import weir:plugin/config@{v};\n    use weir:plugin/types@{v}.{{alert, time-range, plugin-error}};\n\n    export evaluate: func(window: time-range) -> result<list<alert>, plugin-error>;\n}}\n"
        ),
    )?;
    let memory = match lang {
        Lang::Python => 64,
        _ => 32,
    };
    std::fs::write(
        root.join("plugin.toml"),
        format!(
            "name = \"{name}\"\nversion = \"0.1.0\"\nkind = \"alert-rule\"\nwit = \"0.1\"\ndescription = \"Destination ports that received at least bytes_warning bytes in the window ({})\"\ncapabilities = [\"flows\", \"config\"]\n\n[limits]\n# The language runtime inside the component needs at least 16 MiB.\nmemory_mb = {memory}\ntimeout_ms = 5000\n",
            lang.name()
        ),
    )?;
    std::fs::write(
        root.join(".gitignore"),
        "dist/\nnode_modules/\n__pycache__/\n",
    )?;
    match lang {
        Lang::Python => std::fs::write(root.join("app.py"), PY_RULE.replace("NAME", name))?,
        Lang::Javascript => {
            std::fs::write(
                root.join("rule.js"),
                JS_RULE.replace("NAME", name).replace("VERSION", v),
            )?;
            std::fs::write(
                root.join("package.json"),
                format!(
                    "{{\n  \"name\": \"weir-plugin-{name}\",\n  \"version\": \"0.1.0\",\n  \"private\": true,\n  \"type\": \"module\",\n  \"main\": \"rule.js\",\n  \"devDependencies\": {{\n    \"@bytecodealliance/jco\": \"1.35.0\"\n  }},\n  \"overrides\": {{\n    \"@bytecodealliance/preview2-shim\": \"0.25.0\"\n  }}\n}}\n"
                ),
            )?;
        }
        Lang::Rust => bail!("internal: the Rust scaffold is made by `scaffold`"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_of_an_earlier_compatible_wit_get_it_under_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let world = |v: &str| {
            format!(
                "package local:x;\nworld alert-rule {{\n    import weir:plugin/flows@{v};\n}}\n"
            )
        };
        std::fs::create_dir_all(dir.path().join("wit")).unwrap();
        std::fs::write(dir.path().join("wit/world.wit"), world("0.1.1")).unwrap();
        ensure_wit(dir.path()).unwrap();
        let got =
            std::fs::read_to_string(dir.path().join("wit/deps/weir-plugin/plugin.wit")).unwrap();
        assert!(
            got.contains("package weir:plugin@0.1.1;"),
            "{}",
            &got[..400]
        );
        assert!(got.contains("interface flows"));
        // Newer, or another 0.x minor: refused with both versions named.
        for v in ["0.2.0", "9.9.9"] {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(d.path().join("wit")).unwrap();
            std::fs::write(d.path().join("wit/world.wit"), world(v)).unwrap();
            let e = ensure_wit(d.path()).unwrap_err().to_string();
            assert!(
                e.contains(&format!("weir:plugin@{v}")) && e.contains(wit_version()),
                "{e}"
            );
        }
        assert!(compatible("0.1.0", "0.1.2") && !compatible("0.1.3", "0.1.2"));
        assert!(!compatible("0.1.0", "0.2.0") && compatible("1.0.0", "1.4.0"));
    }

    #[test]
    fn scaffolds_name_their_world_and_projects_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        for (lang, file) in [(Lang::Python, "app.py"), (Lang::Javascript, "rule.js")] {
            let root = dir.path().join(format!("r-{}", lang.name()));
            scaffold_script("alert-rule", "r", lang, &root).unwrap();
            assert!(root.join(file).exists());
            assert_eq!(detect(&root).unwrap(), lang);
            assert_eq!(world_of(&root).unwrap(), "alert-rule");
            let world = std::fs::read_to_string(root.join("wit/world.wit")).unwrap();
            assert!(world.contains(&format!("weir:plugin/flows@{}", wit_version())));
            let toml = std::fs::read_to_string(root.join("plugin.toml")).unwrap();
            weir_host::Manifest::parse(&toml, "plugin.toml").unwrap();
        }
        assert_eq!(
            js_main(&dir.path().join("r-JavaScript")).unwrap(),
            "rule.js"
        );
        let e = scaffold_script("decoder", "d", Lang::Python, &dir.path().join("d")).unwrap_err();
        assert!(e.to_string().contains("alert-rule only"), "{e}");
        let e = detect(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a plugin project"), "{e}");
        assert!(wit_version().starts_with("0.1."));
    }
}
