//! Browser login sessions, keyed by the SHA-256 of the session id.

use super::{execute, on_pool, Result, Store};

impl Store {
    /// Inserts a session only if its id is new; returns whether it was inserted.
    pub async fn insert_session(&self, id_hash: &str, data: &str, expires_at: i64) -> Result<bool> {
        let n = execute!(
            self,
            sqlx::query("INSERT INTO sessions (id_hash, data, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(id_hash)
                .bind(data)
                .bind(expires_at)
        )?;
        Ok(n == 1)
    }

    pub async fn save_session(&self, id_hash: &str, data: &str, expires_at: i64) -> Result<()> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO sessions (id_hash, data, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id_hash) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
            )
            .bind(id_hash)
            .bind(data)
            .bind(expires_at)
        )?;
        Ok(())
    }

    pub async fn load_session(&self, id_hash: &str, now: i64) -> Result<Option<(String, i64)>> {
        let row: Option<(String, i64)> = on_pool!(self, |p| {
            sqlx::query_as("SELECT data, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > $2")
                .bind(id_hash)
                .bind(now)
                .fetch_optional(p)
                .await
        })?;
        Ok(row)
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        execute!(self, sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash))?;
        Ok(())
    }

    pub async fn count_rows(&self, table: &str) -> Result<i64> {
        let table = match table {
            "sessions" | "grants" | "consumers" | "clients" | "signing_keys" | "login_throttle" => table,
            _ => return Ok(0),
        };
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let (n,): (i64,) = on_pool!(self, |p| sqlx::query_as(&sql).fetch_one(p).await)?;
        Ok(n)
    }
}
