//! The HTTP surface: routing, middleware and thin handlers that parse a request, call the
//! protocol, and render the answer.

mod assets;
mod authorize;
mod health;
mod liveengage;
mod login;
mod logout;
pub mod pages;
mod respond;
pub mod session;
mod token;
mod wellknown;

use axum::http::{header, HeaderName, HeaderValue, Request};
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::AppState;

/// Request bodies larger than this are refused with 413 before any handler runs.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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
        .with_state(state.clone())
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
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
