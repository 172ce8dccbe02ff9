//! Sending results back to a client's redirect URI, in the response mode the request uses
//! (OAuth 2.0 Multiple Response Types §2, Form Post Response Mode). URLs are built with
//! `url::Url`, never by string formatting, so `state` survives any characters.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::pages::{html_with_csp, FormPostPage};
use crate::oidc::authorize::ResponseMode;
use crate::oidc::error::OAuthError;

/// Redirects (or form-posts) `params` to `redirect_uri`. The redirect URI was matched
/// against the client's registration before this is called.
pub fn to_client(redirect_uri: &str, mode: ResponseMode, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        // Registered URIs are validated at registration; this is a corrupt registration.
        tracing::error!("registered redirect URI does not parse");
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    };
    match mode {
        ResponseMode::Query => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            found(url.as_str())
        }
        ResponseMode::Fragment => {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in params {
                ser.append_pair(k, v);
            }
            url.set_fragment(Some(&ser.finish()));
            found(url.as_str())
        }
        ResponseMode::FormPost => {
            let page = FormPostPage {
                action: redirect_uri.to_string(),
                fields: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            };
            // The page posts to the client, so form-action must allow exactly that origin.
            let origin = url.origin().ascii_serialization();
            let target = if origin == "null" { redirect_uri.to_string() } else { origin };
            let csp = format!(
                "default-src 'none'; script-src 'self'; form-action {target}; frame-ancestors 'none'; base-uri 'none'"
            );
            html_with_csp(StatusCode::OK, &page, &csp)
        }
    }
}

fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut res = StatusCode::FOUND.into_response();
            res.headers_mut().insert(header::LOCATION, v);
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
    }
}

/// An authorization error sent to the client (RFC 6749 §4.1.2.1), with `state` unchanged
/// and `iss` (RFC 9207).
pub fn error_to_client(
    redirect_uri: &str,
    mode: ResponseMode,
    err: &OAuthError,
    state: Option<&str>,
    issuer: &str,
) -> Response {
    let mut params: Vec<(&str, &str)> = vec![("error", err.code.as_str()), ("error_description", &err.description)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", issuer));
    to_client(redirect_uri, mode, &params)
}

/// A local redirect after a form post (303: the browser follows with GET).
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut res = StatusCode::SEE_OTHER.into_response();
            res.headers_mut().insert(header::LOCATION, v);
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(_) => (StatusCode::BAD_REQUEST, "bad redirect").into_response(),
    }
}
