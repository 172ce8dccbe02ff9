//! Discovery and JWKS: served from bodies serialised ahead of time, with validators so
//! relying parties that poll them cost almost nothing.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;

pub async fn discovery(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
        ],
        state.discovery.clone(),
    )
        .into_response()
}

pub async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let set = state.keys.get();
    let etag = HeaderValue::from_str(&set.jwks_etag).expect("etag is ASCII");
    let cache =
        HeaderValue::from_str(&format!("public, max-age={}", state.settings.jwks_max_age_secs)).expect("ASCII header");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == set.jwks_etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (header::CACHE_CONTROL, cache)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json")),
            (header::CACHE_CONTROL, cache),
            (header::ETAG, etag),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
        ],
        set.jwks_body.clone(),
    )
        .into_response()
}
