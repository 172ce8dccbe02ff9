//! OpenID Connect flows, each test named after the conformance-suite module (oidcc-*) or
//! the spec section it reproduces. Relying-party side: the `openidconnect` crate where a
//! library would be used, raw HTTP for the requests a library refuses to send.

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreProviderMetadata, CoreUserInfoClaims};
use openidconnect::{
    AccessToken, AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use serde_json::Value;

use brand_idp::store::Profile;

use crate::both_backends;
use crate::support::*;

const CB: &str = "https://rp.example/cb";
const PASSWORD: &str = "correct horse battery staple";

fn alice() -> Profile {
    Profile {
        email: Some("alice@example.com".into()),
        email_verified: Some(true),
        given_name: Some("Alice".into()),
        family_name: Some("Liddell".into()),
        preferred_username: Some("ali".into()),
        phone_number: Some("+1 555 0100".into()),
        gender: Some("female".into()),
        address: Some(serde_json::json!({"country": "US"})),
        ..Profile::default()
    }
}

/// A standard setup: client "rp" allowed every response type, consumer "alice".
async fn setup(b: Backend) -> (TestApp, String, brand_idp::store::Consumer) {
    let app = spawn_app(b).await;
    let secret = app
        .add_client(
            "rp",
            &[CB, "https://rp.example/cb?tenant=1"],
            &["code", "id_token", "id_token token"],
            &["https://rp.example/bye"],
            false,
        )
        .await
        .unwrap();
    let c = app.add_consumer("alice", PASSWORD, alice()).await;
    (app, secret, c)
}

fn authorize_url(app: &TestApp, extra: &[(&str, &str)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(app.url("/authorize?"));
    for (k, v) in extra {
        ser.append_pair(k, v);
    }
    ser.finish()
}

fn code_request<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("client_id", "rp"), ("redirect_uri", CB), ("response_type", "code"), ("scope", "openid")];
    for (k, val) in extra {
        v.retain(|(kk, _)| kk != k);
        v.push((k, val));
    }
    v
}

async fn rp_client(app: &TestApp) -> (CoreProviderMetadata, String) {
    let meta = CoreProviderMetadata::discover_async(IssuerUrl::new(app.issuer().to_string()).unwrap(), &rp_http)
        .await
        .expect("discovery");
    (meta, app.issuer().to_string())
}

both_backends!(
    oidcc_server_code_flow_verified_by_the_openidconnect_crate,
    oidcc_implicit_flows_verified_by_the_openidconnect_crate,
    oidcc_codereuse_fails_and_revokes_the_grants_tokens,
    oidcc_ensure_registered_redirect_uri_shows_an_error_page,
    oidcc_prompt_none_not_logged_in_returns_login_required,
    oidcc_prompt_login_and_max_age_force_reauthentication,
    oidcc_id_token_hint_with_prompt_none,
    state_is_returned_byte_for_byte_up_to_8kib,
    authorization_errors_redirect_with_rfc6749_codes,
    response_modes_form_post_and_post_requests,
    token_endpoint_rfc6749_errors_and_client_authentication,
    pkce_rfc7636_public_and_confidential_clients,
    userinfo_rfc6750_token_placement_and_errors,
    login_page_same_answer_for_unknown_user_and_wrong_password,
    logout_rp_initiated_ends_the_session_everywhere,
);

async fn oidcc_server_code_flow_verified_by_the_openidconnect_crate(b: Backend) {
    let (app, secret, alice) = setup(b).await;
    let (meta, _) = rp_client(&app).await;
    let client =
        CoreClient::from_provider_metadata(meta, ClientId::new("rp".into()), Some(ClientSecret::new(secret.clone())))
            .set_redirect_uri(RedirectUrl::new(CB.into()).unwrap());
    for use_pkce in [true, false] {
        let http = browser();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()));
        if use_pkce {
            req = req.set_pkce_challenge(challenge);
        }
        let (url, csrf, nonce) = req.url();
        let landed = app.authorize_as(&http, url.as_str(), "alice", PASSWORD).await;
        assert!(landed.as_str().starts_with(CB), "{landed}");
        let q = params_of(landed.query());
        assert_eq!(q["state"], *csrf.secret());
        assert_eq!(q["iss"], app.issuer(), "RFC 9207 iss");
        let mut exchange = client.exchange_code(AuthorizationCode::new(q["code"].clone())).unwrap();
        if use_pkce {
            exchange = exchange.set_pkce_verifier(verifier);
        }
        let tokens = exchange.request_async(&rp_http).await.expect("token exchange");
        let id_token = tokens.id_token().expect("id_token");
        let claims = id_token.claims(&client.id_token_verifier(), &nonce).expect("id_token verifies");
        assert_eq!(claims.subject().as_str(), alice.id);
        assert_eq!(claims.issuer().as_str(), app.issuer());
        assert_eq!(claims.email().map(|e| e.as_str()), Some("alice@example.com"));
        assert_eq!(claims.given_name().and_then(|n| n.get(None)).map(|n| n.as_str()), Some("Alice"));
        assert!(claims.auth_time().is_some());
        let at_hash = claims.access_token_hash().expect("at_hash");
        let expected = AccessTokenHash::from_token(
            tokens.access_token(),
            id_token.signing_alg().unwrap(),
            id_token.signing_key(&client.id_token_verifier()).unwrap(),
        )
        .unwrap();
        assert_eq!(at_hash, &expected);
        assert_eq!(tokens.token_type().as_ref(), "bearer");
        let info: CoreUserInfoClaims = client
            .user_info(tokens.access_token().clone(), None)
            .unwrap()
            .request_async(&rp_http)
            .await
            .expect("userinfo");
        assert_eq!(info.subject().as_str(), alice.id);
        assert_eq!(info.email().map(|e| e.as_str()), Some("alice@example.com"));
        assert_eq!(info.family_name().and_then(|n| n.get(None)).map(|n| n.as_str()), Some("Liddell"));
        assert!(info.phone_number().is_none(), "phone scope was not requested");
    }
}

async fn oidcc_implicit_flows_verified_by_the_openidconnect_crate(b: Backend) {
    let (app, secret, alice) = setup(b).await;
    let (meta, _) = rp_client(&app).await;
    let client = CoreClient::from_provider_metadata(meta, ClientId::new("rp".into()), Some(ClientSecret::new(secret)))
        .set_redirect_uri(RedirectUrl::new(CB.into()).unwrap());
    for with_token in [false, true] {
        let http = browser();
        let (url, csrf, nonce) = client
            .authorize_url(CoreAuthenticationFlow::Implicit(with_token), CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("phone".into()))
            .url();
        let landed = app.authorize_as(&http, url.as_str(), "alice", PASSWORD).await;
        assert!(landed.query().is_none(), "implicit responses use the fragment: {landed}");
        let f = params_of(landed.fragment());
        assert_eq!(f["state"], *csrf.secret());
        let id_token: CoreIdToken = f["id_token"].parse().unwrap();
        let claims = id_token.claims(&client.id_token_verifier(), &nonce).expect("id_token verifies");
        assert_eq!(claims.subject().as_str(), alice.id);
        assert_eq!(claims.nonce().map(|n| n.secret().as_str()), Some(nonce.secret().as_str()));
        assert_eq!(claims.phone_number().map(|p| p.as_str()), Some("+1 555 0100"), "scope claims go into the id_token");
        if with_token {
            let at = AccessToken::new(f["access_token"].clone());
            assert_eq!(f["token_type"], "Bearer");
            assert_eq!(f["expires_in"], "3600");
            let expected = AccessTokenHash::from_token(
                &at,
                id_token.signing_alg().unwrap(),
                id_token.signing_key(&client.id_token_verifier()).unwrap(),
            )
            .unwrap();
            assert_eq!(claims.access_token_hash(), Some(&expected), "at_hash is required alongside an access token");
            let info: CoreUserInfoClaims =
                client.user_info(at, None).unwrap().request_async(&rp_http).await.expect("userinfo");
            assert_eq!(info.subject().as_str(), alice.id);
        } else {
            assert!(claims.access_token_hash().is_none());
            assert!(!f.contains_key("access_token"));
        }
    }
}

/// Exchanges a code with client_secret_basic; returns status and JSON body.
async fn exchange(
    app: &TestApp,
    secret: &str,
    code: &str,
    redirect_uri: &str,
    extra: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut form = vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri)];
    form.extend_from_slice(extra);
    let res = browser().post(app.url("/token")).basic_auth("rp", Some(secret)).form(&form).send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.json().await.unwrap_or(Value::Null), headers)
}

async fn get_code(app: &TestApp, http: &reqwest::Client, extra: &[(&str, &str)]) -> String {
    let landed = app.authorize_as(http, &authorize_url(app, &code_request(extra)), "alice", PASSWORD).await;
    params_of(landed.query()).get("code").cloned().unwrap_or_else(|| panic!("no code in {landed}"))
}

async fn userinfo_status(app: &TestApp, token: &str) -> u16 {
    browser().get(app.url("/userinfo")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

async fn oidcc_codereuse_fails_and_revokes_the_grants_tokens(b: Backend) {
    let (app, secret, _) = setup(b).await;
    let http = browser();
    let code = get_code(&app, &http, &[]).await;
    let (status, body, headers) = exchange(&app, &secret, &code, CB, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    let at = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(userinfo_status(&app, &at).await, 200);
    let (status, body, _) = exchange(&app, &secret, &code, CB, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(userinfo_status(&app, &at).await, 401, "replay revokes the tokens issued from the code");
    // oidcc-codereuse-30seconds: the same after half a minute.
    let code = get_code(&app, &http, &[]).await;
    let (_, body, _) = exchange(&app, &secret, &code, CB, &[]).await;
    let at = body["access_token"].as_str().unwrap().to_string();
    app.clock.advance(30);
    let (status, _, _) = exchange(&app, &secret, &code, CB, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(userinfo_status(&app, &at).await, 401);
}

async fn oidcc_ensure_registered_redirect_uri_shows_an_error_page(b: Backend) {
    let (app, _, _) = setup(b).await;
    let http = browser();
    for (query, expect) in [
        (code_request(&[("redirect_uri", "https://evil.example/cb")]), "not registered"),
        (code_request(&[("redirect_uri", "https://rp.example/cb?tenant=2")]), "not registered"),
        (code_request(&[("redirect_uri", "https://rp.example/cb/")]), "not registered"),
        (code_request(&[("client_id", "nobody")]), "not registered"),
        (code_request(&[]).into_iter().filter(|(k, _)| *k != "redirect_uri").collect(), "redirect_uri is missing"),
        (code_request(&[]).into_iter().filter(|(k, _)| *k != "client_id").collect(), "client_id is missing"),
    ] {
        let res = http.get(authorize_url(&app, &query)).send().await.unwrap();
        assert_eq!(res.status(), 400);
        assert!(res.headers().get("location").is_none(), "must never redirect");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let body = res.text().await.unwrap();
        assert!(body.contains(expect), "{expect}: {body}");
    }
    // oidcc-redirect-uri-query-OK: a registered URI with a query works and keeps its query.
    let landed = app
        .authorize_as(
            &http,
            &authorize_url(&app, &code_request(&[("redirect_uri", "https://rp.example/cb?tenant=1")])),
            "alice",
            PASSWORD,
        )
        .await;
    let q = params_of(landed.query());
    assert_eq!(q["tenant"], "1");
    assert!(q.contains_key("code"));
}

async fn oidcc_prompt_none_not_logged_in_returns_login_required(b: Backend) {
    let (app, _, _) = setup(b).await;
    let res =
        browser().get(authorize_url(&app, &code_request(&[("prompt", "none"), ("state", "s1")]))).send().await.unwrap();
    let loc = url::Url::parse(&location(&res)).unwrap();
    assert!(loc.as_str().starts_with(CB));
    let q = params_of(loc.query());
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["state"], "s1");
    // Implicit: on the fragment.
    let res = browser()
        .get(authorize_url(
            &app,
            &code_request(&[("prompt", "none"), ("response_type", "id_token"), ("nonce", "n"), ("state", "s2")]),
        ))
        .send()
        .await
        .unwrap();
    let loc = url::Url::parse(&location(&res)).unwrap();
    let f = params_of(loc.fragment());
    assert_eq!(f["error"], "login_required");
    assert_eq!(f["state"], "s2");
}

async fn id_token_of(app: &TestApp, secret: &str, code: &str) -> Value {
    let (status, body, _) = exchange(app, secret, code, CB, &[]).await;
    assert_eq!(status, 200, "{body}");
    let jwt = body["id_token"].as_str().unwrap();
    decode_claims(jwt)
}

pub fn decode_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&brand_idp::crypto::b64url_decode(payload).unwrap()).unwrap()
}

async fn oidcc_prompt_login_and_max_age_force_reauthentication(b: Backend) {
    let (app, secret, _) = setup(b).await;
    let http = browser();
    let code = get_code(&app, &http, &[]).await;
    let first = id_token_of(&app, &secret, &code).await;
    // oidcc-prompt-none-logged-in: a session answers without the login page.
    let res = http.get(authorize_url(&app, &code_request(&[("prompt", "none")]))).send().await.unwrap();
    assert!(location(&res).starts_with(CB));
    // oidcc-max-age-10000: a young session is good enough.
    let res = http.get(authorize_url(&app, &code_request(&[("max_age", "10000")]))).send().await.unwrap();
    assert!(location(&res).starts_with(CB));
    // oidcc-max-age-1: an older session must log in again, and auth_time moves on.
    app.clock.advance(2);
    let res = http.get(authorize_url(&app, &code_request(&[("max_age", "1")]))).send().await.unwrap();
    assert!(location(&res).starts_with("/login?"), "max_age=1 after 2 s must re-authenticate");
    let code = get_code(&app, &http, &[("max_age", "1")]).await;
    let second = id_token_of(&app, &secret, &code).await;
    assert!(second["auth_time"].as_i64().unwrap() > first["auth_time"].as_i64().unwrap());
    // oidcc-prompt-login: always the login page, even with a fresh session.
    let res = http.get(authorize_url(&app, &code_request(&[("prompt", "login")]))).send().await.unwrap();
    assert!(location(&res).starts_with("/login?"));
    app.clock.advance(5);
    let code = get_code(&app, &http, &[("prompt", "login")]).await;
    let third = id_token_of(&app, &secret, &code).await;
    assert!(third["auth_time"].as_i64().unwrap() > second["auth_time"].as_i64().unwrap());
    // prompt=select_account also lets the consumer choose again.
    let res = http.get(authorize_url(&app, &code_request(&[("prompt", "select_account")]))).send().await.unwrap();
    assert!(location(&res).starts_with("/login?"));
    // max_age with prompt=none on an old session: login_required.
    app.clock.advance(10);
    let res =
        http.get(authorize_url(&app, &code_request(&[("max_age", "1"), ("prompt", "none")]))).send().await.unwrap();
    assert_eq!(params_of(url::Url::parse(&location(&res)).unwrap().query())["error"], "login_required");
}

async fn oidcc_id_token_hint_with_prompt_none(b: Backend) {
    let (app, secret, _) = setup(b).await;
    app.add_consumer("bob", PASSWORD, Profile::default()).await;
    let alice_http = browser();
    let code = get_code(&app, &alice_http, &[]).await;
    let (_, body, _) = exchange(&app, &secret, &code, CB, &[]).await;
    let alice_token = body["id_token"].as_str().unwrap().to_string();
    // Same subject: proceeds.
    let res = alice_http
        .get(authorize_url(&app, &code_request(&[("prompt", "none"), ("id_token_hint", &alice_token)])))
        .send()
        .await
        .unwrap();
    assert!(params_of(url::Url::parse(&location(&res)).unwrap().query()).contains_key("code"));
    // Bob's session with Alice's hint: login_required.
    let bob_http = browser();
    let landed = app.authorize_as(&bob_http, &authorize_url(&app, &code_request(&[])), "bob", PASSWORD).await;
    assert!(params_of(landed.query()).contains_key("code"));
    let res = bob_http
        .get(authorize_url(&app, &code_request(&[("prompt", "none"), ("id_token_hint", &alice_token)])))
        .send()
        .await
        .unwrap();
    assert_eq!(params_of(url::Url::parse(&location(&res)).unwrap().query())["error"], "login_required");
    // A forged hint is refused.
    let forged = format!("{}x", alice_token);
    let res = alice_http.get(authorize_url(&app, &code_request(&[("id_token_hint", &forged)]))).send().await.unwrap();
    assert_eq!(params_of(url::Url::parse(&location(&res)).unwrap().query())["error"], "invalid_request");
}

async fn state_is_returned_byte_for_byte_up_to_8kib(b: Backend) {
    let (app, _, _) = setup(b).await;
    let http = browser();
    // A LiveEngage-like JSON state with every awkward character, 8 KiB and more.
    let mut state = String::from(
        r##"{"ssoKey":"k","redirect":"https://x.example/?a=1&b=2#frag","text":"é ü 日本 + % & = ; / ? #","n":["#;]"##,
    );
    while state.len() < 8 * 1024 + 100 {
        state.push_str("0123456789abcdef\"'<>&%+ ");
    }
    state.push_str(r#""]}"#);
    let landed =
        app.authorize_as(&http, &authorize_url(&app, &code_request(&[("state", &state)])), "alice", PASSWORD).await;
    assert_eq!(params_of(landed.query())["state"], state);
    let landed = app
        .authorize_as(
            &http,
            &authorize_url(&app, &code_request(&[("state", &state), ("response_type", "id_token"), ("nonce", "n")])),
            "alice",
            PASSWORD,
        )
        .await;
    assert_eq!(params_of(landed.fragment())["state"], state);
    // Errors carry it too.
    let res =
        http.get(authorize_url(&app, &code_request(&[("state", &state), ("scope", "email")]))).send().await.unwrap();
    let q = params_of(url::Url::parse(&location(&res)).unwrap().query());
    assert_eq!(q["error"], "invalid_scope");
    assert_eq!(q["state"], state);
}

async fn error_of(
    app: &TestApp,
    http: &reqwest::Client,
    q: &[(&str, &str)],
) -> (String, std::collections::HashMap<String, String>) {
    let res = http.get(authorize_url(app, q)).send().await.unwrap();
    let loc = url::Url::parse(&location(&res)).unwrap();
    let params = if loc.fragment().is_some() { params_of(loc.fragment()) } else { params_of(loc.query()) };
    (params.get("error").cloned().unwrap_or_default(), params)
}

async fn authorization_errors_redirect_with_rfc6749_codes(b: Backend) {
    let (app, _, _) = setup(b).await;
    app.add_client("codeonly", &[CB], &["code"], &[], false).await;
    let http = browser();
    let no_rt: Vec<(&str, &str)> =
        code_request(&[("state", "st")]).into_iter().filter(|(k, _)| *k != "response_type").collect();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (no_rt, "invalid_request"), // oidcc-response-type-missing
        (code_request(&[("response_type", "token")]), "unsupported_response_type"),
        (code_request(&[("response_type", "code id_token")]), "unsupported_response_type"),
        (
            code_request(&[("client_id", "codeonly"), ("response_type", "id_token"), ("nonce", "n")]),
            "unauthorized_client",
        ),
        (code_request(&[("scope", "profile email")]), "invalid_scope"),
        (code_request(&[("response_type", "id_token")]), "invalid_request"), // implicit needs a nonce
        (code_request(&[("request", "eyJhbGciOiJub25lIn0.e30.")]), "request_not_supported"),
        (code_request(&[("request_uri", "https://rp.example/req")]), "request_uri_not_supported"),
        (
            code_request(&[
                ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
                ("code_challenge_method", "plain"),
            ]),
            "invalid_request",
        ),
        (code_request(&[("prompt", "none login")]), "invalid_request"),
        (code_request(&[("max_age", "soon")]), "invalid_request"),
        (code_request(&[("response_mode", "jwt")]), "invalid_request"),
        (code_request(&[("claims", "{not json")]), "invalid_request"),
    ];
    for (q, expected) in cases {
        let mut q = q;
        q.push(("state", "st"));
        let (err, params) = error_of(&app, &http, &q).await;
        assert_eq!(err, expected, "{q:?}");
        assert_eq!(params["state"], "st");
        assert!(params.contains_key("error_description"));
        assert_eq!(params["iss"], app.issuer());
    }
    // A repeated parameter (RFC 6749 §3.1).
    let url = format!("{}&scope=openid", authorize_url(&app, &code_request(&[])));
    let res = http.get(url).send().await.unwrap();
    assert_eq!(params_of(url::Url::parse(&location(&res)).unwrap().query())["error"], "invalid_request");
    // Parameters the server does not use are accepted: display, ui_locales, claims_locales,
    // acr_values, unknown extensions (oidcc-display-*, oidcc-ui-locales, oidcc-claims-locales,
    // oidcc-ensure-request-with-acr-values-succeeds, oidcc-ensure-other-scope-order-succeeds).
    let landed = app
        .authorize_as(
            &http,
            &authorize_url(
                &app,
                &code_request(&[
                    ("scope", "email openid"),
                    ("display", "popup"),
                    ("ui_locales", "fr-CA fr en"),
                    ("claims_locales", "de"),
                    ("acr_values", "loa1 urn:mace:incommon:iap:silver"),
                    ("parentWindowOrigin", "https://brand.example"),
                ]),
            ),
            "alice",
            PASSWORD,
        )
        .await;
    assert!(params_of(landed.query()).contains_key("code"));
}

async fn response_modes_form_post_and_post_requests(b: Backend) {
    let (app, secret, _) = setup(b).await;
    let http = browser();
    get_code(&app, &http, &[]).await; // log in
    let res = http
        .get(authorize_url(&app, &code_request(&[("response_mode", "form_post"), ("state", "a\"b<c>")])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("form-action https://rp.example"), "{csp}");
    assert!(!csp.contains("unsafe-inline"));
    let html = res.text().await.unwrap();
    assert!(html.contains("action=\"https://rp.example/cb\""), "{html}");
    assert!(html.contains("a&#34;b&#60;c&#62;") || html.contains("a&quot;b&lt;c&gt;"), "state is escaped: {html}");
    let code = hidden_value(&html, "code").expect("code field");
    let (status, _, _) = exchange(&app, &secret, &code, CB, &[]).await;
    assert_eq!(status, 200);
    // oidcc-ensure-post-request-succeeds: the same request as a POST form.
    let form = code_request(&[("state", "p")]);
    // A cross-site form post arrives without the SameSite=Lax cookie: it continues as a GET.
    let res = browser().post(app.url("/authorize")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        location(&res),
        format!("/authorize?{}", url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish())
    );
    let res = http.post(app.url("/authorize")).form(&form).send().await.unwrap();
    let q = params_of(url::Url::parse(&location(&res)).unwrap().query());
    assert_eq!(q["state"], "p");
    assert!(q.contains_key("code"));
    // login_hint pre-fills the username on the login page.
    let fresh = browser();
    let res = fresh.get(authorize_url(&app, &code_request(&[("login_hint", "alice")]))).send().await.unwrap();
    let (_, _, page) = app.login_page(&fresh, &location(&res)).await;
    assert!(page.contains("value=\"alice\""), "{page}");
}

async fn token_endpoint_rfc6749_errors_and_client_authentication(b: Backend) {
    let (app, secret, _) = setup(b).await;
    app.add_client("other", &[CB], &["code"], &[], false).await;
    let http = browser();
    let post = |form: Vec<(&'static str, String)>, auth: Option<(&'static str, String)>| {
        let mut r = browser().post(app.url("/token")).form(&form);
        if let Some((id, s)) = auth {
            r = r.basic_auth(id, Some(s));
        }
        r.send()
    };
    // Bad credentials: 401 invalid_client with WWW-Authenticate.
    let code = get_code(&app, &http, &[]).await;
    let base = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", CB.to_string()),
        ]
    };
    for auth in [Some(("rp", "wrong".to_string())), Some(("nobody", secret.clone())), None] {
        let res = post(base(&code), auth).await.unwrap();
        assert_eq!(res.status(), 401);
        assert!(res.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"], "invalid_client");
    }
    // Header and body credentials that disagree are refused; agreeing ones are accepted.
    let mut f = base(&code);
    f.push(("client_secret", "not-the-secret".into()));
    assert_eq!(post(f, Some(("rp", secret.clone()))).await.unwrap().status(), 401);
    // The registered method is enforced: rp is client_secret_basic.
    let mut f = base(&code);
    f.push(("client_id", "rp".into()));
    f.push(("client_secret", secret.clone()));
    let res = post(f, None).await.unwrap();
    assert_eq!(res.status(), 401);
    // oidcc-server-client-secret-post: a client registered for client_secret_post.
    let post_secret = app.add_client("rp-post", &[CB], &["code"], &[], false).await.unwrap();
    let mut c = app.app.state.store.client("rp-post").await.unwrap();
    c.auth_method = brand_idp::store::AuthMethod::ClientSecretPost;
    app.app.state.store.update_client(&c, 0).await.unwrap();
    let landed = app
        .authorize_as(&http, &authorize_url(&app, &code_request(&[("client_id", "rp-post")])), "alice", PASSWORD)
        .await;
    let post_code = params_of(landed.query())["code"].clone();
    let res = post(base(&post_code), Some(("rp-post", post_secret.clone()))).await.unwrap();
    assert_eq!(res.status(), 401, "Basic refused for a client_secret_post client");
    let landed = app
        .authorize_as(&http, &authorize_url(&app, &code_request(&[("client_id", "rp-post")])), "alice", PASSWORD)
        .await;
    let post_code = params_of(landed.query())["code"].clone();
    let mut f = base(&post_code);
    f.push(("client_id", "rp-post".into()));
    f.push(("client_secret", post_secret));
    let res = post(f, None).await.unwrap();
    assert_eq!(res.status(), 200);
    // Errors in the grant.
    let code = get_code(&app, &http, &[]).await;
    let cases: Vec<(Vec<(&'static str, String)>, &str)> = vec![
        (vec![("code", code.clone()), ("redirect_uri", CB.into())], "invalid_request"),
        (vec![("grant_type", "password".into()), ("username", "alice".into())], "unsupported_grant_type"),
        (vec![("grant_type", "authorization_code".into()), ("redirect_uri", CB.into())], "invalid_request"),
        (
            vec![("grant_type", "authorization_code".into()), ("code", "nope".into()), ("redirect_uri", CB.into())],
            "invalid_grant",
        ),
    ];
    for (form, expected) in cases {
        let res = post(form.clone(), Some(("rp", secret.clone()))).await.unwrap();
        assert_eq!(res.status(), 400, "{form:?}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"], expected, "{form:?}");
    }
    // A redirect_uri other than the authorization request's.
    let (status, v, _) = exchange(&app, &secret, &code, "https://rp.example/cb?tenant=1", &[]).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));
    // A code issued to another client.
    let code = get_code(&app, &http, &[]).await;
    let other_secret = {
        let out = app.app.state.store.client("other").await.unwrap();
        assert!(out.secret_hash.is_some());
        // Rotate to a known secret through the same path the CLI uses.
        let s = brand_idp::oidc::clients::generate_secret();
        app.app
            .state
            .store
            .set_client_secret_hash("other", &app.app.state.secrets.hash_client_secret(&s), 0)
            .await
            .unwrap();
        s
    };
    let res = post(base(&code), Some(("other", other_secret))).await.unwrap();
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "invalid_grant");
    // An expired code (60 s lifetime).
    let code = get_code(&app, &http, &[]).await;
    app.clock.advance(61);
    let (status, v, _) = exchange(&app, &secret, &code, CB, &[]).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));
    // Wrong content type, malformed JSON, and a JSON body that works.
    let res = browser()
        .post(app.url("/token"))
        .basic_auth("rp", Some(&secret))
        .body("grant_type=authorization_code")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = browser()
        .post(app.url("/token"))
        .basic_auth("rp", Some(&secret))
        .header("content-type", "application/json")
        .body("{\"grant_type\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_request");
    let code = get_code(&app, &http, &[]).await;
    let res = browser()
        .post(app.url("/token"))
        .basic_auth("rp", Some(&secret))
        .json(&serde_json::json!({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

fn pkce_pair() -> (String, String) {
    let verifier = brand_idp::crypto::random_token::<32>();
    let challenge = brand_idp::crypto::b64url(&brand_idp::crypto::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

async fn pkce_rfc7636_public_and_confidential_clients(b: Backend) {
    let (app, secret, _) = setup(b).await;
    app.add_client("mobile", &["com.brand.app:/cb"], &["code"], &[], true).await;
    let http = browser();
    get_code(&app, &http, &[]).await; // log in
    let public_req = |extra: &[(&'static str, String)]| {
        let mut q: Vec<(String, String)> = vec![
            ("client_id".into(), "mobile".into()),
            ("redirect_uri".into(), "com.brand.app:/cb".into()),
            ("response_type".into(), "code".into()),
            ("scope".into(), "openid".into()),
        ];
        q.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut ser = url::form_urlencoded::Serializer::new(app.url("/authorize?"));
        ser.extend_pairs(q);
        ser.finish()
    };
    // A public client without PKCE is refused at the authorization endpoint.
    let res = http.get(public_req(&[])).send().await.unwrap();
    let loc = location(&res);
    assert!(loc.starts_with("com.brand.app:/cb?"), "{loc}");
    assert_eq!(params_of(url::Url::parse(&loc).unwrap().query())["error"], "invalid_request");
    // With PKCE: client authentication `none`.
    let (verifier, challenge) = pkce_pair();
    let res = http
        .get(public_req(&[("code_challenge", challenge.clone()), ("code_challenge_method", "S256".into())]))
        .send()
        .await
        .unwrap();
    let code = params_of(url::Url::parse(&location(&res)).unwrap().query())["code"].clone();
    let token = |form: Vec<(&'static str, String)>| browser().post(app.url("/token")).form(&form).send();
    let form = |code: &str, v: Option<&str>| {
        let mut f = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", "com.brand.app:/cb".to_string()),
            ("client_id", "mobile".to_string()),
        ];
        if let Some(v) = v {
            f.push(("code_verifier", v.to_string()));
        }
        f
    };
    let wrong = token(form(&code, Some(&pkce_pair().0))).await.unwrap();
    assert_eq!(wrong.status(), 400);
    assert_eq!(wrong.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // The code was consumed by the failed attempt; a new one with the right verifier works.
    let res = http
        .get(public_req(&[("code_challenge", challenge.clone()), ("code_challenge_method", "S256".into())]))
        .send()
        .await
        .unwrap();
    let code = params_of(url::Url::parse(&location(&res)).unwrap().query())["code"].clone();
    let missing = token(form(&code, None)).await.unwrap();
    assert_eq!(missing.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let res = http
        .get(public_req(&[("code_challenge", challenge), ("code_challenge_method", "S256".into())]))
        .send()
        .await
        .unwrap();
    let code = params_of(url::Url::parse(&location(&res)).unwrap().query())["code"].clone();
    let ok = token(form(&code, Some(&verifier))).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.json::<Value>().await.unwrap()["id_token"].is_string());
    // Confidential client: a verifier for a code issued without a challenge is a downgrade.
    let code = get_code(&app, &http, &[]).await;
    let (status, v, _) = exchange(&app, &secret, &code, CB, &[("code_verifier", &verifier)]).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));
}

async fn userinfo_rfc6750_token_placement_and_errors(b: Backend) {
    let (app, secret, alice) = setup(b).await;
    let http = browser();
    // Only the openid scope, but the claims parameter asks for email at userinfo.
    let claims = r#"{"userinfo":{"email":{"essential":true}},"id_token":{"given_name":null}}"#;
    let code = get_code(&app, &http, &[("claims", claims)]).await;
    let (_, body, _) = exchange(&app, &secret, &code, CB, &[]).await;
    let idt = decode_claims(body["id_token"].as_str().unwrap());
    assert_eq!(idt["given_name"], "Alice", "oidcc-claims-essential: id_token claims from the claims parameter");
    assert!(idt.get("email").is_none());
    let at = body["access_token"].as_str().unwrap().to_string();
    let c = browser();
    // oidcc-userinfo-get, -post-header, -post-body.
    for res in [
        c.get(app.url("/userinfo")).bearer_auth(&at).send().await.unwrap(),
        c.post(app.url("/userinfo")).bearer_auth(&at).send().await.unwrap(),
        c.post(app.url("/userinfo")).form(&[("access_token", &at)]).send().await.unwrap(),
    ] {
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["sub"], alice.id.as_str());
        assert_eq!(v["email"], "alice@example.com");
        assert!(v.get("given_name").is_none(), "profile scope not granted");
    }
    // Missing token: 401, a challenge without an error code (RFC 6750 §3.1).
    let res = c.get(app.url("/userinfo")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"brand-idp\"");
    // Unknown, expired, revoked: invalid_token.
    let res = c.get(app.url("/userinfo")).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));
    // The token names its grant (`<grant key>.<secret>`); only the token the grant recorded is
    // accepted under that key: not another grant's secret, not a changed secret, not a bare key.
    let code = get_code(&app, &http, &[]).await;
    let (_, other, _) = exchange(&app, &secret, &code, CB, &[]).await;
    let other = other["access_token"].as_str().unwrap().to_string();
    let (key, own_secret) = at.split_once('.').expect("an access token names its grant");
    let (other_key, other_secret) = other.split_once('.').unwrap();
    assert_eq!((key.len(), own_secret.len()), (43, 43));
    assert_ne!(key, other_key);
    let mut flipped = own_secret.to_string().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    for forged in [
        format!("{key}.{other_secret}"),
        format!("{other_key}.{own_secret}"),
        format!("{key}.{}", String::from_utf8(flipped).unwrap()),
        key.to_string(),
        format!("{key}."),
        format!(".{own_secret}"),
        format!("migrated:{key}"),
    ] {
        assert_eq!(userinfo_status(&app, &forged).await, 401, "{forged}");
    }
    assert_eq!(userinfo_status(&app, &other).await, 200);
    // Both header and body: invalid_request.
    let res = c.post(app.url("/userinfo")).bearer_auth(&at).form(&[("access_token", &at)]).send().await.unwrap();
    assert_eq!(res.status(), 400);
    // Expiry.
    app.clock.advance(3599);
    assert_eq!(userinfo_status(&app, &at).await, 200);
    app.clock.advance(2);
    assert_eq!(userinfo_status(&app, &at).await, 401, "expired after the access-token lifetime");
    // Disabling a consumer revokes their tokens for good, and ends their sessions.
    let code = get_code(&app, &http, &[]).await;
    let (_, body, _) = exchange(&app, &secret, &code, CB, &[]).await;
    let at = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(userinfo_status(&app, &at).await, 200);
    app.app.state.store.set_consumer_disabled("alice", true, app.app.state.now()).await.unwrap();
    assert_eq!(userinfo_status(&app, &at).await, 401);
    let res = http.get(authorize_url(&app, &code_request(&[("prompt", "none")]))).send().await.unwrap();
    assert_eq!(params_of(url::Url::parse(&location(&res)).unwrap().query())["error"], "login_required");
    app.app.state.store.set_consumer_disabled("alice", false, app.app.state.now()).await.unwrap();
    assert_eq!(userinfo_status(&app, &at).await, 401, "re-enabling does not revive revoked tokens");
}

async fn login_page_same_answer_for_unknown_user_and_wrong_password(b: Backend) {
    let (app, _, _) = setup(b).await;
    let disabled = app.add_consumer("dave", PASSWORD, Profile::default()).await;
    app.app.state.store.set_consumer_disabled(&disabled.username, true, 0).await.unwrap();
    let return_to = format!(
        "/authorize?{}",
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(code_request(&[])).finish()
    );
    let mut answers = Vec::new();
    for (user, pw) in [("alice", "wrong password"), ("nobody", "wrong password"), ("dave", PASSWORD)] {
        let http = browser();
        let res = app.login_with(&http, user, pw, &return_to).await;
        let status = res.status();
        let body = res.text().await.unwrap();
        let msg = body.split("role=\"alert\"").nth(1).and_then(|s| s.split('<').next()).unwrap_or("").to_string();
        answers.push((status, msg));
    }
    assert_eq!(answers[0].0, 401);
    assert!(answers[0].1.contains("username or password"), "{answers:?}");
    assert!(answers.iter().all(|a| a == &answers[0]), "same status and message: {answers:?}");
    // No CSRF token: refused.
    let res = browser()
        .post(app.url("/login"))
        .form(&[("username", "alice"), ("password", PASSWORD), ("return_to", &return_to)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // Success cycles the session id and sets a safe cookie; the store keeps only its hash.
    let http = browser();
    let res = http.get(app.url("/login")).send().await.unwrap();
    let headers = res.headers().clone();
    assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let res = app.login_with(&http, "alice", PASSWORD, &return_to).await;
    assert_eq!(res.status(), 303);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("bidp_session="))
        .expect("session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "http issuer: no Secure flag");
    let sid = cookie.split(';').next().unwrap().trim_start_matches("bidp_session=").to_string();
    let store = &app.app.state.store;
    assert_eq!(store.count_rows("sessions").await.unwrap(), 1);
    assert!(store.load_session(&sid, 0).await.unwrap().is_none(), "the raw id is not a key");
    assert!(store.load_session(&brand_idp::crypto::token_hash(&sid), 0).await.unwrap().is_some());
    // Logging in again (prompt=login) gives a new id.
    let res = app.login_with(&http, "alice", PASSWORD, &return_to).await;
    let again = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("bidp_session="))
        .unwrap();
    assert_ne!(again.split(';').next().unwrap(), cookie.split(';').next().unwrap(), "no session fixation");
    assert_eq!(store.count_rows("sessions").await.unwrap(), 1, "the old session is gone");
    // A return address off this server is ignored (no open redirect).
    let res = app.login_with(&browser(), "alice", PASSWORD, "https://evil.example/").await;
    assert_eq!(location(&res), "/login/done");
}

async fn logout_rp_initiated_ends_the_session_everywhere(b: Backend) {
    let (app, secret, _) = setup(b).await;
    let http = browser();
    let code = get_code(&app, &http, &[]).await;
    let (_, body, _) = exchange(&app, &secret, &code, CB, &[]).await;
    let id_token = body["id_token"].as_str().unwrap().to_string();
    assert_eq!(app.app.state.store.count_rows("sessions").await.unwrap(), 1);
    // An unregistered post-logout URI: error page, no redirect, still logged in.
    let res = http
        .get(
            app.url(&format!(
                "/logout?id_token_hint={id_token}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F"
            )),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
    // A cross-site POST (no cookie) continues as a GET, which carries the cookie.
    let res = browser().post(app.url("/logout")).form(&[("state", "s"), ("client_id", "rp")]).send().await.unwrap();
    assert_eq!(location(&res), "/logout?state=s&client_id=rp");
    // Without a hint: a confirmation page (a third party cannot log people out).
    let res = http.get(app.url("/logout")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("/logout/confirm"));
    assert_eq!(app.app.state.store.count_rows("sessions").await.unwrap(), 1);
    // With the hint: logged out at once, back to the registered URI with state.
    let res = http
        .get(app.url(&format!(
            "/logout?id_token_hint={id_token}&post_logout_redirect_uri=https%3A%2F%2Frp.example%2Fbye&state=xyz"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "https://rp.example/bye?state=xyz");
    assert_eq!(app.app.state.store.count_rows("sessions").await.unwrap(), 0, "session deleted from the store");
    let res = http.get(authorize_url(&app, &code_request(&[("prompt", "none")]))).send().await.unwrap();
    assert_eq!(params_of(url::Url::parse(&location(&res)).unwrap().query())["error"], "login_required");
    // The confirmation form works and needs its CSRF token.
    let code = get_code(&app, &http, &[]).await;
    let _ = code;
    let res = http.get(app.url("/logout")).send().await.unwrap();
    let page = res.text().await.unwrap();
    let csrf = hidden_value(&page, "csrf").unwrap();
    let res = http.post(app.url("/logout/confirm")).form(&[("csrf", "forged")]).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let res = http.post(app.url("/logout/confirm")).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("signed out"));
    assert_eq!(app.app.state.store.count_rows("sessions").await.unwrap(), 0);
}
