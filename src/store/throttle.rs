//! Failed-login counters: fixed windows, incremented atomically in the database so every
//! instance counts the same attempts.

use super::{execute, on_pool, on_writer, Result, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub failures: i64,
    pub window_start: i64,
    pub last_failure: i64,
}

impl Store {
    /// The counters stored under `keys`, in the same order (`None` where there is none).
    pub async fn throttle_counters(&self, keys: &[String]) -> Result<Vec<Option<Counter>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let row: Option<(i64, i64, i64)> = on_pool!(self, |p| {
                sqlx::query_as("SELECT failures, window_start, last_failure FROM login_throttle WHERE key = $1")
                    .bind(k)
                    .fetch_optional(p)
                    .await
            })?;
            out.push(row.map(|(failures, window_start, last_failure)| Counter {
                failures,
                window_start,
                last_failure,
            }));
        }
        Ok(out)
    }

    /// Counts one failure (or one attempt, reserved before it is checked) under `key`,
    /// atomically, and returns the count after it: a window older than `window` seconds
    /// starts again.
    pub async fn throttle_fail(&self, key: &str, now: i64, window: i64) -> Result<i64> {
        let (n,): (i64,) = on_writer!(self, |p| {
            sqlx::query_as(
                "INSERT INTO login_throttle (key, failures, window_start, last_failure) VALUES ($1, 1, $2, $2) \
                 ON CONFLICT (key) DO UPDATE SET \
                   failures = CASE WHEN login_throttle.window_start <= $3 THEN 1 ELSE login_throttle.failures + 1 END, \
                   window_start = CASE WHEN login_throttle.window_start <= $3 THEN $2 ELSE login_throttle.window_start END, \
                   last_failure = $2 \
                 RETURNING failures"
            )
            .bind(key)
            .bind(now)
            .bind(now - window)
            .fetch_one(p)
            .await
        })?;
        Ok(n)
    }

    /// Takes back one reserved attempt (it turned out to be a success).
    pub async fn throttle_undo(&self, key: &str) -> Result<()> {
        execute!(
            self,
            sqlx::query("UPDATE login_throttle SET failures = failures - 1 WHERE key = $1 AND failures > 0").bind(key)
        )?;
        Ok(())
    }

    pub async fn throttle_clear(&self, key: &str) -> Result<()> {
        execute!(self, sqlx::query("DELETE FROM login_throttle WHERE key = $1").bind(key))?;
        Ok(())
    }

    /// Deletes up to `batch` counters whose window ended.
    pub async fn delete_stale_throttles(&self, now: i64, window: i64, batch: i64) -> Result<u64> {
        let n = execute!(
            self,
            sqlx::query(
                "DELETE FROM login_throttle WHERE key IN \
                 (SELECT key FROM login_throttle WHERE window_start <= $1 LIMIT $2)"
            )
            .bind(now - window)
            .bind(batch)
        )?;
        Ok(n)
    }
}
