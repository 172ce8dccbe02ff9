//! Server-rendered pages (askama) and the headers every page carries.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::config::Settings;

pub struct Brand {
    pub name: String,
    pub logo_url: Option<String>,
}

impl Brand {
    pub fn from(s: &Settings) -> Brand {
        Brand { name: s.brand_name.clone(), logo_url: s.brand_logo_url.clone() }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub brand: Brand,
    pub csrf: String,
    pub return_to: String,
    pub username: String,
    pub client_name: Option<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub brand: Brand,
    pub title: String,
    pub message: String,
    pub code: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub brand: Brand,
    pub title: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogoutPage {
    pub brand: Brand,
    pub csrf: String,
    pub client_name: Option<String>,
    pub carry: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "form_post.html")]
pub struct FormPostPage {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

/// No inline script or style anywhere; pages may not be framed (clickjacking).
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; \
                            frame-ancestors 'none'; base-uri 'none'";

/// Renders a page with the browser-facing security headers.
pub fn html(status: StatusCode, page: &impl Template) -> Response {
    html_with_csp(status, page, PAGE_CSP)
}

pub fn html_with_csp(status: StatusCode, page: &impl Template, csp: &str) -> Response {
    match page.render() {
        Ok(body) => {
            let mut res = (status, body).into_response();
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            h.insert("x-frame-options", HeaderValue::from_static("DENY"));
            if let Ok(v) = HeaderValue::from_str(csp) {
                h.insert(header::CONTENT_SECURITY_POLICY, v);
            }
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub fn error_page(s: &Settings, status: StatusCode, title: &str, message: &str, code: Option<&str>) -> Response {
    html(
        status,
        &ErrorPage {
            brand: Brand::from(s),
            title: title.into(),
            message: message.into(),
            code: code.map(str::to_string),
        },
    )
}

pub fn message_page(s: &Settings, title: &str, message: &str) -> Response {
    html(StatusCode::OK, &MessagePage { brand: Brand::from(s), title: title.into(), message: message.into() })
}

/// The page for a failure inside brand-idp (database down, bug): says what the user can do,
/// never why.
pub fn server_error_page(s: &Settings, err: &crate::oidc::error::OAuthError) -> Response {
    use crate::oidc::error::ErrorCode;
    if err.code == ErrorCode::TemporarilyUnavailable {
        let mut res = error_page(
            s,
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "Signing in is not possible right now. Please try again in a moment.",
            Some("temporarily_unavailable"),
        );
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        res
    } else {
        error_page(
            s,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Please try again.",
            Some("server_error"),
        )
    }
}
