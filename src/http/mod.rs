//! The HTTP surface: routing, middleware and thin handlers that parse a request, call the
//! protocol, and render the answer.

mod assets;
mod authorize;
mod client_ip;
mod health;
mod liveengage;
mod login;
mod logout;
pub mod pages;
mod respond;
pub mod server;
pub mod session;
mod token;
mod wellknown;

use axum::http::{header, HeaderName, HeaderValue, Request};
use axum::routing::{get, post};
use axum::Router;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::AppState;

/// Request bodies larger than this are refused with 413 before any handler runs.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A client has this long to send its whole body (slow-body clients get 408).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the whole request body up front, within `MAX_BODY_BYTES` (413) and
/// `BODY_READ_TIMEOUT` in total (408), so no handler waits on a client that trickles its
/// body a byte at a time.
async fn buffer_body(req: Request<axum::body::Body>, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES)).await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "request body too large or malformed").into_response()
        }
        Err(_) => {
            return (axum::http::StatusCode::REQUEST_TIMEOUT, "request body not received in time").into_response()
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// Counts every request under its route template (never the raw path).
async fn record(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = crate::metrics::route_label(req.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str()));
    let method = crate::metrics::method_label(req.method());
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    st.metrics.request(route, method, res.status().as_u16(), started.elapsed());
    res
}

/// No request runs longer than `request_timeout_secs`: if the database hangs, the client
/// gets 503 with `Retry-After` instead of waiting forever.
async fn deadline(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = std::time::Duration::from_secs(st.settings.request_timeout_secs);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!("request exceeded the time limit");
            let mut res = (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": "temporarily_unavailable", "error_description": "the request took too long; try again shortly"})),
            )
                .into_response();
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            res
        }
    }
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every request gets an id of ours; one sent by the client is not trusted (it would let
/// anyone write what they like into the logs).
#[derive(Clone, Default)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&crate::crypto::random_token::<12>()).ok().map(RequestId::new)
    }
}

fn metrics_routes() -> Router<AppState> {
    Router::new().route("/metrics", get(health::metrics))
}

/// `/metrics` alone, for `metrics_listen`.
pub fn metrics_router(state: AppState) -> Router {
    metrics_routes().with_state(state)
}

pub fn router(state: AppState) -> Router {
    // Routes a browser visits with its brand-idp session.
    let browser = Router::new()
        .route("/authorize", get(authorize::get).post(authorize::post))
        .route("/login", get(login::get).post(login::post))
        .route("/login/done", get(login::done))
        .route("/logout", get(logout::get).post(logout::post))
        .route("/logout/confirm", post(logout::confirm))
        .route("/liveengage/token", post(liveengage::token).options(liveengage::preflight))
        .route("/liveengage/identity", get(liveengage::identity).options(liveengage::preflight))
        .layer(session::layer(&state));
    let mut router = Router::new()
        .route("/.well-known/openid-configuration", get(wellknown::discovery))
        .route("/jwks.json", get(wellknown::jwks))
        .route("/token", post(token::token))
        .route("/userinfo", get(token::userinfo).post(token::userinfo))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/static/{file}", get(assets::asset))
        .route("/liveengage.js", get(liveengage::script))
        .merge(browser)
        .merge(if state.settings.metrics_listen.is_none() { metrics_routes() } else { Router::new() })
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state.clone(), deadline))
        .layer(axum::middleware::from_fn(buffer_body))
        // Outermost, so 408, 413 and deadline 503s are counted too.
        .layer(axum::middleware::from_fn_with_state(state.clone(), record))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ));
    if state.settings.is_https() {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    router
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), RandomRequestId))
        .layer(tower::util::MapRequestLayer::new(|mut req: Request<axum::body::Body>| {
            req.headers_mut().remove(&REQUEST_ID);
            req
        }))
}
