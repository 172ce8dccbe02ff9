//! Grants: an authorization code until it is redeemed, then the access token it was exchanged
//! for. Codes and tokens are stored by hash. One row per grant, so that redeeming a code and
//! recording its access token is one statement on the token endpoint's hot path.

use super::{execute, on_pool, on_writer, storable, Result, Store, StoreError};

/// A code as issued at the authorization endpoint.
#[derive(Debug, Clone)]
pub struct AuthCodeRow {
    pub code_hash: String,
    pub client_id: String,
    pub consumer_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    pub code_challenge: Option<String>,
    /// The request's `claims` parameter, JSON.
    pub claims: Option<String>,
    /// The consumer's claims when the code was issued, JSON (what the id_token will carry).
    pub subject: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An access token issued without a code.
#[derive(Debug, Clone)]
pub struct NewAccessToken<'a> {
    /// The grant's key, which no code hashes to.
    pub key: &'a str,
    pub token_hash: &'a str,
    pub client_id: &'a str,
    pub consumer_id: &'a str,
    pub scope: &'a str,
    /// The request's `claims` parameter, JSON.
    pub claims: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

/// A live access token: what `/userinfo` needs.
#[derive(Debug, Clone)]
pub struct AccessTokenRow {
    pub consumer_id: String,
    pub scope: String,
    pub claims: Option<String>,
    pub expires_at: i64,
}

/// What redeeming a code found.
#[derive(Debug)]
pub enum Redeemed {
    /// The code was valid and is now used, with the access token recorded; this caller is
    /// the only one that will ever see it.
    Fresh(Box<AuthCodeRow>),
    /// The code had been used already: its grant's token is now revoked.
    Replayed { client_id: String },
    /// Unknown, expired, revoked, or its consumer is disabled or gone.
    Invalid,
}

type CodeRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

/// What makes an unused code redeemable, besides its own expiry.
const REDEEMABLE: &str =
    "revoked_at IS NULL AND EXISTS (SELECT 1 FROM consumers c WHERE c.id = grants.consumer_id AND NOT c.disabled)";

const CODE_COLUMNS: &str = "code_hash, client_id, consumer_id, redirect_uri, scope, nonce, auth_time, \
                            code_challenge, claims, subject, created_at, expires_at";

impl Store {
    pub async fn insert_code(&self, c: &AuthCodeRow) -> Result<()> {
        let sql =
            format!("INSERT INTO grants ({CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)");
        execute!(
            self,
            sqlx::query(&sql)
                .bind(&c.code_hash)
                .bind(&c.client_id)
                .bind(&c.consumer_id)
                .bind(&c.redirect_uri)
                .bind(&c.scope)
                .bind(&c.nonce)
                .bind(c.auth_time)
                .bind(&c.code_challenge)
                .bind(&c.claims)
                .bind(&c.subject)
                .bind(c.created_at)
                .bind(c.expires_at)
        )?;
        Ok(())
    }

    /// Marks the code used and records the access token it is exchanged for, in one atomic
    /// statement; of any number of concurrent callers, exactly one gets `Fresh`. The code
    /// must be unexpired, unrevoked, and its consumer must exist and be enabled. A second
    /// use revokes the token of the code's grant.
    pub async fn redeem_code(
        &self,
        code_hash: &str,
        token_hash: &str,
        token_expires_at: i64,
        now: i64,
    ) -> Result<Redeemed> {
        let row: Option<CodeRow> = self.redeemer.redeem(code_hash, token_hash, token_expires_at, now).await?;
        if let Some(r) = row {
            return Ok(Redeemed::Fresh(Box::new(AuthCodeRow {
                code_hash: r.0,
                client_id: r.1,
                consumer_id: r.2,
                redirect_uri: r.3,
                scope: r.4,
                nonce: r.5,
                auth_time: r.6,
                code_challenge: r.7,
                claims: r.8,
                subject: r.9.unwrap_or_default(),
                created_at: r.10,
                expires_at: r.11,
            })));
        }
        // Not redeemable: was it used before? Then this is a replay, and the token issued
        // from it is revoked (RFC 6749 §4.1.2; RFC 9700 §4.5).
        let replayed: Option<(String,)> = on_writer!(self, |p| {
            sqlx::query_as(
                "UPDATE grants SET revoked_at = COALESCE(revoked_at, $1) \
                 WHERE code_hash = $2 AND used_at IS NOT NULL RETURNING client_id",
            )
            .bind(now)
            .bind(code_hash)
            .fetch_optional(p)
            .await
        })?;
        Ok(match replayed {
            Some((client_id,)) => Redeemed::Replayed { client_id },
            None => Redeemed::Invalid,
        })
    }

    /// An access token without a code (the implicit flow's `id_token token`): a grant that
    /// was used when it was made.
    pub async fn insert_access_token(&self, t: &NewAccessToken<'_>) -> Result<()> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO grants (code_hash, client_id, consumer_id, redirect_uri, scope, auth_time, claims, \
                 created_at, expires_at, used_at, token_hash, token_expires_at) \
                 VALUES ($1, $2, $3, '', $4, $5, $6, $5, $5, $5, $7, $8)",
            )
            .bind(t.key)
            .bind(t.client_id)
            .bind(t.consumer_id)
            .bind(t.scope)
            .bind(t.now)
            .bind(t.claims)
            .bind(t.token_hash)
            .bind(t.expires_at)
        )?;
        Ok(())
    }

    /// A live (unexpired, unrevoked) access token: the one whose hash the grant `key` recorded.
    pub async fn live_access_token(&self, key: &str, token_hash: &str, now: i64) -> Result<Option<AccessTokenRow>> {
        type Row = (String, String, Option<String>, Option<i64>);
        if !storable(key) {
            return Ok(None);
        }
        let row: Option<Row> = on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT consumer_id, scope, claims, token_expires_at FROM grants \
                 WHERE code_hash = $1 AND token_hash = $2 AND revoked_at IS NULL AND token_expires_at > $3",
            )
            .bind(key)
            .bind(token_hash)
            .bind(now)
            .fetch_optional(p)
            .await
        })?;
        Ok(row.map(|r| AccessTokenRow {
            consumer_id: r.0,
            scope: r.1,
            claims: r.2,
            expires_at: r.3.unwrap_or_default(),
        }))
    }

    /// Deletes up to `batch` expired rows from each short-lived table; returns how many went.
    /// Grants are kept `code_grace` seconds past their code's expiry (the access-token
    /// lifetime), so the token stays usable for its lifetime and a replay of a used code still
    /// revokes it while it could be in use.
    pub async fn delete_expired(&self, now: i64, code_grace: i64, batch: i64) -> Result<u64> {
        let mut total = 0;
        for (table, key, cutoff) in [("grants", "code_hash", now - code_grace), ("sessions", "id_hash", now)] {
            let sql = format!(
                "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE expires_at <= $1 LIMIT $2)"
            );
            total += execute!(self, sqlx::query(&sql).bind(cutoff).bind(batch))?;
        }
        Ok(total)
    }
}

/// Most redemptions one statement applies.
const MAX_BATCH: usize = 64;
/// Before a statement runs, the batcher lets every other task that is ready run first (a
/// yield): under load, those are requests on their way to redeeming a code, which then join
/// this statement; on a quiet server nothing is ready and the statement runs at once.
const YIELDS: usize = 4;

/// Group commit for the token endpoint: redemptions that arrive while one statement runs are
/// applied together by the next, as one `UPDATE ... RETURNING` in one transaction (on SQLite
/// through the writer connection). Each code still changes from unused to used exactly once
/// (the statement's `WHERE`), and a batch holds each code at most once, so single use holds as
/// it does one at a time; what a batch saves is the per-statement cost: a commit and its write
/// to the log (on PostgreSQL, a flush to disk), a round trip or a thread switch. Several
/// instances sharing one PostgreSQL database batch independently; a code redeemed by two of
/// them at once is decided by the row lock, as a single statement would be.
#[derive(Debug, Clone)]
pub(crate) struct Redeemer {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

#[derive(Debug)]
struct Job {
    code_hash: String,
    token_hash: String,
    token_expires_at: i64,
    now: i64,
    reply: tokio::sync::oneshot::Sender<Result<Option<CodeRow>>>,
}

/// The statement for `n` redemptions. Job `i` binds `$4i+1` code hash, `$4i+2` token hash,
/// `$4i+3` token expiry, `$4i+4` now.
fn batch_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (1..=MAX_BATCH)
            .map(|n| {
                let case = |k: usize| {
                    let arms: String = (0..n).map(|i| format!(" WHEN ${} THEN ${}", 4 * i + 1, 4 * i + k)).collect();
                    format!("CASE code_hash{arms} END")
                };
                let keys: Vec<String> = (0..n).map(|i| format!("${}", 4 * i + 1)).collect();
                format!(
                    "UPDATE grants SET used_at = {}, token_hash = {}, token_expires_at = {} \
                     WHERE code_hash IN ({}) AND used_at IS NULL AND expires_at > {} AND {REDEEMABLE} \
                     RETURNING {CODE_COLUMNS}",
                    case(4),
                    case(2),
                    case(3),
                    keys.join(", "),
                    case(4)
                )
            })
            .collect()
    });
    &all[n - 1]
}

impl Redeemer {
    /// Runs on PostgreSQL's pool, or on SQLite's writer connection.
    pub(crate) fn spawn(db: super::Db) -> Redeemer {
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            let mut carried: Vec<Job> = Vec::new();
            loop {
                let mut waiting = std::mem::take(&mut carried);
                if waiting.is_empty() {
                    match queue.recv().await {
                        Some(j) => waiting.push(j),
                        None => return,
                    }
                }
                for _ in 0..YIELDS {
                    tokio::task::yield_now().await;
                }
                while waiting.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(j) => waiting.push(j),
                        Err(_) => break,
                    }
                }
                // The same code twice: the second waits for the next statement, which finds
                // it used (a replay).
                let mut seen = std::collections::HashSet::new();
                let (batch, later): (Vec<Job>, Vec<Job>) =
                    waiting.into_iter().partition(|j| seen.insert(j.code_hash.clone()));
                carried = later;
                let result = on_writer!(db: &db, |pool| {
                    let mut q = sqlx::query_as::<_, CodeRow>(batch_sql(batch.len()));
                    for j in &batch {
                        q = q.bind(&j.code_hash).bind(&j.token_hash).bind(j.token_expires_at).bind(j.now);
                    }
                    q.fetch_all(pool).await.map_err(StoreError::from)
                });
                match result {
                    Ok(mut rows) => {
                        for j in batch {
                            let row = rows.iter().position(|r| r.0 == j.code_hash).map(|i| rows.swap_remove(i));
                            let _ = j.reply.send(Ok(row));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, redemptions = batch.len(), "redeeming codes failed");
                        // Every job gets an error of the same kind (unavailable or not).
                        let unavailable = matches!(e, StoreError::Unavailable(_));
                        let mut first = Some(e);
                        for j in batch {
                            let e = first.take().unwrap_or_else(|| {
                                let what = sqlx::Error::Protocol("a batch of code redemptions failed".into());
                                if unavailable {
                                    StoreError::Unavailable(what)
                                } else {
                                    StoreError::Other(what)
                                }
                            });
                            let _ = j.reply.send(Err(e));
                        }
                    }
                }
            }
        });
        Redeemer { jobs }
    }

    async fn redeem(
        &self,
        code_hash: &str,
        token_hash: &str,
        token_expires_at: i64,
        now: i64,
    ) -> Result<Option<CodeRow>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job { code_hash: code_hash.into(), token_hash: token_hash.into(), token_expires_at, now, reply };
        let gone = || StoreError::Unavailable(sqlx::Error::PoolClosed);
        self.jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}
