//! Channel loss: in a track of two or more channels, at least one channel is silent
//! (its RMS below `threshold_dbfs`, −60) while the track as a whole is not, for at
//! least `min_duration` (2 s).
//!
//! Root cause first: a block the silence detector calls silent (the RMS over all
//! channels below `silence.threshold_dbfs`) is never a channel loss, so silence in
//! every channel is `silence` only. A mono track (one channel) never has one. Only the
//! first [`MAX_CHANNELS`](crate::decode::MAX_CHANNELS) channels are measured one by one.
//!
//! ```
//! use vqprobe::config::ChannelLossConfig;
//! use vqprobe::decode::AudioLevel;
//! use vqprobe::detect::channel_loss::ChannelLossDetector;
//! let mut d = ChannelLossDetector::new(ChannelLossConfig::default(), -60.0);
//! let mut found = vec![];
//! for i in 0..500 {
//!     let t = i as f64 * 1024.0 / 48000.0;
//!     let right = if (3.0..6.0).contains(&t) { -200.0 } else { -20.0 };
//!     let mut l = AudioLevel { duration: 1920, rms_dbfs: -21.0, channels: 2, ..AudioLevel::default() };
//!     l.channel_rms_dbfs[0] = -20.0;
//!     l.channel_rms_dbfs[1] = right;
//!     found.extend(d.observe(t, &l));
//! }
//! assert_eq!(found.len(), 2);
//! assert!((found[0].start_s - 3.0).abs() < 0.03);
//! ```

use super::{transition, Hysteresis};
use crate::config::ChannelLossConfig;
use crate::decode::AudioLevel;
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// The channel loss detector.
#[derive(Debug, Clone)]
pub struct ChannelLossDetector {
    cfg: ChannelLossConfig,
    /// The silence detector's threshold on the whole track: below it, a block is
    /// silence and not a channel loss.
    silence_dbfs: f64,
    hyst: Hysteresis,
    /// Evidence over the interval: the first channel found silent (0 = left), the
    /// track's channel count, the loudest block of a silent channel and the quietest
    /// of the channels still carrying sound.
    channel: u8,
    channels: u8,
    lost_max_db: f32,
    other_min_db: f32,
}

impl ChannelLossDetector {
    /// `silence_dbfs`: `silence.threshold_dbfs` (a silent track is `silence`).
    pub fn new(cfg: ChannelLossConfig, silence_dbfs: f64) -> Self {
        ChannelLossDetector {
            hyst: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            cfg,
            silence_dbfs,
            channel: 0,
            channels: 0,
            lost_max_db: -200.0,
            other_min_db: 0.0,
        }
    }

    /// Feeds one audio block at media time `t` (its first sample).
    pub fn observe(&mut self, t: f64, level: &AudioLevel) -> Option<Transition> {
        let n = usize::from(level.channels).min(level.channel_rms_dbfs.len());
        let levels = &level.channel_rms_dbfs[..n];
        let quiet = |db: f32| f64::from(db) < self.cfg.threshold_dbfs;
        let first_lost = levels.iter().position(|&db| quiet(db));
        let sounding = levels.iter().any(|&db| !quiet(db));
        let track_silent = f64::from(level.rms_dbfs) < self.silence_dbfs;
        let lost = n >= 2 && first_lost.is_some() && sounding && !track_silent;
        if lost {
            if self.hyst.onset().is_none() {
                self.channel = first_lost.unwrap_or(0) as u8;
                self.channels = n as u8;
                self.lost_max_db = -200.0;
                self.other_min_db = 0.0;
            }
            for &db in levels {
                if quiet(db) {
                    self.lost_max_db = self.lost_max_db.max(db);
                } else {
                    self.other_min_db = self.other_min_db.min(db);
                }
            }
        }
        let edge = self.hyst.step(t, lost)?;
        Some(transition(DefectKind::ChannelLoss, edge, self.metrics()))
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::ChannelLoss, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(&mut m, "channel", Metric::Int(i64::from(self.channel)));
        put(&mut m, "channels", Metric::Int(i64::from(self.channels)));
        put(
            &mut m,
            "level_max_dbfs",
            Metric::Num(f64::from(self.lost_max_db)),
        );
        put(
            &mut m,
            "other_level_min_dbfs",
            Metric::Num(f64::from(self.other_min_db)),
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
    use crate::defect::{Phase, Transition};

    const STEP: f64 = 1024.0 / 48000.0;

    fn lvl(chs: &[f32]) -> AudioLevel {
        let mut l = AudioLevel {
            duration: 1920,
            channels: chs.len() as u8,
            ..AudioLevel::default()
        };
        l.channel_rms_dbfs[..chs.len()].copy_from_slice(chs);
        // The track's RMS: the power mean of its channels.
        let p: f64 = chs
            .iter()
            .map(|&d| 10f64.powf(f64::from(d) / 10.0))
            .sum::<f64>()
            / chs.len().max(1) as f64;
        l.rms_dbfs = crate::decode::to_db(p.sqrt()) as f32;
        l
    }

    fn run(f: impl Fn(f64) -> Vec<f32>) -> Vec<Transition> {
        let mut d = ChannelLossDetector::new(ChannelLossConfig::default(), -60.0);
        let mut v = vec![];
        let n = (10.0 / STEP) as usize;
        for i in 0..n {
            let t = i as f64 * STEP;
            v.extend(d.observe(t, &lvl(&f(t))));
        }
        v.extend(d.finish(n as f64 * STEP));
        v
    }

    fn metric(t: &Transition, name: &str) -> Metric {
        t.metrics
            .iter()
            .find(|(k, _)| *k == name)
            .unwrap()
            .1
            .clone()
    }

    #[test]
    fn right_channel_muted() {
        let tr = run(|t| {
            let r = if (3.0..6.0).contains(&t) {
                -200.0
            } else {
                -20.0
            };
            vec![-20.0, r]
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert_eq!(
            (tr[0].phase, tr[0].kind),
            (Phase::Start, DefectKind::ChannelLoss)
        );
        assert!((tr[0].start_s - 3.0).abs() < 0.03);
        assert!((tr[1].end_s.unwrap() - 6.0).abs() < 0.03);
        assert_eq!(metric(&tr[1], "channel"), Metric::Int(1));
        assert_eq!(metric(&tr[1], "channels"), Metric::Int(2));
        assert_eq!(metric(&tr[1], "level_max_dbfs"), Metric::Num(-200.0));
        assert_eq!(metric(&tr[1], "other_level_min_dbfs"), Metric::Num(-20.0));
    }

    #[test]
    fn one_of_six_channels_lost_is_found() {
        let tr = run(|t| {
            let c = if t > 4.0 { -80.0 } else { -30.0 };
            vec![-30.0, -30.0, c, -40.0, -30.0, -30.0]
        });
        assert_eq!(tr.len(), 2);
        assert_eq!(metric(&tr[0], "channel"), Metric::Int(2));
        assert_eq!(metric(&tr[0], "channels"), Metric::Int(6));
    }

    #[test]
    fn silence_in_every_channel_is_not_channel_loss() {
        assert!(run(|t| if t > 3.0 {
            vec![-200.0, -200.0]
        } else {
            vec![-20.0, -20.0]
        })
        .is_empty());
        // One channel at -59 dBFS, the other lost: the track is at about -62 dBFS,
        // which is `silence`, so not also a channel loss.
        assert!(run(|_| vec![-59.0, -200.0]).is_empty());
    }

    #[test]
    fn identical_or_quiet_channels_and_mono_are_not_channel_loss() {
        assert!(run(|_| vec![-20.0, -20.0]).is_empty());
        assert!(run(|_| vec![-45.0, -55.0]).is_empty(), "quiet, not lost");
        assert!(run(|_| vec![-20.0]).is_empty(), "mono");
        assert!(run(|_| vec![]).is_empty(), "empty block");
        // Shorter than min_duration.
        assert!(run(|t| vec![
            -20.0,
            if (2.0..3.5).contains(&t) {
                -200.0
            } else {
                -20.0
            }
        ])
        .is_empty());
    }
}
