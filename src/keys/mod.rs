//! Signing keys: generation, sealing at rest, rotation states, the in-memory key ring that
//! signs id_tokens, the JWKS document and the public-key exports LiveEngage takes.
//!
//! The key ring caches parsed keys and the serialised JWKS. It is refreshed from the
//! database every `key_refresh_secs` (and at once after this process changes a key), so a
//! key rotated through another instance is served and used here within that bound.

use std::sync::{Arc, RwLock};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, RsaPublicKeyComponents};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::crypto::{b64url, b64url_decode, sha256, SecretKeys};
use crate::store::{KeyState, Store, StoreError, StoredKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key {0} cannot be opened with the configured secret key (was BRAND_IDP_SECRET_KEY changed?)")]
    CannotOpen(String),
    #[error("key generation failed")]
    Generation,
    #[error("no such key: {0}")]
    NoSuchKey(String),
}

fn key_size(bits: u32) -> KeySize {
    match bits {
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        _ => KeySize::Rsa2048,
    }
}

/// The public JWK of an RSA key, and its RFC 7638 thumbprint (which we use as `kid`).
fn public_jwk(kp: &KeyPair) -> (Value, String) {
    let pk = kp.public_key();
    let n = b64url(pk.modulus().big_endian_without_leading_zero());
    let e = b64url(pk.exponent().big_endian_without_leading_zero());
    // RFC 7638: required members only, lexicographic order, no white space.
    let thumb_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let kid = b64url(&sha256(thumb_input.as_bytes()));
    let jwk = json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e});
    (jwk, kid)
}

/// Generates a new RSA key (CPU-heavy: call from a blocking thread) in the given state.
pub fn generate(
    bits: u32,
    secrets: &SecretKeys,
    now: i64,
    state: KeyState,
    activate_at: Option<i64>,
) -> Result<StoredKey, KeyError> {
    let kp = KeyPair::generate(key_size(bits)).map_err(|_| KeyError::Generation)?;
    let pkcs8: Pkcs8V1Der = kp.as_der().map_err(|_| KeyError::Generation)?;
    let (jwk, kid) = public_jwk(&kp);
    Ok(StoredKey {
        private_key: secrets.seal(pkcs8.as_ref(), kid.as_bytes()),
        kid,
        alg: "RS256".into(),
        public_jwk: jwk,
        state,
        created_at: now,
        activate_at,
        activated_at: (state == KeyState::Active).then_some(now),
        retired_at: None,
        publish_until: None,
    })
}

async fn generate_async(
    bits: u32,
    secrets: &SecretKeys,
    now: i64,
    state: KeyState,
    activate_at: Option<i64>,
) -> Result<StoredKey, KeyError> {
    let secrets = secrets.clone();
    tokio::task::spawn_blocking(move || generate(bits, &secrets, now, state, activate_at))
        .await
        .map_err(|_| KeyError::Generation)?
}

/// Makes sure there is exactly one active key: activates a due `next` key, or generates one.
/// Safe when several instances bootstrap one empty database at the same moment: the
/// database lets exactly one `active` row in.
pub async fn bootstrap(
    store: &Store,
    secrets: &SecretKeys,
    bits: u32,
    now: i64,
    retire_grace: i64,
) -> Result<(), KeyError> {
    promote_due(store, now, retire_grace).await?;
    let keys = store.all_keys().await?;
    if keys.iter().any(|k| k.state == KeyState::Active) {
        return Ok(());
    }
    let key = generate_async(bits, secrets, now, KeyState::Active, None).await?;
    if !store.insert_key(&key).await? {
        tracing::info!("another instance created the first signing key; using it");
    } else {
        tracing::info!(kid = %key.kid, "generated the first signing key");
    }
    Ok(())
}

/// Activates `next` keys whose time has come. Returns whether anything changed.
pub async fn promote_due(store: &Store, now: i64, retire_grace: i64) -> Result<bool, KeyError> {
    let mut changed = false;
    for kid in store.due_next_keys(now).await? {
        match store.activate_key(&kid, now, now + retire_grace).await {
            Ok(()) => {
                tracing::info!(%kid, "signing key activated");
                changed = true;
            }
            // Another instance promoted it first.
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(changed)
}

/// Creates a new key. With `activate_after` 0 it signs at once; otherwise it is published
/// as `next` and starts signing after that many seconds.
pub async fn rotate(
    store: &Store,
    secrets: &SecretKeys,
    bits: u32,
    now: i64,
    activate_after: i64,
    retire_grace: i64,
) -> Result<StoredKey, KeyError> {
    let key = generate_async(bits, secrets, now, KeyState::Next, Some(now + activate_after)).await?;
    store.insert_key(&key).await?;
    if activate_after == 0 {
        store.activate_key(&key.kid, now, now + retire_grace).await?;
    }
    let all = store.all_keys().await?;
    all.into_iter().find(|k| k.kid == key.kid).ok_or(KeyError::NoSuchKey(key.kid))
}

/// Scheduled rotation: when the active key has served `key_rotation_interval_secs` less
/// the pre-publication time, a new key is published as `next`, to start signing at the end
/// of the interval (and never before `key_prepublish_secs` from now). One instance does it
/// (the maintenance lock, and "no next key yet" checked under it). Returns the new key.
pub async fn auto_rotate(
    store: &Store,
    secrets: &SecretKeys,
    s: &crate::config::Settings,
    now: i64,
) -> Result<Option<StoredKey>, KeyError> {
    if s.key_rotation_interval_secs <= 0 {
        return Ok(None);
    }
    let out = store
        .with_lock(crate::store::MaintenanceLock::Keys, || async {
            let keys = store.all_keys().await?;
            if keys.iter().any(|k| k.state == KeyState::Next) {
                return Ok::<_, KeyError>(None);
            }
            let Some(active) = keys.iter().find(|k| k.state == KeyState::Active) else { return Ok(None) };
            let due = active.activated_at.unwrap_or(active.created_at) + s.key_rotation_interval_secs;
            if now < due - s.key_prepublish_secs {
                return Ok(None);
            }
            let activate_at = due.max(now + s.key_prepublish_secs);
            let key = generate_async(s.key_size, secrets, now, KeyState::Next, Some(activate_at)).await?;
            store.insert_key(&key).await?;
            tracing::info!(kid = %key.kid, activate_at, "scheduled rotation: next signing key published");
            Ok(Some(key))
        })
        .await?;
    Ok(out.flatten())
}

/// The DER SubjectPublicKeyInfo of a stored key.
pub fn spki_der(k: &StoredKey) -> Result<Vec<u8>, KeyError> {
    let n = k.public_jwk.get("n").and_then(Value::as_str).and_then(b64url_decode);
    let e = k.public_jwk.get("e").and_then(Value::as_str).and_then(b64url_decode);
    let (Some(n), Some(e)) = (n, e) else {
        return Err(StoreError::Corrupt(format!("public JWK of {}", k.kid)).into());
    };
    Ok(encode_spki(&n, &e))
}

/// The one-line form LiveEngage's "JWT Public Key" field takes: base64 of the DER
/// SubjectPublicKeyInfo, no header, footer or line breaks.
pub fn spki_base64(k: &StoredKey) -> Result<String, KeyError> {
    Ok(STANDARD.encode(spki_der(k)?))
}

pub fn spki_pem(k: &StoredKey) -> Result<String, KeyError> {
    let b64 = spki_base64(k)?;
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    Ok(out)
}

// Minimal DER writer for an RSA SubjectPublicKeyInfo (RFC 5280 §4.1, RFC 8017 A.1.1).
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let skip = bytes.iter().take_while(|b| **b == 0).count().min(bytes.len().saturating_sub(1));
        &bytes[skip..]
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der(0x02, &content)
}

fn encode_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    const RSA_ALG_ID: &[u8] =
        &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut rsa_pub = der_uint(n);
    rsa_pub.extend(der_uint(e));
    let rsa_pub = der(0x30, &rsa_pub);
    let mut bitstring = vec![0u8];
    bitstring.extend(rsa_pub);
    let mut spki = RSA_ALG_ID.to_vec();
    spki.extend(der(0x03, &bitstring));
    der(0x30, &spki)
}

/// A parsed key that can sign, with its JOSE header already encoded.
pub struct Signer {
    pub kid: String,
    key: KeyPair,
    header_b64: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Signer {
    fn open(k: &StoredKey, secrets: &SecretKeys) -> Result<Signer, KeyError> {
        let pkcs8 =
            secrets.open(&k.private_key, k.kid.as_bytes()).ok_or_else(|| KeyError::CannotOpen(k.kid.clone()))?;
        let key = KeyPair::from_pkcs8(&pkcs8).map_err(|_| KeyError::CannotOpen(k.kid.clone()))?;
        let header = json!({"alg": "RS256", "kid": k.kid, "typ": "JWT"});
        Ok(Signer { kid: k.kid.clone(), key, header_b64: b64url(header.to_string().as_bytes()) })
    }

    /// A compact JWS (RS256) over the given claims.
    pub fn sign_jwt(&self, claims: &Value) -> String {
        let payload = b64url(claims.to_string().as_bytes());
        let mut out = String::with_capacity(self.header_b64.len() + payload.len() + 400);
        out.push_str(&self.header_b64);
        out.push('.');
        out.push_str(&payload);
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.key
            .sign(&signature::RSA_PKCS1_SHA256, &rng, out.as_bytes(), &mut sig)
            .expect("RSA signing with a valid key does not fail");
        out.push('.');
        out.push_str(&b64url(&sig));
        out
    }
}

/// What `brand-idp measure-signing` found: `count` RS256 JWTs signed one after another.
#[derive(Debug, Clone)]
pub struct SigningRate {
    pub key_size: u32,
    pub count: u32,
    pub elapsed: std::time::Duration,
    /// Length of one signed JWT, to show what was signed.
    pub jwt_bytes: usize,
}

impl SigningRate {
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn mean_us(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.count.max(1) as f64
    }
}

/// Times `count` RS256 signatures over `claims` on the calling thread, through the same
/// [`Signer`] the server signs id_tokens with: a key of `bits` is generated in memory,
/// sealed and opened again as a stored key would be (none of it touches a database), and
/// every signature is one [`Signer::sign_jwt`] call (claims serialised, base64url, RSA
/// PKCS#1 v1.5 with SHA-256). One signature runs first, untimed. CPU-heavy: call it from a
/// blocking thread.
pub fn measure_signing(bits: u32, count: u32, claims: &Value) -> Result<SigningRate, KeyError> {
    let secrets = SecretKeys::from_secret(&crate::crypto::random_bytes::<32>());
    let stored = generate(bits, &secrets, 0, KeyState::Active, None)?;
    let signer = Signer::open(&stored, &secrets)?;
    let jwt_bytes = signer.sign_jwt(claims).len();
    let count = count.max(1);
    let start = std::time::Instant::now();
    for _ in 0..count {
        std::hint::black_box(signer.sign_jwt(std::hint::black_box(claims)));
    }
    Ok(SigningRate { key_size: bits, count, elapsed: start.elapsed(), jwt_bytes })
}

/// A published public key, kept parsed for verifying our own tokens (`id_token_hint`).
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub kid: String,
    pub state: KeyState,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl PublicKey {
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        RsaPublicKeyComponents { n: &self.n, e: &self.e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
            .is_ok()
    }
}

/// What the key ring holds at one moment.
#[derive(Debug)]
pub struct KeySet {
    pub signer: Option<Arc<Signer>>,
    pub public: Vec<PublicKey>,
    /// The serialised JWKS document and its ETag.
    pub jwks_body: bytes::Bytes,
    pub jwks_etag: String,
    fingerprint: String,
}

#[derive(Debug)]
pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
    secrets: SecretKeys,
}

impl KeyRing {
    pub fn new(secrets: SecretKeys) -> KeyRing {
        let empty = json!({"keys": []}).to_string();
        KeyRing {
            current: RwLock::new(Arc::new(KeySet {
                signer: None,
                public: vec![],
                jwks_etag: etag(empty.as_bytes()),
                jwks_body: bytes::Bytes::from(empty),
                fingerprint: String::new(),
            })),
            secrets,
        }
    }

    pub fn get(&self) -> Arc<KeySet> {
        self.current.read().expect("key ring lock poisoned").clone()
    }

    pub fn signer(&self) -> Option<Arc<Signer>> {
        self.get().signer.clone()
    }

    /// Reloads from the database; parses keys again only when the published set changed.
    pub async fn refresh(&self, store: &Store, now: i64) -> Result<(), KeyError> {
        let keys = store.published_keys(now).await?;
        let fingerprint: String = keys.iter().map(|k| format!("{}:{};", k.kid, k.state.as_str())).collect();
        if fingerprint == self.get().fingerprint {
            return Ok(());
        }
        let mut signer = None;
        let mut public = Vec::new();
        let mut jwks = Vec::new();
        for k in &keys {
            if k.state == KeyState::Active {
                signer = Some(Arc::new(Signer::open(k, &self.secrets)?));
            }
            let get = |m: &str| k.public_jwk.get(m).and_then(Value::as_str).and_then(b64url_decode);
            if let (Some(n), Some(e)) = (get("n"), get("e")) {
                public.push(PublicKey { kid: k.kid.clone(), state: k.state, n, e });
            }
            jwks.push(k.public_jwk.clone());
        }
        // The active key first: some clients try keys in order.
        jwks.sort_by_key(|j| {
            let kid = j.get("kid").and_then(Value::as_str).unwrap_or_default();
            keys.iter().find(|k| k.kid == kid).map(|k| k.state != KeyState::Active).unwrap_or(true)
        });
        let body = json!({"keys": jwks}).to_string();
        let set = KeySet {
            signer,
            public,
            jwks_etag: etag(body.as_bytes()),
            jwks_body: bytes::Bytes::from(body),
            fingerprint,
        };
        *self.current.write().expect("key ring lock poisoned") = Arc::new(set);
        Ok(())
    }
}

fn etag(body: &[u8]) -> String {
    format!("\"{}\"", &b64url(&sha256(body))[..22])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_encoding_round_trips_through_aws_lc() {
        let secrets = SecretKeys::from_secret(&[3u8; 32]);
        let k = generate(2048, &secrets, 0, KeyState::Active, None).unwrap();
        let der = spki_der(&k).unwrap();
        // aws-lc parses our DER as an X.509 SubjectPublicKeyInfo and gets the same modulus.
        let parsed = aws_lc_rs::rsa::PublicKey::from_der(&der).expect("valid SPKI");
        let n = b64url(parsed.modulus().big_endian_without_leading_zero());
        assert_eq!(Some(n.as_str()), k.public_jwk["n"].as_str());
        let signer = Signer::open(&k, &secrets).unwrap();
        let kp_der: aws_lc_rs::encoding::PublicKeyX509Der = signer.key.public_key().as_der().unwrap();
        assert_eq!(kp_der.as_ref(), der.as_slice());
        let one_line = spki_base64(&k).unwrap();
        assert!(!one_line.contains('\n') && !one_line.contains("BEGIN"));
    }

    #[test]
    fn measure_signing_counts_every_signature_and_reports_a_sane_rate() {
        let claims = json!({"iss": "https://idp.example", "sub": "s", "aud": "c", "iat": 1, "exp": 2});
        let r = measure_signing(2048, 25, &claims).unwrap();
        assert_eq!((r.key_size, r.count), (2048, 25));
        assert!(r.elapsed > std::time::Duration::ZERO);
        // Each signature of a 2048-bit key takes well over a microsecond and far under a second.
        let rate = r.per_second();
        assert!(rate > 1.0 && rate < 1_000_000.0, "{rate}");
        assert!((r.mean_us() * rate - 1e6).abs() < 1.0, "mean and rate agree");
        // header.payload.signature, the signature 256 bytes in base64url (342 characters).
        assert!(r.jwt_bytes > 342 + 2, "{}", r.jwt_bytes);
        assert_eq!(measure_signing(2048, 0, &claims).unwrap().count, 1, "at least one signature");
    }

    #[test]
    fn signed_jwt_verifies_with_published_key() {
        let secrets = SecretKeys::from_secret(&[4u8; 32]);
        let k = generate(2048, &secrets, 0, KeyState::Active, None).unwrap();
        let signer = Signer::open(&k, &secrets).unwrap();
        let jwt = signer.sign_jwt(&json!({"sub": "x"}));
        let (msg, sig) = jwt.rsplit_once('.').unwrap();
        let pk = PublicKey {
            kid: k.kid.clone(),
            state: k.state,
            n: b64url_decode(k.public_jwk["n"].as_str().unwrap()).unwrap(),
            e: b64url_decode(k.public_jwk["e"].as_str().unwrap()).unwrap(),
        };
        assert!(pk.verify(msg.as_bytes(), &b64url_decode(sig).unwrap()));
        assert!(!pk.verify(b"other", &b64url_decode(sig).unwrap()));
        let wrong = SecretKeys::from_secret(&[5u8; 32]);
        assert!(matches!(Signer::open(&k, &wrong), Err(KeyError::CannotOpen(_))));
    }
}
