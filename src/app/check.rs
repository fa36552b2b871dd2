//! `vqprobe check INPUT`: analyse one input, write one line per event, exit. Owns the
//! command's options (resolved from the command line's values by [`CheckArgs`]) and the
//! event printer; the session does the work. Writes only to the `Write` it is handed.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::session::{self, SessionSpec};
use crate::config::{DetectConfig, LevelChoice};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ingest::hls::{HlsOptions, VariantChoice};
use crate::ingest::live::LiveConfig;
use crate::ingest::rtsp::RtspTransport;
use crate::ingest::sink::LiveStats;
use crate::ingest::source::SourceOptions;
use crate::pipeline::AnalyzerStats;
use crate::publish::{report, LinePrinter, OutputFormat};
use crate::shutdown::Shutdown;

/// What `check` was asked to do.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub input: String,
    pub format: OutputFormat,
    /// Files: analyse at most this many media seconds. Live sources: run this many
    /// seconds by the wall clock (default: until Ctrl-C).
    pub duration: Option<f64>,
    pub detect: DetectConfig,
    pub live: LiveConfig,
    pub rtsp_transport: RtspTransport,
    pub hls: HlsOptions,
    pub probe_id: String,
    pub stream_id: String,
    /// `--thumbs`: where thumbnails are written (the folder exists).
    pub thumbs: Option<PathBuf>,
    /// `--report`: the HTML report written at the end.
    pub report: Option<PathBuf>,
}

/// The command line's values of `check`, before they are checked and defaulted.
#[derive(Debug, Clone)]
pub struct CheckArgs {
    pub input: String,
    pub format: OutputFormat,
    pub duration: Option<f64>,
    pub stall_after: f64,
    pub connect_timeout: f64,
    pub ca_file: Option<PathBuf>,
    pub max_bandwidth: Option<u64>,
    pub rtsp_transport: RtspTransport,
    pub detect_config: Option<PathBuf>,
    pub stream_id: Option<String>,
    pub probe_id: Option<String>,
    /// `--decode-level`: overrides the detector settings' `[decode] level`.
    pub decode_level: Option<LevelChoice>,
    /// `--thumbs DIR`.
    pub thumbs: Option<PathBuf>,
    /// `--report FILE`.
    pub report: Option<PathBuf>,
}

impl CheckArgs {
    /// Checks the values and fills in the defaults (detector settings from
    /// `detect_config`, the stream id from the input, the probe id from the host name).
    /// Errors name the option.
    pub fn resolve(self) -> Result<CheckOptions> {
        // At most ten years: any `Instant` computed from it stays in range.
        if self
            .duration
            .is_some_and(|d| !(d.is_finite() && d > 0.0 && d <= 315_360_000.0))
        {
            return Err(Error::Config(
                "--duration must be a positive number of seconds (at most ten years)".into(),
            ));
        }
        let mut detect = match &self.detect_config {
            Some(p) => load_detect(p)?,
            None => DetectConfig::default(),
        };
        if let Some(level) = self.decode_level {
            detect.decode.level = level;
        } else if self.report.is_some() {
            // A report plots every picture unless asked to show what another level sees.
            detect.decode.level = LevelChoice::Full;
        }
        if let Some(path) = &self.report {
            check_report_path(path)?;
            detect.series = true;
            detect.thumbnails = true;
        }
        if let Some(dir) = &self.thumbs {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            detect.thumbnails = true;
        }
        let stream_id = self
            .stream_id
            .unwrap_or_else(|| default_stream_id(&self.input));
        let live = LiveConfig {
            stall_after: self.stall_after,
            connect_timeout: self.connect_timeout,
            ..Default::default()
        };
        live.validate().map_err(|m| {
            Error::Config(
                m.replace("live.stall_after", "--stall-after")
                    .replace("live.connect_timeout", "--connect-timeout"),
            )
        })?;
        Ok(CheckOptions {
            input: self.input,
            format: self.format,
            duration: self.duration,
            detect,
            live,
            rtsp_transport: self.rtsp_transport,
            hls: HlsOptions {
                ca_file: self.ca_file,
                variant: match self.max_bandwidth {
                    Some(b) => VariantChoice::MaxBandwidth(b),
                    None => VariantChoice::HighestBandwidth,
                },
                ..Default::default()
            },
            probe_id: self.probe_id.unwrap_or_else(super::hostname),
            stream_id,
            thumbs: self.thumbs,
            report: self.report,
        })
    }
}

/// The report's folder exists and the path is not a folder (checked before the
/// analysis, not after it).
fn check_report_path(path: &Path) -> Result<()> {
    let bad = |why: &str| Error::Config(format!("--report {}: {why}", path.display()));
    if path.is_dir() {
        return Err(bad("is a folder; name the HTML file to write"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(bad("its folder does not exist"));
    }
    Ok(())
}

/// Default stream id of an input: the last segment of its path, never from its user
/// info, query or fragment (tokens must not end up in events); "input" when there is
/// none or it looks like part of a credential.
pub fn default_stream_id(input: &str) -> String {
    let path = match crate::redact::split_url(input) {
        Some(u) => u.path,
        None => input,
    };
    let name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("input");
    if name.contains('@') || name.contains(':') {
        "input".to_string()
    } else {
        name.to_string()
    }
}

/// Detector settings from a TOML file (the `[detect]` reference in docs/config.md).
pub fn load_detect(path: &Path) -> Result<DetectConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let cfg: DetectConfig = toml::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}(see docs/config.md)", path.display())))?;
    cfg.validate()
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    Ok(cfg)
}

/// Events a `check` run keeps for its result at most (a live source may run for
/// ever; every event is still printed).
pub const MAX_KEPT_EVENTS: usize = 100_000;

/// What a `check` run found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The first [`MAX_KEPT_EVENTS`] events.
    pub events: Vec<Event>,
    /// Events printed but not kept.
    pub events_not_kept: u64,
    pub stats: AnalyzerStats,
    /// Live sources only.
    pub live: Option<LiveStats>,
}

/// Runs `check`, writing event lines to `out` as they are detected. Ctrl-C stops a live
/// source: open defects end with `reason: "shutdown"`.
pub async fn run(opts: &CheckOptions, out: &mut dyn Write) -> Result<CheckReport> {
    let spec = SessionSpec {
        input: opts.input.clone(),
        source: SourceOptions {
            rtsp_transport: opts.rtsp_transport,
            hls: opts.hls.clone(),
            duration: opts.duration,
            pace: None,
            looped: false,
        },
        probe_id: opts.probe_id.clone(),
        stream_id: opts.stream_id.clone(),
        detect: opts.detect.clone(),
        live: opts.live.clone(),
        queue_packets: session::PACKET_QUEUE,
        budget: crate::ingest::pool::StreamBudget::default(),
    };
    let (stop, shutdown) = Shutdown::new();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("interrupted: closing open defects");
            let _ = stop.send(true);
            // Keep the trigger alive until the session is done.
            std::future::pending::<()>().await;
        }
    });
    let printer = LinePrinter {
        format: opts.format,
    };
    let mut events = Vec::new();
    let mut events_not_kept = 0u64;
    let (mut thumbs_kept, mut thumbs_not_kept) = (0usize, 0u64);
    let result = session::run(&spec, shutdown, None, &mut |mut ev: Event| {
        let jpeg = ev.jpeg.take();
        if let (Some(dir), Some(jpeg)) = (&opts.thumbs, &jpeg) {
            ev.thumb = write_thumb(dir, &ev.defect_id, jpeg);
        }
        let _ = writeln!(out, "{}", printer.line(&ev));
        let _ = out.flush();
        if events.len() >= MAX_KEPT_EVENTS {
            events_not_kept += 1;
            return;
        }
        // The report embeds the first thumbnails; the rest are counted.
        if opts.report.is_some() && jpeg.is_some() {
            if thumbs_kept < report::MAX_THUMBS {
                thumbs_kept += 1;
                ev.jpeg = jpeg;
            } else {
                thumbs_not_kept += 1;
            }
        }
        events.push(ev);
    })
    .await;
    ctrl_c.abort();
    let session = result?;
    if let Some(path) = &opts.report {
        let series = session.series.clone().unwrap_or_default();
        let input = crate::redact::redact_url(&opts.input);
        let html = report::render(&report::ReportInput {
            input: &input,
            probe_id: &opts.probe_id,
            stream_id: &opts.stream_id,
            stats: &session.stats,
            series: &series,
            events: &events,
            events_not_kept,
            thumbs_not_kept,
            detect: &opts.detect,
            note: None,
        });
        report::write(path, &html)?;
        for ev in &mut events {
            ev.jpeg = None;
        }
    }
    Ok(CheckReport {
        events,
        events_not_kept,
        stats: session.stats,
        live: session.live,
    })
}

/// Writes `DIR/{defect_id}.jpg` (through a temporary name, so a reader never sees a
/// partial file); its path, or None after a warning when it cannot be written.
fn write_thumb(dir: &Path, defect_id: &str, jpeg: &[u8]) -> Option<String> {
    let path = dir.join(format!("{defect_id}.jpg"));
    let tmp = dir.join(format!(".{defect_id}.jpg.tmp"));
    let written = std::fs::write(&tmp, jpeg).and_then(|()| std::fs::rename(&tmp, &path));
    match written {
        Ok(()) => Some(path.display().to_string()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "thumbnail not written");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_stream_id_never_takes_credentials_or_tokens() {
        assert_eq!(default_stream_id("/srv/clips/a.ts"), "a.ts");
        assert_eq!(default_stream_id("rtsp://u:p@cam/live/main?tok=1"), "main");
        assert_eq!(
            default_stream_id("https://cdn/x/index.m3u8#t"),
            "index.m3u8"
        );
        assert_eq!(default_stream_id("rtsp://u:p@cam"), "input");
    }
}
