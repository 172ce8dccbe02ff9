//! The OpenID Provider Metadata document (OpenID Connect Discovery 1.0 §3): it lists
//! exactly what this server implements.

use serde_json::{json, Value};

use crate::config::Settings;

pub const SCOPES: &[&str] = &["openid", "profile", "email", "address", "phone"];

pub const CLAIMS: &[&str] = &[
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "at_hash",
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "nickname",
    "preferred_username",
    "profile",
    "picture",
    "website",
    "gender",
    "birthdate",
    "zoneinfo",
    "locale",
    "updated_at",
    "email",
    "email_verified",
    "address",
    "phone_number",
    "phone_number_verified",
    "lp_sdes",
];

pub fn metadata(s: &Settings) -> Value {
    json!({
        "issuer": s.issuer,
        "authorization_endpoint": s.endpoint("/authorize"),
        "token_endpoint": s.endpoint("/token"),
        "userinfo_endpoint": s.endpoint("/userinfo"),
        "jwks_uri": s.endpoint("/jwks.json"),
        "end_session_endpoint": s.endpoint("/logout"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code", "id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "grant_types_supported": ["authorization_code", "implicit"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS,
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "require_request_uri_registration": false,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "display_values_supported": ["page", "popup", "touch"],
        "acr_values_supported": ["loa1"],
        "authorization_response_iss_parameter_supported": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_hang_off_the_issuer_exactly() {
        let mut s = Settings::default();
        s.issuer = "https://login.brand.example/idp/".into();
        let m = metadata(&s);
        assert_eq!(m["issuer"], "https://login.brand.example/idp/");
        assert_eq!(m["token_endpoint"], "https://login.brand.example/idp/token");
    }
}
