//! The protocol's error vocabulary: exactly the codes of RFC 6749 §4.1.2.1, §4.2.2.1 and
//! §5.2, OpenID Connect Core §3.1.2.6 and RFC 6750 §3.1. Descriptions are our own fixed
//! sentences; they never carry internal error text or secrets.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    UnauthorizedClient,
    AccessDenied,
    UnsupportedResponseType,
    InvalidScope,
    ServerError,
    TemporarilyUnavailable,
    InteractionRequired,
    LoginRequired,
    AccountSelectionRequired,
    ConsentRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    RegistrationNotSupported,
    InvalidClient,
    InvalidGrant,
    UnsupportedGrantType,
    InvalidToken,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidRequest => "invalid_request",
            UnauthorizedClient => "unauthorized_client",
            AccessDenied => "access_denied",
            UnsupportedResponseType => "unsupported_response_type",
            InvalidScope => "invalid_scope",
            ServerError => "server_error",
            TemporarilyUnavailable => "temporarily_unavailable",
            InteractionRequired => "interaction_required",
            LoginRequired => "login_required",
            AccountSelectionRequired => "account_selection_required",
            ConsentRequired => "consent_required",
            RequestNotSupported => "request_not_supported",
            RequestUriNotSupported => "request_uri_not_supported",
            RegistrationNotSupported => "registration_not_supported",
            InvalidClient => "invalid_client",
            InvalidGrant => "invalid_grant",
            UnsupportedGrantType => "unsupported_grant_type",
            InvalidToken => "invalid_token",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: Cow<'static, str>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> OAuthError {
        OAuthError { code, description: description.into() }
    }
    pub fn invalid_request(d: impl Into<Cow<'static, str>>) -> OAuthError {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_grant(d: impl Into<Cow<'static, str>>) -> OAuthError {
        Self::new(ErrorCode::InvalidGrant, d)
    }
    pub fn invalid_client(d: impl Into<Cow<'static, str>>) -> OAuthError {
        Self::new(ErrorCode::InvalidClient, d)
    }
    pub fn server_error() -> OAuthError {
        Self::new(ErrorCode::ServerError, "the server could not complete the request")
    }
    pub fn unavailable() -> OAuthError {
        Self::new(ErrorCode::TemporarilyUnavailable, "the service is temporarily unavailable; try again shortly")
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

/// Maps a storage failure to the protocol: an unreachable database is a temporary
/// condition the client may retry; anything else is a server error. The cause is logged
/// here, once, and never sent to the client.
pub fn from_store(e: crate::store::StoreError) -> OAuthError {
    match e {
        crate::store::StoreError::Unavailable(inner) => {
            tracing::warn!(error = %inner, "database unavailable");
            OAuthError::unavailable()
        }
        other => {
            tracing::error!(error = %other, source = ?std::error::Error::source(&other).map(|s| s.to_string()), "storage error");
            OAuthError::server_error()
        }
    }
}
