//! The admin command line: `brand-idp serve | migrate | check-config | client | consumer | keys`.
//!
//! Every command takes `--json`. A failure prints one sentence on stderr (a JSON object
//! with `--json`) and exits with status 1; usage errors exit with status 2.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::consumers::{self, ConsumerError, Hasher, Password};
use crate::keys;
use crate::oidc::clients::{self as client_rules, Registration};
use crate::store::{AuthMethod, Profile, Store, StoreError};

#[derive(Parser, Debug)]
#[command(name = "brand-idp", version, about = "OpenID Connect identity provider for LiveEngage brands")]
pub struct Cli {
    /// TOML configuration file (also BRAND_IDP_CONFIG).
    #[arg(long, global = true, env = "BRAND_IDP_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets redacted.
    CheckConfig,
    /// Print a new random secret key for BRAND_IDP_SECRET_KEY.
    GenSecretKey,
    /// Measure how long one password hash takes with the configured argon2id parameters.
    MeasureHash {
        /// How many hashes to time.
        #[arg(long, default_value_t = 20)]
        count: u32,
    },
    /// Measure how many RS256 id_tokens per second one core signs, with the server's signer and
    /// a key generated in memory.
    MeasureSigning {
        /// How many signatures to time.
        #[arg(long, default_value_t = 2000)]
        count: u32,
        /// RSA key size in bits (default: the configured key_size).
        #[arg(long, value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(["2048", "3072", "4096"]),
            |s| s.parse::<u32>().expect("listed values are numbers"),
        ))]
        key_size: Option<u32>,
    },
    /// Manage relying parties.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Manage consumers (the people who log in).
    #[command(subcommand)]
    Consumer(ConsumerCmd),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// LiveEngage (LivePerson Conversational Cloud) integration.
    #[command(subcommand)]
    Liveengage(LiveEngageCmd),
    /// Run a local demo: brand-idp with a demo consumer and LiveEngage client, and a brand
    /// page that plays LiveEngage's part (data in ./data-demo; ignores the configuration).
    Demo(crate::demo::DemoArgs),
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum LiveEngageCmd {
    /// Give an existing client the LiveEngage profile, or change it.
    Configure {
        #[arg(long)]
        client_id: String,
        #[command(flatten)]
        profile: LiveEngageArgs,
        #[command(flatten)]
        encryption: EncryptionArgs,
    },
    /// Print every value to paste into LiveEngage's connector screen, and the script tag.
    Settings {
        #[arg(long)]
        client_id: String,
    },
}

/// The LiveEngage profile's options (on `client create --liveengage` and `liveengage configure`).
#[derive(Args, Debug, Default)]
struct LiveEngageArgs {
    /// Origin of a brand page that includes /liveengage.js, such as https://www.brand.example (repeat).
    #[arg(long = "web-origin")]
    web_origins: Vec<String>,
    /// A LiveEngage window URL accepted as redirect URI (repeat; default: LiveEngage's unified window).
    #[arg(long = "window-url")]
    window_urls: Vec<String>,
    /// What the embedded window hands to LiveEngage.
    #[arg(long, value_enum)]
    flow: Option<CliFlow>,
    /// LiveEngage's connector has PKCE switched on.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pkce: Option<bool>,
    /// The JS method name configured in LiveEngage.
    #[arg(long)]
    js_method: Option<String>,
    /// The JS context configured in LiveEngage (window, or an object path such as lpMethods).
    #[arg(long)]
    js_context: Option<String>,
}

#[derive(Args, Debug, Default)]
struct EncryptionArgs {
    /// LivePerson's RSA public key (one line of base64 DER SPKI) to encrypt id_tokens with.
    #[arg(long, conflicts_with_all = ["encryption_key_file", "no_encryption"])]
    encryption_key: Option<String>,
    /// Read LivePerson's public key from a file (one line, or PEM).
    #[arg(long, conflicts_with = "no_encryption")]
    encryption_key_file: Option<PathBuf>,
    /// The JWE kid LivePerson gave with its key.
    #[arg(long)]
    encryption_kid: Option<String>,
    /// Content encryption: A128CBC-HS256 (default) or A256GCM.
    #[arg(long)]
    encryption_enc: Option<String>,
    /// Which flows get encrypted id_tokens: implicit, code, or both (repeat). Default: implicit.
    #[arg(long = "encrypt-flow", value_enum)]
    encrypt_flows: Vec<CliFlow>,
    /// Turn encryption off.
    #[arg(long)]
    no_encryption: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum CliFlow {
    Implicit,
    Code,
}

impl From<CliFlow> for crate::liveengage::Flow {
    fn from(f: CliFlow) -> Self {
        match f {
            CliFlow::Implicit => crate::liveengage::Flow::Implicit,
            CliFlow::Code => crate::liveengage::Flow::Code,
        }
    }
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum ClientCmd {
    /// Register a client; a strong secret is generated and printed once unless given.
    Create(ClientCreate),
    List,
    Show {
        client_id: String,
    },
    Delete {
        client_id: String,
    },
    /// Replace the secret with a new generated one, printed once.
    RotateSecret {
        client_id: String,
    },
}

#[derive(Args, Debug)]
struct ClientCreate {
    #[arg(long)]
    client_id: String,
    /// Use this secret (at least 32 characters) instead of a generated one.
    #[arg(long, conflicts_with_all = ["public", "client_secret_stdin"])]
    client_secret: Option<String>,
    /// Read the secret from standard input.
    #[arg(long, conflicts_with = "public")]
    client_secret_stdin: bool,
    /// A public client (mobile app, single-page app): no secret, PKCE required.
    #[arg(long)]
    public: bool,
    /// Registered redirect URI (repeat for several).
    #[arg(long = "redirect-uri", required_unless_present = "liveengage")]
    redirect_uris: Vec<String>,
    /// Allowed response type: code, id_token or "id_token token" (repeat; default code).
    #[arg(long = "response-type")]
    response_types: Vec<String>,
    /// Registered post-logout redirect URI (repeat for several).
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    /// How a confidential client authenticates at the token endpoint.
    #[arg(long, value_enum, default_value = "client-secret-basic")]
    auth_method: CliAuthMethod,
    #[arg(long)]
    name: Option<String>,
    /// Set the client up for LiveEngage: response types code, id_token and the legacy token,
    /// redirect URIs https://liveperson.net and LiveEngage's window, no nonce required,
    /// PKCE verifiers up to 512 characters, lp_sdes in id_tokens.
    #[arg(long)]
    liveengage: bool,
    #[command(flatten)]
    le: LiveEngageArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum CliAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Subcommand, Debug)]
enum ConsumerCmd {
    Create(ConsumerCreate),
    List,
    Show {
        username: String,
    },
    SetPassword {
        username: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Import consumers from a JSON Lines file (idempotent: existing usernames are updated).
    Import {
        file: PathBuf,
        /// Import the valid lines even if some are invalid (they are reported and skipped).
        #[arg(long)]
        skip_invalid: bool,
    },
    /// Export every consumer as JSON Lines (the import format, password hashes included).
    Export {
        /// Write to this file (mode 0600) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Store a consumer's LiveEngage attributes (the lp_sdes array) from a JSON file.
    SetAttributes {
        username: String,
        /// JSON file: [{"type": "ctmrinfo", "info": {...}}, {"type": "personal", "personal": {...}}]
        #[arg(long, required_unless_present = "clear")]
        file: Option<PathBuf>,
        /// Remove the attributes.
        #[arg(long, conflicts_with = "file")]
        clear: bool,
    },
    Disable {
        username: String,
    },
    Enable {
        username: String,
    },
    Delete {
        username: String,
    },
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct PasswordSource {
    /// Read the password from standard input (one line).
    #[arg(long)]
    password_stdin: bool,
    /// Read the password from a file (first line).
    #[arg(long, value_name = "PATH")]
    password_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ConsumerCreate {
    #[arg(long)]
    username: String,
    #[command(flatten)]
    password: PasswordSource,
    #[arg(long)]
    email: Option<String>,
    /// Mark the email address as verified.
    #[arg(long)]
    email_verified: bool,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    given_name: Option<String>,
    #[arg(long)]
    family_name: Option<String>,
    #[arg(long)]
    preferred_username: Option<String>,
    #[arg(long)]
    phone_number: Option<String>,
    #[arg(long)]
    gender: Option<String>,
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    List,
    /// Create a new signing key.
    Rotate {
        /// Publish the key now and start signing with it after this many seconds (0: at once).
        #[arg(long, default_value_t = 0, value_name = "SECONDS")]
        activate_after: u32,
    },
    /// Start signing with a published `next` key now (the previous key is retired).
    Activate {
        kid: String,
    },
    /// Print a public key (default: the active one).
    PublicKey {
        #[arg(long)]
        kid: Option<String>,
        #[arg(long, value_enum, default_value = "spki-base64")]
        format: KeyFormat,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum KeyFormat {
    /// One line: base64 of the DER SubjectPublicKeyInfo (LiveEngage's "JWT Public Key").
    SpkiBase64,
    Pem,
    Jwk,
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let json_out = cli.json;
    // On one core (a container with one CPU, or `taskset`), a single-threaded scheduler does the
    // same work without the multi-threaded one's cross-thread bookkeeping. Blocking work
    // (password hashing, SQLite) still runs on its own threads either way.
    let one_core = crate::config::usable_cores() == 1;
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = error_sentence(&e);
            if json_out {
                eprintln!("{}", json!({"error": msg}));
            } else {
                eprintln!("error: {msg}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn error_sentence(e: &anyhow::Error) -> String {
    // The outermost context already says what failed; internal chains stay out of it.
    let s = e.to_string();
    let mut s = s.trim_end_matches('.').to_string();
    s.push('.');
    s
}

/// Writes the command's result; a closed pipe (`| head`) is not an error worth a panic.
fn print(json_out: bool, value: &Value, text: impl FnOnce() -> String) {
    use std::io::Write;
    let out = if json_out { serde_json::to_string_pretty(value).expect("JSON") } else { text() };
    if !out.is_empty() {
        let _ = writeln!(std::io::stdout().lock(), "{out}");
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let j = cli.json;
    if let Command::GenSecretKey = cli.command {
        // Needs no configuration: it is how the configuration gets its key.
        let key =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, crate::crypto::random_bytes::<32>());
        print(j, &json!({"secret_key": key}), || key.clone());
        return Ok(());
    }
    if let Command::Demo(a) = cli.command {
        return crate::demo::run(a).await;
    }
    let settings = Settings::load(cli.config.as_deref()).map_err(|e| anyhow!("{e}"))?;
    match cli.command {
        Command::Serve => {
            crate::telemetry::init(settings.log_format, &settings.log_level);
            crate::serve(settings).await
        }
        other => {
            // Commands other than `serve` keep stderr quiet unless something is wrong.
            crate::telemetry::init(settings.log_format, "warn");
            run_admin(other, settings, j).await
        }
    }
}

async fn run_admin(cmd: Command, settings: Settings, j: bool) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match cmd {
        Command::Serve | Command::Demo(_) => unreachable!("handled by run"),
        Command::CheckConfig => {
            let pairs = settings.redacted();
            let obj: serde_json::Map<String, Value> =
                pairs.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect();
            print(j, &Value::Object(obj), || {
                let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                pairs.iter().map(|(k, v)| format!("{k:width$}  {v}")).collect::<Vec<_>>().join("\n")
            });
            Ok(())
        }
        Command::GenSecretKey => unreachable!("handled by run"),
        Command::MeasureHash { count } => {
            let count = count.clamp(1, 10_000);
            let (m, t, p) = (settings.argon2_memory_kib, settings.argon2_iterations, settings.argon2_parallelism);
            let times =
                tokio::task::spawn_blocking(move || crate::consumers::password::measure(m, t, p, count)).await?;
            let ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
            let mean = ms.iter().sum::<f64>() / ms.len() as f64;
            let min = ms.iter().cloned().fold(f64::MAX, f64::min);
            let max = ms.iter().cloned().fold(0.0, f64::max);
            let v = json!({"memory_kib": m, "iterations": t, "parallelism": p, "count": count,
                           "mean_ms": (mean * 100.0).round() / 100.0, "min_ms": (min * 100.0).round() / 100.0,
                           "max_ms": (max * 100.0).round() / 100.0, "hashes_per_second_per_core": (1000.0 / mean).round()});
            print(j, &v, || {
                format!("argon2id m={m} KiB, t={t}, p={p}: {mean:.1} ms per hash (min {min:.1}, max {max:.1}, {count} hashes), about {:.0} hashes/s per core", 1000.0 / mean)
            });
            Ok(())
        }
        Command::MeasureSigning { count, key_size } => {
            let count = count.clamp(1, 1_000_000);
            let bits = key_size.unwrap_or(settings.key_size);
            let claims = sample_id_token_claims(&settings.issuer, now);
            let r = tokio::task::spawn_blocking(move || keys::measure_signing(bits, count, &claims))
                .await?
                .map_err(|e| anyhow!("cannot measure signing: {e}"))?;
            let (rate, mean_us, secs) = (r.per_second(), r.mean_us(), r.elapsed.as_secs_f64());
            let v = json!({"algorithm": "RS256", "key_size": bits, "count": r.count,
                           "seconds": (secs * 1e4).round() / 1e4, "mean_us": (mean_us * 10.0).round() / 10.0,
                           "signatures_per_second": rate.round() as u64, "jwt_bytes": r.jwt_bytes});
            print(j, &v, || {
                format!("RS256, RSA-{bits}: {mean_us:.1} µs per id_token ({} signatures of a {}-byte JWT in {secs:.3} s on one thread), about {rate:.0} signatures/s per core", r.count, r.jwt_bytes)
            });
            Ok(())
        }
        Command::Migrate => {
            let store = Store::connect(&settings).await.map_err(|e| crate::open_error(&settings, &e))?;
            let applied = store
                .migrate()
                .await
                .map_err(|e| anyhow!("cannot migrate the database: {}", crate::describe_store_error(&e)))?;
            print(j, &json!({"applied": applied, "backend": store.backend_name()}), || {
                if applied.is_empty() {
                    "The database schema is up to date.".into()
                } else {
                    format!("Applied migrations {applied:?}.")
                }
            });
            Ok(())
        }
        Command::Client(c) => {
            let secrets = crate::resolve_secret_key(&settings)?;
            let store = crate::open_store(&settings).await?;
            client_cmd(c, &store, &secrets, j, now).await
        }
        Command::Consumer(c) => {
            let store = crate::open_store(&settings).await?;
            consumer_cmd(c, &store, &settings, j, now).await
        }
        Command::Liveengage(c) => {
            let store = crate::open_store(&settings).await?;
            liveengage_cmd(c, &store, &settings, j, now).await
        }
        Command::Keys(k) => {
            // Listing and exporting public keys needs no secret; creating one does.
            let secrets = match k {
                KeysCmd::Rotate { .. } => Some(crate::resolve_secret_key(&settings)?),
                _ => None,
            };
            let store = crate::open_store(&settings).await?;
            keys_cmd(k, &store, secrets.as_ref(), &settings, j, now).await
        }
    }
}

/// The claims of a typical id_token from the code flow (scope `openid email profile`, a nonce,
/// `at_hash`), built by the server's own claims code, for `measure-signing`.
fn sample_id_token_claims(issuer: &str, now: i64) -> Value {
    let consumer = crate::store::Consumer {
        id: "cBJaPo00Oqnm7vs2bFY7XA".into(),
        username: "alice".into(),
        password_hash: None,
        profile: Profile {
            name: Some("Alice Example".into()),
            given_name: Some("Alice".into()),
            family_name: Some("Example".into()),
            email: Some("alice@example.com".into()),
            email_verified: Some(true),
            ..Profile::default()
        },
        lp_attributes: None,
        disabled: false,
        created_at: now,
        updated_at: now,
    };
    let access_token = crate::crypto::random_token::<32>();
    let nonce = crate::crypto::random_token::<16>();
    crate::oidc::claims::id_token_claims(&crate::oidc::claims::IdTokenInput {
        issuer,
        client_id: "liveengage",
        consumer: &consumer,
        now,
        ttl: 3600,
        auth_time: now,
        nonce: Some(&nonce),
        access_token: Some(&access_token),
        scope: "openid profile email",
        claims_param: None,
        lp_sdes: None,
    })
}

fn store_err(e: StoreError) -> anyhow::Error {
    anyhow!("database operation failed: {}", crate::describe_store_error(&e))
}

fn client_json(c: &crate::store::Client) -> Value {
    serde_json::to_value(c).expect("JSON")
}

fn client_text(c: &crate::store::Client) -> String {
    let mut out = format!("client_id:      {}\n", c.client_id);
    if let Some(n) = &c.name {
        out += &format!("name:           {n}\n");
    }
    out += &format!("auth_method:    {}\n", c.auth_method.as_str());
    out += &format!("response_types: {}\n", c.response_types.join(", "));
    for u in &c.redirect_uris {
        out += &format!("redirect_uri:   {u}\n");
    }
    for u in &c.post_logout_redirect_uris {
        out += &format!("post_logout:    {u}\n");
    }
    out.trim_end().to_string()
}

async fn client_cmd(
    cmd: ClientCmd,
    store: &Store,
    secrets: &crate::crypto::SecretKeys,
    j: bool,
    now: i64,
) -> anyhow::Result<()> {
    match cmd {
        ClientCmd::Create(a) => {
            let secret = if a.client_secret_stdin { Some(read_line_stdin("client secret")?) } else { a.client_secret };
            if a.liveengage && a.public {
                bail!("a LiveEngage client is confidential: LiveEngage's backend authenticates with the client secret (drop --public)");
            }
            let le_profile = if a.liveengage {
                Some(build_profile(None, &a.le, &EncryptionArgs::default())?)
            } else {
                if a.le.has_any() {
                    bail!("LiveEngage options need --liveengage");
                }
                None
            };
            let mut redirect_uris = a.redirect_uris;
            if le_profile.is_some() && redirect_uris.is_empty() {
                redirect_uris.push(crate::liveengage::LIVEPERSON_REDIRECT.to_string());
            }
            let (mut new, secret) = client_rules::register(Registration {
                client_id: a.client_id,
                secret,
                public: a.public,
                name: a.name,
                redirect_uris,
                post_logout_redirect_uris: a.post_logout_redirect_uris,
                response_types: a.response_types,
                auth_method: Some(match a.auth_method {
                    CliAuthMethod::ClientSecretBasic => AuthMethod::ClientSecretBasic,
                    CliAuthMethod::ClientSecretPost => AuthMethod::ClientSecretPost,
                }),
            })
            .map_err(|e| anyhow!("{e}"))?;
            new.secret_hash = secret.as_deref().map(|s| secrets.hash_client_secret(s));
            if let Some(p) = &le_profile {
                p.apply(&mut new.options, &mut new.redirect_uris, &mut new.response_types);
            }
            let client = store.create_client(&new, now).await.map_err(|e| match e {
                StoreError::Conflict => {
                    anyhow!("a client with the id {:?} already exists", new.client_id)
                }
                e => store_err(e),
            })?;
            let mut v = client_json(&client);
            if let Some(s) = &secret {
                v["client_secret"] = json!(s);
            }
            print(j, &v, || {
                let mut t = format!("Created client.\n{}", client_text(&client));
                if let Some(s) = &secret {
                    t += &format!("\nclient_secret:  {s}\n(shown once: store it now)");
                }
                t
            });
            Ok(())
        }
        ClientCmd::List => {
            let list = store.list_clients().await.map_err(store_err)?;
            print(j, &json!(list.iter().map(client_json).collect::<Vec<_>>()), || {
                if list.is_empty() {
                    return "No clients.".into();
                }
                list.iter()
                    .map(|c| format!("{}\t{}\t{}", c.client_id, c.auth_method.as_str(), c.response_types.join(",")))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        ClientCmd::Show { client_id } => {
            let c = store.client(&client_id).await.map_err(|e| not_found(e, "client", &client_id))?;
            print(j, &client_json(&c), || client_text(&c));
            Ok(())
        }
        ClientCmd::Delete { client_id } => {
            store.delete_client(&client_id).await.map_err(|e| not_found(e, "client", &client_id))?;
            print(j, &json!({"deleted": client_id}), || {
                format!("Deleted client {client_id} and its codes and tokens.")
            });
            Ok(())
        }
        ClientCmd::RotateSecret { client_id } => {
            let c = store.client(&client_id).await.map_err(|e| not_found(e, "client", &client_id))?;
            if c.is_public() {
                bail!("client {client_id:?} is a public client and has no secret");
            }
            let secret = client_rules::generate_secret();
            store
                .set_client_secret_hash(&client_id, &secrets.hash_client_secret(&secret), now)
                .await
                .map_err(|e| not_found(e, "client", &client_id))?;
            print(j, &json!({"client_id": client_id, "client_secret": secret}), || {
                format!("New secret for {client_id}: {secret}\n(shown once: the old secret no longer works)")
            });
            Ok(())
        }
    }
}

impl LiveEngageArgs {
    fn has_any(&self) -> bool {
        !self.web_origins.is_empty()
            || !self.window_urls.is_empty()
            || self.flow.is_some()
            || self.pkce.is_some()
            || self.js_method.is_some()
            || self.js_context.is_some()
    }
}

/// The profile after applying the given options to `existing` (or to the defaults).
fn build_profile(
    existing: Option<crate::liveengage::Profile>,
    a: &LiveEngageArgs,
    e: &EncryptionArgs,
) -> anyhow::Result<crate::liveengage::Profile> {
    use crate::liveengage::{jwe::Enc, parse_origin, Encryption};
    let mut p = existing.unwrap_or_default();
    for o in &a.web_origins {
        let o = parse_origin(o).map_err(|e| anyhow!("{e}"))?;
        if !p.web_origins.contains(&o) {
            p.web_origins.push(o);
        }
    }
    if !a.window_urls.is_empty() {
        p.window_urls = a.window_urls.clone();
    }
    if let Some(f) = a.flow {
        p.flow = f.into();
    }
    if let Some(v) = a.pkce {
        p.pkce = v;
    }
    if let Some(m) = &a.js_method {
        p.js_method = m.clone();
    }
    if let Some(c) = &a.js_context {
        p.js_context = c.clone();
    }
    let key = match (&e.encryption_key, &e.encryption_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(f)) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("cannot read the key file {}", f.display()))?)
        }
        (None, None) => None,
    };
    if e.no_encryption {
        p.encryption = None;
    } else if key.is_some() || e.encryption_kid.is_some() || e.encryption_enc.is_some() || !e.encrypt_flows.is_empty() {
        let current = p.encryption.take();
        let public_key = match (key, &current) {
            (Some(k), _) => k.lines().filter(|l| !l.starts_with("-----")).flat_map(|l| l.split_whitespace()).collect(),
            (None, Some(c)) => c.public_key.clone(),
            (None, None) => {
                bail!("encryption needs LivePerson's public key: --encryption-key or --encryption-key-file")
            }
        };
        let enc = match &e.encryption_enc {
            Some(v) => Enc::parse(v).ok_or_else(|| anyhow!("--encryption-enc must be A128CBC-HS256 or A256GCM"))?,
            None => current.as_ref().map(|c| c.enc).unwrap_or(Enc::A128CbcHs256),
        };
        let (implicit, code) = if e.encrypt_flows.is_empty() {
            current.as_ref().map(|c| (c.implicit, c.code)).unwrap_or((true, false))
        } else {
            (e.encrypt_flows.contains(&CliFlow::Implicit), e.encrypt_flows.contains(&CliFlow::Code))
        };
        let kid = e.encryption_kid.clone().or_else(|| current.as_ref().and_then(|c| c.kid.clone()));
        p.encryption = Some(Encryption { public_key, kid, enc, implicit, code });
    }
    p.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(p)
}

async fn liveengage_cmd(
    cmd: LiveEngageCmd,
    store: &Store,
    settings: &Settings,
    j: bool,
    now: i64,
) -> anyhow::Result<()> {
    match cmd {
        LiveEngageCmd::Configure { client_id, profile, encryption } => {
            let mut c = store.client(&client_id).await.map_err(|e| not_found(e, "client", &client_id))?;
            let p = build_profile(crate::liveengage::profile(&c), &profile, &encryption)?;
            p.apply(&mut c.options, &mut c.redirect_uris, &mut c.response_types);
            store.update_client(&c, now).await.map_err(|e| not_found(e, "client", &client_id))?;
            print(j, &client_json(&c), || {
                format!("Client {client_id} has the LiveEngage profile.\n{}", client_text(&c))
            });
            Ok(())
        }
        LiveEngageCmd::Settings { client_id } => {
            let c = store.client(&client_id).await.map_err(|e| not_found(e, "client", &client_id))?;
            let p = crate::liveengage::profile(&c).ok_or_else(|| {
                anyhow!("client {client_id:?} has no LiveEngage profile; add it with `brand-idp liveengage configure --client-id {client_id}`")
            })?;
            // The public key must exist to be pasted: create the first one if the server
            // has not run yet.
            let secrets = crate::resolve_secret_key(settings)?;
            keys::bootstrap(store, &secrets, settings.key_size, now, crate::retire_grace(settings)).await?;
            let all = store.all_keys().await.map_err(store_err)?;
            let active = all.iter().find(|k| k.state == crate::store::KeyState::Active).ok_or_else(|| {
                anyhow!("there is no active key yet; start the server once or run `brand-idp keys rotate`")
            })?;
            let public_key = keys::spki_base64(active)?;
            let rows =
                crate::liveengage::settings(|path| settings.endpoint(path), &settings.issuer, &c, &p, &public_key);
            let obj: serde_json::Map<String, Value> =
                rows.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect();
            print(j, &Value::Object(obj), || {
                rows.iter().map(|(k, v)| format!("{k}:\n  {v}")).collect::<Vec<_>>().join("\n")
            });
            Ok(())
        }
    }
}

fn not_found(e: StoreError, what: &str, id: &str) -> anyhow::Error {
    match e {
        StoreError::NotFound => anyhow!("no {what} {id:?}"),
        e => store_err(e),
    }
}

fn read_line_stdin(what: &str) -> anyhow::Result<String> {
    let mut buf = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut buf)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    Ok(first_line(&buf))
}

fn first_line(s: &str) -> String {
    s.split('\n').next().unwrap_or("").trim_end_matches('\r').to_string()
}

fn read_password(src: &PasswordSource) -> anyhow::Result<Password> {
    let pw = if src.password_stdin {
        read_line_stdin("password")?
    } else if let Some(p) = &src.password_file {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read the password file {}", p.display()))?;
        first_line(&text)
    } else {
        bail!("give --password-stdin or --password-file");
    };
    if pw.is_empty() {
        bail!("the password is empty");
    }
    Ok(Password::new(pw))
}

fn consumer_text(c: &crate::store::Consumer) -> String {
    let mut out = format!(
        "username: {}\nsubject:  {}\nstatus:   {}\n",
        c.username,
        c.id,
        if c.disabled { "disabled" } else { "enabled" }
    );
    if let Value::Object(m) = serde_json::to_value(&c.profile).expect("JSON") {
        for (k, v) in m {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            out += &format!("{k}: {v}\n");
        }
    }
    if let Some(a) = &c.lp_attributes {
        out += &format!("lp_sdes: {a}\n");
    }
    out.trim_end().to_string()
}

fn consumer_err(e: ConsumerError) -> anyhow::Error {
    match e {
        ConsumerError::Store(s) => store_err(s),
        e => anyhow!("{e}"),
    }
}

async fn consumer_cmd(cmd: ConsumerCmd, store: &Store, settings: &Settings, j: bool, now: i64) -> anyhow::Result<()> {
    match cmd {
        ConsumerCmd::Create(a) => {
            let pw = read_password(&a.password)?;
            let profile = Profile {
                email_verified: a.email.as_ref().map(|_| a.email_verified),
                email: a.email,
                name: a.name,
                given_name: a.given_name,
                family_name: a.family_name,
                preferred_username: a.preferred_username,
                phone_number: a.phone_number,
                gender: a.gender,
                ..Profile::default()
            };
            let hasher = Hasher::new(settings);
            let c =
                consumers::create(store, &hasher, &a.username, Some(&pw), profile, now).await.map_err(consumer_err)?;
            print(j, &serde_json::to_value(&c)?, || format!("Created consumer.\n{}", consumer_text(&c)));
            Ok(())
        }
        ConsumerCmd::List => {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store.list_consumers(after.as_deref(), 500).await.map_err(store_err)?;
                let done = page.len() < 500;
                after = page.last().map(|c| c.username.clone());
                all.extend(page);
                if done {
                    break;
                }
            }
            print(j, &serde_json::to_value(&all)?, || {
                if all.is_empty() {
                    return "No consumers.".into();
                }
                all.iter()
                    .map(|c| format!("{}\t{}\t{}", c.username, c.id, if c.disabled { "disabled" } else { "enabled" }))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        ConsumerCmd::Show { username } => {
            let c = store.consumer_by_username(&username).await.map_err(|e| not_found(e, "consumer", &username))?;
            print(j, &serde_json::to_value(&c)?, || consumer_text(&c));
            Ok(())
        }
        ConsumerCmd::SetPassword { username, password } => {
            let pw = read_password(&password)?;
            // Look the consumer up first so a typo does not cost a password hash.
            store.consumer_by_username(&username).await.map_err(|e| not_found(e, "consumer", &username))?;
            let hash = Hasher::new(settings).hash(&pw).await.map_err(|e| anyhow!("{e}"))?;
            store
                .set_consumer_password(&username, &hash, now)
                .await
                .map_err(|e| not_found(e, "consumer", &username))?;
            print(j, &json!({"username": username, "password": "updated"}), || {
                format!("Password of {username} updated.")
            });
            Ok(())
        }
        ConsumerCmd::Import { file, skip_invalid } => import_consumers(store, &file, skip_invalid, j, now).await,
        ConsumerCmd::Export { output } => {
            use std::io::Write;
            let mut out: Box<dyn Write> = match &output {
                Some(path) => {
                    use std::os::unix::fs::OpenOptionsExt;
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    // An existing file keeps its mode on open: it holds password hashes.
                    use std::os::unix::fs::PermissionsExt;
                    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                    Box::new(std::io::BufWriter::new(f))
                }
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut after: Option<String> = None;
            let mut n = 0u64;
            loop {
                let page = store.list_consumers(after.as_deref(), 1000).await.map_err(store_err)?;
                for c in &page {
                    serde_json::to_writer(&mut out, &crate::consumers::import::Record::from_consumer(c))?;
                    out.write_all(b"\n")?;
                    n += 1;
                }
                if page.len() < 1000 {
                    break;
                }
                after = page.last().map(|c| c.username.clone());
            }
            out.flush()?;
            drop(out);
            if let Some(path) = output {
                print(j, &json!({"exported": n, "file": path.display().to_string()}), || {
                    format!("Exported {n} consumers to {}.", path.display())
                });
            }
            Ok(())
        }
        ConsumerCmd::SetAttributes { username, file, clear } => {
            let attrs = match (file, clear) {
                (_, true) => None,
                (Some(f), false) => {
                    let text = std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
                    let v: Value =
                        serde_json::from_str(&text).map_err(|e| anyhow!("{} is not valid JSON: {e}", f.display()))?;
                    let parsed = crate::liveengage::sdes::parse(&v).map_err(|e| anyhow!("{e}"))?;
                    Some(serde_json::to_value(parsed)?)
                }
                (None, false) => bail!("give --file or --clear"),
            };
            store
                .set_consumer_attributes(&username, attrs.as_ref(), now)
                .await
                .map_err(|e| not_found(e, "consumer", &username))?;
            print(j, &json!({"username": username, "lp_sdes": attrs}), || match &attrs {
                Some(_) => format!("LiveEngage attributes of {username} stored."),
                None => format!("LiveEngage attributes of {username} removed."),
            });
            Ok(())
        }
        ConsumerCmd::Disable { username } => set_disabled(store, &username, true, j, now).await,
        ConsumerCmd::Enable { username } => set_disabled(store, &username, false, j, now).await,
        ConsumerCmd::Delete { username } => {
            store.delete_consumer(&username).await.map_err(|e| not_found(e, "consumer", &username))?;
            print(j, &json!({"deleted": username}), || {
                format!("Deleted consumer {username} and their codes and tokens.")
            });
            Ok(())
        }
    }
}

/// `consumer import`: validate every line first (line-numbered report), then write in
/// batches of 500 per transaction; a line is applied whole or not at all.
async fn import_consumers(
    store: &Store,
    file: &std::path::Path,
    skip_invalid: bool,
    j: bool,
    now: i64,
) -> anyhow::Result<()> {
    use crate::consumers::import::{parse_line, Record};
    use std::io::BufRead;
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut records: Vec<(usize, Record)> = Vec::new();
    let mut errors: Vec<(usize, String)> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("cannot read line {n} of {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(r) => {
                let key = crate::store::username_key(&r.username);
                if let Some(first) = seen.insert(key, n) {
                    errors.push((n, format!("the username {:?} was already given on line {first}", r.username)));
                } else {
                    records.push((n, r));
                }
            }
            Err(e) => errors.push((n, e)),
        }
    }
    let report = |errors: &[(usize, String)]| {
        let mut t = errors.iter().take(50).map(|(n, e)| format!("line {n}: {e}")).collect::<Vec<_>>().join("\n");
        if errors.len() > 50 {
            t += &format!("\n... and {} more", errors.len() - 50);
        }
        t
    };
    if !errors.is_empty() && !skip_invalid {
        if j {
            let list: Vec<Value> = errors.iter().map(|(n, e)| json!({"line": n, "error": e})).collect();
            eprintln!("{}", json!({"invalid": list}));
        } else {
            eprintln!("{}", report(&errors));
        }
        bail!(
            "{} of {} lines are invalid; nothing was imported (fix them, or use --skip-invalid)",
            errors.len(),
            errors.len() + records.len()
        );
    }
    let total = records.len();
    let started = std::time::Instant::now();
    let mut imported = 0usize;
    let mut last_progress = 0usize;
    for batch in records.chunks(500) {
        let plain: Vec<Record> = batch.iter().map(|(_, r)| r.clone()).collect();
        let results = match store.upsert_imported(&plain, now).await {
            Ok(r) => r.into_iter().map(Ok).collect::<Vec<_>>(),
            // One bad line spoils its batch's transaction: apply the batch line by line to
            // find it, so every other line still goes in whole.
            Err(StoreError::Unavailable(e)) => return Err(store_err(StoreError::Unavailable(e))),
            Err(_) => {
                let mut one_by_one = Vec::with_capacity(batch.len());
                for r in &plain {
                    one_by_one.push(store.upsert_imported(std::slice::from_ref(r), now).await.map(|v| v[0]));
                }
                one_by_one
            }
        };
        for ((n, r), res) in batch.iter().zip(results) {
            match res {
                Ok(true) => imported += 1,
                Ok(false) => {
                    errors.push((*n, format!("{:?} exists with another subject; a subject cannot change", r.username)))
                }
                Err(StoreError::Conflict) => {
                    errors.push((*n, "the subject already belongs to another consumer".into()))
                }
                Err(e) => errors.push((*n, crate::describe_store_error(&e))),
            }
        }
        let done = imported + errors.len();
        if !j && total >= 10_000 && done - last_progress >= 10_000 {
            eprintln!(
                "imported {done} of {total} lines ({:.0} lines/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
            last_progress = done;
        }
    }
    errors.sort();
    let secs = started.elapsed().as_secs_f64();
    let v = json!({"imported": imported, "skipped": errors.iter().map(|(n, e)| json!({"line": n, "error": e})).collect::<Vec<_>>(), "seconds": (secs * 1000.0).round() / 1000.0});
    let skipped = errors.len();
    print(j, &v, || {
        let mut t = format!("Imported {imported} consumers in {secs:.1} s.");
        if !errors.is_empty() {
            t += &format!("\nSkipped {} lines:\n{}", errors.len(), report(&errors));
        }
        t
    });
    if skipped > 0 && !skip_invalid {
        bail!("{skipped} lines could not be applied (see above); the other lines were imported");
    }
    Ok(())
}

async fn set_disabled(store: &Store, username: &str, disabled: bool, j: bool, now: i64) -> anyhow::Result<()> {
    store.set_consumer_disabled(username, disabled, now).await.map_err(|e| not_found(e, "consumer", username))?;
    let word = if disabled { "disabled" } else { "enabled" };
    print(j, &json!({"username": username, "status": word}), || format!("Consumer {username} {word}."));
    Ok(())
}

fn key_json(k: &crate::store::StoredKey) -> Value {
    serde_json::to_value(k).expect("JSON")
}

async fn keys_cmd(
    cmd: KeysCmd,
    store: &Store,
    secrets: Option<&crate::crypto::SecretKeys>,
    settings: &Settings,
    j: bool,
    now: i64,
) -> anyhow::Result<()> {
    let grace = crate::retire_grace(settings);
    match cmd {
        KeysCmd::List => {
            keys::promote_due(store, now, grace).await?;
            let all = store.all_keys().await.map_err(store_err)?;
            print(j, &json!(all.iter().map(key_json).collect::<Vec<_>>()), || {
                if all.is_empty() {
                    return "No keys yet (the server creates the first one when it starts).".into();
                }
                all.iter()
                    .map(|k| {
                        let published = match k.state {
                            crate::store::KeyState::Retired if k.publish_until.is_some_and(|t| t <= now) => {
                                "unpublished"
                            }
                            _ => "published",
                        };
                        let extra = match (k.state, k.activate_at, k.publish_until) {
                            (crate::store::KeyState::Next, Some(t), _) => {
                                format!("activates in {}s", (t - now).max(0))
                            }
                            (crate::store::KeyState::Retired, _, Some(t)) if t > now => {
                                format!("published for {}s more", t - now)
                            }
                            _ => String::new(),
                        };
                        format!("{}\t{}\t{}\t{}\t{}", k.kid, k.alg, k.state.as_str(), published, extra)
                            .trim_end()
                            .to_string()
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        KeysCmd::Rotate { activate_after } => {
            let secrets = secrets.expect("resolved for rotate");
            keys::bootstrap(store, secrets, settings.key_size, now, grace).await?;
            let k = keys::rotate(store, secrets, settings.key_size, now, activate_after as i64, grace).await.map_err(
                |e| match e {
                    keys::KeyError::Store(StoreError::Conflict) => anyhow!(
                        "another key rotation happened at the same moment; run `keys list` and try again if needed"
                    ),
                    e => anyhow!("{e}"),
                },
            )?;
            print(j, &key_json(&k), || {
                if activate_after == 0 {
                    format!("New signing key {} is active; the previous key stays published for {grace}s.", k.kid)
                } else {
                    format!(
                        "New key {} is published and starts signing in {activate_after}s. Paste its public key wherever a key is pinned before then:\n  brand-idp keys public-key --kid {}",
                        k.kid, k.kid
                    )
                }
            });
            Ok(())
        }
        KeysCmd::Activate { kid } => {
            let all = store.all_keys().await.map_err(store_err)?;
            let k = all.iter().find(|k| k.kid == kid).ok_or_else(|| anyhow!("no key with kid {kid:?}"))?;
            if k.state != crate::store::KeyState::Next {
                bail!("key {kid} is {}, not next; only a next key can be activated", k.state.as_str());
            }
            store.activate_key(&kid, now, now + grace).await.map_err(|e| match e {
                StoreError::Conflict => {
                    anyhow!("key {kid} was activated or changed by someone else at the same moment")
                }
                e => store_err(e),
            })?;
            print(j, &json!({"kid": kid, "state": "active"}), || {
                format!("Key {kid} signs from now on; running servers switch within key_refresh_secs.")
            });
            Ok(())
        }
        KeysCmd::PublicKey { kid, format } => {
            let all = store.all_keys().await.map_err(store_err)?;
            let k = match &kid {
                Some(kid) => all.iter().find(|k| &k.kid == kid).ok_or_else(|| anyhow!("no key with kid {kid:?}"))?,
                None => all.iter().find(|k| k.state == crate::store::KeyState::Active).ok_or_else(|| {
                    anyhow!("there is no active key yet; start the server once or run `brand-idp keys rotate`")
                })?,
            };
            let text = match format {
                KeyFormat::SpkiBase64 => keys::spki_base64(k)?,
                KeyFormat::Pem => keys::spki_pem(k)?.trim_end().to_string(),
                KeyFormat::Jwk => k.public_jwk.to_string(),
            };
            let v = json!({"kid": k.kid, "format": format.to_possible_value().map(|v| v.get_name().to_string()), "state": k.state.as_str(), "public_key": match format {
                KeyFormat::Jwk => k.public_jwk.clone(),
                _ => Value::String(text.clone()),
            }});
            print(j, &v, || text.clone());
            Ok(())
        }
    }
}
