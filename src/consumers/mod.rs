//! Consumer accounts: creating them with validated input, and password hashing.

pub mod import;
pub mod password;
pub mod throttle;

pub use password::{Hasher, Password, Verified};

use crate::store::{Consumer, NewConsumer, Profile, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("the username must be 1 to 128 characters, with no control characters and not only spaces")]
    BadUsername,
    #[error("a consumer with the username {0:?} already exists (usernames are unique regardless of case)")]
    Exists(String),
    #[error("no consumer with the username {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error(transparent)]
    Store(StoreError),
}

pub fn validate_username(u: &str) -> Result<&str, ConsumerError> {
    let t = u.trim();
    if t.is_empty() || t.chars().count() > 128 || t.chars().any(char::is_control) {
        return Err(ConsumerError::BadUsername);
    }
    Ok(t)
}

/// Checks the profile claims an admin gives (the shapes OIDC Core §5.1 defines).
pub fn validate_profile(p: &Profile) -> Result<(), ConsumerError> {
    let fields = [
        ("email", &p.email),
        ("given_name", &p.given_name),
        ("family_name", &p.family_name),
        ("preferred_username", &p.preferred_username),
        ("phone_number", &p.phone_number),
        ("gender", &p.gender),
        ("name", &p.name),
        ("middle_name", &p.middle_name),
        ("nickname", &p.nickname),
        ("profile", &p.profile),
        ("picture", &p.picture),
        ("website", &p.website),
        ("birthdate", &p.birthdate),
        ("zoneinfo", &p.zoneinfo),
        ("locale", &p.locale),
    ];
    if let Some(a) = &p.address {
        if !a.is_object() || a.to_string().len() > 1024 {
            return Err(ConsumerError::Invalid(
                "address must be a JSON object of at most 1024 bytes (OIDC Core 5.1.1)".into(),
            ));
        }
    }
    for (name, v) in fields {
        if let Some(v) = v {
            if v.chars().count() > 256 || v.chars().any(char::is_control) {
                return Err(ConsumerError::Invalid(format!(
                    "{name} must be at most 256 characters with no control characters"
                )));
            }
        }
    }
    if let Some(e) = &p.email {
        let ok =
            e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !e.contains(char::is_whitespace));
        if !ok {
            return Err(ConsumerError::Invalid(format!("{e:?} is not an email address")));
        }
    }
    if let Some(ph) = &p.phone_number {
        let ok = ph
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c) || c == ';' || c == '=' || c.is_ascii_alphabetic())
            && ph.chars().any(|c| c.is_ascii_digit());
        if !ok {
            return Err(ConsumerError::Invalid(format!(
                "{ph:?} is not a phone number (E.164 such as +1 555 0100 is recommended)"
            )));
        }
    }
    Ok(())
}

/// A new opaque subject identifier: 128 random bits, never derived from the username or
/// email, so it stays stable when those change and reveals nothing.
pub fn new_subject() -> String {
    crate::crypto::random_token::<16>()
}

pub async fn create(
    store: &Store,
    hasher: &Hasher,
    username: &str,
    password: Option<&Password>,
    profile: Profile,
    now: i64,
) -> Result<Consumer, ConsumerError> {
    let username = validate_username(username)?;
    validate_profile(&profile)?;
    let password_hash = match password {
        Some(p) => Some(hasher.hash(p).await?),
        None => None,
    };
    let c =
        NewConsumer { id: new_subject(), username: username.to_string(), password_hash, profile, lp_attributes: None };
    store.create_consumer(&c, now).await.map_err(|e| match e {
        StoreError::Conflict => ConsumerError::Exists(username.to_string()),
        e => ConsumerError::Store(e),
    })
}
