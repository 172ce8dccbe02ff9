//! Password hashing: argon2id PHC strings, computed off the async workers and bounded in
//! number so memory stays bounded (each hash takes `argon2_memory_kib`).

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::PasswordVerifier as _;
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::Settings;
use crate::crypto::random_bytes;

/// A password as typed: never printed.
pub struct Password(String);

impl Password {
    pub fn new(s: impl Into<String>) -> Password {
        Password(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The longest password accepted: argon2 handles any length, but a bound keeps hostile
/// multi-megabyte "passwords" out of the hasher.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// Right password; `rehash` is set when the stored hash is weaker than the current
    /// parameters and should be replaced by `rehash`'s value.
    Valid {
        rehash: Option<String>,
    },
    Invalid,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("password hashing failed")]
    Internal,
}

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    max_running: usize,
    /// A hash of a random password, verified for unknown usernames so they cost the same.
    dummy: Arc<std::sync::OnceLock<String>>,
    /// Working memory for hashes at the current parameters, at most one per permit, made on
    /// first use and kept: no 19 MiB allocation (and page faults) per login, and a fixed
    /// ceiling on hashing memory.
    memory: Arc<std::sync::Mutex<Vec<Vec<argon2::Block>>>>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("m_kib", &self.params.m_cost())
            .field("t", &self.params.t_cost())
            .field("p", &self.params.p_cost())
            .finish()
    }
}

fn hash_sync(params: &Params, password: &[u8]) -> Result<String, HashError> {
    let mut memory = vec![argon2::Block::default(); params.block_count()];
    hash_into(params, password, &mut memory)
}

fn b64(b: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, b)
}

/// argon2id into the given working memory; the PHC string (`$argon2id$v=19$m=,t=,p=$salt$hash`).
fn hash_into(params: &Params, password: &[u8], memory: &mut [argon2::Block]) -> Result<String, HashError> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = random_bytes::<16>();
    let mut out = [0u8; 32];
    argon.hash_password_into_with_memory(password, &salt, &mut out, memory).map_err(|_| HashError::Internal)?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        b64(&salt),
        b64(&out)
    ))
}

/// Verifies an argon2id hash made with exactly `params`, in the given working memory;
/// `None` when the hash has other parameters (then the allocating path verifies it).
fn verify_into(params: &Params, password: &[u8], stored: &str, memory: &mut [argon2::Block]) -> Option<bool> {
    let parts: Vec<&str> = stored.split('$').collect();
    let [_, "argon2id", "v=19", p, salt, hash] = parts.as_slice() else { return None };
    if *p != format!("m={},t={},p={}", params.m_cost(), params.t_cost(), params.p_cost()) {
        return None;
    }
    let dec = |s: &str| base64::Engine::decode(&base64::engine::general_purpose::STANDARD_NO_PAD, s).ok();
    let (salt, expected) = (dec(salt)?, dec(hash)?);
    if expected.len() != 32 {
        return None;
    }
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; 32];
    argon.hash_password_into_with_memory(password, &salt, &mut out, memory).ok()?;
    Some(crate::crypto::ct_eq(&out, &expected))
}

impl Hasher {
    pub fn new(s: &Settings) -> Hasher {
        let params = Params::new(s.argon2_memory_kib, s.argon2_iterations, s.argon2_parallelism, None)
            .expect("argon2 parameters are validated with the settings");
        Hasher {
            params,
            permits: Arc::new(Semaphore::new(s.max_concurrent_hashes)),
            max_running: s.max_concurrent_hashes,
            dummy: Arc::default(),
            memory: Arc::default(),
        }
    }

    /// Runs `f` with one of the pooled working memories (call with a permit held).
    fn with_memory<R>(&self, f: impl FnOnce(&mut [argon2::Block]) -> R) -> R {
        let taken = self.memory.lock().expect("hash memory lock").pop();
        let mut memory = taken.unwrap_or_else(|| vec![argon2::Block::default(); self.params.block_count()]);
        let out = f(&mut memory);
        self.memory.lock().expect("hash memory lock").push(memory);
        out
    }

    /// The dummy hash, made on first use (not at start-up: that would cost a hash's time
    /// before the first request is served). Call from a blocking thread.
    fn dummy(&self) -> &str {
        // A throwaway allocation: the pool keeps only what logins use.
        self.dummy.get_or_init(|| hash_sync(&self.params, &random_bytes::<16>()).expect("hashing a random password"))
    }

    pub fn params(&self) -> (u32, u32, u32) {
        (self.params.m_cost(), self.params.t_cost(), self.params.p_cost())
    }

    /// Hashes with the current parameters.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        check(password)?;
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| HashError::Internal)?;
        let me = self.clone();
        let pw = password.expose().as_bytes().to_vec();
        tokio::task::spawn_blocking(move || {
            // The permit goes with the hash: a client that hangs up does not free it early.
            let _permit = permit;
            me.with_memory(|m| hash_into(&me.params, &pw, m))
        })
        .await
        .map_err(|_| HashError::Internal)?
    }

    /// Hashes running now (or holding a permit to run).
    pub fn running(&self) -> usize {
        self.max_running - self.permits.available_permits()
    }

    /// Verifies against a stored hash, or against the dummy hash when there is none (unknown
    /// user, or no password set), so both cost the same time.
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> Verified {
        if check(password).is_err() {
            return Verified::Invalid;
        }
        // Owned, and moved into the blocking task: if the request is dropped (the client hung
        // up), the hash still runs to its end, and so the permit is held to its end; otherwise
        // clients that disconnect could run any number of hashes at once.
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return Verified::Invalid,
        };
        let target = stored.map(str::to_string);
        let me = self.clone();
        let params = self.params.clone();
        let pw = password.expose().as_bytes().to_vec();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let hash = target.as_deref().unwrap_or_else(|| me.dummy());
            let ok = me.with_memory(|m| verify_into(&params, &pw, hash, m)).unwrap_or_else(|| verify_sync(&pw, hash));
            if !ok || target.is_none() {
                return Verified::Invalid;
            }
            let rehash =
                if is_current(hash, &params) { None } else { me.with_memory(|m| hash_into(&params, &pw, m)).ok() };
            Verified::Valid { rehash }
        })
        .await
        .unwrap_or(Verified::Invalid)
    }
}

/// Times `count` hashes of a random password with the given parameters (for choosing them).
pub fn measure(m_kib: u32, t: u32, p: u32, count: u32) -> Vec<std::time::Duration> {
    let params = Params::new(m_kib, t, p, None).expect("validated parameters");
    (0..count)
        .map(|_| {
            let pw = random_bytes::<16>();
            let start = std::time::Instant::now();
            let _ = hash_sync(&params, &pw);
            start.elapsed()
        })
        .collect()
}

fn check(password: &Password) -> Result<(), HashError> {
    if password.is_empty() {
        return Err(HashError::Empty);
    }
    if password.expose().len() > MAX_PASSWORD_BYTES {
        return Err(HashError::TooLong);
    }
    Ok(())
}

/// The password-hash formats brand-idp verifies: its own argon2id, and what brands bring
/// when they import their customers (re-hashed to argon2id at the first successful login).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFormat {
    /// `$argon2id$...`, `$argon2i$...` (PHC).
    Argon2,
    /// `$2a$`, `$2b$`, `$2y$`.
    Bcrypt,
    /// `$pbkdf2-sha256$i=N,l=32$salt$hash` (PHC, unpadded base64).
    Pbkdf2Phc,
    /// `pbkdf2_sha256$N$salt$hash` (salt as text, hash base64).
    Pbkdf2Django,
}

/// Recognises a stored hash's format and checks it is well-formed.
pub fn hash_format(stored: &str) -> Option<HashFormat> {
    if stored.starts_with("$argon2") {
        let parsed = PasswordHash::new(stored).ok()?;
        return matches!(parsed.algorithm.as_str(), "argon2id" | "argon2i").then_some(HashFormat::Argon2);
    }
    if ["$2a$", "$2b$", "$2y$"].iter().any(|p| stored.starts_with(p)) {
        // $2b$cost$ then 53 characters of salt and hash.
        let cost_ok = stored.get(4..6).and_then(|c| c.parse::<u32>().ok()).is_some_and(|c| (4..=31).contains(&c));
        return (cost_ok && stored.len() == 60 && stored.as_bytes()[6] == b'$').then_some(HashFormat::Bcrypt);
    }
    if stored.starts_with("$pbkdf2-sha256$") {
        return parse_pbkdf2_phc(stored).map(|_| HashFormat::Pbkdf2Phc);
    }
    if stored.starts_with("pbkdf2_sha256$") {
        return parse_pbkdf2_django(stored).map(|_| HashFormat::Pbkdf2Django);
    }
    None
}

/// (iterations, salt, hash)
type Pbkdf2Parts = (u32, Vec<u8>, Vec<u8>);

fn b64_any(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use base64::Engine;
    // passlib's "adapted base64" uses '.' for '+'.
    let s = s.replace('.', "+");
    STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok().or_else(|| STANDARD.decode(&s).ok())
}

fn parse_pbkdf2_phc(s: &str) -> Option<Pbkdf2Parts> {
    let mut parts = s.strip_prefix("$pbkdf2-sha256$")?.split('$');
    let params = parts.next()?;
    let iterations: u32 = if let Ok(n) = params.parse() {
        n
    } else {
        params.split(',').find_map(|kv| kv.strip_prefix("i="))?.parse().ok()?
    };
    let salt = b64_any(parts.next()?)?;
    let hash = b64_any(parts.next()?)?;
    (parts.next().is_none() && (1..=10_000_000).contains(&iterations) && !hash.is_empty() && hash.len() <= 64)
        .then_some((iterations, salt, hash))
}

fn parse_pbkdf2_django(s: &str) -> Option<Pbkdf2Parts> {
    let mut parts = s.strip_prefix("pbkdf2_sha256$")?.split('$');
    let iterations: u32 = parts.next()?.parse().ok()?;
    let salt = parts.next()?.as_bytes().to_vec();
    let hash = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, parts.next()?).ok()?;
    (parts.next().is_none()
        && (1..=10_000_000).contains(&iterations)
        && !salt.is_empty()
        && !hash.is_empty()
        && hash.len() <= 64)
        .then_some((iterations, salt, hash))
}

fn verify_pbkdf2((iterations, salt, hash): Pbkdf2Parts, password: &[u8]) -> bool {
    let Some(n) = std::num::NonZeroU32::new(iterations) else { return false };
    aws_lc_rs::pbkdf2::verify(aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256, n, &salt, password, &hash).is_ok()
}

/// Verifies a stored hash in any accepted format.
fn verify_sync(password: &[u8], stored: &str) -> bool {
    match hash_format(stored) {
        Some(HashFormat::Argon2) => {
            PasswordHash::new(stored).is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
        }
        Some(HashFormat::Bcrypt) => bcrypt::verify(password, stored).unwrap_or(false),
        Some(HashFormat::Pbkdf2Phc) => parse_pbkdf2_phc(stored).is_some_and(|p| verify_pbkdf2(p, password)),
        Some(HashFormat::Pbkdf2Django) => parse_pbkdf2_django(stored).is_some_and(|p| verify_pbkdf2(p, password)),
        None => false,
    }
}

/// Whether a stored hash is argon2id with at least the current parameters.
fn is_current(stored: &str, params: &Params) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    if parsed.algorithm.as_str() != "argon2id" {
        return false;
    }
    match Params::try_from(&parsed) {
        Ok(p) => p.m_cost() >= params.m_cost() && p.t_cost() >= params.t_cost() && p.p_cost() >= params.p_cost(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher as _;

    fn hasher(m: u32) -> Hasher {
        let mut s = Settings::default();
        s.argon2_memory_kib = m;
        Hasher::new(&s)
    }

    /// A login whose client hangs up mid-hash keeps its permit until the hash ends, so
    /// disconnecting clients cannot run more hashes at once than there are permits.
    #[tokio::test]
    async fn a_dropped_login_keeps_its_permit_until_the_hash_ends() {
        let mut s = Settings::default();
        s.argon2_memory_kib = 16384;
        s.argon2_iterations = 4;
        s.max_concurrent_hashes = 1;
        let h = Hasher::new(&s);
        let stored = h.hash(&Password::new("right")).await.unwrap();
        assert_eq!(h.running(), 0);
        let (h2, stored2) = (h.clone(), stored.clone());
        let login = tokio::spawn(async move { h2.verify(&Password::new("wrong"), Some(&stored2)).await });
        while h.running() == 0 {
            tokio::task::yield_now().await;
        }
        login.abort();
        let _ = login.await;
        assert_eq!(h.running(), 1, "the hash still runs, so its permit is still taken");
        let started = std::time::Instant::now();
        while h.running() == 1 {
            assert!(started.elapsed() < std::time::Duration::from_secs(60), "the permit never came back");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn hash_verifies_and_wrong_password_does_not() {
        let h = hasher(1024);
        let stored = h.hash(&Password::new("correct horse")).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=1024,t=2,p=1$"), "{stored}");
        assert_eq!(h.verify(&Password::new("correct horse"), Some(&stored)).await, Verified::Valid { rehash: None });
        assert_eq!(h.verify(&Password::new("wrong"), Some(&stored)).await, Verified::Invalid);
        assert_eq!(h.verify(&Password::new("correct horse"), None).await, Verified::Invalid);
        assert_eq!(h.verify(&Password::new(""), Some(&stored)).await, Verified::Invalid);
    }

    #[tokio::test]
    async fn weaker_hash_is_rehashed_on_success() {
        let weak = hasher(512).hash(&Password::new("pw")).await.unwrap();
        let h = hasher(1024);
        match h.verify(&Password::new("pw"), Some(&weak)).await {
            Verified::Valid { rehash: Some(new) } => assert!(new.contains("m=1024"), "{new}"),
            other => panic!("expected a rehash, got {other:?}"),
        }
    }

    /// Hashes made the way other systems make them, verified and re-hashed to argon2id.
    #[tokio::test]
    async fn imported_hash_formats_verify_and_are_rehashed() {
        let h = hasher(1024);
        let bcrypt_hash =
            bcrypt::hash_with_salt("hunter2", 4, [7u8; 16]).unwrap().format_for_version(bcrypt::Version::TwoB);
        let mut dk = [0u8; 32];
        aws_lc_rs::pbkdf2::derive(
            aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(1000).unwrap(),
            b"NaCl",
            b"hunter2",
            &mut dk,
        );
        let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
        let django = format!("pbkdf2_sha256$1000$NaCl${}", b64(&dk));
        let phc = format!(
            "$pbkdf2-sha256$i=1000,l=32${}${}",
            b64(b"NaCl").trim_end_matches('='),
            b64(&dk).trim_end_matches('=')
        );
        let argon2i = {
            let a = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::new(64, 1, 1, None).unwrap());
            a.hash_password_with_salt(b"hunter2", b"saltsaltsalt").unwrap().to_string()
        };
        for stored in [
            bcrypt_hash.clone(),
            bcrypt_hash.replacen("$2b$", "$2y$", 1),
            bcrypt_hash.replacen("$2b$", "$2a$", 1),
            django,
            phc,
            argon2i,
        ] {
            assert!(hash_format(&stored).is_some(), "{stored}");
            match h.verify(&Password::new("hunter2"), Some(&stored)).await {
                Verified::Valid { rehash: Some(new) } => assert!(new.starts_with("$argon2id$"), "{new}"),
                other => panic!("{stored}: {other:?}"),
            }
            assert_eq!(h.verify(&Password::new("hunter3"), Some(&stored)).await, Verified::Invalid, "{stored}");
        }
        for bad in [
            "$2b$99$abc",
            "pbkdf2_sha256$x$salt$hash",
            "$pbkdf2-sha256$i=0$c2FsdA$aGFzaA",
            "md5$abc",
            "plaintext",
            "$argon2d$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        ] {
            assert!(hash_format(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn empty_and_huge_passwords_are_refused() {
        let h = hasher(1024);
        assert!(matches!(h.hash(&Password::new("")).await, Err(HashError::Empty)));
        assert!(matches!(h.hash(&Password::new("x".repeat(2000))).await, Err(HashError::TooLong)));
    }
}
