//! Consumers: the people who log in.

use serde::{Deserialize, Serialize};

use super::{execute, from_json, json_text, on_pool, on_writer, storable, BeginWrite, Result, Store, StoreError};

/// Standard OpenID Connect profile claims of a consumer (OIDC Core §5.1). Absent fields are
/// simply not released.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birthdate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zoneinfo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<serde_json::Value>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Consumer {
    /// The subject identifier (`sub`): opaque and stable.
    pub id: String,
    pub username: String,
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub profile: Profile,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lp_attributes: Option<serde_json::Value>,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "<redacted>"))
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct NewConsumer {
    pub id: String,
    pub username: String,
    pub password_hash: Option<String>,
    pub profile: Profile,
    pub lp_attributes: Option<serde_json::Value>,
}

impl std::fmt::Debug for NewConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewConsumer").field("id", &self.id).field("username", &self.username).finish_non_exhaustive()
    }
}

/// The form under which usernames are unique: case-insensitive, Unicode-aware.
pub fn username_key(username: &str) -> String {
    username.trim().to_lowercase()
}

type Row = (String, String, Option<String>, String, Option<String>, bool, i64, i64);

const COLUMNS: &str = "id, username, password_hash, claims, lp_attributes, disabled, created_at, updated_at";

fn from_row(r: Row) -> Result<Consumer> {
    Ok(Consumer {
        id: r.0,
        username: r.1,
        password_hash: r.2,
        profile: from_json(&r.3, "consumer claims")?,
        lp_attributes: r.4.as_deref().map(|s| from_json(s, "consumer attributes")).transpose()?,
        disabled: r.5,
        created_at: r.6,
        updated_at: r.7,
    })
}

impl Store {
    pub async fn create_consumer(&self, c: &NewConsumer, now: i64) -> Result<Consumer> {
        let sql = format!(
            "INSERT INTO consumers (id, username, username_key, password_hash, claims, lp_attributes, disabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $7) RETURNING {COLUMNS}"
        );
        let attrs = c.lp_attributes.as_ref().map(json_text);
        let row: Row = on_writer!(self, |p| {
            sqlx::query_as(&sql)
                .bind(&c.id)
                .bind(c.username.trim())
                .bind(username_key(&c.username))
                .bind(&c.password_hash)
                .bind(json_text(&c.profile))
                .bind(&attrs)
                .bind(now)
                .fetch_one(p)
                .await
        })?;
        from_row(row)
    }

    pub async fn consumer_by_username(&self, username: &str) -> Result<Consumer> {
        if !storable(username) {
            return Err(StoreError::NotFound);
        }
        let sql = format!("SELECT {COLUMNS} FROM consumers WHERE username_key = $1");
        let row: Option<Row> =
            on_pool!(self, |p| { sqlx::query_as(&sql).bind(username_key(username)).fetch_optional(p).await })?;
        from_row(row.ok_or(StoreError::NotFound)?)
    }

    pub async fn consumer_by_id(&self, id: &str) -> Result<Consumer> {
        if !storable(id) {
            return Err(StoreError::NotFound);
        }
        let sql = format!("SELECT {COLUMNS} FROM consumers WHERE id = $1");
        let row: Option<Row> = on_pool!(self, |p| sqlx::query_as(&sql).bind(id).fetch_optional(p).await)?;
        from_row(row.ok_or(StoreError::NotFound)?)
    }

    /// Consumers ordered by username, `limit` at a time after `after` (a username key).
    pub async fn list_consumers(&self, after: Option<&str>, limit: i64) -> Result<Vec<Consumer>> {
        let sql = format!("SELECT {COLUMNS} FROM consumers WHERE username_key > $1 ORDER BY username_key LIMIT $2");
        let after = after.map(username_key).unwrap_or_default();
        let rows: Vec<Row> = on_pool!(self, |p| { sqlx::query_as(&sql).bind(&after).bind(limit).fetch_all(p).await })?;
        rows.into_iter().map(from_row).collect()
    }

    pub async fn set_consumer_password(&self, username: &str, hash: &str, now: i64) -> Result<()> {
        let n = execute!(
            self,
            sqlx::query("UPDATE consumers SET password_hash = $1, updated_at = $2 WHERE username_key = $3")
                .bind(hash)
                .bind(now)
                .bind(username_key(username))
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Replaces a stored hash only if it is still the one that was verified, so a re-hash
    /// on login never overwrites a password an admin set in the meantime.
    pub async fn upgrade_password_hash(&self, id: &str, old: &str, new: &str, now: i64) -> Result<bool> {
        let n = execute!(
            self,
            sqlx::query(
                "UPDATE consumers SET password_hash = $1, updated_at = $2 WHERE id = $3 AND password_hash = $4"
            )
            .bind(new)
            .bind(now)
            .bind(id)
            .bind(old)
        )?;
        Ok(n == 1)
    }

    /// Inserts or updates imported consumers in one transaction, keyed by username. The
    /// subject is kept: a record whose subject differs from the existing consumer's is not
    /// applied (`false` in its place). A record without a password hash keeps the stored
    /// one. Any database error rolls the whole batch back.
    pub async fn upsert_imported(&self, records: &[crate::consumers::import::Record], now: i64) -> Result<Vec<bool>> {
        const SQL: &str = "INSERT INTO consumers (id, username, username_key, password_hash, claims, lp_attributes, disabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (username_key) DO UPDATE SET username = excluded.username, \
               password_hash = COALESCE(excluded.password_hash, consumers.password_hash), claims = excluded.claims, \
               lp_attributes = excluded.lp_attributes, disabled = excluded.disabled, updated_at = excluded.updated_at \
             WHERE $9 = FALSE OR consumers.id = excluded.id \
             RETURNING id";
        on_writer!(self, |p| {
            let mut tx = p.begin_write().await?;
            let mut applied = Vec::with_capacity(records.len());
            for r in records {
                let id = r.subject.clone().unwrap_or_else(crate::consumers::new_subject);
                let row: Option<(String,)> = sqlx::query_as(SQL)
                    .bind(&id)
                    .bind(&r.username)
                    .bind(username_key(&r.username))
                    .bind(&r.password_hash)
                    .bind(json_text(&r.profile))
                    .bind(r.lp_sdes.as_ref().map(json_text))
                    .bind(r.disabled)
                    .bind(now)
                    .bind(r.subject.is_some())
                    .fetch_optional(&mut *tx)
                    .await?;
                if let (Some((id,)), true) = (&row, r.disabled) {
                    // A consumer disabled by import loses their tokens, as with `consumer disable`.
                    sqlx::query("UPDATE grants SET revoked_at = $1 WHERE consumer_id = $2 AND revoked_at IS NULL")
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                applied.push(row.is_some());
            }
            tx.commit().await?;
            Ok(applied)
        })
    }

    /// Disabling also revokes the consumer's codes and access tokens (sessions and code
    /// redemption check the flag as well).
    pub async fn set_consumer_disabled(&self, username: &str, disabled: bool, now: i64) -> Result<()> {
        if disabled {
            execute!(
                self,
                sqlx::query(
                    "UPDATE grants SET revoked_at = $1 WHERE revoked_at IS NULL AND consumer_id IN \
                     (SELECT id FROM consumers WHERE username_key = $2)"
                )
                .bind(now)
                .bind(username_key(username))
            )?;
        }
        let n = execute!(
            self,
            sqlx::query("UPDATE consumers SET disabled = $1, updated_at = $2 WHERE username_key = $3")
                .bind(disabled)
                .bind(now)
                .bind(username_key(username))
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn set_consumer_attributes(
        &self,
        username: &str,
        attrs: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<()> {
        let text = attrs.map(json_text);
        let n = execute!(
            self,
            sqlx::query("UPDATE consumers SET lp_attributes = $1, updated_at = $2 WHERE username_key = $3")
                .bind(&text)
                .bind(now)
                .bind(username_key(username))
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Deletes the consumer and every code and token issued for them.
    pub async fn delete_consumer(&self, username: &str) -> Result<()> {
        let key = username_key(username);
        let n = on_writer!(self, |p| {
            let mut tx = p.begin_write().await?;
            let id: Option<(String,)> = sqlx::query_as("SELECT id FROM consumers WHERE username_key = $1")
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((id,)) = id else {
                return Err(StoreError::NotFound);
            };
            sqlx::query("DELETE FROM grants WHERE consumer_id = $1").bind(&id).execute(&mut *tx).await?;
            let n =
                sqlx::query("DELETE FROM consumers WHERE id = $1").bind(&id).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok::<u64, StoreError>(n)
        })?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
