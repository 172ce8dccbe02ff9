//! The OpenID Connect protocol itself: no axum and no SQL here, only plain values in and
//! plain values out, so each rule is tested without HTTP.

pub mod clients;
pub mod discovery;
