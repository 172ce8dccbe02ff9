//! brand-idp seen through a real browser: headless Chromium driven over WebDriver
//! (`webdriver.rs`). Each journey asserts what the consumer sees on the page and what the
//! relying party (or LiveEngage) receives. The relying party and the brand's page are small
//! sites served by the test on other ports of 127.0.0.1: other origins than brand-idp, but
//! the same site, as a brand's www and login hosts are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::both_backends;
use crate::liveengage::{attributes, check_liveengage_claims, lp_state, pkce, verify_with_spki};
use crate::support::*;
use crate::webdriver::{Browser, ENTER, TAB};

const PASSWORD: &str = "correct horse battery staple";
const LE_PASSWORD: &str = "liveengage consumer pw";
const FAILED: &str = "The username or password is not right.";

// ---------------------------------------------------------------------------------------
// The sites around brand-idp.

/// A small website of the test's own on a free port of 127.0.0.1.
struct Site {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_site(router: Router) -> Site {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve site");
    });
    Site { base, task }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// What the relying party received at its callback (`/callback`) and after sign-out (`/bye`).
type Received = Arc<Mutex<Vec<(&'static str, HashMap<String, String>)>>>;

/// A relying party: a home page with the sign-in links the test puts on it, and the two
/// pages brand-idp sends the browser back to.
struct Rp {
    site: Site,
    links: Arc<Mutex<Vec<(String, String, String)>>>,
    received: Received,
}

impl Rp {
    async fn start() -> Rp {
        let links: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
        let received: Received = Arc::default();
        let (l, r1, r2) = (links.clone(), received.clone(), received.clone());
        let router = Router::new()
            .route(
                "/",
                get(move || async move {
                    let items: String = l
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(id, label, href)| format!("<li><a id=\"{id}\" href=\"{}\">{label}</a></li>", esc(href)))
                        .collect();
                    Html(format!("<!doctype html><title>Relying party</title><h1>Relying party</h1><ul>{items}</ul>"))
                }),
            )
            .route(
                "/callback",
                get(move |Query(q): Query<HashMap<String, String>>| async move {
                    let what = if q.contains_key("code") { "a code" } else { "an error" };
                    r1.lock().unwrap().push(("callback", q));
                    Html(format!(
                        "<!doctype html><title>Callback</title><h1 id=\"rp-callback\">The RP received {what}</h1>"
                    ))
                }),
            )
            .route(
                "/bye",
                get(move |Query(q): Query<HashMap<String, String>>| async move {
                    r2.lock().unwrap().push(("bye", q));
                    Html("<!doctype html><title>Signed out</title><h1 id=\"rp-bye\">Signed out</h1>")
                }),
            );
        Rp { site: serve_site(router).await, links, received }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.site.base)
    }

    fn link(&self, id: &str, label: &str, href: &str) {
        let mut links = self.links.lock().unwrap();
        links.retain(|(i, _, _)| i != id);
        links.push((id.into(), label.into(), href.into()));
    }

    /// The last thing brand-idp delivered to `page`.
    fn last(&self, page: &str) -> HashMap<String, String> {
        let r = self.received.lock().unwrap();
        r.iter().rev().find(|(p, _)| *p == page).map(|(_, q)| q.clone()).unwrap_or_else(|| panic!("nothing at /{page}"))
    }
}

/// A brand-idp, a relying party registered with it, and a consumer.
struct RpWorld {
    app: TestApp,
    rp: Rp,
    secret: String,
    alice: brand_idp::store::Consumer,
}

async fn rp_world(backend: Backend) -> RpWorld {
    let app = spawn_app(backend).await;
    let rp = Rp::start().await;
    let secret = app
        .add_client("rp", &[&rp.url("/callback")], &["code"], &[&rp.url("/bye")], false)
        .await
        .expect("confidential client");
    let alice = app.add_consumer("alice", PASSWORD, brand_idp::store::Profile::default()).await;
    RpWorld { app, rp, secret, alice }
}

impl RpWorld {
    fn authorize(&self, extra: &[(&str, &str)]) -> String {
        let mut ser = url::form_urlencoded::Serializer::new(self.app.url("/authorize?"));
        ser.extend_pairs([
            ("client_id", "rp"),
            ("redirect_uri", &self.rp.url("/callback")),
            ("response_type", "code"),
            ("scope", "openid"),
        ]);
        ser.extend_pairs(extra.iter().copied());
        ser.finish()
    }

    /// The RP's back end: redeems the code (client_secret_basic) and verifies the id_token
    /// with the key from the JWKS.
    async fn redeem(&self, code: &str) -> Value {
        let res = reqwest::Client::new()
            .post(self.app.url("/token"))
            .basic_auth("rp", Some(&self.secret))
            .form(&[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", &self.rp.url("/callback"))])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "the code redeems");
        let tokens: Value = res.json().await.unwrap();
        verify_with_jwks(self.app.issuer(), tokens["id_token"].as_str().expect("id_token"), "rp").await
    }
}

/// Verifies an id_token as a relying party does: RS256 with the key the issuer's JWKS names.
async fn verify_with_jwks(issuer: &str, jwt: &str, aud: &str) -> Value {
    let jwks: Value = reqwest::get(format!("{issuer}/jwks.json")).await.unwrap().json().await.unwrap();
    let kid = jsonwebtoken::decode_header(jwt).expect("JWT header").kid.expect("kid");
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).expect("kid in the JWKS");
    let key = DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[issuer]);
    v.set_audience(&[aud]);
    jsonwebtoken::decode::<Value>(jwt, &key, &v).expect("the id_token verifies with the JWKS key").claims
}

fn query_of(url: &str) -> HashMap<String, String> {
    params_of(url::Url::parse(url).unwrap().query())
}

fn fragment_of(url: &str) -> HashMap<String, String> {
    params_of(url::Url::parse(url).unwrap().fragment())
}

/// Fills in brand-idp's login page and submits it with the button.
async fn sign_in(b: &Browser, username: &str, password: &str) {
    let user = b.find("#username").await;
    user.clear().await;
    user.send_keys(username).await;
    b.find("#password").await.send_keys(password).await;
    b.find("form[action='/login'] button[type=submit]").await.click().await;
}

/// Waits for brand-idp's login page to show an error, and returns its text.
async fn login_error(b: &Browser) -> String {
    let v = b
        .wait_for(
            "the login page's error message",
            "var e = document.getElementById('login-error'); return e && e.textContent.trim();",
        )
        .await;
    v.as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------
// Journeys with a relying party.

both_backends!(code_flow_from_a_relying_party_page_through_the_login_page);

async fn code_flow_from_a_relying_party_page_through_the_login_page(backend: Backend) {
    let w = rp_world(backend).await;
    w.rp.link("sign-in", "Sign in with brand-idp", &w.authorize(&[("state", "st-1"), ("nonce", "n-1")]));
    let b = Browser::start().await;
    b.goto(&w.rp.url("/")).await;
    b.find("#sign-in").await.click().await;
    b.wait_for_url(&w.app.url("/login?")).await;
    assert_eq!(b.find("h1").await.text().await, "Sign in");
    assert_eq!(b.find(".hint").await.text().await, "to continue to rp app", "the page names the application");
    assert!(b.title().await.starts_with("Sign in"));
    sign_in(&b, "alice", PASSWORD).await;
    let landed = b.wait_for_url(&w.rp.url("/callback?")).await;
    assert_eq!(b.find("#rp-callback").await.text().await, "The RP received a code");
    let q = w.rp.last("callback");
    assert_eq!(query_of(&landed), q, "the RP got what the address bar shows");
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], w.app.issuer());
    let claims = w.redeem(&q["code"]).await;
    assert_eq!(claims["sub"], w.alice.id.as_str());
    assert_eq!(claims["nonce"], "n-1");
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_announced_then_the_right_one_signs_in() {
    let w = rp_world(Backend::Sqlite).await;
    w.rp.link("sign-in", "Sign in", &w.authorize(&[("state", "st-2")]));
    let b = Browser::start().await;
    b.goto(&w.rp.url("/")).await;
    b.find("#sign-in").await.click().await;
    b.wait_for_url(&w.app.url("/login?")).await;
    assert!(!b.find("#login-error").await.is_displayed().await, "no error before the first try");
    sign_in(&b, "alice", "not my password").await;
    assert_eq!(login_error(&b).await, FAILED);
    let alert = b.find("#login-error").await;
    assert!(alert.is_displayed().await, "the error is visible");
    assert_eq!(alert.attribute("role").await.as_deref(), Some("alert"), "announced by screen readers");
    assert_eq!(alert.attribute("aria-live").await.as_deref(), Some("assertive"));
    for field in ["#username", "#password"] {
        let f = b.find(field).await;
        assert_eq!(f.attribute("aria-invalid").await.as_deref(), Some("true"), "{field}");
        assert_eq!(f.attribute("aria-describedby").await.as_deref(), Some("login-error"), "{field}");
    }
    assert_eq!(b.find("#username").await.property("value").await, "alice", "the username is kept");
    assert_eq!(b.find("#password").await.property("value").await, "", "the password is not sent back");
    assert!(w.rp.received.lock().unwrap().is_empty(), "nothing reached the RP yet");
    sign_in(&b, "alice", PASSWORD).await;
    b.wait_for_url(&w.rp.url("/callback?")).await;
    let q = w.rp.last("callback");
    assert_eq!(q["state"], "st-2");
    assert_eq!(w.redeem(&q["code"]).await["sub"], w.alice.id.as_str());
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_none_needs_a_session_and_rp_initiated_logout_ends_it() {
    let w = rp_world(Backend::Sqlite).await;
    w.rp.link("silent", "Silent sign-in", &w.authorize(&[("prompt", "none"), ("state", "silent")]));
    w.rp.link("sign-in", "Sign in", &w.authorize(&[("state", "st-3")]));
    let mut logout = url::form_urlencoded::Serializer::new(w.app.url("/logout?"));
    logout.extend_pairs([("client_id", "rp"), ("post_logout_redirect_uri", &w.rp.url("/bye")), ("state", "bye-3")]);
    w.rp.link("sign-out", "Sign out", &logout.finish());
    let b = Browser::start().await;

    // No session: prompt=none answers at once, at the RP, without showing a page.
    b.goto(&w.rp.url("/")).await;
    b.find("#silent").await.click().await;
    b.wait_for_url(&w.rp.url("/callback?")).await;
    let q = w.rp.last("callback");
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["state"], "silent");
    assert!(!q.contains_key("code"));

    // Signed in, prompt=none gives a code.
    b.goto(&w.rp.url("/")).await;
    b.find("#sign-in").await.click().await;
    b.wait_for_url(&w.app.url("/login?")).await;
    sign_in(&b, "alice", PASSWORD).await;
    b.wait_for_url(&w.rp.url("/callback?")).await;
    w.redeem(&w.rp.last("callback")["code"]).await;
    b.goto(&w.rp.url("/")).await;
    b.find("#silent").await.click().await;
    b.wait_for_url(&w.rp.url("/callback?")).await;
    let q = w.rp.last("callback");
    assert!(q.contains_key("code"), "a session answers prompt=none: {q:?}");
    assert_eq!(w.redeem(&q["code"]).await["sub"], w.alice.id.as_str());

    // RP-initiated logout without an id_token_hint: the consumer confirms.
    b.goto(&w.rp.url("/")).await;
    b.find("#sign-out").await.click().await;
    b.wait_for_url(&w.app.url("/logout?")).await;
    assert_eq!(b.find("h1").await.text().await, "Sign out?");
    assert!(b.find("main").await.text().await.contains("rp app asks to sign you out."));
    b.find("form[action='/logout/confirm'] button").await.click().await;
    let landed = b.wait_for_url(&w.rp.url("/bye")).await;
    assert_eq!(query_of(&landed)["state"], "bye-3");
    assert_eq!(w.rp.last("bye")["state"], "bye-3");

    // The session is gone.
    b.goto(&w.rp.url("/")).await;
    b.find("#silent").await.click().await;
    b.wait_for_url(&w.rp.url("/callback?")).await;
    assert_eq!(w.rp.last("callback")["error"], "login_required");
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_only_sign_in_with_a_wrong_password_first() {
    let w = rp_world(Backend::Sqlite).await;
    let b = Browser::start().await;
    b.goto(&w.authorize(&[("state", "kb")])).await;
    b.wait_for_url(&w.app.url("/login?")).await;
    let user = b.find("#username").await;
    assert!(user.is_focused().await, "focus starts in the username field");
    b.keys("alice").await;
    b.keys(TAB).await;
    assert!(b.find("#password").await.is_focused().await, "Tab moves to the password field");
    b.keys("wrong password").await;
    b.keys(ENTER).await;
    assert_eq!(login_error(&b).await, FAILED);
    let alert = b.find("#login-error").await;
    assert_eq!(alert.attribute("role").await.as_deref(), Some("alert"));
    assert_eq!(alert.attribute("aria-live").await.as_deref(), Some("assertive"));
    let password = b.find("#password").await;
    assert!(password.is_focused().await, "focus returns to the password field, the one to correct");
    assert_eq!(password.attribute("aria-describedby").await.as_deref(), Some("login-error"));
    assert_eq!(b.find("#username").await.property("value").await, "alice");
    b.keys(PASSWORD).await;
    b.keys(ENTER).await;
    b.wait_for_url(&w.rp.url("/callback?")).await;
    let q = w.rp.last("callback");
    assert_eq!(q["state"], "kb");
    assert_eq!(w.redeem(&q["code"]).await["sub"], w.alice.id.as_str());
    b.quit().await;
}

// ---------------------------------------------------------------------------------------
// LiveEngage: the embedded window's JavaScript method on a brand page, and the external
// window.

/// The brand's page: brand-idp's `/liveengage.js` with its data attributes, and a stand-in
/// for LiveEngage's tag that calls the JS method as LiveEngage does and writes what the
/// callback received into the page. `/le_window` stands in for LiveEngage's window.
fn brand_site(idp: String) -> Router {
    const TAG: &str = r#"
(function () {
  function show(id, value) { document.getElementById(id).textContent = JSON.stringify(value); }
  document.getElementById("le-engage").addEventListener("click", function () {
    document.getElementById("le-callback").textContent = "";
    document.getElementById("le-identity").textContent = "";
    var challenge = new URLSearchParams(location.search).get("code_challenge") || undefined;
    window.lpGetAuthenticationToken(function () { show("le-callback", Array.prototype.slice.call(arguments)); }, challenge);
    window.lpTag.identities[0](function (identity) { show("le-identity", identity); });
  });
  document.getElementById("le-open").addEventListener("click", function () {
    window.open(this.getAttribute("data-url"), "lp_window", "width=480,height=720");
  });
})();
"#;
    Router::new()
        .route(
            "/brand",
            get(move |Query(q): Query<HashMap<String, String>>| async move {
                let flow = if q.get("flow").map(String::as_str) == Some("implicit") { "implicit" } else { "code" };
                Html(format!(
                    r#"<!doctype html><html><head><meta charset="utf-8"><title>Brand</title>
<script src="{idp}/liveengage.js" data-client-id="liveengage" data-flow="{flow}" data-method="lpGetAuthenticationToken" data-context="window"></script>
</head><body><h1>The brand's shop</h1>
<button id="le-engage" type="button">Message us</button>
<button id="le-open" type="button" data-url="">Message us in a window</button>
<pre id="le-callback"></pre><pre id="le-identity"></pre>
<script src="/le-tag.js"></script></body></html>"#
                ))
            }),
        )
        .route("/le-tag.js", get(|| async { ([("content-type", "text/javascript")], TAG) }))
        .route("/le_window", get(|| async { Html("<!doctype html><title>LiveEngage</title><h1>LiveEngage window</h1>") }))
}

/// brand-idp with a LiveEngage client registered through the command line, for a brand
/// page on another port of 127.0.0.1, and the consumer john with LiveEngage attributes.
struct LeWorld {
    app: TestApp,
    brand: Site,
    secret: String,
    john: brand_idp::store::Consumer,
}

async fn le_world() -> LeWorld {
    let db = TestDb::new(Backend::Sqlite).await;
    // The brand page must know brand-idp's address before brand-idp starts; bind first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let brand = serve_site(brand_site(idp.clone())).await;
    let window = format!("{}/le_window", brand.base);
    let created = stdout_json(&db.cli(
        &[
            "--json",
            "client",
            "create",
            "--client-id",
            "liveengage",
            "--name",
            "LiveEngage",
            "--liveengage",
            "--web-origin",
            &brand.base,
            "--window-url",
            &window,
        ],
        None,
    ));
    let secret = created["client_secret"].as_str().unwrap().to_string();
    let app = spawn_with_listener(db, listener, |_| {}).await;
    assert_eq!(app.base, idp);
    let john = app
        .add_consumer(
            "john",
            LE_PASSWORD,
            brand_idp::store::Profile {
                email: Some("john@doe.com".into()),
                given_name: Some("John".into()),
                family_name: Some("Doe".into()),
                gender: Some("male".into()),
                preferred_username: Some("jd".into()),
                phone_number: Some("+1 212 788 8877".into()),
                ..Default::default()
            },
        )
        .await;
    let st = &app.app.state;
    let attrs = serde_json::to_value(brand_idp::liveengage::sdes::parse(&attributes()).unwrap()).unwrap();
    st.store.set_consumer_attributes("john", Some(&attrs), st.now()).await.unwrap();
    LeWorld { app, brand, secret, john }
}

impl LeWorld {
    fn brand_url(&self, path: &str) -> String {
        format!("{}{path}", self.brand.base)
    }

    /// The one-line public key a brand admin pastes into LiveEngage.
    async fn one_line_key(&self) -> String {
        let keys = self.app.app.state.store.all_keys().await.unwrap();
        let active = keys.iter().find(|k| k.state == brand_idp::store::KeyState::Active).unwrap();
        brand_idp::keys::spki_base64(active).unwrap()
    }

    async fn verify(&self, jwt: &str) -> Value {
        let claims = verify_with_spki(jwt, &self.one_line_key().await, self.app.issuer(), "liveengage");
        check_liveengage_claims(&claims, &self.john.id);
        claims
    }

    /// LiveEngage's backend: redeems a code with client_secret_basic.
    async fn redeem(&self, code: &str, redirect_uri: &str, verifier: Option<&str>) -> (u16, Value) {
        let mut form = vec![("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri)];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        let res = reqwest::Client::new()
            .post(self.app.url("/token"))
            .basic_auth("liveengage", Some(&self.secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }

    /// Signs john in on brand-idp's own login page (as the brand site's "Log in" does).
    async fn sign_in(&self, b: &Browser) {
        b.goto(&self.app.url("/login")).await;
        sign_in(b, "john", LE_PASSWORD).await;
        b.wait_for_url(&self.app.url("/login/done")).await;
        assert_eq!(b.find("h1").await.text().await, "Signed in");
    }
}

/// Clicks "Message us" and returns what the JS method's callback and lpTag.identities got.
async fn engage(b: &Browser) -> (Value, Value) {
    b.find("#le-engage").await.click().await;
    let callback =
        b.wait_for("the JS method's callback", "return document.getElementById('le-callback').textContent").await;
    let identity =
        b.wait_for("the lpTag.identities callback", "return document.getElementById('le-identity').textContent").await;
    (
        serde_json::from_str(callback.as_str().unwrap()).unwrap(),
        serde_json::from_str(identity.as_str().unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveengage_embedded_implicit_on_a_brand_page_of_another_origin() {
    let w = le_world().await;
    let b = Browser::start().await;
    // Logged out: the callback is called, with the reason, instead of leaving LiveEngage
    // waiting; lpTag.identities reports nobody.
    b.goto(&w.brand_url("/brand?flow=implicit")).await;
    let (callback, identity) = engage(&b).await;
    assert_eq!(callback, json!(["", "login_required"]));
    assert_eq!(identity, Value::Null);
    // Logged in to brand-idp: the page hands over an id_token that verifies with the pasted
    // key and carries the consumer's claims and lp_sdes.
    w.sign_in(&b).await;
    b.goto(&w.brand_url("/brand?flow=implicit")).await;
    let (callback, identity) = engage(&b).await;
    let args = callback.as_array().expect("callback arguments");
    assert_eq!(args.len(), 1, "one argument, the token: {callback}");
    let claims = w.verify(args[0].as_str().expect("a JWT")).await;
    assert_eq!(claims["aud"], "liveengage");
    assert_eq!(identity, json!({"iss": w.app.issuer(), "acr": "loa1", "sub": w.john.id}));
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveengage_embedded_code_flow_with_and_without_pkce() {
    let w = le_world().await;
    let b = Browser::start().await;
    b.goto(&w.brand_url("/brand?flow=code")).await;
    let (callback, identity) = engage(&b).await;
    assert_eq!(callback, json!(["", "login_required"]));
    assert_eq!(identity, Value::Null);
    w.sign_in(&b).await;
    // Without PKCE: {ssoKey, redirect_uri}, redeemed by LiveEngage's backend.
    b.goto(&w.brand_url("/brand?flow=code")).await;
    let (callback, identity) = engage(&b).await;
    let got = &callback[0];
    assert_eq!(got["redirect_uri"], "https://liveperson.net", "{callback}");
    let (status, tokens) = w.redeem(got["ssoKey"].as_str().unwrap(), "https://liveperson.net", None).await;
    assert_eq!(status, 200, "{tokens}");
    w.verify(tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(identity["sub"], w.john.id.as_str());
    // With the code_challenge LiveEngage passes: the code needs the verifier.
    let (verifier, challenge) = pkce(128);
    b.goto(&w.brand_url(&format!("/brand?flow=code&code_challenge={challenge}"))).await;
    let (callback, _) = engage(&b).await;
    let code = callback[0]["ssoKey"].as_str().expect("a code").to_string();
    let (status, _) =
        w.redeem(&code, "https://liveperson.net", Some("a-different-verifier-of-43-characters-xxxxxx")).await;
    assert_eq!(status, 400, "a wrong verifier is refused");
    b.goto(&w.brand_url(&format!("/brand?flow=code&code_challenge={challenge}"))).await;
    let (callback, _) = engage(&b).await;
    let (status, tokens) =
        w.redeem(callback[0]["ssoKey"].as_str().unwrap(), "https://liveperson.net", Some(&verifier)).await;
    assert_eq!(status, 200, "{tokens}");
    w.verify(tokens["id_token"].as_str().unwrap()).await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveengage_external_window_popup_returns_the_large_state_untouched() {
    let w = le_world().await;
    let window = w.brand_url("/le_window");
    let state = lp_state(4096).replace("https://www.brand.example", &w.brand.base);
    assert!(state.len() >= 4096);
    let popup_url = |extra: &[(&str, &str)]| {
        let mut ser = url::form_urlencoded::Serializer::new(w.app.url("/authorize?"));
        ser.extend_pairs([
            ("client_id", "liveengage"),
            ("redirect_uri", window.as_str()),
            ("scope", "openid"),
            ("state", state.as_str()),
            ("parentWindowOrigin", w.brand.base.as_str()),
        ]);
        ser.extend_pairs(extra.iter().copied());
        ser.finish()
    };
    let b = Browser::start().await;
    b.goto(&w.brand_url("/brand")).await;
    let main = b.window_handle().await;
    let open = |url: String| {
        let b = &b;
        let main = main.clone();
        async move {
            b.execute("document.getElementById('le-open').setAttribute('data-url', arguments[0])", vec![json!(url)])
                .await;
            b.find("#le-open").await.click().await;
            let popup = b.wait_for_new_window(&[main]).await;
            b.switch_to_window(&popup).await;
        }
    };

    // Implicit: the popup goes through the login page and ends at the window URL with the
    // id_token and the state in the fragment.
    open(popup_url(&[("response_type", "id_token")])).await;
    b.wait_for_url(&w.app.url("/login?")).await;
    assert_eq!(b.find(".hint").await.text().await, "to continue to LiveEngage");
    sign_in(&b, "john", LE_PASSWORD).await;
    let landed = b.wait_for_url(&format!("{window}#")).await;
    assert_eq!(b.find("h1").await.text().await, "LiveEngage window");
    let f = fragment_of(&landed);
    assert!(f["state"] == state, "the state came back changed:\n{}\ninstead of\n{state}", f["state"]);
    w.verify(&f["id_token"]).await;
    b.close_window().await;
    b.switch_to_window(&main).await;

    // Code flow with PKCE: signed in now, so the popup goes straight back with a code.
    let (verifier, challenge) = pkce(43);
    open(popup_url(&[("response_type", "code"), ("code_challenge", &challenge), ("code_challenge_method", "S256")]))
        .await;
    let landed = b.wait_for_url(&format!("{window}?")).await;
    let q = query_of(&landed);
    assert!(q["state"] == state, "the state came back changed");
    let (status, tokens) = w.redeem(&q["code"], &window, Some(&verifier)).await;
    assert_eq!(status, 200, "{tokens}");
    w.verify(tokens["id_token"].as_str().unwrap()).await;
    b.close_window().await;
    b.switch_to_window(&main).await;
    assert_eq!(b.find("h1").await.text().await, "The brand's shop");
    b.quit().await;
}

// ---------------------------------------------------------------------------------------
// What the pages look like.

/// `target/screenshots`, next to the binaries under test.
pub fn screenshot_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_brand-idp"));
    bin.parent().and_then(Path::parent).expect("target directory").join("screenshots")
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

/// Checks the page fits the viewport and its controls are usable at this size, then saves
/// a screenshot.
async fn shoot(b: &Browser, name: &str, width: i64, height: i64) {
    let fit = b
        .execute(
            "var d = document.documentElement, card = document.querySelector('main.card').getBoundingClientRect();
             var small = Array.from(document.querySelectorAll('input:not([type=hidden]), button'))
               .filter(function (e) { var r = e.getBoundingClientRect(); return r.height < 44 || parseFloat(getComputedStyle(e).fontSize) < 16; })
               .map(function (e) { return (e.id || e.textContent) + ': ' + e.getBoundingClientRect().height + 'px high, text ' + getComputedStyle(e).fontSize; });
             return {scroll: d.scrollWidth, left: card.left, right: card.right, small: small};",
            vec![],
        )
        .await;
    assert!(fit["scroll"].as_i64().unwrap() <= width, "{name}: the page scrolls sideways at {width}px: {fit}");
    assert!(fit["left"].as_f64().unwrap() >= 0.0 && fit["right"].as_f64().unwrap() <= width as f64, "{name}: {fit}");
    assert_eq!(fit["small"], json!([]), "{name}: controls smaller than 44px or text under 16px");
    let png = b.save_screenshot(&screenshot_dir().join(format!("{name}.png"))).await;
    assert_eq!(png_size(&png), (width as u32, height as u32), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_error_pages_fit_phone_and_desktop_screens() {
    let w = rp_world(Backend::Sqlite).await;
    let b = Browser::start().await;
    let untrusted = {
        let mut ser = url::form_urlencoded::Serializer::new(w.app.url("/authorize?"));
        ser.extend_pairs([
            ("client_id", "rp"),
            ("redirect_uri", "https://attacker.example/cb"),
            ("response_type", "code"),
            ("scope", "openid"),
        ]);
        ser.finish()
    };
    for (size, width, height) in [("phone", 390, 844), ("desktop", 1280, 800)] {
        b.set_viewport(width, height).await;
        b.goto(&w.authorize(&[("state", "s")])).await;
        b.wait_for_url(&w.app.url("/login?")).await;
        shoot(&b, &format!("login-{size}"), width, height).await;
        sign_in(&b, "alice", "not my password").await;
        assert_eq!(login_error(&b).await, FAILED);
        shoot(&b, &format!("login-error-{size}"), width, height).await;
        b.goto(&untrusted).await;
        assert_eq!(b.find("h1").await.text().await, "This sign-in request cannot be completed");
        assert!(!b.find("[role=alert]").await.text().await.is_empty(), "the reason is shown");
        shoot(&b, &format!("error-{size}"), width, height).await;
    }
    b.quit().await;
}

// ---------------------------------------------------------------------------------------
// The demo.

/// `brand-idp demo` on free ports with a temporary data directory; killed (by PID) when
/// dropped.
struct DemoProcess {
    child: std::process::Child,
    dir: PathBuf,
    brand: String,
    issuer: String,
    username: String,
    password: String,
    // Kept open: the demo may still be printing when the test has read what it needs.
    _stdout: Option<std::io::BufReader<std::process::ChildStdout>>,
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_demo() -> DemoProcess {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("brand-idp-demo-{}", random_suffix()));
    let mut child = std::process::Command::new(bin())
        .args(["demo", "--port", "0", "--brand-port", "0", "--data-dir"])
        .arg(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run brand-idp demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut demo = DemoProcess {
        child,
        dir,
        brand: String::new(),
        issuer: String::new(),
        username: String::new(),
        password: String::new(),
        _stdout: None,
    };
    // Read the banner on a blocking thread, with a deadline.
    let read = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut banner = HashMap::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some((k, v)) = line.trim().split_once(": ") {
                banner.insert(k.trim().to_string(), v.trim().to_string());
            }
            line.clear();
            if banner.contains_key("Password") {
                break;
            }
        }
        (banner, reader)
    });
    let (banner, reader) = tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the demo prints its addresses within 60 s")
        .unwrap();
    demo._stdout = Some(reader);
    let get = |k: &str| banner.get(k).cloned().unwrap_or_else(|| panic!("the demo did not print {k}: {banner:?}"));
    demo.brand = get("Brand page");
    demo.issuer = get("brand-idp");
    demo.username = get("Username");
    demo.password = get("Password");
    demo
}

/// Waits for the demo page's verdict (its outcome line gets a class when it is final).
async fn demo_outcome(b: &Browser) -> (String, String) {
    let v = b
        .wait_for(
            "the demo page's outcome",
            "var o = document.getElementById('outcome'); return o.className && [o.className, o.textContent];",
        )
        .await;
    (v[0].as_str().unwrap().to_string(), v[1].as_str().unwrap().to_string())
}

async fn demo_text(b: &Browser, id: &str) -> String {
    b.find(&format!("#{id}")).await.text().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_brand_page_logs_in_and_shows_what_liveengage_receives() {
    let demo = start_demo().await;
    assert!(demo.brand.starts_with("http://127.0.0.1:") && demo.issuer.starts_with("http://127.0.0.1:"));
    assert_ne!(demo.brand.trim_end_matches('/'), demo.issuer, "two origins");
    let b = Browser::start().await;
    b.goto(&demo.brand).await;
    let identity = b
        .wait_for(
            "the identity line",
            "var t = document.getElementById('identity').textContent; return t.indexOf('Asking') < 0 && t;",
        )
        .await;
    assert!(identity.as_str().unwrap().starts_with("Not logged in"), "{identity}");
    // Logged out, the method calls back at once with the reason.
    b.find("#implicit").await.click().await;
    let (class, text) = demo_outcome(&b).await;
    assert_eq!(class, "bad");
    assert!(text.contains("login_required"), "{text}");

    // The "Log in" link: brand-idp's login page, then back to the brand page.
    b.find("#login").await.click().await;
    b.wait_for_url(&format!("{}/login?", demo.issuer)).await;
    assert_eq!(b.find(".brand-name").await.text().await, "Demo brand");
    sign_in(&b, &demo.username, &demo.password).await;
    b.wait_for_url(&demo.brand).await;
    let identity = b
        .wait_for(
            "the identity line",
            "var t = document.getElementById('identity').textContent; return t.indexOf('Asking') < 0 && t;",
        )
        .await;
    assert!(identity.as_str().unwrap().starts_with("Logged in to brand-idp"), "{identity}");
    assert_eq!(b.url().await, demo.brand, "the code and state are gone from the address bar");

    // Implicit flow: the token the page hands to LiveEngage, decoded and verified.
    b.find("#implicit").await.click().await;
    let (class, text) = demo_outcome(&b).await;
    assert_eq!(class, "ok", "{text}");
    assert!(text.starts_with("Verified: RS256 signature verified with key"), "{text}");
    let callback: Value = serde_json::from_str(&demo_text(&b, "callback").await).unwrap();
    let shown: Value = serde_json::from_str(&demo_text(&b, "claims").await).unwrap();
    // The test checks the token itself, independently of the demo's verdict.
    let claims = verify_with_jwks(&demo.issuer, callback[0].as_str().unwrap(), "liveengage-demo").await;
    assert_eq!(shown, claims, "the page shows the token's claims");
    assert_eq!(claims["given_name"], "Dana");
    let sdes: Value = serde_json::from_str(&demo_text(&b, "lp-sdes").await).unwrap();
    assert_eq!(sdes[0]["type"], "ctmrinfo");
    assert_eq!(sdes[0]["info"]["customerId"], "DEMO-0001");
    assert_eq!(serde_json::from_str::<Value>(&demo_text(&b, "header").await).unwrap()["alg"], "RS256");
    assert!(identity.as_str().unwrap().contains(claims["sub"].as_str().unwrap()), "lpTag.identities has the same sub");
    b.set_viewport(1280, 1200).await;
    b.save_screenshot(&screenshot_dir().join("demo-desktop.png")).await;

    // Code flow with PKCE: the code, redeemed as LiveEngage's back end does.
    b.find("#code").await.click().await;
    let (class, text) = demo_outcome(&b).await;
    assert_eq!(class, "ok", "{text}");
    assert!(text.contains("with client_secret_basic and the PKCE verifier"), "{text}");
    let callback: Value = serde_json::from_str(&demo_text(&b, "callback").await).unwrap();
    assert_eq!(callback[0]["redirect_uri"], "https://liveperson.net");
    assert!(callback[0]["ssoKey"].is_string());

    // Log out, confirm, and the page is back to nobody.
    b.find("#logout").await.click().await;
    b.wait_for_url(&format!("{}/logout?", demo.issuer)).await;
    b.find("form[action='/logout/confirm'] button").await.click().await;
    b.wait_for_url(&demo.brand).await;
    let identity = b
        .wait_for(
            "the identity line",
            "var t = document.getElementById('identity').textContent; return t.indexOf('Asking') < 0 && t;",
        )
        .await;
    assert!(identity.as_str().unwrap().starts_with("Not logged in"), "{identity}");
    b.quit().await;
}
