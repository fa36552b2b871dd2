//! `low_fps`: the frame rate (from presentation timestamps) stays below `ratio` (80%)
//! of the stream's nominal rate for at least `min_duration`.
//!
//! The current rate is the mean of the last 5 frame intervals; the nominal rate is the
//! best such rate the stream has sustained (so a stream that starts degraded is still
//! judged against what it can do). Timestamps, not arrival times: a live source that
//! delivers late but complete is a `stall`, not `low_fps`.

use heapless::HistoryBuf;

use super::{transition, Hysteresis};
use crate::config::LowFpsConfig;
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// Intervals averaged for the current rate.
const SPAN: usize = 5;

/// The low frame rate detector.
#[derive(Debug, Clone)]
pub struct LowFpsDetector {
    cfg: LowFpsConfig,
    hyst: Hysteresis,
    last_t: Option<f64>,
    intervals: HistoryBuf<f64, SPAN>,
    /// Shortest mean interval sustained over `SPAN` frames (seconds).
    nominal: Option<f64>,
    /// Lowest rate seen in the current interval (evidence).
    min_fps: f64,
}

impl LowFpsDetector {
    pub fn new(cfg: LowFpsConfig) -> Self {
        LowFpsDetector {
            hyst: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            cfg,
            last_t: None,
            intervals: HistoryBuf::new(),
            nominal: None,
            min_fps: f64::INFINITY,
        }
    }

    /// Feeds the presentation time of one decoded (or rejected) frame.
    pub fn observe(&mut self, t: f64) -> Option<Transition> {
        let last = self.last_t.replace(t);
        let d = t - last?;
        // Gaps over 2 s are outages (stall, source down), reported elsewhere; a
        // timestamp jump backwards is a discontinuity. Neither is a frame interval.
        if !(0.0..=2.0).contains(&d) || d == 0.0 {
            self.intervals.clear();
            return None;
        }
        self.intervals.write(d);
        if self.intervals.len() < SPAN {
            return None;
        }
        let mean = self.intervals.iter().sum::<f64>() / SPAN as f64;
        let nominal = *self.nominal.get_or_insert(mean);
        if mean < nominal {
            self.nominal = Some(mean);
        }
        let fps = 1.0 / mean;
        let nominal_fps = 1.0 / self.nominal.unwrap_or(mean);
        let low = fps < self.cfg.ratio * nominal_fps;
        if low {
            if self.hyst.onset().is_none() {
                self.min_fps = f64::INFINITY;
            }
            self.min_fps = self.min_fps.min(fps);
        }
        let edge = self.hyst.step(t, low)?;
        Some(transition(DefectKind::LowFps, edge, self.metrics()))
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::LowFps, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(
            &mut m,
            "fps_min",
            Metric::Num(if self.min_fps.is_finite() {
                self.min_fps
            } else {
                0.0
            }),
        );
        put(
            &mut m,
            "fps_nominal",
            Metric::Num(self.nominal.map_or(0.0, |n| 1.0 / n)),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::Phase;

    #[test]
    fn one_frame_in_three_for_three_seconds() {
        let mut d = LowFpsDetector::new(LowFpsConfig::default());
        let mut v = vec![];
        for n in 0..250u32 {
            let t = f64::from(n) * 0.04;
            if (4.0..7.0).contains(&t) && n % 3 != 0 {
                continue;
            }
            v.extend(d.observe(t));
        }
        v.extend(d.finish(10.0));
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0].phase, Phase::Start);
        assert!((v[0].start_s - 4.0).abs() < 0.25, "{}", v[0].start_s);
        assert!((v[1].end_s.unwrap() - 7.0).abs() < 0.25, "{:?}", v[1].end_s);
        assert!(v[1]
            .metrics
            .iter()
            .any(|(k, m)| *k == "fps_nominal"
                && matches!(m, Metric::Num(x) if (x - 25.0).abs() < 0.1)));
    }

    #[test]
    fn isolated_drops_and_steady_streams_are_fine() {
        let mut d = LowFpsDetector::new(LowFpsConfig::default());
        for n in 0..500u32 {
            if n % 50 == 7 {
                continue; // one frame lost every 2 s
            }
            assert!(d.observe(f64::from(n) / 30.0).is_none());
        }
        assert!(d.finish(20.0).is_none());
    }
}
