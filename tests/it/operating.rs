//! Operating brand-idp: metrics, scheduled key rotation, consumer import and export.

use std::collections::HashMap;
use std::time::Duration;

use brand_idp::store::KeyState;
use serde_json::Value;

use crate::both_backends;
use crate::support::*;

const CB: &str = "https://rp.example/cb";

/// Parses the Prometheus text format into "name{labels}" -> value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad metric name: {name}");
        assert!(name.starts_with("brand_idp_"), "{name}");
        out.insert(series.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value: {line}")));
    }
    out
}

both_backends!(
    metrics_are_scraped_and_parsed_with_bounded_labels,
    scheduled_rotation_walks_through_its_states,
    import_of_each_hash_format_then_login_verifies_and_rehashes,
);

async fn metrics_are_scraped_and_parsed_with_bounded_labels(b: Backend) {
    let app = spawn_app(b).await;
    let secret = app.add_client("rp-metrics-client", &[CB], &["code"], &[], false).await.unwrap();
    app.add_consumer("metrics-user", "the right password", brand_idp::store::Profile::default()).await;
    let http = browser();
    let failed = app.login_with(&http, "metrics-user", "wrong", "").await;
    assert_eq!(failed.status(), 401);
    let q = format!(
        "{}?client_id=rp-metrics-client&redirect_uri={}&response_type=code&scope=openid",
        app.url("/authorize"),
        url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    );
    let landed = app.authorize_as(&http, &q, "metrics-user", "the right password").await;
    let code = params_of(landed.query())["code"].clone();
    for _ in 0..2 {
        browser()
            .post(app.url("/token"))
            .basic_auth("rp-metrics-client", Some(&secret))
            .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CB)])
            .send()
            .await
            .unwrap();
    }
    let _ = browser().get(app.url("/no/such/path/metrics-user")).send().await.unwrap();
    let res = browser().get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = res.text().await.unwrap();
    let m = parse_metrics(&text);
    assert_eq!(m["brand_idp_logins_total{outcome=\"success\"}"], 1.0);
    assert_eq!(m["brand_idp_logins_total{outcome=\"failure\"}"], 1.0);
    assert_eq!(m["brand_idp_codes_issued_total"], 1.0);
    assert_eq!(m["brand_idp_codes_redeemed_total{outcome=\"ok\"}"], 1.0);
    assert_eq!(m["brand_idp_codes_redeemed_total{outcome=\"replayed\"}"], 1.0);
    assert_eq!(m["brand_idp_access_tokens_issued_total"], 1.0);
    assert_eq!(m["brand_idp_http_requests_total{route=\"/token\",method=\"POST\",status=\"200\"}"], 1.0);
    assert_eq!(m["brand_idp_http_requests_total{route=\"/token\",method=\"POST\",status=\"400\"}"], 1.0);
    assert_eq!(m["brand_idp_http_requests_total{route=\"other\",method=\"GET\",status=\"404\"}"], 1.0);
    assert_eq!(m["brand_idp_http_request_duration_seconds_count{route=\"/token\"}"], 2.0);
    assert!(m["brand_idp_password_hash_duration_seconds_count"] >= 2.0);
    assert_eq!(m["brand_idp_signing_key_loaded"], 1.0);
    assert!(m.keys().any(|k| k.starts_with("brand_idp_signing_key_age_seconds{kid=")));
    assert!(m.contains_key("brand_idp_db_pool_connections{state=\"in_use\"}"));
    // Nothing a client chose becomes a label: no usernames, client ids or raw paths.
    for leak in ["metrics-user", "rp-metrics-client", "/no/such/path"] {
        assert!(!text.contains(leak), "{leak} in the metrics");
    }
}

async fn scheduled_rotation_walks_through_its_states(b: Backend) {
    let tweak = |s: &mut brand_idp::config::Settings| {
        s.key_rotation_interval_secs = 1000;
        s.key_prepublish_secs = 400;
    };
    let app = spawn_app_with(b, tweak).await;
    let st = &app.app.state;
    let first = st.keys.signer().unwrap().kid.clone();
    let jwks_kids = || async {
        let v: Value = browser().get(app.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
        v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    // Not yet: the active key is young.
    app.clock.advance(599);
    brand_idp::maintain_keys(st).await.unwrap();
    assert_eq!(jwks_kids().await, vec![first.clone()]);
    // Pre-publication: the next key is in the JWKS, the active one still signs.
    app.clock.advance(1);
    brand_idp::maintain_keys(st).await.unwrap();
    let keys = st.store.all_keys().await.unwrap();
    let next = keys.iter().find(|k| k.state == KeyState::Next).expect("a next key").clone();
    assert_eq!(next.activate_at, Some(keys.iter().find(|k| k.kid == first).unwrap().activated_at.unwrap() + 1000));
    assert_eq!(jwks_kids().await, vec![first.clone(), next.kid.clone()]);
    assert_eq!(st.keys.signer().unwrap().kid, first);
    // Another round does not create a second next key.
    brand_idp::maintain_keys(st).await.unwrap();
    assert_eq!(st.store.all_keys().await.unwrap().len(), 2);
    // Activation at the end of the interval; the old key stays published.
    app.clock.advance(400);
    brand_idp::maintain_keys(st).await.unwrap();
    assert_eq!(st.keys.signer().unwrap().kid, next.kid);
    assert_eq!(jwks_kids().await, vec![next.kid.clone(), first.clone()]);
    // Retired after every token it signed expired and every cache refreshed.
    app.clock.advance(st.retire_grace());
    brand_idp::maintain_keys(st).await.unwrap();
    let kids = jwks_kids().await;
    assert!(!kids.contains(&first), "{kids:?}");
    // With several instances on PostgreSQL, exactly one rotation happens.
    if b == Backend::Postgres {
        let mut other_settings = app.db.settings();
        other_settings.issuer = app.issuer().to_string();
        tweak(&mut other_settings);
        let other = brand_idp::App::build_with_clock(other_settings, app.clock.clone()).await.unwrap();
        // Settle: whatever key was scheduled meanwhile signs now, and none is next.
        app.clock.advance(1400);
        brand_idp::maintain_keys(st).await.unwrap();
        let keys = st.store.all_keys().await.unwrap();
        assert_eq!(keys.iter().filter(|k| k.state == KeyState::Next).count(), 0);
        // Then the rotation falls due with two instances (and their background upkeep).
        app.clock.advance(600);
        // Both instances (and their background upkeep) race for the due rotation.
        let (x, y) = tokio::join!(brand_idp::maintain_keys(st), brand_idp::maintain_keys(&other.state));
        x.unwrap();
        y.unwrap();
        let after = st.store.all_keys().await.unwrap();
        assert_eq!(after.iter().filter(|k| k.state == KeyState::Next).count(), 1, "exactly one rotation");
        assert_eq!(after.iter().filter(|k| k.state == KeyState::Active).count(), 1);
    }
    // Manual rotation goes through the same states.
    let manual = brand_idp::keys::rotate(&st.store, &st.secrets, 2048, st.now(), 50, st.retire_grace()).await.unwrap();
    assert_eq!(manual.state, KeyState::Next);
}

/// Reference hashes of "pw-<format>" made the way other systems make them.
fn legacy_hashes() -> Vec<(&'static str, String)> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let pbkdf2 = |pw: &str, salt: &[u8]| {
        let mut dk = [0u8; 32];
        aws_lc_rs::pbkdf2::derive(
            aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(2000).unwrap(),
            salt,
            pw.as_bytes(),
            &mut dk,
        );
        dk
    };
    let bcrypt = |pw: &str, v: bcrypt::Version| bcrypt::hash_with_salt(pw, 5, [9u8; 16]).unwrap().format_for_version(v);
    let argon = |pw: &str, alg: argon2::Algorithm, m: u32| {
        use argon2::password_hash::PasswordHasher;
        argon2::Argon2::new(alg, argon2::Version::V0x13, argon2::Params::new(m, 1, 1, None).unwrap())
            .hash_password_with_salt(pw.as_bytes(), b"0123456789abcdef")
            .unwrap()
            .to_string()
    };
    vec![
        ("argon2id-old", argon("pw-argon2id-old", argon2::Algorithm::Argon2id, 256)),
        ("argon2i", argon("pw-argon2i", argon2::Algorithm::Argon2i, 256)),
        ("bcrypt-2a", bcrypt("pw-bcrypt-2a", bcrypt::Version::TwoA)),
        ("bcrypt-2b", bcrypt("pw-bcrypt-2b", bcrypt::Version::TwoB)),
        ("bcrypt-2y", bcrypt("pw-bcrypt-2y", bcrypt::Version::TwoY)),
        (
            "pbkdf2-phc",
            format!(
                "$pbkdf2-sha256$i=2000,l=32${}${}",
                b64(b"pepper").trim_end_matches('='),
                b64(&pbkdf2("pw-pbkdf2-phc", b"pepper")).trim_end_matches('=')
            ),
        ),
        ("pbkdf2-django", format!("pbkdf2_sha256$2000$sel${}", b64(&pbkdf2("pw-pbkdf2-django", b"sel")))),
    ]
}

async fn import_of_each_hash_format_then_login_verifies_and_rehashes(b: Backend) {
    let app = spawn_app(b).await;
    let db = &app.db;
    let st = &app.app.state;
    let mut lines = Vec::new();
    for (name, hash) in legacy_hashes() {
        lines.push(
            serde_json::json!({"username": name, "subject": format!("legacy-{name}"), "password_hash": hash,
            "profile": {"email": format!("{name}@example.com")}})
            .to_string(),
        );
    }
    lines.push(
        serde_json::json!({"username": "no-password", "profile": {"given_name": "N"},
        "lp_sdes": [{"type": "personal", "personal": {"firstname": "N"}}]})
        .to_string(),
    );
    let file = db.dir.join("consumers.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = stdout_json(&db.cli(&["--json", "consumer", "import", file.to_str().unwrap()], None));
    assert_eq!(out["imported"], lines.len());
    // Idempotent: the same file again updates, never duplicates.
    let out = stdout_json(&db.cli(&["--json", "consumer", "import", file.to_str().unwrap()], None));
    assert_eq!(out["imported"], lines.len());
    assert_eq!(st.store.count_rows("consumers").await.unwrap(), lines.len() as i64);
    // Every format logs in for real, and is re-hashed to argon2id at the current parameters.
    for (name, old) in legacy_hashes() {
        let c = st.store.consumer_by_username(name).await.unwrap();
        assert_eq!(c.id, format!("legacy-{name}"), "the subject is kept");
        assert_eq!(c.password_hash.as_deref(), Some(old.as_str()));
        let http = browser();
        let res = app.login_with(&http, name, &format!("pw-{name}"), "").await;
        assert_eq!(res.status(), 303, "{name}");
        let c = st.store.consumer_by_username(name).await.unwrap();
        let new = c.password_hash.unwrap();
        assert!(new.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{name}: {new}");
        assert_ne!(new, old);
        // The new hash works, the wrong password does not.
        assert_eq!(app.login_with(&browser(), name, &format!("pw-{name}"), "").await.status(), 303);
        assert_eq!(app.login_with(&browser(), name, "nope", "").await.status(), 401);
    }
    // An imported consumer without a password cannot log in; attributes came along.
    assert_eq!(app.login_with(&browser(), "no-password", "anything", "").await.status(), 401);
    let np = st.store.consumer_by_username("no-password").await.unwrap();
    assert_eq!(np.lp_attributes.unwrap()[0]["personal"]["firstname"], "N");
    // Invalid lines: a line-numbered report, and nothing written.
    let bad = db.dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"username\": \"fine1\"}\n{\"username\": \"x\", \"password_hash\": \"md5$abc\"}\n\n{not json\n{\"username\": \"FINE1\"}\n").unwrap();
    let out = db.cli(&["consumer", "import", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: password_hash"), "{err}");
    assert!(err.contains("line 4: not a valid record"), "{err}");
    assert!(err.contains("line 5: the username \"FINE1\" was already given on line 1"), "{err}");
    assert!(st.store.consumer_by_username("fine1").await.is_err(), "nothing half-imported");
    let out = stdout_json(&db.cli(&["--json", "consumer", "import", bad.to_str().unwrap(), "--skip-invalid"], None));
    assert_eq!(out["imported"], 1);
    assert_eq!(out["skipped"].as_array().unwrap().len(), 3);
    // A subject cannot move to another username.
    let clash = db.dir.join("clash.jsonl");
    std::fs::write(&clash, "{\"username\": \"argon2i\", \"subject\": \"another\"}\n{\"username\": \"newcomer\", \"subject\": \"legacy-argon2i\"}\n").unwrap();
    let refused = db.cli(&["--json", "consumer", "import", clash.to_str().unwrap()], None);
    assert_eq!(refused.status.code(), Some(1), "lines that could not be applied make the import fail");
    let out = stdout_json(&db.cli(&["--json", "consumer", "import", clash.to_str().unwrap(), "--skip-invalid"], None));
    assert_eq!(out["imported"], 0);
    assert_eq!(out["skipped"].as_array().unwrap().len(), 2, "{out}");
    // Export writes the same format; importing it elsewhere reproduces the consumers.
    let export = db.dir.join("export.jsonl");
    stdout_json(&db.cli(&["--json", "consumer", "export", "--output", export.to_str().unwrap()], None));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&export).unwrap().permissions().mode() & 0o777, 0o600);
    let exported = std::fs::read_to_string(&export).unwrap();
    assert_eq!(exported.lines().count() as i64, st.store.count_rows("consumers").await.unwrap());
    let other = TestDb::new(Backend::Sqlite).await;
    let out = stdout_json(&other.cli(&["--json", "consumer", "import", export.to_str().unwrap()], None));
    assert_eq!(out["imported"].as_u64().unwrap() as i64, st.store.count_rows("consumers").await.unwrap());
    let again = other.cli(&["consumer", "export"], None);
    let mut a: Vec<&str> = exported.lines().collect();
    let again_text = String::from_utf8(again.stdout).unwrap();
    let mut c: Vec<&str> = again_text.lines().collect();
    a.sort();
    c.sort();
    assert_eq!(a, c, "export, import, export is the identity");
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Servers may use a client registration for `client_cache_secs` before reading it again:
/// a change made elsewhere (the CLI) takes effect within that bound, and not later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_changes_reach_servers_within_the_cache_bound() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.client_cache_secs = 5).await;
    let old = app.add_client("rp", &[CB], &["code"], &[], false).await.unwrap();
    app.add_consumer("cache-user", "the password", brand_idp::store::Profile::default()).await;
    let http = browser();
    let q = format!(
        "{}?client_id=rp&redirect_uri={}&response_type=code&scope=openid",
        app.url("/authorize"),
        url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
    );
    let code = || {
        let (http, q, app) = (http.clone(), q.clone(), &app);
        async move { params_of(app.authorize_as(&http, &q, "cache-user", "the password").await.query())["code"].clone() }
    };
    let redeem = |secret: String, code: String| {
        let url = app.url("/token");
        async move {
            browser()
                .post(url)
                .basic_auth("rp", Some(secret))
                .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CB)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(redeem(old.clone(), code().await).await, 200);
    // The secret is rotated behind the server's back (as `client rotate-secret` does).
    let new = brand_idp::oidc::clients::generate_secret();
    app.app.state.store.set_client_secret_hash("rp", &app.app.state.secrets.hash_client_secret(&new), 0).await.unwrap();
    assert_eq!(redeem(old.clone(), code().await).await, 200, "within the bound the cached registration is used");
    app.clock.advance(5);
    assert_eq!(redeem(old, code().await).await, 401, "after the bound the old secret is refused");
    assert_eq!(redeem(new, code().await).await, 200);
}
