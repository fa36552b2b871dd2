//! HLS ingest (RFC 8216): master playlist → one variant → media playlist → segments
//! (MPEG-TS through [`super::ts`], fMP4/CMAF through [`super::mp4`]) → the stream's
//! [`LiveSink`], with the delivery defects only HLS can show.
//!
//! Inputs: `http://` and `https://` URLs, and local `.m3u8` paths (or `file://` URLs),
//! whose segment URIs may be local files. A remote playlist may only point at `http(s)`
//! URIs: it can never make the probe read local files.
//!
//! * **VOD** (`#EXT-X-ENDLIST` or `PLAYLIST-TYPE:VOD`): every segment in order, as fast as
//!   the decode thread takes them. Nothing is dropped (overflow policy *block*,
//!   [`LiveSink::packet_wait`]); the run ends with [`EndReason::EndOfInput`] — unless
//!   [`HlsOptions::ended_is_down`] (the agent): then the end is `source_down` and the
//!   playlist is reloaded with backoff (new segments are played, a live playlist is
//!   followed again).
//! * **Live** (sliding window or EVENT): start three segments from the end (§6.3.3),
//!   reload after the target duration when the playlist changed and after half of it
//!   when it did not (§6.3.4), bounded to [0.5 s, 30 s], and fetch each media sequence
//!   number once. Live segments also block rather than drop: HLS is pulled, a segment
//!   arrives as one burst larger than the packet queue, and a probe that falls behind
//!   skips whole segments that left the window (logged) instead of half pictures.
//!
//! Delivery defects (session clock, see docs/events.md):
//! `playlist_stale` (a live playlist's last media sequence number did not advance for
//! more than `stale_factor` × target duration), `segment_error` (a playlist or segment
//! fetch failed, or the segment could not be read; closed by the next good segment),
//! `slow_download` (a segment took longer to fetch than it plays), `ts_error`
//! (TR 101 290 priority 1 on the segments' transport stream), `stall` (no media for
//! `stall_after` plus, live, one target duration: media arrives in per-segment bursts)
//! and `source_down` (the playlist cannot be had at all: refused, 404, no answer, not a
//! playlist, no variants, a loop; then reconnect with capped backoff).
//!
//! Bounds: playlists and segments are read chunk by chunk up to a size cap, redirects are
//! limited, every wait has a timeout and races shutdown and the deadline. URLs in
//! messages and metrics carry no credentials and no query string (tokens).

use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use m3u8_rs::{KeyMethod, MediaPlaylist, MediaPlaylistType, Playlist, VariantStream};
use serde::{Deserialize, Serialize};
use url::Url;

use super::live::{LiveConfig, LiveSink};
use super::mp4::{Fmp4Demuxer, SampleRef};
use super::ts::{DemuxOutput, TsDemuxer, TsStats};
use super::{Packet, ProgramInfo};
use crate::backoff::Backoff;
use crate::defect::EndReason;
use crate::defect::{put, DefectKind, Metric, Metrics, Phase};
use crate::detect::transport::TsErrorDetector;
use crate::error::{Error, Result};
use crate::redact::redact_url;
use crate::shutdown::Shutdown;

/// Which variant of a master playlist to monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantChoice {
    /// The one with the highest `BANDWIDTH` (what viewers on a good line get).
    #[default]
    HighestBandwidth,
    /// The highest `BANDWIDTH` not above this many bits/s (the lowest if none fits).
    MaxBandwidth(u64),
    /// The n-th variant (0-based, in playlist order, I-frame playlists not counted).
    Index(usize),
}

/// HLS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsOptions {
    /// Variant of a master playlist. Highest bandwidth.
    pub variant: VariantChoice,
    /// Extra trusted CA certificates (PEM) for `https://`, besides the system's.
    /// Certificates are always verified.
    pub ca_file: Option<PathBuf>,
    /// Largest playlist read, bytes. 1 MiB.
    pub max_playlist_bytes: u64,
    /// Largest segment (or init section) read, bytes; never more than half the stream's
    /// memory budget (`[limits] stream_memory_mb`), whichever is smaller. 6 MiB.
    pub max_segment_bytes: u64,
    /// Redirects followed per request. 5.
    pub max_redirects: usize,
    /// A live playlist that has not advanced for this many target durations is stale. 1.5.
    pub stale_factor: f64,
    /// The end of the playlist (VOD, EXT-X-ENDLIST) is an outage, not the end of the
    /// input: `source_down`, then reload with backoff (the agent; `check` ends). Not a
    /// config field: the agent sets it for every HLS stream.
    #[serde(skip)]
    pub ended_is_down: bool,
}

impl Default for HlsOptions {
    fn default() -> Self {
        HlsOptions {
            variant: VariantChoice::HighestBandwidth,
            ca_file: None,
            max_playlist_bytes: 1 << 20,
            max_segment_bytes: super::pool::StreamBudget::default().max_segment(),
            max_redirects: 5,
            stale_factor: 1.5,
            ended_is_down: false,
        }
    }
}

impl HlsOptions {
    /// Checks value ranges; returns a message naming the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let f = self.stale_factor;
        if !(f.is_finite() && f > 0.0 && f <= 100.0) {
            return Err(format!(
                "stale_factor must be above 0 and at most 100, got {f}"
            ));
        }
        Ok(())
    }
}

/// A parsed HLS source.
#[derive(Clone)]
pub struct HlsSource {
    url: Url,
    display: String,
    opts: HlsOptions,
    /// The CA file's PEM, read (and checked) when the source was parsed.
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for HlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsSource")
            .field("url", &self.display)
            .field("opts", &self.opts)
            .finish()
    }
}

impl HlsSource {
    /// True for inputs this module takes: `http(s)://` URLs and `.m3u8` paths.
    pub fn is_hls_input(input: &str) -> bool {
        let l = input.trim().to_ascii_lowercase();
        if l.starts_with("http://") || l.starts_with("https://") {
            return true;
        }
        let path = l.split(['?', '#']).next().unwrap_or("");
        (!l.contains("://") || l.starts_with("file://"))
            && (path.ends_with(".m3u8") || path.ends_with(".m3u"))
    }

    /// Parses an `http(s)://` URL, a `file://` URL or a local playlist path. Reads the
    /// CA file now, so a bad one is a configuration error rather than an outage.
    pub fn parse(input: &str, opts: HlsOptions) -> Result<Self> {
        let input = input.trim();
        let lower = input.to_ascii_lowercase();
        let url = if lower.starts_with("http://") || lower.starts_with("https://") {
            // User info re-encoded so that a password with unencoded `/`, `?`, `#`, `@`
            // is split as `redact` splits it (the client sends it as Basic auth).
            let (_, encoded, _) = crate::redact::take_credentials(input);
            let u = Url::parse(&encoded)
                .map_err(|e| Error::bad_input(redact_url(input), format!("bad HLS URL: {e}")))?;
            if u.host_str().is_none_or(str::is_empty) {
                return Err(Error::bad_input(
                    redact_url(input),
                    "HLS URL without a host",
                ));
            }
            u
        } else {
            let path = if lower.starts_with("file://") {
                Url::parse(input)
                    .ok()
                    .and_then(|u| u.to_file_path().ok())
                    .ok_or_else(|| Error::bad_input(redact_url(input), "bad file:// URL"))?
            } else if input.contains("://") {
                return Err(Error::bad_input(
                    redact_url(input),
                    "not an HLS input: use http://, https:// or a local .m3u8 path",
                ));
            } else {
                PathBuf::from(input)
            };
            let abs = std::fs::canonicalize(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            Url::from_file_path(&abs).map_err(|_| {
                Error::bad_input(redact_url(input), "cannot make a file URL of this path")
            })?
        };
        let ca_pem = match &opts.ca_file {
            None => None,
            Some(p) => {
                let pem = std::fs::read(p).map_err(|source| Error::Io {
                    path: p.clone(),
                    source,
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    Error::Config(format!("{}: not PEM certificates: {e}", p.display()))
                })?;
                if certs.is_empty() {
                    return Err(Error::Config(format!(
                        "{}: no certificate in the file",
                        p.display()
                    )));
                }
                Some(pem)
            }
        };
        if !(opts.stale_factor.is_finite() && opts.stale_factor > 0.0) {
            return Err(Error::Config("hls.stale_factor must be > 0".into()));
        }
        Ok(HlsSource {
            display: display_url(&url),
            url,
            opts,
            ca_pem,
        })
    }

    /// The URL as it may be printed: no credentials, no query string.
    pub fn display_url(&self) -> &str {
        &self.display
    }

    pub fn options(&self) -> &HlsOptions {
        &self.opts
    }
}

/// The URL as it may be printed: [`redact_url`] (`scheme://***@host:port/path?***`); a
/// local file as its path.
pub fn display_url(u: &Url) -> String {
    if u.scheme() == "file" && u.query().is_none() && u.fragment().is_none() {
        if let Ok(p) = u.to_file_path() {
            return p.display().to_string();
        }
    }
    redact_url(u.as_str())
}

/// Master playlists nested deeper than this are refused (a loop, or a hostile origin).
const MAX_PLAYLIST_CHAIN: usize = 3;
/// How often waits call [`LiveSink::tick`] and check for the decode side going away.
const TICK: Duration = Duration::from_millis(200);
/// Demuxer input chunk: outputs are handed over between chunks.
const CHUNK: usize = 64 << 10;
/// Consecutive failed playlist reloads (live) or segments (VOD) that make the source down.
const MAX_FAILURES: u32 = 3;
/// Init sections are small; this caps them below the segment cap.
const MAX_INIT_BYTES: u64 = 16 << 20;

/// Picks a variant; Err when none fits. I-frame-only variants are never chosen.
pub fn choose_variant(
    variants: &[VariantStream],
    choice: VariantChoice,
) -> std::result::Result<usize, String> {
    let usable: Vec<usize> = variants
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_i_frame && !v.uri.trim().is_empty())
        .map(|(i, _)| i)
        .collect();
    if usable.is_empty() {
        return Err("the master playlist lists no variants".into());
    }
    // Highest bandwidth among `c`, the first of equals.
    let highest = |c: &mut dyn Iterator<Item = usize>| {
        c.fold(None::<usize>, |best, i| match best {
            Some(b) if variants[b].bandwidth >= variants[i].bandwidth => Some(b),
            _ => Some(i),
        })
    };
    match choice {
        VariantChoice::HighestBandwidth => Ok(highest(&mut usable.iter().copied()).unwrap_or(0)),
        VariantChoice::MaxBandwidth(max) => {
            let fit = highest(
                &mut usable
                    .iter()
                    .copied()
                    .filter(|&i| variants[i].bandwidth <= max),
            );
            Ok(fit.unwrap_or_else(|| {
                let lowest = usable
                    .iter()
                    .copied()
                    .min_by_key(|&i| variants[i].bandwidth)
                    .unwrap_or(0);
                tracing::warn!(
                    max,
                    lowest = variants[lowest].bandwidth,
                    "no HLS variant within the bandwidth limit: taking the lowest"
                );
                lowest
            }))
        }
        VariantChoice::Index(n) => usable.get(n).copied().ok_or_else(|| {
            format!(
                "variant {n} requested, the master playlist lists {}",
                usable.len()
            )
        }),
    }
}

/// How long to wait before reloading a live playlist, from the start of the last load
/// (RFC 8216 §6.3.4): the target duration after a change, half of it otherwise; bounded
/// to [0.5 s, 30 s] whatever the playlist says.
pub fn reload_delay(target_s: f64, changed: bool) -> Duration {
    let t = if target_s.is_finite() && target_s > 0.0 {
        target_s
    } else {
        0.0
    };
    let d = if changed { t } else { t / 2.0 };
    Duration::from_secs_f64(d.clamp(0.5, 30.0))
}

/// Whether a live playlist unchanged for `unchanged_s` is stale.
pub fn is_stale(unchanged_s: f64, target_s: f64, factor: f64) -> bool {
    unchanged_s > factor * target_s
}

/// The target duration used for timing: the playlist's, within [1 s, 60 s].
fn sane_target(t: u64) -> f64 {
    (t as f64).clamp(1.0, 60.0)
}

/// A segment's EXTINF duration if it is usable (finite, positive, under an hour).
fn sane_duration(d: f32, seq: u64) -> Option<f64> {
    let d = f64::from(d);
    if d.is_finite() && d > 0.0 && d <= 3600.0 {
        Some(d)
    } else {
        tracing::warn!(
            seq,
            duration = d,
            "HLS segment with an unusable EXTINF duration: ignored"
        );
        None
    }
}

/// Parses a playlist; never panics (the parser runs under `catch_unwind`).
pub fn parse_playlist(bytes: &[u8]) -> std::result::Result<Playlist, String> {
    let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    if !b[start..].starts_with(b"#EXTM3U") {
        return Err("not an M3U8 playlist (no #EXTM3U)".into());
    }
    match std::panic::catch_unwind(|| m3u8_rs::parse_playlist_res(&b[start..]).map_err(|_| ())) {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(())) => Err("unreadable M3U8 playlist".into()),
        Err(_) => Err("unreadable M3U8 playlist (parser failure)".into()),
    }
}

/// Resolves a playlist URI against the playlist's URL, refusing schemes the playlist may
/// not use (a remote playlist may only name http(s) URIs).
pub fn resolve_uri(base: &Url, uri: &str) -> std::result::Result<Url, String> {
    let u = base
        .join(uri.trim())
        .map_err(|e| format!("bad URI in the playlist: {e}"))?;
    let ok = match base.scheme() {
        "file" => matches!(u.scheme(), "file" | "http" | "https"),
        _ => matches!(u.scheme(), "http" | "https"),
    };
    if ok {
        Ok(u)
    } else {
        Err(format!(
            "URI scheme '{}' not allowed in a {} playlist",
            u.scheme(),
            base.scheme()
        ))
    }
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FetchError {
    /// HTTP status outside 2xx.
    Status(u16),
    Timeout(String),
    Connect(String),
    /// Larger than the cap (bytes).
    TooLarge(u64),
    /// The body ended early (Content-Length not reached, connection cut).
    Truncated(String),
    /// More than this many redirects.
    Redirects(usize),
    Other(String),
}

impl FetchError {
    fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status(s) => Some(*s),
            _ => None,
        }
    }

    fn message(&self, what: &str) -> String {
        let m = match self {
            FetchError::Status(s) => format!("HTTP {s}"),
            FetchError::Timeout(m) => format!("timeout: {m}"),
            FetchError::Connect(m) => format!("connection failed: {m}"),
            FetchError::TooLarge(cap) => format!("{what} larger than {cap} bytes"),
            FetchError::Truncated(m) => format!("truncated: {m}"),
            FetchError::Redirects(n) => format!("too many redirects (limit {n})"),
            FetchError::Other(m) => m.clone(),
        };
        crate::redact::redact_in_text(&m)
    }
}

/// Why a redirect was not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RedirectRefused {
    /// More than this many redirects.
    TooMany(usize),
    /// From `https` to plain `http`.
    Downgrade,
}

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedirectRefused::TooMany(n) => write!(f, "too many redirects (limit {n})"),
            RedirectRefused::Downgrade => {
                f.write_str("refused a redirect from https:// to http:// (a downgrade)")
            }
        }
    }
}

impl std::error::Error for RedirectRefused {}

/// Whether a redirect to `next` may be followed after the URLs `previous` (the first
/// request and every redirect so far).
/// At most `max` redirects, and never from `https` to plain `http`: once on TLS, a
/// redirect must not move the request (and the tokens in its URL) into the clear.
fn redirect_verdict(
    previous: &[Url],
    next: &Url,
    max: usize,
) -> std::result::Result<(), RedirectRefused> {
    if next.scheme() != "https" && previous.iter().any(|u| u.scheme() == "https") {
        return Err(RedirectRefused::Downgrade);
    }
    if previous.len() > max {
        return Err(RedirectRefused::TooMany(max));
    }
    Ok(())
}

fn redirect_policy(max: usize) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(
        move |a| match redirect_verdict(a.previous(), a.url(), max) {
            Ok(()) => a.follow(),
            Err(e) => a.error(e),
        },
    )
}

/// The innermost error message (io, TLS, ...): the useful part, and never a URL.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

/// A fetched body.
struct Body {
    bytes: Vec<u8>,
    /// The URL after redirects (relative URIs resolve against it).
    url: Url,
    /// From the request to the last byte.
    took: Duration,
}

/// Fetches URLs with caps and timeouts. The HTTP client is built on first use.
struct Fetcher {
    client: OnceLock<std::result::Result<reqwest::Client, String>>,
    ca_pem: Option<Vec<u8>>,
    connect: Duration,
    read: Duration,
    max_redirects: usize,
}

impl Fetcher {
    fn new(src: &HlsSource, cfg: &LiveConfig) -> Self {
        Fetcher {
            client: OnceLock::new(),
            ca_pem: src.ca_pem.clone(),
            connect: Duration::from_secs_f64(cfg.connect_timeout.clamp(0.1, 3600.0)),
            read: Duration::from_secs_f64(cfg.read_timeout.clamp(0.1, 3600.0)),
            max_redirects: src.opts.max_redirects,
        }
    }

    fn client(&self) -> std::result::Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                let mut b = reqwest::Client::builder()
                    .use_rustls_tls()
                    .connect_timeout(self.connect)
                    .read_timeout(self.read)
                    .redirect(redirect_policy(self.max_redirects))
                    .user_agent(concat!("vqprobe/", env!("CARGO_PKG_VERSION")));
                if let Some(pem) = &self.ca_pem {
                    let certs = reqwest::Certificate::from_pem_bundle(pem)
                        .map_err(|e| format!("CA file: {}", root_cause(&e)))?;
                    for c in certs {
                        b = b.add_root_certificate(c);
                    }
                }
                b.build()
                    .map_err(|e| format!("cannot set up the HTTP client: {}", root_cause(&e)))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Fetches `url` (optionally a byte range: offset, length), at most `cap` bytes,
    /// within `total` overall.
    async fn fetch(
        &self,
        url: &Url,
        range: Option<(u64, u64)>,
        cap: u64,
        total: Duration,
    ) -> std::result::Result<Body, FetchError> {
        let t0 = Instant::now();
        if let Some((_, len)) = range {
            if len > cap {
                return Err(FetchError::TooLarge(cap));
            }
        }
        let r = match url.scheme() {
            "file" => self.fetch_file(url, range, cap).await,
            "http" | "https" => self.fetch_http(url, range, cap, total).await,
            s => Err(FetchError::Other(format!("unsupported URI scheme '{s}'"))),
        };
        r.map(|(bytes, url)| Body {
            bytes,
            url,
            took: t0.elapsed(),
        })
    }

    async fn fetch_http(
        &self,
        url: &Url,
        range: Option<(u64, u64)>,
        cap: u64,
        total: Duration,
    ) -> std::result::Result<(Vec<u8>, Url), FetchError> {
        let client = self.client().map_err(FetchError::Other)?;
        let t0 = tokio::time::Instant::now();
        let overall = t0 + total;
        let mut req = client.get(url.clone());
        if let Some((off, len)) = range {
            if len == 0 {
                return Ok((Vec::new(), url.clone()));
            }
            req = req.header(reqwest::header::RANGE, range_header(off, len));
        }
        let head_by = overall.min(t0 + self.connect + self.read);
        let mut resp = match tokio::time::timeout_at(head_by, req.send()).await {
            Err(_) => {
                return Err(FetchError::Timeout(format!(
                    "no answer within {:.0} s",
                    (head_by - t0).as_secs_f64()
                )))
            }
            Ok(Err(e)) => return Err(self.classify(e)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let final_url = resp.url().clone();
        let expect = resp.content_length();
        // A server ignoring the range answers 200 with the whole resource: read through
        // it keeping only the range (at most `cap`, checked above), and stop reading once
        // the range is complete. Never buffer the whole resource.
        let within = range.filter(|_| status.as_u16() != 206);
        if within.is_none() && expect.is_some_and(|n| n > cap) {
            return Err(FetchError::TooLarge(cap));
        }
        let want = within.map_or(expect.unwrap_or(0).min(cap), |(_, len)| len);
        let mut body: Vec<u8> = Vec::with_capacity(want.min(4 << 20) as usize);
        // Bytes of the response seen so far.
        let mut seen: u64 = 0;
        loop {
            let by = overall.min(tokio::time::Instant::now() + self.read);
            match tokio::time::timeout_at(by, resp.chunk()).await {
                Err(_) if by == overall => {
                    return Err(FetchError::Timeout(format!(
                        "not complete within {:.0} s ({} bytes)",
                        total.as_secs_f64(),
                        body.len()
                    )))
                }
                Err(_) => {
                    return Err(FetchError::Timeout(format!(
                        "no data for {:.0} s after {} bytes",
                        self.read.as_secs_f64(),
                        body.len()
                    )))
                }
                Ok(Err(e)) if e.is_timeout() => {
                    return Err(FetchError::Timeout(format!(
                        "no data for {:.0} s after {} bytes",
                        self.read.as_secs_f64(),
                        body.len()
                    )))
                }
                Ok(Err(_)) => {
                    return Err(FetchError::Truncated(match expect {
                        Some(n) => format!("connection cut after {} of {n} bytes", body.len()),
                        None => format!("connection cut after {} bytes", body.len()),
                    }))
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => {
                    let start = seen;
                    seen = seen.saturating_add(c.len() as u64);
                    if let Some((off, len)) = within {
                        let lo = off.max(start);
                        let hi = off.saturating_add(len).min(seen);
                        if lo < hi {
                            body.extend_from_slice(
                                &c[(lo - start) as usize..(hi - start) as usize],
                            );
                        }
                        if body.len() as u64 >= len {
                            break;
                        }
                        continue;
                    }
                    if body.len() as u64 + c.len() as u64 > cap {
                        return Err(FetchError::TooLarge(cap));
                    }
                    body.extend_from_slice(&c);
                }
            }
        }
        if let Some((off, len)) = within {
            if (body.len() as u64) < len {
                return Err(FetchError::Truncated(format!(
                    "byte range {off}+{len} beyond the {seen} bytes sent"
                )));
            }
        } else if let Some(n) = expect {
            if (body.len() as u64) < n {
                return Err(FetchError::Truncated(format!(
                    "body ended after {} of {n} bytes",
                    body.len()
                )));
            }
        }
        Ok((body, final_url))
    }

    fn classify(&self, e: reqwest::Error) -> FetchError {
        let e = e.without_url();
        if e.is_redirect() {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cur {
                if let Some(RedirectRefused::Downgrade) = c.downcast_ref::<RedirectRefused>() {
                    return FetchError::Other(RedirectRefused::Downgrade.to_string());
                }
                cur = c.source();
            }
            FetchError::Redirects(self.max_redirects)
        } else if e.is_timeout() {
            FetchError::Timeout(root_cause(&e))
        } else if e.is_connect() {
            FetchError::Connect(root_cause(&e))
        } else if e.is_body() || e.is_decode() {
            FetchError::Truncated(root_cause(&e))
        } else {
            FetchError::Other(root_cause(&e))
        }
    }

    async fn fetch_file(
        &self,
        url: &Url,
        range: Option<(u64, u64)>,
        cap: u64,
    ) -> std::result::Result<(Vec<u8>, Url), FetchError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let io = |e: std::io::Error| FetchError::Other(e.to_string());
        let path = url
            .to_file_path()
            .map_err(|_| FetchError::Other("bad file URL".into()))?;
        let mut f = tokio::fs::File::open(&path).await.map_err(io)?;
        let len = f.metadata().await.map_err(io)?.len();
        let (off, want) = range.unwrap_or((0, len));
        if want > cap {
            return Err(FetchError::TooLarge(cap));
        }
        if off.saturating_add(want) > len {
            return Err(FetchError::Truncated(format!(
                "the file has {len} bytes, the range ends at {}",
                off.saturating_add(want)
            )));
        }
        f.seek(std::io::SeekFrom::Start(off)).await.map_err(io)?;
        let mut buf = Vec::with_capacity(want as usize);
        f.take(want).read_to_end(&mut buf).await.map_err(io)?;
        if (buf.len() as u64) < want {
            return Err(FetchError::Truncated(format!(
                "read {} of {want} bytes",
                buf.len()
            )));
        }
        Ok((buf, url.clone()))
    }
}

/// Why a session stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Shutdown,
    Deadline,
    EndOfInput,
}

/// How a session ends: stopped, or the source is down (with the reason).
#[derive(Debug)]
enum Flow {
    Stop(Stop),
    Down(String),
}

impl From<Stop> for Flow {
    fn from(s: Stop) -> Flow {
        Flow::Stop(s)
    }
}

/// Runs `fut` while ticking the sink every [`TICK`], unless shutdown or the deadline
/// comes first. `stall_after`: the silence after which [`LiveSink::tick`] may report a
/// stall (HLS delivers media in per-segment bursts).
async fn guarded<T>(
    shutdown: &mut Shutdown,
    deadline: Option<Instant>,
    stall_after: f64,
    sink: &mut LiveSink,
    fut: impl Future<Output = T>,
) -> std::result::Result<T, Stop> {
    tokio::pin!(fut);
    let dl = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(dl);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return Err(Stop::Shutdown),
            _ = &mut dl => return Err(Stop::Deadline),
            r = &mut fut => return Ok(r),
            _ = tick.tick() => {
                if sink.is_closed() {
                    return Err(Stop::Shutdown);
                }
                if sink.since_media().is_some_and(|s| s >= stall_after) {
                    sink.tick().await;
                }
            }
        }
    }
}

/// Segment-level facts of a media playlist: for each segment, the index of the segment
/// carrying its effective EXT-X-MAP and EXT-X-KEY (m3u8-rs attaches them to the next
/// segment only; they apply until the next such tag).
pub fn effective_tags(pl: &MediaPlaylist) -> Vec<(Option<usize>, Option<usize>)> {
    let (mut map, mut key) = (None, None);
    pl.segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.map.is_some() {
                map = Some(i);
            }
            if s.key.is_some() {
                key = Some(i);
            }
            (map, key)
        })
        .collect()
}

/// The (offset, length) of an EXT-X-BYTERANGE (or of an EXT-X-MAP's BYTERANGE): without
/// an offset it starts where the previous range of the same resource ended, `prev_end`
/// (RFC 8216 §4.3.2.2), else at 0.
/// None when the range ends beyond 2^64 − 1: it cannot be asked for (a `Range` header
/// would silently ask for less) nor continued by the next range.
pub fn byte_range(length: u64, offset: Option<u64>, prev_end: Option<u64>) -> Option<(u64, u64)> {
    let off = offset.or(prev_end).unwrap_or(0);
    off.checked_add(length)?;
    Some((off, length))
}

/// Why [`byte_range`] refused a range.
fn range_error(length: u64, offset: Option<u64>) -> String {
    match offset {
        Some(o) => format!("byte range {length}@{o} ends beyond 2^64 bytes"),
        None => format!("byte range {length} (continued) ends beyond 2^64 bytes"),
    }
}

/// The HTTP `Range` header value of a non-empty byte range (RFC 9110 §14.1.2: inclusive).
pub fn range_header(off: u64, len: u64) -> String {
    format!("bytes={off}-{}", off.saturating_add(len.saturating_sub(1)))
}

/// Where a byte range lies in a body of `body_len` bytes (a server that ignored the
/// range sent the whole resource); None when it does not fit.
pub fn range_in(body_len: usize, off: u64, len: u64) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= body_len).then_some(start..end)
}

/// What to fetch of a live playlist after a load (RFC 8216 §6.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveWindow {
    /// The media sequence number expected next (remembered across loads; may lie past
    /// the playlist's end while the origin catches up).
    pub next: u64,
    /// The segments to fetch now, by media sequence number: `from..end`, always within
    /// the playlist (`first <= from`, `end <= first + n`).
    pub from: u64,
    pub end: u64,
    /// Segments that left the window before they were fetched.
    pub skipped: u64,
    /// The media sequence went back (origin restarted): started again near the end.
    pub restarted: bool,
}

/// The live window of a playlist whose first segment is `first` and which lists `n`
/// segments, `next_seq` being the segment expected next (None on the first load: start
/// three segments from the end).
pub fn live_window(first: u64, n: usize, next_seq: Option<u64>) -> LiveWindow {
    let n = n as u64;
    let end = first.saturating_add(n);
    let start = first.saturating_add(n.saturating_sub(3));
    let (next, skipped, restarted) = match next_seq {
        None => (start, 0, false),
        Some(s) if s < first => (first, first - s, false),
        Some(s) if s > end.saturating_add(3) => (start, 0, true),
        Some(s) => (s, 0, false),
    };
    LiveWindow {
        next,
        from: next.max(first),
        end,
        skipped,
        restarted,
    }
}

/// The state of one HLS source across reconnects.
struct Runner<'a> {
    src: &'a HlsSource,
    cfg: LiveConfig,
    fetch: Fetcher,
    shutdown: Shutdown,
    deadline: Option<Instant>,
    backoff: Backoff,
    // Transport.
    ts: TsDemuxer,
    /// Packet buffers shared with the decode thread (as for files): every TS demuxer of
    /// this source takes its PES buffers from here.
    pool: Option<super::pool::BufPool>,
    /// Counters of the demuxers replaced so far (a demuxer is replaced at gaps).
    ts_done: TsStats,
    ts_errors: TsErrorDetector,
    /// Segments of more than 0.5 s without a PAT / PMT. HLS segments carry their PSI once,
    /// at the start (RFC 8216 §3.2), so the broadcast rule "every 0.5 s of media" would
    /// flag every healthy stream: here the unit is the segment.
    pat_missing: u64,
    pmt_missing: u64,
    /// Totals at the last observation and at the onset of the open `ts_error`.
    ts_last: TsStats,
    ts_onset: TsStats,
    /// The next TS segment does not continue the previous one (discontinuity, a skipped
    /// or failed segment, a reconnect): start a fresh demuxer.
    need_reset: bool,
    outs: Vec<DemuxOutput>,
    mp4: Fmp4Demuxer,
    /// The init section in force: URL and byte range.
    init: Option<(Url, Option<(u64, u64)>)>,
    /// An MPEG-TS init section (PAT/PMT for segments without them), fed to every new
    /// demuxer. At most MAX_INIT_BYTES.
    ts_init: Option<Vec<u8>>,
    samples: Vec<SampleRef>,
    last_program: Option<ProgramInfo>,
    // Position.
    vod_next: usize,
    next_seq: Option<u64>,
    seen_live: bool,
    live: bool,
    /// End of the last byte range, per URL, for EXT-X-BYTERANGE without an offset.
    range_end: Option<(Url, u64)>,
    /// Current target duration (sane), seconds.
    target: f64,
    // Delivery defects.
    /// Last media sequence number + 1 of the live playlist, and when it last changed.
    stale_seq: Option<u64>,
    changed_at: Instant,
    seg_errors: i64,
    slow_worst: f64,
    slow_segments: i64,
}

impl<'a> Runner<'a> {
    fn new(
        src: &'a HlsSource,
        cfg: LiveConfig,
        shutdown: Shutdown,
        deadline: Option<Instant>,
        pool: Option<super::pool::BufPool>,
    ) -> Self {
        let mp4_limits = pool
            .as_ref()
            .map(|p| p.budget().mp4_limits())
            .unwrap_or_default();
        Runner {
            src,
            fetch: Fetcher::new(src, &cfg),
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            ts: new_ts(&pool),
            pool,
            ts_done: TsStats::default(),
            ts_errors: TsErrorDetector::new(cfg.clear_after),
            pat_missing: 0,
            pmt_missing: 0,
            ts_last: TsStats::default(),
            ts_onset: TsStats::default(),
            need_reset: false,
            outs: Vec::with_capacity(64),
            mp4: Fmp4Demuxer::new(mp4_limits),
            init: None,
            ts_init: None,
            samples: Vec::new(),
            last_program: None,
            vod_next: 0,
            next_seq: None,
            seen_live: false,
            live: false,
            range_end: None,
            target: 1.0,
            stale_seq: None,
            changed_at: Instant::now(),
            seg_errors: 0,
            slow_worst: 0.0,
            slow_segments: 0,
            cfg,
            shutdown,
            deadline,
        }
    }

    /// The stream's memory budget (the pool's; the default one without a pool).
    fn memory(&self) -> super::pool::StreamBudget {
        self.pool.as_ref().map(|p| p.budget()).unwrap_or_default()
    }

    /// Largest segment read: `max_segment_bytes`, at most half the budget.
    fn segment_cap(&self) -> u64 {
        self.src
            .opts
            .max_segment_bytes
            .min(self.memory().max_segment())
    }

    /// Silence after which a stall may be reported.
    fn stall_after(&self) -> f64 {
        if self.live {
            self.cfg.stall_after + self.target
        } else {
            self.cfg.stall_after
        }
    }

    /// Overall time allowed for one fetch of something that plays `dur` seconds.
    fn budget(&self, dur: f64) -> Duration {
        let read = self.fetch.read.as_secs_f64();
        Duration::from_secs_f64((3.0 * read).max(4.0 * dur).clamp(1.0, 300.0))
    }

    async fn fetch_guarded(
        &mut self,
        sink: &mut LiveSink,
        url: &Url,
        range: Option<(u64, u64)>,
        cap: u64,
        dur: f64,
    ) -> std::result::Result<std::result::Result<Body, FetchError>, Stop> {
        let total = self.budget(dur);
        let stall = self.stall_after();
        guarded(
            &mut self.shutdown,
            self.deadline,
            stall,
            sink,
            self.fetch.fetch(url, range, cap, total),
        )
        .await
    }

    async fn wait_until(
        &mut self,
        sink: &mut LiveSink,
        at: Instant,
    ) -> std::result::Result<(), Stop> {
        let stall = self.stall_after();
        guarded(
            &mut self.shutdown,
            self.deadline,
            stall,
            sink,
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)),
        )
        .await
    }

    /// Master → media playlist. Returns (URL asked, URL after redirects, playlist, when
    /// the load began).
    async fn resolve(
        &mut self,
        sink: &mut LiveSink,
    ) -> std::result::Result<(Url, Url, MediaPlaylist, Instant), Flow> {
        let mut url = self.src.url.clone();
        let mut seen: Vec<Url> = Vec::new();
        for _ in 0..MAX_PLAYLIST_CHAIN {
            if seen.contains(&url) {
                return Err(Flow::Down(format!(
                    "playlist loop: {} is its own variant",
                    display_url(&url)
                )));
            }
            seen.push(url.clone());
            let started = Instant::now();
            let cap = self.src.opts.max_playlist_bytes;
            let target = self.target;
            let body = self
                .fetch_guarded(sink, &url, None, cap, target)
                .await?
                .map_err(|e| {
                    Flow::Down(format!(
                        "playlist {}: {}",
                        display_url(&url),
                        e.message("playlist")
                    ))
                })?;
            if body.url != url && seen.contains(&body.url) {
                return Err(Flow::Down(format!(
                    "playlist loop: {} redirects to a playlist already read",
                    display_url(&url)
                )));
            }
            match parse_playlist(&body.bytes) {
                Err(m) => return Err(Flow::Down(format!("playlist {}: {m}", display_url(&url)))),
                Ok(Playlist::MediaPlaylist(m)) => return Ok((url, body.url, m, started)),
                Ok(Playlist::MasterPlaylist(m)) => {
                    let i = choose_variant(&m.variants, self.src.opts.variant)
                        .map_err(|e| Flow::Down(format!("playlist {}: {e}", display_url(&url))))?;
                    let v = &m.variants[i];
                    let next = resolve_uri(&body.url, &v.uri)
                        .map_err(|e| Flow::Down(format!("playlist {}: {e}", display_url(&url))))?;
                    tracing::info!(
                        bandwidth = v.bandwidth,
                        variant = %display_url(&next),
                        "HLS variant chosen"
                    );
                    url = next;
                }
            }
        }
        Err(Flow::Down(format!(
            "more than {MAX_PLAYLIST_CHAIN} playlists chained (master playlists nested too deep)"
        )))
    }

    /// One session: resolve, then VOD or live until stopped or down.
    async fn session(&mut self, sink: &mut LiveSink) -> Flow {
        match self.session_inner(sink).await {
            Ok(f) | Err(f) => f,
        }
    }

    async fn session_inner(&mut self, sink: &mut LiveSink) -> std::result::Result<Flow, Flow> {
        let (asked, base, pl, started) = self.resolve(sink).await?;
        let vod = pl.end_list || matches!(pl.playlist_type, Some(MediaPlaylistType::Vod));
        if vod && !self.seen_live {
            return self.vod(sink, &base, &pl).await;
        }
        self.live(sink, asked, base, pl, started).await
    }

    async fn vod(
        &mut self,
        sink: &mut LiveSink,
        base: &Url,
        pl: &MediaPlaylist,
    ) -> std::result::Result<Flow, Flow> {
        self.live = false;
        self.target = sane_target(pl.target_duration);
        if pl.segments.is_empty() {
            tracing::warn!(
                url = self.src.display_url(),
                "the VOD playlist lists no segments"
            );
            sink.source_down("the playlist lists no segments", 1).await;
            return Ok(Flow::Stop(Stop::EndOfInput));
        }
        let tags = effective_tags(pl);
        let mut failures = 0;
        while self.vod_next < pl.segments.len() {
            let i = self.vod_next;
            let seq = pl.media_sequence.saturating_add(i as u64);
            let ok = self.segment(sink, base, pl, &tags, i, seq).await?;
            self.vod_next += 1;
            if ok {
                failures = 0;
            } else {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Err(Flow::Down(format!("{failures} segments in a row failed")));
                }
            }
        }
        Ok(Flow::Stop(Stop::EndOfInput))
    }

    async fn live(
        &mut self,
        sink: &mut LiveSink,
        asked: Url,
        mut base: Url,
        mut pl: MediaPlaylist,
        mut loaded_at: Instant,
    ) -> std::result::Result<Flow, Flow> {
        self.live = true;
        self.seen_live = true;
        let mut changed = true;
        let mut failures = 0u32;
        self.observe_stale(sink, &pl).await;
        loop {
            self.target = sane_target(pl.target_duration);
            let first = pl.media_sequence;
            let w = live_window(first, pl.segments.len(), self.next_seq);
            if w.skipped > 0 {
                tracing::warn!(
                    skipped = w.skipped,
                    "HLS segments left the live window before they were fetched"
                );
            }
            if w.restarted {
                tracing::warn!(
                    expected = self.next_seq,
                    got = first,
                    "the live playlist's media sequence went back: origin restarted"
                );
            }
            if w.skipped > 0 || w.restarted {
                self.need_reset = true;
            }
            self.next_seq = Some(w.next);
            let tags = effective_tags(&pl);
            let mut seq = w.from;
            while seq < w.end {
                let i = (seq - first) as usize;
                self.segment(sink, &base, &pl, &tags, i, seq).await?;
                seq += 1;
                self.next_seq = Some(seq);
            }
            if pl.end_list {
                return Err(Flow::Down("the live playlist ended (EXT-X-ENDLIST)".into()));
            }
            let at = loaded_at + reload_delay(self.target, changed);
            self.wait_until(sink, at).await?;
            loaded_at = Instant::now();
            let cap = self.src.opts.max_playlist_bytes;
            let target = self.target;
            let r = self.fetch_guarded(sink, &asked, None, cap, target).await?;
            let parsed = match r {
                Err(e) => Err((e.message("playlist"), e.status())),
                Ok(body) => match parse_playlist(&body.bytes) {
                    Ok(Playlist::MediaPlaylist(m)) => Ok((m, body.url)),
                    Ok(Playlist::MasterPlaylist(_)) => Err((
                        "the media playlist turned into a master playlist".to_string(),
                        None,
                    )),
                    Err(m) => Err((m, None)),
                },
            };
            match parsed {
                Err((reason, status)) => {
                    failures += 1;
                    self.segment_failed(sink, &asked, &reason, status).await;
                    if failures >= MAX_FAILURES {
                        return Err(Flow::Down(format!(
                            "playlist {}: {reason}",
                            display_url(&asked)
                        )));
                    }
                    changed = false;
                }
                Ok((m, url)) => {
                    failures = 0;
                    changed = playlist_key(&m) != playlist_key(&pl);
                    pl = m;
                    base = url;
                    self.observe_stale(sink, &pl).await;
                }
            }
        }
    }

    /// Opens, updates or closes `playlist_stale` after a live playlist load.
    async fn observe_stale(&mut self, sink: &mut LiveSink, pl: &MediaPlaylist) {
        let end_seq = pl.media_sequence.saturating_add(pl.segments.len() as u64);
        if self.stale_seq != Some(end_seq) {
            self.stale_seq = Some(end_seq);
            self.changed_at = Instant::now();
            if sink.is_open(DefectKind::PlaylistStale) {
                sink.close(DefectKind::PlaylistStale, Metrics::new()).await;
            }
            return;
        }
        if pl.end_list {
            return;
        }
        let unchanged = self.changed_at.elapsed().as_secs_f64();
        if !is_stale(unchanged, self.target, self.src.opts.stale_factor) {
            return;
        }
        let mut m = Metrics::new();
        put(
            &mut m,
            "seconds_unchanged",
            Metric::Num(round(unchanged, 3)),
        );
        put(&mut m, "target_duration", Metric::Num(self.target));
        put(
            &mut m,
            "media_sequence",
            Metric::Int(i64::try_from(pl.media_sequence).unwrap_or(i64::MAX)),
        );
        if sink.is_open(DefectKind::PlaylistStale) {
            sink.update(DefectKind::PlaylistStale, |mm| *mm = m);
        } else {
            tracing::warn!(
                url = self.src.display_url(),
                unchanged_s = unchanged,
                "the live playlist stopped advancing"
            );
            let onset = (sink.now_s() - unchanged).max(0.0);
            sink.open_at(DefectKind::PlaylistStale, onset, m).await;
        }
    }

    /// Fetches and delivers segment `i` of `pl`. Ok(true) when its media was delivered.
    async fn segment(
        &mut self,
        sink: &mut LiveSink,
        base: &Url,
        pl: &MediaPlaylist,
        tags: &[(Option<usize>, Option<usize>)],
        i: usize,
        seq: u64,
    ) -> std::result::Result<bool, Flow> {
        let seg = &pl.segments[i];
        let (map_i, key_i) = tags.get(i).copied().unwrap_or((None, None));
        if let Some(k) = key_i.and_then(|k| pl.segments[k].key.as_ref()) {
            if k.method != KeyMethod::None {
                return Err(Flow::Down(format!(
                    "encrypted HLS segments (METHOD={}) are not supported",
                    k.method
                )));
            }
        }
        let dur = sane_duration(seg.duration, seq);
        if seg.discontinuity {
            self.need_reset = true;
        }
        let url = match resolve_uri(base, &seg.uri) {
            Ok(u) => u,
            Err(e) => {
                self.segment_failed(sink, base, &e, None).await;
                self.need_reset = true;
                return Ok(false);
            }
        };
        // The init section in force (EXT-X-MAP), fetched when it changes.
        if let Some(map) = map_i.and_then(|m| pl.segments[m].map.as_ref()) {
            let murl = match resolve_uri(base, &map.uri) {
                Ok(u) => u,
                Err(e) => {
                    self.segment_failed(sink, base, &e, None).await;
                    return Ok(false);
                }
            };
            let range = match map.byte_range.as_ref() {
                None => None,
                Some(b) => match byte_range(b.length, b.offset, None) {
                    Some(r) => Some(r),
                    None => {
                        let msg = format!("init section: {}", range_error(b.length, b.offset));
                        self.segment_failed(sink, &murl, &msg, None).await;
                        return Ok(false);
                    }
                },
            };
            let key = Some((murl.clone(), range));
            if self.init != key {
                let cap = self.segment_cap().min(MAX_INIT_BYTES);
                let r = self
                    .fetch_guarded(sink, &murl, range, cap, self.target)
                    .await?;
                let body = match r {
                    Ok(b) => b,
                    Err(e) => {
                        let msg = format!("init section: {}", e.message("init section"));
                        self.segment_failed(sink, &murl, &msg, e.status()).await;
                        return Ok(false);
                    }
                };
                if body.bytes.first() == Some(&0x47) {
                    // A TS init section (PAT/PMT): fed to every fresh demuxer.
                    self.init = key;
                    self.ts_init = Some(body.bytes);
                    self.need_reset = true;
                } else {
                    match self.mp4.init(&body.bytes) {
                        Ok(p) => {
                            self.init = key;
                            self.ts_init = None;
                            self.program(sink, p).await?;
                        }
                        Err(e) => {
                            let msg = format!("bad init section: {e}");
                            self.segment_failed(sink, &murl, &msg, None).await;
                            return Ok(false);
                        }
                    }
                }
            }
        }
        let range = match seg.byte_range.as_ref() {
            None => None,
            Some(b) => {
                let prev = match &self.range_end {
                    Some((u, end)) if *u == url => Some(*end),
                    _ => None,
                };
                match byte_range(b.length, b.offset, prev) {
                    Some(r) => Some(r),
                    None => {
                        let msg = range_error(b.length, b.offset);
                        self.segment_failed(sink, &url, &msg, None).await;
                        self.need_reset = true;
                        self.range_end = None;
                        return Ok(false);
                    }
                }
            }
        };
        if let Some((off, len)) = range {
            self.range_end = Some((url.clone(), off.saturating_add(len)));
        }
        let cap = self.segment_cap();
        let r = self
            .fetch_guarded(sink, &url, range, cap, dur.unwrap_or(self.target))
            .await?;
        let body = match r {
            Ok(b) => b,
            Err(e) => {
                self.segment_failed(sink, &url, &e.message("segment"), e.status())
                    .await;
                self.need_reset = true;
                return Ok(false);
            }
        };
        self.backoff.reset();
        if let Some(d) = dur {
            self.slow_check(sink, body.took, d, &url).await;
        }
        match self.deliver(sink, &body.bytes, dur).await? {
            Ok(()) => {
                if sink.is_open(DefectKind::SegmentError) {
                    sink.close(DefectKind::SegmentError, Metrics::new()).await;
                }
                self.seg_errors = 0;
                Ok(true)
            }
            Err(msg) => {
                self.segment_failed(sink, &url, &msg, None).await;
                self.need_reset = true;
                Ok(false)
            }
        }
    }

    /// Opens (or updates) `segment_error`.
    async fn segment_failed(
        &mut self,
        sink: &mut LiveSink,
        url: &Url,
        reason: &str,
        status: Option<u16>,
    ) {
        self.seg_errors += 1;
        let shown = display_url(url);
        tracing::warn!(url = %shown, reason, "HLS fetch failed");
        let mut m = Metrics::new();
        put(&mut m, "reason", Metric::Text(reason.into()));
        put(&mut m, "url", Metric::Text(shown.into()));
        if let Some(s) = status {
            put(&mut m, "status", Metric::Int(i64::from(s)));
        }
        put(&mut m, "errors", Metric::Int(self.seg_errors));
        sink.open(DefectKind::SegmentError, m).await;
    }

    /// `slow_download`: opened while segments take longer to fetch than they play.
    async fn slow_check(&mut self, sink: &mut LiveSink, took: Duration, dur: f64, url: &Url) {
        let ratio = took.as_secs_f64() / dur;
        if ratio > 1.0 {
            self.slow_worst = self.slow_worst.max(ratio);
            self.slow_segments += 1;
            let mut m = Metrics::new();
            put(&mut m, "ratio", Metric::Num(round(self.slow_worst, 2)));
            put(&mut m, "fetch_s", Metric::Num(round(took.as_secs_f64(), 3)));
            put(&mut m, "duration_s", Metric::Num(round(dur, 3)));
            put(&mut m, "segments", Metric::Int(self.slow_segments));
            put(&mut m, "url", Metric::Text(display_url(url).into()));
            sink.open(DefectKind::SlowDownload, m).await;
        } else if sink.is_open(DefectKind::SlowDownload) {
            sink.close(DefectKind::SlowDownload, Metrics::new()).await;
            self.slow_worst = 0.0;
            self.slow_segments = 0;
        }
    }

    /// Demuxes one segment into the sink. Ok(Err(reason)) when it is not readable media.
    async fn deliver(
        &mut self,
        sink: &mut LiveSink,
        bytes: &[u8],
        dur: Option<f64>,
    ) -> std::result::Result<std::result::Result<(), String>, Flow> {
        let is_ts = bytes.first() == Some(&0x47);
        let is_mp4 = bytes.len() >= 8
            && matches!(
                &bytes[4..8],
                b"styp" | b"moof" | b"sidx" | b"ftyp" | b"emsg" | b"prft" | b"free" | b"moov"
            );
        if is_mp4 && !is_ts {
            if self.mp4.program().is_none() {
                return Ok(Err(
                    "fMP4 segment without an init section (EXT-X-MAP)".to_string()
                ));
            }
            return self.deliver_mp4(sink, bytes).await;
        }
        self.deliver_ts(sink, bytes, dur).await
    }

    async fn deliver_ts(
        &mut self,
        sink: &mut LiveSink,
        bytes: &[u8],
        dur: Option<f64>,
    ) -> std::result::Result<std::result::Result<(), String>, Flow> {
        if self.need_reset {
            self.reset_ts(sink).await?;
        }
        let before = *self.ts.stats();
        let mut outs = std::mem::take(&mut self.outs);
        let mut r = Ok(());
        for chunk in bytes.chunks(CHUNK) {
            self.ts.push(chunk, &mut |o| outs.push(o));
            for o in outs.drain(..) {
                if r.is_ok() {
                    r = self.emit(sink, o).await;
                }
            }
            if r.is_err() {
                break;
            }
        }
        self.outs = outs;
        r?;
        let after = *self.ts.stats();
        if after.packets == before.packets {
            self.need_reset = true;
            return Ok(Err(format!(
                "not MPEG-TS: no 188-byte packet sync in {} bytes",
                bytes.len()
            )));
        }
        // With a TS init section, segments need not carry PAT/PMT themselves.
        if dur.is_some_and(|d| d > 0.5) && self.ts_init.is_none() {
            if after.pat_count == before.pat_count {
                self.pat_missing += 1;
            }
            if after.pmt_count == before.pmt_count {
                self.pmt_missing += 1;
            }
        }
        let total = self.ts_total();
        let last = std::mem::replace(&mut self.ts_last, total);
        match self.ts_errors.observe(sink.now_s(), &total) {
            Some(t) if t.phase == Phase::Start => {
                tracing::warn!(url = self.src.display_url(), "transport stream errors");
                self.ts_onset = last;
                sink.open_at(DefectKind::TsError, t.start_s, ts_metrics(&total, &last))
                    .await;
            }
            Some(_) => {
                sink.close(DefectKind::TsError, ts_metrics(&total, &self.ts_onset))
                    .await;
            }
            None => {
                let m = ts_metrics(&total, &self.ts_onset);
                sink.update(DefectKind::TsError, |mm| *mm = m);
            }
        }
        Ok(Ok(()))
    }

    /// Flushes the demuxer (its last PES is complete) and starts a fresh one.
    async fn reset_ts(&mut self, sink: &mut LiveSink) -> std::result::Result<(), Flow> {
        self.need_reset = false;
        let mut outs = std::mem::take(&mut self.outs);
        self.ts.finish(&mut |o| outs.push(o));
        let mut r = Ok(());
        for o in outs.drain(..) {
            if r.is_ok() {
                r = self.emit(sink, o).await;
            }
        }
        self.outs = outs;
        self.ts_done = self.ts_total();
        self.ts = new_ts(&self.pool);
        r?;
        if let Some(init) = self.ts_init.take() {
            let mut outs = std::mem::take(&mut self.outs);
            self.ts.push(&init, &mut |o| outs.push(o));
            self.ts_init = Some(init);
            let mut r = Ok(());
            for o in outs.drain(..) {
                if r.is_ok() {
                    r = self.emit(sink, o).await;
                }
            }
            self.outs = outs;
            r?;
        }
        Ok(())
    }

    /// Transport counters across all demuxers of this source (the fields ts_error uses),
    /// with PAT/PMT gaps counted per segment (see `pat_missing`).
    fn ts_total(&self) -> TsStats {
        let (a, b) = (&self.ts_done, self.ts.stats());
        TsStats {
            sync_losses: a.sync_losses + b.sync_losses,
            cc_errors: a.cc_errors + b.cc_errors,
            tei_packets: a.tei_packets + b.tei_packets,
            psi_errors: a.psi_errors + b.psi_errors,
            pat_missing: self.pat_missing,
            pmt_missing: self.pmt_missing,
            pat_count: a.pat_count + b.pat_count,
            pmt_count: a.pmt_count + b.pmt_count,
            packets: a.packets + b.packets,
            bytes: a.bytes + b.bytes,
            ..TsStats::default()
        }
    }

    async fn deliver_mp4(
        &mut self,
        sink: &mut LiveSink,
        bytes: &[u8],
    ) -> std::result::Result<std::result::Result<(), String>, Flow> {
        self.need_reset = false;
        let mut samples = std::mem::take(&mut self.samples);
        let parsed = self.mp4.segment(bytes, &mut samples);
        let mut r = Ok(());
        for s in &samples {
            if s.track == super::Track::Video && s.size > self.memory().max_access_unit() {
                sink.oversized(s.size).await;
                continue;
            }
            if let Some(p) = self.mp4.packet(bytes, s) {
                r = self.send(sink, p).await;
                if r.is_err() {
                    break;
                }
            }
        }
        samples.clear();
        self.samples = samples;
        r?;
        Ok(parsed.map_err(|e| format!("bad fMP4 segment: {e}")))
    }

    async fn emit(&mut self, sink: &mut LiveSink, o: DemuxOutput) -> std::result::Result<(), Flow> {
        match o {
            DemuxOutput::Program(p) => self.program(sink, p).await,
            DemuxOutput::Packet(p) => self.send(sink, p).await,
        }
    }

    /// Sends the program when it differs from the last one sent.
    async fn program(
        &mut self,
        sink: &mut LiveSink,
        p: ProgramInfo,
    ) -> std::result::Result<(), Flow> {
        if self.last_program.as_ref() == Some(&p) {
            return Ok(());
        }
        if !sink.program(p.clone()).await {
            return Err(Flow::Stop(Stop::Shutdown));
        }
        self.last_program = Some(p);
        Ok(())
    }

    /// Hands one packet over, waiting for room (see the module docs).
    async fn send(&mut self, sink: &mut LiveSink, p: Packet) -> std::result::Result<(), Flow> {
        sink.packet_wait(p).await;
        if self.shutdown.is_set() || sink.is_closed() {
            return Err(Flow::Stop(Stop::Shutdown));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Flow::Stop(Stop::Deadline));
        }
        Ok(())
    }

    /// End of input: the last PES still in the demuxer is complete.
    async fn flush(&mut self, sink: &mut LiveSink) {
        let mut outs = std::mem::take(&mut self.outs);
        self.ts.finish(&mut |o| outs.push(o));
        for o in outs.drain(..) {
            if self.emit(sink, o).await.is_err() {
                break;
            }
        }
        self.outs = outs;
    }
}

/// `ts_error` evidence: the counts since `onset` (the names of the file source's).
fn ts_metrics(now: &TsStats, onset: &TsStats) -> Metrics {
    let mut m = Metrics::new();
    for (name, a, b) in [
        ("cc_errors", now.cc_errors, onset.cc_errors),
        ("sync_losses", now.sync_losses, onset.sync_losses),
        ("pat_missing", now.pat_missing, onset.pat_missing),
        ("pmt_missing", now.pmt_missing, onset.pmt_missing),
        ("tei_packets", now.tei_packets, onset.tei_packets),
        ("psi_errors", now.psi_errors, onset.psi_errors),
        ("oversized_pes", now.pes_overflows, onset.pes_overflows),
    ] {
        put(&mut m, name, Metric::Int(a.saturating_sub(b) as i64));
    }
    m
}

/// What identifies a playlist's content for "has it changed" (RFC 8216 §6.3.4).
fn playlist_key(pl: &MediaPlaylist) -> (u64, usize, Option<&str>, bool) {
    (
        pl.media_sequence,
        pl.segments.len(),
        pl.segments.last().map(|s| s.uri.as_str()),
        pl.end_list,
    )
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// Runs the source until shutdown, the deadline, or the end of a VOD playlist,
/// reconnecting with backoff while the playlist cannot be had.
/// A TS demuxer taking its buffers from `pool` when there is one.
fn new_ts(pool: &Option<super::pool::BufPool>) -> TsDemuxer {
    let limits = pool
        .as_ref()
        .map(|p| p.budget().ts_limits())
        .unwrap_or_default();
    let d = TsDemuxer::new(limits);
    match pool {
        Some(p) => d.with_pool(p.clone()),
        None => d,
    }
}

/// Runs the source until shutdown, `deadline` or the end of a VOD playlist (TS
/// segments demuxed into freshly allocated buffers; see [`run_with_pool`]).
pub async fn run(
    src: &HlsSource,
    sink: &mut LiveSink,
    shutdown: Shutdown,
    deadline: Option<Instant>,
) -> EndReason {
    run_with_pool(src, sink, shutdown, deadline, None).await
}

/// [`run`], with TS packet buffers taken from `pool` (give the same pool to the
/// stream's `Analyzer`, which hands them back after decoding), as the file path does.
pub async fn run_with_pool(
    src: &HlsSource,
    sink: &mut LiveSink,
    shutdown: Shutdown,
    deadline: Option<Instant>,
    pool: Option<super::pool::BufPool>,
) -> EndReason {
    // reqwest is built without a default crypto provider: use ring (one stack, and it
    // cross-compiles). Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut r = Runner::new(src, sink.config().clone(), shutdown, deadline, pool);
    loop {
        let reason = match r.session(sink).await {
            Flow::Stop(Stop::Shutdown) => return EndReason::Shutdown,
            Flow::Stop(Stop::EndOfInput) if src.opts.ended_is_down => {
                // A monitored network stream does not end: its origin stopped serving
                // it. Reloading picks up new segments, or a live playlist again.
                r.flush(sink).await;
                "the playlist ended (VOD or EXT-X-ENDLIST)".to_string()
            }
            Flow::Stop(Stop::Deadline | Stop::EndOfInput) => {
                r.flush(sink).await;
                return EndReason::EndOfInput;
            }
            Flow::Down(reason) => reason,
        };
        let attempt = r.backoff.attempt() + 1;
        tracing::warn!(url = src.display_url(), attempt, reason = %reason, "HLS source down");
        sink.source_down(&reason, attempt).await;
        // Whatever comes next does not continue what came before.
        r.need_reset = true;
        let mut delay = r.backoff.next_delay();
        if let Some(d) = deadline {
            delay = delay.min(d.saturating_duration_since(Instant::now()));
        }
        match r.wait_until(sink, Instant::now() + delay).await {
            Ok(()) => {}
            Err(Stop::Shutdown) => return EndReason::Shutdown,
            Err(_) => return EndReason::EndOfInput,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return EndReason::EndOfInput;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::IngestMsg;
    use tokio::sync::mpsc;

    fn variant(uri: &str, bandwidth: u64, iframe: bool) -> VariantStream {
        VariantStream {
            uri: uri.into(),
            bandwidth,
            is_i_frame: iframe,
            ..Default::default()
        }
    }

    #[test]
    fn redirects_are_limited_and_never_downgrade_to_http() {
        let u = |s: &str| Url::parse(s).unwrap();
        let https = [u("https://cdn.example/a.m3u8")];
        assert_eq!(
            redirect_verdict(&https, &u("http://cdn.example/a.m3u8"), 5),
            Err(RedirectRefused::Downgrade)
        );
        // Once on https, never back to http, whatever came first.
        let chain = [u("http://a.example/x"), u("https://b.example/x")];
        assert_eq!(
            redirect_verdict(&chain, &u("http://c.example/x"), 5),
            Err(RedirectRefused::Downgrade)
        );
        assert_eq!(
            redirect_verdict(&https, &u("https://other.example/b"), 5),
            Ok(())
        );
        let http = [u("http://a.example/x")];
        assert_eq!(redirect_verdict(&http, &u("http://b.example/x"), 5), Ok(()));
        assert_eq!(
            redirect_verdict(&http, &u("https://b.example/x"), 5),
            Ok(())
        );
        let long: Vec<Url> = (0..6)
            .map(|i| u(&format!("http://a.example/{i}")))
            .collect();
        assert_eq!(
            redirect_verdict(&long, &u("http://a.example/7"), 5),
            Err(RedirectRefused::TooMany(5))
        );
        assert_eq!(
            redirect_verdict(&long[..5], &u("http://a.example/7"), 5),
            Ok(())
        );
    }

    #[test]
    fn variant_choice() {
        let v = vec![
            variant("lo.m3u8", 300_000, false),
            variant("iframes.m3u8", 9_000_000, true),
            variant("hi.m3u8", 3_000_000, false),
            variant("mid.m3u8", 1_000_000, false),
            variant("hi2.m3u8", 3_000_000, false),
        ];
        assert_eq!(choose_variant(&v, VariantChoice::HighestBandwidth), Ok(2));
        assert_eq!(
            choose_variant(&v, VariantChoice::MaxBandwidth(1_500_000)),
            Ok(3)
        );
        assert_eq!(
            choose_variant(&v, VariantChoice::MaxBandwidth(1)),
            Ok(0),
            "lowest"
        );
        assert_eq!(choose_variant(&v, VariantChoice::Index(0)), Ok(0));
        assert_eq!(
            choose_variant(&v, VariantChoice::Index(1)),
            Ok(2),
            "I-frame skipped"
        );
        assert!(choose_variant(&v, VariantChoice::Index(4)).is_err());
        let e = choose_variant(&[], VariantChoice::HighestBandwidth).unwrap_err();
        assert!(e.contains("no variants"), "{e}");
        let only_iframes = vec![variant("i.m3u8", 1, true)];
        assert!(choose_variant(&only_iframes, VariantChoice::HighestBandwidth).is_err());
    }

    /// Found by the `hls` fuzz target: a byte range ending beyond 2^64 was accepted and
    /// saturated: `Range: bytes=18446744073709551600-18446744073709551615` asked for 16
    /// bytes instead of 100, and the next range without an offset started at u64::MAX.
    #[test]
    fn byte_ranges_beyond_2_64_are_refused() {
        assert_eq!(byte_range(100, Some(400), None), Some((400, 100)));
        assert_eq!(byte_range(100, None, Some(500)), Some((500, 100)));
        assert_eq!(byte_range(100, None, None), Some((0, 100)));
        assert_eq!(
            byte_range(16, Some(u64::MAX - 16), None),
            Some((u64::MAX - 16, 16))
        );
        assert_eq!(byte_range(100, Some(u64::MAX - 99 + 1), None), None);
        assert_eq!(byte_range(100, None, Some(u64::MAX)), None);
        assert_eq!(byte_range(u64::MAX, Some(1), None), None);
        assert_eq!(range_header(400, 100), "bytes=400-499");
        assert_eq!(
            range_header(u64::MAX - 16, 16),
            format!("bytes={}-{}", u64::MAX - 16, u64::MAX - 1)
        );
        assert_eq!(range_in(1000, 400, 100), Some(400..500));
        assert_eq!(range_in(450, 400, 100), None);
        assert_eq!(range_in(1000, u64::MAX, 2), None);
    }

    #[test]
    fn reload_timing_follows_rfc8216_and_is_bounded() {
        assert_eq!(reload_delay(6.0, true), Duration::from_secs(6));
        assert_eq!(reload_delay(6.0, false), Duration::from_secs(3));
        assert_eq!(reload_delay(0.0, true), Duration::from_millis(500));
        assert_eq!(reload_delay(f64::NAN, false), Duration::from_millis(500));
        assert_eq!(reload_delay(1e12, true), Duration::from_secs(30));
        assert_eq!(reload_delay(-5.0, true), Duration::from_millis(500));
        assert_eq!(sane_target(0), 1.0);
        assert_eq!(sane_target(u64::MAX), 60.0);
        assert!(!is_stale(2.9, 2.0, 1.5));
        assert!(is_stale(3.1, 2.0, 1.5));
    }

    #[test]
    fn hostile_playlists_parse_or_fail_without_panicking() {
        let bad_extinf = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:-5,\na.ts\n\
            #EXTINF:99999999999999999999999999999999999999999999,\nb.ts\n#EXTINF:nan,\nc.ts\n";
        if let Ok(Playlist::MediaPlaylist(m)) = parse_playlist(bad_extinf) {
            for (i, s) in m.segments.iter().enumerate() {
                // Unusable durations are ignored, never slept on.
                let _ = sane_duration(s.duration, i as u64);
            }
        }
        assert_eq!(sane_duration(-5.0, 0), None);
        assert_eq!(sane_duration(f32::INFINITY, 0), None);
        assert_eq!(sane_duration(2.0, 0), Some(2.0));
        assert!(parse_playlist(b"<html>nope</html>").is_err());
        assert!(parse_playlist(b"").is_err());
        let no_variants = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n";
        if let Ok(Playlist::MasterPlaylist(m)) = parse_playlist(no_variants) {
            assert!(choose_variant(&m.variants, VariantChoice::HighestBandwidth).is_err());
        }
        let mut x: u32 = 7;
        let base = b"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"i.mp4\",BYTERANGE=\"10@0\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXTINF:2.0,\n#EXT-X-BYTERANGE:100@5\ns.m4s\n#EXT-X-STREAM-INF:BANDWIDTH=5,RESOLUTION=1x1\nv.m3u8\n";
        for _ in 0..2000 {
            let mut b = base.to_vec();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = 7 + x as usize % (b.len() - 7);
                b[i] = (x >> 24) as u8;
            }
            let _ = parse_playlist(&b);
        }
    }

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        let u =
            Url::parse("https://user:pw@cdn.example:8443/live/index.m3u8?token=s3cret#x").unwrap();
        assert_eq!(
            display_url(&u),
            "https://***@cdn.example:8443/live/index.m3u8?***#***"
        );
        let s = HlsSource::parse("http://a:b@h/x.m3u8?sig=zzz", HlsOptions::default()).unwrap();
        assert_eq!(s.display_url(), "http://***@h/x.m3u8?***");
        // A password with unencoded `/` and `@`: split right, sent percent-encoded.
        let s = HlsSource::parse("http://a:p/w@d@h:81/x.m3u8", HlsOptions::default()).unwrap();
        assert_eq!(s.url.host_str(), Some("h"));
        assert_eq!(s.url.password(), Some("p%2Fw%40d"));
        assert_eq!(s.display_url(), "http://***@h:81/x.m3u8");
        assert!(!format!("{s:?}").contains("zzz"));
        let e = HlsSource::parse("ftp://u:secret@h/x.m3u8", HlsOptions::default()).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(HlsSource::parse("/no/such/dir/x.m3u8", HlsOptions::default()).is_err());
        assert!(HlsSource::is_hls_input("HTTPS://h/x"));
        assert!(HlsSource::is_hls_input("/tmp/a/index.m3u8"));
        assert!(!HlsSource::is_hls_input("/tmp/a/clip.ts"));
        assert!(!HlsSource::is_hls_input("rtsp://h/x.m3u8"));
    }

    #[test]
    fn remote_playlists_cannot_name_local_files() {
        let remote = Url::parse("http://h/a/index.m3u8").unwrap();
        assert!(resolve_uri(&remote, "file:///etc/passwd").is_err());
        assert!(resolve_uri(&remote, "data:text/plain,x").is_err());
        assert_eq!(
            resolve_uri(&remote, "../b/seg1.ts").unwrap().as_str(),
            "http://h/b/seg1.ts"
        );
        let local = Url::parse("file:///tmp/x/index.m3u8").unwrap();
        assert_eq!(
            resolve_uri(&local, "seg0.ts").unwrap().as_str(),
            "file:///tmp/x/seg0.ts"
        );
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vqprobe-hls-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Runs `run` on `input` with a deadline; returns the messages.
    async fn run_local(input: &str, secs: f64) -> (EndReason, Vec<IngestMsg>) {
        let (tx, mut rx) = mpsc::channel(64);
        let src = HlsSource::parse(input, HlsOptions::default()).unwrap();
        let collector = tokio::spawn(async move {
            let mut v = vec![];
            while let Some(m) = rx.recv().await {
                v.push(m);
            }
            v
        });
        let cfg = LiveConfig {
            backoff_initial: 0.05,
            backoff_max: 0.2,
            ..LiveConfig::default()
        };
        let mut sink = LiveSink::new(tx, cfg);
        let (_stop, shutdown) = Shutdown::new();
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let reason = run(&src, &mut sink, shutdown, Some(deadline)).await;
        sink.finish(reason).await;
        (reason, collector.await.unwrap())
    }

    fn deliveries(msgs: &[IngestMsg]) -> Vec<(String, Phase, Metrics)> {
        msgs.iter()
            .filter_map(|m| match m {
                IngestMsg::Delivery(t, _) => {
                    Some((t.kind.as_str().to_string(), t.phase, t.metrics.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn text(m: &Metrics, name: &str) -> String {
        match m.iter().find(|(k, _)| *k == name).map(|(_, v)| v) {
            Some(Metric::Text(t)) => t.to_string(),
            other => panic!("{name}: {other:?} in {m:?}"),
        }
    }

    #[tokio::test]
    async fn local_fmp4_vod_plays_to_the_end() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fmp4/index.m3u8");
        let (reason, msgs) = run_local(dir.to_str().unwrap(), 20.0).await;
        assert_eq!(reason, EndReason::EndOfInput);
        let programs = msgs
            .iter()
            .filter(|m| matches!(m, IngestMsg::Program(_)))
            .count();
        assert_eq!(programs, 1);
        let video = msgs
            .iter()
            .filter(|m| matches!(m, IngestMsg::Packet(p) if p.track == super::super::Track::Video))
            .count();
        assert_eq!(video, 50, "2 s at 25 fps");
        assert!(deliveries(&msgs).is_empty(), "{:?}", deliveries(&msgs));
        assert!(matches!(
            msgs.last(),
            Some(IngestMsg::End(EndReason::EndOfInput))
        ));
    }

    #[tokio::test]
    async fn self_referencing_master_and_huge_playlists_are_source_down() {
        let d = tmpdir("loop");
        std::fs::write(
            d.join("master.m3u8"),
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nmaster.m3u8\n",
        )
        .unwrap();
        let (reason, msgs) = run_local(d.join("master.m3u8").to_str().unwrap(), 0.5).await;
        assert_eq!(reason, EndReason::EndOfInput);
        let dl = deliveries(&msgs);
        assert_eq!(dl[0].0, "source_down");
        assert!(text(&dl[0].2, "reason").contains("loop"), "{dl:?}");

        // Master → master → master → media: deeper than the limit.
        for (i, next) in ["m1.m3u8", "m2.m3u8", "m3.m3u8"].iter().enumerate() {
            std::fs::write(
                d.join(format!("m{i}.m3u8")),
                format!("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n{next}\n"),
            )
            .unwrap();
        }
        let (_, msgs) = run_local(d.join("m0.m3u8").to_str().unwrap(), 0.5).await;
        assert!(text(&deliveries(&msgs)[0].2, "reason").contains("nested"));

        let mut big = b"#EXTM3U\n".to_vec();
        big.resize(3 << 20, b'#');
        std::fs::write(d.join("big.m3u8"), big).unwrap();
        let (_, msgs) = run_local(d.join("big.m3u8").to_str().unwrap(), 0.5).await;
        let dl = deliveries(&msgs);
        assert!(
            text(&dl[0].2, "reason").contains("playlist larger than 1048576 bytes"),
            "{dl:?}"
        );

        std::fs::write(
            d.join("nov.m3u8"),
            "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=1\n",
        )
        .unwrap();
        let (_, msgs) = run_local(d.join("nov.m3u8").to_str().unwrap(), 0.3).await;
        assert_eq!(deliveries(&msgs)[0].0, "source_down");

        std::fs::write(
            d.join("empty.m3u8"),
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        let (reason, msgs) = run_local(d.join("empty.m3u8").to_str().unwrap(), 5.0).await;
        assert_eq!(reason, EndReason::EndOfInput);
        assert!(text(&deliveries(&msgs)[0].2, "reason").contains("no segments"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn missing_segment_is_one_segment_error_closed_by_the_next() {
        let d = tmpdir("missing");
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fmp4");
        for f in ["init.mp4", "seg0.m4s", "seg1.m4s"] {
            std::fs::copy(src.join(f), d.join(f)).unwrap();
        }
        std::fs::write(
            d.join("index.m3u8"),
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:1.0,\nseg0.m4s\n#EXTINF:-1,\ngone.m4s\n\
             #EXTINF:1.0,\nseg1.m4s\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        let (reason, msgs) = run_local(d.join("index.m3u8").to_str().unwrap(), 20.0).await;
        assert_eq!(reason, EndReason::EndOfInput);
        let dl = deliveries(&msgs);
        let kinds: Vec<(&str, Phase)> = dl.iter().map(|(k, p, _)| (k.as_str(), *p)).collect();
        assert_eq!(
            kinds,
            [
                ("segment_error", Phase::Start),
                ("segment_error", Phase::End)
            ]
        );
        assert!(text(&dl[0].2, "url").ends_with("gone.m4s"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
