//! Black picture: the share of near-black luma pixels is at least `picture_ratio` for
//! at least `min_duration`.
//!
//! "Near-black" follows ffmpeg's blackdetect: a pixel is black when its luma is below
//! `pixel_threshold` of the signal range, i.e. below `16 + 0.10 × 219 ≈ 38` for
//! limited-range video (the broadcast norm) and `0.10 × 255 ≈ 26` for full range. The
//! range comes from the stream's SPS (`video_full_range_flag`).

use super::{transition, Hysteresis};
use crate::config::BlackConfig;
use crate::decode::Thumb;
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// The black detector.
#[derive(Debug, Clone)]
pub struct BlackDetector {
    cfg: BlackConfig,
    hyst: Hysteresis,
    /// Highest luma mean seen during the current interval (evidence).
    max_luma: f32,
    /// Lowest black-pixel share seen during the current interval.
    min_ratio: f32,
    frames: u32,
}

impl BlackDetector {
    pub fn new(cfg: BlackConfig) -> Self {
        BlackDetector {
            hyst: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            cfg,
            max_luma: 0.0,
            min_ratio: 1.0,
            frames: 0,
        }
    }

    /// The luma value below which a pixel counts as black.
    pub fn luma_threshold(&self, full_range: bool) -> u8 {
        self.cfg.luma_threshold(full_range)
    }

    /// Per-frame verdict, also used by the freeze detector to keep black out of freeze.
    pub fn is_black(&self, thumb: &Thumb) -> bool {
        thumb.share_below(self.luma_threshold(thumb.full_range)) >= self.cfg.picture_ratio
    }

    /// Feeds one decoded frame at media time `t`.
    pub fn observe(&mut self, t: f64, thumb: &Thumb) -> Option<Transition> {
        let ratio = thumb.share_below(self.luma_threshold(thumb.full_range));
        let black = ratio >= self.cfg.picture_ratio;
        if black {
            if self.hyst.onset().is_none() {
                self.max_luma = 0.0;
                self.min_ratio = 1.0;
                self.frames = 0;
            }
            self.max_luma = self.max_luma.max(thumb.luma_mean);
            self.min_ratio = self.min_ratio.min(ratio);
            self.frames += 1;
        }
        let edge = self.hyst.step(t, black)?;
        Some(transition(DefectKind::Black, edge, self.metrics()))
    }

    /// Nothing pending or open.
    pub fn is_idle(&self) -> bool {
        self.hyst.onset().is_none()
    }

    /// Forgets a pending or open interval and the sample clock (the pipeline feeds an
    /// earlier GOP again; see `pipeline::level`).
    pub fn rewind(&mut self) {
        self.hyst.rewind();
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::Black, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(
            &mut m,
            "luma_mean_max",
            Metric::Num(f64::from(self.max_luma)),
        );
        put(
            &mut m,
            "black_ratio_min",
            Metric::Num(f64::from(self.min_ratio)),
        );
        put(&mut m, "frames", Metric::Int(i64::from(self.frames)));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::thumb_from_fn;
    use crate::defect::Phase;

    fn run(frames: &[(f64, Thumb)]) -> Vec<Transition> {
        let mut d = BlackDetector::new(BlackConfig::default());
        let mut v: Vec<Transition> = frames
            .iter()
            .filter_map(|(t, th)| d.observe(*t, th))
            .collect();
        v.extend(d.finish(frames.last().map_or(0.0, |f| f.0 + 0.04)));
        v
    }

    #[test]
    fn black_window_is_found_with_onset_and_end() {
        let frames: Vec<(f64, Thumb)> = (0..250)
            .map(|i| {
                let t = f64::from(i) * 0.04;
                let black = (75..150).contains(&i);
                (
                    t,
                    thumb_from_fn(640, 360, false, |x, y| {
                        if black {
                            16
                        } else {
                            ((x + y + i as usize) % 200 + 30) as u8
                        }
                    }),
                )
            })
            .collect();
        let tr = run(&frames);
        assert_eq!(tr.len(), 2);
        assert_eq!(tr[0].phase, Phase::Start);
        assert!((tr[0].start_s - 3.0).abs() < 1e-9);
        assert_eq!(tr[1].phase, Phase::End);
        assert!((tr[1].end_s.unwrap() - 6.0).abs() < 1e-9);
    }

    #[test]
    fn dark_scene_with_detail_is_not_black() {
        // Mean luma ~25 but 5% of pixels bright: a night scene, not a black picture.
        let frames: Vec<(f64, Thumb)> = (0..200)
            .map(|i| {
                let t = f64::from(i) * 0.04;
                (
                    t,
                    thumb_from_fn(1280, 720, false, |x, y| {
                        if (x / 4 + y / 4) % 20 == 0 {
                            120
                        } else {
                            18
                        }
                    }),
                )
            })
            .collect();
        assert!(run(&frames).is_empty());
    }

    #[test]
    fn full_range_threshold_differs() {
        let d = BlackDetector::new(BlackConfig::default());
        assert_eq!(d.luma_threshold(false), 37);
        assert_eq!(d.luma_threshold(true), 25);
        // Limited-range black (Y=16) in a full-range stream is 6% grey, not black... but
        // with the 10% threshold it still counts as black.
        let th = thumb_from_fn(64, 64, true, |_, _| 16);
        assert!(d.is_black(&th));
        let th = thumb_from_fn(64, 64, true, |_, _| 30);
        assert!(!d.is_black(&th));
    }
}
