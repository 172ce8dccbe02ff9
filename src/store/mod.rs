//! Persistence. One [`Store`] over either PostgreSQL or SQLite.
//!
//! Both backends run the very same SQL text: `$N` placeholders, `ON CONFLICT`, `RETURNING`,
//! integer Unix times and JSON kept as text all mean the same on both. What differs between
//! them (connecting, pragmas, the lock that serialises migrations, the DDL dialect) lives in
//! this file and in `migrations/{postgres,sqlite}`; nothing above this module knows which
//! backend it talks to.

mod clients;
mod codes;
mod consumers;
mod keys;
mod sessions;
mod throttle;

pub use clients::{AuthMethod, Client, NewClient};
pub use codes::{AccessTokenRow, AuthCodeRow, NewAccessToken, Redeemed};
pub use consumers::{username_key, Consumer, NewConsumer, Profile};
pub use keys::{KeyState, StoredKey};
pub use throttle::Counter;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::config::Settings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    /// The database cannot be reached right now (pool timeout, connection refused, closed).
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            // SQLITE_BUSY / SQLITE_LOCKED after the busy timeout; PostgreSQL's connection
            // exceptions (08xxx), shutdowns (57P0x), statement timeout (57014) and resource
            // exhaustion (53xxx): transient, not a bug.
            sqlx::Error::Database(d)
                if d.code().is_some_and(|c| {
                    c == "5"
                        || c == "6"
                        || c.starts_with("08")
                        || c.starts_with("57P")
                        || c == "57014"
                        || c == "55P03"
                        || c.starts_with("53")
                }) =>
            {
                StoreError::Unavailable(e)
            }
            _ => StoreError::Other(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone)]
pub(crate) enum Db {
    Postgres(PgPool),
    /// SQLite has one writer at a time, so this process writes through one connection of its
    /// own (`write`, a pool of one): writes queue for it fairly, without SQLite's busy handler,
    /// which backs off in milliseconds, and its page cache stays warm, as no other connection
    /// of this process writes (SQLite empties a connection's cache whenever another one has
    /// written). Reads use `read`.
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
    },
}

/// Runs the same body against whichever pool the store holds (on SQLite, the readers). The
/// body is compiled once per backend, so a query that does not type-check on both does not
/// compile.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            $crate::store::Db::Postgres($pool) => $body,
            $crate::store::Db::Sqlite { read: $pool, .. } => $body,
        }
    };
}
pub(crate) use on_pool;

/// Like `on_pool!`, for a body that writes: on SQLite it runs on the writer connection.
/// `on_writer!(db: <&Db>, ...)` takes the databases themselves instead of a store.
macro_rules! on_writer {
    (db: $db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Postgres($pool) => $body,
            $crate::store::Db::Sqlite { write: $pool, .. } => $body,
        }
    };
    ($store:expr, |$pool:ident| $body:expr) => {
        $crate::store::on_writer!(db: &$store.db, |$pool| $body)
    };
}
pub(crate) use on_writer;

/// Starts a transaction that writes, on the pool `on_writer!` gives. On SQLite it is
/// `BEGIN IMMEDIATE`: the write lock is taken first (waiting up to the busy timeout), so a
/// transaction that reads before it writes cannot fail at its first write because another
/// process (the admin CLI beside a running server, say) wrote in between.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> std::result::Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>;
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> std::result::Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error> {
        self.begin().await
    }
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> std::result::Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Executes a statement built by `$query` (on SQLite, on the writer connection) and returns
/// the number of rows it affected.
macro_rules! execute {
    ($store:expr, $query:expr) => {{
        $crate::store::on_writer!($store, |pool| $query.execute(pool).await.map(|r| r.rows_affected()))
    }};
}
pub(crate) use execute;

#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) db: Db,
    /// Code redemptions waiting at the same moment are applied in one statement.
    redeemer: codes::Redeemer,
}

struct Migration {
    version: i64,
    name: &'static str,
    postgres: &'static str,
    sqlite: &'static str,
}

/// Embedded, forward-only migrations.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        postgres: include_str!("../../migrations/postgres/0001_init.sql"),
        sqlite: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "login_throttle",
        postgres: include_str!("../../migrations/postgres/0002_login_throttle.sql"),
        sqlite: include_str!("../../migrations/sqlite/0002_login_throttle.sql"),
    },
    Migration {
        version: 3,
        name: "grants",
        postgres: include_str!("../../migrations/postgres/0003_grants.sql"),
        sqlite: include_str!("../../migrations/sqlite/0003_grants.sql"),
    },
];

/// An arbitrary, fixed advisory-lock key: "bidp" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x6269_6470;

/// SQLite connections of one process: each is a thread with its own page cache, emptied
/// whenever another connection writes, and writes go one at a time anyway. More readers than
/// twice the cores only add thread switches and cold caches.
fn sqlite_connections(configured: u32) -> u32 {
    let cores = crate::config::usable_cores() as u32;
    configured.clamp(1, (2 * cores).max(2))
}

impl Store {
    /// Opens the database the settings name (creating the embedded SQLite file if needed).
    /// Does not migrate.
    pub async fn connect(settings: &Settings) -> Result<Store> {
        let acquire = Duration::from_secs(settings.db_acquire_timeout_secs);
        match &settings.database_url {
            Some(url) if settings.uses_postgres() => {
                // A statement that runs (or waits on a lock) this long is cancelled, so a stuck
                // database turns into errors rather than requests that never finish.
                let opts = PgConnectOptions::from_str(url.expose())
                    .map_err(StoreError::Other)?
                    .options([("statement_timeout", "5s"), ("lock_timeout", "5s")]);
                // One direct attempt first, so "connection refused" or "no such database"
                // reaches the operator instead of a generic pool timeout.
                match tokio::time::timeout(acquire, <sqlx::PgConnection as sqlx::Connection>::connect_with(&opts)).await
                {
                    Ok(Ok(conn)) => {
                        let _ = sqlx::Connection::close(conn).await;
                    }
                    Ok(Err(e)) => return Err(StoreError::Unavailable(e)),
                    Err(_) => return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
                }
                // No ping before every checkout: it is a round trip to the server per query.
                // A connection that died is found by the query that uses it (an error, 503),
                // and the pool's own check when the connection is returned drops it.
                let pool = PgPoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(settings.db_max_connections.max(2))
                    .acquire_timeout(acquire)
                    .connect_with(opts)
                    .await?;
                let redeemer = codes::Redeemer::spawn(Db::Postgres(pool.clone()));
                Ok(Store { db: Db::Postgres(pool), redeemer })
            }
            Some(url) => {
                let opts = SqliteConnectOptions::from_str(url.expose()).map_err(StoreError::Other)?;
                Self::open_sqlite(opts.create_if_missing(true), settings, acquire).await
            }
            None => {
                std::fs::create_dir_all(&settings.data_dir).map_err(|e| StoreError::Unavailable(e.into()))?;
                let opts = SqliteConnectOptions::new().filename(settings.sqlite_path()).create_if_missing(true);
                Self::open_sqlite(opts, settings, acquire).await
            }
        }
    }

    async fn open_sqlite(opts: SqliteConnectOptions, settings: &Settings, acquire: Duration) -> Result<Store> {
        let opts = opts
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a committed transaction survives a crash of the process; only a
            // power loss can take back the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // A file does not hang up; the ping would be a thread round trip per query.
        let read = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(sqlite_connections(settings.db_max_connections))
            .acquire_timeout(acquire)
            .connect_with(opts.clone())
            .await?;
        let write = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .acquire_timeout(acquire)
            .connect_with(opts)
            .await?;
        let db = Db::Sqlite { read, write };
        let redeemer = codes::Redeemer::spawn(db.clone());
        Ok(Store { db, redeemer })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.db {
            Db::Postgres(_) => "postgres",
            Db::Sqlite { .. } => "sqlite",
        }
    }

    /// Applies every migration not yet applied. Safe to run from several processes at once:
    /// PostgreSQL serialises them with an advisory lock held for the transaction, SQLite with
    /// `BEGIN IMMEDIATE`. Returns the versions it applied.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let mut applied_now = Vec::new();
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK_KEY).execute(&mut *tx).await?;
                sqlx::raw_sql(
                    "CREATE TABLE IF NOT EXISTS brand_idp_migrations \
                     (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                )
                .execute(&mut *tx)
                .await?;
                let done: Vec<(i64,)> =
                    sqlx::query_as("SELECT version FROM brand_idp_migrations").fetch_all(&mut *tx).await?;
                for m in MIGRATIONS {
                    if done.iter().any(|(v,)| *v == m.version) {
                        continue;
                    }
                    sqlx::raw_sql(m.postgres).execute(&mut *tx).await?;
                    sqlx::query("INSERT INTO brand_idp_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                        .bind(m.version)
                        .bind(m.name)
                        .bind(crate::clock::Clock::now(&crate::clock::SystemClock))
                        .execute(&mut *tx)
                        .await?;
                    applied_now.push(m.version);
                }
                tx.commit().await?;
            }
            Db::Sqlite { write, .. } => {
                let mut conn = write.acquire().await?;
                sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                let result: Result<()> = async {
                    sqlx::raw_sql(
                        "CREATE TABLE IF NOT EXISTS brand_idp_migrations \
                         (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
                    )
                    .execute(&mut *conn)
                    .await?;
                    let done: Vec<(i64,)> =
                        sqlx::query_as("SELECT version FROM brand_idp_migrations").fetch_all(&mut *conn).await?;
                    for m in MIGRATIONS {
                        if done.iter().any(|(v,)| *v == m.version) {
                            continue;
                        }
                        sqlx::raw_sql(m.sqlite).execute(&mut *conn).await?;
                        sqlx::query("INSERT INTO brand_idp_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                            .bind(m.version)
                            .bind(m.name)
                            .bind(crate::clock::Clock::now(&crate::clock::SystemClock))
                            .execute(&mut *conn)
                            .await?;
                        applied_now.push(m.version);
                    }
                    Ok(())
                }
                .await;
                match result {
                    Ok(()) => {
                        sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
                    }
                    Err(e) => {
                        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                        return Err(e);
                    }
                }
            }
        }
        Ok(applied_now)
    }

    /// Runs `f` if no other instance is running maintenance right now (PostgreSQL: an
    /// advisory lock held by a transaction on one connection for the duration; `f` uses
    /// other connections, which is why the pool has at least two). SQLite has one host, so it always runs. Returns
    /// `None` when another instance holds the lock.
    pub async fn with_maintenance_lock<T, E, Fut>(&self, f: impl FnOnce() -> Fut) -> std::result::Result<Option<T>, E>
    where
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
        E: From<StoreError>,
    {
        self.with_lock(MaintenanceLock::Cleanup, f).await
    }

    /// As [`Store::with_maintenance_lock`], for one kind of upkeep. Cleanup skips when
    /// another instance is at it; key upkeep waits its turn (it is short, and a skipped
    /// check would only delay a rotation).
    pub async fn with_lock<T, E, Fut>(
        &self,
        which: MaintenanceLock,
        f: impl FnOnce() -> Fut,
    ) -> std::result::Result<Option<T>, E>
    where
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
        E: From<StoreError>,
    {
        let (key, wait): (i64, bool) = match which {
            MaintenanceLock::Cleanup => (0x6269_6470_0001, false),
            MaintenanceLock::Keys => (0x6269_6470_0002, true),
        };
        match &self.db {
            Db::Sqlite { .. } => {
                let _ = wait;
                f().await.map(Some)
            }
            Db::Postgres(pool) => {
                // A transaction-scoped lock: released at commit, at rollback, or when the
                // connection goes, even if this future is dropped half-way.
                let mut tx = pool.begin().await.map_err(StoreError::from)?;
                let got = if wait {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(key)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::from)?;
                    true
                } else {
                    let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(StoreError::from)?;
                    got
                };
                if !got {
                    return Ok(None);
                }
                let out = f().await;
                let _ = tx.commit().await;
                out.map(Some)
            }
        }
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        let _: (i64,) = on_pool!(self, |p| sqlx::query_as("SELECT CAST(1 AS BIGINT)").fetch_one(p).await)?;
        Ok(())
    }

    /// Number of connections in use and the pool's size, for metrics and readiness.
    pub fn pool_usage(&self) -> (u32, u32) {
        on_pool!(self, |p| (p.size() - p.num_idle() as u32, p.size()))
    }

    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await);
        if let Db::Sqlite { write, .. } = &self.db {
            write.close().await;
        }
    }

    /// SQLite's own consistency check (`PRAGMA integrity_check`); PostgreSQL answers "ok".
    pub async fn integrity_check(&self) -> Result<String> {
        match &self.db {
            Db::Sqlite { read: p, .. } => {
                let (s,): (String,) = sqlx::query_as("PRAGMA integrity_check").fetch_one(p).await?;
                Ok(s)
            }
            Db::Postgres(_) => Ok("ok".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceLock {
    Cleanup,
    Keys,
}

/// Creates the data directory readable only by its owner (it holds the database and the
/// secret key); an existing directory is left as it is.
pub fn ensure_private_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if p.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

/// Whether text can be a stored key at all: PostgreSQL text cannot hold NUL, so a lookup
/// with one is "not found" rather than a database error.
pub(crate) fn storable(s: &str) -> bool {
    !s.contains('\0') && s.len() <= 4096
}

pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialising plain data cannot fail")
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_pool_is_capped_at_twice_the_cores() {
        let cap = (2 * std::thread::available_parallelism().map_or(1, |n| n.get()) as u32).max(2);
        assert_eq!(super::sqlite_connections(1000), cap);
        assert_eq!(super::sqlite_connections(1), 1);
        assert_eq!(super::sqlite_connections(0), 1);
    }
}
