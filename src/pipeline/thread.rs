//! The decode thread: one named OS thread per stream that runs an [`Analyzer`] between
//! two bounded channels (ingest messages in, events out).
//!
//! Owns the thread's loop, the end-of-input safety net (a closed queue without
//! [`IngestMsg::End`] still finishes the analysis) and the optional [`SharedStats`]
//! a stats reporter reads. It does not size the queues (the session does) and does not
//! look inside messages beyond counting media bytes (and the debug-only `slow_decode`
//! fault hook); it tells the analyzer how full the ingest queue is (the backlog that
//! steps a live `auto` stream's decode level down).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::defect::EndReason;
use crate::event::Event;
use crate::ingest::{IngestMsg, Track};

use super::{Analyzer, AnalyzerStats};

/// Counters a decode thread shares with a stats reporter (the agent), refreshed every
/// [`SHARE_EVERY`] messages and at the end.
#[derive(Debug, Default)]
pub struct SharedStats {
    pub analyzer: AnalyzerStats,
    /// Elementary-stream bytes handed to the decoders.
    pub media_bytes: u64,
}

/// Messages between two refreshes of [`SharedStats`].
pub const SHARE_EVERY: u64 = 16;

/// Runs `analyzer` on a new OS thread named `name`: reads `rx` until it closes or an
/// [`IngestMsg::End`] arrives, sends events to `tx` (blocking when full: events are
/// never dropped), keeps `shared` (when given) up to date, and returns the analyzer
/// for its final stats.
pub fn spawn_decode_thread(
    name: String,
    mut analyzer: Analyzer,
    mut rx: mpsc::Receiver<IngestMsg>,
    tx: mpsc::Sender<Event>,
    shared: Option<Arc<Mutex<SharedStats>>>,
) -> std::io::Result<std::thread::JoinHandle<Analyzer>> {
    std::thread::Builder::new().name(name).spawn(move || {
        let mut media_bytes = 0u64;
        let mut n = 0u64;
        let share = |analyzer: &Analyzer, media_bytes: u64| {
            if let Some(s) = &shared {
                if let Ok(mut s) = s.lock() {
                    s.analyzer = analyzer.stats();
                    s.media_bytes = media_bytes;
                }
            }
        };
        let mut send = |ev: Event| {
            // The receiver is gone only when the process is shutting down.
            let _ = tx.blocking_send(ev);
        };
        let mut ended = false;
        let started = std::time::Instant::now();
        while let Some(msg) = rx.blocking_recv() {
            // How far decoding is behind ingest, for `auto`'s overload steps.
            let fill = rx.len() as f32 / rx.max_capacity().max(1) as f32;
            analyzer.backlog(started.elapsed().as_secs_f64(), fill);
            let end = matches!(msg, IngestMsg::End(_));
            if let IngestMsg::Packet(p) = &msg {
                media_bytes += p.data.len() as u64;
                if p.track == Track::Video && crate::fault::fault("slow_decode") {
                    std::thread::sleep(crate::fault::SLOW_DECODE);
                }
            }
            analyzer.handle(msg, &mut send);
            n += 1;
            if n % SHARE_EVERY == 0 {
                share(&analyzer, media_bytes);
            }
            if end {
                ended = true;
                break;
            }
        }
        if !ended {
            analyzer.finish(EndReason::EndOfInput, &mut send);
        }
        share(&analyzer, media_bytes);
        analyzer
    })
}
