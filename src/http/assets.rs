//! Static assets, compiled into the binary.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;

const STYLE: &str = include_str!("../../static/style.css");
const FORM_POST_JS: &str = include_str!("../../static/form_post.js");

pub async fn asset(State(st): State<AppState>, Path(file): Path<String>) -> Response {
    let (body, ctype): (String, &str) = match file.as_str() {
        "style.css" => (STYLE.to_string(), "text/css; charset=utf-8"),
        // The brand colour, validated as #rrggbb at start-up.
        "brand.css" => {
            (format!(":root {{ --brand: {}; }}\n", st.settings.brand_primary_color), "text/css; charset=utf-8")
        }
        "form_post.js" => (FORM_POST_JS.to_string(), "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(ctype)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        ],
        body,
    )
        .into_response()
}
