//! Property tests for the request parsers: whatever arrives, they answer with a value or a
//! protocol error, never a panic, and the answers keep their invariants.

use brand_idp::oidc::authorize::{self, ClientPolicy, Params};
use brand_idp::oidc::token;
use brand_idp::store::{AuthMethod, Client};
use proptest::prelude::*;

fn client() -> Client {
    Client {
        client_id: "rp".into(),
        secret_hash: Some("h".into()),
        name: None,
        redirect_uris: vec!["https://rp.example/cb".into()],
        post_logout_redirect_uris: vec![],
        response_types: vec!["code".into(), "id_token".into(), "id_token token".into()],
        auth_method: AuthMethod::ClientSecretBasic,
        options: serde_json::json!({}),
        created_at: 0,
        updated_at: 0,
    }
}

const NAMES: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "prompt",
    "max_age",
    "response_mode",
    "code_challenge",
    "code_challenge_method",
    "claims",
    "request",
    "request_uri",
    "login_hint",
    "id_token_hint",
    "display",
    "grant_type",
    "code",
    "code_verifier",
    "client_secret",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("openid".to_string()),
        Just("code".to_string()),
        Just("https://rp.example/cb".to_string()),
        Just("rp".to_string()),
        Just("S256".to_string()),
        Just("none login".to_string()),
        Just("{\"userinfo\":{\"email\":null}}".to_string()),
        "[a-zA-Z0-9 _.~-]{0,60}",
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        (prop_oneof![proptest::sample::select(NAMES).prop_map(str::to_string), "[a-z_]{1,12}"], value()),
        0..24,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn authorization_requests_never_panic(p in pairs()) {
        let c = client();
        if let Ok(params) = Params::from_pairs(p) {
            if authorize::client_id(&params).is_ok() {
                if let Ok(uri) = authorize::trusted_redirect_uri(&params, &c, |_| false) {
                    let uri = uri.to_string();
                    if let Ok(req) = authorize::validate(&params, &c, &uri, ClientPolicy::default()) {
                        // What validation lets through keeps the rules.
                        prop_assert!(req.scopes.iter().any(|s| s == "openid"));
                        prop_assert!(!req.response_type.is_implicit() || req.nonce.is_some());
                        prop_assert!(req.state.as_ref().is_none_or(|s| s.len() <= authorize::MAX_STATE_LEN));
                        prop_assert!(!(req.prompt.none && (req.prompt.login || req.prompt.consent)));
                    }
                }
            }
            let _ = authorize::error_mode(&params);
            let _ = authorize::return_query(&params);
        }
    }

    #[test]
    fn token_requests_never_panic(p in pairs(), auth in proptest::option::of(value())) {
        if let Ok(body) = token::single_params(p) {
            if let Ok(c) = token::credentials(auth.as_deref(), &body) {
                prop_assert!(!c.client_id.is_empty());
            }
            let _ = token::verify_pkce(body.get("code_challenge").map(String::as_str), body.get("code_verifier").map(String::as_str), 512);
        }
    }

    #[test]
    fn basic_credentials_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..120)) {
        let header = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw));
        let _ = token::credentials(Some(&header), &Default::default());
    }

    #[test]
    fn attribute_documents_never_panic(doc in "[\\[\\]{}\":,a-zA-Z0-9 .-]{0,200}") {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&doc) {
            let _ = brand_idp::liveengage::sdes::parse(&v);
        }
    }
}
