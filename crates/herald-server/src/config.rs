//! Configuration: one TOML file parsed once, by a pure function, into a validated [`Config`].
//!
//! Every key has its default written on its field. Unknown keys are errors that name the key
//! (serde's `deny_unknown_fields` reports "unknown field `x`, expected one of …").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herald_core::apps::{AppSpec, Registry, RegistryError};
use herald_core::rate::MAX_LIMIT;
use herald_proto::ids::AppId;
use herald_proto::token::APP_ID_LENGTH;
use serde::Deserialize;

pub use crate::webhook::WebhookConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error (in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The apps contradict each other.
    #[error("invalid configuration: {0}")]
    Registry(#[from] RegistryError),
    /// A `[tls]` file cannot be read or does not hold what it should (checked at start, when the
    /// files are loaded).
    #[error("invalid configuration: tls.{key} {}: {reason}", .path.display())]
    Tls {
        /// The key naming the file: `cert` or `key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the one port: the OpenAPI at `/`, the gateway at `/ws`, `/metrics`, `/healthz`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Echoed in `ResponseMetadata.Region`. Default `cn-north-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Largest allowed distance between a request's `X-Date` and the server clock. Default 900 s.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
    /// Bearer token of the admin API (`/admin/api/*`) behind the console page. Without it the
    /// admin API is off (the console page still loads but cannot sign in).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// The client gateway.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// `[limits]`: connections, request heads and read timeouts of the listen port.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The apps served.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// `[cluster]`: run as one node of a cluster on Redis. Without it, a single node.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// `[tls]`: the port speaks TLS only (HTTPS and WSS). Without it, plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `[recovery]`: how much of each user's stream is kept for a client that reconnects.
    #[serde(default)]
    pub recovery: RecoveryConfig,
}

/// `[recovery]`: recovery after a reconnect (docs/delivery.md). Every login and room membership
/// has a stream of the messages it received; the last of them are kept so that a client that
/// reconnects and resumes gets what it missed, and a stream outlives a lost connection by
/// `window_ms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Messages kept per stream. Default 1,000; 0 turns recovery off (no positions in message
    /// frames); at most 100,000.
    #[serde(default = "default_window_messages")]
    pub window_messages: usize,
    /// Messages older than this are forgotten, and so is a stream whose user has had no
    /// connection for this long. Default 60,000 ms; 1,000 to 3,600,000.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            window_messages: default_window_messages(),
            window_ms: default_window_ms(),
        }
    }
}

impl RecoveryConfig {
    /// The window as the hub applies it.
    pub fn window(&self) -> herald_core::stream::Window {
        herald_core::stream::Window {
            messages: self.window_messages,
            max_age_us: self.window_ms.saturating_mul(1_000),
        }
    }
}

fn default_window_messages() -> usize {
    1_000
}

fn default_window_ms() -> u64 {
    60_000
}

/// `[tls]`: the certificate the port presents (docs/tls.md). The files are read once, when the
/// server starts; a new certificate takes a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, the server's own certificate first. A relative path
    /// is relative to the working directory.
    pub cert: PathBuf,
    /// PEM file with the private key: PKCS#8 (`BEGIN PRIVATE KEY`), RSA (`BEGIN RSA PRIVATE
    /// KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`).
    pub key: PathBuf,
    /// A connection that has not finished its TLS handshake this long after it was accepted is
    /// closed, so a silent client cannot hold a socket. Default 10,000 ms; 10 to 60,000.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_ms: u64,
}

impl TlsConfig {
    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

fn default_handshake_timeout() -> u64 {
    10_000
}

/// `[cluster]`: cluster mode on Redis (docs/cluster.md). Every node needs the same `[[apps]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT` (optionally `redis://:PASSWORD@HOST:PORT/DB`).
    pub redis: String,
    /// This node's id, unique in the cluster (the id rule). Default: random at each start.
    #[serde(default)]
    pub node_id: Option<String>,
    /// A node that has not renewed its heartbeat for this long is given up for dead: its users
    /// stop counting as online and its rooms' members elsewhere see them leave. Renewed every
    /// third of it. Default 10,000 ms; 1,000 to 60,000.
    #[serde(default = "default_node_ttl")]
    pub node_ttl_ms: u64,
    /// A Redis call that has not answered in this long fails (and API calls answer 503
    /// `ServiceUnavailableTemp`). Default 1,000 ms; 50 to 10,000.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_ms: u64,
}

fn default_node_ttl() -> u64 {
    10_000
}

fn default_command_timeout() -> u64 {
    1_000
}

/// `[gateway]`: the WebSocket side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// A ping is sent after this long without any frame from the client. Default 20,000 ms.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_ms: u64,
    /// The connection is closed (code 4002) after this long without any frame. Default 60,000 ms.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_ms: u64,
    /// Bytes that may wait in one connection's outbound queue; beyond it the connection is closed
    /// as a slow consumer (code 4001). Default 4 MiB.
    #[serde(default = "default_outbound")]
    pub outbound_queue_bytes: usize,
    /// A write that makes no progress for this long drops the connection. Default 10,000 ms.
    #[serde(default = "default_write_timeout")]
    pub write_timeout_ms: u64,
    /// Read buffer taken per connection when bytes arrive (released while the client is silent).
    /// Default 4096.
    #[serde(default = "default_read_buffer")]
    pub read_buffer_bytes: usize,
    /// Largest client frame or message accepted (close 1009 beyond it). Default 128 KiB.
    #[serde(default = "default_max_client_message")]
    pub max_client_message_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            heartbeat_interval_ms: default_heartbeat_interval(),
            heartbeat_timeout_ms: default_heartbeat_timeout(),
            outbound_queue_bytes: default_outbound(),
            write_timeout_ms: default_write_timeout(),
            read_buffer_bytes: default_read_buffer(),
            max_client_message_bytes: default_max_client_message(),
        }
    }
}

impl GatewayConfig {
    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
    /// The heartbeat timeout.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }
    /// The write timeout.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// `[limits]`: what one port accepts from clients it does not know yet, before any request is
/// authenticated (docs/security.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// TCP connections open at once on the listen port, HTTP and WebSocket alike; one more is
    /// answered `503` and closed before anything is read. Default 100,000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TCP connections open at once from one peer address (IPv6: one /64). Default 0, meaning no
    /// limit: behind a proxy or load balancer every client has the proxy's address, and benchmarks
    /// open 10,000 clients from 127.0.0.1. When clients connect directly, set it (docs/security.md
    /// recommends 256).
    #[serde(default)]
    pub max_connections_per_ip: usize,
    /// Largest request head (request line and headers); beyond it the request is answered `431`
    /// and the connection closed. Default 32 KiB; 4 KiB to 256 KiB.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// A request head must arrive whole within this long, counted from the first wait for it; a
    /// connection idle between requests is closed after it too. Default 10,000 ms.
    #[serde(default = "default_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// A request body (OpenAPI, admin API) must arrive whole within this long (OpenAPI:
    /// `InvalidParameter`, 400; admin API: 408). Default 10,000 ms.
    #[serde(default = "default_read_timeout")]
    pub body_read_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: default_max_connections(),
            max_connections_per_ip: 0,
            max_header_bytes: default_max_header_bytes(),
            header_read_timeout_ms: default_read_timeout(),
            body_read_timeout_ms: default_read_timeout(),
        }
    }
}

impl LimitsConfig {
    /// The header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    /// The body read timeout.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
}

fn default_max_connections() -> usize {
    100_000
}
fn default_max_header_bytes() -> usize {
    32 << 10
}
fn default_read_timeout() -> u64 {
    10_000
}

/// `[[apps]]`: one app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The AppId: 24 characters of the id alphabet.
    pub app_id: String,
    /// The AppKey that signs the app's client tokens.
    pub app_key: String,
    /// Messaging calls per second for the app. Default 500.
    #[serde(default = "default_qps")]
    pub qps_limit: u32,
    /// Access keys that may call the OpenAPI for this app.
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
    /// Messages per second one client connection may send (all send calls together). Default 100.
    #[serde(default = "default_client_send_rate")]
    pub client_send_rate: u32,
    /// Whether room members are told of each other's joins and leaves. Default true.
    #[serde(default = "default_true")]
    pub presence_events: bool,
    /// URL prefixes a client may point `setServerParams` at; empty (the default) allows none.
    #[serde(default)]
    pub server_message_urls: Vec<String>,
    /// `[apps.webhook]`: presence events to the business server. None by default.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// One `{ ak = "…", sk = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    /// Access key id.
    pub ak: String,
    /// Secret key.
    pub sk: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_region() -> String {
    "cn-north-1".into()
}
fn default_skew() -> u64 {
    900
}
fn default_heartbeat_interval() -> u64 {
    20_000
}
fn default_heartbeat_timeout() -> u64 {
    60_000
}
fn default_outbound() -> usize {
    4 << 20
}
fn default_write_timeout() -> u64 {
    10_000
}
fn default_read_buffer() -> usize {
    4096
}
fn default_max_client_message() -> usize {
    128 << 10
}
fn default_qps() -> u32 {
    500
}
fn default_client_send_rate() -> u32 {
    100
}
fn default_true() -> bool {
    true
}

/// The embedded default's development app (printed at start-up; for local use only).
pub mod dev {
    /// AppId of the development app.
    pub const APP_ID: &str = "herald-dev-app-000000001";
    /// AppKey of the development app.
    pub const APP_KEY: &str = "herald-dev-app-key-not-for-production";
    /// Access key of the development app.
    pub const AK: &str = "AKLTheralddev";
    /// Secret key of the development app.
    pub const SK: &str = "herald-dev-secret-not-for-production";
}

impl Config {
    /// The embedded default: `127.0.0.1:8080`, in-memory, one development app.
    pub fn embedded_default() -> Config {
        Config {
            listen: default_listen(),
            region: default_region(),
            max_clock_skew_secs: default_skew(),
            admin_token: None,
            gateway: GatewayConfig::default(),
            limits: LimitsConfig::default(),
            recovery: RecoveryConfig::default(),
            apps: vec![AppConfig {
                app_id: dev::APP_ID.into(),
                app_key: dev::APP_KEY.into(),
                qps_limit: default_qps(),
                access_keys: vec![AccessKeyConfig {
                    ak: dev::AK.into(),
                    sk: dev::SK.into(),
                }],
                client_send_rate: default_client_send_rate(),
                presence_events: true,
                server_message_urls: Vec::new(),
                webhook: None,
            }],
            cluster: None,
            tls: None,
        }
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn from_file(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::from_toml(&text)
    }

    /// Checks ranges and builds nothing: call [`Config::registry`] for the app table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return bad("admin_token must be at least 16 characters".into());
        }
        if self.apps.is_empty() {
            return bad("at least one [[apps]] entry is needed".into());
        }
        let r = &self.recovery;
        if r.window_messages > 100_000 {
            return bad("recovery.window_messages must be at most 100000".into());
        }
        if !(1_000..=3_600_000).contains(&r.window_ms) {
            return bad("recovery.window_ms must be between 1000 and 3600000".into());
        }
        if let Some(c) = &self.cluster {
            if !c.redis.starts_with("redis://") {
                return bad("cluster.redis must be a redis:// URL".into());
            }
            if redis::Client::open(c.redis.as_str()).is_err() {
                return bad(format!(
                    "cluster.redis {:?} is not a valid Redis URL",
                    c.redis
                ));
            }
            if c.node_id
                .as_deref()
                .is_some_and(|n| !herald_proto::ids::is_valid_id(n))
            {
                return bad("cluster.node_id must match [a-zA-Z0-9_@-.]{1,128}".into());
            }
            if !(1_000..=60_000).contains(&c.node_ttl_ms) {
                return bad("cluster.node_ttl_ms must be between 1000 and 60000".into());
            }
            if !(50..=10_000).contains(&c.command_timeout_ms) {
                return bad("cluster.command_timeout_ms must be between 50 and 10000".into());
            }
        }
        if let Some(t) = &self.tls {
            if !(10..=60_000).contains(&t.handshake_timeout_ms) {
                return bad("tls.handshake_timeout_ms must be between 10 and 60000".into());
            }
        }
        for app in &self.apps {
            if AppId::new(&app.app_id).is_err() || app.app_id.len() != APP_ID_LENGTH {
                return bad(format!(
                    "app_id {:?} must be {APP_ID_LENGTH} characters of [a-zA-Z0-9_@-.] (the token format needs that length)",
                    app.app_id
                ));
            }
            if app.app_key.is_empty() {
                return bad(format!("app_key of app {} is empty", app.app_id));
            }
            if app.qps_limit == 0 || app.qps_limit > MAX_LIMIT {
                return bad(format!(
                    "qps_limit of app {} must be between 1 and {MAX_LIMIT}",
                    app.app_id
                ));
            }
            if app.client_send_rate == 0 || app.client_send_rate > 1_000_000 {
                return bad(format!(
                    "client_send_rate of app {} must be between 1 and 1000000",
                    app.app_id
                ));
            }
            for url in &app.server_message_urls {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return bad(format!(
                        "server_message_urls of app {}: {url:?} must start with http:// or https://",
                        app.app_id
                    ));
                }
            }
            if let Some(w) = &app.webhook {
                w.validate().map_err(|m| {
                    ConfigError::Invalid(format!("apps.webhook of app {}: {m}", app.app_id))
                })?;
            }
            for k in &app.access_keys {
                if k.ak.is_empty() || k.sk.is_empty() || k.ak.contains('/') {
                    return bad(format!(
                        "access_keys of app {}: ak and sk must be non-empty and ak may not contain '/'",
                        app.app_id
                    ));
                }
            }
        }
        let g = &self.gateway;
        if g.heartbeat_interval_ms == 0 || g.heartbeat_timeout_ms < g.heartbeat_interval_ms {
            return bad("gateway.heartbeat_timeout_ms must be at least gateway.heartbeat_interval_ms, which must be positive".into());
        }
        if g.outbound_queue_bytes < 1024 || g.read_buffer_bytes < 256 || g.write_timeout_ms == 0 {
            return bad("gateway.outbound_queue_bytes must be at least 1024, gateway.read_buffer_bytes at least 256, gateway.write_timeout_ms positive".into());
        }
        if g.max_client_message_bytes < 1024 {
            return bad("gateway.max_client_message_bytes must be at least 1024".into());
        }
        let l = &self.limits;
        if l.max_connections == 0 {
            return bad("limits.max_connections must be positive".into());
        }
        if !(4 << 10..=256 << 10).contains(&l.max_header_bytes) {
            return bad("limits.max_header_bytes must be between 4096 and 262144".into());
        }
        for (key, ms) in [
            ("header_read_timeout_ms", l.header_read_timeout_ms),
            ("body_read_timeout_ms", l.body_read_timeout_ms),
        ] {
            if !(1..=600_000).contains(&ms) {
                return bad(format!("limits.{key} must be between 1 and 600000"));
            }
        }
        Ok(())
    }

    /// The apps that have a webhook, with its settings.
    pub fn webhooks(&self) -> Vec<(AppId, WebhookConfig)> {
        self.apps
            .iter()
            .filter_map(|a| Some((AppId::new(&a.app_id).ok()?, a.webhook.clone()?)))
            .collect()
    }

    /// The app table for the core.
    pub fn registry(&self) -> Result<Registry, ConfigError> {
        let specs = self
            .apps
            .iter()
            .map(|a| {
                let id = AppId::new(&a.app_id)
                    .map_err(|_| ConfigError::Invalid(format!("bad app_id {:?}", a.app_id)))?;
                let mut spec = AppSpec::new(id, a.app_key.clone());
                spec.qps_limit = a.qps_limit;
                spec.access_keys = a
                    .access_keys
                    .iter()
                    .map(|k| (k.ak.clone(), k.sk.clone()))
                    .collect();
                spec.client_send_rate = a.client_send_rate;
                spec.presence_events = a.presence_events;
                spec.server_message_urls = a.server_message_urls.clone();
                Ok(spec)
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Registry::new(specs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
listen = "127.0.0.1:8080"
region = "cn-north-1"
[[apps]]
app_id = "65a1b2c3d4e5f60718293a4b"
app_key = "0123456789abcdef0123456789abcdef"
qps_limit = 500
access_keys = [{ ak = "AKLT...", sk = "..." }]
"#;

    #[test]
    fn the_documented_shape_parses_with_defaults() {
        let c = Config::from_toml(ISSUE_EXAMPLE).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.apps[0].qps_limit, 500);
        assert_eq!(c.gateway.read_buffer_bytes, 4096);
        assert_eq!(c.limits.max_connections, 100_000);
        assert_eq!(c.limits.max_connections_per_ip, 0);
        assert_eq!(c.limits.max_header_bytes, 32 << 10);
        assert_eq!(c.limits.header_read_timeout_ms, 10_000);
        assert_eq!(c.limits.body_read_timeout_ms, 10_000);
        assert!(c.registry().unwrap().access_key("AKLT...").is_some());
        let c = Config::from_toml(&ISSUE_EXAMPLE.replace("qps_limit = 500\n", "")).unwrap();
        assert_eq!(c.apps[0].qps_limit, 500);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml(&format!("lisen = \"x\"\n{ISSUE_EXAMPLE}")).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = Config::from_toml(&ISSUE_EXAMPLE.replace("qps_limit", "qps")).unwrap_err();
        assert!(e.to_string().contains("qps"), "{e}");
        let e =
            Config::from_toml(&format!("{ISSUE_EXAMPLE}[gateway]\nheartbeat = 1\n")).unwrap_err();
        assert!(e.to_string().contains("heartbeat"), "{e}");
        let e =
            Config::from_toml(&format!("{ISSUE_EXAMPLE}[limits]\nmax_conns = 1\n")).unwrap_err();
        assert!(e.to_string().contains("max_conns"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (from, to) in [
            ("65a1b2c3d4e5f60718293a4b", "short"),
            ("qps_limit = 500", "qps_limit = 0"),
            ("ak = \"AKLT...\"", "ak = \"\""),
        ] {
            let e = Config::from_toml(&ISSUE_EXAMPLE.replace(from, to));
            assert!(matches!(e, Err(ConfigError::Invalid(_))), "{to}: {e:?}");
        }
        for limits in [
            "max_connections = 0",
            "max_header_bytes = 1024",
            "max_header_bytes = 1000000",
            "header_read_timeout_ms = 0",
            "body_read_timeout_ms = 0",
            "body_read_timeout_ms = 600001",
        ] {
            let e = Config::from_toml(&format!("{ISSUE_EXAMPLE}[limits]\n{limits}\n"));
            assert!(matches!(e, Err(ConfigError::Invalid(_))), "{limits}: {e:?}");
        }
        let c = Config::from_toml(&format!(
            "{ISSUE_EXAMPLE}[limits]\nmax_connections = 5\nmax_connections_per_ip = 2\n"
        ))
        .unwrap();
        assert_eq!(
            (c.limits.max_connections, c.limits.max_connections_per_ip),
            (5, 2)
        );
        let twice = format!(
            "{ISSUE_EXAMPLE}{}",
            &ISSUE_EXAMPLE[ISSUE_EXAMPLE.find("[[apps]]").unwrap()..]
        );
        assert!(Config::from_toml(&twice).unwrap().registry().is_err());
    }

    #[test]
    fn tls_is_optional_and_checked() {
        assert!(Config::from_toml(ISSUE_EXAMPLE).unwrap().tls.is_none());
        let with = |t: &str| Config::from_toml(&format!("{ISSUE_EXAMPLE}{t}\n"));
        let c = with("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"").unwrap();
        let t = c.tls.unwrap();
        assert_eq!(
            (t.cert.to_str(), t.key.to_str()),
            (Some("c.pem"), Some("k.pem"))
        );
        assert_eq!(t.handshake_timeout(), Duration::from_secs(10));
        let e = with("[tls]\ncert = \"c.pem\"").unwrap_err();
        assert!(e.to_string().contains("key"), "{e}");
        let e = with("[tls]\ncert = \"c\"\nkey = \"k\"\nhandshake_timeout_ms = 0").unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
        let e = with("[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"x\"").unwrap_err();
        assert!(e.to_string().contains("ca"), "{e}");
    }

    #[test]
    fn the_embedded_default_is_valid() {
        let c = Config::embedded_default();
        c.validate().unwrap();
        c.registry().unwrap();
    }
}
