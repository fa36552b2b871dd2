//! `vqprobe check INPUT`: analyse one input, print one line per event, exit.

use std::io::Write;

use super::session::{self, SessionSpec};
use crate::config::DetectConfig;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ingest::file;
use crate::ingest::hls::{HlsOptions, HlsSource};
use crate::ingest::live::{LiveConfig, LiveStats};
use crate::ingest::rtsp::{RtspSource, RtspTransport};
use crate::pipeline::AnalyzerStats;
use crate::publish::{LinePrinter, OutputFormat};
use crate::redact::redact_url;
use crate::shutdown::Shutdown;

/// Packets queued between ingest and the decode thread.
pub const PACKET_QUEUE: usize = 64;
/// Events queued between the decode thread and the printer.
pub const EVENT_QUEUE: usize = 256;

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
}

/// What a `check` run found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub events: Vec<Event>,
    pub stats: AnalyzerStats,
    /// Live sources only.
    pub live: Option<LiveStats>,
}

/// The kinds of input `check` understands.
#[derive(Debug)]
pub enum Input {
    File(std::path::PathBuf),
    Rtsp(RtspSource),
    Hls(HlsSource),
}

impl Input {
    /// Classifies an input string (a path, `file://`, `rtsp://`, `http(s)://`, `.m3u8`).
    pub fn parse(input: &str, transport: RtspTransport, hls: &HlsOptions) -> Result<Input> {
        if input.starts_with("rtsp://") {
            return Ok(Input::Rtsp(RtspSource::parse(input, None, transport)?));
        }
        // Before the file fallback: a local `.m3u8` is a playlist, not a TS file.
        if HlsSource::is_hls_input(input) {
            return Ok(Input::Hls(HlsSource::parse(input, hls.clone())?));
        }
        if input.contains("://") && !input.starts_with("file://") {
            return Err(Error::bad_input(
                redact_url(input),
                "unsupported input: use an MPEG-TS file, rtsp://, http(s)://…m3u8 or a local .m3u8",
            ));
        }
        Ok(Input::File(file::path_of(input)))
    }
}

/// Runs `check`, writing event lines to `out` as they are detected. Ctrl-C stops a live
/// source: open defects end with `reason: "shutdown"`.
pub async fn run(opts: &CheckOptions, out: &mut dyn Write) -> Result<CheckReport> {
    let spec = SessionSpec {
        input: opts.input.clone(),
        probe_id: opts.probe_id.clone(),
        stream_id: opts.stream_id.clone(),
        detect: opts.detect.clone(),
        live: opts.live.clone(),
        rtsp_transport: opts.rtsp_transport,
        hls: opts.hls.clone(),
        duration: opts.duration,
        realtime: false,
        looped: false,
        queue_packets: PACKET_QUEUE,
        ended_is_down: false,
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
    let result = session::run(&spec, shutdown, None, &mut |ev: Event| {
        let _ = writeln!(out, "{}", printer.line(&ev));
        let _ = out.flush();
        events.push(ev);
    })
    .await;
    ctrl_c.abort();
    let report = result?;
    Ok(CheckReport {
        events,
        stats: report.stats,
        live: report.live,
    })
}
