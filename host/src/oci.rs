//! Plugins from OCI registries, following the wasm OCI artifact convention: one layer of
//! media type `application/wasm` (the component) and a config of media type
//! `application/vnd.wasm.config.v0+json`. References: `oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`.
//! Every blob is checked against its digest. Loopback registries are spoken to over plain
//! HTTP; others over HTTPS (which this build does not include yet: see docs/PLUGINS.md).

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

    fn loopback(&self) -> bool {
        let name = self
            .host
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.host);
        matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name.starts_with("127.")
    }

    fn base(&self) -> String {
        let scheme = if self.loopback() { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.host, self.repo)
    }

    /// Refuses registries this build cannot speak to (HTTPS needs TLS, not built in yet).
    fn reachable(&self, what: &str) -> Result<(), HostError> {
        if self.loopback() {
            return Ok(());
        }
        Err(err(
            self,
            what,
            "HTTPS registries are not supported by this build yet (loopback registries use HTTP)",
        ))
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

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(120)))
        .build()
        .into()
}

fn err(r: &Reference, what: &str, e: impl std::fmt::Display) -> HostError {
    HostError::Oci(format!("{r}: {what}: {e}"))
}

fn check_status(r: &Reference, what: &str, status: u16, body: &str) -> Result<(), HostError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(err(
            r,
            what,
            format!(
                "the registry wants credentials ({status}); authenticated registries are not supported yet"
            ),
        )),
        404 => Err(err(r, what, "not found in the registry")),
        _ => Err(err(
            r,
            what,
            format!(
                "the registry answered {status}: {}",
                body.chars().take(300).collect::<String>()
            ),
        )),
    }
}

/// Pulls a component: returns its bytes and the layer digest (`sha256:HEX`), checked.
pub fn pull(r: &Reference) -> Result<(Vec<u8>, String), HostError> {
    r.reachable("pull")?;
    let a = agent();
    let url = format!("{}/manifests/{}", r.base(), r.reference);
    let mut resp = a
        .get(&url)
        .header("accept", MANIFEST)
        .call()
        .map_err(|e| err(r, "cannot reach the registry", e))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(4 * 1024 * 1024)
        .read_to_vec()
        .map_err(|e| err(r, "reading the manifest", e))?;
    check_status(r, "manifest", status, &String::from_utf8_lossy(&body))?;
    if let Some(want) = r.reference.strip_prefix("sha256:")
        && sha256_hex(&body) != want
    {
        return Err(err(
            r,
            "manifest",
            "its digest does not match the reference",
        ));
    }
    let m: Value = serde_json::from_slice(&body).map_err(|e| err(r, "manifest is not JSON", e))?;
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
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(err(
            r,
            "manifest",
            format!("unsupported layer digest '{digest}'"),
        ));
    };
    let mut resp = a
        .get(&format!("{}/blobs/{digest}", r.base()))
        .call()
        .map_err(|e| err(r, "cannot reach the registry", e))?;
    let status = resp.status().as_u16();
    let blob = resp
        .body_mut()
        .with_config()
        .limit(MAX_BLOB)
        .read_to_vec()
        .map_err(|e| err(r, "reading the component", e))?;
    check_status(r, "component blob", status, "")?;
    if sha256_hex(&blob) != hex {
        return Err(err(
            r,
            "component blob",
            format!("content does not match its digest {digest} (tampered or corrupted)"),
        ));
    }
    Ok((blob, digest))
}

fn upload(a: &ureq::Agent, r: &Reference, data: &[u8]) -> Result<String, HostError> {
    let digest = format!("sha256:{}", sha256_hex(data));
    // Already there (content-addressed): nothing to send.
    if let Ok(resp) = a.head(&format!("{}/blobs/{digest}", r.base())).call()
        && resp.status().is_success()
    {
        return Ok(digest);
    }
    let resp = a
        .post(&format!("{}/blobs/uploads/", r.base()))
        .send_empty()
        .map_err(|e| err(r, "cannot reach the registry", e))?;
    check_status(r, "starting an upload", resp.status().as_u16(), "")?;
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
    let mut resp = a
        .put(&format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .send(data)
        .map_err(|e| err(r, "uploading", e))?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    check_status(r, "uploading a blob", status, &body)?;
    Ok(digest)
}

/// Pushes a component as a wasm OCI artifact under `r` (a tag); returns the manifest digest.
pub fn push(r: &Reference, wasm: &[u8], title: &str, version: &str) -> Result<String, HostError> {
    r.reachable("push")?;
    if r.reference.starts_with("sha256:") {
        return Err(err(r, "push", "push to a tag, not a digest"));
    }
    let a = agent();
    let layer = upload(&a, r, wasm)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer],
    }))
    .map_err(|e| err(r, "config", e))?;
    let config_digest = upload(&a, r, &config)?;
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
    let mut resp = a
        .put(&format!("{}/manifests/{}", r.base(), r.reference))
        .header("content-type", MANIFEST)
        .send(&manifest[..])
        .map_err(|e| err(r, "pushing the manifest", e))?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    check_status(r, "pushing the manifest", status, &body)?;
    Ok(format!("sha256:{}", sha256_hex(&manifest)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
