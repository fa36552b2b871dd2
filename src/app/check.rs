//! `vqprobe check INPUT`: analyse one input, print one line per event, exit.

use std::io::Write;

use tokio::sync::mpsc;

use crate::config::DetectConfig;
use crate::error::{Error, Result};
use crate::event::{EndReason, Event};
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
    /// Analyse at most this many media seconds.
    pub duration: Option<f64>,
    pub detect: DetectConfig,
    pub probe_id: String,
    pub stream_id: String,
}

/// What a `check` run found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub events: Vec<Event>,
    pub stats: AnalyzerStats,
}

/// Runs `check`, writing event lines to `out` as they are detected.
pub async fn run(opts: &CheckOptions, out: &mut dyn Write) -> Result<CheckReport> {
    let input = opts.input.as_str();
    if input.contains("://") && !input.starts_with("file://") {
        return Err(Error::bad_input(
            redact_url(input),
            "only local MPEG-TS files (path or file://) are supported by this build",
        ));
    }
    let path = file::path_of(input);
    let analyzer = Analyzer::new(&opts.probe_id, &opts.stream_id, opts.detect.clone())?;
    let (tx, rx) = mpsc::channel::<IngestMsg>(PACKET_QUEUE);
    let (etx, mut erx) = mpsc::channel::<Event>(EVENT_QUEUE);
    let decode = spawn_decode_thread(format!("decode-{}", opts.stream_id), analyzer, rx, etx)
        .map_err(|e| Error::Other(format!("cannot start decode thread: {e}")))?;
    let fopts = file::FileOptions {
        max_media_s: opts.duration,
    };
    // A second sender, kept only while ingest runs, to deliver a Ctrl-C shutdown.
    let mut stop = Some(tx.clone());
    let mut ingest = tokio::spawn(async move { file::run(&path, tx, &fopts).await });
    let printer = LinePrinter {
        format: opts.format,
    };
    let mut events = Vec::new();
    let mut ingest_result = None;
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
            r = &mut ingest, if ingest_result.is_none() => {
                ingest_result = Some(r);
                stop = None; // ingest is done: let the decode thread see the channel close
            }
            _ = tokio::signal::ctrl_c(), if stop.is_some() => {
                ingest.abort();
                if let Some(s) = stop.take() {
                    let _ = s.send(IngestMsg::End(EndReason::Shutdown)).await;
                }
            }
        }
    }
    drop(stop);
    let analyzer = decode
        .join()
        .map_err(|_| Error::Other("decode thread panicked".into()))?;
    let result = match ingest_result {
        Some(r) => r,
        None => ingest.await,
    };
    match result {
        Ok(Ok(_stats)) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) if e.is_cancelled() => {}
        Err(e) => return Err(Error::Other(format!("ingest task failed: {e}"))),
    }
    Ok(CheckReport {
        events,
        stats: analyzer.stats(),
    })
}
