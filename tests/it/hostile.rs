//! Hostile input, brute force, faults and several instances: brand-idp keeps working and
//! loses nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::serve::start;
use crate::support::*;

const CB: &str = "https://rp.example/cb";
const PW: &str = "a long enough password";

async fn setup(b: Backend, tweak: impl FnOnce(&mut brand_idp::config::Settings)) -> (TestApp, String) {
    let app = spawn_app_with(b, tweak).await;
    let secret = app.add_client("rp", &[CB], &["code", "id_token"], &[], false).await.unwrap();
    app.add_consumer("alice", PW, brand_idp::store::Profile::default()).await;
    (app, secret)
}

/// One login attempt from `ip` (the test trusts X-Forwarded-For to play several addresses).
async fn attempt(app: &TestApp, ip: &str, user: &str, pw: &str) -> (u16, Option<String>, String) {
    let http = browser();
    let (_, csrf, _) = app.login_page(&http, "/login").await;
    let res = http
        .post(app.url("/login"))
        .header("x-forwarded-for", format!("203.0.113.250, {ip}"))
        .form(&[("username", user), ("password", pw), ("csrf", &csrf), ("return_to", "")])
        .send()
        .await
        .unwrap();
    let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let status = res.status().as_u16();
    let body = res.text().await.unwrap();
    let msg = body
        .split("role=\"alert\"")
        .nth(1)
        .and_then(|s| s.split('>').nth(1))
        .and_then(|s| s.split('<').next())
        .unwrap_or("")
        .to_string();
    (status, retry, msg)
}

both_backends!(
    throttling_slows_guessing_and_never_locks_anyone_out_for_good,
    hostile_inputs_get_4xx_never_5xx_and_the_server_stays_healthy,
    expired_rows_are_cleaned_up_in_bounded_batches_by_one_instance,
);

async fn throttling_slows_guessing_and_never_locks_anyone_out_for_good(b: Backend) {
    let (app, _) = setup(b, |s| s.client_ip_header = Some("x-forwarded-for".into())).await;
    // The same answers for a real account and an unknown one.
    for user in ["alice", "nobody"] {
        for _ in 0..3 {
            assert_eq!(attempt(&app, "198.51.100.1", user, "wrong").await.0, 401, "{user}: free failures");
        }
        let (status, retry, msg) = attempt(&app, "198.51.100.1", user, "wrong").await;
        assert_eq!((status, retry.as_deref()), (429, Some("1")), "{user}: then a delay");
        assert!(msg.contains("Too many sign-in attempts"), "{msg}");
    }
    // While throttled even the right password is not checked.
    assert_eq!(attempt(&app, "198.51.100.1", "alice", PW).await.0, 429);
    // Delays double: 1 s, then 2 s, then 4 s.
    app.clock.advance(1);
    assert_eq!(attempt(&app, "198.51.100.1", "alice", "wrong").await.0, 401);
    let (status, retry, _) = attempt(&app, "198.51.100.1", "alice", "wrong").await;
    assert_eq!((status, retry.as_deref()), (429, Some("2")));
    // Another address is not slowed by this one's failures, and the right password works.
    let ok = attempt(&app, "198.51.100.2", "alice", PW).await;
    assert_eq!(ok.0, 303, "{ok:?}");
    // Credential stuffing across many addresses: the account-wide limit (10 per window).
    for i in 0..6 {
        assert_eq!(attempt(&app, &format!("192.0.2.{i}"), "alice", "wrong").await.0, 401);
    }
    let (status, retry, _) = attempt(&app, "192.0.2.99", "alice", PW).await;
    assert_eq!(status, 429, "the account refuses attempts for the rest of the window");
    let wait: i64 = retry.unwrap().parse().unwrap();
    assert!(wait > 800 && wait <= 900, "{wait}");
    // After the window the right password works again: no permanent lock-out.
    app.clock.advance(wait);
    assert_eq!(attempt(&app, "192.0.2.99", "alice", PW).await.0, 303);
    // The per-address limit across accounts.
    let app2 = setup(b, |s| {
        s.client_ip_header = Some("x-forwarded-for".into());
        s.login_max_failures_per_ip = 5;
    })
    .await
    .0;
    for i in 0..5 {
        assert_eq!(attempt(&app2, "198.51.100.7", &format!("user{i}"), "x").await.0, 401);
    }
    assert_eq!(attempt(&app2, "198.51.100.7", "alice", PW).await.0, 429);
    assert_eq!(attempt(&app2, "198.51.100.8", "alice", PW).await.0, 303);
    // Guesses sent all at once cannot slip past the account limit together.
    let app3 = setup(b, |s| s.client_ip_header = Some("x-forwarded-for".into())).await.0;
    let mut burst = Vec::new();
    for i in 0..40 {
        let ip = format!("203.0.113.{i}");
        let app3 = &app3;
        burst.push(async move { attempt(app3, &ip, "alice", "wrong").await.0 });
    }
    let statuses = futures_join_all(burst).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= 10, "{checked} guesses were checked in one window: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    // The counters live in the database (shared by instances).
    assert!(app.app.state.store.count_rows("login_throttle").await.unwrap() > 0);
}

/// Runs futures concurrently on this task.
async fn futures_join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in fs {
        set.push(Box::pin(f));
    }
    let mut out = Vec::with_capacity(set.len());
    // Poll all of them together: a simple join without an extra dependency.
    let mut results: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(results.into_iter().map(|r| r.expect("ready")));
    out
}

/// Sends raw bytes and returns the status line's code (None: the server closed the
/// connection without an answer, which is also acceptable for garbage).
async fn raw(app: &TestApp, request: &[u8]) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(request).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
        .await
        .expect("the server answers or closes; never hangs")
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok())
}

async fn hostile_inputs_get_4xx_never_5xx_and_the_server_stays_healthy(b: Backend) {
    let (app, secret) = setup(b, |_| {}).await;
    let http = browser();
    let payloads = [
        "' OR 1=1 --",
        "\"; DROP TABLE consumers; --",
        "{{ 7*7 }}{% raw %}",
        "<script>alert(1)</script>",
        "\r\nSet-Cookie: evil=1",
        "%0d%0aLocation:%20https://evil.example",
        "\u{0}\u{1}\u{7f}",
        "𝕳𝖊𝖑𝖑𝖔 ☃ \u{202e}",
        &"A".repeat(20_000),
    ];
    let mut statuses = Vec::new();
    for p in payloads {
        for field in [
            "client_id",
            "redirect_uri",
            "state",
            "scope",
            "response_type",
            "nonce",
            "login_hint",
            "claims",
            "max_age",
            "code_challenge",
            "prompt",
            "id_token_hint",
        ] {
            let mut q = vec![("client_id", "rp"), ("redirect_uri", CB), ("response_type", "code"), ("scope", "openid")];
            q.retain(|(k, _)| *k != field);
            q.push((field, p));
            let mut ser = url::form_urlencoded::Serializer::new(app.url("/authorize?"));
            ser.extend_pairs(q);
            let res = http.get(ser.finish()).send().await.unwrap();
            let status = res.status().as_u16();
            if let Some(loc) = res.headers().get("location") {
                let loc = loc.to_str().unwrap();
                assert!(!loc.contains('\r') && !loc.contains('\n'), "header injection: {loc:?}");
                assert!(loc.starts_with(CB) || loc.starts_with("/login?"), "redirected elsewhere: {loc}");
            }
            let body = res.text().await.unwrap();
            assert!(!body.contains("<script>alert(1)</script>"), "reflected unescaped: {field}");
            statuses.push((format!("authorize {field}"), status));
        }
        for field in ["grant_type", "code", "redirect_uri", "code_verifier", "client_id", "client_secret"] {
            let mut form = vec![("grant_type", "authorization_code"), ("code", "x"), ("redirect_uri", CB)];
            form.retain(|(k, _)| *k != field);
            form.push((field, p));
            let res = http.post(app.url("/token")).basic_auth("rp", Some(&secret)).form(&form).send().await.unwrap();
            statuses.push((format!("token {field}"), res.status().as_u16()));
        }
        let res = http
            .post(app.url("/token"))
            .basic_auth(p, Some(p))
            .form(&[("grant_type", "authorization_code")])
            .send()
            .await
            .unwrap();
        statuses.push(("token basic".into(), res.status().as_u16()));
        let res = http
            .get(app.url("/userinfo"))
            .header(
                "authorization",
                format!("Bearer {}", p.chars().filter(|c| c.is_ascii_graphic()).collect::<String>()),
            )
            .send()
            .await
            .unwrap();
        statuses.push(("userinfo".into(), res.status().as_u16()));
        let (_, csrf, _) = app.login_page(&http, "/login").await;
        let short: String = p.chars().take(5000).collect();
        let res = http
            .post(app.url("/login"))
            .form(&[("username", &short), ("password", &short), ("csrf", &csrf), ("return_to", &short)])
            .send()
            .await
            .unwrap();
        statuses.push(("login".into(), res.status().as_u16()));
        let short: String = p.chars().take(3000).collect();
        let mut ser = url::form_urlencoded::Serializer::new(app.url("/logout?"));
        ser.extend_pairs([
            ("id_token_hint", &short),
            ("post_logout_redirect_uri", &short),
            ("state", &short),
            ("client_id", &short),
        ]);
        statuses.push(("logout".into(), http.get(ser.finish()).send().await.unwrap().status().as_u16()));
        let res = http
            .post(app.url("/liveengage/token"))
            .header("origin", "https://www.brand.example")
            .json(&serde_json::json!({"client_id": p, "code_challenge": p, "redirect_uri": p}))
            .send()
            .await
            .unwrap();
        statuses.push(("liveengage".into(), res.status().as_u16()));
    }
    // Malformed encodings and shapes.
    let odd: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("invalid utf-8", http.get(app.url("/authorize?client_id=%FF%FE&redirect_uri=%C3%28&state=%ED%A0%80"))),
        ("bad percent", http.get(app.url("/authorize?client_id=rp&redirect_uri=%zz&state=%"))),
        ("duplicates", http.get(app.url("/authorize?client_id=rp&client_id=rp&redirect_uri=x&redirect_uri=y"))),
        (
            "many params",
            http.get(
                app.url(&format!("/authorize?{}", (0..200).map(|i| format!("p{i}=1")).collect::<Vec<_>>().join("&"))),
            ),
        ),
        ("token wrong type", http.post(app.url("/token")).header("content-type", "text/plain").body("grant_type=x")),
        ("token no type", http.post(app.url("/token")).body("grant_type=x")),
        (
            "token json bomb",
            http.post(app.url("/token")).header("content-type", "application/json").body(format!(
                "{}{}",
                "[".repeat(50_000),
                "]".repeat(50_000)
            )),
        ),
        ("token json array", http.post(app.url("/token")).header("content-type", "application/json").body("[1,2,3]")),
        (
            "token json nested values",
            http.post(app.url("/token")).header("content-type", "application/json").body(r#"{"grant_type":{"a":1}}"#),
        ),
        (
            "token too big",
            http.post(app.url("/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(vec![b'a'; 200_000]),
        ),
        (
            "login too big",
            http.post(app.url("/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(vec![b'a'; 100_000]),
        ),
        ("login not a form", http.post(app.url("/login")).header("content-type", "application/json").body("{}")),
        ("authorize post json", http.post(app.url("/authorize")).header("content-type", "application/json").body("{}")),
        (
            "authorize post no cookie bad body",
            http.post(app.url("/authorize"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(vec![0xffu8, 0xfe, b'&', b'=']),
        ),
        ("userinfo bad scheme", http.get(app.url("/userinfo")).header("authorization", "Basic Zm9vOmJhcg==")),
        (
            "userinfo bad header bytes",
            http.get(app.url("/userinfo"))
                .header("authorization", reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap()),
        ),
        ("unknown path", http.get(app.url("/../../etc/passwd"))),
        ("static traversal", http.get(app.url("/static/..%2F..%2FCargo.toml"))),
        ("wrong method", http.delete(app.url("/token"))),
        ("liveengage identity without client", http.get(app.url("/liveengage/identity"))),
        (
            "liveengage text body",
            http.post(app.url("/liveengage/token")).header("origin", "https://x.example").body("client_id=x"),
        ),
    ];
    for (name, req) in odd {
        match req.send().await {
            Ok(res) => statuses.push((name.to_string(), res.status().as_u16())),
            // An oversized body is refused with 413 before it is read to the end; a client
            // still writing may see the connection close instead.
            Err(e) if name.ends_with("too big") => statuses.push((format!("{name} ({e})"), 413)),
            Err(e) => panic!("{name}: {e}"),
        }
    }
    // Below HTTP: oversized and malformed request heads.
    statuses.push((
        "huge header".into(),
        raw(&app, format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(100_000)).as_bytes())
            .await
            .unwrap_or(431),
    ));
    statuses.push((
        "many headers".into(),
        raw(
            &app,
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..200).map(|i| format!("X-{i}: 1\r\n")).collect::<String>()
            )
            .as_bytes(),
        )
        .await
        .unwrap_or(431),
    ));
    statuses.push((
        "garbage".into(),
        raw(&app, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n").await.unwrap_or(400),
    ));
    statuses.push((
        "bad content-length".into(),
        raw(&app, b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n").await.unwrap_or(400),
    ));
    let fivexx: Vec<_> = statuses.iter().filter(|(_, s)| *s >= 500).collect();
    assert!(fivexx.is_empty(), "5xx answers: {fivexx:?}");
    assert!(statuses.iter().any(|(n, s)| n.starts_with("token too big") && *s == 413));
    // Still healthy, and still working.
    assert_eq!(http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    let landed = app
        .authorize_as(
            &browser(),
            &format!(
                "{}?client_id=rp&redirect_uri={}&response_type=code&scope=openid",
                app.url("/authorize"),
                url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
            ),
            "alice",
            PW,
        )
        .await;
    assert!(params_of(landed.query()).contains_key("code"));
}

/// Slowloris: a client that trickles its headers is cut off; one that trickles its body
/// gets a 4xx. Neither ties the server up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let (app, _) = setup(Backend::Sqlite, |_| {}).await;
    let addr = app.addr;
    let slow_headers = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        loop {
            if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => break,
                Err(_) => {}
            }
            assert!(started.elapsed() < Duration::from_secs(20), "slow headers were never cut off");
        }
        started.elapsed()
    });
    let slow_body = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        s.write_all(b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ngrant_type=").await.unwrap();
        let mut buf = [0u8; 512];
        loop {
            if s.write_all(b"a").await.is_err() {
                return (started.elapsed(), None);
            }
            match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), None),
                Ok(Ok(n)) => {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    return (started.elapsed(), text.get(9..12).and_then(|c| c.parse::<u16>().ok()));
                }
                Err(_) => {}
            }
            assert!(started.elapsed() < Duration::from_secs(25), "a slow body was never cut off");
        }
    });
    // Meanwhile ordinary requests are served.
    for _ in 0..5 {
        assert_eq!(browser().get(app.url("/healthz")).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = slow_headers.await.unwrap();
    assert!(took < Duration::from_secs(15), "{took:?}");
    let (took, status) = slow_body.await.unwrap();
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(status.is_none_or(|s| (400..500).contains(&s)), "{status:?}");
}

async fn expired_rows_are_cleaned_up_in_bounded_batches_by_one_instance(b: Backend) {
    let (app, secret) = setup(b, |_| {}).await;
    let st = &app.app.state;
    // A soak: many logins, codes, tokens and failed attempts.
    let http = browser();
    let q = format!(
        "{}?client_id=rp&redirect_uri={}&response_type=code&scope=openid",
        app.url("/authorize"),
        url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    );
    let landed = app.authorize_as(&http, &q, "alice", PW).await;
    let code = params_of(landed.query())["code"].clone();
    let res = browser()
        .post(app.url("/token"))
        .basic_auth("rp", Some(&secret))
        .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CB)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for _ in 0..300 {
        let res = http.get(&q).send().await.unwrap();
        assert_eq!(res.status(), 302);
    }
    for i in 0..20 {
        attempt(&app, "127.0.0.1", &format!("ghost{i}"), "x").await;
    }
    // And more codes than one batch holds, straight into the store.
    let now = st.now();
    for i in 0..2500 {
        st.store
            .insert_code(&brand_idp::store::AuthCodeRow {
                code_hash: format!("soak-{i}"),
                client_id: "rp".into(),
                consumer_id: "x".into(),
                redirect_uri: CB.into(),
                scope: "openid".into(),
                nonce: None,
                auth_time: now,
                code_challenge: None,
                claims: None,
                subject: "{}".into(),
                created_at: now,
                expires_at: now + 60,
            })
            .await
            .unwrap();
    }
    assert!(st.store.count_rows("grants").await.unwrap() >= 2800);
    // Nothing is due yet: nothing goes.
    assert_eq!(brand_idp::cleanup_once(st).await.unwrap(), Some(0));
    // Past every lifetime, the tables empty out: in passes of bounded batches.
    app.clock.advance(st.settings.access_token_ttl_secs + st.settings.session_ttl_secs + 1000);
    let mut passes = 0;
    loop {
        passes += 1;
        let n = brand_idp::cleanup_once(st).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 10 * 4 * brand_idp::CLEANUP_BATCH as u64, "a pass is bounded");
    }
    assert!(passes >= 2);
    for t in ["grants", "sessions", "login_throttle"] {
        assert_eq!(st.store.count_rows(t).await.unwrap(), 0, "{t}");
    }
    // Only one instance cleans up at a time (PostgreSQL advisory lock).
    if b == Backend::Postgres {
        let other = st.store.clone();
        let inner = st
            .store
            .with_maintenance_lock(|| async move {
                other.with_maintenance_lock(|| async { Ok::<(), brand_idp::store::StoreError>(()) }).await
            })
            .await
            .unwrap();
        assert_eq!(inner, Some(None), "a second instance skips while the first holds the lock");
    }
}

/// A TCP proxy in front of PostgreSQL that can be cut and restored, to take the database
/// away from the server without touching the shared database server.
struct Outage {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    cut: tokio::sync::broadcast::Sender<()>,
}

async fn outage_proxy() -> Outage {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Arc::new(AtomicBool::new(true));
    let (cut, _) = tokio::sync::broadcast::channel::<()>(4);
    let (up2, cut2) = (up.clone(), cut.clone());
    let target = url::Url::parse(&admin_url()).unwrap();
    let target = format!("{}:{}", target.host_str().unwrap(), target.port().unwrap_or(5432));
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { continue };
            if !up2.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            let mut killed = cut2.subscribe();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = killed.recv() => {}
                }
            });
        }
    });
    Outage { addr, up, cut }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_fails_fast_with_503_and_recovers_without_restart() {
    let proxy = outage_proxy().await;
    let db = TestDb::new(Backend::Postgres).await;
    let mut url = url::Url::parse(&db.pg.as_ref().unwrap().url).unwrap();
    url.set_port(Some(proxy.addr.port())).unwrap();
    let proxied = url.to_string();
    let app = spawn_on(db, |s| {
        s.database_url = Some(brand_idp::config::Secret::new(proxied));
        s.db_acquire_timeout_secs = 2;
    })
    .await;
    let secret = app.add_client("rp", &[CB], &["code"], &[], false).await.unwrap();
    app.add_consumer("alice", PW, brand_idp::store::Profile::default()).await;
    let http = browser();
    let q = format!(
        "{}?client_id=rp&redirect_uri={}&response_type=code&scope=openid",
        app.url("/authorize"),
        url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    );
    app.authorize_as(&http, &q, "alice", PW).await;
    assert_eq!(http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    // The database goes away.
    proxy.up.store(false, Ordering::SeqCst);
    let _ = proxy.cut.send(());
    let mut during = Vec::new();
    for _ in 0..4 {
        for (name, req) in [
            ("readyz", http.get(app.url("/readyz"))),
            ("authorize", http.get(&q)),
            (
                "token",
                browser().post(app.url("/token")).basic_auth("rp", Some(&secret)).form(&[
                    ("grant_type", "authorization_code"),
                    ("code", "x"),
                    ("redirect_uri", CB),
                ]),
            ),
            ("userinfo", browser().get(app.url("/userinfo")).bearer_auth("whatever")),
            ("discovery", http.get(app.url("/.well-known/openid-configuration"))),
            ("jwks", http.get(app.url("/jwks.json"))),
        ] {
            let started = Instant::now();
            let res = req.timeout(Duration::from_secs(20)).send().await.expect("answered, no hang");
            let took = started.elapsed();
            let status = res.status().as_u16();
            let retry = res.headers().contains_key("retry-after");
            let loc = res.headers().get("location").map(|v| v.to_str().unwrap().to_string());
            let body = res.text().await.unwrap();
            assert!(
                !body.contains("sqlx") && !body.contains("PoolTimedOut") && !body.contains("Connection refused"),
                "internals leaked: {body}"
            );
            during.push((name, status, took, retry, loc));
        }
    }
    let slowest = during.iter().map(|d| d.2).max().unwrap();
    eprintln!("outage figures: {} requests during the outage, slowest answer {slowest:?}", during.len());
    for (name, status, took, retry, loc) in &during {
        assert!(*took < Duration::from_secs(6), "{name} took {took:?}");
        match *name {
            // Served from memory: they keep working.
            "discovery" | "jwks" => assert_eq!(*status, 200),
            // A redirect to the client with temporarily_unavailable is the protocol's answer.
            "authorize" => assert!(
                *status == 503 || loc.as_deref().is_some_and(|l| l.contains("error=temporarily_unavailable")),
                "{name}: {status} {loc:?}"
            ),
            _ => {
                assert_eq!(*status, 503, "{name}");
                assert!(*retry, "{name}: Retry-After");
            }
        }
    }
    // It comes back: the server recovers on its own.
    proxy.up.store(true, Ordering::SeqCst);
    let started = Instant::now();
    loop {
        if http.get(app.url("/readyz")).send().await.unwrap().status() == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("outage figures: ready again {:?} after the database came back", started.elapsed());
    let landed = app.authorize_as(&http, &q, "alice", PW).await;
    let code = params_of(landed.query())["code"].clone();
    let res = browser()
        .post(app.url("/token"))
        .basic_auth("rp", Some(&secret))
        .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CB)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Two `brand-idp serve` processes on one PostgreSQL database behave as one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_sessions_codes_and_keys() {
    let db = TestDb::new(Backend::Postgres).await;
    let created =
        stdout_json(&db.cli(&["--json", "client", "create", "--client-id", "rp", "--redirect-uri", CB], None));
    let secret = created["client_secret"].as_str().unwrap().to_string();
    stdout_json(
        &db.cli(&["--json", "consumer", "create", "--username", "alice", "--password-stdin"], Some(&format!("{PW}\n"))),
    );
    let mut env = db.env();
    env.push(("BRAND_IDP_KEY_REFRESH_SECS".into(), "1".into()));
    let a = start(&env).await;
    let b = start(&env).await;
    // Log in on A; the session cookie (host 127.0.0.1) is seen by B as well.
    let http = browser();
    let q = |base: &str| {
        format!(
            "{base}/authorize?client_id=rp&redirect_uri={}&response_type=code&scope=openid",
            url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
        )
    };
    let res = http.get(q(&a.base)).send().await.unwrap();
    let return_to = url::Url::parse(&format!("{}{}", a.base, location(&res)))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "return_to")
        .unwrap()
        .1
        .into_owned();
    let page = http.get(format!("{}/login", a.base)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&page, "csrf").unwrap();
    let res = http
        .post(format!("{}/login", a.base))
        .form(&[("username", "alice"), ("password", PW), ("csrf", &csrf), ("return_to", &return_to)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    // B sees the session: a code without logging in again.
    let res = http.get(q(&b.base)).send().await.unwrap();
    let code = params_of(url::Url::parse(&location(&res)).unwrap().query())["code"].clone();
    // Redeem on A (the code came from B), userinfo on B.
    let redeem = |base: String, code: String| {
        let secret = secret.clone();
        async move {
            browser()
                .post(format!("{base}/token"))
                .basic_auth("rp", Some(secret))
                .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CB)])
                .send()
                .await
                .unwrap()
        }
    };
    let res = redeem(a.base.clone(), code).await;
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    let res = browser()
        .get(format!("{}/userinfo", b.base))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // One code redeemed on both at once: exactly one success.
    for _ in 0..5 {
        let res = http.get(q(&a.base)).send().await.unwrap();
        let code = params_of(url::Url::parse(&location(&res)).unwrap().query())["code"].clone();
        let (ra, rb) = tokio::join!(redeem(a.base.clone(), code.clone()), redeem(b.base.clone(), code));
        let ok = [ra.status(), rb.status()].iter().filter(|s| s.as_u16() == 200).count();
        assert_eq!(ok, 1, "{} {}", ra.status(), rb.status());
    }
    // A key rotated through the CLI is served and used by both within the refresh bound.
    let rotated = stdout_json(&db.cli(&["--json", "keys", "rotate"], None));
    let kid = rotated["kid"].as_str().unwrap().to_string();
    let started = Instant::now();
    for server in [&a, &b] {
        loop {
            let jwks: Value =
                browser().get(format!("{}/jwks.json", server.base)).send().await.unwrap().json().await.unwrap();
            if jwks["keys"][0]["kid"] == kid.as_str() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "not picked up within the bound");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let res = http.get(q(&server.base)).send().await.unwrap();
        let code = params_of(url::Url::parse(&location(&res)).unwrap().query())["code"].clone();
        let tokens: Value = redeem(server.base.clone(), code).await.json().await.unwrap();
        let header: Value = serde_json::from_slice(
            &brand_idp::crypto::b64url_decode(tokens["id_token"].as_str().unwrap().split('.').next().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], kid.as_str(), "signs with the new key");
    }
    let bound = started.elapsed();
    assert!(bound < Duration::from_secs(3), "{bound:?}");
}

/// With an https issuer: HSTS, and cookies that only brand-idp's own host can set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_issuer_gets_hsts_and_host_only_secure_cookies() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.issuer = "https://login.brand.test".into()).await;
    let res = browser().get(app.url("/login")).send().await.unwrap();
    assert_eq!(res.headers()["strict-transport-security"], "max-age=31536000");
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("__Host-bidp_csrf="), "{cookie}");
    assert!(cookie.contains("Secure") && cookie.contains("Path=/") && !cookie.contains("Domain"), "{cookie}");
    let plain = spawn_app(Backend::Sqlite).await;
    let res = browser().get(plain.url("/login")).send().await.unwrap();
    assert!(res.headers().get("strict-transport-security").is_none());
}
