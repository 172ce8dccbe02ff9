//! The foundation: discovery, JWKS, health, storage behaviour shared by both backends, key
//! bootstrap and rotation, and the admin CLI.

use std::process::Stdio;
use std::time::Duration;

use brand_idp::store::{AuthCodeRow, KeyState, NewConsumer, Profile, Redeemed, StoreError};
use serde_json::Value;

use crate::both_backends;
use crate::support::*;

both_backends!(
    discovery_lists_the_required_metadata_with_the_exact_issuer,
    jwks_serves_every_published_key_with_cache_validators,
    health_and_readiness,
    storage_consumers_are_unique_case_insensitively,
    storage_code_is_redeemed_exactly_once_under_concurrency,
    storage_two_processes_write_one_database_without_refusals,
    upgrade_keeps_live_access_tokens,
    key_rotation_keeps_the_previous_key_published,
    cli_every_command_with_json,
    cli_refuses_bad_input_with_one_sentence,
);

async fn discovery_lists_the_required_metadata_with_the_exact_issuer(b: Backend) {
    let app = spawn_app_with(b, |s| s.issuer = s.issuer.clone() + "/tenant-A").await;
    let res = app.http.get(app.url("/.well-known/openid-configuration")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let m: Value = res.json().await.unwrap();
    // Byte-identical issuer, including path and case.
    assert_eq!(m["issuer"].as_str().unwrap(), app.issuer());
    assert!(app.issuer().ends_with("/tenant-A"));
    // Discovery 1.0 §3 REQUIRED.
    for f in [
        "issuer",
        "authorization_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
        "token_endpoint",
    ] {
        assert!(m.get(f).is_some(), "missing REQUIRED {f}");
    }
    // RECOMMENDED ones that are true of this server.
    for f in ["userinfo_endpoint", "scopes_supported", "claims_supported"] {
        assert!(m.get(f).is_some(), "missing RECOMMENDED {f}");
    }
    assert!(m["scopes_supported"].as_array().unwrap().contains(&Value::from("openid")));
    assert_eq!(m["id_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
    assert_eq!(m["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    // The JWKS the document names is the one served.
    let jwks_uri = m["jwks_uri"].as_str().unwrap();
    assert!(jwks_uri.starts_with(app.issuer()));
}

async fn jwks_serves_every_published_key_with_cache_validators(b: Backend) {
    let app = spawn_app(b).await;
    let res = app.http.get(app.url("/jwks.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cache = res.headers()["cache-control"].to_str().unwrap().to_string();
    assert!(cache.contains("max-age=300"), "{cache}");
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let jwks: Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    for (f, v) in [("kty", "RSA"), ("use", "sig"), ("alg", "RS256"), ("e", "AQAB")] {
        assert_eq!(k[f], v, "{f}");
    }
    assert!(k["kid"].as_str().unwrap().len() >= 43);
    // RSA 2048: a 256-byte modulus.
    let n = brand_idp::crypto::b64url_decode(k["n"].as_str().unwrap()).unwrap();
    assert_eq!(n.len(), 256);
    assert!(k.get("d").is_none() && k.get("p").is_none(), "private parts must never be published");
    let res = app.http.get(app.url("/jwks.json")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(res.status(), 304);
}

async fn health_and_readiness(b: Backend) {
    let app = spawn_app(b).await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["database"], "ok");
    assert_eq!(v["signing_key"], "ok");
    assert!(res_has_request_id(&app).await);
    // The database goes away: readiness says so with 503 and Retry-After, fast.
    app.app.state.store.close().await;
    let started = std::time::Instant::now();
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn res_has_request_id(app: &TestApp) -> bool {
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    res.headers().get("x-request-id").is_some_and(|v| !v.is_empty())
}

async fn storage_consumers_are_unique_case_insensitively(b: Backend) {
    let app = spawn_app(b).await;
    let store = &app.app.state.store;
    let new = |u: &str| NewConsumer {
        id: brand_idp::consumers::new_subject(),
        username: u.into(),
        password_hash: None,
        profile: Profile { email: Some("a@example.com".into()), ..Profile::default() },
        lp_attributes: None,
    };
    let c = store.create_consumer(&new("Élodie"), 1).await.unwrap();
    assert!(matches!(store.create_consumer(&new("éLODIE"), 2).await, Err(StoreError::Conflict)));
    let found = store.consumer_by_username("ÉLODIE").await.unwrap();
    assert_eq!(found.id, c.id);
    assert_eq!(found.username, "Élodie");
    assert_eq!(found.profile.email.as_deref(), Some("a@example.com"));
    store.set_consumer_disabled("élodie", true, 3).await.unwrap();
    assert!(store.consumer_by_id(&c.id).await.unwrap().disabled);
    assert!(matches!(store.set_consumer_disabled("nobody", true, 3).await, Err(StoreError::NotFound)));
    store.delete_consumer("ÉLODIE").await.unwrap();
    assert!(matches!(store.consumer_by_id(&c.id).await, Err(StoreError::NotFound)));
}

async fn storage_code_is_redeemed_exactly_once_under_concurrency(b: Backend) {
    let app = spawn_app(b).await;
    let store = app.app.state.store.clone();
    let now = app.app.state.now();
    let consumer = NewConsumer {
        id: brand_idp::consumers::new_subject(),
        username: "redeemer".into(),
        password_hash: None,
        profile: Profile::default(),
        lp_attributes: None,
    };
    let consumer = store.create_consumer(&consumer, now).await.unwrap();
    let row = AuthCodeRow {
        code_hash: "h1".into(),
        client_id: "c".into(),
        consumer_id: consumer.id.clone(),
        redirect_uri: "https://a.example/cb".into(),
        scope: "openid".into(),
        nonce: Some("n-1".into()),
        auth_time: now,
        code_challenge: None,
        claims: None,
        subject: "{}".into(),
        created_at: now,
        expires_at: now + 60,
    };
    store.insert_code(&row).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let token = format!("t{i}");
            (token.clone(), s.redeem_code("h1", &token, now + 3600, now).await.unwrap())
        }));
    }
    let (mut winners, mut replays) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            (token, Redeemed::Fresh(r)) => {
                assert_eq!(r.nonce.as_deref(), Some("n-1"));
                assert_eq!(r.subject, "{}");
                winners.push(token);
            }
            (_, Redeemed::Replayed { client_id }) => {
                assert_eq!(client_id, "c");
                replays += 1;
            }
            (_, Redeemed::Invalid) => panic!("a used code is a replay, not an unknown code"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent redemption may win");
    assert_eq!(replays, 7);
    // The other uses were replays: the token the winner's redemption recorded is revoked
    // (RFC 6749 §4.1.2), and no loser's token was ever recorded.
    assert!(store.live_access_token("h1", &winners[0], now).await.unwrap().is_none());
    assert!(store.live_access_token("h1", "t8", now).await.unwrap().is_none());
    // Without a replay, the token recorded by the redemption is live until a replay comes.
    store.insert_code(&AuthCodeRow { code_hash: "h5".into(), ..row.clone() }).await.unwrap();
    assert!(matches!(store.redeem_code("h5", "solo", now + 3600, now).await.unwrap(), Redeemed::Fresh(_)));
    let live = store.live_access_token("h5", "solo", now).await.unwrap().expect("the redeemed code's token is live");
    assert_eq!(live.consumer_id, consumer.id);
    assert_eq!(live.expires_at, now + 3600);
    assert!(store.live_access_token("h5", "solo", now + 3600).await.unwrap().is_none(), "expired");
    assert!(matches!(store.redeem_code("h5", "t9", now + 3600, now + 1).await.unwrap(), Redeemed::Replayed { .. }));
    assert!(store.live_access_token("h5", "solo", now + 1).await.unwrap().is_none(), "revoked by the replay");
    // Many different codes at once (on SQLite, redemptions that meet share one statement):
    // each is redeemed once, returns its own row, and records its own token.
    for i in 0..100 {
        let code = AuthCodeRow { code_hash: format!("m{i}"), nonce: Some(format!("n{i}")), ..row.clone() };
        store.insert_code(&code).await.unwrap();
    }
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { (i, s.redeem_code(&format!("m{i}"), &format!("mt{i}"), now + 3600, now).await) })
        })
        .collect();
    for t in tasks {
        let (i, redeemed) = t.await.unwrap();
        match redeemed.unwrap() {
            Redeemed::Fresh(r) => {
                assert_eq!(r.code_hash, format!("m{i}"));
                assert_eq!(r.nonce, Some(format!("n{i}")));
            }
            other => panic!("code m{i} was not redeemed: {other:?}"),
        }
    }
    for i in 0..100 {
        let live = store.live_access_token(&format!("m{i}"), &format!("mt{i}"), now).await.unwrap();
        assert!(live.is_some(), "the token recorded for code m{i} is live");
    }
    assert!(matches!(store.redeem_code("m7", "again", now + 3600, now).await.unwrap(), Redeemed::Replayed { .. }));
    assert!(store.live_access_token("m7", "mt7", now).await.unwrap().is_none());
    assert!(store.live_access_token("m8", "mt8", now).await.unwrap().is_some(), "a replay revokes its own grant only");
    // A token is found under its own grant only.
    assert!(store.live_access_token("m9", "mt8", now).await.unwrap().is_none());
    assert!(store.live_access_token("m8", "mt9", now).await.unwrap().is_none());
    // Expired codes are invalid, and so are unknown ones.
    store.insert_code(&AuthCodeRow { code_hash: "h2".into(), expires_at: now + 60, ..row.clone() }).await.unwrap();
    assert!(matches!(store.redeem_code("h2", "x2", now + 3600, now + 61).await.unwrap(), Redeemed::Invalid));
    assert!(matches!(store.redeem_code("unknown", "x3", now + 3600, now).await.unwrap(), Redeemed::Invalid));
    // A disabled consumer's code is not redeemable, even if it was issued before the switch.
    store.insert_code(&AuthCodeRow { code_hash: "h4".into(), ..row.clone() }).await.unwrap();
    store.set_consumer_disabled("redeemer", true, now).await.unwrap();
    assert!(matches!(store.redeem_code("h4", "x4", now + 3600, now).await.unwrap(), Redeemed::Invalid));
    store.set_consumer_disabled("redeemer", false, now).await.unwrap();
    // Cleanup removes expired rows in batches and leaves live ones.
    store.insert_code(&AuthCodeRow { code_hash: "h3".into(), expires_at: now + 600, ..row }).await.unwrap();
    let deleted = store.delete_expired(now + 500, 0, 1000).await.unwrap();
    assert_eq!(deleted, 104);
    assert_eq!(store.count_rows("grants").await.unwrap(), 1);
    // The database gone: redemption says so (the token endpoint answers 503), it does not hang.
    store.close().await;
    let gone = store.redeem_code("h3", "x5", now + 3600, now).await;
    assert!(matches!(gone, Err(StoreError::Unavailable(_))), "{gone:?}");
}

/// The admin CLI and a running server are two processes writing one database. A transaction
/// that reads before it writes (deleting a consumer looks the account up first) must wait for
/// the other's write, not fail because the other wrote in between (SQLite refuses a deferred
/// transaction's first write after another connection's commit, without waiting).
async fn storage_two_processes_write_one_database_without_refusals(b: Backend) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let db = TestDb::new(b).await;
    let settings = db.settings();
    let cli = brand_idp::store::Store::connect(&settings).await.unwrap();
    cli.migrate().await.unwrap();
    let server = brand_idp::store::Store::connect(&settings).await.unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut writes = 0i64;
            while !stop.load(Ordering::Relaxed) {
                server.throttle_fail(&format!("k{}", writes % 16), writes, 60).await.expect("the server's write");
                writes += 1;
            }
            writes
        })
    };
    for i in 0..150 {
        let name = format!("cli{i}");
        let c = NewConsumer {
            id: brand_idp::consumers::new_subject(),
            username: name.clone(),
            password_hash: None,
            profile: Profile::default(),
            lp_attributes: None,
        };
        cli.create_consumer(&c, i).await.unwrap_or_else(|e| panic!("create {name}: {e}"));
        cli.delete_consumer(&name).await.unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }
    stop.store(true, Ordering::Relaxed);
    let writes = busy.await.unwrap();
    assert!(writes > 0, "the other process wrote meanwhile");
}

/// A database left by a release before grants (schema version 2), with a live access token,
/// a revoked one and a code in flight: upgrading keeps the live token usable at /userinfo
/// and the revoked one revoked.
async fn upgrade_keeps_live_access_tokens(b: Backend) {
    let db = TestDb::new(b).await;
    let now = brand_idp::clock::Clock::now(&brand_idp::clock::SystemClock);
    let v1: [&str; 2] = match b {
        Backend::Sqlite => [
            include_str!("../../migrations/sqlite/0001_init.sql"),
            include_str!("../../migrations/sqlite/0002_login_throttle.sql"),
        ],
        Backend::Postgres => [
            include_str!("../../migrations/postgres/0001_init.sql"),
            include_str!("../../migrations/postgres/0002_login_throttle.sql"),
        ],
    };
    let mut script = String::from(
        "CREATE TABLE brand_idp_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL);",
    );
    for sql in v1 {
        script.push_str(sql);
    }
    let t = |x: &str| brand_idp::crypto::token_hash(x);
    script.push_str(&format!(
        "INSERT INTO brand_idp_migrations VALUES (1, 'init', {now}), (2, 'login_throttle', {now});
         INSERT INTO consumers (id, username, username_key, claims, disabled, created_at, updated_at)
           VALUES ('sub-1', 'old', 'old', '{{\"email\":\"old@example.com\"}}', FALSE, {now}, {now});
         INSERT INTO access_tokens (token_hash, grant_id, client_id, consumer_id, scope, created_at, expires_at)
           VALUES ('{}', 'g1', 'rp', 'sub-1', 'openid email', {now}, {});
         INSERT INTO access_tokens (token_hash, grant_id, client_id, consumer_id, scope, created_at, expires_at, revoked_at)
           VALUES ('{}', 'g2', 'rp', 'sub-1', 'openid email', {now}, {}, {now});
         INSERT INTO auth_codes (code_hash, grant_id, client_id, consumer_id, redirect_uri, scope, auth_time, created_at, expires_at)
           VALUES ('{}', 'g3', 'rp', 'sub-1', 'https://rp.example/cb', 'openid', {now}, {now}, {});",
        t("live-token"),
        now + 3600,
        t("revoked-token"),
        now + 3600,
        t("in-flight-code"),
        now + 600,
    ));
    match b {
        Backend::Sqlite => {
            use sqlx::Connection;
            let url = format!("sqlite://{}?mode=rwc", db.settings().sqlite_path().display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(&script).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&db.pg.as_ref().unwrap().url).await.unwrap();
            sqlx::raw_sql(&script).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
    let app = spawn_on(db, |_| {}).await;
    let userinfo = |token: &'static str| app.http.get(app.url("/userinfo")).bearer_auth(token).send();
    let res = userinfo("live-token").await.unwrap();
    assert_eq!(res.status(), 200);
    let claims: Value = res.json().await.unwrap();
    assert_eq!(claims["sub"], "sub-1");
    assert_eq!(claims["email"], "old@example.com");
    assert_eq!(userinfo("revoked-token").await.unwrap().status(), 401);
    assert_eq!(app.app.state.store.count_rows("grants").await.unwrap(), 2, "both tokens, not the code");
}

async fn key_rotation_keeps_the_previous_key_published(b: Backend) {
    let app = spawn_app(b).await;
    let st = &app.app.state;
    let first = st.keys.signer().unwrap().kid.clone();
    let now = st.now();
    let k = brand_idp::keys::rotate(&st.store, &st.secrets, 2048, now, 0, 3600).await.unwrap();
    assert_eq!(k.state, KeyState::Active);
    app.app.refresh_keys().await.unwrap();
    assert_eq!(st.keys.signer().unwrap().kid, k.kid);
    let jwks: Value = app.http.get(app.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, vec![k.kid.as_str(), first.as_str()], "active first, retired still published");
    let all = st.store.all_keys().await.unwrap();
    assert_eq!(all.iter().filter(|k| k.state == KeyState::Active).count(), 1);
    // Past the grace period the retired key leaves the JWKS.
    app.clock.advance(3601);
    app.app.refresh_keys().await.unwrap();
    let jwks: Value = app.http.get(app.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    // A scheduled key is published first and signs only once due.
    let next = brand_idp::keys::rotate(&st.store, &st.secrets, 2048, st.now(), 120, 3600).await.unwrap();
    assert_eq!(next.state, KeyState::Next);
    app.app.refresh_keys().await.unwrap();
    assert_eq!(st.keys.signer().unwrap().kid, k.kid);
    let jwks: Value = app.http.get(app.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    app.clock.advance(121);
    app.app.refresh_keys().await.unwrap();
    assert_eq!(st.keys.signer().unwrap().kid, next.kid);
}

fn ok_json(db: &TestDb, args: &[&str], stdin: Option<&str>) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    stdout_json(&db.cli(&full, stdin))
}

async fn cli_every_command_with_json(b: Backend) {
    let db = TestDb::new(b).await;
    assert!(ok_json(&db, &["migrate"], None)["applied"].is_array());
    assert_eq!(ok_json(&db, &["migrate"], None)["applied"], serde_json::json!([]), "migrate is idempotent");
    let cfg = ok_json(&db, &["check-config"], None);
    assert_eq!(cfg["secret_key"], "(set, redacted)");
    assert!(!cfg.to_string().contains(&db.secret_key));
    if let Some(pg) = &db.pg {
        assert!(cfg["database_url"].as_str().unwrap().contains(&pg.name));
    }

    // Clients.
    let c = ok_json(
        &db,
        &[
            "client",
            "create",
            "--client-id",
            "shop",
            "--redirect-uri",
            "https://shop.example/cb",
            "--redirect-uri",
            "https://shop.example/cb2",
            "--response-type",
            "code",
            "--response-type",
            "id_token",
            "--name",
            "Shop",
        ],
        None,
    );
    let secret = c["client_secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 43);
    assert_eq!(c["redirect_uris"].as_array().unwrap().len(), 2);
    let shown = ok_json(&db, &["client", "show", "shop"], None);
    assert!(shown.get("client_secret").is_none() && !shown.to_string().contains(&secret), "secret shown once only");
    let public = ok_json(
        &db,
        &["client", "create", "--client-id", "app", "--public", "--redirect-uri", "com.shop.app:/cb"],
        None,
    );
    assert_eq!(public["auth_method"], "none");
    assert!(public.get("client_secret").is_none());
    let list = ok_json(&db, &["client", "list"], None);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let rotated = ok_json(&db, &["client", "rotate-secret", "shop"], None);
    assert_ne!(rotated["client_secret"].as_str().unwrap(), secret);
    ok_json(&db, &["client", "delete", "app"], None);
    assert_eq!(ok_json(&db, &["client", "list"], None).as_array().unwrap().len(), 1);

    // Consumers.
    let alice = ok_json(
        &db,
        &[
            "consumer",
            "create",
            "--username",
            "alice",
            "--password-stdin",
            "--email",
            "alice@example.com",
            "--given-name",
            "Alice",
            "--family-name",
            "Liddell",
            "--preferred-username",
            "ali",
            "--phone-number",
            "+1 555 0100",
            "--gender",
            "female",
        ],
        Some("correct horse battery\n"),
    );
    let sub = alice["id"].as_str().unwrap().to_string();
    assert!(!sub.contains("alice"), "the subject is opaque");
    assert_eq!(alice["profile"]["family_name"], "Liddell");
    assert!(alice.get("password_hash").is_none());
    let pwfile = db.dir.join("pw.txt");
    std::fs::write(&pwfile, "another secret\n").unwrap();
    ok_json(&db, &["consumer", "create", "--username", "bob", "--password-file", pwfile.to_str().unwrap()], None);
    assert_eq!(ok_json(&db, &["consumer", "list"], None).as_array().unwrap().len(), 2);
    assert_eq!(ok_json(&db, &["consumer", "show", "ALICE"], None)["id"], sub.as_str());
    ok_json(&db, &["consumer", "set-password", "alice", "--password-stdin"], Some("new password\n"));
    assert_eq!(ok_json(&db, &["consumer", "disable", "alice"], None)["status"], "disabled");
    assert_eq!(ok_json(&db, &["consumer", "show", "alice"], None)["disabled"], true);
    assert_eq!(ok_json(&db, &["consumer", "enable", "alice"], None)["status"], "enabled");
    ok_json(&db, &["consumer", "delete", "bob"], None);
    assert_eq!(ok_json(&db, &["consumer", "list"], None).as_array().unwrap().len(), 1);

    // Keys: the first rotate creates the first key and a second one.
    let k = ok_json(&db, &["keys", "rotate"], None);
    assert_eq!(k["state"], "active");
    let keys = ok_json(&db, &["keys", "list"], None);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let next = ok_json(&db, &["keys", "rotate", "--activate-after", "3600"], None);
    assert_eq!(next["state"], "next");
    let pk = ok_json(&db, &["keys", "public-key"], None);
    assert_eq!(pk["kid"], k["kid"]);
    let one_line = pk["public_key"].as_str().unwrap();
    assert!(!one_line.contains('\n') && !one_line.contains("BEGIN"));
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, one_line).unwrap();
    assert!(aws_lc_rs::rsa::PublicKey::from_der(&der).is_ok(), "one-line key is a DER SubjectPublicKeyInfo");
    let next_kid = next["kid"].as_str().unwrap();
    let pem = ok_json(&db, &["keys", "public-key", "--kid", next_kid, "--format", "pem"], None);
    assert!(pem["public_key"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let jwk = ok_json(&db, &["keys", "public-key", "--format", "jwk"], None);
    assert_eq!(jwk["public_key"]["kty"], "RSA");
    // Plain output is the bare one-line key, ready to paste.
    let plain = db.cli(&["keys", "public-key"], None);
    assert!(plain.status.success());
    assert_eq!(String::from_utf8(plain.stdout).unwrap().trim_end(), one_line);
    // A next key can be activated early (after its public key was pasted somewhere).
    let activated = ok_json(&db, &["keys", "activate", next_kid], None);
    assert_eq!(activated["state"], "active");
    assert_eq!(ok_json(&db, &["keys", "public-key"], None)["kid"], next_kid);
    let again = db.cli(&["keys", "activate", next_kid], None);
    assert_eq!(again.status.code(), Some(1), "only a next key can be activated");
}

fn fails_with(out: &std::process::Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

async fn cli_refuses_bad_input_with_one_sentence(b: Backend) {
    let db = TestDb::new(b).await;
    fails_with(&db.cli(&["client", "create", "--bogus"], None), 2, "unexpected argument");
    fails_with(&db.cli(&["frobnicate"], None), 2, "unrecognized subcommand");
    for (uri, why) in [
        ("/relative", "absolute"),
        ("https://a.example/cb#x", "fragment"),
        ("javascript:alert(1)", "scheme"),
        ("data:text/html,x", "scheme"),
    ] {
        fails_with(&db.cli(&["client", "create", "--client-id", "c", "--redirect-uri", uri], None), 1, why);
    }
    let create = ["client", "create", "--client-id", "dup", "--redirect-uri", "https://a.example/cb"];
    assert!(db.cli(&create, None).status.success());
    fails_with(&db.cli(&create, None), 1, "already exists");
    fails_with(
        &db.cli(&["consumer", "create", "--username", "u", "--password-stdin"], Some("\n")),
        1,
        "password is empty",
    );
    fails_with(&db.cli(&["consumer", "create", "--username", "u"], None), 2, "password");
    fails_with(&db.cli(&["consumer", "show", "nobody"], None), 1, "no consumer");
    let json_err = db.cli(&["--json", "client", "show", "nobody"], None);
    assert_eq!(json_err.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&json_err.stderr).unwrap();
    assert!(v["error"].as_str().unwrap().contains("no client"));

    // PostgreSQL without a secret key, and a database that cannot be reached.
    let pg_env = |url: &str, key: bool| {
        let mut env = vec![
            ("DATABASE_URL".to_string(), url.to_string()),
            ("BRAND_IDP_DATA_DIR".to_string(), db.dir.display().to_string()),
        ];
        if key {
            env.push(("BRAND_IDP_SECRET_KEY".to_string(), db.secret_key.clone()));
        }
        env
    };
    let url =
        db.pg.as_ref().map(|p| p.url.clone()).unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    fails_with(&run_cli(&pg_env(&url, false), &["client", "list"], None), 1, "BRAND_IDP_SECRET_KEY is not set");
    fails_with(&run_cli(&pg_env(&url, false), &["serve"], None), 1, "BRAND_IDP_SECRET_KEY is not set");
    fails_with(
        &run_cli(&pg_env("postgres://postgres@127.0.0.1:9/nowhere", true), &["client", "list"], None),
        1,
        "cannot open the database",
    );
    fails_with(
        &run_cli(&[("BRAND_IDP_LISTEN".to_string(), "not-an-address".to_string())], &["check-config"], None),
        1,
        "BRAND_IDP_LISTEN",
    );
}

/// Two `brand-idp serve` processes started at the same moment on one empty PostgreSQL
/// database end with one schema, exactly one active key, and the same JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_bootstrap_one_empty_postgres_database() {
    let db = TestDb::new(Backend::Postgres).await;
    let ports: Vec<u16> =
        (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let mut children = Vec::new();
    for port in &ports {
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("serve").env_clear();
        for (k, v) in db.env() {
            cmd.env(k, v);
        }
        cmd.env("BRAND_IDP_LISTEN", format!("127.0.0.1:{port}"))
            .env("BRAND_IDP_ISSUER", "http://idp.test")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        children.push(cmd.spawn().unwrap());
    }
    let http = browser();
    let mut bodies = Vec::new();
    for port in &ports {
        let url = format!("http://127.0.0.1:{port}/jwks.json");
        let mut body = None;
        for _ in 0..300 {
            if let Ok(r) = http.get(&url).send().await {
                body = Some(r.text().await.unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bodies.push(body.expect("instance did not start"));
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(bodies[0], bodies[1], "both instances serve the same JWKS");
    let jwks: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.pg.as_ref().unwrap().url).await.unwrap();
    let (active,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM signing_keys WHERE state = 'active'").fetch_one(&mut conn).await.unwrap();
    assert_eq!(active, 1);
    let (migrations,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM brand_idp_migrations").fetch_one(&mut conn).await.unwrap();
    assert_eq!(migrations, 3, "every migration applied once");
    conn.close().await.unwrap();
}

/// The embedded default needs nothing: no secret key, no database URL.
#[tokio::test]
async fn embedded_default_generates_its_secret_key_with_private_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("brand-idp-test-{}", random_suffix()));
    let env = vec![("BRAND_IDP_DATA_DIR".to_string(), dir.display().to_string())];
    let out = run_cli(&env, &["--json", "keys", "rotate"], None);
    let v = stdout_json(&out);
    assert_eq!(v["state"], "active");
    let meta = std::fs::metadata(dir.join("secret.key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Same key on the next run: the sealed private key still opens.
    let out = run_cli(&env, &["--json", "keys", "public-key"], None);
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(dir);
}
