//! Clients: the relying parties registered with brand-idp.

use serde::{Deserialize, Serialize};

use super::{execute, from_json, json_text, on_pool, on_writer, storable, BeginWrite, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::None => "none",
        }
    }
    pub fn parse(s: &str) -> Option<AuthMethod> {
        match s {
            "client_secret_basic" => Some(AuthMethod::ClientSecretBasic),
            "client_secret_post" => Some(AuthMethod::ClientSecretPost),
            "none" => Some(AuthMethod::None),
            _ => None,
        }
    }
}

#[derive(Clone, Serialize)]
pub struct Client {
    pub client_id: String,
    #[serde(skip)]
    pub secret_hash: Option<String>,
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub response_types: Vec<String>,
    pub auth_method: AuthMethod,
    /// Per-client options (the LiveEngage profile lives here).
    pub options: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("secret_hash", &self.secret_hash.as_ref().map(|_| "<redacted>"))
            .field("redirect_uris", &self.redirect_uris)
            .field("auth_method", &self.auth_method)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.auth_method == AuthMethod::None
    }
}

#[derive(Clone)]
pub struct NewClient {
    pub client_id: String,
    pub secret_hash: Option<String>,
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub response_types: Vec<String>,
    pub auth_method: AuthMethod,
    pub options: serde_json::Value,
}

impl std::fmt::Debug for NewClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewClient").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

type Row = (String, Option<String>, Option<String>, String, String, String, String, String, i64, i64);

const COLUMNS: &str = "client_id, secret_hash, name, redirect_uris, post_logout_redirect_uris, response_types, \
                       auth_method, options, created_at, updated_at";

fn from_row(r: Row) -> Result<Client> {
    Ok(Client {
        client_id: r.0,
        secret_hash: r.1,
        name: r.2,
        redirect_uris: from_json(&r.3, "client redirect_uris")?,
        post_logout_redirect_uris: from_json(&r.4, "client post_logout_redirect_uris")?,
        response_types: from_json(&r.5, "client response_types")?,
        auth_method: AuthMethod::parse(&r.6).ok_or_else(|| StoreError::Corrupt(format!("auth method {:?}", r.6)))?,
        options: from_json(&r.7, "client options")?,
        created_at: r.8,
        updated_at: r.9,
    })
}

impl Store {
    pub async fn create_client(&self, c: &NewClient, now: i64) -> Result<Client> {
        let sql = format!(
            "INSERT INTO clients ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING {COLUMNS}"
        );
        let row: Row = on_writer!(self, |p| {
            sqlx::query_as(&sql)
                .bind(&c.client_id)
                .bind(&c.secret_hash)
                .bind(&c.name)
                .bind(json_text(&c.redirect_uris))
                .bind(json_text(&c.post_logout_redirect_uris))
                .bind(json_text(&c.response_types))
                .bind(c.auth_method.as_str())
                .bind(json_text(&c.options))
                .bind(now)
                .fetch_one(p)
                .await
        })?;
        from_row(row)
    }

    /// Overwrites everything but the id, the secret and the creation time.
    pub async fn update_client(&self, c: &Client, now: i64) -> Result<()> {
        let n = execute!(self, sqlx::query(
                "UPDATE clients SET name = $1, redirect_uris = $2, post_logout_redirect_uris = $3, response_types = $4, \
                 auth_method = $5, options = $6, updated_at = $7 WHERE client_id = $8",
            )
            .bind(&c.name)
            .bind(json_text(&c.redirect_uris))
            .bind(json_text(&c.post_logout_redirect_uris))
            .bind(json_text(&c.response_types))
            .bind(c.auth_method.as_str())
            .bind(json_text(&c.options))
            .bind(now)
            .bind(&c.client_id))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn client(&self, client_id: &str) -> Result<Client> {
        if !storable(client_id) {
            return Err(StoreError::NotFound);
        }
        let sql = format!("SELECT {COLUMNS} FROM clients WHERE client_id = $1");
        let row: Option<Row> = on_pool!(self, |p| sqlx::query_as(&sql).bind(client_id).fetch_optional(p).await)?;
        from_row(row.ok_or(StoreError::NotFound)?)
    }

    pub async fn list_clients(&self) -> Result<Vec<Client>> {
        let sql = format!("SELECT {COLUMNS} FROM clients ORDER BY client_id");
        let rows: Vec<Row> = on_pool!(self, |p| sqlx::query_as(&sql).fetch_all(p).await)?;
        rows.into_iter().map(from_row).collect()
    }

    pub async fn set_client_secret_hash(&self, client_id: &str, hash: &str, now: i64) -> Result<()> {
        let n = execute!(
            self,
            sqlx::query(
                "UPDATE clients SET secret_hash = $1, updated_at = $2 WHERE client_id = $3 AND secret_hash IS NOT NULL"
            )
            .bind(hash)
            .bind(now)
            .bind(client_id)
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Deletes the client and every code and token issued to it.
    pub async fn delete_client(&self, client_id: &str) -> Result<()> {
        let n = on_writer!(self, |p| {
            let mut tx = p.begin_write().await?;
            sqlx::query("DELETE FROM grants WHERE client_id = $1").bind(client_id).execute(&mut *tx).await?;
            let n = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                .bind(client_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(n)
        })?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
