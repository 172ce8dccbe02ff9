//! Test support: a real brand-idp on port 0 against a fresh database (a temp SQLite file,
//! or a freshly created PostgreSQL database), plus helpers to run the CLI binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use brand_idp::clock::ManualClock;
use brand_idp::config::{Secret, Settings};
use brand_idp::App;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for an `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )*
    };
}

pub fn admin_url() -> String {
    std::env::var("BRAND_IDP_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn random_suffix() -> String {
    brand_idp::crypto::random_token::<9>()
        .to_ascii_lowercase()
        .replace(['-', '_'], "x")
}

/// A PostgreSQL database created for one test and dropped afterwards. A test that needs
/// PostgreSQL fails (never skips) when it cannot be reached.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        use sqlx::Connection;
        let admin = admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is required for the test suite and is not reachable at {admin}: {e}")
        });
        let name = format!("brand_idp_test_{}", random_suffix());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin).expect("admin URL");
        url.set_path(&format!("/{name}"));
        PgDb {
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; use a small one of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                    let _ = c.close().await;
                }
            })
        })
        .join();
    }
}

/// A fresh, empty place to keep data: a temp directory, and for PostgreSQL a new database.
pub struct TestDb {
    pub backend: Backend,
    pub dir: PathBuf,
    pub pg: Option<PgDb>,
    pub secret_key: String,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = std::env::temp_dir().join(format!("brand-idp-test-{}", random_suffix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pg = match backend {
            Backend::Postgres => Some(PgDb::create().await),
            Backend::Sqlite => None,
        };
        let secret_key = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            brand_idp::crypto::random_bytes::<32>(),
        );
        TestDb {
            backend,
            dir,
            pg,
            secret_key,
        }
    }

    pub fn settings(&self) -> Settings {
        let mut s = Settings::default();
        s.data_dir = self.dir.clone();
        s.database_url = self.pg.as_ref().map(|p| Secret::new(p.url.clone()));
        s.secret_key = Some(Secret::new(self.secret_key.clone()));
        // Tests hash many passwords; the parameters keep argon2id but use less memory.
        s.argon2_memory_kib = 1024;
        s.argon2_iterations = 1;
        s.db_max_connections = 5;
        s
    }

    /// Environment for running the CLI binary against this database.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (
                "BRAND_IDP_DATA_DIR".to_string(),
                self.dir.display().to_string(),
            ),
            ("BRAND_IDP_SECRET_KEY".to_string(), self.secret_key.clone()),
            (
                "BRAND_IDP_ARGON2_MEMORY_KIB".to_string(),
                "1024".to_string(),
            ),
            ("BRAND_IDP_ARGON2_ITERATIONS".to_string(), "1".to_string()),
        ];
        if let Some(pg) = &self.pg {
            v.push(("DATABASE_URL".to_string(), pg.url.clone()));
        }
        v
    }

    /// Runs `brand-idp ARGS...` with this database, optional stdin; returns the output.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_cli(&self.env(), args, stdin)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_brand-idp")
}

pub fn run_cli(env: &[(String, String)], args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run brand-idp");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("brand-idp output")
}

pub fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A running server and a browser-like HTTP client (cookie jar, redirects not followed).
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub app: App,
    pub clock: Arc<ManualClock>,
    pub db: TestDb,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::new(backend).await;
    spawn_on(db, tweak).await
}

pub async fn spawn_on(db: TestDb, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut settings = db.settings();
    settings.issuer = format!("http://127.0.0.1:{}", addr.port());
    settings.listen = addr;
    tweak(&mut settings);
    let clock = ManualClock::new();
    let app = App::build_with_clock(settings, clock.clone())
        .await
        .expect("build app");
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    TestApp {
        addr,
        base: format!("http://127.0.0.1:{}", addr.port()),
        http: browser(),
        app,
        clock,
        db,
        server,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    pub fn issuer(&self) -> &str {
        &self.app.state.settings.issuer
    }
}
