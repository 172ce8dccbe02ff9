//! What LiveEngage (LivePerson Conversational Cloud) needs beyond standard OpenID Connect:
//! the client profile, `lp_sdes` attributes, encryption for LivePerson, and the values a
//! brand admin pastes into LiveEngage's connector screen.

pub mod jwe;
pub mod sdes;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::store::Client;

/// The redirect URI LiveEngage's backend uses for embedded-window codes.
pub const LIVEPERSON_REDIRECT: &str = "https://liveperson.net";
/// LiveEngage's external (unified) window.
pub const DEFAULT_WINDOW_URL: &str = "https://lpcdn.lpsnmedia.net/le_unified_window/index.html";
pub const DEFAULT_JS_METHOD: &str = "lpGetAuthenticationToken";
pub const DEFAULT_JS_CONTEXT: &str = "window";
/// The scopes of codes and tokens minted for the embedded window: the standard claims
/// LiveEngage shows agents.
pub const SCOPE: &str = "openid profile email phone";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    Implicit,
    Code,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encryption {
    /// LivePerson's RSA public key, one line of base64 DER SPKI.
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    pub enc: jwe::Enc,
    /// Encrypt id_tokens handed out by the implicit flow (embedded and external window).
    pub implicit: bool,
    /// Encrypt id_tokens returned by the token endpoint (code flow).
    pub code: bool,
}

/// The LiveEngage profile of a client, kept in `clients.options.liveengage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// How the embedded window gets the consumer: an id_token, or a code to redeem.
    pub flow: Flow,
    /// Whether LiveEngage's connector has PKCE switched on (informs the settings export).
    pub pkce: bool,
    pub js_method: String,
    pub js_context: String,
    /// Origins of the brand pages that include `/liveengage.js` (CORS with credentials).
    pub web_origins: Vec<String>,
    /// LiveEngage window URLs: also accepted as redirect URIs when legacy connectors add
    /// their own query string to them.
    pub window_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            flow: Flow::Code,
            pkce: false,
            js_method: DEFAULT_JS_METHOD.into(),
            js_context: DEFAULT_JS_CONTEXT.into(),
            web_origins: Vec::new(),
            window_urls: vec![DEFAULT_WINDOW_URL.into()],
            encryption: None,
        }
    }
}

/// The LiveEngage profile of a client, if it has one.
pub fn profile(client: &Client) -> Option<Profile> {
    client.options.get("liveengage").and_then(|v| serde_json::from_value(v.clone()).ok())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ProfileError(pub String);

/// A web origin as browsers send it: scheme, host and optional port, nothing else.
pub fn parse_origin(s: &str) -> Result<String, ProfileError> {
    let bad = || ProfileError(format!("{s:?} is not a web origin such as https://www.brand.example"));
    let url = url::Url::parse(s).map_err(|_| bad())?;
    if !(url.scheme() == "https" || url.scheme() == "http") || url.host_str().is_none() {
        return Err(bad());
    }
    let origin = url.origin().ascii_serialization();
    if s.trim_end_matches('/') != origin {
        return Err(bad());
    }
    Ok(origin)
}

fn valid_js_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        })
}

impl Profile {
    pub fn validate(&self) -> Result<(), ProfileError> {
        if !valid_js_name(&self.js_method) || self.js_method.contains('.') {
            return Err(ProfileError(format!("JS method name {:?} must be a JavaScript identifier", self.js_method)));
        }
        if !valid_js_name(&self.js_context) {
            return Err(ProfileError(format!(
                "JS context {:?} must be window or a dotted path of JavaScript identifiers such as lpMethods",
                self.js_context
            )));
        }
        for o in &self.web_origins {
            parse_origin(o)?;
        }
        for w in &self.window_urls {
            crate::oidc::clients::parse_redirect_uri(w).map_err(|e| ProfileError(e.to_string()))?;
        }
        if let Some(e) = &self.encryption {
            jwe::parse_public_key(&e.public_key).map_err(|e| ProfileError(e.to_string()))?;
            if e.kid.as_ref().is_some_and(|k| k.is_empty() || k.len() > 128) {
                return Err(ProfileError("the encryption kid must be 1 to 128 characters".into()));
            }
        }
        Ok(())
    }

    /// Applies the profile to a client: what LiveEngage needs, and nothing looser for
    /// other clients. Redirect URIs and response types are added, never removed.
    pub fn apply(&self, client_options: &mut Value, redirect_uris: &mut Vec<String>, response_types: &mut Vec<String>) {
        for u in std::iter::once(LIVEPERSON_REDIRECT.to_string()).chain(self.window_urls.iter().cloned()) {
            if !redirect_uris.contains(&u) {
                redirect_uris.push(u);
            }
        }
        for t in ["code", "id_token", "token"] {
            if !response_types.iter().any(|r| r == t) {
                response_types.push(t.to_string());
            }
        }
        if !client_options.is_object() {
            *client_options = json!({});
        }
        client_options["liveengage"] = serde_json::to_value(self).expect("JSON");
        // LiveEngage never sends a nonce; its own PKCE verifiers exceed RFC 7636's 128.
        client_options["nonce_optional"] = json!(true);
        client_options["max_code_verifier_len"] = json!(512);
    }

    /// Legacy ("openID") connectors append their own query string to the window URL, so for
    /// a LiveEngage client a redirect URI also matches when it is a window URL plus a query.
    pub fn matches_window_url(&self, redirect_uri: &str) -> bool {
        let Some((base, query)) = redirect_uri.split_once('?') else { return false };
        !query.is_empty() && !redirect_uri.contains('#') && self.window_urls.iter().any(|w| w == base)
    }
}

/// Encrypts an id_token for LivePerson if the client's profile asks for it in this flow.
pub fn maybe_encrypt(profile: Option<&Profile>, id_token: String, flow: Flow) -> Result<String, jwe::JweError> {
    let Some(enc) = profile.and_then(|p| p.encryption.as_ref()) else { return Ok(id_token) };
    let wanted = match flow {
        Flow::Implicit => enc.implicit,
        Flow::Code => enc.code,
    };
    if !wanted {
        return Ok(id_token);
    }
    let key = jwe::parse_public_key(&enc.public_key)?;
    jwe::encrypt(&id_token, &key, enc.enc, enc.kid.as_deref())
}

/// The values a brand admin pastes into LiveEngage's connector screen, labelled as
/// LiveEngage labels them.
pub fn settings(
    issuer_endpoint: impl Fn(&str) -> String,
    issuer: &str,
    client: &Client,
    profile: &Profile,
    public_key: &str,
) -> Vec<(&'static str, String)> {
    let script = format!(
        "<script src=\"{}\" data-client-id=\"{}\" data-flow=\"{}\" data-method=\"{}\" data-context=\"{}\" async></script>",
        issuer_endpoint("/liveengage.js"),
        client.client_id,
        match profile.flow {
            Flow::Implicit => "implicit",
            Flow::Code => "code",
        },
        profile.js_method,
        profile.js_context
    );
    let mut v = vec![
        ("JWT issuer (iss)", issuer.to_string()),
        ("Authentication Endpoint", issuer_endpoint("/authorize")),
        ("Token Endpoint", issuer_endpoint("/token")),
        ("Client ID", client.client_id.clone()),
        ("Client Secret", "(shown once by `client create`; a new one with `brand-idp client rotate-secret`)".into()),
        ("JWT Public Key", public_key.to_string()),
        ("JWKS Endpoint", issuer_endpoint("/jwks.json")),
        (
            "Authorisation Code Flow With Proof Key of Code Exchange (PKCE)",
            if profile.pkce { "on".into() } else { "off".into() },
        ),
        ("JS Method Name", profile.js_method.clone()),
        ("JS Context", profile.js_context.clone()),
        (
            "Encryption",
            match &profile.encryption {
                None => "off".into(),
                Some(e) => format!(
                    "{} {} for {}{}",
                    "RSA-OAEP-256",
                    e.enc.as_str(),
                    match (e.implicit, e.code) {
                        (true, true) => "implicit and code flow",
                        (true, false) => "implicit flow",
                        (false, true) => "code flow",
                        (false, false) => "no flow",
                    },
                    e.kid.as_deref().map(|k| format!(", kid {k}")).unwrap_or_default()
                ),
            },
        ),
        ("Brand page script tag", script),
    ];
    if profile.web_origins.is_empty() {
        v.push(("Warning", "no web origin is registered: add the brand site's origin with --web-origin".into()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_js_names() {
        assert_eq!(parse_origin("https://www.brand.example").unwrap(), "https://www.brand.example");
        assert_eq!(parse_origin("http://localhost:3000/").unwrap(), "http://localhost:3000");
        assert!(parse_origin("https://www.brand.example/path").is_err());
        assert!(parse_origin("*").is_err());
        let mut p = Profile::default();
        assert!(p.validate().is_ok());
        p.js_context = "lpMethods.auth".into();
        assert!(p.validate().is_ok());
        p.js_method = "alert(1)".into();
        assert!(p.validate().is_err());
    }

    #[test]
    fn window_url_with_a_legacy_query_matches_only_for_window_urls() {
        let p = Profile::default();
        assert!(p.matches_window_url(&format!("{DEFAULT_WINDOW_URL}?lpUnifiedWindowConfig=%7B%7D")));
        assert!(!p.matches_window_url(DEFAULT_WINDOW_URL));
        assert!(!p.matches_window_url("https://evil.example/le_unified_window/index.html?x=1"));
        assert!(!p.matches_window_url(&format!("{DEFAULT_WINDOW_URL}?x=1#y")));
    }
}
