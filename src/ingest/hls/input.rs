//! What an HLS input is: [`HlsOptions`] (the `[hls]` settings), [`HlsSource`] (a parsed
//! `http(s)://` URL, `file://` URL or local playlist path, with its CA certificates read
//! and checked up front) and how its URL may be shown ([`display_url`]: never
//! credentials or query strings).
//!
//! Parsing and validation only: no fetching, no scheduling, no sink.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

use super::playlist::VariantChoice;
use crate::error::{Error, Result};
use crate::redact::redact_url;

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
            max_segment_bytes: crate::ingest::pool::StreamBudget::default().max_segment(),
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
    pub(super) url: Url,
    display: String,
    pub(super) opts: HlsOptions,
    /// The CA file's PEM, read (and checked) when the source was parsed.
    pub(super) ca_pem: Option<Vec<u8>>,
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

/// The URL as it may be printed (the one rule, in [`crate::redact`]).
pub use crate::redact::display_url;

#[cfg(test)]
mod tests {
    use super::*;

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
}
