//! brand-idp as LiveEngage sees it. These tests act as LiveEngage does: they configure the
//! connector from `brand-idp liveengage settings`, verify id_tokens with the one-line public
//! key parsed as an X.509 SubjectPublicKeyInfo, redeem codes the way LiveEngage's backend
//! does, decrypt JWEs with a LivePerson-side key pair, and send the external window's real
//! requests.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::both_backends;
use crate::support::*;

const ORIGIN: &str = "https://www.brand.example";
const WINDOW: &str = "https://lpcdn.lpsnmedia.net/le_unified_window/index.html";
const PW: &str = "liveengage consumer pw";

pub fn attributes() -> Value {
    json!([
        {"type": "ctmrinfo", "info": {"cstatus": "active", "ctype": "vip", "customerId": "138766AC", "balance": -400.99,
            "currency": "USD", "socialId": "11256324780", "imei": "3543546543545688", "userName": "user000", "companySize": 500,
            "companyBranch": "East Village", "accountName": "bank corp", "role": "broker",
            "lastPaymentDate": {"day": 15, "month": 10, "year": 2014}, "registrationDate": {"day": 23, "month": 5, "year": 2013},
            "loginStatus": 1}},
        {"type": "personal", "personal": {"firstname": "John", "lastname": "Doe", "age": {"age": 34, "year": 1980, "month": 4, "day": 15},
            "contacts": [{"email": "john@doe.com", "phone": "+1 212-788-8877", "phoneType": "MOBILE", "address": {"country": "US", "region": "NY"}}],
            "gender": "MALE", "company": "Doe Ltd.", "language": "en-US"}}
    ])
}

/// A server configured entirely through the CLI, as a brand admin would, and the
/// connector values LiveEngage would be given.
struct Brand {
    app: TestApp,
    secret: String,
    settings: Value,
    sub: String,
}

fn cli_json(db: &TestDb, args: &[&str], stdin: Option<&str>) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    stdout_json(&db.cli(&full, stdin))
}

async fn brand(b: Backend, extra: &[&str]) -> Brand {
    let db = TestDb::new(b).await;
    let mut args = vec!["client", "create", "--client-id", "liveengage", "--liveengage", "--web-origin", ORIGIN];
    args.extend_from_slice(extra);
    let created = cli_json(&db, &args, None);
    let secret = created["client_secret"].as_str().unwrap().to_string();
    let consumer = cli_json(
        &db,
        &[
            "consumer",
            "create",
            "--username",
            "john",
            "--password-stdin",
            "--email",
            "john@doe.com",
            "--given-name",
            "John",
            "--family-name",
            "Doe",
            "--gender",
            "male",
            "--preferred-username",
            "jd",
            "--phone-number",
            "+1 212 788 8877",
        ],
        Some(&format!("{PW}\n")),
    );
    let attrs = db.dir.join("attrs.json");
    std::fs::write(&attrs, attributes().to_string()).unwrap();
    cli_json(&db, &["consumer", "set-attributes", "john", "--file", attrs.to_str().unwrap()], None);
    // The issuer is fixed before the settings are printed; the test server listens on a port
    // of its own, and `Brand::url` maps issuer URLs onto it.
    let issuer = "http://idp.brand.test".to_string();
    let mut env = db.env();
    env.push(("BRAND_IDP_ISSUER".into(), issuer.clone()));
    let settings =
        stdout_json(&run_cli(&env, &["--json", "liveengage", "settings", "--client-id", "liveengage"], None));
    let app = spawn_on(db, |s| s.issuer = issuer.clone()).await;
    Brand { app, secret, settings, sub: consumer["id"].as_str().unwrap().to_string() }
}

impl Brand {
    fn endpoint(&self, label: &str) -> String {
        self.settings[label].as_str().unwrap_or_else(|| panic!("settings lack {label}: {}", self.settings)).to_string()
    }
    /// A URL on the running server (the test server listens on its own port; the issuer's
    /// path is the same).
    fn url(&self, issuer_url: &str) -> String {
        issuer_url.replacen(self.app.issuer(), &self.app.base, 1)
    }
    /// A browser logged in to brand-idp as john.
    async fn logged_in(&self) -> reqwest::Client {
        let http = browser();
        let res = self.app.login_with(&http, "john", PW, "").await;
        assert_eq!(res.status(), 303);
        http
    }
    /// What the brand page's script does when LiveEngage calls the JS method.
    async fn embedded(&self, http: &reqwest::Client, body: Value, origin: &str) -> reqwest::Response {
        http.post(self.app.url("/liveengage/token")).header("origin", origin).json(&body).send().await.unwrap()
    }
    /// LiveEngage's backend redeeming a code: form body, client_secret_basic.
    async fn redeem(&self, code: &str, redirect_uri: &str, verifier: Option<&str>) -> (u16, Value) {
        let mut form = vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri)];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        let res = browser()
            .post(self.url(&self.endpoint("Token Endpoint")))
            .basic_auth(self.endpoint("Client ID"), Some(&self.secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }
    /// Verifies an id_token the way LiveEngage does with a pasted "JWT Public Key": the
    /// one line is parsed as an X.509 SubjectPublicKeyInfo, the issuer compared exactly.
    fn verify(&self, jwt: &str) -> Value {
        verify_with_spki(
            jwt,
            &self.endpoint("JWT Public Key"),
            &self.endpoint("JWT issuer (iss)"),
            &self.endpoint("Client ID"),
        )
    }
}

pub fn verify_with_spki(jwt: &str, one_line: &str, issuer: &str, aud: &str) -> Value {
    assert!(!one_line.contains('\n') && !one_line.contains("BEGIN"), "one line, no PEM armour");
    let der = base64::engine::general_purpose::STANDARD.decode(one_line).expect("base64");
    let spki = aws_lc_rs::rsa::PublicKey::from_der(&der).expect("an X.509 SubjectPublicKeyInfo");
    let key = DecodingKey::from_rsa_raw_components(
        spki.modulus().big_endian_without_leading_zero(),
        spki.exponent().big_endian_without_leading_zero(),
    );
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[issuer]);
    v.set_audience(&[aud]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &v).expect("id_token verifies with the pasted key");
    assert_eq!(data.header.typ.as_deref(), Some("JWT"));
    assert!(data.header.kid.is_some());
    data.claims
}

pub fn check_liveengage_claims(c: &Value, sub: &str) {
    assert_eq!(c["sub"], sub);
    for (k, v) in [
        ("given_name", "John"),
        ("family_name", "Doe"),
        ("email", "john@doe.com"),
        ("gender", "male"),
        ("preferred_username", "jd"),
        ("phone_number", "+1 212 788 8877"),
        ("acr", "loa1"),
    ] {
        assert_eq!(c[k], v, "{k}");
    }
    assert!(c["iat"].is_i64() && c["exp"].is_i64(), "integer seconds");
    assert_eq!(c["lp_sdes"], attributes(), "lp_sdes is the stored array, field for field");
}

pub fn pkce(len: usize) -> (String, String) {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    let verifier: String = brand_idp::crypto::random_bytes::<512>()[..len]
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect();
    let challenge = brand_idp::crypto::b64url(&brand_idp::crypto::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

both_backends!(
    embedded_implicit_hands_a_verifiable_id_token_with_lp_sdes,
    embedded_code_flow_redeems_as_liveengage_does_with_and_without_pkce,
    embedded_endpoint_needs_a_session_a_registered_origin_and_json,
    external_window_requests_as_liveengage_sends_them,
    encrypted_id_tokens_decrypt_with_the_liveperson_key,
    other_clients_get_nothing_looser,
);

async fn embedded_implicit_hands_a_verifiable_id_token_with_lp_sdes(b: Backend) {
    let brand = brand(b, &["--flow", "implicit"]).await;
    assert_eq!(brand.endpoint("JS Method Name"), "lpGetAuthenticationToken");
    assert_eq!(brand.endpoint("JS Context"), "window");
    assert!(brand.endpoint("Brand page script tag").contains("data-flow=\"implicit\""));
    let http = brand.logged_in().await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let res = brand.embedded(&http, json!({"client_id": "liveengage"}), ORIGIN).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
        assert_eq!(res.headers()["access-control-allow-credentials"], "true");
        let body: Value = res.json().await.unwrap();
        let jwt = body["id_token"].as_str().unwrap().to_string();
        let claims = brand.verify(&jwt);
        check_liveengage_claims(&claims, &brand.sub);
        assert!(claims.get("nonce").is_none());
        seen.push(jwt);
        brand.app.clock.advance(1);
    }
    assert_ne!(seen[0], seen[1], "a fresh token on every call");
    // lpTag.identities: the same iss and sub as the token.
    let res = http
        .get(brand.app.url("/liveengage/identity?client_id=liveengage"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    let id: Value = res.json().await.unwrap();
    assert_eq!(id, json!({"iss": brand.endpoint("JWT issuer (iss)"), "acr": "loa1", "sub": brand.sub}));
    let res = browser()
        .get(brand.app.url("/liveengage/identity?client_id=liveengage"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"sub": null}));
    // A same-origin GET carries no Origin header: a page on brand-idp itself.
    let res = http.get(brand.app.url("/liveengage/identity?client_id=liveengage")).send().await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["sub"], brand.sub.as_str());
    // The script tag's source serves the script, with the issuer filled in.
    let tag = brand.endpoint("Brand page script tag");
    let src = tag.split("src=\"").nth(1).unwrap().split('"').next().unwrap();
    let js = browser().get(brand.url(src)).send().await.unwrap().text().await.unwrap();
    assert!(js.contains(&format!("\"{}\"", brand.app.issuer())) && js.contains("lpTag.identities"));
}

async fn embedded_code_flow_redeems_as_liveengage_does_with_and_without_pkce(b: Backend) {
    let brand = brand(b, &["--flow", "code", "--pkce"]).await;
    assert_eq!(brand.endpoint("Authorisation Code Flow With Proof Key of Code Exchange (PKCE)"), "on");
    let http = brand.logged_in().await;
    // Without PKCE: {ssoKey: code, redirect_uri: https://liveperson.net}.
    let body: Value =
        brand.embedded(&http, json!({"client_id": "liveengage", "flow": "code"}), ORIGIN).await.json().await.unwrap();
    assert_eq!(body["redirect_uri"], "https://liveperson.net");
    let code = body["code"].as_str().unwrap();
    let (status, tokens) = brand.redeem(code, "https://liveperson.net", None).await;
    assert_eq!(status, 200, "{tokens}");
    check_liveengage_claims(&brand.verify(tokens["id_token"].as_str().unwrap()), &brand.sub);
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(
        browser()
            .get(brand.app.url("/userinfo"))
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Single use.
    assert_eq!(brand.redeem(code, "https://liveperson.net", None).await.0, 400);
    // With PKCE, and LiveEngage's long verifiers (beyond RFC 7636's 128 characters).
    for len in [43, 128, 300, 512] {
        let (verifier, challenge) = pkce(len);
        let body: Value = brand
            .embedded(&http, json!({"client_id": "liveengage", "code_challenge": challenge}), ORIGIN)
            .await
            .json()
            .await
            .unwrap();
        let code = body["code"].as_str().unwrap().to_string();
        let (status, _) = brand.redeem(&code, "https://liveperson.net", None).await;
        assert_eq!(status, 400, "a PKCE-bound code needs its verifier");
        let body: Value = brand
            .embedded(&http, json!({"client_id": "liveengage", "code_challenge": challenge}), ORIGIN)
            .await
            .json()
            .await
            .unwrap();
        let (status, tokens) =
            brand.redeem(body["code"].as_str().unwrap(), "https://liveperson.net", Some(&verifier)).await;
        assert_eq!(status, 200, "verifier of {len}: {tokens}");
        check_liveengage_claims(&brand.verify(tokens["id_token"].as_str().unwrap()), &brand.sub);
    }
    // A page-supplied redirect_uri must be registered; the code is bound to it.
    let res = brand
        .embedded(&http, json!({"client_id": "liveengage", "redirect_uri": "https://evil.example/"}), ORIGIN)
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = brand
        .embedded(&http, json!({"client_id": "liveengage", "redirect_uri": WINDOW}), ORIGIN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["redirect_uri"], WINDOW);
    assert_eq!(brand.redeem(body["code"].as_str().unwrap(), WINDOW, None).await.0, 200);
    // Older LiveEngage backends: credentials in a JSON body.
    let body: Value = brand.embedded(&http, json!({"client_id": "liveengage"}), ORIGIN).await.json().await.unwrap();
    let res = browser()
        .post(brand.app.url("/token"))
        .json(
            &json!({"grant_type": "authorization_code", "code": body["code"], "redirect_uri": "https://liveperson.net",
                      "client_id": "liveengage", "client_secret": brand.secret}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn embedded_endpoint_needs_a_session_a_registered_origin_and_json(b: Backend) {
    let brand = brand(b, &[]).await;
    // Nobody logged in: a clear error the script passes to callback("", reason).
    let res = brand.embedded(&browser(), json!({"client_id": "liveengage"}), ORIGIN).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN, "readable by the brand page");
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "login_required");
    let http = brand.logged_in().await;
    // A foreign origin gets nothing, and no CORS grant.
    let res = brand.embedded(&http, json!({"client_id": "liveengage"}), "https://evil.example").await;
    assert_eq!(res.status(), 403);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let res = http
        .get(brand.app.url("/liveengage/identity?client_id=liveengage"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // No Origin at all (not a browser CORS request): refused.
    let res =
        http.post(brand.app.url("/liveengage/token")).json(&json!({"client_id": "liveengage"})).send().await.unwrap();
    assert_eq!(res.status(), 403);
    // A form post (a "simple" cross-site request with no preflight) is refused: CSRF.
    let res = http
        .post(brand.app.url("/liveengage/token"))
        .header("origin", ORIGIN)
        .form(&[("client_id", "liveengage")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // Preflights: granted to the registered origin only.
    let pre = |origin: &'static str| {
        browser()
            .request(reqwest::Method::OPTIONS, brand.app.url("/liveengage/token"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = pre(ORIGIN).await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(ok.headers()["access-control-allow-origin"], ORIGIN);
    assert!(ok.headers()["access-control-allow-headers"].to_str().unwrap().contains("content-type"));
    assert_eq!(pre("https://evil.example").await.unwrap().status(), 403);
    // Not a LiveEngage client, malformed JSON.
    brand.app.add_client("plain", &["https://rp.example/cb"], &["code"], &[], false).await;
    assert_eq!(brand.embedded(&http, json!({"client_id": "plain"}), ORIGIN).await.status(), 400);
    let res = http
        .post(brand.app.url("/liveengage/token"))
        .header("origin", ORIGIN)
        .header("content-type", "application/json")
        .body("{\"client_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

pub fn lp_state(size: usize) -> String {
    // LiveEngage's window puts its whole configuration into state, as URL-encoded JSON.
    let mut cfg = String::from(
        r#"{"lpUnifiedWindowConfig":{"accountId":"12345678","engConf":{"id":"abc","ssoKey":"","window":"x"},"parentWindowOrigin":"https://www.brand.example","pad":""#,
    );
    while cfg.len() < size {
        cfg.push_str("é&=+/?#%\"' ");
    }
    cfg.push_str(r#""}}"#);
    cfg
}

async fn external_window_requests_as_liveengage_sends_them(b: Backend) {
    let brand = brand(b, &[]).await;
    let http = brand.logged_in().await;
    let authorize = brand.url(&brand.endpoint("Authentication Endpoint"));
    let state = lp_state(4096);
    let q = |pairs: &[(&str, &str)]| {
        let mut ser = url::form_urlencoded::Serializer::new(format!("{authorize}?"));
        ser.extend_pairs(pairs);
        ser.finish()
    };
    // RFC connector, implicit: response_type=id_token, no nonce, big state, unknown extras.
    let url = q(&[
        ("response_type", "id_token"),
        ("client_id", "liveengage"),
        ("scope", "openid"),
        ("redirect_uri", WINDOW),
        ("state", &state),
        ("parentWindowOrigin", ORIGIN),
    ]);
    let res = http.get(url).send().await.unwrap();
    let loc = url::Url::parse(&location(&res)).unwrap();
    assert!(loc.as_str().starts_with(WINDOW));
    let f = params_of(loc.fragment());
    assert_eq!(f["state"], state, "state byte for byte");
    let claims = brand.verify(&f["id_token"]);
    check_liveengage_claims(&claims, &brand.sub);
    // RFC connector, code flow with PKCE: the window URL at both endpoints.
    let (verifier, challenge) = pkce(200);
    let url = q(&[
        ("response_type", "code"),
        ("client_id", "liveengage"),
        ("scope", "openid"),
        ("redirect_uri", WINDOW),
        ("state", &state),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);
    let res = http.get(url).send().await.unwrap();
    let loc = url::Url::parse(&location(&res)).unwrap();
    let qp = params_of(loc.query());
    assert_eq!(qp["state"], state);
    let (status, tokens) = brand.redeem(&qp["code"], WINDOW, Some(&verifier)).await;
    assert_eq!(status, 200, "{tokens}");
    brand.verify(tokens["id_token"].as_str().unwrap());
    // Legacy ("openID") connector: response_type=token, a redirect_uri that carries its own
    // query, the JWT appended as `token` without breaking that query.
    let legacy_redirect = format!("{WINDOW}?lpUnifiedWindowConfig=%7B%22a%22%3A1%7D&v=2");
    let url = q(&[
        ("response_type", "token"),
        ("client_id", "liveengage"),
        ("scope", "openid"),
        ("redirect_uri", &legacy_redirect),
    ]);
    let res = http.get(url).send().await.unwrap();
    let loc = location(&res);
    assert!(loc.starts_with(&format!("{WINDOW}?lpUnifiedWindowConfig=%7B%22a%22%3A1%7D&v=2&")), "{loc}");
    let qp: HashMap<String, String> = params_of(url::Url::parse(&loc).unwrap().query());
    assert_eq!(qp["lpUnifiedWindowConfig"], "{\"a\":1}");
    assert_eq!(qp["v"], "2");
    check_liveengage_claims(&brand.verify(&qp["token"]), &brand.sub);
    // Legacy code flow: authorized with the window URL (plus query), redeemed with
    // https://liveperson.net, as legacy backends do.
    let url = q(&[
        ("response_type", "code"),
        ("client_id", "liveengage"),
        ("scope", "openid"),
        ("redirect_uri", &legacy_redirect),
    ]);
    let res = http.get(url).send().await.unwrap();
    let qp = params_of(url::Url::parse(&location(&res)).unwrap().query());
    let (status, _) = brand.redeem(&qp["code"], "https://liveperson.net", None).await;
    assert_eq!(status, 200);
    // A window URL on another host is not a LiveEngage window.
    let url = q(&[
        ("response_type", "token"),
        ("client_id", "liveengage"),
        ("scope", "openid"),
        ("redirect_uri", "https://evil.example/le_unified_window/index.html?x=1"),
    ]);
    let res = http.get(url).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
}

/// LivePerson's side of encryption: a key pair whose public half the brand admin pastes.
struct LivePersonKey {
    private: aws_lc_rs::rsa::PrivateDecryptingKey,
    spki_one_line: String,
}

fn liveperson_key() -> LivePersonKey {
    let private = aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der: aws_lc_rs::encoding::PublicKeyX509Der = private.public_key().as_der().unwrap();
    LivePersonKey { spki_one_line: base64::engine::general_purpose::STANDARD.encode(der.as_ref()), private }
}

/// Decrypts a compact JWE (RSA-OAEP-256 with A128CBC-HS256 or A256GCM) the way LivePerson
/// does; returns the protected header and the plaintext.
fn decrypt(jwe: &str, key: &LivePersonKey) -> (Value, String) {
    use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey, AES_128};
    let parts: Vec<&str> = jwe.split('.').collect();
    assert_eq!(parts.len(), 5, "compact JWE");
    let d = |s: &str| brand_idp::crypto::b64url_decode(s).unwrap();
    let header: Value = serde_json::from_slice(&d(parts[0])).unwrap();
    let oaep = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(key.private.clone()).unwrap();
    let mut out = vec![0u8; oaep.min_output_size()];
    let cek = oaep.decrypt(&aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256, &d(parts[1]), &mut out, None).unwrap().to_vec();
    let (iv, mut ct, tag) = (d(parts[2]), d(parts[3]), d(parts[4]));
    let aad = parts[0].as_bytes();
    let plain = match header["enc"].as_str().unwrap() {
        "A128CBC-HS256" => {
            let (mac_key, enc_key) = cek.split_at(16);
            let mut mac_input = aad.to_vec();
            mac_input.extend_from_slice(&iv);
            mac_input.extend_from_slice(&ct);
            mac_input.extend_from_slice(&((aad.len() as u64) * 8).to_be_bytes());
            let full =
                aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, mac_key), &mac_input);
            assert_eq!(&full.as_ref()[..16], tag.as_slice(), "authentication tag");
            let k = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_128, enc_key).unwrap()).unwrap();
            let iv: [u8; 16] = iv.try_into().unwrap();
            k.decrypt(&mut ct, DecryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from(iv))).unwrap().to_vec()
        }
        "A256GCM" => {
            let k = aws_lc_rs::aead::LessSafeKey::new(
                aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &cek).unwrap(),
            );
            ct.extend_from_slice(&tag);
            let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(&iv).unwrap();
            k.open_in_place(nonce, aws_lc_rs::aead::Aad::from(aad), &mut ct).unwrap().to_vec()
        }
        other => panic!("unexpected enc {other}"),
    };
    (header, String::from_utf8(plain).unwrap())
}

async fn encrypted_id_tokens_decrypt_with_the_liveperson_key(b: Backend) {
    let lp = liveperson_key();
    let brand = brand(b, &["--flow", "implicit"]).await;
    let db = &brand.app.db;
    // Configure encryption for the implicit flow, with LivePerson's kid.
    cli_json(
        db,
        &[
            "liveengage",
            "configure",
            "--client-id",
            "liveengage",
            "--encryption-key",
            &lp.spki_one_line,
            "--encryption-kid",
            "lpsso2026",
        ],
        None,
    );
    let http = brand.logged_in().await;
    let body: Value = brand.embedded(&http, json!({"client_id": "liveengage"}), ORIGIN).await.json().await.unwrap();
    let jwe = body["id_token"].as_str().unwrap();
    let (header, inner) = decrypt(jwe, &lp);
    assert_eq!(header, json!({"alg": "RSA-OAEP-256", "enc": "A128CBC-HS256", "cty": "JWT", "kid": "lpsso2026"}));
    check_liveengage_claims(&brand.verify(&inner), &brand.sub);
    // Code flow stays plain unless asked for.
    let code: Value =
        brand.embedded(&http, json!({"client_id": "liveengage", "flow": "code"}), ORIGIN).await.json().await.unwrap();
    let (_, tokens) = brand.redeem(code["code"].as_str().unwrap(), "https://liveperson.net", None).await;
    assert_eq!(tokens["id_token"].as_str().unwrap().split('.').count(), 3);
    // A256GCM for both flows.
    cli_json(
        db,
        &[
            "liveengage",
            "configure",
            "--client-id",
            "liveengage",
            "--encryption-enc",
            "A256GCM",
            "--encrypt-flow",
            "implicit",
            "--encrypt-flow",
            "code",
        ],
        None,
    );
    let body: Value = brand.embedded(&http, json!({"client_id": "liveengage"}), ORIGIN).await.json().await.unwrap();
    let (header, inner) = decrypt(body["id_token"].as_str().unwrap(), &lp);
    assert_eq!(header["enc"], "A256GCM");
    brand.verify(&inner);
    let code: Value =
        brand.embedded(&http, json!({"client_id": "liveengage", "flow": "code"}), ORIGIN).await.json().await.unwrap();
    let (_, tokens) = brand.redeem(code["code"].as_str().unwrap(), "https://liveperson.net", None).await;
    let (_, inner) = decrypt(tokens["id_token"].as_str().unwrap(), &lp);
    check_liveengage_claims(&brand.verify(&inner), &brand.sub);
    // The external window's implicit response is encrypted too.
    let mut ser = url::form_urlencoded::Serializer::new(brand.app.url("/authorize?"));
    ser.extend_pairs([
        ("response_type", "id_token"),
        ("client_id", "liveengage"),
        ("scope", "openid"),
        ("redirect_uri", WINDOW),
    ]);
    let res = http.get(ser.finish()).send().await.unwrap();
    let f = params_of(url::Url::parse(&location(&res)).unwrap().fragment());
    let (_, inner) = decrypt(&f["id_token"], &lp);
    brand.verify(&inner);
    // A bad key is refused at the admin's door.
    let out = db.cli(
        &["liveengage", "configure", "--client-id", "liveengage", "--encryption-key=-----BEGIN CERTIFICATE-----"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SubjectPublicKeyInfo"));
    // And switched off again.
    cli_json(db, &["liveengage", "configure", "--client-id", "liveengage", "--no-encryption"], None);
    let body: Value = brand.embedded(&http, json!({"client_id": "liveengage"}), ORIGIN).await.json().await.unwrap();
    brand.verify(body["id_token"].as_str().unwrap());
}

async fn other_clients_get_nothing_looser(b: Backend) {
    let brand = brand(b, &[]).await;
    brand.app.add_client("web", &["https://rp.example/cb", WINDOW], &["code", "id_token"], &[], false).await;
    let http = brand.logged_in().await;
    let mut ser = url::form_urlencoded::Serializer::new(brand.app.url("/authorize?"));
    ser.extend_pairs([
        ("response_type", "token"),
        ("client_id", "web"),
        ("scope", "openid"),
        ("redirect_uri", "https://rp.example/cb"),
    ]);
    let res = http.get(ser.finish()).send().await.unwrap();
    assert_eq!(params_of(url::Url::parse(&location(&res)).unwrap().query())["error"], "unsupported_response_type");
    let mut ser = url::form_urlencoded::Serializer::new(brand.app.url("/authorize?"));
    ser.extend_pairs([
        ("response_type", "id_token"),
        ("client_id", "web"),
        ("scope", "openid"),
        ("redirect_uri", "https://rp.example/cb"),
    ]);
    let res = http.get(ser.finish()).send().await.unwrap();
    assert_eq!(
        params_of(url::Url::parse(&location(&res)).unwrap().fragment())["error"],
        "invalid_request",
        "nonce required"
    );
    let mut ser = url::form_urlencoded::Serializer::new(brand.app.url("/authorize?"));
    ser.extend_pairs([
        ("response_type", "code"),
        ("client_id", "web"),
        ("scope", "openid"),
        ("redirect_uri", &format!("{WINDOW}?x=1")),
    ]);
    assert_eq!(
        http.get(ser.finish()).send().await.unwrap().status(),
        400,
        "window-URL variants only for LiveEngage clients"
    );
    // No lp_sdes for other clients.
    let mut ser = url::form_urlencoded::Serializer::new(brand.app.url("/authorize?"));
    ser.extend_pairs([
        ("response_type", "id_token"),
        ("client_id", "web"),
        ("scope", "openid"),
        ("redirect_uri", "https://rp.example/cb"),
        ("nonce", "n"),
    ]);
    let res = http.get(ser.finish()).send().await.unwrap();
    let f = params_of(url::Url::parse(&location(&res)).unwrap().fragment());
    let claims = crate::flows::decode_claims(&f["id_token"]);
    assert!(claims.get("lp_sdes").is_none());
    // LiveEngage's backend authenticates with the secret: no public LiveEngage client.
    let out = brand.app.db.cli(&["client", "create", "--client-id", "le2", "--liveengage", "--public"], None);
    assert_eq!(out.status.code(), Some(1));
    // Attribute validation at the admin's door, and show prints them.
    let bad = brand.app.db.dir.join("bad.json");
    std::fs::write(&bad, r#"[{"type":"ctmrinfo","info":{"storeNumber":"12"}}]"#).unwrap();
    let out = brand.app.db.cli(&["consumer", "set-attributes", "john", "--file", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storeNumber is not supported"));
    let shown = cli_json(&brand.app.db, &["consumer", "show", "john"], None);
    assert_eq!(shown["lp_attributes"], attributes());
}
