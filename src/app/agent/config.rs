//! The agent's configuration file (TOML). Reference: `docs/config.md`; a commented
//! example: `packaging/config.toml`.
//!
//! Every table rejects unknown fields; every field has a type and a default (except
//! `probe_id`, `mqtt.url` and each stream's `id` and `url`). Errors name the file, the
//! line and the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::DetectConfig;
use crate::error::{Error, Result};
use crate::ingest::hls::{HlsOptions, VariantChoice};
use crate::ingest::live::LiveConfig;
use crate::ingest::rtsp::RtspTransport;
use crate::ingest::source::{Source, SourceOptions, PACE_LOOP_FILES_ONLY};
use crate::publish::mqtt::{tls_config, MqttSettings};
use crate::redact::{redact_in_text, redact_secrets, redact_url, take_credentials, Secret};

/// Default path of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/vqprobe/config.toml";

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration like \"10s\": {e}")))
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This probe's id in topics and events. Required.
    pub probe_id: String,
    /// Period of the stats messages. "10s".
    #[serde(default = "d_stats", deserialize_with = "de_duration")]
    pub stats_interval: Duration,
    /// How long shutdown waits for the broker to acknowledge spooled events. "10s".
    #[serde(default = "d_shutdown", deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub limits: Limits,
    /// Live-source settings for every stream (`[live]`, see docs/config.md).
    #[serde(default)]
    pub live: LiveConfig,
    /// HLS settings for every stream (`[hls]`, see docs/config.md); a stream's
    /// `max_bandwidth` and `ca_file` override `variant` and `ca_file`.
    #[serde(default)]
    pub hls: HlsOptions,
    /// Detector settings for every stream (`[detect]`); a stream's own `[streams.detect]`
    /// overrides single fields.
    #[serde(default)]
    pub detect: toml::Table,
    /// Defect thumbnails (`[thumbnails]`).
    #[serde(default)]
    pub thumbnails: ThumbnailsConfig,
    /// The Prometheus endpoint (`[metrics]`).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Home Assistant MQTT discovery (`[homeassistant]`).
    #[serde(default)]
    pub homeassistant: HomeAssistantConfig,
    /// Fleet mode (`[fleet]`, docs/fleet.md): also watch this probe's share of a fleet's
    /// streams, read from the broker.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    /// Named source credentials (`[credentials.NAME]`) that streams refer to with
    /// `credentials = "NAME"` (the fleet catalog carries names only, never secrets).
    #[serde(default)]
    pub credentials: std::collections::BTreeMap<String, CredentialConfig>,
    #[serde(default)]
    pub streams: Vec<toml::Spanned<StreamConfig>>,
}

/// `[fleet]`: this probe is a member of the fleet `name`; the fleet's streams are the
/// retained messages on `{prefix}/fleet/{name}/streams/{id}`, shared among the online
/// members by rendezvous hashing (`app::fleet::assign`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The fleet's name (letters, digits, `-`, `_`, `.`). Required.
    pub name: String,
    /// Most fleet streams this probe takes, and its weight in the assignment. Default:
    /// `limits.max_streams` minus the streams of this file.
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Probes that watch each fleet stream. 1.
    #[serde(default = "d_replicas")]
    pub replicas: u32,
    /// How long a probe that came online waits (and the others wait for it) before it
    /// takes its share. "10s".
    #[serde(default = "d_settle", deserialize_with = "de_duration")]
    pub settle: Duration,
    /// Most catalog entries kept (memory bound). 10000. Entries beyond are ignored,
    /// counted and logged.
    #[serde(default = "d_max_catalog")]
    pub max_catalog: usize,
}

fn d_replicas() -> u32 {
    1
}
fn d_settle() -> Duration {
    Duration::from_secs(10)
}
fn d_max_catalog() -> usize {
    10_000
}

/// `[credentials.NAME]`: a user name and password for sources. `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    pub username: String,
    /// The password itself (prefer `password_file`).
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialConfig")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// `[thumbnails]`: a JPEG (320 px wide) of each picture defect's start, published on
/// `{prefix}/{probe_id}/{stream}/thumbs/{defect_id}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThumbnailsConfig {
    /// Make and publish thumbnails. true.
    pub enabled: bool,
    /// Bound on thumbnails waiting for the broker, bytes (memory only; events have
    /// their own spool). 1 MiB. Overflow policy: drop-oldest, counted
    /// (`outbox.thumbs.dropped`).
    pub queue_bytes: u64,
}

/// `[metrics]`: Prometheus metrics over HTTP (off unless `listen` is set).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address and port to serve `GET /metrics` on, e.g. "127.0.0.1:9898". Unset: off.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[homeassistant]`: Home Assistant MQTT discovery (off unless `discovery = true`):
/// retained discovery configs under `prefix`, a device per stream under the probe's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    /// Announce the probe and its streams to Home Assistant. false.
    pub discovery: bool,
    /// Home Assistant's discovery prefix. "homeassistant".
    pub prefix: String,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            discovery: false,
            prefix: "homeassistant".into(),
        }
    }
}

/// Whether `p` can be the first levels of MQTT topics: not empty, no wildcard (`+`,
/// `#`), no NUL, no leading or trailing `/`, no empty level.
fn valid_topic_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 256
        && !p.contains(['+', '#', '\0'])
        && p.split('/').all(|level| !level.is_empty())
}

impl Default for ThumbnailsConfig {
    fn default() -> Self {
        ThumbnailsConfig {
            enabled: true,
            queue_bytes: crate::publish::mqtt::THUMB_BUDGET as u64,
        }
    }
}

fn d_stats() -> Duration {
    Duration::from_secs(10)
}
fn d_shutdown() -> Duration {
    Duration::from_secs(10)
}

/// `[mqtt]`. `Debug` shows the URL redacted and no password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` (1883) or `mqtts://host:port` (8883, TLS). Required.
    pub url: String,
    /// Client id of the persistent session. Default `vqprobe-{probe_id}`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// The password itself (prefer `password_file`).
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA certificates for `mqtts://` (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and key for brokers that require one.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// First segment of every topic. "vqprobe".
    #[serde(default = "d_prefix")]
    pub topic_prefix: String,
    /// MQTT keepalive. "30s".
    #[serde(default = "d_keepalive", deserialize_with = "de_duration")]
    pub keepalive: Duration,
    /// Time allowed to connect (TCP, TLS, CONNACK). "10s".
    #[serde(default = "d_connect", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Largest reconnect delay (capped exponential backoff with jitter from 0.5 s). "30s".
    #[serde(default = "d_backoff", deserialize_with = "de_duration")]
    pub backoff_max: Duration,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &redact_url(&self.url))
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("topic_prefix", &self.topic_prefix)
            .field("keepalive", &self.keepalive)
            .field("connect_timeout", &self.connect_timeout)
            .field("backoff_max", &self.backoff_max)
            .finish()
    }
}

fn d_prefix() -> String {
    "vqprobe".into()
}
fn d_keepalive() -> Duration {
    Duration::from_secs(30)
}
fn d_connect() -> Duration {
    Duration::from_secs(10)
}
fn d_backoff() -> Duration {
    Duration::from_secs(30)
}

/// `[spool]`: the outbox on disk.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the spool (created, mode 0700). "/var/lib/vqprobe/spool".
    pub dir: PathBuf,
    /// Bound on undelivered events, bytes (memory and disk). 16 MiB. Overflow policy:
    /// drop-oldest, counted and reported.
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("/var/lib/vqprobe/spool"),
            max_bytes: 16 << 20,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most streams in one config (each has its own decode thread). 32.
    pub max_streams: usize,
    /// Largest picture decoded (width × height); larger SPS are refused with an
    /// `unsupported_codec` event. 9437184 (4096 × 2304).
    pub max_pixels: u64,
    /// Packets queued per stream between ingest and decode. 64.
    pub queue_packets: usize,
    /// Memory for one stream's media buffers, MiB (4–1024): HLS segment ½, packet
    /// queue ¼, largest access unit ⅛, idle buffers ⅛ (see `ingest::pool`). 12.
    pub stream_memory_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_streams: 32,
            max_pixels: DetectConfig::default().max_pixels,
            queue_packets: 64,
            stream_memory_mb: crate::ingest::pool::StreamBudget::DEFAULT_MB,
        }
    }
}

/// Pace of a `file://` stream.
pub use crate::ingest::source::Pace;

/// One `[[streams]]` entry. `Debug` shows the URL redacted.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Id in topics and events: letters, digits, `-`, `_`, `.`. Required.
    pub id: String,
    /// `rtsp://`, `http(s)://…m3u8`, or `file:///…ts`. Required.
    pub url: String,
    /// RTP transport of `rtsp://` streams. "tcp".
    #[serde(default)]
    pub rtsp_transport: RtspTransport,
    /// `file://` only: "realtime" (default) or "fast".
    #[serde(default)]
    pub pace: Option<Pace>,
    /// `file://` only: start again at the end. false.
    #[serde(default, rename = "loop")]
    pub looped: bool,
    /// HLS master playlists: the highest variant at or below this many bits/s.
    #[serde(default)]
    pub max_bandwidth: Option<u64>,
    /// HLS over https: extra trusted CA certificates (PEM).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Detector overrides for this stream (fields of `[detect]`).
    #[serde(default)]
    pub detect: toml::Table,
    /// The name of a `[credentials.NAME]` entry to log in to the source with (the URL
    /// then has no user info).
    #[serde(default)]
    pub credentials: Option<String>,
}

impl std::fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConfig")
            .field("id", &self.id)
            .field("url", &redact_url(&self.url))
            .field("rtsp_transport", &self.rtsp_transport)
            .field("pace", &self.pace)
            .field("looped", &self.looped)
            .field("max_bandwidth", &self.max_bandwidth)
            .field("ca_file", &self.ca_file)
            .field("detect", &self.detect)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// A stream ready to run: its settings resolved against the global ones.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPlan {
    pub cfg: StreamConfig,
    pub detect: DetectConfig,
    /// How to read the stream, resolved (a file's pace defaults to real time) and
    /// validated by [`Source::parse`].
    pub source: SourceOptions,
    pub live: LiveConfig,
    pub queue_packets: usize,
    pub budget: crate::ingest::pool::StreamBudget,
    pub is_file: bool,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub cfg: AgentConfig,
    pub streams: Vec<StreamPlan>,
    pub password: Option<Secret>,
    /// What a stream's plan is made from: the `[detect]` table every stream starts from,
    /// the memory budget and the resolved `[credentials]`.
    base: PlanBase,
}

#[derive(Debug, Clone)]
struct PlanBase {
    detect: toml::Table,
    budget: crate::ingest::pool::StreamBudget,
    credentials: std::collections::BTreeMap<String, (String, Secret)>,
}

/// Line (1-based) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Line of the first `key =` at the start of a line (top-level keys and tables).
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

pub(crate) fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Deep-merges `over` onto `base` (tables merge, other values replace).
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `msg` (a TOML/serde error about `text`) with every value that may be secret removed:
/// the values of `password` keys and the secrets of every URL in the file.
fn redact_config_values(text: &str, msg: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(v) = t.strip_prefix("password") {
            if let Some(v) = v.trim_start().strip_prefix('=') {
                let v = v.trim().trim_matches(['"', '\'']);
                secrets.push(v.to_string());
            }
        }
    }
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    redact_secrets(&redact_in_text(msg), &refs)
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// `vqprobe run --check-config`: loads and validates the file at `path`, MQTT settings
/// included; the line to print when it is valid.
pub fn check_file(path: &Path) -> Result<String> {
    let loaded = load(path)?;
    loaded.mqtt_settings()?;
    Ok(format!(
        "{}: valid ({} streams)",
        path.display(),
        loaded.streams.len()
    ))
}

/// Parses and validates `text` (read from `path`, used in messages).
pub fn parse(path: &Path, text: &str) -> Result<Loaded> {
    let file = path.display().to_string();
    let err = |line: Option<usize>, field: &str, msg: String| {
        Error::Config(match line {
            Some(l) => format!("{file}:{l}: {field}: {msg} (see docs/config.md)"),
            None => format!("{file}: {field}: {msg} (see docs/config.md)"),
        })
    };
    let mut cfg: AgentConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        // Serde quotes wrong values ("invalid type: integer `1234`"): never a password's.
        let msg = redact_config_values(text, e.message());
        Error::Config(match line {
            Some(l) => format!("{file}:{l}: {msg} (see docs/config.md)"),
            None => format!("{file}: {msg} (see docs/config.md)"),
        })
    })?;
    // An empty string means "not set" (the packaged example spells defaults that way).
    let m = &mut cfg.mqtt;
    for o in [&mut m.client_id, &mut m.username, &mut m.password] {
        if o.as_deref() == Some("") {
            *o = None;
        }
    }
    for o in [
        &mut m.password_file,
        &mut m.ca_file,
        &mut m.client_cert,
        &mut m.client_key,
    ] {
        if o.as_deref().is_some_and(|p| p.as_os_str().is_empty()) {
            *o = None;
        }
    }
    if !valid_id(&cfg.probe_id) {
        return Err(err(
            line_of_key(text, "probe_id"),
            "probe_id",
            format!(
                "`{}` must be 1–64 letters, digits, '-', '_' or '.' (it is part of MQTT topics)",
                cfg.probe_id
            ),
        ));
    }
    if !valid_id(&cfg.mqtt.topic_prefix.replace('/', "_")) {
        return Err(err(
            line_of_key(text, "topic_prefix"),
            "mqtt.topic_prefix",
            "must be letters, digits, '-', '_', '.' or '/' (no MQTT wildcards)".into(),
        ));
    }
    if cfg.stats_interval < Duration::from_secs(1) {
        return Err(err(
            line_of_key(text, "stats_interval"),
            "stats_interval",
            "must be at least 1s".into(),
        ));
    }
    // Durations that become timers: bounded, so that no timer saturates or overflows
    // `Instant` arithmetic, and the keepalive fits MQTT's 16-bit seconds.
    const DAY: Duration = Duration::from_secs(86_400);
    for (key, field, d, max) in [
        ("stats_interval", "stats_interval", cfg.stats_interval, DAY),
        (
            "shutdown_timeout",
            "shutdown_timeout",
            cfg.shutdown_timeout,
            DAY,
        ),
        (
            "connect_timeout",
            "mqtt.connect_timeout",
            cfg.mqtt.connect_timeout,
            DAY,
        ),
        ("backoff_max", "mqtt.backoff_max", cfg.mqtt.backoff_max, DAY),
        (
            "keepalive",
            "mqtt.keepalive",
            cfg.mqtt.keepalive,
            Duration::from_secs(65_535),
        ),
    ] {
        if d > max {
            return Err(err(
                line_of_key(text, key),
                field,
                format!("must be at most {}", humantime::format_duration(max)),
            ));
        }
    }
    cfg.live
        .validate()
        .map_err(|m| err(line_of_key(text, "[live]"), "live", m))?;
    cfg.hls
        .validate()
        .map_err(|m| err(line_of_key(text, "[hls]"), "hls", m))?;
    if !(64 * 1024..=64 << 20).contains(&cfg.thumbnails.queue_bytes) {
        return Err(err(
            line_of_key(text, "queue_bytes"),
            "thumbnails.queue_bytes",
            "must be between 65536 (64 KiB) and 67108864 (64 MiB)".into(),
        ));
    }
    if !valid_topic_prefix(&cfg.homeassistant.prefix) {
        return Err(err(
            line_of_key(text, "prefix"),
            "homeassistant.prefix",
            format!(
                "`{}` must be a non-empty MQTT topic prefix without '+', '#', NUL, empty levels or a leading or trailing '/'",
                cfg.homeassistant.prefix.replace('\0', "\\0")
            ),
        ));
    }
    if cfg.spool.max_bytes < 64 * 1024 {
        return Err(err(
            line_of_key(text, "max_bytes"),
            "spool.max_bytes",
            "must be at least 65536".into(),
        ));
    }
    if cfg.limits.queue_packets < 2 || cfg.limits.queue_packets > 100_000 {
        return Err(err(
            line_of_key(text, "queue_packets"),
            "limits.queue_packets",
            "must be between 2 and 100000".into(),
        ));
    }
    let budget =
        crate::ingest::pool::StreamBudget::from_mb(cfg.limits.stream_memory_mb).map_err(|m| {
            err(
                line_of_key(text, "stream_memory_mb"),
                "limits.stream_memory_mb",
                m,
            )
        })?;
    cfg.live
        .validate()
        .map_err(|m| err(line_of_key(text, "[live]"), "live", m))?;
    // MQTT endpoint and credentials.
    let url_line = line_of_key(text, "url");
    mqtt_endpoint(&cfg.mqtt.url).map_err(|m| err(url_line, "mqtt.url", m))?;
    if cfg.mqtt.password.is_some() && cfg.mqtt.password_file.is_some() {
        return Err(err(
            line_of_key(text, "password_file"),
            "mqtt.password_file",
            "set either mqtt.password or mqtt.password_file, not both".into(),
        ));
    }
    if cfg.mqtt.client_cert.is_some() != cfg.mqtt.client_key.is_some() {
        return Err(err(
            line_of_key(text, "client_cert").or(line_of_key(text, "client_key")),
            "mqtt.client_cert",
            "client_cert and client_key go together".into(),
        ));
    }
    let password = match (&cfg.mqtt.password, &cfg.mqtt.password_file) {
        (Some(p), None) => {
            warn_if_readable(path);
            Some(Secret::new(p.clone()))
        }
        (None, Some(f)) => {
            let s = std::fs::read_to_string(f).map_err(|e| {
                err(
                    line_of_key(text, "password_file"),
                    "mqtt.password_file",
                    format!("{}: {e}", f.display()),
                )
            })?;
            warn_if_readable(f);
            Some(Secret::new(s.lines().next().unwrap_or("").to_string()))
        }
        _ => None,
    };
    let mut base_detect = cfg.detect.clone();
    base_detect
        .entry("max_pixels".to_string())
        .or_insert(toml::Value::Integer(cfg.limits.max_pixels as i64));
    let detect_line = line_of_key(text, "[detect]");
    let global: DetectConfig = toml::Value::Table(base_detect.clone())
        .try_into()
        .map_err(|e: toml::de::Error| err(detect_line, "detect", e.message().to_string()))?;
    global
        .validate()
        .map_err(|m| err(detect_line, "detect", m))?;
    if cfg.streams.len() > cfg.limits.max_streams {
        return Err(err(
            None,
            "streams",
            format!(
                "{} streams configured, limits.max_streams is {}",
                cfg.streams.len(),
                cfg.limits.max_streams
            ),
        ));
    }
    let mut credentials = std::collections::BTreeMap::new();
    for (name, c) in &cfg.credentials {
        let field = format!("credentials.{name}");
        let line = line_of_key(text, &format!("[credentials.{name}]"))
            .or_else(|| line_of_key(text, "[credentials]"));
        if !valid_id(name) {
            return Err(err(
                line,
                &field,
                "a credential's name must be 1–64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let password = match (&c.password, &c.password_file) {
            (Some(p), None) => {
                warn_if_readable(path);
                Secret::new(p.clone())
            }
            (None, Some(f)) => {
                let s = std::fs::read_to_string(f).map_err(|e| {
                    err(
                        line,
                        &format!("{field}.password_file"),
                        format!("{}: {e}", f.display()),
                    )
                })?;
                warn_if_readable(f);
                Secret::new(s.lines().next().unwrap_or(""))
            }
            _ => {
                return Err(err(
                    line,
                    &field,
                    "set exactly one of password or password_file".into(),
                ))
            }
        };
        credentials.insert(name.clone(), (c.username.clone(), password));
    }
    let base = PlanBase {
        detect: base_detect,
        budget,
        credentials,
    };
    if let Some(f) = &cfg.fleet {
        let line = line_of_key(text, "[fleet]");
        if !valid_id(&f.name) {
            return Err(err(
                line,
                "fleet.name",
                format!(
                    "`{}` must be 1–64 letters, digits, '-', '_' or '.' (it is part of MQTT topics)",
                    f.name
                ),
            ));
        }
        if cfg.probe_id == "fleet" {
            return Err(err(
                line_of_key(text, "probe_id"),
                "probe_id",
                "`fleet` is reserved for the fleet catalog's topics in fleet mode".into(),
            ));
        }
        if !(1..=16).contains(&f.replicas) {
            return Err(err(line, "fleet.replicas", "must be 1–16".into()));
        }
        if f.settle > DAY {
            return Err(err(line, "fleet.settle", "must be at most 1day".into()));
        }
        if !(1..=1_000_000).contains(&f.max_catalog) {
            return Err(err(line, "fleet.max_catalog", "must be 1–1000000".into()));
        }
        let room = cfg.limits.max_streams.saturating_sub(cfg.streams.len());
        if f.capacity.is_some_and(|c| c as usize > room) {
            return Err(err(
                line,
                "fleet.capacity",
                format!(
                    "{} is more than limits.max_streams ({}) minus the {} streams of this file",
                    f.capacity.unwrap_or(0),
                    cfg.limits.max_streams,
                    cfg.streams.len()
                ),
            ));
        }
    }
    let mut plans = Vec::with_capacity(cfg.streams.len());
    let mut seen = std::collections::HashSet::new();
    let mut ha_ids = std::collections::HashMap::new();
    for (i, sp) in cfg.streams.iter().enumerate() {
        let line = Some(line_of(text, sp.span().start));
        let s = sp.get_ref();
        let field = |f: &str| format!("streams[{i}].{f}");
        if !seen.insert(s.id.clone()) {
            return Err(err(
                line,
                &field("id"),
                format!("duplicate stream id `{}`", s.id),
            ));
        }
        if cfg.homeassistant.discovery {
            let ha = crate::publish::homeassistant::sanitize(&s.id);
            if let Some(other) = ha_ids.insert(ha.clone(), s.id.clone()) {
                return Err(err(
                    line,
                    &field("id"),
                    format!(
                        "streams `{other}` and `{}` have the same Home Assistant id `{ha}` ('.' becomes '_'): rename one",
                        s.id
                    ),
                ));
            }
        }
        let plan = plan_stream(&cfg, &base, s).map_err(|(f, m)| err(line, &field(f), m))?;
        plans.push(plan);
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        cfg,
        streams: plans,
        password,
        base,
    })
}

/// Resolves and validates one stream entry against the global settings (the file's
/// `[[streams]]` and the fleet catalog's entries alike). Errors: the field and why.
fn plan_stream(
    cfg: &AgentConfig,
    base: &PlanBase,
    s: &StreamConfig,
) -> std::result::Result<StreamPlan, (&'static str, String)> {
    if !valid_id(&s.id) {
        return Err((
            "id",
            format!(
                "`{}` must be 1–64 letters, digits, '-', '_' or '.' (it is part of MQTT topics)",
                s.id
            ),
        ));
    }
    let mut cfg_s = s.clone();
    if let Some(name) = &s.credentials {
        let Some((user, password)) = base.credentials.get(name) else {
            return Err((
                "credentials",
                format!("no [credentials.{name}] in this probe's configuration"),
            ));
        };
        cfg_s.url = crate::redact::with_credentials(s.url.trim(), user, password.expose())
            .ok_or_else(|| {
                (
                    "url",
                    format!(
                        "`{}`: name either `credentials` or user info in the URL, not both",
                        redact_url(&s.url)
                    ),
                )
            })?;
    }
    // Classify the URL now, as every session will (the one `Source::parse`), so
    // that a typo fails at load, not at run time. `pace` and `loop` are refused
    // for anything but a file, a local playlist included.
    let mut source = SourceOptions {
        rtsp_transport: s.rtsp_transport,
        hls: HlsOptions {
            // A monitored network stream does not end: the end of a playlist is
            // `source_down`, then reload.
            ended_is_down: true,
            ..hls_options(&cfg.hls, s)
        },
        duration: None,
        pace: s.pace,
        looped: s.looped,
    };
    let parsed = Source::parse(&cfg_s.url, &source).map_err(|e| match e {
        Error::Config(m) if m == PACE_LOOP_FILES_ONLY => {
            (if s.pace.is_some() { "pace" } else { "loop" }, m)
        }
        e => ("url", redact_in_text(&e.to_string())),
    })?;
    let is_file = parsed.is_file();
    if let Source::File(f) = &parsed {
        // A file stream stands in for a live source: real time unless `pace = "fast"`.
        source.pace = Some(s.pace.unwrap_or_default());
        if !f.path.is_file() {
            tracing::warn!(stream = %s.id, path = %f.path.display(), "file stream: no such file yet (the stream retries)");
        }
    }
    let mut t = base.detect.clone();
    merge(&mut t, &s.detect);
    let mut detect: DetectConfig = toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| ("detect", e.message().to_string()))?;
    detect.thumbnails = cfg.thumbnails.enabled;
    detect.validate().map_err(|m| ("detect", m))?;
    Ok(StreamPlan {
        cfg: cfg_s,
        detect,
        source,
        live: cfg.live.clone(),
        queue_packets: cfg.limits.queue_packets,
        budget: base.budget,
        is_file,
    })
}

/// HLS options of a stream: the global `[hls]` with the stream's overrides.
pub fn hls_options(global: &HlsOptions, s: &StreamConfig) -> HlsOptions {
    let mut o = global.clone();
    if let Some(b) = s.max_bandwidth {
        o.variant = VariantChoice::MaxBandwidth(b);
    }
    if s.ca_file.is_some() {
        o.ca_file = s.ca_file.clone();
    }
    o
}

/// Host, port, TLS and optional credentials of an `mqtt(s)://` URL.
type Endpoint = (String, u16, bool, Option<(String, Secret)>);

/// Parses an `mqtt(s)://` URL (errors never contain its credentials). The user info is
/// split off with [`take_credentials`]: a password may hold unencoded `/`, `?`, `#`, `@`.
fn mqtt_endpoint(url: &str) -> std::result::Result<Endpoint, String> {
    let shown = redact_url(url);
    let (bare, _, creds) = take_credentials(url.trim());
    let u = url::Url::parse(&bare).map_err(|e| format!("`{shown}`: {e}"))?;
    let tls = match u.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            return Err(format!(
                "`{shown}`: scheme `{other}` is not supported: use mqtt:// or mqtts://"
            ))
        }
    };
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("`{shown}`: no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = u.port().unwrap_or(if tls { 8883 } else { 1883 });
    let creds = creds.map(|c| (c.user, c.password.unwrap_or_else(|| Secret::new(""))));
    if u.path() != "" && u.path() != "/" {
        return Err(format!("`{shown}`: an MQTT URL has no path"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("`{shown}`: an MQTT URL has no query or fragment"));
    }
    Ok((host, port, tls, creds))
}

/// Warns when a file holding a secret is readable by other users.
fn warn_if_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode();
            if mode & 0o004 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "this file holds the MQTT password and is readable by every user: chmod 640 (or 600)"
                );
            }
        }
    }
}

/// Client settings for a bare broker URL with every other setting at its default
/// (`vqprobe demo --mqtt URL`).
pub fn settings_for_url(url: &str, probe_id: &str) -> Result<MqttSettings> {
    let text = format!(
        "probe_id = {}\n[mqtt]\nurl = {}\n",
        serde_json::Value::String(probe_id.to_string()),
        serde_json::Value::String(url.to_string())
    );
    parse(Path::new("--mqtt"), &text)?.mqtt_settings()
}

impl Loaded {
    /// A stream entry (of the fleet catalog) resolved and validated exactly as a
    /// `[[streams]]` entry of this file is. Errors: `field: why`, without secrets.
    pub fn plan_entry(&self, s: &StreamConfig) -> std::result::Result<StreamPlan, String> {
        plan_stream(&self.cfg, &self.base, s).map_err(|(f, m)| format!("{f}: {m}"))
    }

    /// Whether `[credentials.NAME]` is defined.
    pub fn has_credentials(&self, name: &str) -> bool {
        self.base.credentials.contains_key(name)
    }

    /// This probe's capacity for fleet streams: `[fleet] capacity`, or
    /// `limits.max_streams` minus the streams of the file. 0 outside a fleet.
    pub fn fleet_capacity(&self) -> u32 {
        match &self.cfg.fleet {
            Some(f) => f.capacity.unwrap_or_else(|| {
                u32::try_from(
                    self.cfg
                        .limits
                        .max_streams
                        .saturating_sub(self.streams.len()),
                )
                .unwrap_or(u32::MAX)
            }),
            None => 0,
        }
    }

    /// This configuration with `streams` instead of the file's.
    pub fn with_streams(&self, streams: Vec<StreamPlan>) -> Loaded {
        Loaded {
            streams,
            ..self.clone()
        }
    }

    /// The MQTT client settings (builds the TLS configuration).
    pub fn mqtt_settings(&self) -> Result<MqttSettings> {
        let m = &self.cfg.mqtt;
        let (host, port, tls, url_creds) =
            mqtt_endpoint(&m.url).map_err(|e| Error::Config(format!("mqtt.url: {e}")))?;
        let tls = if tls {
            let client = match (&m.client_cert, &m.client_key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            Some(tls_config(m.ca_file.as_deref(), client)?)
        } else {
            if m.ca_file.is_some() || m.client_cert.is_some() {
                tracing::warn!("mqtt.ca_file/client_cert are ignored with mqtt:// (use mqtts://)");
            }
            None
        };
        let (username, password) = match (&m.username, url_creds) {
            (Some(u), _) => (Some(u.clone()), self.password.clone()),
            (None, Some((u, p))) => (Some(u), self.password.clone().or(Some(p))),
            (None, None) => (None, None),
        };
        Ok(MqttSettings {
            host,
            port,
            tls,
            client_id: m
                .client_id
                .clone()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| format!("vqprobe-{}", self.cfg.probe_id)),
            username,
            password,
            keepalive: m.keepalive,
            connect_timeout: m.connect_timeout,
            backoff_initial: 0.5,
            backoff_max: m.backoff_max.as_secs_f64().max(0.5),
            prefix: m.topic_prefix.trim_end_matches('/').to_string(),
            probe_id: self.cfg.probe_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Loaded> {
        parse(Path::new("/etc/vqprobe/config.toml"), text)
    }

    const MIN: &str = r#"
probe_id = "edge-fra-01"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[streams]]
id = "cam1"
url = "rtsp://camera.local/stream1"
"#;

    #[test]
    fn named_credentials_log_in_streams_and_catalog_entries_without_showing() {
        let dir = std::env::temp_dir().join(format!("vqprobe-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "p@ss/w:rd\nignored\n").unwrap();
        let text = MIN.replace(
            "[[streams]]",
            &format!(
                "[credentials.site-a]\nusername = \"view er\"\npassword_file = \"{}\"\n[fleet]\nname = \"eu\"\n[[streams]]",
                pw.display()
            ),
        ) + "credentials = \"site-a\"\n";
        let l = p(&text).unwrap();
        // The password (with delimiters) goes in percent-encoded and comes out whole.
        let url = &l.streams[0].cfg.url;
        assert_eq!(url, "rtsp://view%20er:p%40ss%2Fw%3Ard@camera.local/stream1");
        let (_, _, c) = crate::redact::take_credentials(url);
        let c = c.unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.unwrap().expose()),
            ("view er", "p@ss/w:rd")
        );
        assert!(!format!("{:?}", l.streams[0]).contains("p%40ss"));
        // A catalog entry resolves against the same credentials.
        let e: StreamConfig = serde_json::from_str(
            r#"{"id":"cam9","url":"rtsp://cam9.local/s","credentials":"site-a"}"#,
        )
        .unwrap();
        assert!(l
            .plan_entry(&e)
            .unwrap()
            .cfg
            .url
            .starts_with("rtsp://view%20er:"));
        let mut unknown = e.clone();
        unknown.credentials = Some("site-b".into());
        assert!(l
            .plan_entry(&unknown)
            .unwrap_err()
            .contains("[credentials.site-b]"));
        // Capacity: max_streams minus the file's streams.
        assert_eq!(l.fleet_capacity(), 31);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn stream_memory_budget_is_one_validated_setting() {
        let l = p(MIN).unwrap();
        assert_eq!(l.streams[0].budget.bytes(), 12 << 20);
        let with = |v: &str| {
            p(&MIN.replace(
                "[[streams]]",
                &format!("[limits]\nstream_memory_mb = {v}\n[[streams]]"),
            ))
        };
        assert_eq!(
            with("64").unwrap().streams[0].budget.max_segment(),
            32 << 20
        );
        for bad in ["3", "2000", "0"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains("limits.stream_memory_mb") && e.contains(":6:"),
                "{e}"
            );
        }
        assert!(with("-1").is_err());
        assert!(
            p(&MIN.replace("[[streams]]", "[limits]\nstream_memory = 8\n[[streams]]")).is_err()
        );
    }

    #[test]
    fn thumbnails_are_on_by_default_bounded_and_can_be_turned_off() {
        let l = p(MIN).unwrap();
        assert!(l.streams[0].detect.thumbnails);
        assert_eq!(l.cfg.thumbnails.queue_bytes, 1 << 20);
        let s = l.mqtt_settings().unwrap();
        assert_eq!(
            s.thumbs_topic("cam1", "ab-1"),
            "vqprobe/edge-fra-01/cam1/thumbs/ab-1"
        );
        let with =
            |t: &str| p(&MIN.replace("[[streams]]", &format!("[thumbnails]\n{t}\n[[streams]]")));
        assert!(
            !with("enabled = false").unwrap().streams[0]
                .detect
                .thumbnails
        );
        assert_eq!(
            with("queue_bytes = 262144")
                .unwrap()
                .cfg
                .thumbnails
                .queue_bytes,
            262_144
        );
        for bad in ["queue_bytes = 1000", "queue_bytes = 1000000000"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("thumbnails.queue_bytes"), "{e}");
        }
        assert!(with("size = 3").is_err(), "unknown keys are refused");
        // Not a [detect] key: thumbnails are not set per detector table.
        assert!(
            p(&MIN.replace("[[streams]]", "[detect]\nthumbnails = true\n[[streams]]")).is_err()
        );
    }

    #[test]
    fn home_assistant_discovery_is_off_by_default_and_its_prefix_validated() {
        let l = p(MIN).unwrap();
        assert!(!l.cfg.homeassistant.discovery);
        assert_eq!(l.cfg.homeassistant.prefix, "homeassistant");
        let with =
            |t: &str| p(&MIN.replace("[[streams]]", &format!("[homeassistant]\n{t}\n[[streams]]")));
        let on = with("discovery = true\nprefix = \"ha/discovery\"").unwrap();
        assert!(on.cfg.homeassistant.discovery);
        assert_eq!(on.cfg.homeassistant.prefix, "ha/discovery");
        for bad in ["", "ha/+", "ha/#", "/ha", "ha/", "ha//x", "h\\u0000a"] {
            let e = with(&format!("discovery = true\nprefix = \"{bad}\""))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("homeassistant.prefix") && e.contains(":7:") && e.contains("'+'"),
                "{bad}: {e}"
            );
        }
        let e = with("discovery = true\nprefx = \"ha\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `prefx`"), "{e}");
        assert!(with("discovery = \"yes\"").is_err());
        // Two stream ids that Home Assistant would see as one are refused, with
        // discovery on only.
        let two = MIN.to_string()
            + "[[streams]]\nid = \"cam.1\"\nurl = \"rtsp://a/b\"\n\
               [[streams]]\nid = \"cam_1\"\nurl = \"rtsp://a/c\"\n";
        assert!(p(&two).is_ok());
        let e = p(&two.replacen(
            "[[streams]]",
            "[homeassistant]\ndiscovery = true\n[[streams]]",
            1,
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("same Home Assistant id `cam_1`"), "{e}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let l = p(MIN).unwrap();
        assert_eq!(l.cfg.stats_interval, Duration::from_secs(10));
        assert_eq!(l.cfg.mqtt.topic_prefix, "vqprobe");
        assert_eq!(l.cfg.spool.max_bytes, 16 << 20);
        assert_eq!(l.streams.len(), 1);
        let s = l.mqtt_settings().unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 1883));
        assert_eq!(s.client_id, "vqprobe-edge-fra-01");
        assert_eq!(s.events_topic("cam1"), "vqprobe/edge-fra-01/cam1/events");
        assert_eq!(s.status_topic(), "vqprobe/edge-fra-01/status");
    }

    /// Found by the `config` fuzz target's invariants: `[live]` seconds were not
    /// range-checked (`inf` or NaN panic `Duration::from_secs_f64` in every session, a
    /// restart loop), `hls.stale_factor = nan` switched `playlist_stale` off, and the
    /// agent's durations had no upper bound (`stats_interval = "100000000000y"` overflows
    /// the `Instant` of the stats timer; a keepalive above 65535 s is truncated to MQTT's
    /// 16 bits).
    #[test]
    fn durations_and_factors_out_of_range_are_refused() {
        for (table, line, field) in [
            ("[live]", "stall_after = inf", "stall_after"),
            ("[live]", "backoff_initial = nan", "backoff_initial"),
            ("[live]", "backoff_max = -1.0", "backoff_max"),
            ("[live]", "connect_timeout = 1e300", "connect_timeout"),
            ("[live]", "read_timeout = -inf", "read_timeout"),
            ("[live]", "clear_after = 86400.5", "clear_after"),
            ("[hls]", "stale_factor = nan", "stale_factor"),
            ("[hls]", "stale_factor = 0.0", "stale_factor"),
        ] {
            let text = format!("{MIN}{table}\n{line}\n");
            let e = p(&text).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("must be"), "{line}: {e}");
        }
        for (line, field) in [
            ("stats_interval = \"100000000000y\"", "stats_interval"),
            ("shutdown_timeout = \"2days\"", "shutdown_timeout"),
        ] {
            let e = p(&format!("{line}\n{MIN}")).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("at most"), "{line}: {e}");
        }
        for (line, field) in [
            ("keepalive = \"65536s\"", "mqtt.keepalive"),
            ("connect_timeout = \"1000000h\"", "mqtt.connect_timeout"),
            ("backoff_max = \"2days\"", "mqtt.backoff_max"),
        ] {
            let text = MIN.replace("[mqtt]\n", &format!("[mqtt]\n{line}\n"));
            let e = p(&text).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("at most"), "{line}: {e}");
        }
        // The limits themselves are accepted.
        let text = MIN.replace("[mqtt]\n", "[mqtt]\nkeepalive = \"65535s\"\n")
            + "[live]\nstall_after = 3600.0\nclear_after = 0.0\n[hls]\nstale_factor = 100.0\n";
        let l = p(&text).unwrap();
        assert_eq!(l.cfg.mqtt.keepalive, Duration::from_secs(65_535));
        assert_eq!(l.streams[0].live.stall_after, 3600.0);
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = MIN.replace("[mqtt]\n", "[mqtt]\nkeep_alive = \"5s\"\n");
        let e = p(&text).unwrap_err().to_string();
        assert!(e.contains("/etc/vqprobe/config.toml:4"), "{e}");
        assert!(e.contains("keep_alive"), "{e}");
    }

    #[test]
    fn bad_stream_fields_name_the_stream_line() {
        let text = format!("{MIN}\n[[streams]]\nid = \"cam1\"\nurl = \"rtsp://x/y\"\n");
        let e = p(&text).unwrap_err().to_string();
        assert!(
            e.contains("config.toml:9") && e.contains("streams[1].id") && e.contains("duplicate"),
            "{e}"
        );
        let text = MIN.replace("rtsp://camera.local/stream1", "ftp://user:pw@cam/x");
        let e = p(&text).unwrap_err().to_string();
        assert!(e.contains("streams[0].url") && !e.contains("pw"), "{e}");
        let text = MIN.replace("id = \"cam1\"", "id = \"cam/1\"");
        assert!(p(&text).unwrap_err().to_string().contains("streams[0].id"));
        let text = format!("{MIN}pace = \"realtime\"\n");
        assert!(p(&text).unwrap_err().to_string().contains("file://"));
    }

    /// Issue 10: a local playlist is classified as HLS by the same `Source::parse` as
    /// `check` uses, so `pace` / `loop` on it are refused with a clear error naming the
    /// field (they used to validate, the stream being taken for a file, and were then
    /// silently ignored).
    #[test]
    fn pace_and_loop_on_a_local_playlist_are_refused() {
        for url in ["/srv/live/index.m3u8", "file:///srv/live/index.m3u8"] {
            for (line, field) in [("pace = \"fast\"", "pace"), ("loop = true", "loop")] {
                let text = MIN.replace("rtsp://camera.local/stream1", url) + line + "\n";
                let e = p(&text).unwrap_err().to_string();
                assert!(
                    e.contains(&format!("config.toml:5: streams[0].{field}"))
                        && e.contains(PACE_LOOP_FILES_ONLY),
                    "{url} {line}: {e}"
                );
            }
        }
        // A TS file takes both; its pace defaults to real time.
        let text = MIN.replace("rtsp://camera.local/stream1", "file:///srv/a.ts") + "loop = true\n";
        let l = p(&text).unwrap();
        assert!(l.streams[0].is_file && l.streams[0].source.looped);
        assert_eq!(l.streams[0].source.pace, Some(Pace::Realtime));
        // Not a file: no pace at all.
        assert_eq!(p(MIN).unwrap().streams[0].source.pace, None);
    }

    #[test]
    fn per_stream_detect_overrides_merge_onto_global() {
        let text = format!(
            "{MIN}[streams.detect.black]\nmin_duration = 5.0\n\n[detect.black]\npicture_ratio = 0.9\n"
        );
        // `[detect.black]` after `[streams.detect...]` is still the top-level table.
        let l = p(&text).unwrap();
        assert_eq!(l.streams[0].detect.black.min_duration, 5.0);
        assert_eq!(l.streams[0].detect.black.picture_ratio, 0.9);
        let text = format!("{MIN}[streams.detect.black]\nmin_durations = 5.0\n");
        let e = p(&text).unwrap_err().to_string();
        assert!(
            e.contains("streams[0].detect") && e.contains("min_durations"),
            "{e}"
        ); // The sound detectors' tables merge the same way, and are validated per stream.
        let text = format!(
            "{MIN}[streams.detect.clipping]\nratio = 0.01\n[streams.detect.channel_loss]\nmin_duration = 4.0\n\n[detect.clipping]\nwindow = 2.0\n"
        );
        let l = p(&text).unwrap();
        let d = &l.streams[0].detect;
        assert_eq!((d.clipping.ratio, d.clipping.window), (0.01, 2.0));
        assert_eq!(d.clipping.sample_level, 0.95);
        assert_eq!(d.channel_loss.min_duration, 4.0);
        let text = format!("{MIN}[streams.detect.clipping]\nsample_level = 2.0\n");
        let e = p(&text).unwrap_err().to_string();
        assert!(e.contains("clipping.sample_level"), "{e}");
        let text = format!(
            "{MIN}[streams.detect.loudness]\nceiling_lufs = -14.0\n\n[detect.loudness]\nmin_duration = 5.0\n"
        );
        let l = p(&text).unwrap();
        let d = &l.streams[0].detect.loudness;
        assert_eq!(
            (d.ceiling_lufs, d.min_duration, d.floor_lufs),
            (-14.0, 5.0, -40.0)
        );
        let text = format!("{MIN}[streams.detect.loudness]\nfloor_lufs = -5.0\n");
        let e = p(&text).unwrap_err().to_string();
        assert!(e.contains("loudness.floor_lufs"), "{e}");
        // `uniform` too: global defaults, a per-stream override, validated per stream.
        let text = format!(
            "{MIN}[streams.detect.uniform]\nmin_duration = 20.0\n\n[detect.uniform]\nshare = 0.9\n"
        );
        let l = p(&text).unwrap();
        let d = &l.streams[0].detect.uniform;
        assert_eq!((d.share, d.min_duration, d.luma_tolerance), (0.9, 20.0, 6));
        let text = format!("{MIN}[streams.detect.uniform]\nshare = 0.2\n");
        let e = p(&text).unwrap_err().to_string();
        assert!(e.contains("uniform.share"), "{e}");
        // Blur: the global table, a stream's own on top, validated per stream.
        let text = format!(
            "{MIN}[streams.detect.blur]\nratio = 0.3\n\n[detect.blur]\nmin_duration = 20.0\n"
        );
        let l = p(&text).unwrap();
        let d = &l.streams[0].detect.blur;
        assert_eq!((d.ratio, d.min_duration, d.baseline_s), (0.3, 20.0, 30.0));
        let text = format!("{MIN}[streams.detect.blur]\nratio = 2.0\n");
        let e = p(&text).unwrap_err().to_string();
        assert!(e.contains("blur.ratio"), "{e}");
    }

    #[test]
    fn mqtt_url_and_secrets() {
        let text = MIN.replace("mqtt://127.0.0.1:1883", "mqtt://bob:hunter2@127.0.0.1");
        let l = p(&text).unwrap();
        let s = l.mqtt_settings().unwrap();
        assert_eq!(s.username.as_deref(), Some("bob"));
        assert_eq!(s.password.as_ref().unwrap().expose(), "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", l.password).contains("hunter2"));
        assert!(!format!("{l:?}").contains("hunter2"), "{l:?}");
        let text = MIN.replace("mqtt://127.0.0.1:1883", "http://127.0.0.1");
        assert!(p(&text).unwrap_err().to_string().contains("mqtt.url"));
        let text = MIN.replace(
            "[mqtt]\n",
            "[mqtt]\npassword = \"a\"\npassword_file = \"/x\"\n",
        );
        assert!(p(&text).unwrap_err().to_string().contains("not both"));
    }

    /// Defects 11 and 12: a broker password with unencoded `/`, `?`, `+` is split right and
    /// no error quotes it, nor a password given as a number, nor a query.
    #[test]
    fn broker_url_passwords_and_config_errors_never_printed() {
        let text = MIN.replace(
            "mqtt://127.0.0.1:1883",
            "mqtt://bob:Pw/x?y+z@127.0.0.1:1884",
        );
        let s = p(&text).unwrap().mqtt_settings().unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 1884));
        assert_eq!(s.password.as_ref().unwrap().expose(), "Pw/x?y+z");
        for (url, secret) in [
            ("mqtt://bob:Pw/x?y+z@127.0.0.1:1883/p", "y+z"),
            ("mqtt://bob:hunter2@127.0.0.1:1883?tok=T0KEN9", "T0KEN9"),
            ("mqtt://bob:hunter2@127.0.0.1:99999", "hunter2"),
            ("http://bob:hunter2@127.0.0.1", "hunter2"),
        ] {
            let e = p(&MIN.replace("mqtt://127.0.0.1:1883", url))
                .unwrap_err()
                .to_string();
            assert!(e.contains("mqtt.url") && !e.contains(secret), "{e}");
        }
        let text = MIN.replace("[mqtt]\n", "[mqtt]\npassword = 98765432\n");
        let e = p(&text).unwrap_err().to_string();
        assert!(
            e.contains("config.toml:4") && !e.contains("98765432"),
            "{e}"
        );
    }

    #[test]
    fn packaged_example_config_is_valid_once_probe_id_is_set() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // As shipped, probe_id is commented out on purpose: the service refuses to start
        // until the operator names the probe.
        let e = p(&text).unwrap_err().to_string();
        assert!(e.contains("probe_id"), "{e}");
        let text = text.replacen("#probe_id = ", "probe_id = ", 1);
        let l = p(&text).unwrap();
        // The example spells out the defaults: it must agree with the code.
        let d = p(MIN).unwrap();
        assert_eq!(l.cfg.spool, d.cfg.spool);
        assert_eq!(l.cfg.limits, d.cfg.limits);
        assert_eq!(l.cfg.stats_interval, d.cfg.stats_interval);
        assert_eq!(l.cfg.mqtt.keepalive, d.cfg.mqtt.keepalive);
        assert_eq!(l.cfg.mqtt.topic_prefix, d.cfg.mqtt.topic_prefix);
        assert!(l.cfg.mqtt.username.is_none() && l.cfg.mqtt.ca_file.is_none());
    }

    #[test]
    fn limits_are_enforced() {
        let mut text = MIN.replace(
            "[[streams]]\nid = \"cam1\"\nurl = \"rtsp://camera.local/stream1\"\n",
            "[limits]\nmax_streams = 1\n",
        );
        for i in 0..2 {
            text.push_str(&format!(
                "[[streams]]\nid = \"s{i}\"\nurl = \"rtsp://h/{i}\"\n"
            ));
        }
        assert!(p(&text).unwrap_err().to_string().contains("max_streams"));
    }
}
