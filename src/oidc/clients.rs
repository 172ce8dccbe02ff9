//! Client registration rules: what a redirect URI may be, which response types and
//! authentication methods go together.

use crate::crypto::random_token;
use crate::store::{AuthMethod, NewClient};

pub const MAX_REDIRECT_URIS: usize = 32;
pub const MAX_URI_LEN: usize = 2048;
pub const RESPONSE_TYPES: &[&str] = &["code", "id_token", "id_token token"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    #[error("the client id must be 1 to 128 printable ASCII characters without spaces or colons")]
    BadClientId,
    #[error("redirect URI {0:?}: {1}")]
    BadRedirectUri(String, &'static str),
    #[error("at least one redirect URI is needed")]
    NoRedirectUri,
    #[error("at most {MAX_REDIRECT_URIS} redirect URIs per client")]
    TooManyRedirectUris,
    #[error("unknown response type {0:?}; use code, id_token or \"id_token token\"")]
    BadResponseType(String),
    #[error("the client secret must be at least 32 characters (leave it out to have a strong one generated)")]
    WeakSecret,
    #[error("a public client has no secret; give either --public or --client-secret, not both")]
    PublicWithSecret,
}

/// A redirect URI that may be registered: absolute, no fragment (RFC 6749 §3.1.2), not a
/// scheme that runs code or embeds content. Custom schemes (mobile apps) are allowed.
pub fn parse_redirect_uri(s: &str) -> Result<String, ClientError> {
    let bad = |why| ClientError::BadRedirectUri(s.to_string(), why);
    if s.is_empty() || s.len() > MAX_URI_LEN {
        return Err(bad("must be 1 to 2048 characters"));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    let url = url::Url::parse(s).map_err(|_| bad("must be an absolute URI such as https://app.example/callback"))?;
    if url.fragment().is_some() || s.contains('#') {
        return Err(bad("must not have a fragment"));
    }
    match url.scheme() {
        "javascript" | "data" | "vbscript" | "file" | "blob" | "about" => {
            return Err(bad("this scheme is not allowed"))
        }
        "http" | "https" => {
            // The WHATWG parser repairs "https:///x" into "https://x/"; the exact string is
            // what gets compared later, so it must be well-formed as written.
            let rest = &s[url.scheme().len()..];
            if !rest.starts_with("://") || rest[3..].starts_with('/') || url.host_str().is_none_or(str::is_empty) {
                return Err(bad("must name a host"));
            }
        }
        _ => {}
    }
    if url.cannot_be_a_base() && !s.contains(":/") {
        return Err(bad("must be an absolute URI such as https://app.example/callback"));
    }
    Ok(s.to_string())
}

pub fn validate_client_id(id: &str) -> Result<(), ClientError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(ClientError::BadClientId);
    }
    Ok(())
}

pub fn parse_response_type(s: &str) -> Result<String, ClientError> {
    let mut parts: Vec<&str> = s.split_whitespace().collect();
    parts.sort_unstable();
    let normal = parts.join(" ");
    if RESPONSE_TYPES.contains(&normal.as_str()) {
        Ok(normal)
    } else {
        Err(ClientError::BadResponseType(s.to_string()))
    }
}

/// A client secret with 256 bits of randomness.
pub fn generate_secret() -> String {
    random_token::<32>()
}

pub struct Registration {
    pub client_id: String,
    pub secret: Option<String>,
    pub public: bool,
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub response_types: Vec<String>,
    pub auth_method: Option<AuthMethod>,
}

/// Validates a registration; returns the client to store (secret still in clear, hashed by
/// the caller) and the secret to show once.
pub fn register(r: Registration) -> Result<(NewClient, Option<String>), ClientError> {
    validate_client_id(&r.client_id)?;
    if r.redirect_uris.is_empty() {
        return Err(ClientError::NoRedirectUri);
    }
    if r.redirect_uris.len() > MAX_REDIRECT_URIS || r.post_logout_redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(ClientError::TooManyRedirectUris);
    }
    let mut redirect_uris = Vec::new();
    for u in &r.redirect_uris {
        let u = parse_redirect_uri(u)?;
        if !redirect_uris.contains(&u) {
            redirect_uris.push(u);
        }
    }
    let post_logout =
        r.post_logout_redirect_uris.iter().map(|u| parse_redirect_uri(u)).collect::<Result<Vec<_>, _>>()?;
    let mut response_types = Vec::new();
    let given = if r.response_types.is_empty() { vec!["code".to_string()] } else { r.response_types };
    for t in given {
        let t = parse_response_type(&t)?;
        if !response_types.contains(&t) {
            response_types.push(t);
        }
    }
    if r.public && r.secret.is_some() {
        return Err(ClientError::PublicWithSecret);
    }
    let secret = if r.public {
        None
    } else {
        match r.secret {
            Some(s) if s.chars().count() < 32 => return Err(ClientError::WeakSecret),
            Some(s) => Some(s),
            None => Some(generate_secret()),
        }
    };
    let auth_method = if r.public { AuthMethod::None } else { r.auth_method.unwrap_or(AuthMethod::ClientSecretBasic) };
    let client = NewClient {
        client_id: r.client_id,
        secret_hash: None,
        name: r.name,
        redirect_uris,
        post_logout_redirect_uris: post_logout,
        response_types,
        auth_method,
        options: serde_json::json!({}),
    };
    Ok((client, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        assert!(parse_redirect_uri("https://app.example/cb").is_ok());
        assert!(parse_redirect_uri("http://localhost:3000/cb?x=1").is_ok());
        assert!(parse_redirect_uri("com.brand.app:/oauth2redirect").is_ok());
        assert!(parse_redirect_uri("https://liveperson.net").is_ok());
        for bad in [
            "/relative/path",
            "cb",
            "https://app.example/cb#frag",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,hi",
            "https://app.example/a b",
            "",
            "https:///nohost",
        ] {
            assert!(parse_redirect_uri(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn response_types_are_normalised() {
        assert_eq!(parse_response_type("token id_token").unwrap(), "id_token token");
        assert!(parse_response_type("token").is_err());
        assert!(parse_response_type("code id_token").is_err());
    }

    #[test]
    fn secrets_generated_when_absent_and_refused_when_weak() {
        let base = || Registration {
            client_id: "c".into(),
            secret: None,
            public: false,
            name: None,
            redirect_uris: vec!["https://a.example/cb".into()],
            post_logout_redirect_uris: vec![],
            response_types: vec![],
            auth_method: None,
        };
        let (c, s) = register(base()).unwrap();
        assert!(s.unwrap().len() >= 43);
        assert_eq!(c.response_types, vec!["code"]);
        assert_eq!(
            register(Registration { secret: Some("short".into()), ..base() }).unwrap_err(),
            ClientError::WeakSecret
        );
        let (c, s) = register(Registration { public: true, ..base() }).unwrap();
        assert!(s.is_none());
        assert_eq!(c.auth_method, AuthMethod::None);
        assert_eq!(register(Registration { client_id: "a b".into(), ..base() }).unwrap_err(), ClientError::BadClientId);
    }
}
