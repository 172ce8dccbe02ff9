//! Signing keys: public JWK in clear, private key sealed under the secret key.

use serde::Serialize;

use super::{execute, from_json, json_text, on_pool, on_writer, BeginWrite, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published in the JWKS, not signing yet.
    Next,
    /// The one key that signs.
    Active,
    /// No longer signing; published until `publish_until`.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
        }
    }
    fn parse(s: &str) -> Result<KeyState> {
        match s {
            "next" => Ok(KeyState::Next),
            "active" => Ok(KeyState::Active),
            "retired" => Ok(KeyState::Retired),
            _ => Err(StoreError::Corrupt(format!("key state {s:?}"))),
        }
    }
}

#[derive(Clone, Serialize)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub public_jwk: serde_json::Value,
    /// Sealed PKCS#8; opened only by `keys::`.
    #[serde(skip)]
    pub private_key: Vec<u8>,
    pub state: KeyState,
    pub created_at: i64,
    pub activate_at: Option<i64>,
    pub activated_at: Option<i64>,
    pub retired_at: Option<i64>,
    pub publish_until: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("state", &self.state)
            .field("private_key", &"<sealed>")
            .finish()
    }
}

type Row = (String, String, String, Vec<u8>, String, i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

const COLUMNS: &str =
    "kid, alg, public_jwk, private_key, state, created_at, activate_at, activated_at, retired_at, publish_until";

fn from_row(r: Row) -> Result<StoredKey> {
    Ok(StoredKey {
        kid: r.0,
        alg: r.1,
        public_jwk: from_json(&r.2, "public JWK")?,
        private_key: r.3,
        state: KeyState::parse(&r.4)?,
        created_at: r.5,
        activate_at: r.6,
        activated_at: r.7,
        retired_at: r.8,
        publish_until: r.9,
    })
}

impl Store {
    /// Inserts a key. An `active` key is inserted only if no other key is active (the
    /// partial unique index decides, atomically); returns whether it was inserted.
    pub async fn insert_key(&self, k: &StoredKey) -> Result<bool> {
        let sql = format!(
            "INSERT INTO signing_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
        );
        let n = execute!(
            self,
            sqlx::query(&sql)
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(json_text(&k.public_jwk))
                .bind(&k.private_key)
                .bind(k.state.as_str())
                .bind(k.created_at)
                .bind(k.activate_at)
                .bind(k.activated_at)
                .bind(k.retired_at)
                .bind(k.publish_until)
        )?;
        Ok(n == 1)
    }

    pub async fn all_keys(&self) -> Result<Vec<StoredKey>> {
        let sql = format!("SELECT {COLUMNS} FROM signing_keys ORDER BY created_at, kid");
        let rows: Vec<Row> = on_pool!(self, |p| sqlx::query_as(&sql).fetch_all(p).await)?;
        rows.into_iter().map(from_row).collect()
    }

    /// Keys that belong in the JWKS at `now`: next, active, and retired ones still published.
    pub async fn published_keys(&self, now: i64) -> Result<Vec<StoredKey>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM signing_keys WHERE state <> 'retired' OR publish_until > $1 ORDER BY created_at, kid"
        );
        let rows: Vec<Row> = on_pool!(self, |p| sqlx::query_as(&sql).bind(now).fetch_all(p).await)?;
        rows.into_iter().map(from_row).collect()
    }

    /// Makes `new_active` the signing key: the current active key (if any) is retired and
    /// stays published until `publish_until`. One transaction; if another rotation wins the
    /// race, this one fails with `Conflict` and changes nothing.
    pub async fn activate_key(&self, kid: &str, now: i64, publish_until: i64) -> Result<()> {
        on_writer!(self, |p| {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "UPDATE signing_keys SET state = 'retired', retired_at = $1, publish_until = $2 \
                 WHERE state = 'active' AND kid <> $3",
            )
            .bind(now)
            .bind(publish_until)
            .bind(kid)
            .execute(&mut *tx)
            .await?;
            let n = sqlx::query(
                "UPDATE signing_keys SET state = 'active', activated_at = $1 WHERE kid = $2 AND state = 'next'",
            )
            .bind(now)
            .bind(kid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(StoreError::Conflict);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Next keys whose activation time has come, oldest first.
    pub async fn due_next_keys(&self, now: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT kid FROM signing_keys WHERE state = 'next' AND activate_at IS NOT NULL AND activate_at <= $1 \
                 ORDER BY activate_at, kid",
            )
            .bind(now)
            .fetch_all(p)
            .await
        })?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
