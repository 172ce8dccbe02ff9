//! Minting what the flows hand out: authorization codes, access tokens and id_tokens, and
//! redeeming codes at the token endpoint.

use serde::Serialize;
use serde_json::Value;

use crate::crypto::{random_token, token_hash};
use crate::liveengage::{self, Flow};
use crate::oidc::authorize::{AuthorizeRequest, ResponseType};
use crate::oidc::claims::{self, granted_scopes, IdTokenInput};
use crate::oidc::error::{from_store, ErrorCode, OAuthError};
use crate::oidc::token::verify_pkce;
use crate::store::{AuthCodeRow, Client, Consumer, NewAccessToken, Redeemed, StoreError};
use crate::AppState;

/// The `lp_sdes` claim for a LiveEngage client: the consumer's stored attributes.
fn lp_sdes<'a>(le: Option<&liveengage::Profile>, consumer: &'a Consumer) -> Option<&'a Value> {
    le.and(consumer.lp_attributes.as_ref()).filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
}

/// Signs, then (if the client's LiveEngage profile says so for this flow) encrypts.
fn finish_id_token(
    client: &Client,
    le: Option<&liveengage::Profile>,
    jws: String,
    flow: Flow,
) -> Result<String, OAuthError> {
    liveengage::maybe_encrypt(le, jws, flow).map_err(|e| {
        tracing::error!(client_id = %client.client_id, error = %e, "id_token encryption failed");
        OAuthError::server_error()
    })
}

/// Signs an id_token with the active key.
pub fn sign_id_token(st: &AppState, input: &IdTokenInput<'_>) -> Result<String, OAuthError> {
    let signer = st.keys.signer().ok_or_else(|| {
        tracing::error!("no active signing key is loaded");
        OAuthError::unavailable()
    })?;
    st.metrics.id_token_issued();
    Ok(signer.sign_jwt(&claims::id_token_claims(input)))
}

/// An access token names the grant it belongs to: `<grant key>.<secret>`, the key being the
/// grant's primary key (for a code, the code's hash; a hash reveals nothing of what it is the
/// hash of) and the secret 256 random bits. `/userinfo` finds the grant by its key and accepts
/// the token only if its hash is the one the grant recorded, so no index over token hashes is
/// needed, which made every code redemption write a random index page.
fn new_access_token(grant_key: &str) -> String {
    format!("{grant_key}.{}", random_token::<32>())
}

/// The key of the grant an access token belongs to. Tokens issued before access tokens named
/// their grant have no `.` (base64url has none); their grants were keyed `migrated:<hash>`.
fn grant_key(token: &str, token_hash: &str) -> String {
    match token.split_once('.') {
        Some((key, _)) => key.to_string(),
        None => format!("migrated:{token_hash}"),
    }
}

/// An access token without a code (the implicit flow's `id_token token`).
async fn mint_access_token(
    st: &AppState,
    client_id: &str,
    consumer_id: &str,
    scope: &str,
    claims: Option<&Value>,
    now: i64,
) -> Result<String, OAuthError> {
    // The grant's key is the hash of a value nobody holds, so no code redeems it.
    let key = token_hash(&random_token::<32>());
    let token = new_access_token(&key);
    let claims = claims.map(Value::to_string);
    let expires_at = now + st.settings.access_token_ttl_secs;
    st.store
        .insert_access_token(&NewAccessToken {
            key: &key,
            token_hash: &token_hash(&token),
            client_id,
            consumer_id,
            scope,
            claims: claims.as_deref(),
            now,
            expires_at,
        })
        .await
        .map_err(from_store)?;
    st.metrics.access_token_issued();
    Ok(token)
}

/// What an authorization request binds a code to.
struct CodeBinding {
    client_id: String,
    redirect_uri: String,
    scope: String,
    nonce: Option<String>,
    auth_time: i64,
    code_challenge: Option<String>,
    /// The request's `claims` parameter, JSON.
    claims: Option<String>,
}

/// Mints and stores a code for the consumer. The consumer's claims are kept with it, as the
/// id_token will show them: the token endpoint then needs no second read (redemption itself
/// checks the account is still enabled).
async fn issue_code(st: &AppState, consumer: &Consumer, now: i64, b: CodeBinding) -> Result<String, OAuthError> {
    let subject = serde_json::to_string(consumer).map_err(|e| {
        tracing::error!(error = %e, "cannot serialise the consumer's claims");
        OAuthError::server_error()
    })?;
    let code = random_token::<32>();
    st.store
        .insert_code(&AuthCodeRow {
            code_hash: token_hash(&code),
            client_id: b.client_id,
            consumer_id: consumer.id.clone(),
            redirect_uri: b.redirect_uri,
            scope: b.scope,
            nonce: b.nonce,
            auth_time: b.auth_time,
            code_challenge: b.code_challenge,
            claims: b.claims,
            subject,
            created_at: now,
            expires_at: now + st.settings.code_ttl_secs,
        })
        .await
        .map_err(from_store)?;
    st.metrics.code_issued();
    Ok(code)
}

/// The parameters of a successful authorization response (OIDC Core §3.1.2.5, §3.2.2.5),
/// before `state` and `iss` are added by the caller.
pub async fn authorization_response(
    st: &AppState,
    client: &Client,
    req: &AuthorizeRequest,
    consumer: &Consumer,
    auth_time: i64,
) -> Result<Vec<(&'static str, String)>, OAuthError> {
    let now = st.now();
    // The client's LiveEngage profile, parsed once for this request.
    let le = liveengage::profile(client);
    let scope = if le.is_some() {
        // LiveEngage asks for `openid` only but shows agents the standard claims: its
        // clients always get the scopes that carry them.
        let mut requested = req.scopes.clone();
        requested.extend(liveengage::SCOPE.split(' ').map(str::to_string));
        granted_scopes(&requested).join(" ")
    } else {
        granted_scopes(&req.scopes).join(" ")
    };
    match req.response_type {
        ResponseType::Code => {
            let code = issue_code(
                st,
                consumer,
                now,
                CodeBinding {
                    client_id: req.client_id.clone(),
                    redirect_uri: req.redirect_uri.clone(),
                    scope,
                    nonce: req.nonce.clone(),
                    auth_time,
                    code_challenge: req.code_challenge.clone(),
                    claims: req.claims.as_ref().map(Value::to_string),
                },
            )
            .await?;
            Ok(vec![("code", code)])
        }
        ResponseType::IdToken | ResponseType::IdTokenToken | ResponseType::LegacyToken => {
            let access_token = if req.response_type == ResponseType::IdTokenToken {
                Some(mint_access_token(st, &req.client_id, &consumer.id, &scope, req.claims.as_ref(), now).await?)
            } else {
                None
            };
            let id_token = sign_id_token(
                st,
                &IdTokenInput {
                    issuer: &st.settings.issuer,
                    client_id: &req.client_id,
                    consumer,
                    now,
                    ttl: st.settings.id_token_ttl_secs,
                    auth_time,
                    nonce: req.nonce.as_deref(),
                    access_token: access_token.as_deref(),
                    scope: &scope,
                    claims_param: req.claims.as_ref(),
                    lp_sdes: lp_sdes(le.as_ref(), consumer),
                },
            )?;
            let id_token = finish_id_token(client, le.as_ref(), id_token, Flow::Implicit)?;
            if req.response_type == ResponseType::LegacyToken {
                return Ok(vec![("token", id_token)]);
            }
            let mut out = Vec::with_capacity(4);
            if let Some(at) = access_token {
                out.push(("access_token", at));
                out.push(("token_type", "Bearer".to_string()));
                out.push(("expires_in", st.settings.access_token_ttl_secs.to_string()));
            }
            out.push(("id_token", id_token));
            Ok(out)
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub id_token: String,
    pub scope: String,
}

/// Per-client limits at the token endpoint.
pub fn max_verifier_len(client: &Client) -> usize {
    client
        .options
        .get("max_code_verifier_len")
        .and_then(Value::as_u64)
        .map(|n| n.clamp(128, 512) as usize)
        .unwrap_or(crate::oidc::token::MAX_VERIFIER_LEN)
}

/// RFC 6749 §4.1.3 for an authenticated client.
pub async fn exchange_code(
    st: &AppState,
    client: &Client,
    code: Option<&str>,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let code = code.ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    if code.len() > 512 {
        return Err(OAuthError::invalid_grant("the code is invalid, expired or already used"));
    }
    let now = st.now();
    // The access token is chosen first, so redeeming the code records it in the same statement.
    let code_hash = token_hash(code);
    let access_token = new_access_token(&code_hash);
    let token_expires_at = now + st.settings.access_token_ttl_secs;
    let redeemed = st.store.redeem_code(&code_hash, &token_hash(&access_token), token_expires_at, now).await;
    let row = match redeemed.map_err(from_store)? {
        Redeemed::Fresh(row) => row,
        Redeemed::Replayed { client_id } => {
            st.metrics.redemption(crate::metrics::Redemption::Replayed);
            tracing::warn!(client_id = %client_id, "authorization code replayed; the grant's token is revoked");
            return Err(OAuthError::invalid_grant("the code is invalid, expired or already used"));
        }
        Redeemed::Invalid => {
            st.metrics.redemption(crate::metrics::Redemption::Invalid);
            return Err(OAuthError::invalid_grant("the code is invalid, expired or already used"));
        }
    };
    if row.client_id != client.client_id {
        return Err(OAuthError::invalid_grant("the code was not issued to this client"));
    }
    let le = liveengage::profile(client);
    if !redirect_uri_binds(client, le.is_some(), redirect_uri, &row.redirect_uri) {
        return Err(OAuthError::invalid_grant("redirect_uri does not match the authorization request"));
    }
    if client.is_public() && row.code_challenge.is_none() {
        return Err(OAuthError::invalid_grant("public clients must use PKCE"));
    }
    verify_pkce(row.code_challenge.as_deref(), code_verifier, max_verifier_len(client))?;
    let consumer: Consumer = serde_json::from_str(&row.subject).map_err(|e| {
        tracing::error!(error = %e, "a stored code's consumer claims cannot be read");
        OAuthError::server_error()
    })?;
    let claims_param: Option<Value> = row.claims.as_deref().and_then(|c| serde_json::from_str(c).ok());
    let id_token = sign_id_token(
        st,
        &IdTokenInput {
            issuer: &st.settings.issuer,
            client_id: &client.client_id,
            consumer: &consumer,
            now,
            ttl: st.settings.id_token_ttl_secs,
            auth_time: row.auth_time,
            nonce: row.nonce.as_deref(),
            access_token: Some(&access_token),
            scope: &row.scope,
            claims_param: claims_param.as_ref(),
            lp_sdes: lp_sdes(le.as_ref(), &consumer),
        },
    )?;
    let id_token = finish_id_token(client, le.as_ref(), id_token, Flow::Code)?;
    st.metrics.redemption(crate::metrics::Redemption::Ok);
    st.metrics.access_token_issued();
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: st.settings.access_token_ttl_secs,
        id_token,
        scope: row.scope,
    })
}

/// RFC 6749 §4.1.3: the token request repeats the authorization request's redirect_uri.
/// LiveEngage's legacy connectors send a different registered URI (`https://liveperson.net`)
/// than the window URL they authorized with, so for a LiveEngage client any URI registered
/// for that client is accepted too; every other client needs the exact one.
fn redirect_uri_binds(client: &Client, liveengage: bool, given: Option<&str>, bound: &str) -> bool {
    match given {
        Some(g) if g == bound => true,
        Some(g) => liveengage && client.redirect_uris.iter().any(|r| r == g),
        None => false,
    }
}

/// What the embedded window's JavaScript method hands to LiveEngage.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Embedded {
    IdToken { id_token: String, expires_in: i64 },
    Code { code: String, redirect_uri: String, expires_in: i64 },
}

/// Mints a fresh id_token (implicit) or code (code flow) for the logged-in consumer, out of
/// band, for a LiveEngage client's embedded window.
pub async fn embedded(
    st: &AppState,
    client: &Client,
    consumer: &Consumer,
    auth_time: i64,
    flow: Flow,
    code_challenge: Option<&str>,
    redirect_uri: Option<&str>,
) -> Result<Embedded, OAuthError> {
    let now = st.now();
    let le = liveengage::profile(client);
    match flow {
        Flow::Implicit => {
            let jws = sign_id_token(
                st,
                &IdTokenInput {
                    issuer: &st.settings.issuer,
                    client_id: &client.client_id,
                    consumer,
                    now,
                    ttl: st.settings.id_token_ttl_secs,
                    auth_time,
                    nonce: None,
                    access_token: None,
                    scope: liveengage::SCOPE,
                    claims_param: None,
                    lp_sdes: lp_sdes(le.as_ref(), consumer),
                },
            )?;
            Ok(Embedded::IdToken {
                id_token: finish_id_token(client, le.as_ref(), jws, Flow::Implicit)?,
                expires_in: st.settings.id_token_ttl_secs,
            })
        }
        Flow::Code => {
            let redirect_uri = redirect_uri.unwrap_or(liveengage::LIVEPERSON_REDIRECT);
            if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
                return Err(OAuthError::invalid_request("redirect_uri is not registered for this client"));
            }
            if let Some(c) = code_challenge {
                if !crate::oidc::authorize::valid_challenge(c) {
                    return Err(OAuthError::invalid_request("code_challenge is not a valid S256 challenge"));
                }
            }
            let code = issue_code(
                st,
                consumer,
                now,
                CodeBinding {
                    client_id: client.client_id.clone(),
                    redirect_uri: redirect_uri.to_string(),
                    scope: liveengage::SCOPE.to_string(),
                    nonce: None,
                    auth_time,
                    code_challenge: code_challenge.map(str::to_string),
                    claims: None,
                },
            )
            .await?;
            Ok(Embedded::Code { code, redirect_uri: redirect_uri.to_string(), expires_in: st.settings.code_ttl_secs })
        }
    }
}

/// OIDC Core §5.3: the claims an access token may see.
pub async fn userinfo(st: &AppState, token: &str) -> Result<Value, OAuthError> {
    let invalid = || OAuthError::new(ErrorCode::InvalidToken, "the access token is invalid, expired or revoked");
    if token.len() > 512 {
        return Err(invalid());
    }
    let hash = token_hash(token);
    let row = st
        .store
        .live_access_token(&grant_key(token, &hash), &hash, st.now())
        .await
        .map_err(from_store)?
        .ok_or_else(invalid)?;
    let consumer = match st.store.consumer_by_id(&row.consumer_id).await {
        Ok(c) if !c.disabled => c,
        Ok(_) | Err(StoreError::NotFound) => return Err(invalid()),
        Err(e) => return Err(from_store(e)),
    };
    let claims_param: Option<Value> = row.claims.as_deref().and_then(|c| serde_json::from_str(c).ok());
    let mut m = claims::user_claims(&consumer, &claims::requested_names(&row.scope, claims_param.as_ref(), "userinfo"));
    m.insert("sub".into(), Value::String(consumer.id));
    Ok(Value::Object(m))
}
