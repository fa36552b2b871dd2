//! One analysis session of one input: a [`Source`] (or another feed, such as the demo's
//! synthetic stream) → the stream's [`Sink`] → bounded queue → decode thread → events.
//! `check`, `demo` and the agent (one per stream, again after each failure) all run
//! sessions. Owns the queue sizes, the stream's buffer pool and the decode thread's
//! lifetime; it may not classify inputs (that is [`Source::parse`]) nor print.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::config::DetectConfig;
use crate::defect::EndReason;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ingest::live::LiveConfig;
use crate::ingest::pool::{BufPool, StreamBudget};
use crate::ingest::sink::{LiveStats, Overflow, Sink};
use crate::ingest::source::{Source, SourceOptions};
use crate::ingest::IngestMsg;
use crate::pipeline::{spawn_decode_thread, Analyzer, AnalyzerStats, SharedStats};
use crate::shutdown::Shutdown;

/// Packets queued between ingest and the decode thread (the agent's
/// `limits.queue_packets` overrides it per stream).
pub const PACKET_QUEUE: usize = 64;
/// Events queued between the decode thread and the caller's `on_event`.
pub const EVENT_QUEUE: usize = 256;

/// What to analyse and how.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Path, `file://`, `rtsp://` or HLS URL ([`Source::parse`]).
    pub input: String,
    /// How to read it (transport, HLS settings, duration, pace, loop).
    pub source: SourceOptions,
    pub probe_id: String,
    pub stream_id: String,
    pub detect: DetectConfig,
    pub live: LiveConfig,
    /// Packets queued between ingest and the decode thread.
    pub queue_packets: usize,
    /// Memory for this stream's media buffers (`[limits] stream_memory_mb`).
    pub budget: StreamBudget,
}

impl SessionSpec {
    /// A session of `input` with every setting at its default.
    pub fn new(input: &str, probe_id: &str, stream_id: &str) -> Self {
        SessionSpec {
            input: input.to_string(),
            source: SourceOptions::default(),
            probe_id: probe_id.to_string(),
            stream_id: stream_id.to_string(),
            detect: DetectConfig::default(),
            live: LiveConfig::default(),
            queue_packets: PACKET_QUEUE,
            budget: StreamBudget::default(),
        }
    }
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
    /// Live sources only: the sink's delivery counters.
    pub live: Option<LiveStats>,
    /// The per-second series (`detect.series` only).
    pub series: Option<crate::pipeline::series::Series>,
}

/// Runs one session of `spec.input` until the input ends, `shutdown` is triggered or
/// the duration passes. Every event goes to `on_event` as soon as it is detected; open
/// defects are ended (reason `end_of_input` or `shutdown`) before this returns.
pub async fn run<F: FnMut(Event)>(
    spec: &SessionSpec,
    shutdown: Shutdown,
    counters: Option<&SessionCounters>,
    on_event: &mut F,
) -> Result<SessionReport> {
    // Library callers get the same checks as the config file and the command line:
    // an out-of-range duration must be an error here, not a panic in a task.
    spec.live.validate().map_err(Error::Config)?;
    let source = Source::parse(&spec.input, &spec.source)?;
    let overflow = source.overflow();
    let live = source.is_live();
    run_feed(
        spec,
        overflow,
        live,
        shutdown,
        counters,
        on_event,
        move |mut sink, shutdown| async move {
            let r = source.run(&mut sink, shutdown).await;
            (sink, r)
        },
    )
    .await
}

/// Runs one session fed by `feed` instead of a parsed [`Source`] (the demo's synthetic
/// stream): `feed` gets the stream's [`Sink`] (policy `overflow`) and hands it back with
/// why it stopped; an error ends the session without an end of input. `live`: report
/// the sink's counters.
pub async fn run_feed<F, Fut, E>(
    spec: &SessionSpec,
    overflow: Overflow,
    live: bool,
    shutdown: Shutdown,
    counters: Option<&SessionCounters>,
    on_event: &mut E,
    feed: F,
) -> Result<SessionReport>
where
    F: FnOnce(Sink, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = (Sink, Result<EndReason>)> + Send + 'static,
    E: FnMut(Event),
{
    spec.live.validate().map_err(Error::Config)?;
    let mut analyzer = Analyzer::new(&spec.probe_id, &spec.stream_id, spec.detect.clone())?;
    let queue = spec.queue_packets.max(2);
    // Packet buffers circulate between ingest and the decode thread; the pool also
    // bounds the queue in bytes and access units in size (the stream's budget).
    let pool = BufPool::for_budget(spec.budget);
    analyzer.set_pool(pool.clone());
    // Live sources and files read at real-time pace cannot wait for the decoder: a
    // backlog steps an `auto` stream's decode level down before packets are dropped.
    analyzer.set_live(live || spec.source.pace == Some(crate::ingest::source::Pace::Realtime));
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
    let mut sink = Sink::new(tx, spec.live.clone()).with_overflow(overflow);
    sink.set_pool(pool);
    if let Some(c) = counters {
        sink.share_stats(c.live.clone());
    }
    let mut ingest = tokio::spawn(async move {
        let (sink, result) = feed(sink, shutdown).await;
        match result {
            Ok(reason) => Ok(sink.finish(reason).await),
            // Dropping the sink closes the queue: the decode thread ends what it has.
            Err(e) => Err(e),
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
    let mut analyzer = tokio::task::spawn_blocking(move || decode.join())
        .await
        .map_err(|e| Error::Other(format!("decode thread: {e}")))?
        .map_err(|_| Error::Other("decode thread panicked".into()))?;
    let result = match ingest_result {
        Some(r) => r,
        None => ingest.await,
    };
    let stats = match result {
        Ok(Ok(stats)) => stats,
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(Error::Other(format!("ingest task failed: {e}"))),
    };
    let live = live.then_some(stats);
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
        series: analyzer.take_series(),
    })
}
