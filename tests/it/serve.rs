//! The real binary: `brand-idp serve` as an operator runs it, configured by the CLI.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, RedirectUrl,
    TokenResponse,
};

use crate::both_backends;
use crate::support::*;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `brand-idp serve` on a free port and waits until it answers.
pub async fn start(env: &[(String, String)]) -> Server {
    start_on(env, false).await
}

/// As [`start`]; with `one_core`, the process may use only CPU 0 (`taskset -c 0`), so it
/// runs its one-core set-up (tokio's single-threaded scheduler, one hash permit).
pub async fn start_on(env: &[(String, String)], one_core: bool) -> Server {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = if one_core {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", bin()]);
        c
    } else {
        Command::new(bin())
    };
    cmd.arg("serve").env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("BRAND_IDP_LISTEN", format!("127.0.0.1:{port}"))
        .env("BRAND_IDP_ISSUER", &base)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start brand-idp serve");
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = stderr.clone();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let http = browser();
    for _ in 0..400 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return Server { child, base, stderr };
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("brand-idp serve exited with {status}: {:?}", stderr.lock().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("brand-idp serve did not become ready: {:?}", stderr.lock().unwrap());
}

both_backends!(cli_configured_server_completes_code_and_implicit_flows_with_an_rp_library);

async fn cli_configured_server_completes_code_and_implicit_flows_with_an_rp_library(b: Backend) {
    let db = TestDb::new(b).await;
    let cb = "https://rp.example/cb";
    let created = stdout_json(&db.cli(
        &[
            "--json",
            "client",
            "create",
            "--client-id",
            "shop",
            "--redirect-uri",
            cb,
            "--response-type",
            "code",
            "--response-type",
            "id_token token",
        ],
        None,
    ));
    let secret = created["client_secret"].as_str().unwrap().to_string();
    stdout_json(&db.cli(
        &["--json", "consumer", "create", "--username", "carol", "--password-stdin", "--email", "carol@example.com"],
        Some("hunter2 hunter2\n"),
    ));
    // On SQLite the server gets one core, as in the benchmark: the single-threaded scheduler
    // and the batched code redemption serve the same flows.
    let one_core = b == Backend::Sqlite;
    let server = start_on(&db.env(), one_core).await;
    if one_core {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
        assert!(status.lines().any(|l| l == "Cpus_allowed_list:\t0"), "the server is not on one core");
    }
    let http_rp = rp_http;
    let meta =
        CoreProviderMetadata::discover_async(IssuerUrl::new(server.base.clone()).unwrap(), &http_rp).await.unwrap();
    let client =
        CoreClient::from_provider_metadata(meta, ClientId::new("shop".into()), Some(ClientSecret::new(secret)))
            .set_redirect_uri(RedirectUrl::new(cb.into()).unwrap());
    let browser = browser();
    let login = |authorize: String| {
        let browser = browser.clone();
        let base = server.base.clone();
        async move {
            let res = browser.get(&authorize).send().await.unwrap();
            let loc = location(&res);
            assert!(loc.starts_with("/login?"), "{loc}");
            let return_to = url::Url::parse(&format!("{base}{loc}"))
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "return_to")
                .unwrap()
                .1
                .into_owned();
            let page = browser.get(format!("{base}{loc}")).send().await.unwrap().text().await.unwrap();
            let csrf = hidden_value(&page, "csrf").unwrap();
            let res = browser
                .post(format!("{base}/login"))
                .form(&[
                    ("username", "carol"),
                    ("password", "hunter2 hunter2"),
                    ("csrf", &csrf),
                    ("return_to", &return_to),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 303);
            let res = browser.get(format!("{base}{}", location(&res))).send().await.unwrap();
            url::Url::parse(&location(&res)).unwrap()
        }
    };
    // Code flow with PKCE.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _, nonce) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .set_pkce_challenge(challenge)
        .url();
    let landed = login(url.to_string()).await;
    let code = params_of(landed.query())["code"].clone();
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http_rp)
        .await
        .unwrap();
    let claims = tokens.id_token().unwrap().claims(&client.id_token_verifier(), &nonce).unwrap();
    let sub = claims.subject().as_str().to_string();
    // Implicit flow, with the session from the login above.
    let (url, _, nonce) =
        client.authorize_url(CoreAuthenticationFlow::Implicit(true), CsrfToken::new_random, Nonce::new_random).url();
    let res = browser.get(url.as_str()).send().await.unwrap();
    let landed = url::Url::parse(&location(&res)).unwrap();
    let id_token: CoreIdToken = params_of(landed.fragment())["id_token"].parse().unwrap();
    let claims = id_token.claims(&client.id_token_verifier(), &nonce).unwrap();
    assert_eq!(claims.subject().as_str(), sub);
    let shown = stdout_json(&db.cli(&["--json", "consumer", "show", "carol"], None));
    assert_eq!(shown["id"], sub.as_str());
}

/// SIGTERM lets a request in flight finish, then the process exits cleanly; logs are JSON
/// lines when asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_logs_are_json() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut env = db.env();
    // A deliberately slow password hash makes the login request take a while.
    env.retain(|(k, _)| !k.starts_with("BRAND_IDP_ARGON2"));
    env.push(("BRAND_IDP_ARGON2_MEMORY_KIB".into(), "65536".into()));
    env.push(("BRAND_IDP_ARGON2_ITERATIONS".into(), "12".into()));
    env.push(("BRAND_IDP_LOG_FORMAT".into(), "json".into()));
    let metrics_port = free_port();
    env.push(("BRAND_IDP_METRICS_LISTEN".into(), format!("127.0.0.1:{metrics_port}")));
    let mut server = start(&env).await;
    let http = browser();
    // With metrics_listen, /metrics is there and only there.
    assert_eq!(http.get(format!("{}/metrics", server.base)).send().await.unwrap().status(), 404);
    let m = http.get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().await.unwrap();
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("brand_idp_http_requests_total"));
    let page = http.get(format!("{}/login", server.base)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&page, "csrf").unwrap();
    let url = format!("{}/login", server.base);
    let inflight = tokio::spawn({
        let http = http.clone();
        async move {
            let started = std::time::Instant::now();
            let res = http
                .post(url)
                .form(&[("username", "nobody"), ("password", "x"), ("csrf", &csrf), ("return_to", "")])
                .send()
                .await;
            (res.map(|r| r.status().as_u16()), started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let (status, took) = inflight.await.unwrap();
    assert_eq!(status.expect("the request in flight got its answer"), 401);
    assert!(took > Duration::from_millis(150), "the request was still running at SIGTERM ({took:?})");
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (status, server)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "clean exit: {:?}", exit.0);
    let lines = exit.1.stderr.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.contains("shutting down")), "{lines:?}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{l}");
    }
}
