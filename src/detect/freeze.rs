//! Frozen picture: the 64×36 luma grid differs from the last non-frozen picture by
//! less than a noise floor on average, and almost no grid cell changed by more than
//! `cell_step` luma levels, for at least `min_duration`.
//!
//! Against ffmpeg's freezedetect this differs on purpose in three ways:
//! * the difference is taken on the downscaled grid, which averages away the coding
//!   noise that makes one frozen picture look "new" when an encoder re-encodes it at a
//!   GOP boundary, so one freeze across an IDR stays one event;
//! * a black or one-colour picture is never frozen (it is reported by the black or
//!   the uniform detector);
//! * a resolution change resets the reference.

use super::{transition, Hysteresis};
use crate::config::FreezeConfig;
use crate::decode::{to_db, Thumb, GRID_LEN};
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// The freeze detector.
#[derive(Debug, Clone)]
pub struct FreezeDetector {
    cfg: FreezeConfig,
    /// Noise floor as a 0–1 mean absolute difference.
    noise: f32,
    hyst: Hysteresis,
    reference: [u8; GRID_LEN],
    ref_dims: Option<(u16, u16)>,
    /// Largest difference seen inside the current interval (evidence).
    max_diff: f32,
    frames: u32,
    /// The difference of the last picture compared (`None`: it was not compared).
    last_diff: Option<f32>,
    /// The last picture was found frozen (confirmed or not).
    last_frozen: bool,
}

impl FreezeDetector {
    pub fn new(cfg: FreezeConfig) -> Self {
        FreezeDetector {
            noise: 10f32.powf(cfg.noise_db as f32 / 20.0),
            hyst: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            cfg,
            reference: [0; GRID_LEN],
            ref_dims: None,
            max_diff: 0.0,
            frames: 0,
            last_diff: None,
            last_frozen: false,
        }
    }

    /// Feeds one decoded frame at media time `t`; `black` is true when the black or the
    /// uniform detector claims the same frame (root cause first: such a picture is never
    /// compared, and becomes the reference).
    pub fn observe(&mut self, t: f64, thumb: &Thumb, black: bool) -> Option<Transition> {
        let dims = (thumb.width, thumb.height);
        self.last_diff = None;
        let frozen = match self.ref_dims {
            Some(d) if d == dims && !black => {
                let (diff, changed) = thumb.grid_diff(&self.reference, self.cfg.cell_step);
                let changed_share = changed as f32 / GRID_LEN as f32;
                self.last_diff = Some(diff);
                tracing::trace!(t, diff_db = to_db(f64::from(diff)), changed, "freeze diff");
                // Same picture: small average difference AND no region that really
                // changed. Coding noise is small and everywhere; motion is large and
                // local (a clock, a ticker), which the mean alone would dilute.
                let frozen = diff < self.noise && changed_share <= self.cfg.max_changed_share;
                if frozen {
                    if self.hyst.onset().is_none() {
                        self.max_diff = 0.0;
                        self.frames = 0;
                    }
                    self.max_diff = self.max_diff.max(diff);
                    self.frames += 1;
                }
                frozen
            }
            _ => false,
        };
        self.last_frozen = frozen;
        if !frozen {
            self.reference = thumb.grid;
            self.ref_dims = Some(dims);
        }
        let edge = self.hyst.step(t, frozen)?;
        Some(transition(DefectKind::Freeze, edge, self.metrics()))
    }

    /// The last picture's difference to the reference, dB (`None`: it was black, the
    /// first, or of a new size, and not compared). For reports.
    pub fn last_diff_db(&self) -> Option<f64> {
        self.last_diff.map(|d| to_db(f64::from(d)))
    }

    /// The last picture was the same as the last moving one (frozen, whether or not a
    /// freeze is confirmed yet).
    pub fn last_frozen(&self) -> bool {
        self.last_frozen
    }

    /// A freeze is confirmed (open, or clearing).
    pub fn is_active(&self) -> bool {
        self.hyst.is_active()
    }

    /// Nothing pending or open.
    pub fn is_idle(&self) -> bool {
        self.hyst.onset().is_none()
    }

    /// Forgets a pending or open interval, the sample clock and the reference picture
    /// (the pipeline feeds an earlier GOP again; see `pipeline::level`).
    pub fn rewind(&mut self) {
        self.hyst.rewind();
        self.ref_dims = None;
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::Freeze, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(
            &mut m,
            "diff_max_db",
            Metric::Num(to_db(f64::from(self.max_diff))),
        );
        put(&mut m, "noise_db", Metric::Num(self.cfg.noise_db));
        put(&mut m, "frames", Metric::Int(i64::from(self.frames)));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::thumb_from_fn;
    use crate::defect::Phase;

    fn moving(i: usize) -> Thumb {
        thumb_from_fn(320, 180, false, move |x, y| {
            ((x * 3 + y + i * 5) % 220 + 20) as u8
        })
    }

    fn run(frames: impl Iterator<Item = (f64, Thumb, bool)>) -> Vec<Transition> {
        let mut d = FreezeDetector::new(FreezeConfig::default());
        let mut last = 0.0;
        let mut v = vec![];
        for (t, th, black) in frames {
            last = t;
            v.extend(d.observe(t, &th, black));
        }
        v.extend(d.finish(last + 0.04));
        v
    }

    #[test]
    fn freeze_window_with_reencoding_noise_is_one_event() {
        let frozen = moving(74);
        let trs = run((0..250).map(|i| {
            let t = i as f64 * 0.04;
            if (75..175).contains(&i) {
                // Re-encoded at a GOP boundary: +-1 LSB noise on part of the picture.
                let mut th = frozen.clone();
                if i % 50 == 0 {
                    for g in th.grid.iter_mut().step_by(3) {
                        *g = g.saturating_add(1);
                    }
                }
                (t, th, false)
            } else {
                (t, moving(i), false)
            }
        }));
        assert_eq!(trs.len(), 2, "{trs:?}");
        assert_eq!(trs[0].phase, Phase::Start);
        assert!((trs[0].start_s - 3.0).abs() < 1e-9, "{}", trs[0].start_s);
        assert!((trs[1].end_s.unwrap() - 7.0).abs() < 1e-9);
    }

    #[test]
    fn black_is_not_freeze() {
        let black = thumb_from_fn(320, 180, false, |_, _| 16);
        let trs = run((0..250).map(|i| {
            let t = i as f64 * 0.04;
            if (75..175).contains(&i) {
                (t, black.clone(), true)
            } else {
                (t, moving(i), false)
            }
        }));
        assert!(trs.is_empty(), "{trs:?}");
    }

    #[test]
    fn slow_motion_is_not_freeze() {
        // One pixel of motion per frame on a sharp pattern.
        let trs = run((0..250).map(|i| {
            let th = thumb_from_fn(640, 360, false, move |x, y| {
                if ((x + i) / 16 + y / 16) % 2 == 0 {
                    40
                } else {
                    200
                }
            });
            (i as f64 * 0.04, th, false)
        }));
        assert!(trs.is_empty(), "{trs:?}");
    }

    #[test]
    fn resolution_change_resets_reference() {
        let a = thumb_from_fn(320, 180, false, |_, _| 80);
        let b = thumb_from_fn(640, 360, false, |_, _| 80);
        let mut d = FreezeDetector::new(FreezeConfig::default());
        assert!(d.observe(0.0, &a, false).is_none());
        assert!(d.observe(0.04, &b, false).is_none());
        assert!(d.observe(3.0, &b, false).is_none());
        assert!(d.observe(3.04, &b, false).is_none());
        // frozen since 0.04? No: 0.04 was a new reference, frozen since 3.0.
        assert!(d.observe(5.1, &b, false).is_some());
    }
}
