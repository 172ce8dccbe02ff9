//! Authorization requests (OpenID Connect Core §3.1.2.1, §3.2.2.1; RFC 6749 §4.1.1,
//! §4.2.1; RFC 7636 §4.3): parsing, validation, and where an error may be sent.
//!
//! Validation is in two steps, because the redirect URI decides the error channel. Until
//! the client and its exact redirect URI are established, errors are shown to the user and
//! never redirected (RFC 6749 §4.1.2.1); after that, errors go back to the client.

use std::collections::HashMap;

use crate::oidc::error::{ErrorCode, OAuthError};
use crate::store::Client;

/// Longest accepted value per parameter. `state` is generous on purpose: LiveEngage sends a
/// large URL-encoded JSON state.
pub const MAX_STATE_LEN: usize = 16 * 1024;
pub const MAX_PARAM_LEN: usize = 4096;
pub const MAX_ID_TOKEN_HINT_LEN: usize = 16 * 1024;
pub const MAX_PARAMS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseType {
    Code,
    IdToken,
    IdTokenToken,
    /// Legacy LiveEngage connectors: the id_token, as `token`, in the query. Only for
    /// clients registered with it (the LiveEngage profile).
    LegacyToken,
}

impl ResponseType {
    pub fn parse(s: &str) -> Option<ResponseType> {
        let mut parts: Vec<&str> = s.split(' ').filter(|p| !p.is_empty()).collect();
        parts.sort_unstable();
        match parts.as_slice() {
            ["code"] => Some(ResponseType::Code),
            ["id_token"] => Some(ResponseType::IdToken),
            ["id_token", "token"] => Some(ResponseType::IdTokenToken),
            ["token"] => Some(ResponseType::LegacyToken),
            _ => None,
        }
    }
    /// The registered form (`Client::response_types` holds these strings).
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::Code => "code",
            ResponseType::IdToken => "id_token",
            ResponseType::IdTokenToken => "id_token token",
            ResponseType::LegacyToken => "token",
        }
    }
    pub fn is_implicit(self) -> bool {
        !matches!(self, ResponseType::Code)
    }
    pub fn default_mode(self) -> ResponseMode {
        if self == ResponseType::LegacyToken {
            // What legacy LiveEngage windows read.
            ResponseMode::Query
        } else if self.is_implicit() {
            ResponseMode::Fragment
        } else {
            ResponseMode::Query
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    Query,
    Fragment,
    FormPost,
}

impl ResponseMode {
    pub fn parse(s: &str) -> Option<ResponseMode> {
        match s {
            "query" => Some(ResponseMode::Query),
            "fragment" => Some(ResponseMode::Fragment),
            "form_post" => Some(ResponseMode::FormPost),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
    pub select_account: bool,
}

/// The request's parameters, each present at most once.
#[derive(Debug, Clone, Default)]
pub struct Params {
    map: HashMap<String, String>,
    duplicated: Vec<String>,
    /// Order as received, so a request can be replayed after login.
    order: Vec<String>,
}

impl Params {
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Params, &'static str> {
        let mut p = Params::default();
        for (k, v) in pairs {
            if p.order.len() >= MAX_PARAMS {
                return Err("too many parameters");
            }
            if p.map.contains_key(&k) {
                if !p.duplicated.contains(&k) {
                    p.duplicated.push(k);
                }
                continue;
            }
            p.order.push(k.clone());
            p.map.insert(k, v);
        }
        Ok(p)
    }

    /// A parameter's value; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn is_duplicated(&self, name: &str) -> bool {
        self.duplicated.iter().any(|d| d == name)
    }

    /// The parameters as pairs in their original order, without the ones `skip` rejects.
    pub fn pairs_without(&self, skip: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        self.order
            .iter()
            .filter_map(|k| {
                let v = &self.map[k];
                (!skip(k, v)).then(|| (k.clone(), v.clone()))
            })
            .collect()
    }
}

/// Errors shown on brand-idp's own page because there is no trusted place to send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UntrustedError {
    MissingClientId,
    UnknownClient,
    MissingRedirectUri,
    UnregisteredRedirectUri,
    Malformed(&'static str),
}

impl UntrustedError {
    pub fn message(&self) -> &'static str {
        match self {
            UntrustedError::MissingClientId => "The request does not say which application is asking (client_id is missing).",
            UntrustedError::UnknownClient => "The application asking to sign you in is not registered here.",
            UntrustedError::MissingRedirectUri => "The request does not say where to return (redirect_uri is missing).",
            UntrustedError::UnregisteredRedirectUri => {
                "The address the application wants to return to is not registered for it, so it is not safe to continue."
            }
            UntrustedError::Malformed(m) => m,
        }
    }
}

/// Step 1 without the database: the client id to look up.
pub fn client_id(p: &Params) -> Result<&str, UntrustedError> {
    if p.is_duplicated("client_id") {
        return Err(UntrustedError::Malformed("The request repeats client_id."));
    }
    let id = p.get("client_id").ok_or(UntrustedError::MissingClientId)?;
    if id.len() > 256 {
        return Err(UntrustedError::UnknownClient);
    }
    Ok(id)
}

/// Step 1 with the client: the redirect URI must equal a registered one exactly (simple
/// string comparison, OIDC Core §3.1.2.1). `also` is a client-specific extra rule (the
/// LiveEngage profile's window URLs); it is `|_| false` for every other client.
pub fn trusted_redirect_uri<'a>(
    p: &'a Params,
    client: &Client,
    also: impl Fn(&str) -> bool,
) -> Result<&'a str, UntrustedError> {
    if p.is_duplicated("redirect_uri") {
        return Err(UntrustedError::Malformed("The request repeats redirect_uri."));
    }
    let uri = p.get("redirect_uri").ok_or(UntrustedError::MissingRedirectUri)?;
    if client.redirect_uris.iter().any(|r| r == uri) || also(uri) {
        Ok(uri)
    } else {
        Err(UntrustedError::UnregisteredRedirectUri)
    }
}

/// Where errors of step 2 go: the response mode the request asked for if it is valid,
/// otherwise the default of its response type.
pub fn error_mode(p: &Params) -> ResponseMode {
    if let Some(m) = p.get("response_mode").and_then(ResponseMode::parse) {
        return m;
    }
    p.get("response_type").and_then(ResponseType::parse).map(ResponseType::default_mode).unwrap_or(ResponseMode::Query)
}

/// A fully validated authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub response_type: ResponseType,
    pub response_mode: ResponseMode,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    pub id_token_hint: Option<String>,
    pub code_challenge: Option<String>,
    pub claims: Option<serde_json::Value>,
}

/// Per-client allowances that change validation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientPolicy {
    /// Implicit requests may omit `nonce` (LiveEngage never sends one).
    pub nonce_optional: bool,
}

fn too_long(name: &str, v: &str) -> bool {
    let max = match name {
        "state" => MAX_STATE_LEN,
        "id_token_hint" => MAX_ID_TOKEN_HINT_LEN,
        _ => MAX_PARAM_LEN,
    };
    v.len() > max
}

/// PKCE code challenge (RFC 7636 §4.2): S256 of a verifier, 43 characters of base64url.
pub fn valid_challenge(c: &str) -> bool {
    (43..=128).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Step 2: everything else. The error, if any, goes to the client on `error_mode(p)`.
pub fn validate(
    p: &Params,
    client: &Client,
    redirect_uri: &str,
    policy: ClientPolicy,
) -> Result<AuthorizeRequest, OAuthError> {
    let bad = |d: &str| OAuthError::invalid_request(d.to_string());
    if let Some(d) = p.duplicated.first() {
        return Err(bad(&format!("the parameter {d} appears more than once")));
    }
    for (k, v) in &p.map {
        if too_long(k, v) {
            return Err(bad(&format!("the parameter {k} is too long")));
        }
    }
    if p.get("request").is_some() {
        return Err(OAuthError::new(ErrorCode::RequestNotSupported, "request objects are not supported"));
    }
    if p.get("request_uri").is_some() {
        return Err(OAuthError::new(ErrorCode::RequestUriNotSupported, "request_uri is not supported"));
    }
    if p.get("registration").is_some() {
        return Err(OAuthError::new(
            ErrorCode::RegistrationNotSupported,
            "the registration parameter is not supported",
        ));
    }
    let rt_raw = p.get("response_type").ok_or_else(|| bad("response_type is missing"))?;
    let legacy_allowed = client.response_types.iter().any(|t| t == "token");
    let response_type = ResponseType::parse(rt_raw)
        .filter(|rt| *rt != ResponseType::LegacyToken || legacy_allowed)
        .ok_or_else(|| {
            OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "supported response types: code, id_token, id_token token",
            )
        })?;
    if !client.response_types.iter().any(|t| t == response_type.as_str()) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            format!("this client may not use response_type {}", response_type.as_str()),
        ));
    }
    let response_mode = match p.get("response_mode") {
        None => response_type.default_mode(),
        Some(m) => {
            let mode =
                ResponseMode::parse(m).ok_or_else(|| bad("response_mode must be query, fragment or form_post"))?;
            // Tokens never travel in a query string (OAuth 2.0 Multiple Response Types §3.0).
            if mode == ResponseMode::Query && response_type.is_implicit() && response_type != ResponseType::LegacyToken
            {
                return Err(bad("response_mode query cannot carry tokens; use fragment or form_post"));
            }
            mode
        }
    };
    let scope = p
        .get("scope")
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidScope, "scope is missing; it must include openid"))?;
    let scopes: Vec<String> = scope.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect();
    if !scopes.iter().any(|s| s == "openid") {
        return Err(OAuthError::new(ErrorCode::InvalidScope, "scope must include openid"));
    }
    let nonce = p.get("nonce").map(str::to_string);
    if response_type.is_implicit() && nonce.is_none() && !policy.nonce_optional {
        return Err(bad("nonce is required for implicit requests"));
    }
    let mut prompt = Prompt::default();
    if let Some(pr) = p.get("prompt") {
        for v in pr.split(' ').filter(|s| !s.is_empty()) {
            match v {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                "select_account" => prompt.select_account = true,
                _ => return Err(bad("prompt values are none, login, consent and select_account")),
            }
        }
        if prompt.none && (prompt.login || prompt.consent || prompt.select_account) {
            return Err(bad("prompt=none cannot be combined with other prompt values"));
        }
    }
    let max_age = match p.get("max_age") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad("max_age must be a non-negative number of seconds"))?,
        ),
    };
    let code_challenge = match (p.get("code_challenge"), p.get("code_challenge_method")) {
        (None, None) => None,
        (None, Some(_)) => return Err(bad("code_challenge_method without code_challenge")),
        (Some(c), m) => {
            match m {
                Some("S256") => {}
                Some("plain") | None => return Err(bad("code_challenge_method must be S256 (plain is not accepted)")),
                Some(_) => return Err(bad("code_challenge_method must be S256")),
            }
            if !valid_challenge(c) {
                return Err(bad("code_challenge is not a valid S256 challenge"));
            }
            Some(c.to_string())
        }
    };
    if client.is_public() && response_type == ResponseType::Code && code_challenge.is_none() {
        return Err(bad("public clients must use PKCE (code_challenge with S256)"));
    }
    let claims = match p.get("claims") {
        None => None,
        Some(c) => {
            let v: serde_json::Value = serde_json::from_str(c).map_err(|_| bad("claims is not valid JSON"))?;
            if !v.is_object() {
                return Err(bad("claims must be a JSON object"));
            }
            Some(v)
        }
    };
    Ok(AuthorizeRequest {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        response_type,
        response_mode,
        scopes,
        state: p.get("state").map(str::to_string),
        nonce,
        prompt,
        max_age,
        login_hint: p.get("login_hint").map(str::to_string),
        id_token_hint: p.get("id_token_hint").map(str::to_string),
        code_challenge,
        claims,
    })
}

/// What the login state means for this request.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionDecision {
    /// Issue the response for the logged-in consumer.
    Proceed,
    /// Show the login page, then come back.
    Login,
    /// `prompt=none` and a login would be needed.
    Fail(ErrorCode),
}

/// The logged-in state as the authorization endpoint sees it.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub subject: String,
    pub auth_time: i64,
}

/// OIDC Core §3.1.2.3: decides whether the consumer must (re-)authenticate.
/// `hint_subject` is the `sub` of a valid `id_token_hint`.
pub fn decide(
    req: &AuthorizeRequest,
    session: Option<&LoggedIn>,
    hint_subject: Option<&str>,
    now: i64,
) -> SessionDecision {
    let must_login = match session {
        None => true,
        Some(s) => {
            req.prompt.login
                || req.prompt.select_account
                || req.max_age.is_some_and(|m| now - s.auth_time > m)
                || hint_subject.is_some_and(|h| h != s.subject)
        }
    };
    if !must_login {
        SessionDecision::Proceed
    } else if req.prompt.none {
        SessionDecision::Fail(ErrorCode::LoginRequired)
    } else {
        SessionDecision::Login
    }
}

/// The query to come back to after the login page: the same request, minus the prompt
/// values the login just satisfied (so the request does not loop back to the login page).
pub fn return_query(p: &Params) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in p.pairs_without(|_, _| false) {
        if k == "prompt" {
            let rest: Vec<&str> =
                v.split(' ').filter(|x| !x.is_empty() && *x != "login" && *x != "select_account").collect();
            if !rest.is_empty() {
                ser.append_pair("prompt", &rest.join(" "));
            }
            continue;
        }
        ser.append_pair(&k, &v);
    }
    ser.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuthMethod;

    fn client() -> Client {
        Client {
            client_id: "rp".into(),
            secret_hash: Some("x".into()),
            name: None,
            redirect_uris: vec!["https://rp.example/cb".into(), "https://rp.example/cb?x=1".into()],
            post_logout_redirect_uris: vec![],
            response_types: vec!["code".into(), "id_token".into(), "id_token token".into()],
            auth_method: AuthMethod::ClientSecretBasic,
            options: serde_json::json!({}),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn params(q: &str) -> Params {
        Params::from_pairs(url::form_urlencoded::parse(q.as_bytes()).into_owned()).unwrap()
    }

    fn check(q: &str) -> Result<AuthorizeRequest, OAuthError> {
        let p = params(q);
        let c = client();
        let r =
            trusted_redirect_uri(&p, &c, |_| false).map_err(|_| OAuthError::invalid_request("untrusted"))?.to_string();
        validate(&p, &c, &r, ClientPolicy::default())
    }

    const BASE: &str = "client_id=rp&redirect_uri=https%3A%2F%2Frp.example%2Fcb&scope=openid";

    #[test]
    fn redirect_uri_is_matched_exactly() {
        let c = client();
        for bad in [
            "https://rp.example/cb/",
            "https://RP.example/cb",
            "https://rp.example/cb?x=2",
            "https://rp.example/cb?x=1&y=2",
        ] {
            let p = params(&format!(
                "redirect_uri={}",
                url::form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>()
            ));
            assert_eq!(trusted_redirect_uri(&p, &c, |_| false), Err(UntrustedError::UnregisteredRedirectUri), "{bad}");
        }
        let p = params("redirect_uri=https%3A%2F%2Frp.example%2Fcb%3Fx%3D1");
        assert!(trusted_redirect_uri(&p, &c, |_| false).is_ok());
    }

    #[test]
    fn response_type_and_mode_rules() {
        assert_eq!(check(&format!("{BASE}&response_type=code")).unwrap().response_mode, ResponseMode::Query);
        let r = check(&format!("{BASE}&response_type=token%20id_token&nonce=n")).unwrap();
        assert_eq!((r.response_type, r.response_mode), (ResponseType::IdTokenToken, ResponseMode::Fragment));
        assert_eq!(check(&format!("{BASE}&response_type=token")).unwrap_err().code, ErrorCode::UnsupportedResponseType);
        assert_eq!(check(BASE).unwrap_err().code, ErrorCode::InvalidRequest);
        assert_eq!(
            check(&format!("{BASE}&response_type=id_token&nonce=n&response_mode=query")).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            check(&format!("{BASE}&response_type=code&response_mode=form_post")).unwrap().response_mode,
            ResponseMode::FormPost
        );
        assert_eq!(error_mode(&params("response_type=id_token")), ResponseMode::Fragment);
        assert_eq!(error_mode(&params("response_type=bogus")), ResponseMode::Query);
    }

    #[test]
    fn openid_scope_nonce_prompt_max_age() {
        let e = check("client_id=rp&redirect_uri=https%3A%2F%2Frp.example%2Fcb&scope=email&response_type=code")
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidScope);
        assert_eq!(check(&format!("{BASE}&response_type=id_token")).unwrap_err().code, ErrorCode::InvalidRequest);
        assert_eq!(
            check(&format!("{BASE}&response_type=code&prompt=none%20login")).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            check(&format!("{BASE}&response_type=code&max_age=-1")).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let r = check(&format!(
            "{BASE}%20email&response_type=code&prompt=login%20consent&max_age=0&display=popup&ui_locales=fr&foo=bar"
        ))
        .unwrap();
        assert!(r.prompt.login && r.prompt.consent);
        assert_eq!(r.max_age, Some(0));
    }

    #[test]
    fn request_objects_and_duplicates() {
        assert_eq!(
            check(&format!("{BASE}&response_type=code&request=eyJ")).unwrap_err().code,
            ErrorCode::RequestNotSupported
        );
        assert_eq!(
            check(&format!("{BASE}&response_type=code&request_uri=https://x")).unwrap_err().code,
            ErrorCode::RequestUriNotSupported
        );
        assert_eq!(
            check(&format!("{BASE}&response_type=code&state=a&state=b")).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn pkce_only_s256() {
        let ch = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(check(&format!("{BASE}&response_type=code&code_challenge={ch}&code_challenge_method=S256")).is_ok());
        assert!(check(&format!("{BASE}&response_type=code&code_challenge={ch}&code_challenge_method=plain")).is_err());
        assert!(check(&format!("{BASE}&response_type=code&code_challenge={ch}")).is_err());
        assert!(check(&format!("{BASE}&response_type=code&code_challenge=short&code_challenge_method=S256")).is_err());
    }

    #[test]
    fn session_decisions() {
        let r = check(&format!("{BASE}&response_type=code&max_age=60")).unwrap();
        let s = LoggedIn { subject: "a".into(), auth_time: 1000 };
        assert_eq!(decide(&r, Some(&s), None, 1060), SessionDecision::Proceed);
        assert_eq!(decide(&r, Some(&s), None, 1061), SessionDecision::Login);
        assert_eq!(decide(&r, None, None, 0), SessionDecision::Login);
        let none = check(&format!("{BASE}&response_type=code&prompt=none")).unwrap();
        assert_eq!(decide(&none, None, None, 0), SessionDecision::Fail(ErrorCode::LoginRequired));
        assert_eq!(decide(&none, Some(&s), Some("b"), 0), SessionDecision::Fail(ErrorCode::LoginRequired));
        assert_eq!(decide(&none, Some(&s), Some("a"), 0), SessionDecision::Proceed);
    }

    #[test]
    fn return_query_drops_satisfied_prompts_only() {
        let p = params("a=1&prompt=login%20consent&state=%7B%22x%22%3A1%7D");
        let q = return_query(&p);
        assert_eq!(q, "a=1&prompt=consent&state=%7B%22x%22%3A1%7D");
    }
}
