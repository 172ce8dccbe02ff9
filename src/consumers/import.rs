//! Consumer import and export: JSON Lines, one consumer a line, for brands that bring their
//! existing customers (and their password hashes) and for backups.
//!
//! ```json
//! {"username": "alice", "subject": "kept-from-the-old-system", "password_hash": "$2b$12$...",
//!  "profile": {"email": "alice@example.com", "given_name": "Alice"}, "lp_sdes": [...], "disabled": false}
//! ```
//!
//! Only `username` is required. Hashes are kept as given (argon2id/argon2i, bcrypt,
//! PBKDF2-SHA256) and re-hashed to argon2id at the consumer's first successful login.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::consumers::password::hash_format;
use crate::consumers::{validate_profile, validate_username};
use crate::store::{Consumer, Profile};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub profile: Profile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lp_sdes: Option<Value>,
    #[serde(default)]
    pub disabled: bool,
}

impl Record {
    pub fn from_consumer(c: &Consumer) -> Record {
        Record {
            username: c.username.clone(),
            subject: Some(c.id.clone()),
            password_hash: c.password_hash.clone(),
            profile: c.profile.clone(),
            lp_sdes: c.lp_attributes.clone(),
            disabled: c.disabled,
        }
    }
}

/// A subject kept from another system: opaque, printable, bounded.
fn valid_subject(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses and validates one line; the error is one sentence for the report.
pub fn parse_line(line: &str) -> Result<Record, String> {
    let mut r: Record = serde_json::from_str(line).map_err(|e| format!("not a valid record: {e}"))?;
    r.username = validate_username(&r.username).map_err(|e| e.to_string())?.to_string();
    if let Some(s) = &r.subject {
        if !valid_subject(s) {
            return Err("subject must be 1 to 255 printable ASCII characters".into());
        }
    }
    if let Some(h) = &r.password_hash {
        if hash_format(h).is_none() {
            return Err(
                "password_hash is not a recognised hash (argon2id/argon2i PHC, bcrypt $2a$/$2b$/$2y$, PBKDF2-SHA256 PHC or pbkdf2_sha256$...)".into(),
            );
        }
    }
    validate_profile(&r.profile).map_err(|e| e.to_string())?;
    if let Some(v) = &r.lp_sdes {
        let parsed = crate::liveengage::sdes::parse(v).map_err(|e| format!("lp_sdes: {e}"))?;
        r.lp_sdes = Some(serde_json::to_value(parsed).expect("JSON"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_validated_with_a_reason() {
        assert!(parse_line(r#"{"username": "a"}"#).is_ok());
        let r = parse_line(r#"{"username": " Bob ", "subject": "legacy-42", "password_hash": "$2b$04$Qq6oF.3fCDJ0rcE9hDJmJOOFhsqOcWPhmqZvs6a/jRYu0bGnX3mLG", "profile": {"email": "b@example.com"}}"#).unwrap();
        assert_eq!(r.username, "Bob");
        for (line, needle) in [
            ("{", "not a valid record"),
            (r#"{"user": "a"}"#, "not a valid record"),
            (r#"{"username": ""}"#, "username"),
            (r#"{"username": "a", "password_hash": "md5:abc"}"#, "password_hash"),
            (r#"{"username": "a", "subject": "has space"}"#, "subject"),
            (r#"{"username": "a", "profile": {"email": "nope"}}"#, "email"),
            (r#"{"username": "a", "lp_sdes": [{"type": "cart"}]}"#, "lp_sdes"),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }
}
