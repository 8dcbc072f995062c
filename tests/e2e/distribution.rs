//! Plugin distribution: ed25519 signatures against trusted keys, and OCI push/pull against a
//! real registry (Debian's docker-registry) on loopback.

use crate::plugins::{staged, weir};
use crate::util::{Agent, WEIR, free_port, require, sh};
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Nothing but the named plugins (and no staging leftovers) in the registry directory.
fn installed(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("plugins"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn signatures_are_required_once_a_key_is_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let src = staged(d, "flow_count", "flow-count");
    let data = d.join("data");
    let keys = d.join("keys");
    for who in ["alice", "mallory"] {
        let (code, out, err) = weir(&data, &["keygen", who, "--dir", keys.to_str().expect("p")]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("key id"), "{out}");
    }
    let file = src.join("plugin.wasm");
    let sign = |key: &str, out: &str| {
        let (code, o, err) = weir(
            &data,
            &[
                "sign",
                file.to_str().expect("p"),
                "--key",
                keys.join(format!("{key}.key")).to_str().expect("p"),
                "-o",
                d.join(out).to_str().expect("p"),
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(o.contains("signed flow-count 0.1.0"), "{o}");
    };
    sign("alice", "good.wasm");
    sign("mallory", "mallory.wasm");
    // One flipped byte in the signed file (inside the code, past the signature header).
    let mut bytes = std::fs::read(d.join("good.wasm")).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(d.join("tampered.wasm"), &bytes).expect("write");

    // Without trusted keys an unsigned plugin installs (and is recorded as unsigned).
    let (code, _, err) = weir(&d.join("open"), &["install", src.to_str().expect("p")]);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = weir(
        &data,
        &["trust", keys.join("alice.pub").to_str().expect("p")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("trusted alice"), "{out}");

    for (file, want) in [
        (src.join("plugin.wasm"), "the file is not signed"),
        (d.join("mallory.wasm"), "signed by an unknown key"),
        (
            d.join("tampered.wasm"),
            "bad signature: the file was changed after it was signed",
        ),
    ] {
        let (code, _, err) = weir(&data, &["install", file.to_str().expect("p")]);
        assert_ne!(code, 0, "{} installed", file.display());
        assert!(err.contains(want), "{}: {err}", file.display());
        assert!(
            installed(&data).is_empty(),
            "left behind: {:?}",
            installed(&data)
        );
    }
    let (code, _, err) = weir(
        &data,
        &["install", d.join("good.wasm").to_str().expect("p")],
    );
    assert_eq!(code, 0, "{err}");
    let (_, info, _) = weir(&data, &["info", "flow-count", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(v["installed"]["signed_by"], "alice", "{v}");
    assert_eq!(installed(&data), vec!["flow-count"]);
}

/// Debian's docker-registry on a loopback port, stopped on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(root: &Path) -> Registry {
        Registry::start_with(root, "", "")
    }

    /// `http_extra` goes under `http:` (TLS), `top_extra` at the top level (auth).
    fn start_with(root: &Path, http_extra: &str, top_extra: &str) -> Registry {
        require(&["docker-registry"]);
        let port = free_port();
        std::fs::create_dir_all(root).expect("registry dir");
        let cfg = root.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{http_extra}{top_extra}",
                root.join("store").display()
            ),
        )
        .expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry { child, port }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn oci_push_and_install_from_a_real_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let reg = Registry::start(&d.join("registry"));
    let src = staged(d, "flow_count", "flow-count");
    let data = d.join("data");
    let reference = format!("oci://127.0.0.1:{}/weir/flow-count:0.1.0", reg.port);
    let (code, out, err) = weir(
        &data,
        &[
            "push",
            src.join("plugin.wasm").to_str().expect("p"),
            &reference,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pushed flow-count 0.1.0"), "{out}");
    let layer = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("layer    sha256:"))
        .expect("layer digest")
        .to_string();

    // The registry serves it as a wasm artifact.
    let manifest: serde_json::Value = ureq::get(&format!(
        "http://127.0.0.1:{}/v2/weir/flow-count/manifests/0.1.0",
        reg.port
    ))
    .header("accept", "application/vnd.oci.image.manifest.v1+json")
    .call()
    .expect("manifest")
    .body_mut()
    .read_json()
    .expect("json");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(manifest["layers"][0]["digest"], format!("sha256:{layer}"));

    // Install by tag, pinned; a wrong pin and a missing tag are refused.
    let (code, _, err) = weir(
        &d.join("pin"),
        &["install", &reference, "--sha256", &"0".repeat(64)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("sha256 mismatch"), "{err}");
    let (code, _, err) = weir(&data, &["install", &reference.replace(":0.1.0", ":9.9.9")]);
    assert_ne!(code, 0);
    assert!(err.contains("not found in the registry"), "{err}");
    let (code, out, err) = weir(&data, &["install", &reference, "--sha256", &layer]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("flow-count 0.1.0 (flow-processor) installed"),
        "{out}"
    );
    let (_, info, _) = weir(&data, &["info", "flow-count", "--json"]);
    assert!(info.contains(&reference), "{info}");
    // The API installs from the registry too (the agent pulls it).
    let a = Agent::start(&d.join("agent"), &["--no-capture"]);
    let (s, v) = a.post(
        &format!("/api/v1/plugins?source={reference}&sha256={layer}"),
        "",
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["installed"]["source"], reference.as_str(), "{v}");
    drop(a);

    // A blob changed in the registry's storage is caught by its digest.
    let blob = d
        .join("registry/store/docker/registry/v2/blobs/sha256")
        .join(&layer[..2])
        .join(&layer)
        .join("data");
    let mut bytes = std::fs::read(&blob).expect("blob on disk");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&blob, &bytes).expect("tamper");
    let (code, _, err) = weir(&d.join("other"), &["install", &reference]);
    assert_ne!(code, 0);
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(installed(&d.join("other")).is_empty());
    // Malformed references name the expected form.
    let (code, _, err) = weir(&data, &["install", "oci://127.0.0.1/Bad:tag"]);
    assert_ne!(code, 0);
    assert!(err.contains("expected oci://"), "{err}");
}

/// `weir plugin ARGS` with extra environment (registry CA and credentials).
fn weir_env(data: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(WEIR)
        .arg("plugin")
        .args(args)
        .env("WEIR_DATA_DIR", data)
        .env_remove("WEIR_OCI_CA_FILE")
        .env_remove("WEIR_OCI_USERNAME")
        .env_remove("WEIR_OCI_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("weir plugin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn oci_over_tls_with_basic_auth() {
    require(&["openssl", "htpasswd"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = |f: &str| d.join(f).display().to_string();
    // A private CA and a server certificate for "localhost".
    sh(&format!(
        "cd {0} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -keyout ca.key -out ca.crt -days 2 -subj /CN=weir-test-ca 2>/dev/null && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key \
         -out srv.csr -subj /CN=localhost 2>/dev/null && \
         printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext && \
         openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt \
         -days 2 -extfile ext 2>/dev/null && htpasswd -Bbn weir s3cret > htpasswd",
        d.display()
    ));
    let reg = Registry::start_with(
        &d.join("registry"),
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            p("srv.crt"),
            p("srv.key")
        ),
        &format!(
            "auth:\n  htpasswd:\n    realm: weir-test\n    path: {}\n",
            p("htpasswd")
        ),
    );
    let src = staged(d, "flow_count", "flow-count");
    let file = src.join("plugin.wasm");
    let file = file.to_str().expect("p");
    let data = d.join("data");
    let reference = format!("oci://localhost:{}/weir/flow-count:tls", reg.port);
    let ca = p("ca.crt");

    // A certificate from an unknown CA is refused.
    let (code, _, err) = weir_env(&data, &[], &["push", file, &reference]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach the registry"), "{err}");
    // Trusted, but no credentials; then wrong ones.
    let (code, _, err) = weir_env(
        &data,
        &[("WEIR_OCI_CA_FILE", &ca)],
        &["push", file, &reference],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("set WEIR_OCI_USERNAME and WEIR_OCI_PASSWORD"),
        "{err}"
    );
    let wrong = [
        ("WEIR_OCI_CA_FILE", ca.as_str()),
        ("WEIR_OCI_USERNAME", "weir"),
        ("WEIR_OCI_PASSWORD", "nope"),
    ];
    let (code, _, err) = weir_env(&data, &wrong, &["push", file, &reference]);
    assert_ne!(code, 0);
    assert!(err.contains("access denied (401)"), "{err}");
    // Right ones: push, then install over TLS.
    let good = [
        ("WEIR_OCI_CA_FILE", ca.as_str()),
        ("WEIR_OCI_USERNAME", "weir"),
        ("WEIR_OCI_PASSWORD", "s3cret"),
    ];
    let (code, out, err) = weir_env(&data, &good, &["push", file, &reference]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pushed flow-count 0.1.0"), "{out}");
    let (code, out, err) = weir_env(&data, &good, &["install", &reference]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("flow-count 0.1.0 (flow-processor) installed"),
        "{out}"
    );
}

/// The token service (tests/e2e/token_server.py) on a loopback port, stopped on drop.
struct TokenServer {
    child: Child,
    port: u16,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn oci_token_auth_anonymous_pull_and_credentialed_push() {
    require(&["openssl", "python3"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = |f: &str| d.join(f).display().to_string();
    sh(&format!(
        "cd {} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -keyout token.key -out token.crt -days 2 -subj /CN=weir-token-issuer 2>/dev/null",
        d.display()
    ));
    let port = free_port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/token_server.py");
    let child = Command::new("python3")
        .arg(&script)
        .args([
            &port.to_string(),
            &p("token.key"),
            &p("token.crt"),
            "weir-issuer",
            "weir-test",
            "weir",
            "s3cret",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("token server");
    let tokens = TokenServer { child, port };
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", tokens.port)).is_err() {
        assert!(Instant::now() < deadline, "token server did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let reg = Registry::start_with(
        &d.join("registry"),
        "",
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: weir-test\n    issuer: weir-issuer\n    rootcertbundle: {}\n",
            tokens.port,
            p("token.crt")
        ),
    );
    let src = staged(d, "flow_count", "flow-count");
    let file = src.join("plugin.wasm");
    let file = file.to_str().expect("p");
    let data = d.join("data");
    let reference = format!("oci://127.0.0.1:{}/weir/flow-count:token", reg.port);

    // Anonymous tokens only pull: a push is denied; wrong credentials are refused.
    let (code, _, err) = weir_env(&data, &[], &["push", file, &reference]);
    assert_ne!(code, 0);
    assert!(err.contains("access denied (401)"), "{err}");
    let wrong = [("WEIR_OCI_USERNAME", "weir"), ("WEIR_OCI_PASSWORD", "nope")];
    let (code, _, err) = weir_env(&data, &wrong, &["push", file, &reference]);
    assert_ne!(code, 0);
    assert!(err.contains("the token service answered 401"), "{err}");
    let good = [
        ("WEIR_OCI_USERNAME", "weir"),
        ("WEIR_OCI_PASSWORD", "s3cret"),
    ];
    let (code, out, err) = weir_env(&data, &good, &["push", file, &reference]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pushed flow-count 0.1.0"), "{out}");
    // Public pull: no credentials needed.
    let (code, out, err) = weir_env(&data, &[], &["install", &reference]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("flow-count 0.1.0 (flow-processor) installed"),
        "{out}"
    );
}
