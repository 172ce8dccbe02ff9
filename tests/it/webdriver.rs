//! A small W3C WebDriver client for the browser tests: one chromedriver per browser, on a
//! free port of 127.0.0.1, driving headless Chromium with a fresh profile in a temp
//! directory. Everything is torn down when the `Browser` is dropped, also when a test
//! panics half-way: the session is deleted, chromedriver is killed by its PID, and a
//! Chromium left behind is killed by the PID the session reported.
//!
//! Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`);
//! `BRAND_IDP_TEST_CHROMIUM` and `BRAND_IDP_TEST_CHROMEDRIVER` name other binaries. When they
//! are missing the browser tests fail, naming the command that installs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The key under which WebDriver returns element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver key codes, usable in `send_keys` and `keys`.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";
/// How long the `wait_*` helpers wait before failing the test.
pub const WAIT: Duration = Duration::from_secs(15);

const INSTALL: &str = "apt-get update && apt-get install -y chromium chromium-driver";

/// The Chromium flags of every session (the profile directory and window size are added).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
];

fn binary(env: &str, default: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    if !path.is_file() {
        panic!(
            "the browser tests need {what}, which is not at {}. Install it with `{INSTALL}` \
             (or set {env} to its path).",
            path.display()
        );
    }
    path
}

pub fn chromium() -> PathBuf {
    binary("BRAND_IDP_TEST_CHROMIUM", "/usr/bin/chromium", "Chromium")
}

pub fn chromedriver() -> PathBuf {
    binary("BRAND_IDP_TEST_CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")
}

/// An error the remote end reported (W3C WebDriver §6.6).
#[derive(Debug)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message.lines().next().unwrap_or(""))
    }
}

/// A headless Chromium under WebDriver control.
pub struct Browser {
    http: reqwest::Client,
    port: u16,
    session: Option<String>,
    driver: Child,
    browser_pid: Option<u32>,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

impl Browser {
    /// A browser with a 1280x800 window.
    pub async fn start() -> Browser {
        Browser::start_sized(1280, 800).await
    }

    pub async fn start_sized(width: u32, height: u32) -> Browser {
        let (chromium, driver_bin) = (chromium(), chromedriver());
        let dir = std::env::temp_dir().join(format!("brand-idp-browser-{}", crate::support::random_suffix()));
        std::fs::create_dir_all(dir.join("profile")).expect("browser temp dir");
        let http = reqwest::Client::builder().no_proxy().build().expect("http client");
        // The port is free when chosen; another process may take it before chromedriver
        // does, so a driver that does not come up is retried on a new port.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(dir.join("chromedriver.log")).expect("driver log");
            let driver = Command::new(&driver_bin)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("driver log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}. Install it with `{INSTALL}`.", driver_bin.display()));
            let mut b =
                Browser { http: http.clone(), port, session: None, driver, browser_pid: None, dir: dir.clone() };
            match b.wait_for_driver().await {
                Ok(()) => {
                    b.new_session(&chromium, width, height).await;
                    return b;
                }
                Err(e) => last_error = e,
            }
            // Dropping `b` kills that driver; the directory is made again for the next try.
            drop(b);
            std::fs::create_dir_all(dir.join("profile")).expect("browser temp dir");
        }
        panic!("chromedriver did not start: {last_error}");
    }

    async fn wait_for_driver(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = format!("http://127.0.0.1:{}/status", self.port);
        loop {
            if let Ok(Some(status)) = self.driver.try_wait() {
                return Err(format!("chromedriver exited with {status}: {}", self.driver_log()));
            }
            if let Ok(res) = self.http.get(&url).timeout(Duration::from_secs(2)).send().await {
                if let Ok(v) = res.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("chromedriver is not ready after 10 s: {}", self.driver_log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn driver_log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
        log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    async fn new_session(&mut self, chromium: &Path, width: u32, height: u32) {
        let mut args: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", self.dir.join("profile").display()));
        args.push(format!("--window-size={width},{height}"));
        let body = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "unhandledPromptBehavior": "dismiss",
            "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 15_000},
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
        }}});
        let url = format!("http://127.0.0.1:{}/session", self.port);
        let res = self.http.post(&url).json(&body).send().await.expect("new session request");
        let v: Value = res.json().await.expect("new session response");
        let Some(id) = v["value"]["sessionId"].as_str() else {
            panic!("Chromium did not start a session: {}\nchromedriver log:\n{}", v["value"], self.driver_log());
        };
        self.session = Some(id.to_string());
        self.browser_pid = v["value"]["capabilities"]["goog:processID"].as_u64().map(|p| p as u32);
    }

    /// Sends one command of the session; `None` body means GET (or DELETE, by method).
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let session = self.session.as_deref().expect("the session is open");
        let url = format!("http://127.0.0.1:{}/session/{session}{path}", self.port);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| WdError { error: "transport".into(), message: e.to_string() })?;
        let ok = res.status().is_success();
        let v: Value =
            res.json().await.map_err(|e| WdError { error: "malformed response".into(), message: e.to_string() })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if ok {
            Ok(value)
        } else {
            Err(WdError {
                error: value["error"].as_str().unwrap_or("unknown error").to_string(),
                message: value["message"].as_str().unwrap_or("").to_string(),
            })
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Navigates and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    pub async fn url(&self) -> String {
        self.get("/url").await.as_str().unwrap_or_default().to_string()
    }

    pub async fn title(&self) -> String {
        self.get("/title").await.as_str().unwrap_or_default().to_string()
    }

    pub async fn source(&self) -> String {
        self.get("/source").await.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching a CSS selector, if there is one now.
    pub async fn try_find(&self, css: &str) -> Option<Element<'_>> {
        match self
            .command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
            .await
        {
            Ok(v) => Some(Element { b: self, id: element_id(&v) }),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("finding {css}: {e}"),
        }
    }

    /// The first element matching a CSS selector, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                panic!("no element matches {css:?} on {} after {WAIT:?}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let v = self.post("/elements", json!({"using": "css selector", "value": css})).await;
        v.as_array().map(|a| a.iter().map(|e| Element { b: self, id: element_id(e) }).collect()).unwrap_or_default()
    }

    /// The element that has the keyboard focus.
    pub async fn active_element(&self) -> Element<'_> {
        let v = self.get("/element/active").await;
        Element { b: self, id: element_id(&v) }
    }

    /// Runs a script (`return ...` gives the result); `arguments` are the JSON values given.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args})).await
    }

    /// Runs a script that reports its result by calling its last argument.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/async", json!({"script": script, "args": args})).await
    }

    /// Waits until a script returns something other than null, false or "", and returns it.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            // A navigation in progress can fail a script; that is not an answer yet.
            match self
                .command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []})))
                .await
            {
                Ok(Value::Null | Value::Bool(false)) => {}
                Ok(Value::String(s)) if s.is_empty() => {}
                Ok(v) => return v,
                Err(_) => {}
            }
            if Instant::now() > deadline {
                panic!("timed out after {WAIT:?} waiting for {what}; the page is {}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the current URL starts with `prefix`, and returns it.
    pub async fn wait_for_url(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.url().await;
            if url.starts_with(prefix) {
                return url;
            }
            if Instant::now() > deadline {
                let text = self.execute("return document.body ? document.body.innerText : ''", vec![]).await;
                panic!("timed out after {WAIT:?} waiting for a URL starting with {prefix}; the page is {url}, showing:\n{}", text.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types into whatever has the focus, key by key, as a keyboard does (Actions API).
    pub async fn keys(&self, text: &str) {
        let mut actions = Vec::new();
        for c in text.chars() {
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.post("/actions", json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})).await;
        let _ = self.command(reqwest::Method::DELETE, "/actions", None).await;
    }

    pub async fn window_handle(&self) -> String {
        self.get("/window").await.as_str().unwrap_or_default().to_string()
    }

    pub async fn window_handles(&self) -> Vec<String> {
        let v = self.get("/window/handles").await;
        v.as_array().map(|a| a.iter().filter_map(|h| h.as_str().map(str::to_string)).collect()).unwrap_or_default()
    }

    pub async fn switch_to_window(&self, handle: &str) {
        self.post("/window", json!({"handle": handle})).await;
    }

    /// Waits for a window other than `known` to open (a popup), and returns its handle.
    pub async fn wait_for_new_window(&self, known: &[String]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(h) = self.window_handles().await.into_iter().find(|h| !known.contains(h)) {
                return h;
            }
            if Instant::now() > deadline {
                panic!("no new window opened after {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Closes the current window; switch to another one afterwards.
    pub async fn close_window(&self) {
        self.command(reqwest::Method::DELETE, "/window", None).await.unwrap_or_else(|e| panic!("close window: {e}"));
    }

    /// Sizes the window so that the page's viewport is exactly `width` x `height` CSS pixels.
    pub async fn set_viewport(&self, width: i64, height: i64) {
        let (mut w, mut h) = (width, height);
        for _ in 0..4 {
            self.post("/window/rect", json!({"width": w, "height": h})).await;
            let v = self.execute("return [window.innerWidth, window.innerHeight]", vec![]).await;
            let (iw, ih) = (v[0].as_i64().unwrap_or(0), v[1].as_i64().unwrap_or(0));
            if (iw, ih) == (width, height) {
                return;
            }
            w += width - iw;
            h += height - ih;
        }
        let v = self.execute("return [window.innerWidth, window.innerHeight]", vec![]).await;
        panic!("cannot size the viewport to {width}x{height}: it is {v}");
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.get("/screenshot").await;
        base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).expect("base64 PNG")
    }

    /// Saves a PNG of the viewport to `path` (its directory is created) and returns the bytes.
    pub async fn save_screenshot(&self, path: &Path) -> Vec<u8> {
        let png = self.screenshot().await;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, &png).expect("write screenshot");
        png
    }

    /// Ends the session (Chromium quits); the driver goes when the `Browser` is dropped.
    pub async fn quit(mut self) {
        if self.session.is_some() {
            let _ = self.command(reqwest::Method::DELETE, "", None).await;
            self.session = None;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Also on a panic: end the session with a plain blocking request (no runtime is
        // needed), then kill the driver, and Chromium if it is still there.
        if let Some(session) = self.session.take() {
            delete_session_blocking(self.port, &session);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if let Some(pid) = self.browser_pid {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&self.dir.display().to_string()))
                .unwrap_or(false);
            if ours {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn delete_session_blocking(port: u16, session: &str) {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
}

fn element_id(v: &Value) -> String {
    v[ELEMENT].as_str().unwrap_or_else(|| panic!("not an element reference: {v}")).to_string()
}

/// An element of the current page.
pub struct Element<'a> {
    b: &'a Browser,
    pub id: String,
}

impl Element<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    pub async fn click(&self) {
        self.b.post(&self.path("/click"), json!({})).await;
    }

    /// Focuses the element and types `text` into it (key codes such as `TAB` allowed).
    pub async fn send_keys(&self, text: &str) {
        self.b.post(&self.path("/value"), json!({"text": text})).await;
    }

    pub async fn clear(&self) {
        self.b.post(&self.path("/clear"), json!({})).await;
    }

    /// The rendered text, as a user reads it.
    pub async fn text(&self) -> String {
        self.b.get(&self.path("/text")).await.as_str().unwrap_or_default().to_string()
    }

    /// An attribute as written in the HTML, if present.
    pub async fn attribute(&self, name: &str) -> Option<String> {
        self.b.get(&self.path(&format!("/attribute/{name}"))).await.as_str().map(str::to_string)
    }

    /// A DOM property, such as an input's current `value`.
    pub async fn property(&self, name: &str) -> Value {
        self.b.get(&self.path(&format!("/property/{name}"))).await
    }

    pub async fn is_displayed(&self) -> bool {
        self.b.get(&self.path("/displayed")).await.as_bool().unwrap_or(false)
    }

    /// Whether this element has the keyboard focus.
    pub async fn is_focused(&self) -> bool {
        self.b.active_element().await.id == self.id
    }
}
