//! HTTP (and local file) fetching of playlists and segments: one lazily built reqwest
//! client (rustls, extra CA certificates), a size cap on every body read chunk by chunk,
//! connect/read/overall timeouts, limited redirects that never go from `https://` to
//! `http://`, byte ranges (also from servers that ignore `Range`), and the
//! classification of failures ([`FetchError`]) into messages without URLs or credentials.
//!
//! Knows nothing of playlists, segments' contents, the sink or defects: it returns bytes
//! or an error, and the scheduler (`super`) decides what that means.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use url::Url;

use crate::ingest::live::LiveConfig;

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FetchError {
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
    pub(super) fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status(s) => Some(*s),
            _ => None,
        }
    }

    pub(super) fn message(&self, what: &str) -> String {
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
pub(super) struct Body {
    pub(super) bytes: Vec<u8>,
    /// The URL after redirects (relative URIs resolve against it).
    pub(super) url: Url,
    /// From the request to the last byte.
    pub(super) took: Duration,
}

/// Fetches URLs with caps and timeouts. The HTTP client is built on first use.
pub(super) struct Fetcher {
    client: OnceLock<std::result::Result<reqwest::Client, String>>,
    ca_pem: Option<Vec<u8>>,
    connect: Duration,
    read: Duration,
    max_redirects: usize,
}

impl Fetcher {
    /// A fetcher trusting the system's CAs and `ca_pem` (checked when the source was
    /// parsed), with the live timeouts of `cfg`.
    pub(super) fn new(ca_pem: Option<Vec<u8>>, max_redirects: usize, cfg: &LiveConfig) -> Self {
        Fetcher {
            client: OnceLock::new(),
            ca_pem,
            connect: Duration::from_secs_f64(cfg.connect_timeout.clamp(0.1, 3600.0)),
            read: Duration::from_secs_f64(cfg.read_timeout.clamp(0.1, 3600.0)),
            max_redirects,
        }
    }

    /// The read timeout (no byte for this long: the fetch failed).
    pub(super) fn read_timeout(&self) -> Duration {
        self.read
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
    pub(super) async fn fetch(
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The `Range` header and the cut of a body from a server that ignored the range
    /// (the ranges themselves: `playlist` tests).
    #[test]
    fn range_headers_and_cuts_stay_within_2_64_and_the_body() {
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
    fn error_messages_carry_no_credentials() {
        let e = FetchError::Other("failed for http://u:pw@h/x?token=abc".into());
        let m = e.message("segment");
        assert!(!m.contains("pw") && !m.contains("abc"), "{m}");
        assert_eq!(FetchError::Status(404).status(), Some(404));
        assert_eq!(
            FetchError::TooLarge(10).message("playlist"),
            "playlist larger than 10 bytes"
        );
    }
}
