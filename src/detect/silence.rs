//! Silence: the audio level (RMS over all channels, per codec frame) stays below
//! `threshold_dbfs` (default −60 dBFS, as ffmpeg's silencedetect) for at least
//! `min_duration`.

use super::{transition, Hysteresis};
use crate::config::SilenceConfig;
use crate::decode::AudioLevel;
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// The silence detector.
#[derive(Debug, Clone)]
pub struct SilenceDetector {
    cfg: SilenceConfig,
    hyst: Hysteresis,
    /// Loudest block inside the current interval (evidence).
    max_db: f32,
}

impl SilenceDetector {
    pub fn new(cfg: SilenceConfig) -> Self {
        SilenceDetector {
            hyst: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            cfg,
            max_db: -200.0,
        }
    }

    /// Feeds one audio block at media time `t` (its first sample).
    pub fn observe(&mut self, t: f64, level: &AudioLevel) -> Option<Transition> {
        let silent = f64::from(level.rms_dbfs) < self.cfg.threshold_dbfs;
        if silent {
            if self.hyst.onset().is_none() {
                self.max_db = -200.0;
            }
            self.max_db = self.max_db.max(level.rms_dbfs);
        }
        let edge = self.hyst.step(t, silent)?;
        Some(transition(DefectKind::Silence, edge, self.metrics()))
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::Silence, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(
            &mut m,
            "level_max_dbfs",
            Metric::Num(f64::from(self.max_db)),
        );
        put(
            &mut m,
            "threshold_dbfs",
            Metric::Num(self.cfg.threshold_dbfs),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::Phase;

    fn lvl(db: f32) -> AudioLevel {
        AudioLevel {
            pts: 0,
            duration: 1920,
            rms_dbfs: db,
            peak_dbfs: db + 3.0,
            ..AudioLevel::default()
        }
    }

    fn run(f: impl Fn(f64) -> f32) -> Vec<Transition> {
        let mut d = SilenceDetector::new(SilenceConfig::default());
        let mut v = vec![];
        let step = 1024.0 / 48000.0;
        let n = (10.0 / step) as usize;
        for i in 0..n {
            let t = i as f64 * step;
            v.extend(d.observe(t, &lvl(f(t))));
        }
        v.extend(d.finish(n as f64 * step));
        v
    }

    #[test]
    fn silence_window() {
        let tr = run(|t| {
            if (4.0..7.0).contains(&t) {
                -200.0
            } else {
                -20.0
            }
        });
        assert_eq!(tr.len(), 2);
        assert_eq!(tr[0].phase, Phase::Start);
        assert!((tr[0].start_s - 4.0).abs() < 0.03);
        assert!((tr[1].end_s.unwrap() - 7.0).abs() < 0.03);
    }

    #[test]
    fn quiet_is_not_silence() {
        assert!(run(|_| -45.0).is_empty());
        assert!(
            run(|t| if t > 1.5 { -58.0 } else { -61.0 }).is_empty(),
            "2 s minimum not reached"
        );
    }

    #[test]
    fn silence_until_end_is_closed_at_end() {
        let tr = run(|t| if t > 5.0 { -90.0 } else { -20.0 });
        assert_eq!(tr.len(), 2);
        assert!((tr[1].end_s.unwrap() - 10.0).abs() < 0.03);
    }
}
