//! Small cryptographic building blocks shared by the rest of the crate: random tokens,
//! digests, the keyed hash for client secrets, and sealing with the secret key.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::{digest, hkdf, hmac, rand};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b).expect("the system random number generator failed");
    b
}

/// A URL-safe random string carrying `N` bytes (8N bits) of randomness.
pub fn random_token<const N: usize>() -> String {
    b64url(&random_bytes::<N>())
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The lookup key under which a high-entropy bearer value (code, token, session id) is stored.
pub fn token_hash(value: &str) -> String {
    b64url(&sha256(value.as_bytes()))
}

pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Keys derived from the configured secret key, one per purpose.
#[derive(Clone)]
pub struct SecretKeys {
    seal: std::sync::Arc<LessSafeKey>,
    client_secret_mac: hmac::Key,
    csrf_mac: hmac::Key,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKeys(<redacted>)")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(prk: &hkdf::Prk, info: &str, len: usize) -> Vec<u8> {
    let info = [info.as_bytes()];
    let okm = prk.expand(&info, Len(len)).expect("HKDF output length is small");
    let mut out = vec![0u8; len];
    okm.fill(&mut out).expect("HKDF fill");
    out
}

impl SecretKeys {
    pub fn from_secret(secret: &[u8]) -> SecretKeys {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"brand-idp v1").extract(secret);
        let seal_key = derive(&prk, "signing-key encryption", 32);
        let mac_key = derive(&prk, "client-secret hash", 32);
        let csrf_key = derive(&prk, "csrf token", 32);
        SecretKeys {
            seal: std::sync::Arc::new(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &seal_key).expect("32-byte AES key"),
            )),
            client_secret_mac: hmac::Key::new(hmac::HMAC_SHA256, &mac_key),
            csrf_mac: hmac::Key::new(hmac::HMAC_SHA256, &csrf_key),
        }
    }

    /// AES-256-GCM; `aad` binds the ciphertext to its row (a key sealed for one kid does
    /// not open as another).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(aad), &mut buf)
            .expect("AES-GCM seal");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let pt = self.seal.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
        Some(pt.to_vec())
    }

    /// The stored form of a client secret: HMAC-SHA256 under a key derived from the secret
    /// key. Client secrets are high-entropy, so a fast keyed hash is the right tool (a
    /// password hash here would cap the token endpoint at a few hundred requests a second).
    pub fn hash_client_secret(&self, secret: &str) -> String {
        let tag = hmac::sign(&self.client_secret_mac, secret.as_bytes());
        format!("hmac-sha256${}", b64url(tag.as_ref()))
    }

    /// The form token that goes with a CSRF cookie value.
    pub fn csrf_token(&self, cookie: &str) -> String {
        b64url(hmac::sign(&self.csrf_mac, cookie.as_bytes()).as_ref())
    }

    pub fn verify_client_secret(&self, secret: &str, stored: &str) -> bool {
        let expected = self.hash_client_secret(secret);
        ct_eq(expected.as_bytes(), stored.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_aad() {
        let k = SecretKeys::from_secret(&[7u8; 32]);
        let s = k.seal(b"private", b"kid-1");
        assert_eq!(k.open(&s, b"kid-1").unwrap(), b"private");
        assert!(k.open(&s, b"kid-2").is_none());
        let other = SecretKeys::from_secret(&[8u8; 32]);
        assert!(other.open(&s, b"kid-1").is_none());
        assert!(k.open(&s[..10], b"kid-1").is_none());
    }

    #[test]
    fn client_secret_hash_verifies_only_the_secret() {
        let k = SecretKeys::from_secret(&[1u8; 32]);
        let h = k.hash_client_secret("s3cret");
        assert!(k.verify_client_secret("s3cret", &h));
        assert!(!k.verify_client_secret("s3cret ", &h));
        assert!(!h.contains("s3cret"));
    }

    #[test]
    fn random_tokens_differ_and_carry_enough_bits() {
        let a = random_token::<32>();
        assert_ne!(a, random_token::<32>());
        assert_eq!(b64url_decode(&a).unwrap().len(), 32);
    }
}
