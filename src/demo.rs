//! `brand-idp demo`: everything a newcomer needs to see brand-idp work with LiveEngage, in
//! one process. brand-idp runs on the embedded SQLite database in its own data directory
//! (`./data-demo`), with a demo consumer and a demo LiveEngage client; a second port on the
//! same host serves a demo brand page (another origin, the same site, as a brand's www and
//! login hosts are). The brand page includes brand-idp's `/liveengage.js` and plays
//! LiveEngage's part: it calls the JS methods, redeems codes at the token endpoint with the
//! client secret, and verifies the id_tokens with the key published in the JWKS.
//!
//! Nothing here runs, and no demo data is written, unless `brand-idp demo` is run. The
//! configuration file and the `BRAND_IDP_*` variables are not read: the demo never touches
//! a real deployment's database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use askama::Template;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::config::Settings;
use crate::consumers::{self, Password};
use crate::crypto::{b64url_decode, random_token};
use crate::liveengage::{self, sdes};
use crate::oidc::clients::{self as client_rules, Registration};
use crate::store::{Profile, StoreError};
use crate::{App, AppState};

pub const CLIENT_ID: &str = "liveengage-demo";
pub const USERNAME: &str = "demo";

const SCRIPT: &str = include_str!("../static/demo_brand.js");
const STYLE: &str = include_str!("../static/demo_brand.css");

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// brand-idp's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The demo brand page's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8081)]
    brand_port: u16,
    /// Where the demo keeps its database and keys; never the data directory of `serve`.
    #[arg(long, default_value = "./data-demo")]
    data_dir: PathBuf,
}

/// The brand page's server side: what LiveEngage's back end would do.
struct Demo {
    /// brand-idp's router: the demo sends it the HTTP requests LiveEngage sends, in process.
    idp: Router,
    issuer: String,
    brand_home: String,
    client_secret: String,
}

#[derive(Template)]
#[template(path = "demo_brand.html")]
struct BrandPage {
    issuer: String,
    script_src: String,
    client_id: &'static str,
    username: &'static str,
    login_url: String,
    logout_url: String,
}

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    let idp_listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{} (choose another with --port)", a.port))?;
    let brand_listener = tokio::net::TcpListener::bind(("127.0.0.1", a.brand_port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{} (choose another with --brand-port)", a.brand_port))?;
    let idp_addr = idp_listener.local_addr()?;
    let brand_home = format!("http://127.0.0.1:{}/", brand_listener.local_addr()?.port());

    let mut settings = Settings::default();
    settings.data_dir = a.data_dir.clone();
    settings.listen = idp_addr;
    // 127.0.0.1 for both, not localhost: the brand page and brand-idp must be the same site
    // for the session cookie (SameSite=Lax) to go with the script's requests.
    settings.issuer = format!("http://127.0.0.1:{}", idp_addr.port());
    settings.brand_name = "Demo brand".into();
    crate::telemetry::init(settings.log_format, "warn");

    let app = App::build(settings).await?;
    let password = ensure_consumer(&app.state).await?;
    let client_secret = ensure_client(&app.state, &brand_home).await?;
    let issuer = app.state.settings.issuer.clone();
    let demo = Arc::new(Demo {
        idp: app.router.clone(),
        issuer: issuer.clone(),
        brand_home: brand_home.clone(),
        client_secret,
    });

    println!("brand-idp demo is running. Press Ctrl-C to stop it.");
    println!();
    println!("  Brand page: {brand_home}");
    println!("  brand-idp:  {issuer}");
    println!("  Username:   {USERNAME}");
    println!("  Password:   {password}");
    println!();
    println!("Open the brand page in a browser, log in with the username and password above, then let the");
    println!("page play LiveEngage. The demo keeps its data in {}.", a.data_dir.display());

    let brand_router = Router::new()
        .route("/", get(brand_page))
        .route("/demo_brand.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/demo_brand.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route("/inspect", post(inspect))
        .route("/redeem", post(redeem))
        .with_state(demo);
    let idp = axum::serve(idp_listener, app.router.clone().into_make_service_with_connect_info::<SocketAddr>());
    let brand = axum::serve(brand_listener, brand_router);
    tokio::select! {
        r = async { idp.await } => r.context("brand-idp stopped")?,
        r = async { brand.await } => r.context("the brand page stopped")?,
        _ = crate::stop_signal() => {}
    }
    app.state.store.close().await;
    Ok(())
}

/// The demo consumer, with a new random password on every start (printed once).
async fn ensure_consumer(st: &AppState) -> anyhow::Result<String> {
    let password = random_token::<12>();
    let now = st.now();
    match st.store.consumer_by_username(USERNAME).await {
        Ok(_) => {
            let hash = st.hasher.hash(&Password::new(password.clone())).await.map_err(|e| anyhow!("{e}"))?;
            st.store.set_consumer_password(USERNAME, &hash, now).await.map_err(store_error)?;
        }
        Err(StoreError::NotFound) => {
            let profile = Profile {
                name: Some("Dana Demo".into()),
                given_name: Some("Dana".into()),
                family_name: Some("Demo".into()),
                preferred_username: Some("dana".into()),
                email: Some("dana.demo@example.com".into()),
                email_verified: Some(true),
                phone_number: Some("+1 555 0100".into()),
                gender: Some("female".into()),
                ..Profile::default()
            };
            consumers::create(&st.store, &st.hasher, USERNAME, Some(&Password::new(password.clone())), profile, now)
                .await
                .map_err(|e| anyhow!("cannot create the demo consumer: {e}"))?;
        }
        Err(e) => return Err(store_error(e)),
    }
    let attributes = json!([
        {"type": "ctmrinfo", "info": {"cstatus": "active", "ctype": "gold", "customerId": "DEMO-0001",
            "balance": 120.5, "currency": "USD", "userName": "dana", "loginStatus": 1,
            "registrationDate": {"day": 1, "month": 3, "year": 2020}}},
        {"type": "personal", "personal": {"firstname": "Dana", "lastname": "Demo",
            "contacts": [{"email": "dana.demo@example.com", "phone": "+1 555 0100", "phoneType": "MOBILE"}],
            "gender": "FEMALE", "language": "en-US"}}
    ]);
    let parsed = serde_json::to_value(sdes::parse(&attributes).map_err(|e| anyhow!("{e}"))?)?;
    st.store.set_consumer_attributes(USERNAME, Some(&parsed), now).await.map_err(store_error)?;
    Ok(password)
}

/// The demo LiveEngage client for the brand page's origin, with a new secret on every start
/// (the brand page's server side keeps it, as LiveEngage keeps the secret pasted into it).
async fn ensure_client(st: &AppState, brand_home: &str) -> anyhow::Result<String> {
    let profile = liveengage::Profile {
        web_origins: vec![liveengage::parse_origin(brand_home).map_err(|e| anyhow!("{e}"))?],
        ..liveengage::Profile::default()
    };
    let secret = client_rules::generate_secret();
    let (mut new, _) = client_rules::register(Registration {
        client_id: CLIENT_ID.into(),
        secret: Some(secret.clone()),
        public: false,
        name: Some("the demo brand page".into()),
        redirect_uris: vec![liveengage::LIVEPERSON_REDIRECT.into(), brand_home.into()],
        post_logout_redirect_uris: vec![brand_home.into()],
        response_types: vec!["code".into()],
        auth_method: None,
    })
    .map_err(|e| anyhow!("{e}"))?;
    new.secret_hash = Some(st.secrets.hash_client_secret(&secret));
    profile.apply(&mut new.options, &mut new.redirect_uris, &mut new.response_types);
    let now = st.now();
    match st.store.client(CLIENT_ID).await {
        // From an earlier run, perhaps on other ports: registered afresh.
        Ok(mut c) => {
            c.redirect_uris = new.redirect_uris;
            c.post_logout_redirect_uris = new.post_logout_redirect_uris;
            c.response_types = new.response_types;
            c.options = new.options;
            st.store.update_client(&c, now).await.map_err(store_error)?;
            st.store
                .set_client_secret_hash(CLIENT_ID, new.secret_hash.as_deref().expect("set above"), now)
                .await
                .map_err(store_error)?;
        }
        Err(StoreError::NotFound) => {
            st.store.create_client(&new, now).await.map_err(store_error)?;
        }
        Err(e) => return Err(store_error(e)),
    }
    Ok(secret)
}

fn store_error(e: StoreError) -> anyhow::Error {
    anyhow!("database operation failed: {}", crate::describe_store_error(&e))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn brand_page(State(d): State<Arc<Demo>>) -> Response {
    let mut login = url::Url::parse(&format!("{}/authorize", d.issuer)).expect("issuer URL");
    login
        .query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", &d.brand_home)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid")
        .append_pair("state", &random_token::<12>());
    let mut logout = url::Url::parse(&format!("{}/logout", d.issuer)).expect("issuer URL");
    logout.query_pairs_mut().append_pair("client_id", CLIENT_ID).append_pair("post_logout_redirect_uri", &d.brand_home);
    let page = BrandPage {
        issuer: d.issuer.clone(),
        script_src: format!("{}/liveengage.js", d.issuer),
        client_id: CLIENT_ID,
        username: USERNAME,
        login_url: login.to_string(),
        logout_url: logout.to_string(),
    };
    // The brand's own policy: its scripts, and brand-idp's script and endpoints.
    let csp = format!(
        "default-src 'none'; script-src 'self' {0}; connect-src 'self' {0}; style-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        d.issuer
    );
    crate::http::pages::html_with_csp(StatusCode::OK, &page, &csp)
}

impl Demo {
    /// Sends brand-idp a request and returns the status and the JSON body.
    async fn call(&self, req: Request<Body>) -> (StatusCode, Value) {
        let res = match self.idp.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Decodes an id_token and verifies it as LiveEngage does: RS256 with the key named by
    /// `kid` in brand-idp's JWKS, the issuer, the audience and the expiry.
    async fn inspect(&self, token: &str) -> Value {
        let parts: Vec<&str> = token.split('.').collect();
        let decode = |s: &str| b64url_decode(s).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let (Some(header), Some(claims)) =
            (parts.first().and_then(|h| decode(h)), parts.get(1).and_then(|p| decode(p)))
        else {
            return json!({"verified": false, "error": "this is not a JWT"});
        };
        let mut out = json!({"header": header, "claims": claims, "verified": false});
        let (jwks_status, jwks) = self.call(get_request("/jwks.json")).await;
        let fail = |mut out: Value, why: String| {
            out["error"] = json!(why);
            out
        };
        if parts.len() != 3 || header["alg"] != "RS256" {
            return fail(out, "not an RS256 JWS".into());
        }
        let kid = header["kid"].as_str().unwrap_or_default();
        let key = jwks["keys"].as_array().and_then(|keys| keys.iter().find(|k| k["kid"] == kid));
        let Some(key) = key else {
            return fail(out, format!("no key {kid:?} in the JWKS ({jwks_status})"));
        };
        let (Some(n), Some(e), Some(sig)) = (
            key["n"].as_str().and_then(b64url_decode),
            key["e"].as_str().and_then(b64url_decode),
            b64url_decode(parts[2]),
        ) else {
            return fail(out, "malformed key or signature".into());
        };
        let signed = &token[..parts[0].len() + 1 + parts[1].len()];
        let public = aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e };
        if public.verify(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &sig).is_err() {
            return fail(out, "the signature does not verify".into());
        }
        if claims["iss"] != self.issuer.as_str() {
            return fail(out, format!("iss is {}, not {}", claims["iss"], self.issuer));
        }
        let aud_ok = match &claims["aud"] {
            Value::String(a) => a == CLIENT_ID,
            Value::Array(a) => a.iter().any(|x| x == CLIENT_ID),
            _ => false,
        };
        if !aud_ok {
            return fail(out, format!("aud is {}, not {CLIENT_ID}", claims["aud"]));
        }
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let exp = claims["exp"].as_i64().unwrap_or(0);
        if exp <= now {
            return fail(out, "the token has expired".into());
        }
        out["verified"] = json!(true);
        out["checks"] = json!([
            format!("RS256 signature verified with key {kid} from {}/jwks.json", self.issuer),
            format!("iss is {}", self.issuer),
            format!("aud is {CLIENT_ID}"),
            format!("expires in {} s", exp - now),
        ]);
        out
    }
}

fn get_request(path: &str) -> Request<Body> {
    Request::builder().method(Method::GET).uri(path).body(Body::empty()).expect("request")
}

#[derive(Deserialize)]
struct InspectBody {
    token: String,
}

async fn inspect(State(d): State<Arc<Demo>>, Json(b): Json<InspectBody>) -> Json<Value> {
    Json(d.inspect(&b.token).await)
}

#[derive(Deserialize)]
struct RedeemBody {
    code: String,
    redirect_uri: String,
    code_verifier: Option<String>,
}

/// What LiveEngage's back end does with a code: POST it to the token endpoint with the
/// client id and secret (client_secret_basic), then verify the id_token.
async fn redeem(State(d): State<Arc<Demo>>, Json(b): Json<RedeemBody>) -> Json<Value> {
    let form = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", &b.code)
            .append_pair("redirect_uri", &b.redirect_uri);
        if let Some(v) = b.code_verifier.as_deref().filter(|v| !v.is_empty()) {
            form.append_pair("code_verifier", v);
        }
        form.finish()
    };
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(CLIENT_ID), enc(&d.client_secret)));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/token")
        .header(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"))
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .body(Body::from(form))
        .expect("request");
    let (status, tokens) = d.call(req).await;
    let Some(id_token) = tokens["id_token"].as_str().filter(|_| status == StatusCode::OK) else {
        return Json(json!({"verified": false, "error": format!("the token endpoint answered {status}: {tokens}")}));
    };
    let mut out = d.inspect(id_token).await;
    let pkce = if b.code_verifier.is_some() { " and the PKCE verifier" } else { "" };
    if let Some(checks) = out["checks"].as_array_mut() {
        checks.insert(0, json!(format!("code redeemed at {}/token with client_secret_basic{pkce}", d.issuer)));
    }
    out["token_response"] = json!({
        "token_type": tokens["token_type"],
        "expires_in": tokens["expires_in"],
        "access_token": "(opaque; usable at /userinfo)",
    });
    Json(out)
}
