//! Prometheus metrics, kept in process (each instance exposes its own) and rendered in the
//! text exposition format at `/metrics`. Label values come from fixed sets (route
//! templates, methods, status codes, outcomes): nothing a client sends becomes a label.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Outcomes of a login attempt.
#[derive(Debug, Clone, Copy)]
pub enum Login {
    Success,
    Failure,
    Throttled,
}

/// Outcomes of a code redemption at the token endpoint.
#[derive(Debug, Clone, Copy)]
pub enum Redemption {
    Ok,
    Replayed,
    Invalid,
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    durations: Mutex<BTreeMap<&'static str, Histogram>>,
    hash_duration: Mutex<Histogram>,
    logins: [AtomicU64; 3],
    redemptions: [AtomicU64; 3],
    codes_issued: AtomicU64,
    access_tokens_issued: AtomicU64,
    id_tokens_issued: AtomicU64,
}

/// The route templates requests are counted under; anything else is "other".
const ROUTES: &[&str] = &[
    "/.well-known/openid-configuration",
    "/jwks.json",
    "/authorize",
    "/token",
    "/userinfo",
    "/login",
    "/login/done",
    "/logout",
    "/logout/confirm",
    "/liveengage.js",
    "/liveengage/token",
    "/liveengage/identity",
    "/static/{file}",
    "/healthz",
    "/readyz",
    "/metrics",
];

pub fn route_label(matched: Option<&str>) -> &'static str {
    matched.and_then(|m| ROUTES.iter().find(|r| **r == m).copied()).unwrap_or("other")
}

pub fn method_label(m: &axum::http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "OPTIONS" => "OPTIONS",
        "HEAD" => "HEAD",
        _ => "other",
    }
}

impl Metrics {
    pub fn request(&self, route: &'static str, method: &'static str, status: u16, took: Duration) {
        *self.requests.lock().expect("metrics lock").entry((route, method, status)).or_default() += 1;
        self.durations.lock().expect("metrics lock").entry(route).or_default().observe(took.as_secs_f64());
    }

    pub fn login(&self, outcome: Login) {
        self.logins[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn redemption(&self, outcome: Redemption) {
        self.redemptions[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn password_hash(&self, took: Duration) {
        self.hash_duration.lock().expect("metrics lock").observe(took.as_secs_f64());
    }

    pub fn code_issued(&self) {
        self.codes_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn access_token_issued(&self) {
        self.access_tokens_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn id_token_issued(&self) {
        self.id_tokens_issued.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `gauges` are values read at scrape time (pool, keys).
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP brand_idp_http_requests_total HTTP requests by route, method and status.\n");
        out.push_str("# TYPE brand_idp_http_requests_total counter\n");
        for ((route, method, status), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "brand_idp_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP brand_idp_http_request_duration_seconds Time to answer HTTP requests, by route.\n");
        out.push_str("# TYPE brand_idp_http_request_duration_seconds histogram\n");
        for (route, h) in self.durations.lock().expect("metrics lock").iter() {
            h.render(&mut out, "brand_idp_http_request_duration_seconds", &format!("route=\"{route}\""));
        }
        out.push_str("# HELP brand_idp_logins_total Login attempts by outcome.\n");
        out.push_str("# TYPE brand_idp_logins_total counter\n");
        for (i, name) in ["success", "failure", "throttled"].iter().enumerate() {
            let _ = writeln!(
                out,
                "brand_idp_logins_total{{outcome=\"{name}\"}} {}",
                self.logins[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP brand_idp_login_throttled_total Login attempts refused by throttling.\n");
        out.push_str("# TYPE brand_idp_login_throttled_total counter\n");
        let _ = writeln!(out, "brand_idp_login_throttled_total {}", self.logins[2].load(Ordering::Relaxed));
        out.push_str(
            "# HELP brand_idp_codes_redeemed_total Authorization codes presented at the token endpoint, by outcome.\n",
        );
        out.push_str("# TYPE brand_idp_codes_redeemed_total counter\n");
        for (i, name) in ["ok", "replayed", "invalid"].iter().enumerate() {
            let _ = writeln!(
                out,
                "brand_idp_codes_redeemed_total{{outcome=\"{name}\"}} {}",
                self.redemptions[i].load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in [
            ("brand_idp_codes_issued_total", "Authorization codes issued.", &self.codes_issued),
            ("brand_idp_access_tokens_issued_total", "Access tokens issued.", &self.access_tokens_issued),
            ("brand_idp_id_tokens_issued_total", "id_tokens issued.", &self.id_tokens_issued),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        out.push_str("# HELP brand_idp_password_hash_duration_seconds Time to hash or verify one password.\n");
        out.push_str("# TYPE brand_idp_password_hash_duration_seconds histogram\n");
        self.hash_duration.lock().expect("metrics lock").render(
            &mut out,
            "brand_idp_password_hash_duration_seconds",
            "",
        );
        let mut last = "";
        for g in gauges {
            if g.name != last {
                let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", g.name, g.help, g.name);
                last = g.name;
            }
            let labels = if g.labels.is_empty() { String::new() } else { format!("{{{}}}", g.labels) };
            let _ = writeln!(out, "{}{labels} {}", g.name, g.value);
        }
        out
    }
}

/// A value read at scrape time.
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: String,
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("/token", "POST", 200, Duration::from_millis(3));
        m.request("/token", "POST", 200, Duration::from_millis(30));
        m.login(Login::Throttled);
        let text = m.render(&[Gauge { name: "brand_idp_x", help: "x.", labels: String::new(), value: 1.0 }]);
        assert!(
            text.contains("brand_idp_http_requests_total{route=\"/token\",method=\"POST\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("brand_idp_http_request_duration_seconds_bucket{route=\"/token\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("brand_idp_http_request_duration_seconds_count{route=\"/token\"} 2"), "{text}");
        assert!(text.contains("brand_idp_logins_total{outcome=\"throttled\"} 1"));
        assert!(text.contains("brand_idp_x 1"));
        assert_eq!(route_label(Some("/authorize")), "/authorize");
        assert_eq!(route_label(Some("/evil/../x")), "other");
    }
}
