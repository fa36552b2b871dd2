//! The one source contract: [`Source`] is every input vqprobe reads (a local MPEG-TS file,
//! an RTSP camera, an HLS playlist), [`Source::parse`] is the one place that classifies
//! an input string (`check`, the agent's config validation and every session go through
//! it), and [`Source::run`] reads the source into the stream's [`Sink`] until it ends,
//! the duration passes or shutdown. Owns classification and the choice of overflow
//! policy per kind of source; it may not touch the decode side (the session owns the
//! queue and the decode thread) and never decodes.
//!
//! Adding a source: a module under `ingest/` with a `run(.., &mut Sink, Shutdown, ..)`,
//! a variant here, its branch in [`Source::parse`], [`Source::run`] and
//! [`Source::overflow`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::file::{self, FileOptions};
use super::hls::{HlsOptions, HlsSource};
use super::rtsp::{RtspSource, RtspTransport};
use super::sink::{Overflow, Sink};
use crate::defect::EndReason;
use crate::error::{Error, Result};
use crate::redact::redact_url;
use crate::shutdown::Shutdown;

/// Pace of a file source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// At the pace of the timestamps, like a live source.
    #[default]
    Realtime,
    /// As fast as decode allows (tests, batch analysis).
    Fast,
}

/// The error for `pace` / `loop` on anything but a file: a playlist (even a local one)
/// or a live source is read at its own pace and cannot loop.
pub const PACE_LOOP_FILES_ONLY: &str =
    "pace and loop apply to MPEG-TS files (a path or file://…ts) only, not to playlists or live sources";

/// How to read an input, whatever it turns out to be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SourceOptions {
    /// RTP transport of `rtsp://` inputs.
    pub rtsp_transport: RtspTransport,
    /// HLS settings (including [`HlsOptions::ended_is_down`]).
    pub hls: HlsOptions,
    /// Files: analyse at most this many media seconds. Live sources (RTSP, HLS): run
    /// this many seconds by the wall clock. None: to the end / until shutdown.
    pub duration: Option<f64>,
    /// Files only: `Some(Realtime)` hands packets over at the pace of their timestamps;
    /// None or `Some(Fast)`: as fast as decode allows. Refused for other sources.
    pub pace: Option<Pace>,
    /// Files only: start again at the end, in the same session. Refused for other
    /// sources.
    pub looped: bool,
}

/// A local MPEG-TS file and how to read it.
#[derive(Debug, Clone)]
pub struct FileSource {
    pub path: PathBuf,
    pub opts: FileOptions,
}

/// A parsed input, ready to run.
#[derive(Debug)]
pub enum Source {
    File(FileSource),
    Rtsp {
        src: RtspSource,
        /// Wall-clock time to run (None: until shutdown).
        run_for: Option<Duration>,
    },
    Hls {
        src: HlsSource,
        /// Wall-clock time to run (None: until shutdown or the end of a VOD playlist).
        run_for: Option<Duration>,
    },
}

/// What an input string is, before it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Rtsp,
    Hls,
}

fn kind_of(input: &str) -> Result<Kind> {
    if input.starts_with("rtsp://") {
        return Ok(Kind::Rtsp);
    }
    // Before the file fallback: a local `.m3u8` is a playlist, not a TS file.
    if HlsSource::is_hls_input(input) {
        return Ok(Kind::Hls);
    }
    if input.contains("://") && !input.starts_with("file://") {
        return Err(Error::bad_input(
            redact_url(input),
            "unsupported input: use an MPEG-TS file, rtsp://, http(s)://…m3u8 or a local .m3u8",
        ));
    }
    Ok(Kind::File)
}

impl Source {
    /// Classifies and parses an input string: a path or `file://` URL (MPEG-TS), an
    /// `rtsp://` URL, an `http(s)://` playlist or a local `.m3u8`. Errors: an
    /// unsupported scheme, a bad URL, a duration out of range, `pace` or `loop` for
    /// anything but a file ([`PACE_LOOP_FILES_ONLY`]), a bad HLS CA file.
    pub fn parse(input: &str, opts: &SourceOptions) -> Result<Source> {
        let run_for = match opts.duration {
            None => None,
            Some(d) => Some(
                Duration::try_from_secs_f64(d)
                    .ok()
                    .filter(|d| Instant::now().checked_add(*d).is_some())
                    .ok_or_else(|| Error::Config(format!("duration {d} s is out of range")))?,
            ),
        };
        let kind = kind_of(input)?;
        if kind != Kind::File && (opts.pace.is_some() || opts.looped) {
            return Err(Error::Config(PACE_LOOP_FILES_ONLY.into()));
        }
        Ok(match kind {
            Kind::Rtsp => Source::Rtsp {
                src: RtspSource::parse(input, None, opts.rtsp_transport)?,
                run_for,
            },
            Kind::Hls => Source::Hls {
                src: HlsSource::parse(input, opts.hls.clone())?,
                run_for,
            },
            Kind::File => Source::File(FileSource {
                path: file::path_of(input),
                opts: FileOptions {
                    max_media_s: opts.duration,
                    realtime: opts.pace == Some(Pace::Realtime),
                    looped: opts.looped,
                },
            }),
        })
    }

    /// True for a local MPEG-TS file.
    pub fn is_file(&self) -> bool {
        matches!(self, Source::File(_))
    }

    /// A network source (RTSP, HLS): its sink's delivery counters are worth reporting.
    pub fn is_live(&self) -> bool {
        !self.is_file()
    }

    /// The overflow policy of this kind of source: files and HLS (pulled, one segment
    /// at a time) wait for decode; RTSP (pushed by the camera) drops until a key frame.
    pub fn overflow(&self) -> Overflow {
        match self {
            Source::File(_) | Source::Hls { .. } => Overflow::Block,
            Source::Rtsp { .. } => Overflow::DropUntilKey,
        }
    }

    /// The input as it may be printed: a file as its path; a URL through
    /// [`redact_url`] (no credentials, no query).
    pub fn display(&self) -> String {
        match self {
            Source::File(f) => f.path.display().to_string(),
            Source::Rtsp { src, .. } => src.display_url().to_string(),
            Source::Hls { src, .. } => src.display_url().to_string(),
        }
    }

    /// Reads the source into `sink` until it ends, its duration passes or `shutdown`.
    /// Returns why it stopped; the caller ends the sink with it ([`Sink::finish`]).
    /// Network sources never fail (an outage is `source_down`, then reconnect); a file
    /// fails when it cannot be read or is not MPEG-TS.
    pub async fn run(self, sink: &mut Sink, shutdown: Shutdown) -> Result<EndReason> {
        let deadline = |d: Option<Duration>| d.and_then(|d| Instant::now().checked_add(d));
        match self {
            Source::File(f) => file::run(&f.path, sink, &f.opts, &shutdown).await,
            Source::Rtsp { src, run_for } => {
                Ok(super::rtsp::run(&src, sink, shutdown, deadline(run_for)).await)
            }
            Source::Hls { src, run_for } => {
                let pool = sink.pool().cloned();
                Ok(super::hls::run_with_pool(&src, sink, shutdown, deadline(run_for), pool).await)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_classification_for_every_input() {
        let o = SourceOptions::default();
        assert!(Source::parse("/srv/a.ts", &o).unwrap().is_file());
        assert!(Source::parse("file:///srv/a.ts?x=1", &o).unwrap().is_file());
        assert!(matches!(
            Source::parse("rtsp://cam/x", &o).unwrap(),
            Source::Rtsp { .. }
        ));
        assert!(matches!(
            Source::parse("https://cdn/x.m3u8?sig=1", &o).unwrap(),
            Source::Hls { .. }
        ));
        let e = Source::parse("ftp://u:pw@h/x", &o).unwrap_err().to_string();
        assert!(e.contains("unsupported input") && !e.contains("pw"), "{e}");
        let e = Source::parse(
            "/srv/a.ts",
            &SourceOptions {
                duration: Some(f64::INFINITY),
                ..o.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("out of range"), "{e}");
    }

    /// A local playlist is HLS, never a file: `pace` and `loop` are refused for it (as
    /// for every non-file input) before the playlist is even looked at.
    #[test]
    fn pace_and_loop_are_refused_for_playlists_and_live_sources() {
        for input in [
            "/srv/missing/index.m3u8",
            "file:///srv/x.m3u8",
            "rtsp://cam/x",
            "http://h/x.m3u8",
        ] {
            for (pace, looped) in [
                (Some(Pace::Realtime), false),
                (Some(Pace::Fast), false),
                (None, true),
            ] {
                let o = SourceOptions {
                    pace,
                    looped,
                    ..SourceOptions::default()
                };
                let e = Source::parse(input, &o).unwrap_err().to_string();
                assert!(e.contains(PACE_LOOP_FILES_ONLY), "{input}: {e}");
            }
        }
        let o = SourceOptions {
            pace: Some(Pace::Realtime),
            looped: true,
            ..SourceOptions::default()
        };
        match Source::parse("file:///srv/a.ts", &o).unwrap() {
            Source::File(f) => assert!(f.opts.realtime && f.opts.looped),
            other => panic!("{other:?}"),
        }
    }
}
