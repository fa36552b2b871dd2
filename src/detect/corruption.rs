//! Block corruption / macroblocking.
//!
//! Two signals, per frame:
//! * the decoder rejected the access unit (openh264 runs without error concealment, so a
//!   damaged slice, or a picture predicted from one, is an error until the next IDR);
//! * the block-edge ratio (luma steps across 8×8 block boundaries over steps inside
//!   blocks) jumps above the stream's own running baseline: a decoder that *does* show
//!   a damaged picture shows it as blocks.
//!
//! The event spans from the first corrupt frame to the first clean frame after which the
//! picture stayed clean for `clear_duration` (typically the next IDR).

use super::{transition, Hysteresis};
use crate::config::CorruptionConfig;
use crate::decode::Thumb;
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// One observation for the corruption detector.
#[derive(Debug, Clone, Copy)]
pub enum CorruptionSample<'a> {
    /// A decoded picture.
    Frame(&'a Thumb),
    /// An access unit the decoder rejected.
    DecodeError,
}

/// The corruption detector.
#[derive(Debug, Clone)]
pub struct CorruptionDetector {
    cfg: CorruptionConfig,
    hyst: Hysteresis,
    /// Running (EWMA) block-edge ratio of clean frames.
    baseline: f32,
    /// Clean frames folded into the baseline since the last reset.
    warm: u32,
    dims: (u16, u16),
    /// Consecutive blocky frames so far.
    blocky_run: u32,
    // Evidence for the current interval.
    errors: u32,
    blocky_frames: u32,
    max_ratio: f32,
}

/// Frames needed before the edge-ratio baseline is trusted.
const WARMUP_FRAMES: u32 = 25;
/// EWMA weight of a new clean frame in the baseline.
const BASELINE_ALPHA: f32 = 0.05;

impl CorruptionDetector {
    pub fn new(cfg: CorruptionConfig) -> Self {
        CorruptionDetector {
            hyst: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            cfg,
            baseline: 1.0,
            warm: 0,
            dims: (0, 0),
            blocky_run: 0,
            errors: 0,
            blocky_frames: 0,
            max_ratio: 0.0,
        }
    }

    /// Current baseline edge ratio (for stats).
    pub fn baseline(&self) -> f32 {
        self.baseline
    }

    /// The block-edge ratio above which a picture counts as blocky (`None`: the
    /// baseline is still being learned, or the edge test is off). For reports.
    pub fn threshold(&self) -> Option<f32> {
        (self.cfg.edge_jump > 0.0 && self.warm >= WARMUP_FRAMES)
            .then_some(self.baseline * self.cfg.edge_jump)
    }

    /// Feeds one sample at media time `t`.
    pub fn observe(&mut self, t: f64, s: CorruptionSample<'_>) -> Option<Transition> {
        let corrupt = match s {
            CorruptionSample::DecodeError => {
                self.begin_evidence();
                self.errors += 1;
                true
            }
            CorruptionSample::Frame(th) => {
                if (th.width, th.height) != self.dims {
                    self.dims = (th.width, th.height);
                    self.warm = 0;
                }
                let r = th.edge_ratio;
                let jump = self.cfg.edge_jump > 0.0
                    && self.warm >= WARMUP_FRAMES
                    && r > self.baseline * self.cfg.edge_jump
                    && th.edge_boundary >= self.cfg.edge_min_step;
                self.blocky_run = if jump { self.blocky_run + 1 } else { 0 };
                let blocky = jump && self.blocky_run >= self.cfg.edge_min_frames.max(1);
                if blocky {
                    self.begin_evidence();
                    self.blocky_frames += 1;
                    self.max_ratio = self.max_ratio.max(r);
                }
                if !jump {
                    // Learn from pictures we believe clean.
                    self.baseline = if self.warm == 0 {
                        r
                    } else {
                        self.baseline + BASELINE_ALPHA * (r - self.baseline)
                    };
                    self.warm = self.warm.saturating_add(1);
                } else if self.errors == 0 {
                    // Blocky but decodable for a long time: slowly accept it as this
                    // picture's structure, so a content change cannot hold an event
                    // open forever (about 60 s at 25 fps to double the baseline).
                    self.baseline += BASELINE_ALPHA * 0.01 * (r - self.baseline);
                }
                blocky
            }
        };
        let edge = self.hyst.step(t, corrupt)?;
        Some(transition(DefectKind::Corruption, edge, self.metrics()))
    }

    fn begin_evidence(&mut self) {
        if self.hyst.onset().is_none() {
            self.errors = 0;
            self.blocky_frames = 0;
            self.max_ratio = 0.0;
        }
    }

    /// Nothing pending or open.
    pub fn is_idle(&self) -> bool {
        self.hyst.onset().is_none()
    }

    /// Forgets a pending or open interval, the sample clock and the blocky run, and
    /// learns the blockiness baseline afresh (it went stale while pictures were not
    /// decoded; decode errors still count at once). Used when the pipeline feeds an
    /// earlier GOP again; see `pipeline::level`.
    pub fn rewind(&mut self) {
        self.hyst.rewind();
        self.blocky_run = 0;
        self.warm = 0;
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::Corruption, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(&mut m, "decode_errors", Metric::Int(i64::from(self.errors)));
        put(
            &mut m,
            "blocky_frames",
            Metric::Int(i64::from(self.blocky_frames)),
        );
        put(
            &mut m,
            "edge_ratio_max",
            Metric::Num(f64::from(self.max_ratio)),
        );
        put(
            &mut m,
            "edge_ratio_baseline",
            Metric::Num(f64::from(self.baseline)),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::thumb_from_fn;
    use crate::defect::Phase;

    fn natural(i: usize) -> Thumb {
        thumb_from_fn(320, 192, false, move |x, y| {
            (((x + i) * 7 / 5 + y * 3 / 2) % 200 + 20) as u8
        })
    }

    fn blocky(i: usize) -> Thumb {
        thumb_from_fn(320, 192, false, move |x, y| {
            let (bx, by) = (x / 8, y / 8);
            ((bx * 37 + by * 91 + i) % 200 + 20) as u8
        })
    }

    #[test]
    fn decode_errors_until_idr_make_one_event() {
        let mut d = CorruptionDetector::new(CorruptionConfig::default());
        let mut v = vec![];
        for i in 0..250usize {
            let t = i as f64 * 0.04;
            let th = natural(i);
            // Errors, with sporadic clean-looking output between them (every third).
            let s = if (105..150).contains(&i) && i % 3 != 0 {
                CorruptionSample::DecodeError
            } else {
                CorruptionSample::Frame(&th)
            };
            v.extend(d.observe(t, s));
        }
        v.extend(d.finish(10.0));
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0].phase, Phase::Start);
        assert!((v[0].start_s - 4.24).abs() < 1e-6, "{}", v[0].start_s);
        assert!((v[1].end_s.unwrap() - 6.0).abs() < 1e-6, "{:?}", v[1].end_s);
        assert!(
            matches!(v[1].metrics.iter().find(|m| m.0 == "decode_errors"), Some((_, Metric::Int(n))) if *n == 30)
        );
    }

    #[test]
    fn blocky_pictures_against_baseline() {
        let mut d = CorruptionDetector::new(CorruptionConfig::default());
        let mut v = vec![];
        for i in 0..250usize {
            let t = i as f64 * 0.04;
            let th = if (100..125).contains(&i) {
                blocky(i)
            } else {
                natural(i)
            };
            v.extend(d.observe(t, CorruptionSample::Frame(&th)));
        }
        v.extend(d.finish(10.0));
        assert_eq!(v.len(), 2, "{v:?}");
        // Confirmed on the third consecutive blocky frame (edge_min_frames = 3).
        assert!((v[0].start_s - 4.08).abs() < 1e-6, "{}", v[0].start_s);
        assert!((v[1].end_s.unwrap() - 5.0).abs() < 1e-6);
    }

    #[test]
    fn isolated_grid_aligned_frames_are_not_corruption() {
        // Every fourth frame lines up with the block grid (a moving synthetic pattern).
        let mut d = CorruptionDetector::new(CorruptionConfig::default());
        for i in 0..500usize {
            let th = if i > 30 && i % 4 == 0 {
                blocky(i)
            } else {
                natural(i)
            };
            assert!(
                d.observe(i as f64 * 0.04, CorruptionSample::Frame(&th))
                    .is_none(),
                "frame {i}"
            );
        }
        assert!(d.finish(20.0).is_none());
    }

    #[test]
    fn clean_stream_is_quiet() {
        let mut d = CorruptionDetector::new(CorruptionConfig::default());
        for i in 0..500usize {
            assert!(d
                .observe(i as f64 * 0.04, CorruptionSample::Frame(&natural(i)))
                .is_none());
        }
        assert!(d.finish(20.0).is_none());
    }
}
