//! Crash safety and secrecy, against the real binary.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_backends;
use crate::serve::start;
use crate::support::*;

const CB: &str = "https://rp.example/cb";
const PW: &str = "crash test password";

fn authorize_url(base: &str, client: &str) -> String {
    format!(
        "{base}/authorize?client_id={client}&redirect_uri={}&response_type=code&scope=openid",
        url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    )
}

/// Logs a fresh browser in on `base` and returns it with the Location of the code redirect.
async fn login(base: &str, client: &str, user: &str, pw: &str) -> Option<(reqwest::Client, String)> {
    let http = browser();
    let res = http.get(authorize_url(base, client)).send().await.ok()?;
    let loc = res.headers().get("location")?.to_str().ok()?.to_string();
    let return_to =
        url::Url::parse(&format!("{base}{loc}")).ok()?.query_pairs().find(|(k, _)| k == "return_to")?.1.into_owned();
    let page = http.get(format!("{base}/login")).send().await.ok()?.text().await.ok()?;
    let csrf = hidden_value(&page, "csrf")?;
    let res = http
        .post(format!("{base}/login"))
        .form(&[("username", user), ("password", pw), ("csrf", csrf.as_str()), ("return_to", return_to.as_str())])
        .send()
        .await
        .ok()?;
    let next = res.headers().get("location")?.to_str().ok()?.to_string();
    let res = http.get(format!("{base}{next}")).send().await.ok()?;
    let code_loc = res.headers().get("location")?.to_str().ok()?.to_string();
    Some((http, code_loc))
}

fn code_of(loc: &str) -> Option<String> {
    url::Url::parse(loc).ok()?.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned())
}

async fn redeem(base: &str, secret: &str, code: &str) -> Option<u16> {
    browser()
        .post(format!("{base}/token"))
        .basic_auth("rp", Some(secret))
        .form(&[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", CB)])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

both_backends!(kill_9_under_load_loses_no_committed_write_and_no_code_redeems_twice);

async fn kill_9_under_load_loses_no_committed_write_and_no_code_redeems_twice(b: Backend) {
    let db = Arc::new(TestDb::new(b).await);
    let created =
        stdout_json(&db.cli(&["--json", "client", "create", "--client-id", "rp", "--redirect-uri", CB], None));
    let secret = created["client_secret"].as_str().unwrap().to_string();
    stdout_json(
        &db.cli(&["--json", "consumer", "create", "--username", "carol", "--password-stdin"], Some(&format!("{PW}\n"))),
    );
    let server = start(&db.env()).await;
    let base = server.base.clone();
    let kid_before: Value = browser().get(format!("{base}/jwks.json")).send().await.unwrap().json().await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // CLI writes in their own processes, recording what they reported as done.
    let created_clients = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (db, stop, created) = (db.clone(), stop.clone(), created_clients.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let id = format!("c{i}");
                let out = db.cli(&["client", "create", "--client-id", &id, "--redirect-uri", CB], None);
                if out.status.success() {
                    created.lock().unwrap().push(id);
                }
                i += 1;
            }
        })
    };
    // Logins and redemptions against the server until it dies.
    let redeemed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for _ in 0..3 {
        let (base, secret, redeemed) = (base.clone(), secret.clone(), redeemed.clone());
        load.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let Some((http, loc)) = login(&base, "rp", "carol", PW).await else { break };
                let mut loc = loc;
                for _ in 0..20 {
                    let Some(code) = code_of(&loc) else { return };
                    match redeem(&base, &secret, &code).await {
                        Some(200) => redeemed.lock().unwrap().push(code),
                        Some(_) => {}
                        None => return,
                    }
                    let Ok(res) = http.get(authorize_url(&base, "rp")).send().await else { return };
                    let Some(l) = res.headers().get("location") else { return };
                    loc = l.to_str().unwrap().to_string();
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // kill -9 in the middle of it all.
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    let _ = server.child.wait();
    for t in load {
        let _ = t.await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    let redeemed = redeemed.lock().unwrap().clone();
    let created_clients = created_clients.lock().unwrap().clone();
    eprintln!(
        "crash figures ({b:?}): {} codes redeemed and {} clients created before kill -9",
        redeemed.len(),
        created_clients.len()
    );
    assert!(!redeemed.is_empty(), "the load redeemed codes before the kill");
    assert!(!created_clients.is_empty(), "the CLI wrote clients");
    // Restart on the same database.
    let server = start(&db.env()).await;
    let base = server.base.clone();
    // The database is intact.
    let store = brand_idp::store::Store::connect(&db.settings()).await.unwrap();
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
    // Every write that was reported done is there.
    for id in &created_clients {
        assert!(store.client(id).await.is_ok(), "client {id} was reported created but is gone");
    }
    assert!(store.consumer_by_username("carol").await.is_ok());
    // The same signing key.
    let kid_after: Value = browser().get(format!("{base}/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(kid_before["keys"][0]["kid"], kid_after["keys"][0]["kid"]);
    // No code that was redeemed redeems again.
    for code in &redeemed {
        assert_eq!(redeem(&base, &secret, code).await, Some(400), "a redeemed code redeemed twice");
    }
    // And the server works.
    let (_, loc) = login(&base, "rp", "carol", PW).await.expect("login after restart");
    assert_eq!(redeem(&base, &secret, &code_of(&loc).unwrap()).await, Some(200));
    store.close().await;
}

/// Complete flows with logging at its most verbose: no password, client secret, private
/// key, code, access token or session id appears in the logs or in any error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_or_error_bodies() {
    let db = TestDb::new(Backend::Postgres).await;
    let created =
        stdout_json(&db.cli(&["--json", "client", "create", "--client-id", "rp", "--redirect-uri", CB], None));
    let secret = created["client_secret"].as_str().unwrap().to_string();
    stdout_json(
        &db.cli(&["--json", "consumer", "create", "--username", "dave", "--password-stdin"], Some(&format!("{PW}\n"))),
    );
    let mut env = db.env();
    env.push(("BRAND_IDP_LOG_LEVEL".into(), "trace".into()));
    let server = start(&env).await;
    let base = server.base.clone();
    let mut bodies = Vec::new();
    let mut secrets: Vec<(String, String)> = vec![
        ("password".into(), PW.into()),
        ("client secret".into(), secret.clone()),
        ("secret key".into(), db.secret_key.clone()),
    ];
    // A failed login, then a good one; codes, tokens, userinfo; failures with real values.
    let http = browser();
    let page = http.get(format!("{base}/login")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&page, "csrf").unwrap();
    let res = http
        .post(format!("{base}/login"))
        .form(&[("username", "dave"), ("password", "wrong-guess-123"), ("csrf", csrf.as_str()), ("return_to", "")])
        .send()
        .await
        .unwrap();
    bodies.push(res.text().await.unwrap());
    secrets.push(("wrong password".into(), "wrong-guess-123".into()));
    let (http, loc) = login(&base, "rp", "dave", PW).await.unwrap();
    let code = code_of(&loc).unwrap();
    secrets.push(("code".into(), code.clone()));
    let res = browser()
        .post(format!("{base}/token"))
        .basic_auth("rp", Some(&secret))
        .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CB)])
        .send()
        .await
        .unwrap();
    let tokens: Value = res.json().await.unwrap();
    let at = tokens["access_token"].as_str().unwrap().to_string();
    secrets.push(("access token".into(), at.clone()));
    bodies.push(browser().get(format!("{base}/userinfo")).bearer_auth(&at).send().await.unwrap().text().await.unwrap());
    // Replay and wrong credentials: the error bodies must not echo what was sent.
    let res = browser()
        .post(format!("{base}/token"))
        .basic_auth("rp", Some(&secret))
        .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CB)])
        .send()
        .await
        .unwrap();
    bodies.push(res.text().await.unwrap());
    let res = browser()
        .post(format!("{base}/token"))
        .basic_auth("rp", Some("not-the-secret-xyz"))
        .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CB)])
        .send()
        .await
        .unwrap();
    bodies.push(res.text().await.unwrap());
    secrets.push(("wrong secret".into(), "not-the-secret-xyz".into()));
    bodies.push(browser().get(format!("{base}/userinfo")).bearer_auth(&at).send().await.unwrap().text().await.unwrap());
    // The session id, from the browser's cookie jar.
    let res = http.get(format!("{base}/login/done")).send().await.unwrap();
    bodies.push(res.text().await.unwrap());
    // The signing key's private part, opened the way the server opens it.
    let store = brand_idp::store::Store::connect(&db.settings()).await.unwrap();
    let keys = brand_idp::crypto::SecretKeys::from_secret(
        &brand_idp::config::decode_secret_key(&brand_idp::config::Secret::new(db.secret_key.clone())).unwrap(),
    );
    for k in store.all_keys().await.unwrap() {
        let pkcs8 = keys.open(&k.private_key, k.kid.as_bytes()).unwrap();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pkcs8);
        // Any 40-character run of the key's base64 would give it away.
        secrets.push(("private key".into(), b64[100..140].to_string()));
        secrets.push(("private key (base64url)".into(), brand_idp::crypto::b64url(&pkcs8)[100..140].to_string()));
    }
    store.close().await;
    // The session cookie value: log in once more with a raw client to read Set-Cookie.
    let raw = browser();
    let page = raw.get(format!("{base}/login")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_value(&page, "csrf").unwrap();
    let res = raw
        .post(format!("{base}/login"))
        .form(&[("username", "dave"), ("password", PW), ("csrf", csrf.as_str()), ("return_to", "")])
        .send()
        .await
        .unwrap();
    for c in res.headers().get_all("set-cookie") {
        let c = c.to_str().unwrap();
        if let Some(v) = c.strip_prefix("bidp_session=") {
            let sid = v.split(';').next().unwrap().to_string();
            secrets.push(("session id".into(), sid.clone()));
            // And its stored hash is only a lookup key, never logged either.
            secrets.push(("session id hash".into(), brand_idp::crypto::token_hash(&sid)));
        }
    }
    secrets.push(("csrf cookie".into(), csrf.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = server.stderr.lock().unwrap().join("\n");
    assert!(logs.len() > 10_000, "trace logging is on ({} bytes)", logs.len());
    for (what, value) in &secrets {
        assert!(!logs.contains(value.as_str()), "the {what} appears in the logs");
        for b in &bodies {
            assert!(!b.contains(value.as_str()), "the {what} appears in an error body: {b}");
        }
    }
}
