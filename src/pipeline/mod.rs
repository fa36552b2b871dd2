//! The per-stream analysis pipeline: decoders + detectors + event factory, driven on
//! the stream's own decode thread.
//!
//! [`Analyzer`] is the facade: synchronous, it owns everything a stream needs after
//! ingest, and `handle(IngestMsg)` decodes, reduces, detects and hands out [`Event`]s.
//! The same analyzer serves files, RTSP, HLS and the demo. It delegates:
//!
//! - `tracks`: the program's tracks, which decoders they need, `unsupported_codec`;
//! - `video`: decoder → thumbs → `black`, `uniform`, `freeze`, `corruption`, `low_fps`;
//! - `audio`: decoder → levels and loudness → `silence`, `clipping`, `channel_loss`, `loudness`;
//! - `avsync`: `av_desync` from PTS at arrival or RTCP sender reports;
//! - `thread`: `spawn_decode_thread` runs an analyzer between two bounded channels;
//! - `level` (one stream's decode level) and `gate` (the box-wide admission of
//!   `auto`'s syntax check).
//!
//! The facade alone sets the media clock's origin, turns transitions into events (in
//! the order the parts found them, through one reused list) and times delivery
//! defects. The parts never emit, never see ingest messages and never touch each other.
//!
//! Time: every media time is [`MediaClock`] seconds: the origin (0 s) is the first
//! timestamp of a packet or sender report ([`MediaClock::start`]); before it is set, a
//! timestamp is its own origin (0 s). One exception keeps older behaviour: AAC decoded
//! before any timestamp is placed at its own sample count (see `audio`).

mod audio;
mod avsync;
pub mod gate;
pub mod level;
mod ring;
pub mod series;
pub mod shots;
mod thread;
mod tracks;
mod video;

pub use thread::{spawn_decode_thread, SharedStats, SHARE_EVERY};

use crate::config::DetectConfig;
use crate::decode::audio::AudioStats;
use crate::decode::video::VideoStats;
use crate::defect::{put, DefectKind, EndReason, Metric, Metrics, Phase, Transition};
use crate::error::Result;
use crate::event::{Event, EventFactory};
use crate::ingest::{Codec, IngestMsg, Packet, ProgramInfo, Track};
use crate::timebase::MediaClock;

use audio::AudioChain;
use avsync::AvSync;
use tracks::Tracks;
use video::VideoChain;

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
    /// Decode levels: seconds at each level, escalations, ring and overload steps.
    pub levels: level::LevelStats,
    /// The level video is decoded at now (`None`: no video decoder).
    pub level: Option<crate::defect::DecodeLevel>,
    /// Bytes held by the look-back ring now.
    pub ring_bytes: u64,
    /// Defect thumbnails (`None`: this stream makes none).
    pub thumbs: Option<shots::ShotStats>,
}

impl AnalyzerStats {
    /// Share of the video access units given to the decoder (0–1; a GOP decoded twice
    /// counts twice, so it can exceed 1 in theory). `None` before any video.
    pub fn decoded_share(&self) -> Option<f64> {
        let v = &self.video;
        let seen = v.packets.saturating_sub(v.refused);
        (seen > 0).then(|| v.decoded as f64 / seen as f64)
    }

    /// One line: decoded share, seconds per level, escalations (for `check`).
    pub fn coverage_line(&self) -> String {
        let s = &self.levels.seconds;
        let share = self.decoded_share().map_or("no video".to_string(), |x| {
            format!("{:.1}% of pictures decoded", x * 100.0)
        });
        format!(
            "coverage: {share} ({} of {}); full {:.1} s, reference {:.1} s, key {:.1} s; {} escalations, {} ring overflows, {} step-downs; {} parsed ({} broken, {} unchecked), syntax check shed {:.1} s",
            self.video.decoded,
            self.video.packets.saturating_sub(self.video.refused),
            s[0],
            s[1],
            s[2],
            self.levels.escalations,
            self.levels.ring_overflows,
            self.levels.step_downs,
            self.levels.syntax_checked,
            self.levels.syntax_broken,
            self.levels.syntax_unchecked,
            self.levels.syntax_shed_seconds,
        )
    }
}

/// A stream's media timeline: where 0 s is, and how far the media analysed reaches.
#[derive(Debug, Default)]
struct Timeline {
    /// Set by the facade only (first packet or sender-report timestamp).
    clock: MediaClock,
    /// End of the media analysed so far (seconds): last sample time + its duration.
    end: f64,
}

/// Decoders and detectors of one stream. See the module docs.
pub struct Analyzer {
    events: EventFactory,
    timeline: Timeline,
    tracks: Tracks,
    video: VideoChain,
    audio: AudioChain,
    avsync: AvSync,
    /// Where packet buffers go back to after decoding (see `ingest::pool`).
    pool: Option<crate::ingest::pool::BufPool>,
    /// Transitions the parts found and not yet emitted: one list, reused, never capped
    /// (a PES may carry any number of AAC frames, each able to start or end a defect;
    /// nothing found may be dropped).
    found: Vec<Transition>,
    emitted: u64,
    /// A report's series: the program's properties here, the lanes in the chains
    /// (only when asked for; see `series`).
    series: Option<Box<series::Series>>,
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
            timeline: Timeline::default(),
            tracks: Tracks::default(),
            video: VideoChain::new(&cfg),
            audio: AudioChain::new(&cfg),
            avsync: AvSync::new(&cfg.av_sync),
            pool: None,
            found: Vec::with_capacity(8),
            emitted: 0,
            series: cfg.series.then(Box::default),
        })
    }

    /// The source is live (it drops packets when decoding falls behind): a backlog
    /// may then step an `auto` stream's decode level down (see `level`).
    pub fn set_live(&mut self, live: bool) {
        self.video.set_live(live);
    }

    /// The ingest queue's fill (0–1) at monotonic seconds `now`, for `auto`'s
    /// overload steps.
    pub fn backlog(&mut self, now: f64, fill: f32) {
        self.video.backlog(now, fill);
    }

    /// Hands decoded packets' buffers back to `pool` for ingest to reuse.
    pub fn set_pool(&mut self, pool: crate::ingest::pool::BufPool) {
        self.pool = Some(pool);
    }

    /// Counters so far.
    pub fn stats(&self) -> AnalyzerStats {
        let video = self.video.stats();
        AnalyzerStats {
            video,
            audio: self.audio.stats(),
            decode_ns: video.decode_ns,
            reduce_ns: video.reduce_ns,
            detect_ns: self.video.detect_ns() + self.audio.detect_ns(),
            events: self.emitted,
            media_s: self.timeline.end,
            levels: self.video.level_stats(),
            level: self.video.current_level(),
            ring_bytes: self.video.ring_bytes() as u64,
            thumbs: self.video.shot_stats(),
        }
    }

    /// Handles one message from ingest; events go to `out` as they are detected.
    pub fn handle(&mut self, msg: IngestMsg, out: &mut dyn FnMut(Event)) {
        match msg {
            IngestMsg::Program(p) => {
                self.program(&p);
                self.emit_found(None, out);
            }
            IngestMsg::Packet(p) => {
                self.packet(&p);
                self.emit_found(None, out);
                if let Some(pool) = &self.pool {
                    // The queue's byte bound: these bytes are no longer queued.
                    pool.release(p.data.len());
                    pool.give(p.data);
                }
            }
            IngestMsg::Delivery(t, reason) => {
                if t.kind == DefectKind::ProbeOverload {
                    let on = t.phase == Phase::Start;
                    self.video.overload(on, &self.timeline, &mut self.found);
                    self.emit_found(None, out);
                }
                let reconnected = t.kind == DefectKind::SourceDown && t.phase == Phase::End;
                let t = self.on_media_clock(*t);
                self.emit(&t, reason, out);
                if reconnected {
                    self.avsync.new_baseline(self.timeline.end, &mut self.found);
                    self.emit_found(None, out);
                }
            }
            IngestMsg::End(reason) => self.finish(reason, out),
            IngestMsg::AvSync { pts, offset_s } => {
                self.timeline.clock.start(pts);
                let t = self.timeline.clock.secs(pts);
                self.avsync.sender_report(t, offset_s, &mut self.found);
                self.emit_found(None, out);
            }
        }
    }

    /// A delivery defect about a piece of media (see [`Transition::media`]) is timed
    /// like picture defects: its span's media seconds in `start_s`/`end_s`, the
    /// source's session seconds kept as `session_start_s`/`session_end_s`.
    fn on_media_clock(&self, mut t: Transition) -> Transition {
        let Some(span) = t.media.take() else {
            return t;
        };
        let clock = &self.timeline.clock;
        put(&mut t.metrics, "session_start_s", Metric::Num(t.start_s));
        if let Some(e) = t.end_s {
            put(&mut t.metrics, "session_end_s", Metric::Num(e));
        }
        t.start_s = clock.secs(span.start_pts).max(0.0);
        if t.end_s.is_some() {
            let end = span.end_pts.map_or(t.start_s, |p| clock.secs(p));
            t.end_s = Some(end.max(t.start_s));
        }
        t
    }

    /// Emits every transition found so far, in order, marking `end`s with `reason`.
    fn emit_found(&mut self, reason: Option<EndReason>, out: &mut dyn FnMut(Event)) {
        if self.found.is_empty() {
            return;
        }
        let mut found = std::mem::take(&mut self.found);
        for tr in found.drain(..) {
            self.emit(&tr, reason, out);
        }
        self.found = found;
    }

    fn emit(&mut self, t: &Transition, reason: Option<EndReason>, out: &mut dyn FnMut(Event)) {
        let mut ev = self.events.make(t, reason);
        ev.decode_level = self.video.current_level();
        if t.phase == Phase::Start {
            ev.jpeg = self.video.take_thumb(t.kind);
        }
        self.emitted += 1;
        tracing::debug!(
            stream = %ev.stream, kind = ev.kind.as_str(), state = ?ev.state,
            start_s = ev.start_s, end_s = ?ev.end_s, "defect"
        );
        out(ev);
    }

    /// A new program: the tracks say which decoders it needs.
    /// The report's series and properties so far (`None`: not recorded, or taken).
    pub fn take_series(&mut self) -> Option<series::Series> {
        let mut s = *self.series.take()?;
        s.pictures = self.video.take_series().unwrap_or_default();
        s.sound = self.audio.take_series().unwrap_or_default();
        Some(s)
    }

    fn program(&mut self, p: &ProgramInfo) {
        if let Some(s) = self.series.as_mut() {
            s.video_codec = p.video.as_ref().map(|e| e.codec.name());
            s.audio_codec = p.audio.as_ref().map(|e| e.codec.name());
            s.audio_format = p.audio.as_ref().and_then(|e| match e.codec {
                Codec::PcmS16le {
                    sample_rate,
                    channels,
                }
                | Codec::G711 {
                    sample_rate,
                    channels,
                    ..
                } => Some((sample_rate, channels)),
                _ => None,
            });
        }
        let t = self.timeline.end;
        self.avsync.tracks_changed();
        let plan = self.tracks.program(p, t, &mut self.found);
        if plan.video {
            self.video.open();
        } else {
            self.video.close();
        }
        self.audio.set_format(plan.audio);
    }

    fn packet(&mut self, p: &Packet) {
        let tl = &mut self.timeline;
        let found = &mut self.found;
        let Some(pts) = p.pts.or(p.dts) else {
            // Without any timestamp a packet cannot be placed on the timeline; AAC PES
            // without PTS continue from the previous one inside the audio decoder.
            if p.track == Track::Audio {
                self.audio.packet(None, &p.data, tl, found);
            }
            return;
        };
        tl.clock.start(pts);
        match p.track {
            Track::Video => {
                let dts = p.dts.unwrap_or(pts);
                self.avsync.arrival(Track::Video, dts, &tl.clock, found);
                let au = video::Au {
                    pts,
                    key: p.key,
                    damaged: p.damaged,
                    data: &p.data,
                    info: crate::codec::h264::au_info(&p.data),
                };
                let refused = self.video.packet(au, tl, found);
                let refusing = self.video.is_refusing();
                let clock = &tl.clock;
                self.tracks
                    .video_refusal(refused, refusing, || clock.secs(pts), found);
            }
            Track::Audio => {
                self.audio.packet(Some(pts), &p.data, tl, found);
                // The end of the packet's sound (where the next one starts): see
                // `detect::avsync` for why the end and not the PTS.
                if let Some(end) = self.audio.next_pts() {
                    self.avsync.arrival(Track::Audio, end, &tl.clock, found);
                }
            }
        }
    }

    /// Ends the analysis: flushes the decoder and closes every open defect at the end
    /// of the media seen, marking the `end` events with `reason`.
    pub fn finish(&mut self, reason: EndReason, out: &mut dyn FnMut(Event)) {
        self.video.flush(&mut self.timeline, &mut self.found);
        self.emit_found(None, out);
        let t = self.timeline.end;
        let found = &mut self.found;
        self.video.finish_pictures(t, found);
        self.audio.finish(t, found);
        self.video.finish_rate(t, found);
        self.avsync.finish(t, found);
        self.tracks.close(Track::Video, t, found);
        self.tracks.close(Track::Audio, t, found);
        self.emit_found(Some(reason), out);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::MediaSpan;
    use crate::timebase::ticks;

    fn delivery(phase: Phase, session: (f64, Option<f64>), media: MediaSpan) -> IngestMsg {
        IngestMsg::Delivery(
            Box::new(Transition {
                kind: DefectKind::SegmentError,
                phase,
                start_s: session.0,
                end_s: session.1,
                metrics: Metrics::new(),
                slot: 0,
                media: Some(media),
            }),
            None,
        )
    }

    #[test]
    fn a_delivery_defect_about_media_is_timed_on_the_media_clock() {
        let mut a = Analyzer::new("p", "s", DetectConfig::default()).unwrap();
        let mut events = vec![];
        // The first packet sets the origin (no program: nothing decodes it).
        let origin = 900_000;
        a.handle(
            IngestMsg::Packet(Packet {
                track: Track::Video,
                pts: Some(origin),
                dts: None,
                key: true,
                damaged: false,
                data: vec![],
            }),
            &mut |e| events.push(e),
        );
        assert!(events.is_empty());
        // The segment at 10-12 s media time, fetched at 2.9-4.9 s session time.
        let start = origin + ticks(10.0);
        let end = origin + ticks(12.0);
        let open = MediaSpan {
            start_pts: start,
            end_pts: None,
        };
        a.handle(delivery(Phase::Start, (2.9, None), open), &mut |e| {
            events.push(e)
        });
        let span = MediaSpan {
            start_pts: start,
            end_pts: Some(end),
        };
        a.handle(delivery(Phase::End, (2.9, Some(4.9)), span), &mut |e| {
            events.push(e)
        });
        assert_eq!(events.len(), 2, "{events:?}");
        let (s, e) = (&events[0], &events[1]);
        assert_eq!((s.state, s.start_s, s.end_s), (Phase::Start, 10.0, None));
        assert_eq!(s.metrics["session_start_s"], 2.9);
        assert!(!s.metrics.contains_key("session_end_s"));
        assert_eq!(
            (e.state, e.start_s, e.end_s),
            (Phase::End, 10.0, Some(12.0))
        );
        assert_eq!(e.duration_s, Some(2.0));
        assert_eq!(e.metrics["session_start_s"], 2.9);
        assert_eq!(e.metrics["session_end_s"], 4.9);
        assert_eq!(e.defect_id, s.defect_id);
    }

    #[test]
    fn a_delivery_defect_before_any_packet_starts_at_zero() {
        let mut a = Analyzer::new("p", "s", DetectConfig::default()).unwrap();
        let mut events = vec![];
        let span = MediaSpan {
            start_pts: 5_000_000,
            end_pts: Some(5_000_000 + ticks(2.0)),
        };
        a.handle(delivery(Phase::Start, (0.5, None), span), &mut |e| {
            events.push(e)
        });
        a.handle(delivery(Phase::End, (0.5, Some(1.5)), span), &mut |e| {
            events.push(e)
        });
        // No origin yet: a timestamp is its own origin (0 s), never a negative time.
        assert_eq!((events[1].start_s, events[1].end_s), (0.0, Some(0.0)));
        assert_eq!(events[1].metrics["session_end_s"], 1.5);
    }

    /// The SPS libx264 writes for 1920x1080 MBAFF (`-flags +ildct+ilme`, High, level
    /// 4.0): `frame_mbs_only_flag` = 0.
    const MBAFF_SPS_1080I: &[u8] = &[
        0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x04, 0x4f, 0xde, 0x02, 0x20, 0x00, 0x00,
        0x03, 0x00, 0x20, 0x00, 0x00, 0x06, 0x43, 0xe2, 0xc5, 0xb2, 0xc0,
    ];

    #[test]
    fn an_interlaced_stream_is_unsupported_codec_while_audio_goes_on() {
        use crate::ingest::{Codec, Elementary};
        let mut cfg = DetectConfig::default();
        cfg.silence.min_duration = 0.0;
        let mut a = Analyzer::new("p", "s", cfg).unwrap();
        let mut events = vec![];
        a.handle(
            IngestMsg::Program(ProgramInfo {
                video: Some(Elementary {
                    pid: 0x100,
                    stream_type: 0x1B,
                    codec: Codec::H264,
                }),
                audio: Some(Elementary {
                    pid: 0x101,
                    stream_type: 0x0F,
                    codec: Codec::Aac,
                }),
                other_streams: 0,
            }),
            &mut |e| events.push(e),
        );
        // 20 AAC frames (silence and tone alternating every two) between 50 video
        // access units, each an SPS and a slice openh264 would reject.
        let aac = include_bytes!("../../tests/data/aac/alternating.aac");
        let mut frames = vec![];
        let mut d = &aac[..];
        while d.len() >= 7 {
            let len =
                (usize::from(d[3] & 3) << 11) | (usize::from(d[4]) << 3) | usize::from(d[5] >> 5);
            frames.push(&d[..len]);
            d = &d[len..];
        }
        assert_eq!(frames.len(), 20);
        for i in 0..50i64 {
            let mut au = vec![0, 0, 0, 1];
            au.extend_from_slice(MBAFF_SPS_1080I);
            au.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x21, 0xA0]);
            let video = Packet {
                track: Track::Video,
                pts: Some(i * 3600),
                dts: None,
                key: i % 25 == 0,
                damaged: false,
                data: au,
            };
            a.handle(IngestMsg::Packet(video), &mut |e| events.push(e));
            if let Some(f) = frames.get(i as usize) {
                let audio = Packet {
                    track: Track::Audio,
                    pts: Some(i * 1920),
                    dts: None,
                    key: true,
                    damaged: false,
                    data: f.to_vec(),
                };
                a.handle(IngestMsg::Packet(audio), &mut |e| events.push(e));
            }
        }
        a.handle(IngestMsg::End(EndReason::EndOfInput), &mut |e| {
            events.push(e)
        });
        let stats = a.stats();
        assert_eq!(stats.video.refused, 50);
        assert_eq!((stats.video.frames, stats.video.errors), (0, 0));
        assert_eq!(stats.audio.frames, 20);
        let kinds: Vec<DefectKind> = events.iter().map(|e| e.kind).collect();
        assert!(
            kinds
                .iter()
                .all(|k| matches!(k, DefectKind::UnsupportedCodec | DefectKind::Silence)),
            "{kinds:?}"
        );
        assert!(kinds.contains(&DefectKind::Silence), "audio is analysed");
        let refused: Vec<&Event> = events
            .iter()
            .filter(|e| e.kind == DefectKind::UnsupportedCodec)
            .collect();
        assert_eq!(refused.len(), 2, "{refused:?}");
        let (s, e) = (refused[0], refused[1]);
        assert_eq!((s.state, s.start_s), (Phase::Start, 0.0));
        assert_eq!(e.state, Phase::End);
        for ev in [s, e] {
            let m = &ev.metrics;
            assert_eq!(m["track"], "video");
            assert_eq!(m["codec"], "h264_interlaced");
            assert_eq!(m["reason"], "h264_interlaced");
            assert_eq!(m["stream_type"], 0x1B);
            assert_eq!((&m["width"], &m["height"]), (&1920.into(), &1080.into()));
        }
    }

    #[test]
    fn a_codec_not_decoded_at_all_has_no_reason() {
        use crate::ingest::{Codec, Elementary};
        let mut a = Analyzer::new("p", "s", DetectConfig::default()).unwrap();
        let mut events = vec![];
        a.handle(
            IngestMsg::Program(ProgramInfo {
                video: Some(Elementary {
                    pid: 0x100,
                    stream_type: 0x24,
                    codec: Codec::from_stream_type(0x24),
                }),
                audio: None,
                other_streams: 0,
            }),
            &mut |e| events.push(e),
        );
        assert_eq!(events.len(), 1);
        let m = &events[0].metrics;
        assert_eq!(m["codec"], "hevc");
        let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["codec", "stream_type", "track"]);
    }
}
