//! `GET|POST /login`: the login page. It knows nothing about the protocol: it logs the
//! consumer in and sends the browser back to where it came from (an authorization request
//! on this server, or nowhere).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use tower_sessions::Session;

use crate::consumers::throttle::{self, Policy};
use crate::consumers::{Password, Verified};
use crate::http::client_ip::ClientIp;
use crate::http::pages::{error_page, html, message_page, server_error_page, Brand, LoginPage};
use crate::http::respond::see_other;
use crate::http::session::{self, csrf_cookie_header, csrf_for, csrf_ok};
use crate::metrics::Login;
use crate::oidc::error::from_store;
use crate::store::StoreError;
use crate::AppState;

const FAILED: &str = "The username or password is not right.";

fn human_secs(s: i64) -> String {
    match s {
        1 => "1 second".into(),
        s if s < 120 => format!("{s} seconds"),
        s => format!("{} minutes", (s + 59) / 60),
    }
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    return_to: Option<String>,
}

/// Only authorization requests on this server are valid places to return to.
fn safe_return_to(r: Option<&str>) -> Option<&str> {
    r.filter(|r| r.starts_with("/authorize?") && r.len() <= 64 * 1024)
}

fn return_param(return_to: &str, name: &str) -> Option<String> {
    let q = return_to.split_once('?').map(|(_, q)| q)?;
    url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

async fn client_name(st: &AppState, return_to: &str) -> Option<String> {
    let id = return_param(return_to, "client_id")?;
    st.store.client(&id).await.ok().map(|c| c.name.unwrap_or(c.client_id))
}

async fn render(
    st: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    return_to: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    let csrf = csrf_for(st, headers);
    let page = LoginPage {
        brand: Brand::from(&st.settings),
        csrf: csrf.token,
        return_to: return_to.to_string(),
        username: username.to_string(),
        client_name: client_name(st, return_to).await,
        error: error.map(str::to_string),
    };
    let mut res = html(status, &page);
    if let Some(c) = csrf.new_cookie {
        if let Ok(v) = HeaderValue::from_str(&csrf_cookie_header(st, &c)) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

pub async fn get(State(st): State<AppState>, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let return_to = safe_return_to(q.return_to.as_deref()).unwrap_or("");
    let hint = return_param(return_to, "login_hint").unwrap_or_default();
    let hint: String = hint.chars().take(128).collect();
    render(&st, &headers, StatusCode::OK, return_to, &hint, None).await
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    csrf: Option<String>,
    #[serde(default)]
    return_to: String,
}

pub async fn post(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return error_page(
            &st.settings,
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The form was not understood.",
            Some("invalid_request"),
        );
    };
    let return_to = safe_return_to(Some(&form.return_to)).unwrap_or("").to_string();
    if !csrf_ok(&st, &headers, form.csrf.as_deref()) {
        // Stale or forged form: show a fresh one rather than a dead end.
        return render(
            &st,
            &headers,
            StatusCode::FORBIDDEN,
            &return_to,
            "",
            Some("This page expired. Please sign in again."),
        )
        .await;
    }
    let username = form.username.trim();
    let password = Password::new(form.password);
    if username.is_empty() || username.len() > 256 || password.is_empty() {
        return render(
            &st,
            &headers,
            StatusCode::UNAUTHORIZED,
            &return_to,
            username,
            Some("Enter your username and password."),
        )
        .await;
    }
    // Throttling comes before any password work, and is the same for unknown usernames.
    let policy = Policy::from(&st.settings);
    let keys = throttle::keys(&crate::store::username_key(username), &ip);
    let now = st.now();
    let counters = match st.store.throttle_counters(&keys).await {
        Ok(c) => c,
        Err(e) => return server_error_page(&st.settings, &from_store(e)),
    };
    let throttled = |wait: i64| {
        tracing::info!(retry_after = wait, "login throttled");
        let msg = format!("Too many sign-in attempts. Try again in {}.", human_secs(wait));
        let (st, headers, return_to) = (&st, &headers, &return_to);
        async move {
            let mut res = render(st, headers, StatusCode::TOO_MANY_REQUESTS, return_to, username, Some(&msg)).await;
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            res
        }
    };
    if let Err(wait) = throttle::check(&policy, now, counters[0], counters[1], counters[2]) {
        st.metrics.login(Login::Throttled);
        return throttled(wait).await;
    }
    // Reserve this attempt on the account and address counters before checking it, in one
    // atomic statement each, so guesses sent all at once cannot slip past the limits
    // together. A success gives the reservation back.
    let mut reserved = [0i64; 2];
    for (i, k) in keys[..2].iter().enumerate() {
        match st.store.throttle_fail(k, now, policy.window).await {
            Ok(n) => reserved[i] = n,
            Err(e) => return server_error_page(&st.settings, &from_store(e)),
        }
    }
    if reserved[0] > policy.max_per_account || reserved[1] > policy.max_per_ip {
        st.metrics.login(Login::Throttled);
        return throttled(policy.window).await;
    }
    let consumer = match st.store.consumer_by_username(username).await {
        Ok(c) => Some(c),
        Err(StoreError::NotFound) => None,
        Err(e) => return server_error_page(&st.settings, &from_store(e)),
    };
    // Unknown usernames verify against a dummy hash: same work, same answer.
    let hashing = std::time::Instant::now();
    let verified = st.hasher.verify(&password, consumer.as_ref().and_then(|c| c.password_hash.as_deref())).await;
    st.metrics.password_hash(hashing.elapsed());
    let consumer = match (verified, consumer) {
        (Verified::Valid { rehash }, Some(c)) if !c.disabled => {
            if let (Some(new), Some(old)) = (rehash, c.password_hash.as_deref()) {
                if let Err(e) = st.store.upgrade_password_hash(&c.id, old, &new, st.now()).await {
                    tracing::warn!(error = %e, "could not store the upgraded password hash");
                }
            }
            c
        }
        _ => {
            if let Err(e) = st.store.throttle_fail(&keys[2], now, policy.window).await {
                return server_error_page(&st.settings, &from_store(e));
            }
            st.metrics.login(Login::Failure);
            tracing::info!("login failed");
            return render(&st, &headers, StatusCode::UNAUTHORIZED, &return_to, username, Some(FAILED)).await;
        }
    };
    for k in &keys[..2] {
        if let Err(e) = st.store.throttle_undo(k).await {
            tracing::warn!(error = %e, "could not give back a reserved login attempt");
        }
    }
    if let Err(e) = st.store.throttle_clear(&keys[2]).await {
        tracing::warn!(error = %e, "could not reset the login counter");
    }
    if let Err(e) = session::log_in(&session, &consumer.id, st.now()).await {
        return server_error_page(&st.settings, &e);
    }
    st.metrics.login(Login::Success);
    tracing::info!("login succeeded");
    if return_to.is_empty() {
        see_other("/login/done")
    } else {
        see_other(&return_to)
    }
}

pub async fn done(State(st): State<AppState>, session: Session) -> Response {
    match session::current(&st, &session).await {
        Ok(Some(_)) => message_page(&st.settings, "Signed in", "You are signed in. You can close this page."),
        Ok(None) => see_other("/login"),
        Err(e) => server_error_page(&st.settings, &e),
    }
}
