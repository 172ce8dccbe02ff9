//! The OpenID Connect protocol itself: request validation, flows, claims, id_token
//! minting and the error taxonomy. Handlers in `http` call in here with plain values.

pub mod authorize;
pub mod claims;
pub mod clients;
pub mod discovery;
pub mod error;
pub mod hint;
pub mod issue;
pub mod token;
