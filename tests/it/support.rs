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
    brand_idp::crypto::random_token::<9>().to_ascii_lowercase().replace(['-', '_'], "x")
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
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin).expect("admin URL");
        url.set_path(&format!("/{name}"));
        PgDb { name, url: url.to_string() }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; use a small one of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await;
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
        let secret_key =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, brand_idp::crypto::random_bytes::<32>());
        TestDb { backend, dir, pg, secret_key }
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
        // Tests change clients and use them at once; the cache has its own test.
        s.client_cache_secs = 0;
        s
    }

    /// Environment for running the CLI binary against this database.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("BRAND_IDP_DATA_DIR".to_string(), self.dir.display().to_string()),
            ("BRAND_IDP_SECRET_KEY".to_string(), self.secret_key.clone()),
            ("BRAND_IDP_ARGON2_MEMORY_KIB".to_string(), "1024".to_string()),
            ("BRAND_IDP_ARGON2_ITERATIONS".to_string(), "1".to_string()),
            ("BRAND_IDP_CLIENT_CACHE_SECS".to_string(), "0".to_string()),
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
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run brand-idp");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("brand-idp output")
}

pub fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "command failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    spawn_with_listener(db, listener, tweak).await
}

/// Serves on a listener bound beforehand, for tests that must know the address first.
pub async fn spawn_with_listener(
    db: TestDb,
    listener: tokio::net::TcpListener,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let addr = listener.local_addr().expect("addr");
    let mut settings = db.settings();
    settings.issuer = format!("http://127.0.0.1:{}", addr.port());
    settings.listen = addr;
    tweak(&mut settings);
    let clock = ManualClock::new();
    let app = App::build_with_clock(settings, clock.clone()).await.expect("build app");
    let router = app.router.clone();
    let server = tokio::spawn(brand_idp::http::server::serve(listener, router, std::future::pending()));
    TestApp { addr, base: format!("http://127.0.0.1:{}", addr.port()), http: browser(), app, clock, db, server }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    pub fn issuer(&self) -> &str {
        &self.app.state.settings.issuer
    }
}

/// Helpers that act as an admin (store) and as a consumer's browser.
impl TestApp {
    /// Registers a confidential client (a secret is returned) or a public one (`secret` None
    /// and `public` true).
    pub async fn add_client(
        &self,
        id: &str,
        redirect_uris: &[&str],
        response_types: &[&str],
        post_logout: &[&str],
        public: bool,
    ) -> Option<String> {
        let (mut new, secret) = brand_idp::oidc::clients::register(brand_idp::oidc::clients::Registration {
            client_id: id.into(),
            secret: None,
            public,
            name: Some(format!("{id} app")),
            redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
            post_logout_redirect_uris: post_logout.iter().map(|s| s.to_string()).collect(),
            response_types: response_types.iter().map(|s| s.to_string()).collect(),
            auth_method: None,
        })
        .expect("valid registration");
        new.secret_hash = secret.as_deref().map(|s| self.app.state.secrets.hash_client_secret(s));
        self.app.state.store.create_client(&new, self.app.state.now()).await.expect("create client");
        secret
    }

    pub async fn add_consumer(
        &self,
        username: &str,
        password: &str,
        profile: brand_idp::store::Profile,
    ) -> brand_idp::store::Consumer {
        let st = &self.app.state;
        brand_idp::consumers::create(
            &st.store,
            &st.hasher,
            username,
            Some(&brand_idp::consumers::Password::new(password)),
            profile,
            st.now(),
        )
        .await
        .expect("create consumer")
    }

    /// GETs a login page and returns the CSRF token in its form.
    pub async fn login_page(
        &self,
        http: &reqwest::Client,
        path_and_query: &str,
    ) -> (reqwest::StatusCode, String, String) {
        let res = http.get(self.url(path_and_query)).send().await.unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        let csrf = hidden_value(&body, "csrf").unwrap_or_default();
        (status, csrf, body)
    }

    /// Logs in through the real form; returns the response to the POST.
    pub async fn login_with(
        &self,
        http: &reqwest::Client,
        username: &str,
        password: &str,
        return_to: &str,
    ) -> reqwest::Response {
        let mut login = url::form_urlencoded::Serializer::new(String::from("/login?"));
        login.append_pair("return_to", return_to);
        let (_, csrf, _) = self.login_page(http, &login.finish()).await;
        http.post(self.url("/login"))
            .form(&[("username", username), ("password", password), ("csrf", &csrf), ("return_to", return_to)])
            .send()
            .await
            .unwrap()
    }

    /// Follows an authorization request through the login page (if asked) to the
    /// client's redirect URI, and returns that final Location.
    pub async fn authorize_as(
        &self,
        http: &reqwest::Client,
        authorize_url: &str,
        username: &str,
        password: &str,
    ) -> url::Url {
        let res = http.get(authorize_url).send().await.unwrap();
        let mut loc = location(&res);
        if loc.starts_with("/login?") {
            let return_to = url::Url::parse(&self.url(&loc))
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "return_to")
                .map(|(_, v)| v.into_owned())
                .expect("return_to");
            let res = self.login_with(http, username, password, &return_to).await;
            assert_eq!(res.status(), 303, "login failed: {}", res.text().await.unwrap_or_default());
            loc = location(&res);
            assert!(loc.starts_with("/authorize?"), "{loc}");
            let res = http.get(self.url(&loc)).send().await.unwrap();
            loc = location(&res);
        }
        url::Url::parse(&loc).unwrap_or_else(|_| panic!("not a redirect to the client: {loc}"))
    }
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .unwrap_or_else(|| panic!("expected a redirect, got {}", res.status()))
        .to_str()
        .unwrap()
        .to_string()
}

pub fn hidden_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

/// Query (or fragment) parameters of a URL as a map.
pub fn params_of(s: Option<&str>) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(s.unwrap_or("").as_bytes()).into_owned().collect()
}

/// The HTTP client the `openidconnect` crate uses: reqwest, redirects off.
pub async fn rp_http(req: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let (parts, body) = req.into_parts();
    let mut r = client.request(parts.method, parts.uri.to_string()).body(body);
    for (k, v) in parts.headers.iter() {
        r = r.header(k, v);
    }
    let res = r.send().await?;
    let mut builder = axum::http::Response::builder().status(res.status());
    for (k, v) in res.headers() {
        builder = builder.header(k, v);
    }
    Ok(builder.body(res.bytes().await?.to_vec()).expect("response"))
}
