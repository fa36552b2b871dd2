//! `vqprobe check INPUT`: analyse one input, print one line per event, exit.

use std::io::Write;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::DetectConfig;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ingest::hls::{HlsOptions, HlsSource};
use crate::ingest::live::{LiveConfig, LiveSink, LiveStats, Shutdown};
use crate::ingest::pool::BufPool;
use crate::ingest::rtsp::{RtspSource, RtspTransport};
use crate::ingest::ts::TsLimits;
use crate::ingest::{file, IngestMsg};
use crate::pipeline::{spawn_decode_thread, Analyzer, AnalyzerStats};
use crate::publish::{LinePrinter, OutputFormat};
use crate::redact::redact_url;

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

/// Runs `check`, writing event lines to `out` as they are detected.
pub async fn run(opts: &CheckOptions, out: &mut dyn Write) -> Result<CheckReport> {
    let input = Input::parse(&opts.input, opts.rtsp_transport, &opts.hls)?;
    let mut analyzer = Analyzer::new(&opts.probe_id, &opts.stream_id, opts.detect.clone())?;
    // Packet buffers circulate between ingest and the decode thread: a few more than
    // the queue holds, each up to the largest PES kept.
    let pool = BufPool::new(PACKET_QUEUE + 8, TsLimits::default().max_video_pes);
    analyzer.set_pool(pool.clone());
    let (tx, rx) = mpsc::channel::<IngestMsg>(PACKET_QUEUE);
    let (etx, mut erx) = mpsc::channel::<Event>(EVENT_QUEUE);
    let decode = spawn_decode_thread(format!("decode-{}", opts.stream_id), analyzer, rx, etx)
        .map_err(|e| Error::Other(format!("cannot start decode thread: {e}")))?;
    let (stop, shutdown) = Shutdown::new();
    let duration = opts.duration;
    let live_cfg = opts.live.clone();
    let mut ingest = tokio::spawn(async move {
        match input {
            Input::File(path) => {
                let fopts = file::FileOptions {
                    max_media_s: duration,
                    pool: Some(pool),
                };
                file::run(&path, tx, &fopts, &shutdown).await.map(|_| None)
            }
            Input::Rtsp(src) => {
                let deadline = duration.map(|d| Instant::now() + Duration::from_secs_f64(d));
                let mut sink = LiveSink::new(tx, live_cfg);
                let reason = crate::ingest::rtsp::run(&src, &mut sink, shutdown, deadline).await;
                Ok(Some(sink.finish(reason).await))
            }
            Input::Hls(src) => {
                let deadline = duration.map(|d| Instant::now() + Duration::from_secs_f64(d));
                let mut sink = LiveSink::new(tx, live_cfg);
                let reason = crate::ingest::hls::run_with_pool(
                    &src,
                    &mut sink,
                    shutdown,
                    deadline,
                    Some(pool),
                )
                .await;
                Ok(Some(sink.finish(reason).await))
            }
        }
    });
    let printer = LinePrinter {
        format: opts.format,
    };
    let mut events = Vec::new();
    let mut ingest_result = None;
    let mut interrupted = false;
    loop {
        tokio::select! {
            biased;
            ev = erx.recv() => match ev {
                Some(ev) => {
                    let _ = writeln!(out, "{}", printer.line(&ev));
                    let _ = out.flush();
                    events.push(ev);
                }
                None => break,
            },
            r = &mut ingest, if ingest_result.is_none() => ingest_result = Some(r),
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                tracing::info!("interrupted: closing open defects");
                let _ = stop.send(true);
            }
        }
    }
    let analyzer = decode
        .join()
        .map_err(|_| Error::Other("decode thread panicked".into()))?;
    let result = match ingest_result {
        Some(r) => r,
        None => ingest.await,
    };
    let live = match result {
        Ok(Ok(live)) => live,
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(Error::Other(format!("ingest task failed: {e}"))),
    };
    if let Some(l) = &live {
        if l.dropped_queue_full + l.dropped_until_key > 0 {
            tracing::warn!(
                dropped_queue_full = l.dropped_queue_full,
                dropped_until_key = l.dropped_until_key,
                "packets dropped because decoding fell behind the live source"
            );
        }
    }
    Ok(CheckReport {
        events,
        stats: analyzer.stats(),
        live,
    })
}
