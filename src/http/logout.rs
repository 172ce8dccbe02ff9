//! `GET|POST /logout`: RP-Initiated Logout 1.0. With a valid `id_token_hint` for the
//! current consumer the session ends at once; otherwise the consumer confirms first, so a
//! third-party page cannot log people out.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use tower_sessions::Session;

use crate::http::pages::{error_page, html, message_page, server_error_page, Brand, LogoutPage};
use crate::http::respond::to_client;
use crate::http::session::{self, csrf_cookie_header, csrf_for, csrf_ok};
use crate::oidc::authorize::{Params, ResponseMode};
use crate::oidc::error::from_store;
use crate::oidc::hint;
use crate::store::{Client, StoreError};
use crate::AppState;

const CARRIED: &[&str] = &["id_token_hint", "post_logout_redirect_uri", "state", "client_id", "ui_locales"];

fn form_pairs(headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if form {
        url::form_urlencoded::parse(body).into_owned().collect()
    } else {
        Vec::new()
    }
}

pub async fn get(State(st): State<AppState>, session: Session, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let pairs = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect();
    handle(&st, &session, &headers, pairs, false).await
}

pub async fn post(State(st): State<AppState>, session: Session, headers: HeaderMap, body: Bytes) -> Response {
    // A cross-site form post does not carry the SameSite=Lax session cookie: continue as the
    // equivalent GET, which does, so the session really ends.
    if session::cookie(&headers, session::session_cookie_name(&st)).is_none() {
        let mut ser = url::form_urlencoded::Serializer::for_suffix(String::from("/logout?"), 8);
        ser.extend_pairs(form_pairs(&headers, &body));
        return crate::http::respond::see_other(&ser.finish());
    }
    handle(&st, &session, &headers, form_pairs(&headers, &body), false).await
}

pub async fn confirm(State(st): State<AppState>, session: Session, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = form_pairs(&headers, &body);
    let token = pairs.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.clone());
    if !csrf_ok(&st, &headers, token.as_deref()) {
        return error_page(
            &st.settings,
            StatusCode::FORBIDDEN,
            "Sign-out failed",
            "This page expired. Please try again.",
            None,
        );
    }
    let pairs = pairs.into_iter().filter(|(k, _)| k != "csrf").collect();
    handle(&st, &session, &headers, pairs, true).await
}

fn bad(st: &AppState, msg: &str) -> Response {
    error_page(&st.settings, StatusCode::BAD_REQUEST, "Sign-out request not valid", msg, Some("invalid_request"))
}

async fn handle(
    st: &AppState,
    session: &Session,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
    confirmed: bool,
) -> Response {
    let Ok(p) = Params::from_pairs(pairs) else {
        return bad(st, "The request has too many parameters.");
    };
    if CARRIED.iter().any(|k| p.is_duplicated(k)) {
        return bad(st, "The request repeats a parameter.");
    }
    let keys = st.keys.get();
    let hint = match p.get("id_token_hint") {
        None => None,
        Some(h) => match hint::verify(h, &keys, &st.settings.issuer) {
            Some(h) => Some(h),
            None => return bad(st, "The id_token_hint is not a valid token from this server."),
        },
    };
    let client_id = match (p.get("client_id"), &hint) {
        (Some(c), Some(h)) if c != h.audience => return bad(st, "client_id does not match the id_token_hint."),
        (Some(c), _) => Some(c.to_string()),
        (None, Some(h)) => Some(h.audience.clone()),
        (None, None) => None,
    };
    let client: Option<Client> = match &client_id {
        None => None,
        Some(id) => match st.store.client(id).await {
            Ok(c) => Some(c),
            Err(StoreError::NotFound) => return bad(st, "The application is not registered here."),
            Err(e) => return server_error_page(&st.settings, &from_store(e)),
        },
    };
    let redirect = match p.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => match &client {
            Some(c) if c.post_logout_redirect_uris.iter().any(|r| r == uri) => Some(uri.to_string()),
            Some(_) => {
                return bad(st, "The address to return to after sign-out is not registered for this application.")
            }
            None => return bad(st, "post_logout_redirect_uri needs an id_token_hint or a client_id."),
        },
    };
    let current = match session::current(st, session).await {
        Ok(c) => c,
        Err(e) => return server_error_page(&st.settings, &e),
    };
    let hint_matches = match (&hint, &current) {
        (Some(h), Some((l, _))) => h.subject == l.subject,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if current.is_some() && !hint_matches && !confirmed {
        let csrf = csrf_for(st, headers);
        let carry = CARRIED.iter().filter_map(|k| p.get(k).map(|v| (k.to_string(), v.to_string()))).collect();
        let page = LogoutPage {
            brand: Brand::from(&st.settings),
            csrf: csrf.token,
            client_name: client.as_ref().map(|c| c.name.clone().unwrap_or_else(|| c.client_id.clone())),
            carry,
        };
        let mut res = html(StatusCode::OK, &page);
        if let Some(c) = csrf.new_cookie {
            if let Ok(v) = HeaderValue::from_str(&csrf_cookie_header(st, &c)) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        return res;
    }
    if current.is_some() {
        if let Err(e) = session::log_out(session).await {
            return server_error_page(&st.settings, &e);
        }
        tracing::info!("logged out");
    }
    match redirect {
        Some(uri) => {
            let mut params = Vec::new();
            if let Some(s) = p.get("state") {
                params.push(("state", s));
            }
            to_client(&uri, ResponseMode::Query, &params)
        }
        None => message_page(&st.settings, "Signed out", "You are signed out."),
    }
}
