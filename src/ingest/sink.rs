//! The one sending side of every source: [`Sink`] hands a source's programs, packets and
//! delivery defects to the stream's decode thread through the bounded queue, applying the
//! source's [`Overflow`] policy, and keeps the delivery-defect bookkeeping (stall,
//! source_down, probe_overload, oversized access units) on the stream's session clock.
//! It owns the queue's sending end and the stream's byte budget ([`Sink::set_pool`]);
//! it never reads a source and never decodes.
//!
//! Overflow policies ([`Overflow`]):
//!
//! * **Block** (files, HLS, the demo): the packet waits for room in the queue (count and
//!   bytes); nothing is dropped, ingest runs at the pace of decode.
//! * **DropUntilKey** (RTSP): when the decode thread falls behind a live source, the
//!   packet that does not fit is dropped, and so is every following video packet until
//!   the next key frame (a P-frame without its reference is garbage); audio packets that
//!   do not fit are dropped one by one. Every drop is counted in [`LiveStats`] and
//!   reported as a `probe_overload` delivery defect (opened at the first drop, closed
//!   after `clear_after` seconds without one, with the drop counts of the interval in its
//!   metrics).
//!
//! Memory stays bounded by the queue length and, with a pool ([`Sink::set_pool`]), by
//! the stream's byte budget (`ingest::pool`): a packet that finds no room in bytes is
//! dropped (DropUntilKey) or waits (Block). An access unit larger than the budget allows
//! is dropped, counted (`oversized`) and reported as a `ts_error` interval (metric
//! `oversized_access_units`), closed after `clear_after` without one, and timed by the
//! dropped media's timestamps.
//!
//! Delivery defects are opened on the session clock ([`Sink::now_s`]); those about a
//! piece of media carry its span as well ([`Sink::open_media`], [`Transition::media`]),
//! and the pipeline times them by media time (docs/events.md).

use std::time::Instant;

use tokio::sync::mpsc::{self, error::TrySendError};

use super::live::LiveConfig;
use super::{IngestMsg, Packet, ProgramInfo, Track};
use crate::defect::EndReason;
use crate::defect::{DefectKind, MediaSpan, Metric, Metrics, Phase, Transition};

/// What a [`Sink`] does with a packet when the queue to the decode thread is full (by
/// count or by bytes). See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Wait for room: nothing is dropped (files, HLS, the demo).
    #[default]
    Block,
    /// Never wait: drop, and drop video until the next key frame (RTSP).
    DropUntilKey,
}

/// Counters of a source's sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Packets handed to the decode thread.
    pub packets: u64,
    /// Packets dropped because the queue was full (decode behind).
    pub dropped_queue_full: u64,
    /// Video packets dropped while waiting for a key frame after a drop.
    pub dropped_until_key: u64,
    /// Connection attempts that failed or sessions that ended.
    pub reconnects: u64,
    /// Media bytes received.
    pub bytes: u64,
    /// Access units dropped for being larger than the stream's budget allows.
    pub oversized: u64,
}

#[derive(Debug, Clone)]
struct Open {
    kind: DefectKind,
    start_s: f64,
    metrics: Metrics,
    /// The piece of media the defect is about (see [`Sink::open_media`]).
    media: Option<MediaSpan>,
}

/// The sending side of every source. See the module docs for the overflow policies.
#[derive(Debug)]
pub struct Sink {
    tx: mpsc::Sender<IngestMsg>,
    cfg: LiveConfig,
    overflow: Overflow,
    started: Instant,
    last_media: Option<Instant>,
    dropping_video: bool,
    /// Last packet dropped for lack of room (closes `probe_overload` when old enough).
    last_drop: Option<Instant>,
    /// A `probe_overload` start waiting for room in the queue (see `dropped`).
    overload_start: Option<Transition>,
    /// Drop counters when the open `probe_overload` began (its metrics count from there).
    drops_at_onset: (u64, u64),
    /// At most one per kind: as many slots as there are kinds, so never full.
    open: heapless::Vec<Open, { DefectKind::COUNT }>,
    /// Packet buffers and the queue's byte bound (see `ingest::pool`).
    pool: Option<super::pool::BufPool>,
    /// Last oversized access unit, and the count when the open `ts_error` began.
    last_oversized: Option<Instant>,
    oversized_at_onset: u64,
    pub stats: LiveStats,
    /// Where [`Sink::tick`] copies the counters for a stats reporter (agent).
    shared: Option<std::sync::Arc<std::sync::Mutex<LiveStats>>>,
}

impl Sink {
    /// A sink with overflow policy [`Overflow::DropUntilKey`] for [`Sink::packet`]
    /// (see [`Sink::with_overflow`] and [`Sink::send`]).
    pub fn new(tx: mpsc::Sender<IngestMsg>, cfg: LiveConfig) -> Self {
        Sink {
            tx,
            cfg,
            overflow: Overflow::DropUntilKey,
            started: Instant::now(),
            last_media: None,
            dropping_video: false,
            last_drop: None,
            overload_start: None,
            drops_at_onset: (0, 0),
            open: heapless::Vec::new(),
            pool: None,
            last_oversized: None,
            oversized_at_onset: 0,
            stats: LiveStats::default(),
            shared: None,
        }
    }

    /// Sets the overflow policy applied by [`Sink::send`].
    pub fn with_overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// The overflow policy applied by [`Sink::send`].
    pub fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// Hands one media packet over with the sink's overflow policy: [`Sink::packet_wait`]
    /// (Block) or [`Sink::packet`] (DropUntilKey). False once the decode side is gone:
    /// the source should stop.
    pub async fn send(&mut self, p: Packet) -> bool {
        match self.overflow {
            Overflow::Block => self.packet_wait(p).await,
            Overflow::DropUntilKey => {
                self.packet(p).await;
                !self.is_closed()
            }
        }
    }

    /// The stream's packet-buffer pool and byte budget, when there is one.
    pub fn pool(&self) -> Option<&super::pool::BufPool> {
        self.pool.as_ref()
    }

    /// Hands a delivery-defect transition made by the source itself (a file's
    /// `ts_error` on the media clock) to the decode thread, waiting for room. A forced
    /// end carries its reason.
    pub async fn delivery(&mut self, t: Transition, reason: Option<EndReason>) {
        let _ = self.tx.send(IngestMsg::Delivery(Box::new(t), reason)).await;
    }

    /// Bounds the queue in bytes and access units in size by `pool`'s budget (give the
    /// same pool to the stream's `Analyzer`, which releases the bytes after decoding).
    pub fn set_pool(&mut self, pool: super::pool::BufPool) {
        self.pool = Some(pool);
    }

    /// Largest access unit accepted (None: no bound).
    pub fn max_access_unit(&self) -> Option<usize> {
        self.pool.as_ref().map(|p| p.budget().max_access_unit())
    }

    /// An access unit of `len` bytes, above [`Sink::max_access_unit`], was dropped
    /// (here or by a demuxer): count it and open or update `ts_error`, timed by the
    /// dropped media's timestamp `pts` when it has one (see [`Sink::open_media`]).
    pub async fn oversized(&mut self, len: usize, pts: Option<i64>) {
        self.stats.oversized += 1;
        self.last_oversized = Some(Instant::now());
        if self.stats.oversized.is_power_of_two() {
            tracing::warn!(
                bytes = len,
                max = self.max_access_unit(),
                dropped = self.stats.oversized,
                "access unit larger than the stream's memory budget allows: dropped"
            );
        }
        if !self.is_open(DefectKind::TsError) {
            self.oversized_at_onset = self.stats.oversized - 1;
        }
        let m = self.oversized_metrics();
        if self.is_open(DefectKind::TsError) {
            self.update(DefectKind::TsError, |mm| *mm = m);
            if let Some(p) = pts {
                self.extend_media(DefectKind::TsError, p);
            }
        } else if let Some(p) = pts {
            let span = MediaSpan {
                start_pts: p,
                end_pts: Some(p),
            };
            self.open_media(DefectKind::TsError, m, span).await;
        } else {
            self.open(DefectKind::TsError, m).await;
        }
    }

    fn oversized_metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        crate::defect::put(
            &mut m,
            "oversized_access_units",
            Metric::Int(self.stats.oversized.saturating_sub(self.oversized_at_onset) as i64),
        );
        if let Some(max) = self.max_access_unit() {
            crate::defect::put(&mut m, "max_access_unit_bytes", Metric::Int(max as i64));
        }
        m
    }

    /// Copies the counters into `shared` at every [`Sink::tick`].
    pub fn share_stats(&mut self, shared: std::sync::Arc<std::sync::Mutex<LiveStats>>) {
        self.shared = Some(shared);
    }

    /// The configuration.
    pub fn config(&self) -> &LiveConfig {
        &self.cfg
    }

    /// Seconds since monitoring of this stream began (the delivery defects' clock).
    pub fn now_s(&self) -> f64 {
        self.at_s(Instant::now())
    }

    fn at_s(&self, i: Instant) -> f64 {
        i.saturating_duration_since(self.started).as_secs_f64()
    }

    /// True when the decode side is gone (shutdown).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Sends the program (waits for room: it is rare and must not be lost).
    pub async fn program(&mut self, p: ProgramInfo) -> bool {
        self.tx.send(IngestMsg::Program(p)).await.is_ok()
    }

    /// Offers one media packet. Never waits: see the overflow policy. Media arriving
    /// also ends an open `stall` or `source_down`.
    pub async fn packet(&mut self, p: Packet) {
        self.arrived(p.data.len()).await;
        self.flush_overload_start();
        if self.max_access_unit().is_some_and(|m| p.data.len() > m) {
            if p.track == Track::Video {
                // The next pictures need this one: wait for a key frame.
                self.dropping_video = true;
            }
            self.oversized(p.data.len(), p.pts).await;
            return;
        }
        if p.track == Track::Video && self.dropping_video {
            if !p.key {
                self.stats.dropped_until_key += 1;
                self.dropped(false).await;
                return;
            }
            self.dropping_video = false;
        }
        let track = p.track;
        let len = p.data.len();
        let admitted = self.pool.as_ref().is_none_or(|pl| pl.admit(len));
        let sent = if admitted {
            self.tx.try_send(IngestMsg::Packet(p))
        } else {
            Err(TrySendError::Full(IngestMsg::Packet(p)))
        };
        if sent.is_err() && admitted {
            if let Some(pl) = &self.pool {
                pl.release(len);
            }
        }
        match sent {
            Ok(()) => self.stats.packets += 1,
            Err(TrySendError::Full(_)) => {
                self.stats.dropped_queue_full += 1;
                if track == Track::Video {
                    self.dropping_video = true;
                }
                if self.stats.dropped_queue_full.is_power_of_two() {
                    tracing::warn!(
                        dropped = self.stats.dropped_queue_full,
                        "decode is behind the live source: dropping until the next key frame"
                    );
                }
                self.dropped(true).await;
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// A packet was dropped (`queue_full`: for lack of room; otherwise while waiting
    /// for a key frame): open `probe_overload` or bring its counts up to date.
    ///
    /// The `start` cannot wait for room in the queue that just overflowed (that would
    /// stall ingest behind decode, and the queue may never drain if decode waits on
    /// us): it is kept here and sent as soon as there is room, before any later packet.
    async fn dropped(&mut self, queue_full: bool) {
        self.last_drop = Some(Instant::now());
        if self.is_open(DefectKind::ProbeOverload) {
            let m = self.overload_metrics();
            self.update(DefectKind::ProbeOverload, |mm| *mm = m);
            return;
        }
        self.drops_at_onset = (
            self.stats.dropped_queue_full - u64::from(queue_full),
            self.stats.dropped_until_key - u64::from(!queue_full),
        );
        let metrics = self.overload_metrics();
        let start_s = self.now_s();
        self.push_open(Open {
            kind: DefectKind::ProbeOverload,
            start_s,
            metrics: metrics.clone(),
            media: None,
        });
        self.overload_start = Some(Transition {
            kind: DefectKind::ProbeOverload,
            phase: Phase::Start,
            start_s,
            end_s: None,
            metrics,
            slot: 0,
            media: None,
        });
        self.flush_overload_start();
    }

    /// Sends a deferred `probe_overload` start if there is room now.
    fn flush_overload_start(&mut self) {
        let Some(t) = self.overload_start.take() else {
            return;
        };
        if let Err(TrySendError::Full(IngestMsg::Delivery(t, _))) =
            self.tx.try_send(IngestMsg::Delivery(Box::new(t), None))
        {
            self.overload_start = Some(*t);
        }
    }

    fn overload_metrics(&self) -> Metrics {
        let full = self
            .stats
            .dropped_queue_full
            .saturating_sub(self.drops_at_onset.0);
        let until_key = self
            .stats
            .dropped_until_key
            .saturating_sub(self.drops_at_onset.1);
        let mut m = Metrics::new();
        crate::defect::put(
            &mut m,
            "dropped_packets",
            Metric::Int((full + until_key) as i64),
        );
        crate::defect::put(&mut m, "dropped_queue_full", Metric::Int(full as i64));
        crate::defect::put(&mut m, "dropped_until_key", Metric::Int(until_key as i64));
        m
    }

    /// Hands over an A/V offset measured from RTCP sender reports. Never waits: one is
    /// due every few seconds, and losing one while decode is behind costs nothing.
    pub fn av_sync(&mut self, pts: i64, offset_s: f64) {
        let _ = self.tx.try_send(IngestMsg::AvSync { pts, offset_s });
    }

    /// Hands one media packet over, waiting for room (overflow policy *block*): for
    /// sources that are not live, such as a file or a VOD playlist, where nothing may be
    /// dropped. False once the decode side is gone (nothing will be taken any more).
    pub async fn packet_wait(&mut self, p: Packet) -> bool {
        let len = p.data.len();
        let pts = p.pts;
        self.arrived(len).await;
        if self.max_access_unit().is_some_and(|m| len > m) {
            self.oversized(len, pts).await;
            return !self.is_closed();
        }
        if let Some(pl) = &self.pool {
            // Waits for the decode thread to release room; gives up if it is gone (its
            // queued bytes will never be released).
            let admitted = tokio::select! {
                ok = pl.admit_wait(len) => ok,
                _ = self.tx.closed() => return false,
            };
            // Cannot fail for an access unit within the budget (it fits the queue).
            if !admitted {
                self.oversized(len, pts).await;
                return !self.is_closed();
            }
        }
        if self.tx.send(IngestMsg::Packet(p)).await.is_ok() {
            self.stats.packets += 1;
            true
        } else {
            if let Some(pl) = &self.pool {
                pl.release(len);
            }
            false
        }
    }

    /// Media arrived: note it, and end an open `stall` or `source_down`.
    async fn arrived(&mut self, bytes: usize) {
        self.last_media = Some(Instant::now());
        self.stats.bytes += bytes as u64;
        if self.is_open(DefectKind::Stall) || self.is_open(DefectKind::SourceDown) {
            self.close(DefectKind::Stall, Metrics::new()).await;
            self.close(DefectKind::SourceDown, Metrics::new()).await;
        }
    }

    /// Whether a delivery defect of `kind` is open.
    pub fn is_open(&self, kind: DefectKind) -> bool {
        self.open.iter().any(|o| o.kind == kind)
    }

    /// Opens a delivery defect with onset `start_s` (session seconds), unless one of
    /// the kind is open already (then only its metrics are updated).
    pub async fn open_at(&mut self, kind: DefectKind, start_s: f64, metrics: Metrics) {
        self.open_spanning(kind, start_s, metrics, None).await;
    }

    /// Opens now a delivery defect about a piece of media (a damaged segment, a run of
    /// bad transport packets): its `start` and `end` carry `span` (see
    /// [`Transition::media`]), and the pipeline times them on the media clock. When one
    /// of the kind is open already, only its metrics are updated and its span (if it
    /// has one) is extended to the end of `span`.
    pub async fn open_media(&mut self, kind: DefectKind, metrics: Metrics, span: MediaSpan) {
        let now = self.now_s();
        self.open_spanning(kind, now, metrics, Some(span)).await;
    }

    /// Moves the end of an open defect's media span (see [`Sink::open_media`]) to
    /// `end_pts` if that is later; nothing for a defect without one.
    pub fn extend_media(&mut self, kind: DefectKind, end_pts: i64) {
        if let Some(m) = self
            .open
            .iter_mut()
            .find(|o| o.kind == kind)
            .and_then(|o| o.media.as_mut())
        {
            m.end_pts = Some(m.end_pts.map_or(end_pts, |e| e.max(end_pts)));
        }
    }

    async fn open_spanning(
        &mut self,
        kind: DefectKind,
        start_s: f64,
        metrics: Metrics,
        media: Option<MediaSpan>,
    ) {
        if let Some(o) = self.open.iter_mut().find(|o| o.kind == kind) {
            o.metrics = metrics;
            if let Some(end) = media.and_then(|s| s.end_pts) {
                self.extend_media(kind, end);
            }
            return;
        }
        let t = Transition {
            kind,
            phase: Phase::Start,
            start_s,
            end_s: None,
            metrics: metrics.clone(),
            slot: 0,
            media,
        };
        self.push_open(Open {
            kind,
            start_s,
            metrics,
            media,
        });
        let _ = self.tx.send(IngestMsg::Delivery(Box::new(t), None)).await;
    }

    /// Records an open defect. Callers check first that `o.kind` is not open, and the
    /// table has a slot per kind: it cannot be full.
    fn push_open(&mut self, o: Open) {
        let kind = o.kind;
        if self.open.push(o).is_err() {
            tracing::error!(kind = kind.as_str(), "open-defect table full (a bug)");
            debug_assert!(false, "open-defect table full");
        }
    }

    /// Opens a delivery defect starting now.
    pub async fn open(&mut self, kind: DefectKind, metrics: Metrics) {
        let now = self.now_s();
        self.open_at(kind, now, metrics).await;
    }

    /// Updates the evidence of an open defect (reported on its `end`).
    pub fn update(&mut self, kind: DefectKind, f: impl FnOnce(&mut Metrics)) {
        if let Some(o) = self.open.iter_mut().find(|o| o.kind == kind) {
            f(&mut o.metrics);
        }
    }

    /// Closes an open delivery defect now. `extra` metrics are added to its evidence.
    pub async fn close(&mut self, kind: DefectKind, extra: Metrics) {
        let now = self.now_s();
        self.close_at(kind, now, extra, None).await;
    }

    async fn close_at(
        &mut self,
        kind: DefectKind,
        end_s: f64,
        extra: Metrics,
        reason: Option<EndReason>,
    ) {
        let Some(i) = self.open.iter().position(|o| o.kind == kind) else {
            return;
        };
        // A start still waiting for room goes first, whatever closes now.
        if let Some(t) = self.overload_start.take() {
            let _ = self.tx.send(IngestMsg::Delivery(Box::new(t), None)).await;
        }
        let o = self.open.swap_remove(i);
        let mut metrics = o.metrics;
        for (k, v) in extra {
            crate::defect::put(&mut metrics, k, v);
        }
        let t = Transition {
            kind,
            phase: Phase::End,
            start_s: o.start_s,
            end_s: Some(end_s.max(o.start_s)),
            metrics,
            slot: 0,
            media: o.media,
        };
        let _ = self.tx.send(IngestMsg::Delivery(Box::new(t), reason)).await;
    }

    /// Stall detection, called at least every few hundred ms by the source's loop:
    /// opens `stall` when no media arrived for `stall_after` seconds (onset = the last
    /// arrival), unless the source is already known to be down.
    pub async fn tick(&mut self) {
        if let Some(shared) = &self.shared {
            if let Ok(mut s) = shared.lock() {
                *s = self.stats;
            }
        }
        self.flush_overload_start();
        if let Some(d) = self.last_oversized {
            if d.elapsed().as_secs_f64() >= self.cfg.clear_after
                && self.is_open(DefectKind::TsError)
            {
                let m = self.oversized_metrics();
                self.close(DefectKind::TsError, m).await;
                self.last_oversized = None;
            }
        }
        if let Some(d) = self.last_drop {
            if d.elapsed().as_secs_f64() >= self.cfg.clear_after
                && self.is_open(DefectKind::ProbeOverload)
            {
                let m = self.overload_metrics();
                self.close(DefectKind::ProbeOverload, m).await;
                self.last_drop = None;
            }
        }
        let Some(last) = self.last_media else { return };
        if self.is_open(DefectKind::Stall) || self.is_open(DefectKind::SourceDown) {
            return;
        }
        let silent = last.elapsed().as_secs_f64();
        if silent >= self.cfg.stall_after {
            let mut m = Metrics::new();
            crate::defect::put(&mut m, "stall_after_s", Metric::Num(self.cfg.stall_after));
            let onset = self.at_s(last);
            self.open_at(DefectKind::Stall, onset, m).await;
        }
    }

    /// Seconds since the last media packet (None before the first).
    pub fn since_media(&self) -> Option<f64> {
        self.last_media.map(|l| l.elapsed().as_secs_f64())
    }

    /// Marks the source as down (connect failure, auth failure, session ended). A stall
    /// in progress becomes the start of the outage.
    pub async fn source_down(&mut self, reason: &str, attempt: u32) {
        let now = self.now_s();
        let onset = match self.open.iter().find(|o| o.kind == DefectKind::Stall) {
            Some(o) => o.start_s,
            None => now,
        };
        self.close(DefectKind::Stall, Metrics::new()).await;
        self.stats.reconnects += 1;
        let mut m = Metrics::new();
        // Reasons are redacted where they are made; this is the last line of defence
        // before the event leaves the process.
        let reason = crate::redact::redact_in_text(reason);
        crate::defect::put(&mut m, "reason", Metric::Text(reason.into()));
        crate::defect::put(&mut m, "attempts", Metric::Int(i64::from(attempt)));
        if self.is_open(DefectKind::SourceDown) {
            self.update(DefectKind::SourceDown, |mm| *mm = m);
        } else {
            self.open_at(DefectKind::SourceDown, onset, m).await;
        }
    }

    /// Ends the source: closes every open delivery defect now and sends `End(reason)`.
    /// Called once by the session after the source's `run` returned.
    pub async fn finish(mut self, reason: EndReason) -> LiveStats {
        let now = self.now_s();
        let kinds: heapless::Vec<DefectKind, { DefectKind::COUNT }> =
            self.open.iter().map(|o| o.kind).collect();
        for k in kinds {
            self.close_at(k, now, Metrics::new(), Some(reason)).await;
        }
        let _ = self.tx.send(IngestMsg::End(reason)).await;
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(track: Track, key: bool) -> Packet {
        Packet {
            track,
            pts: Some(0),
            dts: None,
            key,
            damaged: false,
            data: vec![0; 10],
        }
    }

    #[tokio::test]
    async fn full_queue_drops_until_key_frame_counts_and_reports() {
        let (tx, mut rx) = mpsc::channel(2);
        let cfg = LiveConfig {
            clear_after: 0.0,
            ..LiveConfig::default()
        };
        let mut s = Sink::new(tx, cfg);
        s.packet(pkt(Track::Video, true)).await;
        s.packet(pkt(Track::Video, false)).await;
        s.packet(pkt(Track::Video, false)).await; // full: dropped, now waiting for a key
        s.packet(pkt(Track::Audio, true)).await; // full: dropped
        assert!(s.is_open(DefectKind::ProbeOverload));
        rx.recv().await.unwrap();
        rx.recv().await.unwrap();
        // Room again: the deferred probe_overload start goes first; this packet is not
        // a key frame: dropped.
        s.packet(pkt(Track::Video, false)).await;
        match rx.recv().await.unwrap() {
            IngestMsg::Delivery(t, None) => {
                assert_eq!((t.kind, t.phase), (DefectKind::ProbeOverload, Phase::Start))
            }
            other => panic!("{other:?}"),
        }
        s.packet(pkt(Track::Audio, true)).await; // audio passes
        s.packet(pkt(Track::Video, true)).await; // key frame: passes
        assert_eq!(s.stats.packets, 4);
        assert_eq!(s.stats.dropped_queue_full, 2);
        assert_eq!(s.stats.dropped_until_key, 1);
        let a = rx.recv().await.unwrap();
        let v = rx.recv().await.unwrap();
        assert!(matches!(
            a,
            IngestMsg::Packet(Packet {
                track: Track::Audio,
                ..
            })
        ));
        assert!(matches!(
            v,
            IngestMsg::Packet(Packet {
                track: Track::Video,
                key: true,
                ..
            })
        ));
        // No drop for clear_after (0 s here): the interval ends with its counts.
        s.tick().await;
        match rx.recv().await.unwrap() {
            IngestMsg::Delivery(t, None) => {
                assert_eq!((t.kind, t.phase), (DefectKind::ProbeOverload, Phase::End));
                let get = |k: &str| {
                    t.metrics
                        .iter()
                        .find(|(n, _)| *n == k)
                        .map(|(_, v)| v.clone())
                };
                assert_eq!(get("dropped_packets"), Some(Metric::Int(3)));
                assert_eq!(get("dropped_queue_full"), Some(Metric::Int(2)));
                assert_eq!(get("dropped_until_key"), Some(Metric::Int(1)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn delivery_defects_open_once_and_close_with_their_onset() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut s = Sink::new(tx, LiveConfig::default());
        s.source_down("connection refused", 1).await;
        s.source_down("connection refused", 2).await; // still the same outage
        s.packet(pkt(Track::Video, true)).await; // media: outage over
        let stats = s.finish(EndReason::EndOfInput).await;
        assert_eq!(stats.reconnects, 2);
        let mut got = vec![];
        while let Ok(m) = rx.try_recv() {
            got.push(m);
        }
        let kinds: Vec<String> = got
            .iter()
            .map(|m| match m {
                IngestMsg::Delivery(t, _) => format!("{}:{:?}", t.kind.as_str(), t.phase),
                IngestMsg::Packet(_) => "packet".into(),
                IngestMsg::End(_) => "end".into(),
                IngestMsg::Program(_) => "program".into(),
                IngestMsg::AvSync { .. } => "av_sync".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            ["source_down:Start", "source_down:End", "packet", "end"]
        );
        if let IngestMsg::Delivery(t, _) = &got[1] {
            let attempts = t
                .metrics
                .iter()
                .find(|(k, _)| *k == "attempts")
                .map(|(_, v)| v.clone());
            assert_eq!(attempts, Some(Metric::Int(2)));
        }
    }

    #[tokio::test]
    async fn queue_bounded_in_bytes_and_oversized_access_units_reported() {
        use crate::ingest::pool::{BufPool, StreamBudget};
        let (tx, mut rx) = mpsc::channel(64);
        let cfg = LiveConfig {
            clear_after: 0.0,
            ..LiveConfig::default()
        };
        let mut s = Sink::new(tx, cfg);
        // 8 MiB: queue 2 MiB, access unit 1 MiB.
        let pool = BufPool::for_budget(StreamBudget::from_mb(8).unwrap());
        s.set_pool(pool.clone());
        let pkt = |key: bool, len: usize| Packet {
            track: Track::Video,
            pts: Some(0),
            dts: None,
            key,
            damaged: false,
            data: vec![0; len],
        };
        s.packet(pkt(true, 900 << 10)).await;
        s.packet(pkt(false, 900 << 10)).await;
        // Room for 62 more packets by count, not by bytes: dropped, counted.
        s.packet(pkt(false, 900 << 10)).await;
        assert_eq!((s.stats.packets, s.stats.dropped_queue_full), (2, 1));
        // The decoder releases one packet's bytes: a key frame fits again.
        let first = rx.recv().await.unwrap();
        if let IngestMsg::Packet(p) = first {
            pool.release(p.data.len());
        }
        s.packet(pkt(true, 900 << 10)).await;
        assert_eq!(s.stats.packets, 3);
        // An access unit above the budget's ceiling: dropped, counted, ts_error.
        s.packet(pkt(true, (1 << 20) + 1)).await;
        assert_eq!(s.stats.oversized, 1);
        assert!(s.is_open(DefectKind::TsError));
        assert_eq!(s.stats.packets, 3);
        s.tick().await; // clear_after 0: the interval ends with its count
        assert!(!s.is_open(DefectKind::TsError));
        let mut ts_errors = vec![];
        while let Ok(m) = rx.try_recv() {
            if let IngestMsg::Delivery(t, _) = m {
                if t.kind == DefectKind::TsError {
                    ts_errors.push(t);
                }
            }
        }
        assert_eq!(ts_errors.len(), 2, "{ts_errors:?}");
        let n = ts_errors[1]
            .metrics
            .iter()
            .find(|(k, _)| *k == "oversized_access_units")
            .map(|(_, v)| v.clone());
        assert_eq!(n, Some(Metric::Int(1)));
    }

    #[tokio::test]
    async fn a_full_byte_queue_does_not_hang_once_the_decoder_is_gone() {
        use crate::ingest::pool::{BufPool, StreamBudget};
        let (tx, rx) = mpsc::channel(64);
        let mut s = Sink::new(tx, LiveConfig::default());
        let pool = BufPool::for_budget(StreamBudget::from_mb(8).unwrap()); // queue 2 MiB
        s.set_pool(pool);
        let pkt = || Packet {
            track: Track::Video,
            pts: Some(0),
            dts: None,
            key: true,
            damaged: false,
            data: vec![0; 900 << 10],
        };
        s.packet_wait(pkt()).await;
        s.packet_wait(pkt()).await;
        drop(rx); // the decode thread died with 1.8 MiB queued: never released
        tokio::time::timeout(std::time::Duration::from_secs(5), s.packet_wait(pkt()))
            .await
            .expect("packet_wait returns once the receiver is gone");
        assert_eq!(s.stats.packets, 2);
    }

    #[tokio::test]
    async fn defects_about_media_carry_their_span_to_the_end() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut s = Sink::new(tx, LiveConfig::default());
        let span = MediaSpan {
            start_pts: 900_000,
            end_pts: Some(1_080_000),
        };
        s.open_media(DefectKind::SegmentError, Metrics::new(), span)
            .await;
        // Opened again while open: the span grows, never shrinks; the start stays.
        let later = MediaSpan {
            start_pts: 1_080_000,
            end_pts: Some(1_260_000),
        };
        s.open_media(DefectKind::SegmentError, Metrics::new(), later)
            .await;
        s.extend_media(DefectKind::SegmentError, 1_000_000);
        // A defect opened without media stays on the session clock.
        s.open(DefectKind::SlowDownload, Metrics::new()).await;
        s.extend_media(DefectKind::SlowDownload, 5);
        s.finish(EndReason::EndOfInput).await;
        let mut got = vec![];
        while let Ok(IngestMsg::Delivery(t, _)) = rx.try_recv() {
            got.push((t.kind, t.phase, t.media));
        }
        let end_span = MediaSpan {
            start_pts: 900_000,
            end_pts: Some(1_260_000),
        };
        assert_eq!(
            got,
            [
                (DefectKind::SegmentError, Phase::Start, Some(span)),
                (DefectKind::SlowDownload, Phase::Start, None),
                (DefectKind::SegmentError, Phase::End, Some(end_span)),
                (DefectKind::SlowDownload, Phase::End, None),
            ]
        );
    }
}
