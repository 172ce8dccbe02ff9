//! `id_token_hint` (OIDC Core §3.1.2.1, RP-Initiated Logout §2): an id_token this server
//! issued, presented back. Its signature and issuer must check out; expiry does not matter.

use serde_json::Value;

use crate::crypto::b64url_decode;
use crate::keys::KeySet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub subject: String,
    /// The client the token was issued to.
    pub audience: String,
}

/// Verifies a hint against the published keys; `None` if it is not one of ours.
pub fn verify(token: &str, keys: &KeySet, issuer: &str) -> Option<Hint> {
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&b64url_decode(h)?).ok()?;
    if header.get("alg")?.as_str()? != "RS256" {
        return None;
    }
    let kid = header.get("kid")?.as_str()?;
    let key = keys.public.iter().find(|k| k.kid == kid)?;
    let signed = &token[..h.len() + 1 + p.len()];
    if !key.verify(signed.as_bytes(), &b64url_decode(s)?) {
        return None;
    }
    let claims: Value = serde_json::from_slice(&b64url_decode(p)?).ok()?;
    if claims.get("iss")?.as_str()? != issuer {
        return None;
    }
    let audience = match claims.get("aud")? {
        Value::String(a) => a.clone(),
        Value::Array(a) => a.first()?.as_str()?.to_string(),
        _ => return None,
    };
    Some(Hint { subject: claims.get("sub")?.as_str()?.to_string(), audience })
}
