//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::AppState;

/// The process is up and answering.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready to serve logins: the database answers (within two seconds) and a signing key is
/// loaded. 503 with `Retry-After` otherwise.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let db_ok = matches!(tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await, Ok(Ok(())));
    let keys_ok = state.keys.signer().is_some();
    let body = json!({
        "database": if db_ok { "ok" } else { "unavailable" },
        "signing_key": if keys_ok { "ok" } else { "missing" },
    });
    if db_ok && keys_ok {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], Json(body)).into_response()
    }
}
