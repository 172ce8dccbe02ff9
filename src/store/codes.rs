//! Authorization codes and access tokens, stored by hash, each carrying its grant id.

use super::{execute, on_pool, Result, Store};

#[derive(Debug, Clone)]
pub struct AuthCodeRow {
    pub code_hash: String,
    pub grant_id: String,
    pub client_id: String,
    pub consumer_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    pub code_challenge: Option<String>,
    pub claims: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct AccessTokenRow {
    pub token_hash: String,
    pub grant_id: String,
    pub client_id: String,
    pub consumer_id: String,
    pub scope: String,
    pub claims: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What redeeming a code found.
#[derive(Debug)]
pub enum Redeemed {
    /// The code was valid and is now used; this caller is the only one that will ever see it.
    Fresh(Box<AuthCodeRow>),
    /// The code had been used already: its grant's tokens are now revoked.
    Replayed { client_id: String },
    /// Unknown or expired.
    Invalid,
}

type CodeRow =
    (String, String, String, String, String, String, Option<String>, i64, Option<String>, Option<String>, i64, i64);

const CODE_COLUMNS: &str = "code_hash, grant_id, client_id, consumer_id, redirect_uri, scope, nonce, auth_time, \
                            code_challenge, claims, created_at, expires_at";

impl Store {
    pub async fn insert_code(&self, c: &AuthCodeRow) -> Result<()> {
        let sql = format!(
            "INSERT INTO auth_codes ({CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        execute!(
            self,
            sqlx::query(&sql)
                .bind(&c.code_hash)
                .bind(&c.grant_id)
                .bind(&c.client_id)
                .bind(&c.consumer_id)
                .bind(&c.redirect_uri)
                .bind(&c.scope)
                .bind(&c.nonce)
                .bind(c.auth_time)
                .bind(&c.code_challenge)
                .bind(&c.claims)
                .bind(c.created_at)
                .bind(c.expires_at)
        )?;
        Ok(())
    }

    /// Marks the code used in one atomic statement; of any number of concurrent callers,
    /// exactly one gets `Fresh`. A second use revokes every token of the code's grant.
    pub async fn redeem_code(&self, code_hash: &str, now: i64) -> Result<Redeemed> {
        let sql = format!(
            "UPDATE auth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1 \
             RETURNING {CODE_COLUMNS}"
        );
        let row: Option<CodeRow> = {
            let _gate = self.write_gate().await;
            on_pool!(self, |p| { sqlx::query_as(&sql).bind(now).bind(code_hash).fetch_optional(p).await })?
        };
        if let Some(r) = row {
            return Ok(Redeemed::Fresh(Box::new(AuthCodeRow {
                code_hash: r.0,
                grant_id: r.1,
                client_id: r.2,
                consumer_id: r.3,
                redirect_uri: r.4,
                scope: r.5,
                nonce: r.6,
                auth_time: r.7,
                code_challenge: r.8,
                claims: r.9,
                created_at: r.10,
                expires_at: r.11,
            })));
        }
        let used: Option<(String, String)> = on_pool!(self, |p| {
            sqlx::query_as("SELECT grant_id, client_id FROM auth_codes WHERE code_hash = $1 AND used_at IS NOT NULL")
                .bind(code_hash)
                .fetch_optional(p)
                .await
        })?;
        match used {
            Some((grant_id, client_id)) => {
                self.revoke_grant(&grant_id, now).await?;
                Ok(Redeemed::Replayed { client_id })
            }
            None => Ok(Redeemed::Invalid),
        }
    }

    /// Revokes every access token issued from a grant.
    pub async fn revoke_grant(&self, grant_id: &str, now: i64) -> Result<u64> {
        let n = execute!(
            self,
            sqlx::query("UPDATE access_tokens SET revoked_at = $1 WHERE grant_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(grant_id)
        )?;
        Ok(n)
    }

    pub async fn insert_access_token(&self, t: &AccessTokenRow) -> Result<()> {
        execute!(self, sqlx::query(
                "INSERT INTO access_tokens (token_hash, grant_id, client_id, consumer_id, scope, claims, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&t.token_hash)
            .bind(&t.grant_id)
            .bind(&t.client_id)
            .bind(&t.consumer_id)
            .bind(&t.scope)
            .bind(&t.claims)
            .bind(t.created_at)
            .bind(t.expires_at))?;
        Ok(())
    }

    /// A live (unexpired, unrevoked) access token.
    pub async fn live_access_token(&self, token_hash: &str, now: i64) -> Result<Option<AccessTokenRow>> {
        type Row = (String, String, String, String, String, Option<String>, i64, i64);
        let row: Option<Row> = on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT token_hash, grant_id, client_id, consumer_id, scope, claims, created_at, expires_at \
                 FROM access_tokens WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(p)
            .await
        })?;
        Ok(row.map(|r| AccessTokenRow {
            token_hash: r.0,
            grant_id: r.1,
            client_id: r.2,
            consumer_id: r.3,
            scope: r.4,
            claims: r.5,
            created_at: r.6,
            expires_at: r.7,
        }))
    }

    /// Deletes up to `batch` expired rows from each short-lived table; returns how many went.
    /// Codes are kept `code_grace` seconds past their expiry (the access-token lifetime), so a
    /// replay of a used code still revokes the grant's tokens while they could be in use.
    pub async fn delete_expired(&self, now: i64, code_grace: i64, batch: i64) -> Result<u64> {
        let mut total = 0;
        for table in ["auth_codes", "access_tokens", "sessions"] {
            let key = match table {
                "auth_codes" => "code_hash",
                "access_tokens" => "token_hash",
                _ => "id_hash",
            };
            let sql = format!(
                "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE expires_at <= $1 LIMIT $2)"
            );
            let cutoff = if table == "auth_codes" { now - code_grace } else { now };
            total += execute!(self, sqlx::query(&sql).bind(cutoff).bind(batch))?;
        }
        Ok(total)
    }
}
