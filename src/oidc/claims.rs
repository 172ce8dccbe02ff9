//! Which claims a consumer's tokens carry: standard claims by scope (OIDC Core §5.4), the
//! `claims` request parameter (§5.5), and the id_token's own claims (§2, §3.1.3.6).

use serde_json::{json, Map, Value};

use crate::crypto::{b64url, sha256};
use crate::store::Consumer;

pub fn claims_for_scope(scope: &str) -> &'static [&'static str] {
    match scope {
        "profile" => &[
            "name",
            "family_name",
            "given_name",
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
        ],
        "email" => &["email", "email_verified"],
        "address" => &["address"],
        "phone" => &["phone_number", "phone_number_verified"],
        _ => &[],
    }
}

/// The scopes this server grants out of the requested ones, in a canonical order.
pub fn granted_scopes(requested: &[String]) -> Vec<&'static str> {
    crate::oidc::discovery::SCOPES.iter().copied().filter(|s| requested.iter().any(|r| r == s)).collect()
}

/// Claim names to release to `target` ("id_token" or "userinfo"): those of the scopes,
/// plus those named for that target in the `claims` request parameter.
pub fn requested_names(scope: &str, claims_param: Option<&Value>, target: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in scope.split(' ') {
        for c in claims_for_scope(s) {
            if !names.iter().any(|n| n == c) {
                names.push(c.to_string());
            }
        }
    }
    if let Some(Value::Object(m)) = claims_param.and_then(|c| c.get(target)) {
        for k in m.keys() {
            if crate::oidc::discovery::CLAIMS.contains(&k.as_str()) && !names.iter().any(|n| n == k) {
                names.push(k.clone());
            }
        }
    }
    names
}

/// The consumer's values for the named standard claims; absent ones are left out.
pub fn user_claims(c: &Consumer, names: &[String]) -> Map<String, Value> {
    let profile = serde_json::to_value(&c.profile).unwrap_or(Value::Null);
    let mut out = Map::new();
    for n in names {
        if n == "updated_at" {
            out.insert(n.clone(), json!(c.updated_at));
        } else if let Some(v) = profile.get(n.as_str()) {
            if !v.is_null() {
                out.insert(n.clone(), v.clone());
            }
        }
    }
    out
}

/// `at_hash` / `c_hash`: base64url of the left half of SHA-256 of the value (RS256).
pub fn half_hash(value: &str) -> String {
    b64url(&sha256(value.as_bytes())[..16])
}

pub struct IdTokenInput<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub consumer: &'a Consumer,
    pub now: i64,
    pub ttl: i64,
    pub auth_time: i64,
    pub nonce: Option<&'a str>,
    pub access_token: Option<&'a str>,
    pub scope: &'a str,
    pub claims_param: Option<&'a Value>,
    /// LiveEngage engagement attributes, for clients with the LiveEngage profile.
    pub lp_sdes: Option<&'a Value>,
}

pub fn id_token_claims(i: &IdTokenInput<'_>) -> Value {
    let mut m = user_claims(i.consumer, &requested_names(i.scope, i.claims_param, "id_token"));
    m.insert("iss".into(), json!(i.issuer));
    m.insert("sub".into(), json!(i.consumer.id));
    m.insert("aud".into(), json!(i.client_id));
    m.insert("iat".into(), json!(i.now));
    m.insert("exp".into(), json!(i.now + i.ttl));
    m.insert("auth_time".into(), json!(i.auth_time));
    m.insert("acr".into(), json!("loa1"));
    if let Some(n) = i.nonce {
        m.insert("nonce".into(), json!(n));
    }
    if let Some(at) = i.access_token {
        m.insert("at_hash".into(), json!(half_hash(at)));
    }
    if let Some(sdes) = i.lp_sdes {
        m.insert("lp_sdes".into(), sdes.clone());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Profile;

    fn consumer() -> Consumer {
        Consumer {
            id: "sub1".into(),
            username: "u".into(),
            password_hash: None,
            profile: Profile {
                email: Some("e@example.com".into()),
                email_verified: Some(true),
                given_name: Some("G".into()),
                phone_number: Some("+1".into()),
                ..Profile::default()
            },
            lp_attributes: None,
            disabled: false,
            created_at: 1,
            updated_at: 2,
        }
    }

    #[test]
    fn scopes_select_claims() {
        let c = consumer();
        let m = user_claims(&c, &requested_names("openid email", None, "userinfo"));
        assert_eq!(m.get("email"), Some(&json!("e@example.com")));
        assert!(m.get("given_name").is_none());
        let m = user_claims(&c, &requested_names("openid profile", None, "userinfo"));
        assert_eq!(m.get("given_name"), Some(&json!("G")));
        assert_eq!(m.get("updated_at"), Some(&json!(2)));
        assert!(m.get("email").is_none());
    }

    #[test]
    fn claims_parameter_adds_named_claims_per_target() {
        let param =
            json!({"userinfo": {"email": {"essential": true}, "bogus": null}, "id_token": {"phone_number": null}});
        let names = requested_names("openid", Some(&param), "userinfo");
        assert_eq!(names, vec!["email"]);
        let names = requested_names("openid", Some(&param), "id_token");
        assert_eq!(names, vec!["phone_number"]);
    }

    #[test]
    fn at_hash_matches_the_spec_example() {
        // OIDC Core A.3: access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y" -> "77QmUPtjPfzWtF2AnpK9RQ".
        assert_eq!(half_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }
}
