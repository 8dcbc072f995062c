//! ed25519 signatures embedded in the component (the wasm-signatures format wasmsign2 uses),
//! so one file travels with its signature. Trusted public keys live in a directory; when it
//! holds any, every install must be signed by one of them.

use crate::HostError;
use crate::wasm_bytes::{Bytes, has_magic, sections};
use std::path::Path;
use wasmsign2::{KeyPair, Module, PublicKey, PublicKeySet, SecretKey, WSError};

/// A trusted key: its file name (without extension) and the key.
#[derive(Clone)]
pub struct TrustedKey {
    pub name: String,
    pub key: PublicKey,
}

/// The hex key id of a public key (what a signature records to name its signer).
pub fn key_id(pk: &PublicKey) -> String {
    pk.clone()
        .attach_default_key_id()
        .key_id()
        .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default()
}

/// A new key pair as (secret PEM, public PEM).
pub fn generate() -> (String, String) {
    let kp = KeyPair::generate();
    (kp.sk.to_pem(), kp.pk.to_pem())
}

/// Parses a public key (PEM, DER or raw), naming the origin in errors.
pub fn parse_public(data: &[u8], origin: &str) -> Result<PublicKey, HostError> {
    PublicKey::from_any(data)
        .map_err(|e| HostError::Signature(format!("{origin}: not an ed25519 public key ({e})")))
}

/// Keys in `dir` (`*.pub`); a missing directory trusts nothing (signatures not required).
pub fn load_trusted(dir: &Path) -> Result<Vec<TrustedKey>, HostError> {
    let mut keys = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(keys);
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "pub") {
            continue;
        }
        let data = std::fs::read(&p)?;
        keys.push(TrustedKey {
            name: p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            key: parse_public(&data, &p.display().to_string())?,
        });
    }
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(keys)
}

/// Signs a component with a secret key (PEM, DER or raw), replacing any earlier signature.
/// Embed the manifest first: a section added after signing breaks the signature.
pub fn sign(wasm: &[u8], secret: &[u8]) -> Result<Vec<u8>, HostError> {
    let sk = SecretKey::from_any(secret)
        .map_err(|e| HostError::Signature(format!("not an ed25519 secret key ({e})")))?;
    let pk = PublicKey {
        pk: sk.sk.public_key(),
        key_id: None,
    }
    .attach_default_key_id();
    let module = Module::deserialize(&mut &wasm[..])
        .map_err(|e| HostError::Malformed(format!("cannot read the component to sign: {e}")))?;
    let signed = sk
        .sign(module, pk.key_id())
        .map_err(|e| HostError::Signature(format!("signing failed: {e}")))?;
    let mut out = Vec::with_capacity(wasm.len() + 256);
    signed
        .serialize(&mut out)
        .map_err(|e| HostError::Signature(format!("signing failed: {e}")))?;
    Ok(out)
}

/// Checks the embedded signature against the trusted keys. With no trusted keys nothing is
/// required and `Ok(None)` is returned; otherwise the signer's name, or an error saying
/// whether the file is unsigned, signed by an unknown key, or changed after signing.
pub fn verify(wasm: &[u8], trusted: &[TrustedKey]) -> Result<Option<String>, HostError> {
    if trusted.is_empty() {
        return Ok(None);
    }
    let names = || {
        trusted
            .iter()
            .map(|k| format!("{} ({})", k.name, key_id(&k.key)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    check_lengths(wasm)?;
    let mut set = PublicKeySet::empty();
    for k in trusted {
        // Two files holding the same key are one trusted key.
        let _ = set.insert(k.key.clone());
    }
    match set.verify(&mut &wasm[..], None) {
        Ok(valid) => {
            let signer = trusted
                .iter()
                .find(|k| valid.iter().any(|v| v.pk == k.key.pk))
                .map(|k| k.name.clone())
                .unwrap_or_default();
            Ok(Some(signer))
        }
        Err(WSError::NoSignatures) => Err(HostError::Signature(format!(
            "the file is not signed, and this agent requires a signature by a trusted key ({})",
            names()
        ))),
        Err(WSError::VerificationFailed) => {
            let signed_by: Vec<String> =
                wasmsign2::signature_info_from_reader(&mut &wasm[..], None)
                    .map(|i| {
                        i.key_ids()
                            .iter()
                            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
                            .collect()
                    })
                    .unwrap_or_default();
            let known = trusted.iter().any(|k| signed_by.contains(&key_id(&k.key)));
            if known {
                Err(HostError::Signature(
                    "bad signature: the file was changed after it was signed".into(),
                ))
            } else {
                Err(HostError::Signature(format!(
                    "signed by an unknown key ({}); trusted: {}",
                    if signed_by.is_empty() {
                        "no key id".to_string()
                    } else {
                        signed_by.join(", ")
                    },
                    names()
                )))
            }
        }
        Err(e) => Err(HostError::Signature(format!(
            "cannot check the signature: {e}"
        ))),
    }
}

/// Refuses a file whose section lengths, or the lengths inside its `signature` section, run
/// past their end. wasmsign2 allocates every length it reads before reading the bytes, so a
/// 200-byte upload claiming a 2.7 GB signature aborted the agent (found by fuzzing).
fn check_lengths(wasm: &[u8]) -> Result<(), HostError> {
    let bad = |what: &str, at: usize| {
        HostError::Malformed(format!(
            "{what} at byte {at}: a length runs past its end (corrupted or not a component)"
        ))
    };
    if !has_magic(wasm) {
        return Ok(()); // Not WebAssembly: wasmsign2 says so without allocating.
    }
    for section in sections(wasm) {
        let s = section.map_err(|at| bad("a section", at))?;
        let custom = s.custom().map_err(|at| bad("a custom section", at))?;
        if let Some((b"signature", data)) = custom
            && signature_fits(data).is_none()
        {
            return Err(bad("the signature section", s.at));
        }
    }
    Ok(())
}

/// The signature section's layout (wasmsign2's `SignatureData`): version, content type and
/// hash function bytes, then signed hash sets, each its hashes (32 bytes each) and signatures
/// (key id, algorithm byte, signature bytes), every part length-prefixed.
fn signature_fits(mut r: Bytes<'_>) -> Option<()> {
    for _ in 0..3 {
        r.byte()?;
    }
    for _ in 0..r.leb()? {
        let mut set = r.slice()?;
        let hashes = set.leb()?;
        set.take(usize::try_from(hashes).ok()?.checked_mul(32)?)?;
        for _ in 0..set.leb()? {
            let mut sig = set.slice()?;
            sig.slice()?;
            sig.byte()?;
            sig.slice()?;
        }
    }
    Some(())
}

/// Signs `message` (an incident's manifest) with a secret key (PEM, DER or raw): the
/// signer's key id and the ed25519 signature, both hex.
pub fn sign_detached(message: &[u8], secret: &[u8]) -> Result<(String, String), HostError> {
    let sk = SecretKey::from_any(secret)
        .map_err(|e| HostError::Signature(format!("not an ed25519 secret key ({e})")))?;
    let pk = PublicKey {
        pk: sk.sk.public_key(),
        key_id: None,
    };
    let sig = sk.sk.sign(message, None);
    Ok((key_id(&pk), hex(sig.as_ref())))
}

/// Checks a detached signature (`key_id`, `signature` hex) of `message` against the trusted
/// keys: the signer's name, or an error saying whether the signer is unknown or the message
/// was changed after signing.
pub fn verify_detached(
    message: &[u8],
    signer_id: &str,
    signature: &str,
    trusted: &[TrustedKey],
) -> Result<String, HostError> {
    let bytes =
        unhex(signature).ok_or_else(|| HostError::Signature("the signature is not hex".into()))?;
    let sig = ed25519_compact::Signature::from_slice(&bytes)
        .map_err(|e| HostError::Signature(format!("not an ed25519 signature ({e})")))?;
    let Some(k) = trusted.iter().find(|k| key_id(&k.key) == signer_id) else {
        let names: Vec<String> = trusted
            .iter()
            .map(|k| format!("{} ({})", k.name, key_id(&k.key)))
            .collect();
        return Err(HostError::Signature(format!(
            "signed by an unknown key ({signer_id}); trusted: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    k.key.pk.verify(message, &sig).map_err(|_| {
        HostError::Signature(format!(
            "bad signature by {}: the manifest was changed after it was signed",
            k.name
        ))
    })?;
    Ok(k.name.clone())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(public: &str) -> Vec<TrustedKey> {
        vec![TrustedKey {
            name: "ops".into(),
            key: parse_public(public.as_bytes(), "ops.pub").unwrap(),
        }]
    }

    #[test]
    fn signed_components_verify_and_lengths_past_the_end_are_refused_before_allocating() {
        let (secret, public) = generate();
        let keys = trusted(&public);
        let signed = sign(b"\0asm\x01\0\0\0", secret.as_bytes()).unwrap();
        assert_eq!(verify(&signed, &keys).unwrap(), Some("ops".into()));
        let mut changed = signed.clone();
        changed.extend_from_slice(b"\0\x02\x01x");
        let e = verify(&changed, &keys).unwrap_err().to_string();
        assert!(e.contains("changed after it was signed"), "{e}");
        // Fuzzing found these: a signature section whose inner lengths claim 2.7 GB (the
        // agent aborted allocating them), and a section claiming 4 GiB.
        let e = verify(
            include_bytes!("../../fuzz/regressions/signing/sig-length-2gb"),
            &keys,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("the signature section at byte 8"), "{e}");
        let e = verify(b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff\x0f", &keys)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a section at byte 8"), "{e}");
    }
}
