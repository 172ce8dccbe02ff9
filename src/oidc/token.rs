//! Token requests (RFC 6749 §3.2, §4.1.3, §2.3.1; RFC 7636 §4.5–4.6): client credentials
//! from the header or the body, and PKCE verification.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::crypto::{b64url, ct_eq, sha256};
use crate::oidc::error::OAuthError;

pub const MAX_VERIFIER_LEN: usize = 128;

/// A token request's body, each parameter at most once.
pub fn single_params(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, OAuthError> {
    let mut m = HashMap::new();
    if pairs.len() > 32 {
        return Err(OAuthError::invalid_request("too many parameters"));
    }
    for (k, v) in pairs {
        if v.len() > 8192 {
            return Err(OAuthError::invalid_request(format!("the parameter {k} is too long")));
        }
        if m.insert(k.clone(), v).is_some() {
            return Err(OAuthError::invalid_request(format!("the parameter {k} appears more than once")));
        }
    }
    Ok(m)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Basic,
    Body,
    /// Only a client_id: a public client.
    None,
}

/// Who the caller says it is. The secret, when present, is checked by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub client_id: String,
    pub secret: Option<String>,
    pub source: CredentialSource,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("source", &self.source)
            .finish()
    }
}

fn form_decode(s: &str) -> Option<String> {
    // RFC 6749 §2.3.1: id and secret are application/x-www-form-urlencoded before Basic.
    let plus_as_space = s.replace('+', " ");
    percent_decode(&plus_as_space)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let h = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads client credentials from `Authorization: Basic` and/or the body. Credentials in
/// both places must agree (older LiveEngage generations send both); anything else that is
/// ambiguous is refused.
pub fn credentials(authorization: Option<&str>, body: &HashMap<String, String>) -> Result<Credentials, OAuthError> {
    let body_id = body.get("client_id").filter(|v| !v.is_empty());
    let body_secret = body.get("client_secret").filter(|v| !v.is_empty());
    let basic = match authorization {
        None => None,
        Some(h) => {
            let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::invalid_client("unsupported authentication scheme; use Basic"));
            }
            let decoded = STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            let (id, secret) =
                decoded.split_once(':').ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            let id = form_decode(id).ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            let secret =
                form_decode(secret).ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            Some((id, secret))
        }
    };
    match basic {
        Some((id, secret)) => {
            if body_id.is_some_and(|b| *b != id) || body_secret.is_some_and(|b| *b != secret) {
                return Err(OAuthError::invalid_client("the credentials in the header and in the body disagree"));
            }
            Ok(Credentials { client_id: id, secret: Some(secret), source: CredentialSource::Basic })
        }
        None => {
            let id = body_id.ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
            Ok(Credentials {
                client_id: id.clone(),
                secret: body_secret.cloned(),
                source: if body_secret.is_some() { CredentialSource::Body } else { CredentialSource::None },
            })
        }
    }
}

/// RFC 7636 §4.6, with RFC 9700 §2.1.1's downgrade rule: a verifier is accepted only if
/// the code was bound to a challenge.
pub fn verify_pkce(challenge: Option<&str>, verifier: Option<&str>, max_len: usize) -> Result<(), OAuthError> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => {
            Err(OAuthError::invalid_grant("code_verifier sent for a code issued without code_challenge"))
        }
        (Some(_), None) => Err(OAuthError::invalid_grant("code_verifier is required for this code")),
        (Some(c), Some(v)) => {
            let well_formed = (43..=max_len).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !well_formed {
                return Err(OAuthError::invalid_grant("code_verifier is malformed"));
            }
            if ct_eq(b64url(&sha256(v.as_bytes())).as_bytes(), c.as_bytes()) {
                Ok(())
            } else {
                Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::error::ErrorCode;

    fn body(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        // id "a b:c" and secret "p%w+d" form-encoded, then base64.
        let raw = "a+b%3Ac:p%25w%2Bd";
        let h = format!("Basic {}", STANDARD.encode(raw));
        let c = credentials(Some(&h), &body(&[])).unwrap();
        assert_eq!(c.client_id, "a b:c");
        assert_eq!(c.secret.as_deref(), Some("p%w+d"));
        assert_eq!(c.source, CredentialSource::Basic);
    }

    #[test]
    fn header_and_body_must_agree() {
        let h = format!("Basic {}", STANDARD.encode("rp:s"));
        assert!(credentials(Some(&h), &body(&[("client_id", "rp"), ("client_secret", "s")])).is_ok());
        let e = credentials(Some(&h), &body(&[("client_secret", "other")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidClient);
        assert!(credentials(Some(&h), &body(&[("client_id", "other")])).is_err());
        assert!(credentials(Some("Basic !!!"), &body(&[])).is_err());
        assert!(credentials(Some("Bearer x"), &body(&[])).is_err());
        assert!(credentials(None, &body(&[])).is_err());
        let c = credentials(None, &body(&[("client_id", "pub")])).unwrap();
        assert_eq!(c.source, CredentialSource::None);
    }

    #[test]
    fn pkce_rfc7636_appendix_b() {
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let c = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(verify_pkce(Some(c), Some(v), 128).is_ok());
        assert!(verify_pkce(Some(c), Some(&v.replace('d', "e")), 128).is_err());
        assert!(verify_pkce(Some(c), None, 128).is_err());
        assert!(verify_pkce(None, Some(v), 128).is_err());
        assert!(verify_pkce(None, None, 128).is_ok());
        let long = "a".repeat(200);
        assert!(verify_pkce(Some(&b64url(&sha256(long.as_bytes()))), Some(&long), 128).is_err());
        assert!(verify_pkce(Some(&b64url(&sha256(long.as_bytes()))), Some(&long), 512).is_ok());
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let e = single_params(vec![("code".into(), "a".into()), ("code".into(), "b".into())]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }
}
