//! Settings: one typed struct, layered defaults -> optional TOML file -> environment.
//!
//! Every setting has one name. In the TOML file it is the lower-case key (`issuer`,
//! `code_ttl_secs`); in the environment it is the same name upper-cased behind `BRAND_IDP_`
//! (`BRAND_IDP_ISSUER`), except the database, which is the standard `DATABASE_URL`.
//! Values are checked once, at start-up, and every message names the setting it is about.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use url::Url;

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration of one brand-idp process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer identifier, byte for byte as configured (it goes into `iss`).
    pub issuer: String,
    pub listen: SocketAddr,
    /// `None`: the embedded SQLite database in `data_dir`.
    pub database_url: Option<Secret>,
    pub data_dir: PathBuf,
    /// The key that encrypts signing keys at rest and keys the client-secret hash.
    pub secret_key: Option<Secret>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub key_size: u32,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub max_concurrent_hashes: usize,
    pub code_ttl_secs: i64,
    pub access_token_ttl_secs: i64,
    pub id_token_ttl_secs: i64,
    pub session_ttl_secs: i64,
    pub jwks_max_age_secs: i64,
    pub key_refresh_secs: u64,
    pub db_max_connections: u32,
    pub db_acquire_timeout_secs: u64,
    pub brand_name: String,
    pub brand_logo_url: Option<String>,
    pub brand_primary_color: String,
    pub login_window_secs: i64,
    pub login_max_failures_per_account: i64,
    pub login_max_failures_per_ip: i64,
    pub login_free_failures: i64,
    pub login_max_delay_secs: i64,
    /// A header set by a trusted reverse proxy that carries the client address (its last
    /// comma-separated entry is used). Unset: the TCP peer address.
    pub client_ip_header: Option<String>,
    pub request_timeout_secs: u64,
    /// Serve `/metrics` on this address only (instead of on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Rotate signing keys automatically every this many seconds (0: manual rotation only,
    /// for brands that pasted a public key into LiveEngage).
    pub key_rotation_interval_secs: i64,
    /// How long a new key is published in the JWKS before it starts signing.
    pub key_prepublish_secs: i64,
    /// How long a server may use a client registration it read before reading it again
    /// (0: read it on every request). Bounds how long a CLI change takes to reach servers.
    pub client_cache_secs: i64,
}

/// One password hash per core the process may use (its CPU affinity and quota), at most 8: a
/// hash is CPU-bound and its working memory wants the core's cache to itself, so more hashes
/// at once than cores only interleave them (measured: two on one core ran 12% below the
/// single-hash rate, one ran at it).
fn default_concurrent_hashes() -> usize {
    usable_cores().clamp(1, 8)
}

/// The cores this process may use (its CPU affinity and quota), at least 1.
pub fn usable_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            issuer: "http://localhost:8080".into(),
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            database_url: None,
            data_dir: PathBuf::from("./data"),
            secret_key: None,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            key_size: 2048,
            // OWASP's minimum for argon2id (19 MiB, 2 passes, 1 lane); measured in the README.
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            max_concurrent_hashes: default_concurrent_hashes(),
            code_ttl_secs: 60,
            access_token_ttl_secs: 3600,
            id_token_ttl_secs: 3600,
            session_ttl_secs: 8 * 3600,
            jwks_max_age_secs: 300,
            key_refresh_secs: 10,
            db_max_connections: 16,
            db_acquire_timeout_secs: 5,
            brand_name: "brand-idp".into(),
            brand_logo_url: None,
            brand_primary_color: "#1f5fbf".into(),
            login_window_secs: 900,
            login_max_failures_per_account: 10,
            login_max_failures_per_ip: 100,
            login_free_failures: 3,
            login_max_delay_secs: 60,
            client_ip_header: None,
            request_timeout_secs: 15,
            metrics_listen: None,
            key_rotation_interval_secs: 0,
            key_prepublish_secs: 86_400,
            client_cache_secs: 1,
        }
    }
}

/// Every setting name, in the order `check-config` prints them.
pub const SETTING_NAMES: &[&str] = &[
    "issuer",
    "listen",
    "database_url",
    "data_dir",
    "secret_key",
    "log_format",
    "log_level",
    "key_size",
    "argon2_memory_kib",
    "argon2_iterations",
    "argon2_parallelism",
    "max_concurrent_hashes",
    "code_ttl_secs",
    "access_token_ttl_secs",
    "id_token_ttl_secs",
    "session_ttl_secs",
    "jwks_max_age_secs",
    "key_refresh_secs",
    "db_max_connections",
    "db_acquire_timeout_secs",
    "brand_name",
    "brand_logo_url",
    "brand_primary_color",
    "login_window_secs",
    "login_max_failures_per_account",
    "login_max_failures_per_ip",
    "login_free_failures",
    "login_max_delay_secs",
    "client_ip_header",
    "request_timeout_secs",
    "metrics_listen",
    "key_rotation_interval_secs",
    "key_prepublish_secs",
    "client_cache_secs",
];

/// The environment variable a setting is read from.
pub fn env_name(setting: &str) -> String {
    if setting == "database_url" {
        "DATABASE_URL".into()
    } else {
        format!("BRAND_IDP_{}", setting.to_ascii_uppercase())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(setting: &str, what: impl fmt::Display) -> ConfigError {
    ConfigError(format!("setting {} ({}): {}", setting, env_name(setting), what))
}

fn parse_num<T>(setting: &str, v: &str, min: T, max: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let n: T = v.trim().parse().map_err(|_| bad(setting, format!("{v:?} is not a whole number")))?;
    if n < min || n > max {
        return Err(bad(setting, format!("{n} is outside {min}..={max}")));
    }
    Ok(n)
}

impl Settings {
    /// Defaults, then the TOML file (if any), then the environment.
    pub fn load(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(config_file, |k| std::env::var(k).ok())
    }

    /// As [`Settings::load`], with the environment given as a lookup function (for tests).
    pub fn load_from(
        config_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        if let Some(path) = config_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
            s.apply_toml(&text).map_err(|e| ConfigError(format!("config file {}: {}", path.display(), e.0)))?;
        }
        for name in SETTING_NAMES {
            if let Some(v) = env(&env_name(name)) {
                s.set(name, &v)?;
            }
        }
        s.validate()?;
        Ok(s)
    }

    fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| ConfigError(format!("not valid TOML: {}", e.message())))?;
        for (key, value) in table {
            if !SETTING_NAMES.contains(&key.as_str()) {
                return Err(ConfigError(format!("unknown setting {key:?}")));
            }
            let v = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError(format!(
                        "setting {key}: expected a string or a number, found {}",
                        other.type_str()
                    )))
                }
            };
            self.set(&key, &v)?;
        }
        Ok(())
    }

    /// Sets one setting from its text form.
    pub fn set(&mut self, name: &str, v: &str) -> Result<(), ConfigError> {
        match name {
            "issuer" => self.issuer = v.to_string(),
            "listen" => {
                self.listen =
                    v.trim().parse().map_err(|_| bad(name, format!("{v:?} is not an address like 127.0.0.1:8080")))?
            }
            "database_url" => self.database_url = if v.trim().is_empty() { None } else { Some(Secret::new(v.trim())) },
            "data_dir" => self.data_dir = PathBuf::from(v),
            "secret_key" => self.secret_key = if v.trim().is_empty() { None } else { Some(Secret::new(v.trim())) },
            "log_format" => {
                self.log_format = match v.trim().to_ascii_lowercase().as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(bad(name, format!("{v:?} is neither \"text\" nor \"json\""))),
                }
            }
            "log_level" => self.log_level = v.trim().to_string(),
            "key_size" => {
                let n: u32 = parse_num(name, v, 2048, 4096)?;
                if ![2048, 3072, 4096].contains(&n) {
                    return Err(bad(name, format!("{n} is not one of 2048, 3072, 4096")));
                }
                self.key_size = n;
            }
            "argon2_memory_kib" => self.argon2_memory_kib = parse_num(name, v, 8, 4 * 1024 * 1024)?,
            "argon2_iterations" => self.argon2_iterations = parse_num(name, v, 1, 100)?,
            "argon2_parallelism" => self.argon2_parallelism = parse_num(name, v, 1, 64)?,
            "max_concurrent_hashes" => self.max_concurrent_hashes = parse_num(name, v, 1, 1024)?,
            "code_ttl_secs" => self.code_ttl_secs = parse_num(name, v, 1, 600)?,
            "access_token_ttl_secs" => self.access_token_ttl_secs = parse_num(name, v, 1, 86_400 * 7)?,
            "id_token_ttl_secs" => self.id_token_ttl_secs = parse_num(name, v, 1, 86_400 * 7)?,
            "session_ttl_secs" => self.session_ttl_secs = parse_num(name, v, 60, 86_400 * 90)?,
            "jwks_max_age_secs" => self.jwks_max_age_secs = parse_num(name, v, 0, 86_400)?,
            "key_refresh_secs" => self.key_refresh_secs = parse_num(name, v, 1, 3600)?,
            "db_max_connections" => self.db_max_connections = parse_num(name, v, 1, 1000)?,
            "db_acquire_timeout_secs" => self.db_acquire_timeout_secs = parse_num(name, v, 1, 300)?,
            "brand_name" => self.brand_name = v.to_string(),
            "brand_logo_url" => {
                self.brand_logo_url = if v.trim().is_empty() { None } else { Some(v.trim().to_string()) }
            }
            "brand_primary_color" => self.brand_primary_color = v.trim().to_string(),
            "login_window_secs" => self.login_window_secs = parse_num(name, v, 60, 86_400)?,
            "login_max_failures_per_account" => self.login_max_failures_per_account = parse_num(name, v, 1, 100_000)?,
            "login_max_failures_per_ip" => self.login_max_failures_per_ip = parse_num(name, v, 1, 1_000_000)?,
            "login_free_failures" => self.login_free_failures = parse_num(name, v, 0, 1000)?,
            "login_max_delay_secs" => self.login_max_delay_secs = parse_num(name, v, 1, 3600)?,
            "client_ip_header" => {
                let h = v.trim().to_ascii_lowercase();
                if !h.is_empty() && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(bad(name, format!("{v:?} is not a header name")));
                }
                self.client_ip_header = (!h.is_empty()).then_some(h);
            }
            "request_timeout_secs" => self.request_timeout_secs = parse_num(name, v, 1, 600)?,
            "metrics_listen" => {
                self.metrics_listen = if v.trim().is_empty() {
                    None
                } else {
                    Some(
                        v.trim()
                            .parse()
                            .map_err(|_| bad(name, format!("{v:?} is not an address like 127.0.0.1:9090")))?,
                    )
                }
            }
            "key_rotation_interval_secs" => self.key_rotation_interval_secs = parse_num(name, v, 0, 86_400 * 3650)?,
            "key_prepublish_secs" => self.key_prepublish_secs = parse_num(name, v, 0, 86_400 * 365)?,
            "client_cache_secs" => self.client_cache_secs = parse_num(name, v, 0, 300)?,
            _ => return Err(ConfigError(format!("unknown setting {name:?}"))),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url =
            Url::parse(&self.issuer).map_err(|e| bad("issuer", format!("{:?} is not a URL: {e}", self.issuer)))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(bad("issuer", "must be an https (or, for local use, http) URL"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("issuer", "must not have a query or a fragment (OpenID Connect Discovery §2)"));
        }
        if url.host_str().is_none() {
            return Err(bad("issuer", "must name a host"));
        }
        if let Some(db) = &self.database_url {
            let d = db.expose();
            if !(d.starts_with("postgres://") || d.starts_with("postgresql://") || d.starts_with("sqlite:")) {
                return Err(bad(
                    "database_url",
                    "must start with postgres://, postgresql:// or sqlite: (leave it unset for the embedded default)",
                ));
            }
        }
        if let Some(k) = &self.secret_key {
            decode_secret_key(k).map_err(|e| bad("secret_key", e))?;
        }
        let c = &self.brand_primary_color;
        let hex_ok = c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|ch| ch.is_ascii_hexdigit());
        if !hex_ok {
            return Err(bad("brand_primary_color", format!("{c:?} is not a colour like #1f5fbf")));
        }
        if let Some(logo) = &self.brand_logo_url {
            let u = Url::parse(logo).map_err(|_| bad("brand_logo_url", "is not an absolute URL"))?;
            if u.scheme() != "https" && u.scheme() != "http" {
                return Err(bad("brand_logo_url", "must be an http(s) URL"));
            }
        }
        if self.key_rotation_interval_secs > 0 {
            let min_prepublish = self.jwks_max_age_secs + self.key_refresh_secs as i64;
            if self.key_prepublish_secs < min_prepublish {
                return Err(bad(
                    "key_prepublish_secs",
                    format!("must be at least jwks_max_age_secs + key_refresh_secs ({min_prepublish}) so every relying party sees a key before it signs"),
                ));
            }
            if self.key_rotation_interval_secs <= self.key_prepublish_secs {
                return Err(bad("key_rotation_interval_secs", "must be longer than key_prepublish_secs"));
            }
        }
        if self.argon2_memory_kib < 8 * self.argon2_parallelism {
            return Err(bad("argon2_memory_kib", "must be at least 8 KiB per lane"));
        }
        Ok(())
    }

    pub fn is_https(&self) -> bool {
        self.issuer.starts_with("https://")
    }

    pub fn uses_postgres(&self) -> bool {
        self.database_url.as_ref().map(|d| d.expose().starts_with("postgres")).unwrap_or(false)
    }

    /// An endpoint URL under the issuer (`/token` -> `https://idp.example/token`).
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.issuer.trim_end_matches('/'), path)
    }

    /// The effective configuration, secrets redacted, as (name, value) pairs.
    pub fn redacted(&self) -> Vec<(&'static str, String)> {
        let redact = |s: &Option<Secret>| match s {
            None => "(unset)".to_string(),
            Some(_) => "(set, redacted)".to_string(),
        };
        let db = match &self.database_url {
            None => format!("(unset: embedded SQLite at {})", self.sqlite_path().display()),
            Some(u) => redact_url(u.expose()),
        };
        vec![
            ("issuer", self.issuer.clone()),
            ("listen", self.listen.to_string()),
            ("database_url", db),
            ("data_dir", self.data_dir.display().to_string()),
            ("secret_key", redact(&self.secret_key)),
            ("log_format", format!("{:?}", self.log_format).to_ascii_lowercase()),
            ("log_level", self.log_level.clone()),
            ("key_size", self.key_size.to_string()),
            ("argon2_memory_kib", self.argon2_memory_kib.to_string()),
            ("argon2_iterations", self.argon2_iterations.to_string()),
            ("argon2_parallelism", self.argon2_parallelism.to_string()),
            ("max_concurrent_hashes", self.max_concurrent_hashes.to_string()),
            ("code_ttl_secs", self.code_ttl_secs.to_string()),
            ("access_token_ttl_secs", self.access_token_ttl_secs.to_string()),
            ("id_token_ttl_secs", self.id_token_ttl_secs.to_string()),
            ("session_ttl_secs", self.session_ttl_secs.to_string()),
            ("jwks_max_age_secs", self.jwks_max_age_secs.to_string()),
            ("key_refresh_secs", self.key_refresh_secs.to_string()),
            ("db_max_connections", self.db_max_connections.to_string()),
            ("db_acquire_timeout_secs", self.db_acquire_timeout_secs.to_string()),
            ("brand_name", self.brand_name.clone()),
            ("brand_logo_url", self.brand_logo_url.clone().unwrap_or_else(|| "(unset)".into())),
            ("brand_primary_color", self.brand_primary_color.clone()),
            ("login_window_secs", self.login_window_secs.to_string()),
            ("login_max_failures_per_account", self.login_max_failures_per_account.to_string()),
            ("login_max_failures_per_ip", self.login_max_failures_per_ip.to_string()),
            ("login_free_failures", self.login_free_failures.to_string()),
            ("login_max_delay_secs", self.login_max_delay_secs.to_string()),
            (
                "client_ip_header",
                self.client_ip_header.clone().unwrap_or_else(|| "(unset: the TCP peer address)".into()),
            ),
            ("request_timeout_secs", self.request_timeout_secs.to_string()),
            (
                "metrics_listen",
                self.metrics_listen.map(|a| a.to_string()).unwrap_or_else(|| "(unset: /metrics on listen)".into()),
            ),
            ("key_rotation_interval_secs", self.key_rotation_interval_secs.to_string()),
            ("key_prepublish_secs", self.key_prepublish_secs.to_string()),
            ("client_cache_secs", self.client_cache_secs.to_string()),
        ]
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("brand-idp.db")
    }

    pub fn secret_key_path(&self) -> PathBuf {
        self.data_dir.join("secret.key")
    }
}

/// Hides the password of a database URL.
pub fn redact_url(u: &str) -> String {
    match Url::parse(u) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("redacted"));
            }
            url.to_string()
        }
        Err(_) => "(unparseable URL, redacted)".into(),
    }
}

/// The secret key is at least 32 bytes of randomness, written as base64 or base64url.
pub fn decode_secret_key(k: &Secret) -> Result<Vec<u8>, String> {
    let s = k.expose().trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
        .map_err(|_| {
            "is not base64; generate one with `brand-idp gen-secret-key` or `openssl rand -base64 32`".to_string()
        })?;
    if bytes.len() < 32 {
        return Err(format!("decodes to {} bytes; at least 32 are needed (`brand-idp gen-secret-key`)", bytes.len()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn concurrent_hashes_default_to_the_cores_at_most_eight() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(Settings::default().max_concurrent_hashes, cores.clamp(1, 8));
        assert_eq!(load(&[("BRAND_IDP_MAX_CONCURRENT_HASHES", "3")]).unwrap().max_concurrent_hashes, 3);
    }

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let m: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load_from(None, |k| m.get(k).cloned())
    }

    #[test]
    fn defaults_are_valid() {
        let s = load(&[]).unwrap();
        assert_eq!(s.issuer, "http://localhost:8080");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert!(s.database_url.is_none());
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = load(&[("BRAND_IDP_LISTEN", "nope")]).unwrap_err().0;
        assert!(e.contains("BRAND_IDP_LISTEN"), "{e}");
        let e = load(&[("BRAND_IDP_ISSUER", "ftp://x")]).unwrap_err().0;
        assert!(e.contains("BRAND_IDP_ISSUER"), "{e}");
        let e = load(&[("BRAND_IDP_ISSUER", "https://x/?a=b")]).unwrap_err().0;
        assert!(e.contains("query"), "{e}");
        let e = load(&[("BRAND_IDP_KEY_SIZE", "1024")]).unwrap_err().0;
        assert!(e.contains("BRAND_IDP_KEY_SIZE"), "{e}");
        let e = load(&[("BRAND_IDP_SECRET_KEY", "short")]).unwrap_err().0;
        assert!(e.contains("BRAND_IDP_SECRET_KEY") && !e.contains("short"), "{e}");
        let e = load(&[("DATABASE_URL", "mysql://x")]).unwrap_err().0;
        assert!(e.contains("DATABASE_URL"), "{e}");
    }

    #[test]
    fn file_then_environment() {
        let dir = std::env::temp_dir().join(format!("brand-idp-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "issuer = \"https://idp.example\"\ncode_ttl_secs = 30\n").unwrap();
        let s = Settings::load_from(Some(&f), |k| (k == "BRAND_IDP_CODE_TTL_SECS").then(|| "45".to_string())).unwrap();
        assert_eq!(s.issuer, "https://idp.example");
        assert_eq!(s.code_ttl_secs, 45);
        std::fs::write(&f, "bogus = 1\n").unwrap();
        let e = Settings::load_from(Some(&f), |_| None).unwrap_err().0;
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn redaction_hides_secrets() {
        let s = load(&[
            ("BRAND_IDP_SECRET_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ("DATABASE_URL", "postgres://u:hunter2@db/x"),
        ])
        .unwrap();
        let out = format!("{:?} {:?}", s.redacted(), s);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("AAAAAAAAAAAAAAAA"), "{out}");
    }
}
