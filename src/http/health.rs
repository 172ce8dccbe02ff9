//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::AppState;

/// Prometheus metrics of this instance, plus the pool and the signing keys read now.
pub async fn metrics(State(state): State<AppState>) -> Response {
    use crate::metrics::Gauge;
    let (in_use, size) = state.store.pool_usage();
    let mut gauges = vec![
        Gauge {
            name: "brand_idp_db_pool_connections",
            help: "Database connections, by state.",
            labels: "state=\"in_use\"".into(),
            value: in_use as f64,
        },
        Gauge {
            name: "brand_idp_db_pool_connections",
            help: "Database connections, by state.",
            labels: "state=\"idle\"".into(),
            value: size.saturating_sub(in_use) as f64,
        },
        Gauge {
            name: "brand_idp_db_pool_max_connections",
            help: "Configured pool size.",
            labels: String::new(),
            value: state.settings.db_max_connections as f64,
        },
    ];
    let now = state.now();
    if let Ok(Ok(keys)) = tokio::time::timeout(Duration::from_secs(2), state.store.published_keys(now)).await {
        for k in keys {
            gauges.push(Gauge {
                name: "brand_idp_signing_key_age_seconds",
                help: "Age of each published signing key, by state (kid: the key id).",
                labels: format!("kid=\"{}\",state=\"{}\"", k.kid, k.state.as_str()),
                value: (now - k.created_at) as f64,
            });
        }
    }
    gauges.push(Gauge {
        name: "brand_idp_signing_key_loaded",
        help: "1 when a signing key is loaded.",
        labels: String::new(),
        value: if state.keys.signer().is_some() { 1.0 } else { 0.0 },
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render(&gauges))
        .into_response()
}

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
