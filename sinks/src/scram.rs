//! SCRAM (RFC 5802, with SHA-256 and SHA-512 as RFC 7677 and Kafka use them), the client side:
//! the first message, the final message with its proof from the server's salt and iteration
//! count, and the check of the server's signature. HMAC and PBKDF2 over `sha2`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::Digest;

/// The hash a mechanism names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut h = sha2::Sha256::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
            Hash::Sha512 => {
                let mut h = sha2::Sha512::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
        }
    }

    fn block(self) -> usize {
        match self {
            Hash::Sha256 => 64,
            Hash::Sha512 => 128,
        }
    }

    /// HMAC (RFC 2104).
    pub fn hmac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = if key.len() > self.block() {
            self.digest(&[key])
        } else {
            key.to_vec()
        };
        k.resize(self.block(), 0);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = self.digest(&[&ipad, msg]);
        self.digest(&[&opad, &inner])
    }

    /// PBKDF2 with HMAC, one block (the hash's length), as SCRAM's Hi().
    pub fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut u = self.hmac(password, &[salt, &1u32.to_be_bytes()].concat());
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &u);
            out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
        }
        out
    }
}

/// One exchange in progress.
pub struct Client {
    hash: Hash,
    password: String,
    nonce: String,
    first_bare: String,
    server_signature: Vec<u8>,
}

/// `=` and `,` in a SCRAM name are escaped.
fn saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

impl Client {
    /// `nonce`: printable, without commas (random bytes in base64 do).
    pub fn new(hash: Hash, user: &str, password: &str, nonce: &str) -> Client {
        Client {
            hash,
            password: password.to_string(),
            nonce: nonce.to_string(),
            first_bare: format!("n={},r={nonce}", saslname(user)),
            server_signature: Vec::new(),
        }
    }

    pub fn first(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// The final message for the server's first one.
    pub fn finish(&mut self, server_first: &str) -> Result<String, String> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v.to_string()),
                Some(("s", v)) => salt = Some(B64.decode(v).map_err(|e| format!("salt: {e}"))?),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                Some(("e", v)) => return Err(format!("the server refused: {v}")),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(i)) = (nonce, salt, iterations) else {
            return Err(format!(
                "not a SCRAM server-first message: {server_first:?}"
            ));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server's nonce does not extend ours".into());
        }
        if !(1..=1_000_000).contains(&i) {
            return Err(format!("iteration count {i} out of range"));
        }
        let h = self.hash;
        let salted = h.pbkdf2(self.password.as_bytes(), &salt, i);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored = h.digest(&[&client_key]);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = h.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = h.hmac(&server_key, auth.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server's final message (its signature proves it knew the password).
    pub fn verify(&self, server_final: &str) -> Result<(), String> {
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(format!("the server refused: {e}"));
        }
        let v = server_final
            .strip_prefix("v=")
            .ok_or_else(|| format!("not a SCRAM server-final message: {server_final:?}"))?;
        let got = B64
            .decode(v.split(',').next().unwrap_or(""))
            .map_err(|e| e.to_string())?;
        if got != self.server_signature {
            return Err("the server's signature does not match: not the server we know".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_example() {
        // RFC 7677 section 3: user "user", password "pencil".
        let mut c = Client::new(Hash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = c
            .finish("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .expect("final");
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("server signature");
        assert!(c.verify("v=AAAA").is_err());
        // HMAC-SHA-512 (RFC 4231 test case 2).
        let mac = Hash::Sha512.hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(&mac[..4], &[0x16, 0x4b, 0x7a, 0x7b]);
    }
}
