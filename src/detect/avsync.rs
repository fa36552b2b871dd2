//! `av_desync`: the audio and video **timestamps** drift apart by more than
//! `threshold_ms` (100 ms) against the stream's own start, for at least `min_duration`.
//!
//! This measures timestamps, not the lip-sync of the content: a source whose audio was
//! captured late but stamped consistently looks perfectly in sync here.
//!
//! Two measures feed the same state machine ([`AvSyncDetector`]):
//!
//! * **RTSP, RTCP sender reports.** Each SR maps one stream's RTP time to the sender's
//!   wall clock (NTP). With one SR per stream, `(rtp_a − ntp_a) − (rtp_v − ntp_v)` is
//!   how far the audio timeline runs ahead of the video timeline for the same sender
//!   instant. It is exact (no jitter), but arrives only every few seconds.
//! * **MPEG-TS / HLS, timestamps at arrival ([`PtsOffsetEstimator`]).** A muxer
//!   interleaves audio and video by time, so an audio packet arrives next to video of
//!   about the same time. A naive "audio PTS − video PTS" is noise: ffmpeg packs several
//!   AAC frames into one PES and writes it once its *last* frame is in, so the PES's PTS
//!   (its first frame) lags the video by however much sound it packs — measured on our
//!   clips: 8 frames (−0.11 s) for a tone, 17 frames (−0.29 s) for digital silence,
//!   which alone would be a 0.2 s "desync" at every silence — and B-frames make video
//!   PTS jump by the reordering depth. So each sample is `end of the audio packet's
//!   sound − latest video DTS` (the end is where the last frame finishes: +0.06 s for
//!   tone and silence alike), and the estimate is the median of the samples over a 1 s
//!   window, which removes the remaining swings and stray packets. The median is stamped
//!   at the *centre* of its window, so a step is reported where it is (the median flips
//!   when half of the window has shifted) and not half a window late. The absolute
//!   value is the muxer's business, so the detector compares against a baseline learned
//!   from the stream's first full window, not against zero.
//!
//! All state is fixed size.

use heapless::HistoryBuf;

use super::{transition, Hysteresis};
use crate::config::AvSyncConfig;
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// Where an offset measurement came from (reported in the event's metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncSource {
    /// Audio PTS against video DTS at arrival (MPEG-TS, HLS, RTSP without SRs).
    Pts,
    /// RTCP sender reports (RTSP).
    RtcpSr,
}

impl SyncSource {
    fn name(self) -> &'static str {
        match self {
            SyncSource::Pts => "pts",
            SyncSource::RtcpSr => "rtcp_sr",
        }
    }
}

/// Raw per-packet offsets farther than this from zero are timestamp discontinuities of
/// one track (a splice, a wrap mishandled upstream), not a mux offset: ignored.
const MAX_RAW_OFFSET_S: f64 = 10.0;
/// Audio arrivals kept for the median (1 s of per-frame RTP audio at 50 packets/s
/// fits twice; ffmpeg's TS writes ~6 audio PES per second).
const WINDOW_CAP: usize = 128;
/// A median is emitted at most this often (media seconds).
const EMIT_EVERY_S: f64 = 0.1;

/// Turns the arrival order of audio and video packets into a robust offset estimate
/// (see the module docs). Feed every packet in arrival order.
#[derive(Debug, Clone)]
pub struct PtsOffsetEstimator {
    window_s: f64,
    /// Latest video decode time (seconds), the reference for the next audio arrival.
    video_ref: Option<f64>,
    /// (video reference time, audio PTS − video reference) per audio arrival.
    samples: HistoryBuf<(f64, f64), WINDOW_CAP>,
    last_emit: f64,
    /// The first median: how far audio normally sits from the video it arrives with.
    /// Estimates are stamped at `video time + lead`, i.e. on the audio's own timeline,
    /// so a shift of the audio PTS over [a, b) is reported over [a, b), not over the
    /// video times it arrived with (later by the mux delay).
    lead: Option<f64>,
}

impl PtsOffsetEstimator {
    /// A median over `window_s` seconds of video time.
    pub fn new(window_s: f64) -> Self {
        PtsOffsetEstimator {
            window_s: if window_s.is_finite() {
                window_s.clamp(0.2, 10.0)
            } else {
                1.0
            },
            video_ref: None,
            samples: HistoryBuf::new(),
            last_emit: f64::NEG_INFINITY,
            lead: None,
        }
    }

    /// Forgets the window (new program, discontinuity); the usual lead stays.
    pub fn reset(&mut self) {
        let lead = self.lead;
        *self = PtsOffsetEstimator::new(self.window_s);
        self.lead = lead;
    }

    /// A video packet arrived with decode time `dts_s` (its PTS when it has no DTS).
    pub fn video(&mut self, dts_s: f64) {
        if dts_s.is_finite() {
            self.video_ref = Some(dts_s);
        }
    }

    /// An audio packet arrived with presentation time `pts_s`. Returns
    /// `(time, offset)` — the window's centre (on the audio timeline, see `lead`) and
    /// the median of `audio PTS − video DTS` over the window — when one is due.
    pub fn audio(&mut self, pts_s: f64) -> Option<(f64, f64)> {
        let v = self.video_ref?;
        let d = pts_s - v;
        if !d.is_finite() || d.abs() > MAX_RAW_OFFSET_S {
            return None;
        }
        if let Some(&(last_v, _)) = self.samples.recent() {
            if v < last_v - 1.0 {
                // Video time went back (discontinuity): start over.
                self.samples.clear();
                self.last_emit = f64::NEG_INFINITY;
            }
        }
        self.samples.write((v, d));
        let oldest = self.samples.oldest_ordered().next().map(|s| s.0)?;
        if v - oldest < self.window_s || v - self.last_emit < EMIT_EVERY_S {
            return None;
        }
        self.last_emit = v;
        let from = v - self.window_s;
        let mut buf = [0f64; WINDOW_CAP];
        let mut n = 0;
        for &(t, d) in self.samples.iter() {
            if t >= from {
                buf[n] = d;
                n += 1;
            }
        }
        let w = &mut buf[..n];
        w.sort_unstable_by(f64::total_cmp);
        let median = if n % 2 == 1 {
            w[n / 2]
        } else {
            0.5 * (w[n / 2 - 1] + w[n / 2])
        };
        let lead = *self.lead.get_or_insert(median);
        Some((v - self.window_s / 2.0 + lead, median))
    }
}

/// The `av_desync` state machine: offset samples in, start/end transitions out.
#[derive(Debug, Clone)]
pub struct AvSyncDetector {
    threshold_s: f64,
    hyst: Hysteresis,
    source: SyncSource,
    /// Offset of the stream's first estimate (seconds).
    baseline: Option<f64>,
    /// Largest deviation from the baseline in the current interval (signed, seconds).
    worst: f64,
}

impl AvSyncDetector {
    pub fn new(cfg: &AvSyncConfig, source: SyncSource) -> Self {
        AvSyncDetector {
            threshold_s: cfg.threshold_ms / 1000.0,
            hyst: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            source,
            baseline: None,
            worst: 0.0,
        }
    }

    /// The measure this detector is fed with.
    pub fn source(&self) -> SyncSource {
        self.source
    }

    /// Feeds one estimate: at media time `t`, audio timestamps run `offset_s` seconds
    /// ahead of video timestamps (negative: behind). The first estimate is the baseline.
    pub fn observe(&mut self, t: f64, offset_s: f64) -> Option<Transition> {
        if !offset_s.is_finite() {
            return None;
        }
        let base = *self.baseline.get_or_insert(offset_s);
        let dev = offset_s - base;
        let off = dev.abs() > self.threshold_s;
        if off {
            if self.hyst.onset().is_none() {
                self.worst = 0.0;
            }
            if dev.abs() > self.worst.abs() {
                self.worst = dev;
            }
        }
        let edge = self.hyst.step(t, off)?;
        Some(transition(DefectKind::AvDesync, edge, self.metrics()))
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::AvDesync, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        let ms = |s: f64| (s * 1000.0).round();
        put(&mut m, "offset_ms", Metric::Num(ms(self.worst)));
        put(
            &mut m,
            "baseline_ms",
            Metric::Num(ms(self.baseline.unwrap_or(0.0))),
        );
        put(&mut m, "threshold_ms", Metric::Num(ms(self.threshold_s)));
        put(&mut m, "source", Metric::Str(self.source.name()));
        m
    }
}

/// The SR-based offset of an RTSP session: the latest sender report of each stream.
/// Pure: the RTSP source feeds it what it parsed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SrMapping {
    /// (sender NTP seconds, stream elapsed media seconds) of the latest SR per track.
    video: Option<(f64, f64)>,
    audio: Option<(f64, f64)>,
}

impl SrMapping {
    /// Notes a sender report: at sender time `ntp_s` the stream's media clock read
    /// `media_s` (seconds on the same timeline as its frames). Returns the offset
    /// (audio ahead of video, seconds) once both streams have reported.
    pub fn report(&mut self, audio: bool, ntp_s: f64, media_s: f64) -> Option<f64> {
        if !(ntp_s.is_finite() && media_s.is_finite()) {
            return None;
        }
        let slot = if audio {
            &mut self.audio
        } else {
            &mut self.video
        };
        *slot = Some((ntp_s, media_s));
        let (nv, mv) = self.video?;
        let (na, ma) = self.audio?;
        // Each stream's media time at a common sender instant: m + (T − ntp).
        Some((ma - na) - (mv - nv))
    }

    /// Forgets the reports (a new session has new RTP timelines).
    pub fn reset(&mut self) {
        *self = SrMapping::default();
    }
}

/// Seconds of a 64-bit NTP timestamp (32.32 fixed point).
pub fn ntp_seconds(ntp: u64) -> f64 {
    (ntp >> 32) as f64 + (ntp & 0xFFFF_FFFF) as f64 / 4_294_967_296.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::Phase;

    /// An ffmpeg-like mux: video at 25 fps (DTS), audio PES of 8 AAC frames (~171 ms)
    /// written when their first sample is `lag` behind the video, with the
    /// saw-tooth that gives. Audio PTS get `shift(t)` added.
    fn mux(dur: f64, shift: impl Fn(f64) -> f64) -> Vec<(bool, f64)> {
        let mut out = vec![];
        let pes = 8.0 * 1024.0 / 48000.0;
        let mut next_audio = 0.0;
        let mut n = 0;
        loop {
            let v = f64::from(n) * 0.04;
            if v > dur {
                break;
            }
            out.push((false, v));
            while next_audio + 0.16 <= v {
                out.push((true, next_audio + shift(next_audio)));
                next_audio += pes;
            }
            n += 1;
        }
        out
    }

    fn run(pkts: &[(bool, f64)], cfg: &AvSyncConfig) -> Vec<Transition> {
        let mut est = PtsOffsetEstimator::new(cfg.window);
        let mut det = AvSyncDetector::new(cfg, SyncSource::Pts);
        let mut v = vec![];
        let mut last = 0.0;
        for &(audio, t) in pkts {
            if audio {
                if let Some((at, off)) = est.audio(t) {
                    v.extend(det.observe(at, off));
                }
            } else {
                est.video(t);
                last = t;
            }
        }
        v.extend(det.finish(last));
        v
    }

    #[test]
    fn steady_mux_offset_is_the_baseline_not_a_defect() {
        assert!(run(&mux(20.0, |_| 0.0), &AvSyncConfig::default()).is_empty());
    }

    #[test]
    fn a_300ms_audio_shift_gives_its_interval() {
        let tr = run(
            &mux(12.0, |t| if (4.0..7.0).contains(&t) { 0.3 } else { 0.0 }),
            &AvSyncConfig::default(),
        );
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert_eq!(tr[0].phase, Phase::Start);
        assert!((tr[0].start_s - 4.0).abs() < 0.3, "{}", tr[0].start_s);
        assert!(
            (tr[1].end_s.unwrap() - 7.0).abs() < 0.3,
            "{:?}",
            tr[1].end_s
        );
        let off = tr[1]
            .metrics
            .iter()
            .find(|(k, _)| *k == "offset_ms")
            .map(|(_, v)| v.clone());
        assert!(
            matches!(off, Some(Metric::Num(x)) if (x - 300.0).abs() < 40.0),
            "{off:?}"
        );
    }

    #[test]
    fn short_or_small_shifts_are_not_reported() {
        let cfg = AvSyncConfig::default();
        // 300 ms for 1.5 s: shorter than min_duration.
        assert!(run(
            &mux(12.0, |t| if (4.0..5.5).contains(&t) { 0.3 } else { 0.0 }),
            &cfg
        )
        .is_empty());
        // 60 ms for 5 s: below the threshold.
        assert!(run(
            &mux(12.0, |t| if (4.0..9.0).contains(&t) { 0.06 } else { 0.0 }),
            &cfg
        )
        .is_empty());
    }

    #[test]
    fn single_outliers_do_not_move_the_median() {
        let mut pk = mux(12.0, |_| 0.0);
        // A few absurd and a few 0.35 s-off audio packets scattered around.
        for (i, p) in pk.iter_mut().enumerate() {
            if p.0 && i % 37 == 0 {
                p.1 += if i % 2 == 0 { 0.35 } else { 30.0 };
            }
        }
        assert!(run(&pk, &AvSyncConfig::default()).is_empty());
    }

    #[test]
    fn video_time_going_back_restarts_the_window() {
        let mut est = PtsOffsetEstimator::new(1.0);
        for i in 0..100 {
            est.video(f64::from(i) * 0.04);
            let _ = est.audio(f64::from(i) * 0.04);
        }
        est.video(0.0);
        assert_eq!(est.audio(0.0), None, "window restarts after a jump back");
    }

    #[test]
    fn sender_reports_give_the_timeline_offset() {
        let mut m = SrMapping::default();
        assert_eq!(m.report(false, 1000.0, 5.0), None);
        // Audio at 1000.5 s sender time read 5.5 s: in sync.
        assert!(m.report(true, 1000.5, 5.5).unwrap().abs() < 1e-9);
        // Audio stamped 0.3 s ahead of its sender time.
        let off = m.report(true, 1005.0, 10.3).unwrap();
        assert!((off - 0.3).abs() < 1e-9, "{off}");
        m.reset();
        assert_eq!(m.report(true, 1.0, 1.0), None);
        assert_eq!(m.report(true, f64::NAN, 1.0), None);
        assert!((ntp_seconds((5u64 << 32) | (1 << 31)) - 5.5).abs() < 1e-9);
    }

    #[test]
    fn sr_samples_drive_the_detector() {
        let cfg = AvSyncConfig::default();
        let mut d = AvSyncDetector::new(&cfg, SyncSource::RtcpSr);
        let mut v = vec![];
        for i in 0..12 {
            let t = f64::from(i);
            let off = if (4..8).contains(&i) { -0.25 } else { 0.01 };
            v.extend(d.observe(t, off));
        }
        v.extend(d.finish(12.0));
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!((v[0].start_s, v[1].end_s), (4.0, Some(8.0)));
        assert!(v[1]
            .metrics
            .iter()
            .any(|(k, m)| *k == "source" && *m == Metric::Str("rtcp_sr")));
        assert!(v[1]
            .metrics
            .iter()
            .any(|(k, m)| *k == "offset_ms" && *m == Metric::Num(-260.0)));
    }
}
