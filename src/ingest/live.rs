//! What every live source shares: the bounded packet queue with its overflow policy,
//! the delivery-defect bookkeeping (stall, source_down, ...), reconnect backoff and the
//! stream's session clock.
//!
//! Overflow policy of the packet queue: **drop-until-keyframe**. When the decode thread
//! falls behind a live source, the packet that does not fit is dropped, and so is every
//! following video packet until the next key frame (a P-frame without its reference is
//! garbage); audio packets that do not fit are dropped one by one. Every drop is counted
//! in [`LiveStats`] and reported as a `probe_overload` delivery defect (opened at the
//! first drop, closed after `clear_after` seconds without one, with the drop counts of
//! the interval in its metrics). Memory stays bounded by the queue length.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::{IngestMsg, Packet, ProgramInfo, Track};
use crate::detect::{DefectKind, Metric, Metrics, Phase, Transition};
use crate::event::EndReason;

/// Settings shared by live sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Seconds without media (by the wall clock) before a `stall` is reported. 2.0.
    pub stall_after: f64,
    /// First reconnect delay, seconds. 0.5.
    pub backoff_initial: f64,
    /// Largest reconnect delay, seconds. 30.
    pub backoff_max: f64,
    /// Seconds allowed to connect (TCP + TLS + RTSP DESCRIBE/SETUP/PLAY). 10.
    pub connect_timeout: f64,
    /// Seconds without any byte from a connected source before it counts as gone. 10.
    pub read_timeout: f64,
    /// Seconds of clean delivery that end a `packet_loss` or `ts_error` interval. 2.0.
    pub clear_after: f64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            stall_after: 2.0,
            backoff_initial: 0.5,
            backoff_max: 30.0,
            connect_timeout: 10.0,
            read_timeout: 10.0,
            clear_after: 2.0,
        }
    }
}

impl LiveConfig {
    /// Checks value ranges (every field is seconds: finite, 0 to 3600); returns a message
    /// naming the field. Out-of-range values would panic `Duration::from_secs_f64` (`inf`,
    /// NaN, negative) or saturate timers.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("stall_after", self.stall_after),
            ("backoff_initial", self.backoff_initial),
            ("backoff_max", self.backoff_max),
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("clear_after", self.clear_after),
        ] {
            if !(v.is_finite() && (0.0..=3600.0).contains(&v)) {
                return Err(format!(
                    "{name} must be between 0 and 3600 seconds, got {v}"
                ));
            }
        }
        Ok(())
    }
}

/// A shutdown signal every long wait races (a `watch` of "stop now").
#[derive(Debug, Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// A signal and its trigger.
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// True once triggered.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when triggered (or when the trigger is dropped).
    pub async fn wait(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                // The trigger is gone: nobody can stop us any more; never resolve.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.wait() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Capped exponential backoff with jitter ("full jitter" on the upper half), so a fleet
/// of probes does not reconnect in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: f64,
    max: f64,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: f64, max: f64) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Backoff {
            initial: initial.max(0.01),
            max: max.max(initial.max(0.01)),
            attempt: 0,
            seed,
        }
    }

    /// Attempts so far since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The next delay: `initial × 2^attempt`, capped, then uniformly in [d/2, d].
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.initial * 2f64.powi(self.attempt.min(30) as i32);
        let d = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift: jitter needs no cryptographic quality.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac = (self.seed % 1000) as f64 / 1000.0;
        Duration::from_secs_f64(d * (0.5 + 0.5 * frac))
    }

    /// Media flows again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Counters of a live source.
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
}

#[derive(Debug, Clone)]
struct Open {
    kind: DefectKind,
    start_s: f64,
    metrics: Metrics,
}

/// The sending side of a live source. See the module docs for the overflow policy.
#[derive(Debug)]
pub struct LiveSink {
    tx: mpsc::Sender<IngestMsg>,
    cfg: LiveConfig,
    started: Instant,
    last_media: Option<Instant>,
    dropping_video: bool,
    /// Last packet dropped for lack of room (closes `probe_overload` when old enough).
    last_drop: Option<Instant>,
    /// A `probe_overload` start waiting for room in the queue (see `dropped`).
    overload_start: Option<Transition>,
    /// Drop counters when the open `probe_overload` began (its metrics count from there).
    drops_at_onset: (u64, u64),
    open: heapless::Vec<Open, 8>,
    pub stats: LiveStats,
    /// Where [`LiveSink::tick`] copies the counters for a stats reporter (agent).
    shared: Option<std::sync::Arc<std::sync::Mutex<LiveStats>>>,
}

impl LiveSink {
    pub fn new(tx: mpsc::Sender<IngestMsg>, cfg: LiveConfig) -> Self {
        LiveSink {
            tx,
            cfg,
            started: Instant::now(),
            last_media: None,
            dropping_video: false,
            last_drop: None,
            overload_start: None,
            drops_at_onset: (0, 0),
            open: heapless::Vec::new(),
            stats: LiveStats::default(),
            shared: None,
        }
    }

    /// Copies the counters into `shared` at every [`LiveSink::tick`].
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
        if p.track == Track::Video && self.dropping_video {
            if !p.key {
                self.stats.dropped_until_key += 1;
                self.dropped(false).await;
                return;
            }
            self.dropping_video = false;
        }
        let track = p.track;
        match self.tx.try_send(IngestMsg::Packet(p)) {
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
        // Capacity 8 ≥ the number of delivery kinds: at most one open per kind.
        let _ = self.open.push(Open {
            kind: DefectKind::ProbeOverload,
            start_s,
            metrics: metrics.clone(),
        });
        self.overload_start = Some(Transition {
            kind: DefectKind::ProbeOverload,
            phase: Phase::Start,
            start_s,
            end_s: None,
            metrics,
            slot: 0,
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
        crate::detect::put(
            &mut m,
            "dropped_packets",
            Metric::Int((full + until_key) as i64),
        );
        crate::detect::put(&mut m, "dropped_queue_full", Metric::Int(full as i64));
        crate::detect::put(&mut m, "dropped_until_key", Metric::Int(until_key as i64));
        m
    }

    /// Hands over an A/V offset measured from RTCP sender reports. Never waits: one is
    /// due every few seconds, and losing one while decode is behind costs nothing.
    pub fn av_sync(&mut self, pts: i64, offset_s: f64) {
        let _ = self.tx.try_send(IngestMsg::AvSync { pts, offset_s });
    }

    /// Hands one media packet over, waiting for room (overflow policy *block*): for
    /// sources that are not live, such as a VOD playlist, where nothing may be dropped.
    pub async fn packet_wait(&mut self, p: Packet) {
        self.arrived(p.data.len()).await;
        if self.tx.send(IngestMsg::Packet(p)).await.is_ok() {
            self.stats.packets += 1;
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
        if let Some(o) = self.open.iter_mut().find(|o| o.kind == kind) {
            o.metrics = metrics;
            return;
        }
        let t = Transition {
            kind,
            phase: Phase::Start,
            start_s,
            end_s: None,
            metrics: metrics.clone(),
            slot: 0,
        };
        // Capacity 8 ≥ the number of delivery kinds: at most one open per kind.
        let _ = self.open.push(Open {
            kind,
            start_s,
            metrics,
        });
        let _ = self.tx.send(IngestMsg::Delivery(Box::new(t), None)).await;
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
            if let Some(slot) = metrics.iter_mut().find(|(n, _)| *n == k) {
                slot.1 = v;
            } else {
                let _ = metrics.push((k, v));
            }
        }
        let t = Transition {
            kind,
            phase: Phase::End,
            start_s: o.start_s,
            end_s: Some(end_s.max(o.start_s)),
            metrics,
            slot: 0,
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
            crate::detect::put(&mut m, "stall_after_s", Metric::Num(self.cfg.stall_after));
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
        crate::detect::put(&mut m, "reason", Metric::Text(reason.into()));
        crate::detect::put(&mut m, "attempts", Metric::Int(i64::from(attempt)));
        if self.is_open(DefectKind::SourceDown) {
            self.update(DefectKind::SourceDown, |mm| *mm = m);
        } else {
            self.open_at(DefectKind::SourceDown, onset, m).await;
        }
    }

    /// Ends the source: closes every open delivery defect now and sends `End(reason)`.
    pub async fn finish(mut self, reason: EndReason) -> LiveStats {
        let now = self.now_s();
        let kinds: heapless::Vec<DefectKind, 8> = self.open.iter().map(|o| o.kind).collect();
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

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut b = Backoff::new(0.5, 8.0);
        let d: Vec<f64> = (0..8).map(|_| b.next_delay().as_secs_f64()).collect();
        assert!((0.25..=0.5).contains(&d[0]), "{d:?}");
        assert!((0.5..=1.0).contains(&d[1]), "{d:?}");
        assert!((2.0..=4.0).contains(&d[3]), "{d:?}");
        for x in &d[4..] {
            assert!((4.0..=8.0).contains(x), "capped: {d:?}");
        }
        assert_eq!(b.attempt(), 8);
        b.reset();
        assert!(b.next_delay().as_secs_f64() <= 0.5);
    }

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
        let mut s = LiveSink::new(tx, cfg);
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
        let mut s = LiveSink::new(tx, LiveConfig::default());
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
}
