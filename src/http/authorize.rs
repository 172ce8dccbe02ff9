//! `GET|POST /authorize`: the authorization endpoint.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use tower_sessions::Session;

use crate::http::pages::{error_page, server_error_page};
use crate::http::respond::{error_to_client, see_other, to_client};
use crate::http::session;
use crate::oidc::authorize::{self, ClientPolicy, Params, SessionDecision, UntrustedError};
use crate::oidc::error::{from_store, ErrorCode, OAuthError};
use crate::oidc::{hint, issue};
use crate::store::StoreError;
use crate::AppState;

pub async fn get(State(st): State<AppState>, session: Session, RawQuery(q): RawQuery) -> Response {
    let pairs = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect();
    handle(&st, &session, pairs).await
}

pub async fn post(State(st): State<AppState>, session: Session, headers: HeaderMap, body: Bytes) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form {
        return untrusted(
            &st,
            &UntrustedError::Malformed("The request must be sent as a form (application/x-www-form-urlencoded)."),
        );
    }
    // A cross-site form post does not carry the SameSite=Lax session cookie; a top-level GET
    // does. Without the cookie, continue as the equivalent GET so a logged-in consumer is seen.
    if session::cookie(&headers, session::session_cookie_name(&st)).is_none() {
        return see_other(&format!("/authorize?{}", String::from_utf8_lossy(&body)));
    }
    let pairs = url::form_urlencoded::parse(&body).into_owned().collect();
    handle(&st, &session, pairs).await
}

fn untrusted(st: &AppState, e: &UntrustedError) -> Response {
    error_page(
        &st.settings,
        StatusCode::BAD_REQUEST,
        "This sign-in request cannot be completed",
        e.message(),
        Some("invalid_request"),
    )
}

/// Per-client validation allowances from the client's options.
pub fn policy(client: &crate::store::Client) -> ClientPolicy {
    ClientPolicy { nonce_optional: client.options.get("nonce_optional").and_then(|v| v.as_bool()).unwrap_or(false) }
}

async fn handle(st: &AppState, session: &Session, pairs: Vec<(String, String)>) -> Response {
    let params = match Params::from_pairs(pairs) {
        Ok(p) => p,
        Err(m) => {
            return untrusted(
                st,
                &UntrustedError::Malformed(if m.is_empty() {
                    "Malformed request."
                } else {
                    "The request has too many parameters."
                }),
            )
        }
    };
    // Step 1: who is asking, and is the return address theirs? Until both are known,
    // errors are shown here and never redirected.
    let client_id = match authorize::client_id(&params) {
        Ok(c) => c,
        Err(e) => return untrusted(st, &e),
    };
    let client = match st.client(client_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => return untrusted(st, &UntrustedError::UnknownClient),
        Err(e) => return server_error_page(&st.settings, &from_store(e)),
    };
    let le = crate::liveengage::profile(&client);
    let redirect_uri = match authorize::trusted_redirect_uri(&params, &client, |u| {
        le.as_ref().is_some_and(|p| p.matches_window_url(u))
    }) {
        Ok(r) => r.to_string(),
        Err(e) => return untrusted(st, &e),
    };
    // Step 2: everything else; errors go back to the client.
    let state = params.get("state").filter(|s| s.len() <= authorize::MAX_STATE_LEN);
    let issuer = st.settings.issuer.as_str();
    let mode = authorize::error_mode(&params);
    let fail = |e: &OAuthError| error_to_client(&redirect_uri, mode, e, state, issuer);
    let req = match authorize::validate(&params, &client, &redirect_uri, policy(&client)) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let keys = st.keys.get();
    let hint_subject = match &req.id_token_hint {
        None => None,
        Some(h) => match hint::verify(h, &keys, issuer) {
            Some(h) => Some(h.subject),
            None => {
                return fail(&OAuthError::invalid_request("id_token_hint is not a valid id_token from this server"))
            }
        },
    };
    let current = match session::current(st, session).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let now = st.now();
    match authorize::decide(&req, current.as_ref().map(|(l, _)| l), hint_subject.as_deref(), now) {
        SessionDecision::Fail(code) => {
            let msg = match code {
                ErrorCode::LoginRequired => "the consumer must log in, and prompt=none forbids asking",
                _ => "interaction is required",
            };
            fail(&OAuthError::new(code, msg))
        }
        SessionDecision::Login => {
            let return_to = format!("/authorize?{}", authorize::return_query(&params));
            let mut login = url::form_urlencoded::Serializer::for_suffix(String::from("/login?"), 7);
            login.append_pair("return_to", &return_to);
            see_other(&login.finish())
        }
        SessionDecision::Proceed => {
            let (logged_in, consumer) = current.expect("Proceed implies a session");
            match issue::authorization_response(st, &client, &req, &consumer, logged_in.auth_time).await {
                Ok(mut out) => {
                    if let Some(s) = &req.state {
                        out.push(("state", s.clone()));
                    }
                    out.push(("iss", issuer.to_string()));
                    let pairs: Vec<(&str, &str)> = out.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    to_client(&redirect_uri, req.response_mode, &pairs)
                }
                Err(e) => error_to_client(&redirect_uri, req.response_mode, &e, req.state.as_deref(), issuer),
            }
        }
    }
}
