//! `POST /token` (RFC 6749 §3.2, §4.1.3, §5) and `GET|POST /userinfo` (OIDC Core §5.3,
//! RFC 6750 §2–3).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::oidc::error::{from_store, ErrorCode, OAuthError};
use crate::oidc::issue;
use crate::oidc::token::{credentials, single_params, CredentialSource};
use crate::store::{AuthMethod, StoreError};
use crate::AppState;

fn no_store(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// An error as the token endpoint reports it: JSON, 400, or 401 with `WWW-Authenticate`
/// for client authentication failures.
pub fn token_error(e: &OAuthError) -> Response {
    let status = match e.code {
        ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut res = (status, Json(json!({"error": e.code.as_str(), "error_description": e.description}))).into_response();
    no_store(&mut res);
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"brand-idp\""));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    res
}

fn content_type(headers: &HeaderMap) -> String {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase()
}

/// The request's parameters: a form body, or (older LiveEngage generations) a JSON object
/// with the same fields.
fn body_pairs(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let ct = content_type(headers);
    if ct.starts_with("application/x-www-form-urlencoded") {
        return Ok(url::form_urlencoded::parse(body).into_owned().collect());
    }
    if ct.starts_with("application/json") {
        let v: Value =
            serde_json::from_slice(body).map_err(|_| OAuthError::invalid_request("the JSON body is malformed"))?;
        let Value::Object(m) = v else {
            return Err(OAuthError::invalid_request("the JSON body must be an object"));
        };
        return m
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                _ => Err(OAuthError::invalid_request(format!("the parameter {k} must be a string"))),
            })
            .collect();
    }
    Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"))
}

pub async fn token(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match token_inner(&st, &headers, &body).await {
        Ok(v) => {
            let mut res = (StatusCode::OK, Json(v)).into_response();
            no_store(&mut res);
            res
        }
        Err(e) => token_error(&e),
    }
}

async fn token_inner(st: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<issue::TokenResponse, OAuthError> {
    let params = single_params(body_pairs(headers, body)?)?;
    let auth = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("\u{0}"));
    let creds = credentials(auth, &params)?;
    let client = match st.client(&creds.client_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => return Err(OAuthError::invalid_client("client authentication failed")),
        Err(e) => return Err(from_store(e)),
    };
    let authenticated = match (&client.secret_hash, &creds.secret) {
        // Public client: identified by client_id, bound by PKCE; a secret makes no sense.
        (None, None) => creds.source == CredentialSource::None,
        (Some(hash), Some(secret)) => st.secrets.verify_client_secret(secret, hash),
        _ => false,
    };
    if !authenticated {
        tracing::info!(client_id = %client.client_id, "client authentication failed");
        return Err(OAuthError::invalid_client("client authentication failed"));
    }
    // The registered method is the one to use; LiveEngage clients are tolerant because
    // LiveEngage's generations differ in where they put the credentials.
    let method_ok = match (client.auth_method, creds.source) {
        (AuthMethod::ClientSecretBasic, CredentialSource::Basic)
        | (AuthMethod::ClientSecretPost, CredentialSource::Body)
        | (AuthMethod::None, CredentialSource::None) => true,
        (AuthMethod::None, _) => false,
        _ => crate::liveengage::profile(&client).is_some(),
    };
    if !method_ok {
        return Err(OAuthError::invalid_client(format!(
            "this client is registered to authenticate with {}",
            client.auth_method.as_str()
        )));
    }
    match params.get("grant_type").map(String::as_str) {
        None | Some("") => return Err(OAuthError::invalid_request("grant_type is missing")),
        Some("authorization_code") => {}
        Some(_) => {
            return Err(OAuthError::new(ErrorCode::UnsupportedGrantType, "only authorization_code is supported"))
        }
    }
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    issue::exchange_code(st, &client, get("code"), get("redirect_uri"), get("code_verifier")).await
}

fn bearer_error(status: StatusCode, e: Option<&OAuthError>) -> Response {
    // RFC 6750 §3: no error code when the request carried no token at all.
    let challenge = match e {
        None => "Bearer realm=\"brand-idp\"".to_string(),
        Some(e) => format!(
            "Bearer realm=\"brand-idp\", error=\"{}\", error_description=\"{}\"",
            e.code.as_str(),
            e.description
        ),
    };
    let body = match e {
        None => json!({}),
        Some(e) => json!({"error": e.code.as_str(), "error_description": e.description}),
    };
    let mut res = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    no_store(&mut res);
    res
}

pub async fn userinfo(State(st): State<AppState>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    let header_token = match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(h)) => match h.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
                Some(t.trim().to_string())
            }
            _ => {
                return bearer_error(
                    StatusCode::UNAUTHORIZED,
                    Some(&OAuthError::new(ErrorCode::InvalidToken, "use the Bearer scheme")),
                )
            }
        },
        Some(Err(_)) => {
            return bearer_error(
                StatusCode::UNAUTHORIZED,
                Some(&OAuthError::new(ErrorCode::InvalidToken, "malformed header")),
            )
        }
    };
    let body_token =
        if method == Method::POST && content_type(&headers).starts_with("application/x-www-form-urlencoded") {
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
            let mut tokens = pairs.into_iter().filter(|(k, _)| k == "access_token").map(|(_, v)| v);
            let first = tokens.next();
            if tokens.next().is_some() {
                return bearer_error(
                    StatusCode::BAD_REQUEST,
                    Some(&OAuthError::invalid_request("access_token appears more than once")),
                );
            }
            first
        } else {
            None
        };
    let token = match (header_token, body_token) {
        (Some(_), Some(_)) => {
            return bearer_error(
                StatusCode::BAD_REQUEST,
                Some(&OAuthError::invalid_request("send the token in one place only")),
            )
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return bearer_error(StatusCode::UNAUTHORIZED, None),
    };
    match issue::userinfo(&st, &token).await {
        Ok(v) => {
            let mut res = (StatusCode::OK, Json(v)).into_response();
            no_store(&mut res);
            res
        }
        Err(e) if e.code == ErrorCode::InvalidToken => bearer_error(StatusCode::UNAUTHORIZED, Some(&e)),
        Err(e) => token_error(&e),
    }
}
