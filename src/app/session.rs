//! One analysis session of one input: ingest task → bounded queue → decode thread →
//! events. `check` runs one session; the agent runs one per stream, again after each
//! failure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::check::{Input, EVENT_QUEUE};
use crate::config::DetectConfig;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ingest::hls::HlsOptions;
use crate::ingest::live::{LiveConfig, LiveSink, LiveStats};
use crate::ingest::pool::{BufPool, StreamBudget};
use crate::ingest::rtsp::RtspTransport;
use crate::ingest::{file, IngestMsg};
use crate::pipeline::{spawn_decode_thread, Analyzer, AnalyzerStats, SharedStats};
use crate::shutdown::Shutdown;

/// What to analyse and how.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Path, `file://`, `rtsp://` or HLS URL.
    pub input: String,
    pub probe_id: String,
    pub stream_id: String,
    pub detect: DetectConfig,
    pub live: LiveConfig,
    pub rtsp_transport: RtspTransport,
    pub hls: HlsOptions,
    /// Files: media seconds; live sources: wall seconds. None: to the end / forever.
    pub duration: Option<f64>,
    /// Files: hand packets over at the pace of their timestamps.
    pub realtime: bool,
    /// Files: start again at the end, in the same session.
    pub looped: bool,
    /// Packets queued between ingest and the decode thread.
    pub queue_packets: usize,
    /// Memory for this stream's media buffers (`[limits] stream_memory_mb`).
    pub budget: StreamBudget,
    /// Network sources never end (the agent): an HLS playlist that ends is
    /// `source_down` and reloaded with backoff. `check` ends with the input.
    pub ended_is_down: bool,
}

/// Counters a session keeps up to date while it runs (for the agent's stats).
#[derive(Debug, Default)]
pub struct SessionCounters {
    pub decode: Arc<Mutex<SharedStats>>,
    pub live: Arc<Mutex<LiveStats>>,
}

/// What a finished session counted.
#[derive(Debug, Clone)]
pub struct SessionReport {
    pub stats: AnalyzerStats,
    /// Live sources only.
    pub live: Option<LiveStats>,
}

/// Runs one session until the input ends, `shutdown` is triggered or the duration
/// passes. Every event goes to `on_event` as soon as it is detected; open defects are
/// ended (reason `end_of_input` or `shutdown`) before this returns.
pub async fn run<F: FnMut(Event)>(
    spec: &SessionSpec,
    shutdown: Shutdown,
    counters: Option<&SessionCounters>,
    on_event: &mut F,
) -> Result<SessionReport> {
    // Library callers get the same checks as the config file and the command line:
    // an out-of-range duration must be an error here, not a panic in a task.
    spec.live.validate().map_err(Error::Config)?;
    let deadline = match spec.duration {
        None => None,
        Some(d) => Some(
            Duration::try_from_secs_f64(d)
                .ok()
                .and_then(|d| Instant::now().checked_add(d))
                .ok_or_else(|| Error::Config(format!("duration {d} s is out of range")))?,
        ),
    };
    let hls = crate::ingest::hls::HlsOptions {
        ended_is_down: spec.ended_is_down,
        ..spec.hls.clone()
    };
    let input = Input::parse(&spec.input, spec.rtsp_transport, &hls)?;
    let mut analyzer = Analyzer::new(&spec.probe_id, &spec.stream_id, spec.detect.clone())?;
    let queue = spec.queue_packets.max(2);
    // Packet buffers circulate between ingest and the decode thread; the pool also
    // bounds the queue in bytes and access units in size (the stream's budget).
    let pool = BufPool::for_budget(spec.budget);
    analyzer.set_pool(pool.clone());
    let (tx, rx) = mpsc::channel::<IngestMsg>(queue);
    let (etx, mut erx) = mpsc::channel::<Event>(EVENT_QUEUE);
    let decode = spawn_decode_thread(
        format!("decode-{}", spec.stream_id),
        analyzer,
        rx,
        etx,
        counters.map(|c| c.decode.clone()),
    )
    .map_err(|e| Error::Other(format!("cannot start decode thread: {e}")))?;
    let duration = spec.duration;
    let realtime = spec.realtime;
    let looped = spec.looped;
    let live_cfg = spec.live.clone();
    let live_shared = counters.map(|c| c.live.clone());
    let mut ingest = tokio::spawn(async move {
        let sink_pool = pool.clone();
        let live_sink = |tx| {
            let mut sink = LiveSink::new(tx, live_cfg);
            sink.set_pool(sink_pool);
            if let Some(s) = live_shared {
                sink.share_stats(s);
            }
            sink
        };
        match input {
            Input::File(path) => {
                let fopts = file::FileOptions {
                    max_media_s: duration,
                    pool: Some(pool),
                    realtime,
                    looped,
                };
                file::run(&path, tx, &fopts, &shutdown).await.map(|_| None)
            }
            Input::Rtsp(src) => {
                let mut sink = live_sink(tx);
                let reason = crate::ingest::rtsp::run(&src, &mut sink, shutdown, deadline).await;
                Ok(Some(sink.finish(reason).await))
            }
            Input::Hls(src) => {
                let mut sink = live_sink(tx);
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
    let mut ingest_result = None;
    loop {
        tokio::select! {
            biased;
            ev = erx.recv() => match ev {
                Some(ev) => on_event(ev),
                None => break,
            },
            r = &mut ingest, if ingest_result.is_none() => ingest_result = Some(r),
        }
    }
    // The decode thread has dropped its event sender: it is finishing or done.
    let analyzer = tokio::task::spawn_blocking(move || decode.join())
        .await
        .map_err(|e| Error::Other(format!("decode thread: {e}")))?
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
                stream = %spec.stream_id,
                dropped_queue_full = l.dropped_queue_full,
                dropped_until_key = l.dropped_until_key,
                "packets dropped because decoding fell behind the live source"
            );
        }
    }
    Ok(SessionReport {
        stats: analyzer.stats(),
        live,
    })
}
