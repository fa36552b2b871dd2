//! The per-stream analysis pipeline: decoders + detectors + event factory, driven on
//! the stream's own decode thread.
//!
//! [`Analyzer`] is synchronous and owns everything a stream needs after ingest:
//! `handle(IngestMsg)` decodes, reduces, detects and hands out [`Event`]s. The same
//! analyzer serves files, the demo and (later) live sources. [`spawn_decode_thread`]
//! runs one on a named OS thread between two bounded channels.

use std::time::Instant;

use tokio::sync::mpsc;

use crate::config::DetectConfig;
use crate::decode::audio::{AudioDecoder, AudioFormat, AudioStats};
use crate::decode::video::{VideoDecoder, VideoOut, VideoStats};
use crate::decode::AudioLevel;
use crate::defect::EndReason;
use crate::defect::{put, DefectKind, Metric, Metrics, Phase, Transition};
use crate::detect::avsync::{AvSyncDetector, PtsOffsetEstimator, SyncSource};
use crate::detect::black::BlackDetector;
use crate::detect::corruption::{CorruptionDetector, CorruptionSample};
use crate::detect::fps::LowFpsDetector;
use crate::detect::freeze::FreezeDetector;
use crate::detect::silence::SilenceDetector;
use crate::error::Result;
use crate::event::{Event, EventFactory};
use crate::ingest::{Codec, IngestMsg, Packet, ProgramInfo, Track};

/// Counters of one stream's analysis.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnalyzerStats {
    pub video: VideoStats,
    pub audio: AudioStats,
    /// Time spent inside openh264 (ns).
    pub decode_ns: u64,
    /// Time spent reducing pictures to thumbs (ns).
    pub reduce_ns: u64,
    /// Time spent in the video and audio detectors (ns).
    pub detect_ns: u64,
    /// Events emitted.
    pub events: u64,
    /// Media seconds analysed.
    pub media_s: f64,
}

/// `codec` name of the `unsupported_codec` event for an SPS above `max_pixels`.
const REFUSED_CODEC: &str = "h264_above_max_resolution";
/// `codec` name of the `unsupported_codec` event for an SPS that does not parse.
const UNPARSEABLE_SPS: &str = "h264_unparseable_sps";

/// An open `unsupported_codec` defect: which track and why.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Unsupported {
    track: Track,
    start_s: f64,
    codec: &'static str,
    stream_type: i64,
    width: i64,
    height: i64,
}

/// Decoders and detectors of one stream. See the module docs.
pub struct Analyzer {
    cfg: DetectConfig,
    events: EventFactory,
    /// PTS (90 kHz) that media time 0 refers to: the first timestamp seen.
    origin: Option<i64>,
    video: Option<VideoDecoder>,
    audio: Option<AudioDecoder>,
    black: BlackDetector,
    freeze: FreezeDetector,
    corruption: CorruptionDetector,
    silence: SilenceDetector,
    low_fps: LowFpsDetector,
    /// `av_desync` from audio PTS against video DTS at arrival (TS, HLS) ...
    av_est: PtsOffsetEstimator,
    /// ... or from RTCP sender reports once the first one arrives (RTSP).
    av_sync: AvSyncDetector,
    /// Open `unsupported_codec` defects, one slot per track ([`track_slot`]).
    unsupported: [Option<Unsupported>; 2],
    /// A `probe_overload` is open: ingest drops packets (see `overload`).
    overloaded: bool,
    /// End of the media analysed so far (seconds): last sample time + its duration.
    media_end: f64,
    last_frame_t: Option<f64>,
    frame_dur: f64,
    detect_ns: u64,
    emitted: u64,
    /// Where packet buffers go back to after decoding (see `ingest::pool`).
    pool: Option<crate::ingest::pool::BufPool>,
    /// Transitions found while a decoder runs, emitted right after it: reused, never
    /// capped (a PES may carry any number of AAC frames, each able to start or end a
    /// defect; nothing found may be dropped).
    pending: Vec<Transition>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Analyzer {
    /// An analyzer for stream `stream` of probe `probe`.
    pub fn new(probe: &str, stream: &str, cfg: DetectConfig) -> Result<Self> {
        cfg.validate().map_err(crate::error::Error::Config)?;
        Ok(Analyzer {
            events: EventFactory::new(probe, stream),
            origin: None,
            video: None,
            audio: None,
            black: BlackDetector::new(cfg.black.clone()),
            freeze: FreezeDetector::new(cfg.freeze.clone()),
            corruption: CorruptionDetector::new(cfg.corruption.clone()),
            silence: SilenceDetector::new(cfg.silence.clone()),
            low_fps: LowFpsDetector::new(cfg.low_fps.clone()),
            av_est: PtsOffsetEstimator::new(cfg.av_sync.window),
            av_sync: AvSyncDetector::new(&cfg.av_sync, SyncSource::Pts),
            unsupported: [None, None],
            overloaded: false,
            media_end: 0.0,
            last_frame_t: None,
            frame_dur: 0.04,
            detect_ns: 0,
            emitted: 0,
            pool: None,
            pending: Vec::with_capacity(8),
            cfg,
        })
    }

    /// Hands decoded packets' buffers back to `pool` for ingest to reuse.
    pub fn set_pool(&mut self, pool: crate::ingest::pool::BufPool) {
        self.pool = Some(pool);
    }

    /// Counters so far.
    pub fn stats(&self) -> AnalyzerStats {
        let video = self.video.as_ref().map(|v| v.stats).unwrap_or_default();
        AnalyzerStats {
            video,
            audio: self.audio.as_ref().map(|a| a.stats).unwrap_or_default(),
            decode_ns: video.decode_ns,
            reduce_ns: video.reduce_ns,
            detect_ns: self.detect_ns,
            events: self.emitted,
            media_s: self.media_end,
        }
    }

    /// Media seconds of a 90 kHz timestamp.
    fn secs(&self, pts: i64) -> f64 {
        (pts - self.origin.unwrap_or(pts)) as f64 / 90_000.0
    }

    /// Handles one message from ingest; events go to `out` as they are detected.
    pub fn handle(&mut self, msg: IngestMsg, out: &mut dyn FnMut(Event)) {
        match msg {
            IngestMsg::Program(p) => self.program(&p, out),
            IngestMsg::Packet(p) => {
                self.packet(&p, out);
                if let Some(pool) = &self.pool {
                    // The queue's byte bound: these bytes are no longer queued.
                    pool.release(p.data.len());
                    pool.give(p.data);
                }
            }
            IngestMsg::Delivery(t, reason) => {
                if t.kind == DefectKind::ProbeOverload {
                    self.overload(t.phase == Phase::Start, out);
                }
                let reconnected = t.kind == DefectKind::SourceDown && t.phase == Phase::End;
                let t = self.on_media_clock(*t);
                self.emit(&t, reason, out);
                if reconnected {
                    self.new_av_baseline(out);
                }
            }
            IngestMsg::End(reason) => self.finish(reason, out),
            IngestMsg::AvSync { pts, offset_s } => self.sender_report(pts, offset_s, out),
        }
    }

    /// A delivery defect about a piece of media (see [`Transition::media`]) is timed
    /// like picture defects: its span's media seconds in `start_s`/`end_s`, the
    /// source's session seconds kept as `session_start_s`/`session_end_s`.
    fn on_media_clock(&self, mut t: Transition) -> Transition {
        let Some(span) = t.media.take() else {
            return t;
        };
        put(&mut t.metrics, "session_start_s", Metric::Num(t.start_s));
        if let Some(e) = t.end_s {
            put(&mut t.metrics, "session_end_s", Metric::Num(e));
        }
        t.start_s = self.secs(span.start_pts).max(0.0);
        if t.end_s.is_some() {
            let end = span.end_pts.map_or(t.start_s, |p| self.secs(p));
            t.end_s = Some(end.max(t.start_s));
        }
        t
    }

    /// The probe drops packets (decode is behind a live source) or stopped doing so.
    /// Frames we dropped ourselves are not the source's frame rate: `low_fps` is not
    /// judged while the overload lasts, and starts afresh after it.
    fn overload(&mut self, on: bool, out: &mut dyn FnMut(Event)) {
        self.overloaded = on;
        if on {
            let t = self.last_frame_t.unwrap_or(self.media_end);
            if let Some(tr) = self.low_fps.finish(t) {
                self.emit(&tr, None, out);
            }
            self.low_fps = LowFpsDetector::new(self.cfg.low_fps.clone());
        }
    }

    /// A new session (after `source_down`) has new RTP timelines whose A/V offset owes
    /// nothing to the old one: `av_desync` learns its baseline again.
    fn new_av_baseline(&mut self, out: &mut dyn FnMut(Event)) {
        let t = self.media_end;
        if let Some(tr) = self.av_sync.finish(t) {
            self.emit(&tr, None, out);
        }
        self.av_sync = AvSyncDetector::new(&self.cfg.av_sync, self.av_sync.source());
        self.av_est.reset();
    }

    /// An A/V offset from RTCP sender reports: from now on they alone feed `av_desync`
    /// (exact, where the PTS-at-arrival estimate is a statistic).
    fn sender_report(&mut self, pts: i64, offset_s: f64, out: &mut dyn FnMut(Event)) {
        if self.origin.is_none() {
            self.origin = Some(pts);
        }
        let t = self.secs(pts);
        if self.av_sync.source() != SyncSource::RtcpSr {
            if let Some(tr) = self.av_sync.finish(t) {
                self.emit(&tr, None, out);
            }
            self.av_sync = AvSyncDetector::new(&self.cfg.av_sync, SyncSource::RtcpSr);
        }
        if let Some(tr) = self.av_sync.observe(t, offset_s) {
            self.emit(&tr, None, out);
        }
    }

    fn emit(&mut self, t: &Transition, reason: Option<EndReason>, out: &mut dyn FnMut(Event)) {
        let ev = self.events.make(t, reason);
        self.emitted += 1;
        tracing::debug!(
            stream = %ev.stream, kind = ev.kind.as_str(), state = ?ev.state,
            start_s = ev.start_s, end_s = ?ev.end_s, "defect"
        );
        out(ev);
    }

    fn program(&mut self, p: &ProgramInfo, out: &mut dyn FnMut(Event)) {
        let t = self.media_end;
        // Tracks may have changed: the arrival statistics start over (the baseline stays).
        self.av_est.reset();
        // Video track.
        match p.video.as_ref().map(|v| (v.codec, v.stream_type)) {
            Some((Codec::H264, _)) => {
                self.close_unsupported(Track::Video, t, None, out);
                if self.video.is_none() {
                    match VideoDecoder::new(self.cfg.max_pixels) {
                        Ok(d) => self.video = Some(d),
                        Err(e) => tracing::error!(error = %e, "video decoder unavailable"),
                    }
                }
            }
            Some((codec, stream_type)) => {
                self.video = None;
                self.open_unsupported(
                    Track::Video,
                    t,
                    codec.name(),
                    i64::from(stream_type),
                    (0, 0),
                    out,
                );
            }
            None => {
                self.video = None;
                self.close_unsupported(Track::Video, t, None, out);
            }
        }
        // Audio track.
        let format = match p.audio.as_ref().map(|a| a.codec) {
            Some(Codec::Aac) => Some(AudioFormat::AacAdts),
            Some(Codec::PcmS16le {
                sample_rate,
                channels,
            }) => Some(AudioFormat::PcmS16le {
                sample_rate,
                channels,
            }),
            Some(Codec::G711 {
                alaw,
                sample_rate,
                channels,
            }) => Some(AudioFormat::G711 {
                alaw,
                sample_rate,
                channels,
            }),
            _ => None,
        };
        match (format, p.audio.as_ref()) {
            (Some(f), _) => {
                self.close_unsupported(Track::Audio, t, None, out);
                if self.audio.as_ref().map(|a| a.format()) != Some(f) {
                    self.audio = Some(AudioDecoder::new(f));
                }
            }
            (None, Some(a)) => {
                self.audio = None;
                self.open_unsupported(
                    Track::Audio,
                    t,
                    a.codec.name(),
                    i64::from(a.stream_type),
                    (0, 0),
                    out,
                );
            }
            (None, None) => {
                self.audio = None;
                self.close_unsupported(Track::Audio, t, None, out);
            }
        }
    }

    fn open_unsupported(
        &mut self,
        track: Track,
        t: f64,
        codec: &'static str,
        stream_type: i64,
        (width, height): (i64, i64),
        out: &mut dyn FnMut(Event),
    ) {
        let slot = &mut self.unsupported[track_slot(track)];
        if slot.is_some() {
            return;
        }
        let u = Unsupported {
            track,
            start_s: t,
            codec,
            stream_type,
            width,
            height,
        };
        *slot = Some(u);
        let tr = unsupported_transition(&u, Phase::Start, None);
        self.emit(&tr, None, out);
    }

    fn close_unsupported(
        &mut self,
        track: Track,
        t: f64,
        reason: Option<EndReason>,
        out: &mut dyn FnMut(Event),
    ) {
        if let Some(u) = self.unsupported[track_slot(track)].take() {
            let tr = unsupported_transition(&u, Phase::End, Some(t.max(u.start_s)));
            self.emit(&tr, reason, out);
        }
    }

    fn packet(&mut self, p: &Packet, out: &mut dyn FnMut(Event)) {
        let Some(pts) = p.pts.or(p.dts) else {
            // Without any timestamp a packet cannot be placed on the timeline; AAC PES
            // without PTS continue from the previous one inside the audio decoder.
            if p.track == Track::Audio {
                self.audio_packet(None, &p.data, out);
            }
            return;
        };
        if self.origin.is_none() {
            self.origin = Some(pts);
        }
        match p.track {
            Track::Video => {
                self.av_arrival(Track::Video, p.dts.unwrap_or(pts), out);
                self.video_packet(pts, p.key, &p.data, out);
            }
            Track::Audio => {
                self.audio_packet(Some(pts), &p.data, out);
                // The end of the packet's sound (where the next one starts): see
                // `detect::avsync` for why the end and not the PTS.
                if let Some(end) = self.audio.as_ref().and_then(AudioDecoder::next_pts) {
                    self.av_arrival(Track::Audio, end, out);
                }
            }
        }
    }

    /// Feeds the PTS-at-arrival A/V offset estimate (unless sender reports took over):
    /// `ts` is a video packet's DTS, or the end time of an audio packet's samples.
    fn av_arrival(&mut self, track: Track, ts: i64, out: &mut dyn FnMut(Event)) {
        if self.av_sync.source() != SyncSource::Pts {
            return;
        }
        let t = self.secs(ts);
        match track {
            Track::Video => self.av_est.video(t),
            Track::Audio => {
                if let Some((at, offset)) = self.av_est.audio(t) {
                    tracing::trace!(at, offset, "A/V offset estimate");
                    if let Some(tr) = self.av_sync.observe(at, offset) {
                        self.emit(&tr, None, out);
                    }
                }
            }
        }
    }

    /// Runs the video detectors on one decoded picture.
    fn observe_frame(
        &mut self,
        th: &crate::decode::Thumb,
        origin: i64,
        found: &mut dyn FnMut(Transition),
    ) {
        let t = (th.pts - origin) as f64 / 90_000.0;
        if let Some(last) = self.last_frame_t {
            let d = t - last;
            if d > 0.001 && d < 1.0 {
                self.frame_dur = d;
            }
        }
        self.last_frame_t = Some(t);
        self.media_end = self.media_end.max(t + self.frame_dur);
        tracing::trace!(
            t,
            luma = th.luma_mean,
            black_share = th.share_below(40),
            edge_ratio = th.edge_ratio,
            edge_step = th.edge_boundary,
            "frame"
        );
        let d0 = Instant::now();
        let black = self.black.is_black(th);
        let overloaded = self.overloaded;
        for tr in [
            self.black.observe(t, th),
            self.freeze.observe(t, th, black),
            self.corruption.observe(t, CorruptionSample::Frame(th)),
            if overloaded {
                None
            } else {
                self.low_fps.observe(t)
            },
        ]
        .into_iter()
        .flatten()
        {
            found(tr);
        }
        self.detect_ns += d0.elapsed().as_nanos() as u64;
    }

    fn video_packet(&mut self, pts: i64, key: bool, data: &[u8], out: &mut dyn FnMut(Event)) {
        let Some(mut dec) = self.video.take() else {
            return;
        };
        let mut transitions = std::mem::take(&mut self.pending);
        let mut refused = None;
        let origin = self.origin.unwrap_or(pts);
        dec.decode(pts, key, data, &mut |o| match o {
            VideoOut::Frame(th) => self.observe_frame(th, origin, &mut |tr| transitions.push(tr)),
            VideoOut::Error { pts: epts, .. } => {
                let t = (epts - origin) as f64 / 90_000.0;
                self.media_end = self.media_end.max(t);
                // A rejected picture still was a picture on the timeline.
                let overloaded = self.overloaded;
                for tr in [
                    self.corruption.observe(t, CorruptionSample::DecodeError),
                    if overloaded {
                        None
                    } else {
                        self.low_fps.observe(t)
                    },
                ]
                .into_iter()
                .flatten()
                {
                    transitions.push(tr);
                }
            }
            VideoOut::Refused { width, height } => refused = Some((width, height)),
        });
        self.video = Some(dec);
        for tr in transitions.drain(..) {
            self.emit(&tr, None, out);
        }
        self.pending = transitions;
        if let Some((w, h)) = refused {
            let t = self.secs(pts);
            self.open_unsupported(
                Track::Video,
                t,
                if (w, h) == (0, 0) {
                    UNPARSEABLE_SPS
                } else {
                    REFUSED_CODEC
                },
                0x1B,
                (i64::from(w), i64::from(h)),
                out,
            );
        } else if !self.video.as_ref().is_some_and(VideoDecoder::is_refusing)
            && self
                .unsupported
                .iter()
                .flatten()
                .any(|u| u.codec == REFUSED_CODEC || u.codec == UNPARSEABLE_SPS)
        {
            let t = self.secs(pts);
            self.close_unsupported(Track::Video, t, None, out);
        }
    }

    fn audio_packet(&mut self, pts: Option<i64>, data: &[u8], out: &mut dyn FnMut(Event)) {
        let Some(mut dec) = self.audio.take() else {
            return;
        };
        let origin = self.origin.unwrap_or(0);
        let mut transitions = std::mem::take(&mut self.pending);
        dec.decode(pts, data, &mut |lvl: AudioLevel| {
            let t = (lvl.pts - origin) as f64 / 90_000.0;
            self.media_end = self.media_end.max(t + lvl.duration as f64 / 90_000.0);
            let d0 = Instant::now();
            if let Some(tr) = self.silence.observe(t, &lvl) {
                transitions.push(tr);
            }
            self.detect_ns += d0.elapsed().as_nanos() as u64;
        });
        self.audio = Some(dec);
        for tr in transitions.drain(..) {
            self.emit(&tr, None, out);
        }
        self.pending = transitions;
    }

    /// Ends the analysis: flushes the decoder and closes every open defect at the end
    /// of the media seen, marking the `end` events with `reason`.
    pub fn finish(&mut self, reason: EndReason, out: &mut dyn FnMut(Event)) {
        if let Some(mut dec) = self.video.take() {
            let origin = self.origin.unwrap_or(0);
            let mut transitions = std::mem::take(&mut self.pending);
            dec.flush(&mut |o| {
                if let VideoOut::Frame(th) = o {
                    self.observe_frame(th, origin, &mut |tr| transitions.push(tr));
                }
            });
            self.video = Some(dec);
            for tr in transitions.drain(..) {
                self.emit(&tr, None, out);
            }
            self.pending = transitions;
        }
        let t = self.media_end;
        let ends = [
            self.black.finish(t),
            self.freeze.finish(t),
            self.corruption.finish(t),
            self.silence.finish(t),
            self.low_fps.finish(t),
            self.av_sync.finish(t),
        ];
        for tr in ends.into_iter().flatten() {
            self.emit(&tr, Some(reason), out);
        }
        self.close_unsupported(Track::Video, t, Some(reason), out);
        self.close_unsupported(Track::Audio, t, Some(reason), out);
        // Safety net: a source that ended without closing its delivery defects (it
        // should close them itself, with its own clock) still gets its ends.
        let open: Vec<(DefectKind, u8, f64)> = self.events.open_defects().collect();
        for (kind, slot, start_s) in open {
            let tr = Transition {
                kind,
                phase: Phase::End,
                start_s,
                end_s: Some(start_s),
                metrics: Metrics::new(),
                slot,
                media: None,
            };
            self.emit(&tr, Some(reason), out);
        }
    }
}

/// Index of a track's `unsupported_codec` slot.
fn track_slot(track: Track) -> usize {
    match track {
        Track::Video => 0,
        Track::Audio => 1,
    }
}

fn unsupported_transition(u: &Unsupported, phase: Phase, end: Option<f64>) -> Transition {
    let mut m = Metrics::new();
    put(
        &mut m,
        "track",
        Metric::Str(match u.track {
            Track::Video => "video",
            Track::Audio => "audio",
        }),
    );
    put(&mut m, "codec", Metric::Str(u.codec));
    put(&mut m, "stream_type", Metric::Int(u.stream_type));
    if u.width > 0 {
        put(&mut m, "width", Metric::Int(u.width));
        put(&mut m, "height", Metric::Int(u.height));
    }
    Transition {
        kind: DefectKind::UnsupportedCodec,
        phase,
        start_s: u.start_s,
        end_s: end,
        metrics: m,
        slot: match u.track {
            Track::Video => 0,
            Track::Audio => 1,
        },
        media: None,
    }
}

/// Runs `analyzer` on a new OS thread named `name`: reads `rx` until it closes or an
/// [`IngestMsg::End`] arrives, sends events to `tx` (blocking when full: events are
/// never dropped), and returns the analyzer for its final stats.
pub fn spawn_decode_thread(
    name: String,
    analyzer: Analyzer,
    rx: mpsc::Receiver<IngestMsg>,
    tx: mpsc::Sender<Event>,
) -> std::io::Result<std::thread::JoinHandle<Analyzer>> {
    spawn_decode_thread_shared(name, analyzer, rx, tx, None)
}

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

/// [`spawn_decode_thread`] that also keeps `shared` up to date.
pub fn spawn_decode_thread_shared(
    name: String,
    mut analyzer: Analyzer,
    mut rx: mpsc::Receiver<IngestMsg>,
    tx: mpsc::Sender<Event>,
    shared: Option<std::sync::Arc<std::sync::Mutex<SharedStats>>>,
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
        while let Some(msg) = rx.blocking_recv() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Elementary;

    /// 20 ADTS frames: silence and a tone alternating every two frames.
    const ALTERNATING_AAC: &[u8] = include_bytes!("../tests/data/aac/alternating.aac");

    fn adts_frames(mut d: &[u8]) -> Vec<&[u8]> {
        let mut v = vec![];
        while d.len() >= 7 {
            let len =
                (usize::from(d[3] & 3) << 11) | (usize::from(d[4]) << 3) | usize::from(d[5] >> 5);
            v.push(&d[..len]);
            d = &d[len..];
        }
        v
    }

    /// Silence events of the clip fed as `packets` (each with its own PTS).
    fn silence_events(packets: &[(i64, Vec<u8>)]) -> Vec<(Phase, f64, Option<f64>)> {
        let mut cfg = DetectConfig::default();
        cfg.silence.min_duration = 0.0;
        let mut a = Analyzer::new("p", "s", cfg).unwrap();
        let mut events = vec![];
        a.handle(
            IngestMsg::Program(ProgramInfo {
                video: None,
                audio: Some(Elementary {
                    pid: 0x101,
                    stream_type: 0x0F,
                    codec: Codec::Aac,
                }),
                other_streams: 0,
            }),
            &mut |e| events.push(e),
        );
        for (pts, data) in packets {
            a.handle(
                IngestMsg::Packet(Packet {
                    track: Track::Audio,
                    pts: Some(*pts),
                    dts: None,
                    key: true,
                    damaged: false,
                    data: data.clone(),
                }),
                &mut |e| events.push(e),
            );
        }
        a.handle(IngestMsg::End(EndReason::EndOfInput), &mut |e| {
            events.push(e)
        });
        events
            .iter()
            .filter(|e| e.kind == DefectKind::Silence)
            .map(|e| (e.state, e.start_s, e.end_s))
            .collect()
    }

    #[test]
    fn a_pes_with_many_aac_frames_loses_no_transition() {
        let frames = adts_frames(ALTERNATING_AAC);
        assert_eq!(frames.len(), 20);
        // One frame per packet: the reference.
        let one_by_one: Vec<(i64, Vec<u8>)> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| (i as i64 * 1920, f.to_vec()))
            .collect();
        let want = silence_events(&one_by_one);
        let starts = want.iter().filter(|e| e.0 == Phase::Start).count();
        let ends = want.iter().filter(|e| e.0 == Phase::End).count();
        assert!(starts >= 3 && starts == ends, "{want:?}");
        // All 20 frames in one PES: the same starts and ends, none lost.
        let all = vec![(0, frames.concat())];
        assert_eq!(silence_events(&all), want);
    }

    #[test]
    fn sender_report_offsets_drive_av_desync() {
        let mut a = Analyzer::new("p", "s", DetectConfig::default()).unwrap();
        let mut events = vec![];
        // One report per second; audio 250 ms behind from 4 s to 8 s; the origin is
        // the first timestamp seen (here the first report's).
        for i in 0..12i64 {
            let offset_s = if (4..8).contains(&i) { -0.24 } else { 0.01 };
            a.handle(
                IngestMsg::AvSync {
                    pts: 90_000 + i * 90_000,
                    offset_s,
                },
                &mut |e| events.push(e),
            );
        }
        a.handle(IngestMsg::End(EndReason::EndOfInput), &mut |e| {
            events.push(e)
        });
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].kind, DefectKind::AvDesync);
        assert_eq!((events[1].start_s, events[1].end_s), (4.0, Some(8.0)));
        assert_eq!(events[1].metrics["source"], "rtcp_sr");
        assert_eq!(events[1].metrics["offset_ms"], -250.0);
        assert_eq!(events[1].reason, None, "it ended by itself");
    }
}
