//! brand-idp: an OpenID Connect identity provider for brands that put authenticated
//! consumers into LivePerson Conversational Cloud (LiveEngage) conversations.
//!
//! [`App::build`] assembles everything the server needs from [`config::Settings`]; the
//! binary and the tests both use it, so tests run exactly the router the binary serves.

// Settings are built from defaults and then adjusted field by field, on purpose.
#![allow(clippy::field_reassign_with_default)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod consumers;
pub mod crypto;
pub mod demo;
pub mod http;
pub mod keys;
pub mod liveengage;
pub mod metrics;
pub mod oidc;
pub mod store;
pub mod telemetry;

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::clock::{Clock, SystemClock};
use crate::config::{decode_secret_key, Secret, Settings};
use crate::consumers::Hasher;
use crate::crypto::SecretKeys;
use crate::keys::KeyRing;
use crate::store::Store;

/// Everything a request handler may need; one pointer, so cloning it per request (every
/// layer and handler with state does) costs a reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct Shared {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub keys: Arc<KeyRing>,
    pub secrets: SecretKeys,
    pub hasher: Hasher,
    pub clock: Arc<dyn Clock>,
    pub discovery: bytes::Bytes,
    pub metrics: Arc<metrics::Metrics>,
    clients: std::sync::Mutex<ClientCache>,
}

/// Client id -> (when it was read, the registration).
type ClientCache = std::collections::HashMap<String, (i64, Arc<store::Client>)>;

impl Shared {
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A client registration, read from the database at most every `client_cache_secs`.
    /// The hot paths (authorize, token) would otherwise read it on every request; the price
    /// is that a change made with the CLI reaches running servers within that bound.
    pub async fn client(&self, client_id: &str) -> store::Result<Arc<store::Client>> {
        let ttl = self.settings.client_cache_secs;
        let now = self.now();
        if ttl > 0 {
            if let Some((at, c)) = self.clients.lock().expect("client cache lock").get(client_id) {
                if now - at < ttl {
                    return Ok(c.clone());
                }
            }
        }
        let c = Arc::new(self.store.client(client_id).await?);
        if ttl > 0 {
            let mut cache = self.clients.lock().expect("client cache lock");
            // Bounded: unknown ids are never cached, and a full cache starts over.
            if cache.len() >= 10_000 {
                cache.clear();
            }
            cache.insert(client_id.to_string(), (now, c.clone()));
        }
        Ok(c)
    }

    /// How long a retired key stays in the JWKS: every token it signed has expired and
    /// every cached JWKS has been refetched.
    pub fn retire_grace(&self) -> i64 {
        retire_grace(&self.settings)
    }
}

pub fn retire_grace(s: &Settings) -> i64 {
    s.id_token_ttl_secs.max(s.access_token_ttl_secs) + s.jwks_max_age_secs + s.key_refresh_secs as i64
}

/// The secret key from the settings; for the embedded default, generated on first use and
/// kept in the data directory (mode 0600). PostgreSQL deployments must set it explicitly,
/// because every instance must share it.
pub fn resolve_secret_key(s: &Settings) -> anyhow::Result<SecretKeys> {
    if let Some(k) = &s.secret_key {
        let bytes = decode_secret_key(k).map_err(|e| anyhow::anyhow!("BRAND_IDP_SECRET_KEY {e}"))?;
        return Ok(SecretKeys::from_secret(&bytes));
    }
    if s.uses_postgres() {
        bail!(
            "BRAND_IDP_SECRET_KEY is not set. With PostgreSQL every instance must share one secret key: \
             generate one with `brand-idp gen-secret-key` and set BRAND_IDP_SECRET_KEY (or secret_key in the config file) \
             to the same value on every instance"
        );
    }
    let path = s.secret_key_path();
    if path.exists() {
        let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the secret key file is readable by other users; chmod 600 it");
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let bytes = decode_secret_key(&Secret::new(text.trim()))
            .map_err(|e| anyhow::anyhow!("the secret key file {} {e}", path.display()))?;
        return Ok(SecretKeys::from_secret(&bytes));
    }
    store::ensure_private_dir(&s.data_dir)
        .with_context(|| format!("cannot create the data directory {}", s.data_dir.display()))?;
    let key = crypto::random_bytes::<32>();
    let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path);
    match &mut f {
        Ok(f) => {
            use std::io::Write;
            f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
            f.sync_all().ok();
            tracing::warn!(
                path = %path.display(),
                "BRAND_IDP_SECRET_KEY is not set: generated a secret key for the embedded database and stored it \
                 in the data directory; back it up with the database, or set BRAND_IDP_SECRET_KEY"
            );
            Ok(SecretKeys::from_secret(&key))
        }
        // Another process created it between our check and our open: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => resolve_secret_key(s),
        Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
}

/// Connects to the database and applies migrations, with messages an operator can act on.
pub async fn open_store(s: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(s).await.map_err(|e| open_error(s, &e))?;
    let applied = store
        .migrate()
        .await
        .map_err(|e| anyhow::anyhow!("cannot migrate the database: {}", describe_store_error(&e)))?;
    if !applied.is_empty() {
        tracing::info!(?applied, backend = store.backend_name(), "applied migrations");
    }
    Ok(store)
}

/// "cannot open the database ...", naming the database (password redacted) and the cause.
pub fn open_error(s: &Settings, e: &store::StoreError) -> anyhow::Error {
    let target = match &s.database_url {
        Some(u) => config::redact_url(u.expose()),
        None => s.sqlite_path().display().to_string(),
    };
    anyhow::anyhow!("cannot open the database {target}: {}", describe_store_error(e))
}

/// A one-line description of a storage error without internals an attacker could use.
pub fn describe_store_error(e: &store::StoreError) -> String {
    use store::StoreError::*;
    match e {
        Unavailable(inner) | Other(inner) => match inner {
            sqlx::Error::Io(io) => format!("{io}"),
            sqlx::Error::PoolTimedOut => "timed out waiting for a connection".into(),
            sqlx::Error::Database(d) => d.message().to_string(),
            sqlx::Error::Configuration(c) => format!("bad database URL ({c})"),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

pub struct App {
    pub state: AppState,
    pub router: axum::Router,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for App {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl App {
    /// Builds the application with the system clock.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
        let secrets = resolve_secret_key(&settings)?;
        let store = open_store(&settings).await?;
        let now = clock.now();
        keys::bootstrap(&store, &secrets, settings.key_size, now, retire_grace(&settings))
            .await
            .map_err(|e| anyhow::anyhow!("cannot prepare signing keys: {e}"))?;
        let ring = Arc::new(KeyRing::new(secrets.clone()));
        ring.refresh(&store, now).await.map_err(|e| anyhow::anyhow!("cannot load signing keys: {e}"))?;
        let discovery = bytes::Bytes::from(oidc::discovery::metadata(&settings).to_string());
        let state = AppState(Arc::new(Shared {
            hasher: Hasher::new(&settings),
            settings: Arc::new(settings),
            store,
            keys: ring,
            secrets,
            clock,
            discovery,
            metrics: Arc::new(metrics::Metrics::default()),
            clients: Default::default(),
        }));
        let tasks = vec![tokio::spawn(key_maintenance(state.clone())), tokio::spawn(cleanup(state.clone()))];
        let router = http::router(state.clone());
        Ok(App { state, router, tasks })
    }

    /// Reloads keys now (after this process rotated one, or in tests).
    pub async fn refresh_keys(&self) -> anyhow::Result<()> {
        maintain_keys(&self.state).await?;
        Ok(())
    }
}

/// One round of key upkeep: scheduled rotation, activation of due keys, and reloading what
/// other instances changed.
pub async fn maintain_keys(state: &AppState) -> Result<(), keys::KeyError> {
    let now = state.now();
    let rotated = keys::auto_rotate(&state.store, &state.secrets, &state.settings, now).await;
    let promoted = keys::promote_due(&state.store, now, state.retire_grace()).await;
    let refreshed = state.keys.refresh(&state.store, now).await;
    rotated.and(promoted.map(|_| ())).and(refreshed)
}

/// Key upkeep every `key_refresh_secs`.
async fn key_maintenance(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(state.settings.key_refresh_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = maintain_keys(&state).await {
            tracing::warn!(error = %e, "key maintenance failed; serving the keys loaded before, will retry");
        }
    }
}

/// Rows deleted per table per batch: small enough that a batch never holds locks for long.
pub const CLEANUP_BATCH: i64 = 1000;

/// One cleanup pass: expired codes, tokens, sessions and login counters, in bounded
/// batches, by one instance at a time. Returns the rows deleted (`None`: another instance
/// is cleaning up).
pub async fn cleanup_once(state: &AppState) -> Result<Option<u64>, store::StoreError> {
    let store = state.store.clone();
    state
        .store
        .with_maintenance_lock(|| async move {
            let now = state.now();
            let grace = state.settings.access_token_ttl_secs;
            let mut total = 0;
            // At most 10 batches per pass, so a pass is bounded too; the next pass continues.
            for _ in 0..10 {
                let n = store.delete_expired(now, grace, CLEANUP_BATCH).await?
                    + store.delete_stale_throttles(now, state.settings.login_window_secs, CLEANUP_BATCH).await?;
                total += n;
                if n == 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            Ok(total)
        })
        .await
}

async fn cleanup(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match cleanup_once(&state).await {
            Ok(Some(n)) if n > 0 => tracing::debug!(deleted = n, "expired rows cleaned up"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cleanup failed; will retry"),
        }
    }
}

/// Runs the server until SIGINT/SIGTERM, then finishes in-flight requests.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listen = settings.listen;
    let app = App::build(settings).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (BRAND_IDP_LISTEN)"))?;
    tracing::info!(
        address = %listener.local_addr()?,
        issuer = %app.state.settings.issuer,
        backend = app.state.store.backend_name(),
        "brand-idp is serving"
    );
    if let Some(addr) = app.state.settings.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (BRAND_IDP_METRICS_LISTEN)"))?;
        tracing::info!(address = %addr, "metrics are served here");
        tokio::spawn(http::server::serve(metrics, http::metrics_router(app.state.clone()), std::future::pending()));
    }
    http::server::serve(listener, app.router.clone(), shutdown_signal()).await;
    tracing::info!("stopped");
    app.state.store.close().await;
    Ok(())
}

async fn shutdown_signal() {
    stop_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
}

/// Resolves at SIGINT or SIGTERM.
pub(crate) async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
