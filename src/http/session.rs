//! Browser sessions: tower-sessions over brand-idp's own store (so every instance sees every
//! session), the logged-in state read from them, and CSRF tokens for forms.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{header, HeaderMap};
use tower_sessions::cookie::time::{Duration as CookieDuration, OffsetDateTime};
use tower_sessions::cookie::SameSite;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

use crate::clock::Clock;
use crate::crypto::{ct_eq, random_token, token_hash};
use crate::oidc::authorize::LoggedIn;
use crate::oidc::error::{from_store, OAuthError};
use crate::store::{Consumer, Store, StoreError};
use crate::AppState;

/// Cookie names. With an https issuer they carry the `__Host-` prefix: the browser then
/// accepts them only from brand-idp's own host (Secure, Path=/, no Domain), so a sibling
/// subdomain cannot plant a session or CSRF cookie of its choosing.
pub fn session_cookie_name(st: &AppState) -> &'static str {
    if st.settings.is_https() {
        "__Host-bidp_session"
    } else {
        "bidp_session"
    }
}

pub fn csrf_cookie_name(st: &AppState) -> &'static str {
    if st.settings.is_https() {
        "__Host-bidp_csrf"
    } else {
        "bidp_csrf"
    }
}

/// The session store: rows keyed by SHA-256 of the session id, so a copy of the table does
/// not hand out live sessions.
#[derive(Debug, Clone)]
pub struct DbSessionStore {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl DbSessionStore {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        DbSessionStore { store, clock }
    }
}

fn backend(e: StoreError) -> session_store::Error {
    match e {
        StoreError::Unavailable(_) => session_store::Error::Backend("database unavailable".into()),
        other => session_store::Error::Backend(other.to_string()),
    }
}

fn encode(record: &Record) -> session_store::Result<(String, i64)> {
    let data = serde_json::to_string(&record.data).map_err(|e| session_store::Error::Encode(e.to_string()))?;
    Ok((data, record.expiry_date.unix_timestamp()))
}

#[async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        loop {
            let (data, exp) = encode(record)?;
            if self.store.insert_session(&token_hash(&record.id.to_string()), &data, exp).await.map_err(backend)? {
                return Ok(());
            }
            // A 128-bit collision: astronomically unlikely, but never overwrite a session.
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let (data, exp) = encode(record)?;
        self.store.save_session(&token_hash(&record.id.to_string()), &data, exp).await.map_err(backend)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some((data, exp)) =
            self.store.load_session(&token_hash(&id.to_string()), self.clock.now()).await.map_err(backend)?
        else {
            return Ok(None);
        };
        let data = serde_json::from_str(&data).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date =
            OffsetDateTime::from_unix_timestamp(exp).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record { id: *id, data, expiry_date }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.store.delete_session(&token_hash(&id.to_string())).await.map_err(backend)
    }
}

pub fn layer(st: &AppState) -> SessionManagerLayer<DbSessionStore> {
    SessionManagerLayer::new(DbSessionStore::new(st.store.clone(), st.clock.clone()))
        .with_name(session_cookie_name(st))
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(st.settings.is_https())
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(CookieDuration::seconds(st.settings.session_ttl_secs)))
}

const KEY_SUB: &str = "sub";
const KEY_AUTH_TIME: &str = "auth_time";

/// The consumer logged in with this session, if the session is live and the account still
/// may log in. A database failure is an error, not "logged out".
pub async fn current(st: &AppState, session: &Session) -> Result<Option<(LoggedIn, Consumer)>, OAuthError> {
    let sub: Option<String> = session.get(KEY_SUB).await.map_err(session_error)?;
    let auth_time: Option<i64> = session.get(KEY_AUTH_TIME).await.map_err(session_error)?;
    let (Some(sub), Some(auth_time)) = (sub, auth_time) else {
        return Ok(None);
    };
    if st.now() - auth_time >= st.settings.session_ttl_secs {
        return Ok(None);
    }
    match st.store.consumer_by_id(&sub).await {
        Ok(c) if !c.disabled => Ok(Some((LoggedIn { subject: sub, auth_time }, c))),
        Ok(_) | Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(from_store(e)),
    }
}

/// Starts a logged-in session under a new id (no fixation).
pub async fn log_in(session: &Session, subject: &str, auth_time: i64) -> Result<(), OAuthError> {
    session.cycle_id().await.map_err(session_error)?;
    session.insert(KEY_SUB, subject).await.map_err(session_error)?;
    session.insert(KEY_AUTH_TIME, auth_time).await.map_err(session_error)?;
    session.save().await.map_err(session_error)?;
    Ok(())
}

/// Ends the session in the database and in the browser.
pub async fn log_out(session: &Session) -> Result<(), OAuthError> {
    session.flush().await.map_err(session_error)
}

pub fn session_error(e: tower_sessions::session::Error) -> OAuthError {
    tracing::warn!(error = %e, "session storage failed");
    OAuthError::unavailable()
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// CSRF protection for brand-idp's forms: a random cookie (`SameSite=Strict`, `HttpOnly`,
/// `__Host-` on https) and, in the form, a MAC of it under a server key. A forged form
/// cannot know the MAC; with `__Host-`, a sibling subdomain cannot plant the cookie.
pub struct Csrf {
    /// The cookie value to set, when the request had none.
    pub new_cookie: Option<String>,
    pub token: String,
}

pub fn csrf_for(st: &AppState, headers: &HeaderMap) -> Csrf {
    match cookie(headers, csrf_cookie_name(st)).filter(|v| v.len() == 43) {
        Some(v) => Csrf { new_cookie: None, token: st.secrets.csrf_token(v) },
        None => {
            let v = random_token::<32>();
            Csrf { token: st.secrets.csrf_token(&v), new_cookie: Some(v) }
        }
    }
}

pub fn csrf_cookie_header(st: &AppState, value: &str) -> String {
    let secure = if st.settings.is_https() { "; Secure" } else { "" };
    format!("{}={value}; Path=/; HttpOnly; SameSite=Strict{secure}", csrf_cookie_name(st))
}

pub fn csrf_ok(st: &AppState, headers: &HeaderMap, form_token: Option<&str>) -> bool {
    match (cookie(headers, csrf_cookie_name(st)), form_token) {
        (Some(c), Some(t)) => ct_eq(st.secrets.csrf_token(c).as_bytes(), t.as_bytes()),
        _ => false,
    }
}
