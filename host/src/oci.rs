//! Plugins from OCI registries, following the wasm OCI artifact convention: one layer of
//! media type `application/wasm` (the component) and a config of media type
//! `application/vnd.wasm.config.v0+json`. References: `oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`.
//! Every blob is checked against its digest.
//!
//! Registries are spoken to over HTTPS, except a loopback IP address (127.0.0.0/8, [::1]),
//! which means a local development registry over plain HTTP. From the environment:
//! `WEIR_OCI_CA_FILE` (PEM roots to trust instead of the public ones, for a private registry)
//! and `WEIR_OCI_USERNAME` / `WEIR_OCI_PASSWORD` (credentials). A 401 is answered as the
//! registry asks: `Basic` with the credentials, or `Bearer` with a token fetched from the
//! registry's token service (anonymously when no credentials are set, as public registries
//! allow for pulls).

use crate::HostError;
use crate::plugin::sha256_hex;
use serde_json::{Value, json};

pub const WASM_LAYER: &str = "application/wasm";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Largest component pulled.
pub const MAX_BLOB: u64 = 256 * 1024 * 1024;

/// A parsed `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub host: String,
    pub repo: String,
    /// A tag, or a digest `sha256:HEX`.
    pub reference: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, HostError> {
        let bad = |why: &str| {
            HostError::Oci(format!(
                "'{s}': {why} (expected oci://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST])"
            ))
        };
        let rest = s
            .strip_prefix("oci://")
            .ok_or_else(|| bad("not an oci:// reference"))?;
        let (host, path) = rest.split_once('/').ok_or_else(|| bad("no repository"))?;
        if host.is_empty() {
            return Err(bad("no registry host"));
        }
        let (repo, reference) = if let Some((r, d)) = path.split_once('@') {
            if !d.starts_with("sha256:")
                || d.len() != 71
                || !d[7..].bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(bad("a digest must be sha256: and 64 hex digits"));
            }
            (r, d.to_string())
        } else {
            match path.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t.to_string()),
                _ => (path, "latest".to_string()),
            }
        };
        let valid_repo = !repo.is_empty()
            && repo.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !valid_repo {
            return Err(bad(
                "repository names are lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        if reference.is_empty() {
            return Err(bad("empty tag"));
        }
        Ok(Reference {
            host: host.to_string(),
            repo: repo.to_string(),
            reference,
        })
    }

    /// A loopback IP address: a local development registry over plain HTTP.
    fn plain_http(&self) -> bool {
        let host = match self.host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => self
                .host
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(&self.host),
        };
        host.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    }

    fn base(&self) -> String {
        let scheme = if self.plain_http() { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.host, self.repo)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "oci://{}/{}{sep}{}",
            self.host, self.repo, self.reference
        )
    }
}

fn err(r: &Reference, what: &str, e: impl std::fmt::Display) -> HostError {
    HostError::Oci(format!("{r}: {what}: {e}"))
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge after its scheme.
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, v)) = rest.split_once('=') {
        let key = k.trim().trim_start_matches(',').trim().to_string();
        let v = v.trim_start();
        let (value, after) = match v.strip_prefix('"') {
            Some(q) => q.split_once('"').unwrap_or((q, "")),
            None => v.split_once(',').unwrap_or((v, "")),
        };
        out.push((key, value.to_string()));
        rest = after;
    }
    out
}

type Response = ureq::http::Response<ureq::Body>;

/// One conversation with a registry: TLS roots, credentials, and the authorization the
/// registry asked for (kept for the following requests).
struct Session<'a> {
    r: &'a Reference,
    agent: ureq::Agent,
    credentials: Option<(String, String)>,
    authorization: Option<String>,
}

impl<'a> Session<'a> {
    fn new(r: &'a Reference) -> Result<Session<'a>, HostError> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(120)));
        if let Ok(path) = std::env::var("WEIR_OCI_CA_FILE") {
            let pem = std::fs::read(&path)
                .map_err(|e| err(r, "WEIR_OCI_CA_FILE", format!("reading {path}: {e}")))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(err(
                    r,
                    "WEIR_OCI_CA_FILE",
                    format!("{path} holds no PEM certificate"),
                ));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let credentials = match (
            std::env::var("WEIR_OCI_USERNAME"),
            std::env::var("WEIR_OCI_PASSWORD"),
        ) {
            (Ok(u), Ok(p)) => Some((u, p)),
            _ => None,
        };
        Ok(Session {
            r,
            agent: config.build().into(),
            credentials,
            authorization: None,
        })
    }

    fn basic(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes())))
    }

    /// Sends a request; on a 401, authorizes as the registry's challenge asks and sends it
    /// once more.
    fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, HostError> {
        let mut resp = self.once(method, url, headers, body)?;
        if resp.status().as_u16() == 401 {
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            self.authorize(&challenge)?;
            resp = self.once(method, url, headers, body)?;
        }
        Ok(resp)
    }

    fn once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, HostError> {
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a.as_str());
        }
        let req = req
            .body(body.to_vec())
            .map_err(|e| err(self.r, "request", e))?;
        self.agent
            .run(req)
            .map_err(|e| err(self.r, "cannot reach the registry", e))
    }

    fn authorize(&mut self, challenge: &str) -> Result<(), HostError> {
        let r = self.r;
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            self.authorization = Some(self.basic().ok_or_else(|| {
                err(
                    r,
                    "authentication",
                    "the registry wants credentials: set WEIR_OCI_USERNAME and WEIR_OCI_PASSWORD",
                )
            })?);
            return Ok(());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(err(
                r,
                "authentication",
                format!("unsupported challenge '{challenge}'"),
            ));
        }
        let params = challenge_params(params);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let realm = get("realm")
            .ok_or_else(|| err(r, "authentication", "bearer challenge without a realm"))?;
        let mut url = format!("{realm}?");
        for key in ["service", "scope"] {
            if let Some(v) = get(key) {
                url.push_str(&format!("{key}={}&", v.replace(' ', "%20")));
            }
        }
        let mut req = self.agent.get(url.trim_end_matches(['&', '?']));
        if let Some(b) = self.basic() {
            req = req.header("authorization", b.as_str());
        }
        let mut resp = req
            .call()
            .map_err(|e| err(r, "cannot reach the token service", e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(err(
                r,
                "authentication",
                format!(
                    "the token service answered {status}{}",
                    if self.credentials.is_some() {
                        " (credentials refused?)"
                    } else {
                        " (set WEIR_OCI_USERNAME and WEIR_OCI_PASSWORD?)"
                    }
                ),
            ));
        }
        let v: Value = resp
            .body_mut()
            .read_json()
            .map_err(|e| err(r, "token service answer", e))?;
        let token = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| err(r, "token service answer", "no token in it"))?;
        self.authorization = Some(format!("Bearer {token}"));
        Ok(())
    }

    fn read(&self, resp: &mut Response, limit: u64, what: &str) -> Result<Vec<u8>, HostError> {
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| err(self.r, what, e))
    }
}

fn check_status(r: &Reference, what: &str, status: u16, body: &[u8]) -> Result<(), HostError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(err(
            r,
            what,
            format!("access denied ({status}): check WEIR_OCI_USERNAME and WEIR_OCI_PASSWORD"),
        )),
        404 => Err(err(r, what, "not found in the registry")),
        _ => Err(err(
            r,
            what,
            format!(
                "the registry answered {status}: {}",
                String::from_utf8_lossy(body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
        )),
    }
}

/// Pulls a component: returns its bytes and the layer digest (`sha256:HEX`), checked.
pub fn pull(r: &Reference) -> Result<(Vec<u8>, String), HostError> {
    let mut s = Session::new(r)?;
    let url = format!("{}/manifests/{}", r.base(), r.reference);
    let mut resp = s.send("GET", &url, &[("accept", MANIFEST)], &[])?;
    let body = s.read(&mut resp, 4 * 1024 * 1024, "reading the manifest")?;
    check_status(r, "manifest", resp.status().as_u16(), &body)?;
    if let Some(want) = r.reference.strip_prefix("sha256:")
        && sha256_hex(&body) != want
    {
        return Err(err(
            r,
            "manifest",
            "its digest does not match the reference",
        ));
    }
    let digest = wasm_layer(r, &body)?;
    let hex = digest.trim_start_matches("sha256:").to_string();
    let mut resp = s.send("GET", &format!("{}/blobs/{digest}", r.base()), &[], &[])?;
    let blob = s.read(&mut resp, MAX_BLOB, "reading the component")?;
    check_status(r, "component blob", resp.status().as_u16(), &[])?;
    if sha256_hex(&blob) != hex {
        return Err(err(
            r,
            "component blob",
            format!("content does not match its digest {digest} (tampered or corrupted)"),
        ));
    }
    Ok((blob, digest))
}

/// The digest (`sha256:...`) of the one wasm layer of an image manifest.
pub fn wasm_layer(r: &Reference, body: &[u8]) -> Result<String, HostError> {
    let m: Value = serde_json::from_slice(body).map_err(|e| err(r, "manifest is not JSON", e))?;
    let layers: Vec<&Value> = m["layers"]
        .as_array()
        .map(|l| l.iter().filter(|l| l["mediaType"] == WASM_LAYER).collect())
        .unwrap_or_default();
    let layer = match layers.as_slice() {
        [one] => *one,
        [] => {
            return Err(err(
                r,
                "manifest",
                format!("no layer of media type {WASM_LAYER}: not a wasm artifact"),
            ));
        }
        _ => {
            return Err(err(
                r,
                "manifest",
                format!("more than one {WASM_LAYER} layer"),
            ));
        }
    };
    let digest = layer["digest"].as_str().unwrap_or("").to_string();
    if !digest.starts_with("sha256:")
        || digest.len() != 71
        || !digest[7..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(err(
            r,
            "manifest",
            format!("unsupported layer digest '{digest}'"),
        ));
    }
    Ok(digest)
}

fn upload(s: &mut Session<'_>, data: &[u8]) -> Result<String, HostError> {
    let r = s.r;
    let digest = format!("sha256:{}", sha256_hex(data));
    // Already there (content-addressed): nothing to send.
    let resp = s.send("HEAD", &format!("{}/blobs/{digest}", r.base()), &[], &[])?;
    if resp.status().is_success() {
        return Ok(digest);
    }
    let mut resp = s.send("POST", &format!("{}/blobs/uploads/", r.base()), &[], &[])?;
    let body = s.read(&mut resp, 64 * 1024, "starting an upload")?;
    check_status(r, "starting an upload", resp.status().as_u16(), &body)?;
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| err(r, "upload", "no Location header"))?
        .to_string();
    let location = if location.starts_with("http") {
        location
    } else {
        let origin = r.base();
        let origin = origin.split("/v2/").next().unwrap_or_default().to_string();
        format!("{origin}{location}")
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let mut resp = s.send(
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        &[("content-type", "application/octet-stream")],
        data,
    )?;
    let body = s.read(&mut resp, 64 * 1024, "uploading")?;
    check_status(r, "uploading a blob", resp.status().as_u16(), &body)?;
    Ok(digest)
}

/// Pushes a component as a wasm OCI artifact under `r` (a tag); returns the manifest digest.
pub fn push(r: &Reference, wasm: &[u8], title: &str, version: &str) -> Result<String, HostError> {
    if r.reference.starts_with("sha256:") {
        return Err(err(r, "push", "push to a tag, not a digest"));
    }
    let mut s = Session::new(r)?;
    let layer = upload(&mut s, wasm)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer],
    }))
    .map_err(|e| err(r, "config", e))?;
    let config_digest = upload(&mut s, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": WASM_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": WASM_LAYER, "digest": layer, "size": wasm.len()}],
        "annotations": {
            "org.opencontainers.image.title": title,
            "org.opencontainers.image.version": version,
        },
    }))
    .map_err(|e| err(r, "manifest", e))?;
    let mut resp = s.send(
        "PUT",
        &format!("{}/manifests/{}", r.base(), r.reference),
        &[("content-type", MANIFEST)],
        &manifest,
    )?;
    let body = s.read(&mut resp, 64 * 1024, "pushing the manifest")?;
    check_status(r, "pushing the manifest", resp.status().as_u16(), &body)?;
    Ok(format!("sha256:{}", sha256_hex(&manifest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_challenges() {
        assert_eq!(base64(b"weir:s3cret"), "d2VpcjpzM2NyZXQ=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            p,
            vec![
                (
                    "realm".to_string(),
                    "https://auth.example/token".to_string()
                ),
                ("service".to_string(), "registry.example".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
            ]
        );
    }

    #[test]
    fn references() {
        let r = Reference::parse("oci://127.0.0.1:5000/weir/flow-count:0.1.0").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "weir/flow-count", "0.1.0")
        );
        assert_eq!(r.base(), "http://127.0.0.1:5000/v2/weir/flow-count");
        let r = Reference::parse("oci://ghcr.io/acme/p").unwrap();
        assert_eq!(r.reference, "latest");
        assert!(r.base().starts_with("https://"));
        let d = format!("oci://localhost:5000/p@sha256:{}", "a".repeat(64));
        assert_eq!(Reference::parse(&d).unwrap().to_string(), d);
        // Only loopback IP addresses mean plain HTTP; a name (even localhost) gets TLS.
        assert!(Reference::parse(&d).unwrap().base().starts_with("https://"));
        assert!(
            Reference::parse("oci://[::1]:5000/p")
                .unwrap()
                .base()
                .starts_with("http://")
        );
        for bad in [
            "oci://",
            "http://x/y",
            "oci://h/",
            "oci://h/Upper:1",
            "oci://h/p@sha256:xyz",
            "oci://h/p:",
        ] {
            let e = Reference::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected oci://"), "{bad}: {e}");
        }
    }
}
