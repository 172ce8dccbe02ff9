//! The embedded window's side of brand-idp: `/liveengage.js` for the brand's pages, and the
//! endpoints it calls with the consumer's brand-idp session (CORS with credentials, only
//! from the client's registered web origins).
//!
//! Cross-site request forgery: `/liveengage/token` accepts only `application/json` bodies
//! from a registered `Origin`, so a browser always sends a CORS preflight first, which
//! brand-idp answers only for registered origins.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tower_sessions::Session;

use crate::http::session;
use crate::liveengage::{self, Flow};
use crate::oidc::error::{from_store, ErrorCode, OAuthError};
use crate::oidc::issue;
use crate::store::{Client, StoreError};
use crate::AppState;

const SCRIPT: &str = include_str!("../../static/liveengage.js");

pub async fn script(State(st): State<AppState>) -> Response {
    let issuer = serde_json::to_string(&st.settings.issuer).expect("JSON string");
    let body = SCRIPT.replace("\"__BRAND_IDP_ISSUER__\"", &issuer);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        ],
        body,
    )
        .into_response()
}

fn issuer_origin(st: &AppState) -> String {
    url::Url::parse(&st.settings.issuer).map(|u| u.origin().ascii_serialization()).unwrap_or_default()
}

/// The request's Origin if the client registered it (or it is brand-idp's own).
fn allowed_origin(st: &AppState, client: &Client, headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let profile = liveengage::profile(client)?;
    (profile.web_origins.iter().any(|o| o == origin) || origin == issuer_origin(st)).then(|| origin.to_string())
}

fn cors(mut res: Response, origin: &str) -> Response {
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn error(status: StatusCode, e: &OAuthError) -> Response {
    (status, Json(json!({"error": e.code.as_str(), "error_description": e.description}))).into_response()
}

#[derive(Deserialize)]
pub struct ClientQuery {
    client_id: Option<String>,
}

async fn liveengage_client(st: &AppState, id: Option<&str>) -> Result<std::sync::Arc<Client>, Response> {
    let Some(id) = id.filter(|i| !i.is_empty() && i.len() <= 256) else {
        return Err(error(StatusCode::BAD_REQUEST, &OAuthError::invalid_request("client_id is missing")));
    };
    match st.client(id).await {
        Ok(c) if liveengage::profile(&c).is_some() => Ok(c),
        Ok(_) | Err(StoreError::NotFound) => Err(error(
            StatusCode::BAD_REQUEST,
            &OAuthError::new(ErrorCode::UnauthorizedClient, "not a LiveEngage client"),
        )),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, &from_store(e))),
    }
}

/// CORS preflight for the two endpoints.
pub async fn preflight(State(st): State<AppState>, headers: HeaderMap, Query(q): Query<ClientQuery>) -> Response {
    // The preflight carries no body; the client comes from the query (identity) or is
    // looked up from any client that registered the origin.
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("");
    let allowed = match q.client_id.as_deref() {
        Some(id) => match liveengage_client(&st, Some(id)).await {
            Ok(c) => allowed_origin(&st, &c, &headers).is_some(),
            Err(_) => false,
        },
        None => match st.store.list_clients().await {
            Ok(list) => list.iter().any(|c| allowed_origin(&st, c, &headers).is_some()),
            Err(_) => false,
        },
    };
    if !allowed {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut res = cors(StatusCode::NO_CONTENT.into_response(), origin);
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    res
}

#[derive(Deserialize)]
struct TokenRequest {
    client_id: String,
    flow: Option<Flow>,
    code_challenge: Option<String>,
    redirect_uri: Option<String>,
}

/// Mints a fresh id_token or code for the consumer logged in with this browser session.
pub async fn token(State(st): State<AppState>, session: Session, headers: HeaderMap, body: Bytes) -> Response {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    if !json_body {
        return error(StatusCode::BAD_REQUEST, &OAuthError::invalid_request("the body must be application/json"));
    }
    let Ok(req) = serde_json::from_slice::<TokenRequest>(&body) else {
        return error(StatusCode::BAD_REQUEST, &OAuthError::invalid_request("the JSON body is malformed"));
    };
    let client = match liveengage_client(&st, Some(&req.client_id)).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let Some(origin) = allowed_origin(&st, &client, &headers) else {
        tracing::info!(client_id = %client.client_id, "embedded-window request from an unregistered origin");
        return error(
            StatusCode::FORBIDDEN,
            &OAuthError::new(ErrorCode::AccessDenied, "this origin is not registered"),
        );
    };
    let current = match session::current(&st, &session).await {
        Ok(c) => c,
        Err(e) => return cors(error(StatusCode::SERVICE_UNAVAILABLE, &e), &origin),
    };
    let Some((logged_in, consumer)) = current else {
        return cors(
            error(StatusCode::UNAUTHORIZED, &OAuthError::new(ErrorCode::LoginRequired, "nobody is logged in")),
            &origin,
        );
    };
    let profile = liveengage::profile(&client).expect("checked above");
    let flow = req.flow.unwrap_or(profile.flow);
    match issue::embedded(
        &st,
        &client,
        &consumer,
        logged_in.auth_time,
        flow,
        req.code_challenge.as_deref().filter(|c| !c.is_empty()),
        req.redirect_uri.as_deref().filter(|r| !r.is_empty()),
    )
    .await
    {
        Ok(out) => cors((StatusCode::OK, Json(out)).into_response(), &origin),
        Err(e) => {
            let status = match e.code {
                ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            cors(error(status, &e), &origin)
        }
    }
}

/// `lpTag.identities`: `{iss, acr, sub}` of the logged-in consumer, or `{"sub": null}`.
pub async fn identity(
    State(st): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<ClientQuery>,
) -> Response {
    let client = match liveengage_client(&st, q.client_id.as_deref()).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    // Browsers send no Origin on a same-origin GET: that is a page on brand-idp itself.
    let origin = match headers.get(header::ORIGIN) {
        None => issuer_origin(&st),
        Some(_) => match allowed_origin(&st, &client, &headers) {
            Some(o) => o,
            None => {
                return error(
                    StatusCode::FORBIDDEN,
                    &OAuthError::new(ErrorCode::AccessDenied, "this origin is not registered"),
                )
            }
        },
    };
    let body = match session::current(&st, &session).await {
        Ok(Some((l, _))) => json!({"iss": st.settings.issuer, "acr": "loa1", "sub": l.subject}),
        Ok(None) => json!({"sub": null}),
        Err(e) => return cors(error(StatusCode::SERVICE_UNAVAILABLE, &e), &origin),
    };
    cors((StatusCode::OK, Json(body)).into_response(), &origin)
}
