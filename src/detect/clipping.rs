//! Clipping: at least `ratio` (0.1%) of the samples of the last `window` (1 s) are at
//! full scale (|s| ≥ `sample_level`, counted by the decoder in
//! [`AudioLevel::near_full_scale`]), for at least `min_duration` (2 s).
//!
//! The share is taken over a sliding window kept as a fixed ring of [`BUCKETS`]
//! buckets (window / 10 each): fixed memory whatever the block size. A window lags
//! the sound it measures, so the interval reported is not the window's but the sound's:
//! the onset is the first block at full scale inside the window that crossed the
//! ratio, the end the end of the last block at full scale before the share fell below
//! it. The `min_duration` is counted on that sound too (from the first block at full
//! scale to the end of the last one, while the window stays over the ratio).
//!
//! ```
//! use vqprobe::config::ClippingConfig;
//! use vqprobe::decode::AudioLevel;
//! use vqprobe::detect::clipping::ClippingDetector;
//! let mut d = ClippingDetector::new(ClippingConfig::default());
//! let block = |near| AudioLevel { duration: 1920, near_full_scale: near, samples: 2048, ..AudioLevel::default() };
//! let mut found = vec![];
//! for i in 0..500 {
//!     let t = i as f64 * 1024.0 / 48000.0;
//!     let near = if (4.0..7.0).contains(&t) { 20 } else { 0 };
//!     found.extend(d.observe(t, &block(near)));
//! }
//! assert_eq!(found.len(), 2); // start and end
//! assert!((found[0].start_s - 4.0).abs() < 0.03);
//! assert!((found[1].end_s.unwrap() - 7.0).abs() < 0.03);
//! ```

use super::{transition, Edge};
use crate::config::ClippingConfig;
use crate::decode::{to_db, AudioLevel};
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// Buckets in the sliding window (each a tenth of it), plus the one being filled.
pub const BUCKETS: usize = 11;

/// One slice of the sliding window.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Index of the slice (media time / slice length); `i64::MIN` when empty.
    index: i64,
    near: u64,
    samples: u64,
    /// Start of the first block at full scale in the slice.
    first_hit: Option<f64>,
}

/// Where the detector is. Times are the sound's: `onset` is the first block at full
/// scale, `end` the end of the last one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Idle,
    /// The window crossed the ratio; not yet `min_duration` of clipped sound.
    Pending {
        onset: f64,
    },
    /// Confirmed (a start was reported).
    Active {
        onset: f64,
    },
    /// Confirmed, the window fell below the ratio at `clean_since` (block time); the
    /// sound's end is `end`. Ends after `clear_duration` clean.
    Clearing {
        onset: f64,
        end: f64,
        clean_since: f64,
    },
}

/// The clipping detector.
///
/// Its own small state machine rather than [`Hysteresis`](super::Hysteresis): the
/// window's verdict lags the sound by up to a window, so `min_duration` is counted on
/// the sound (from the first block at full scale to the end of the last one), not on
/// the verdict, or a heavy clip of 1.5 s would stay "clipping" in the window for 2.5 s.
#[derive(Debug, Clone)]
pub struct ClippingDetector {
    cfg: ClippingConfig,
    state: State,
    ring: [Bucket; BUCKETS],
    /// Length of a bucket (window / 10), seconds.
    slice: f64,
    /// Last block time seen (blocks are clamped to go forward).
    last_t: f64,
    /// End of the last block with a sample at full scale.
    last_hit_end: f64,
    /// End of the last defect: hits before it still in the window belong to it, not to
    /// the next one.
    ended_at: f64,
    /// Evidence over the interval: largest share of the window, loudest peak.
    share_max: f64,
    peak_max_db: f32,
}

impl ClippingDetector {
    pub fn new(cfg: ClippingConfig) -> Self {
        let window = if cfg.window.is_finite() && cfg.window > 0.0 {
            cfg.window
        } else {
            1.0
        };
        ClippingDetector {
            slice: window / (BUCKETS - 1) as f64,
            cfg,
            state: State::Idle,
            ring: [Bucket {
                index: i64::MIN,
                ..Bucket::default()
            }; BUCKETS],
            last_t: f64::NEG_INFINITY,
            last_hit_end: f64::NEG_INFINITY,
            ended_at: f64::NEG_INFINITY,
            share_max: 0.0,
            peak_max_db: -200.0,
        }
    }

    /// Feeds one audio block at media time `t` (its first sample).
    pub fn observe(&mut self, t: f64, level: &AudioLevel) -> Option<Transition> {
        if !t.is_finite() {
            return None;
        }
        let t = t.max(self.last_t);
        self.last_t = t;
        let dur = crate::timebase::secs(level.duration).max(0.0);
        let index = (t / self.slice).floor() as i64;
        let slot = index.rem_euclid(BUCKETS as i64) as usize;
        let b = &mut self.ring[slot];
        if b.index != index {
            *b = Bucket {
                index,
                ..Bucket::default()
            };
        }
        b.near += u64::from(level.near_full_scale);
        b.samples += u64::from(level.samples);
        if level.near_full_scale > 0 {
            b.first_hit.get_or_insert(t);
            self.last_hit_end = self.last_hit_end.max(t + dur);
        }
        // The window: this bucket and the BUCKETS - 1 before it.
        let (mut near, mut samples, mut first_hit) = (0u64, 0u64, f64::INFINITY);
        for b in &self.ring {
            if b.index <= index && b.index > index.saturating_sub(BUCKETS as i64) {
                near += b.near;
                samples += b.samples;
                if let Some(h) = b.first_hit {
                    first_hit = first_hit.min(h);
                }
            }
        }
        let share = if samples == 0 {
            0.0
        } else {
            near as f64 / samples as f64
        };
        let clipping = samples > 0 && near > 0 && share >= self.cfg.ratio;
        if clipping {
            if self.state == State::Idle {
                self.share_max = 0.0;
                self.peak_max_db = -200.0;
            }
            self.share_max = self.share_max.max(share);
            self.peak_max_db = self.peak_max_db.max(level.peak_dbfs);
        }
        let (state, edge) = match (self.state, clipping) {
            (State::Idle, false) => (State::Idle, None),
            (State::Idle, true) => {
                let onset = first_hit.max(self.ended_at).min(t);
                self.confirm(onset)
            }
            (State::Pending { onset }, true) => self.confirm(onset),
            (State::Pending { .. }, false) => (State::Idle, None),
            (State::Active { onset }, true) => (State::Active { onset }, None),
            (State::Active { onset }, false) => {
                let end = self.last_hit_end.max(onset);
                if self.cfg.clear_duration <= 0.0 {
                    (State::Idle, Some(Edge::Ended { onset, end }))
                } else {
                    (
                        State::Clearing {
                            onset,
                            end,
                            clean_since: t,
                        },
                        None,
                    )
                }
            }
            (State::Clearing { onset, .. }, true) => (State::Active { onset }, None),
            (
                State::Clearing {
                    onset,
                    end,
                    clean_since,
                },
                false,
            ) => {
                if t - clean_since >= self.cfg.clear_duration {
                    (State::Idle, Some(Edge::Ended { onset, end }))
                } else {
                    (self.state, None)
                }
            }
        };
        self.state = state;
        if let Some(Edge::Ended { end, .. }) = edge {
            self.ended_at = end;
        }
        edge.map(|e| transition(DefectKind::Clipping, e, self.metrics()))
    }

    /// Pending from `onset`: confirmed once the clipped sound spans `min_duration`.
    fn confirm(&self, onset: f64) -> (State, Option<Edge>) {
        if self.last_hit_end - onset >= self.cfg.min_duration {
            (State::Active { onset }, Some(Edge::Confirmed { onset }))
        } else {
            (State::Pending { onset }, None)
        }
    }

    /// End of input at media time `t`: closes a confirmed defect (an open one at `t`),
    /// forgets a pending one.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let t = if t.is_finite() {
            t.max(self.last_t)
        } else {
            self.last_t
        };
        let edge = match std::mem::replace(&mut self.state, State::Idle) {
            State::Active { onset } => Edge::Ended {
                onset,
                end: t.max(onset),
            },
            State::Clearing { onset, end, .. } => Edge::Ended { onset, end },
            State::Idle | State::Pending { .. } => return None,
        };
        Some(transition(DefectKind::Clipping, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(
            &mut m,
            "clipped_share_max",
            Metric::Num((self.share_max * 1e5).round() / 1e5),
        );
        put(
            &mut m,
            "peak_max_dbfs",
            Metric::Num(f64::from(self.peak_max_db)),
        );
        put(
            &mut m,
            "sample_level_dbfs",
            Metric::Num(to_db(self.cfg.sample_level)),
        );
        put(&mut m, "ratio", Metric::Num(self.cfg.ratio));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::Phase;

    const STEP: f64 = 1024.0 / 48000.0;

    /// A stereo AAC-sized block with `near` samples at full scale.
    fn blk(near: u32, peak: f32) -> AudioLevel {
        AudioLevel {
            duration: 1920,
            rms_dbfs: -10.0,
            peak_dbfs: peak,
            channels: 2,
            near_full_scale: near,
            samples: 2048,
            ..AudioLevel::default()
        }
    }

    fn run(cfg: ClippingConfig, secs: f64, f: impl Fn(f64) -> u32) -> Vec<Transition> {
        let mut d = ClippingDetector::new(cfg);
        let mut v = vec![];
        let n = (secs / STEP) as usize;
        for i in 0..n {
            let t = i as f64 * STEP;
            let near = f(t);
            v.extend(d.observe(t, &blk(near, if near > 0 { 0.1 } else { -3.0 })));
        }
        v.extend(d.finish(n as f64 * STEP));
        v
    }

    #[test]
    fn heavy_clipping_is_timed_by_the_sound_not_the_window() {
        // 1% of the samples at full scale over [4, 7): the window crosses 0.1% after
        // ~0.1 s and falls below it ~0.9 s after the end; the interval is the sound's.
        let tr = run(ClippingConfig::default(), 10.0, |t| {
            if (4.0..7.0).contains(&t) {
                20
            } else {
                0
            }
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert_eq!(tr[0].phase, Phase::Start);
        assert_eq!(tr[0].kind, DefectKind::Clipping);
        assert!((tr[0].start_s - 4.0).abs() < 0.03, "{}", tr[0].start_s);
        assert!(
            (tr[1].end_s.unwrap() - 7.0).abs() < 0.03,
            "{:?}",
            tr[1].end_s
        );
        let m = &tr[1].metrics;
        let share = m.iter().find(|(k, _)| *k == "clipped_share_max").unwrap();
        assert!(
            matches!(share.1, Metric::Num(s) if (s - 20.0 / 2048.0).abs() < 1e-3),
            "{m:?}"
        );
    }

    #[test]
    fn bursts_within_the_window_are_one_defect() {
        // A loud drum hit clipped every 0.5 s (5 blocks with 1% of their samples at full scale each time, 0.2% of a second): the
        // window bridges the gaps between hits.
        let tr = run(ClippingConfig::default(), 12.0, |t| {
            if (3.0..8.0).contains(&t) && (t % 0.5) < 0.1 {
                20
            } else {
                0
            }
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert!((tr[0].start_s - 3.0).abs() < 0.03);
        // The last hit is at [7.5, 7.6).
        assert!(
            (tr[1].end_s.unwrap() - 7.6).abs() < 0.05,
            "{:?}",
            tr[1].end_s
        );
    }

    #[test]
    fn a_few_samples_at_full_scale_are_not_clipping() {
        // One sample at full scale per block: 1/2048 = 0.05% < 0.1%.
        assert!(run(ClippingConfig::default(), 10.0, |_| 1).is_empty());
        // Heavy clipping shorter than min_duration.
        assert!(run(ClippingConfig::default(), 10.0, |t| u32::from(
            (2.0..3.5).contains(&t)
        ) * 100)
        .is_empty());
        // Nothing at full scale at all.
        assert!(run(ClippingConfig::default(), 10.0, |_| 0).is_empty());
    }

    #[test]
    fn clipping_until_the_end_is_closed_at_the_end() {
        let tr = run(ClippingConfig::default(), 10.0, |t| {
            u32::from(t >= 5.0) * 30
        });
        assert_eq!(tr.len(), 2);
        assert!((tr[0].start_s - 5.0).abs() < 0.03);
        assert!((tr[1].end_s.unwrap() - 10.0).abs() < 0.03);
    }

    #[test]
    fn ratio_and_window_are_honoured() {
        let cfg = ClippingConfig {
            ratio: 0.01,
            ..ClippingConfig::default()
        };
        // 0.5% is below a 1% ratio...
        assert!(
            run(cfg.clone(), 10.0, |t| u32::from((4.0..7.0).contains(&t))
                * 10)
            .is_empty()
        );
        // ... 2% is above it.
        assert_eq!(
            run(cfg, 10.0, |t| u32::from((4.0..7.0).contains(&t)) * 41).len(),
            2
        );
        // A 5 s window holds the share up after the clipping stopped, but the end is
        // still the last block at full scale.
        let cfg = ClippingConfig {
            window: 5.0,
            ..ClippingConfig::default()
        };
        let tr = run(cfg, 15.0, |t| u32::from((4.0..7.0).contains(&t)) * 20);
        assert_eq!(tr.len(), 2);
        assert!((tr[1].end_s.unwrap() - 7.0).abs() < 0.03, "{tr:?}");
    }

    #[test]
    fn a_heavy_clip_shorter_than_min_duration_is_not_reported() {
        // 1.9 s at 5%: the window stays over the ratio for ~2.9 s, the sound does not.
        assert!(run(ClippingConfig::default(), 10.0, |t| u32::from(
            (2.0..3.9).contains(&t)
        ) * 100)
        .is_empty());
        let tr = run(ClippingConfig::default(), 10.0, |t| {
            u32::from((2.0..4.1).contains(&t)) * 100
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert!((tr[1].end_s.unwrap() - 4.1).abs() < 0.03, "{tr:?}");
    }

    #[test]
    fn clear_duration_merges_clips_and_keeps_the_sound_end() {
        let cfg = ClippingConfig {
            clear_duration: 2.0,
            ..ClippingConfig::default()
        };
        // Clipped [1, 4) and [5.5, 8): the window is clean from ~5 s for 0.5 s only.
        let tr = run(cfg.clone(), 12.0, |t| {
            u32::from((1.0..4.0).contains(&t) || (5.5..8.0).contains(&t)) * 40
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert!((tr[0].start_s - 1.0).abs() < 0.03);
        assert!((tr[1].end_s.unwrap() - 8.0).abs() < 0.03, "{tr:?}");
        // Clean for longer than clear_duration: two defects.
        let tr = run(cfg, 14.0, |t| {
            u32::from((1.0..4.0).contains(&t) || (8.0..11.0).contains(&t)) * 40
        });
        assert_eq!(tr.len(), 4, "{tr:?}");
        assert!((tr[1].end_s.unwrap() - 4.0).abs() < 0.03, "{tr:?}");
    }

    #[test]
    fn odd_blocks_do_not_break_it() {
        let mut d = ClippingDetector::new(ClippingConfig::default());
        // Empty blocks, a non-finite time, time going backwards, huge counts.
        assert!(d.observe(0.0, &AudioLevel::default()).is_none());
        assert!(d.observe(f64::NAN, &blk(2048, 0.0)).is_none());
        assert!(d.observe(1.0, &blk(u32::MAX, 0.0)).is_none());
        assert!(d.observe(0.5, &blk(0, 0.0)).is_none());
        assert!(d.finish(2.0).is_none());
    }
}
