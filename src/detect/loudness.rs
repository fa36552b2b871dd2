//! Loudness (BS.1770 / EBU R128, measured by the decoder: [`crate::decode::loudness`]):
//!
//! * **too loud**: the short-term loudness (3 s) is above `ceiling_lufs` (−10 LUFS) and
//!   the loud sound lasts at least `min_duration` (3 s);
//! * **too quiet**: the gated loudness of the last `long_window` seconds (30) is below
//!   `floor_lufs` (−40 LUFS) for at least `min_duration`, and the sound is not silence.
//!
//! Both are one kind, `loudness`, told apart by the `problem` metric and by their
//! [`Transition::slot`] (0 too loud, 1 too quiet: each its own defect).
//!
//! Root cause first: sound the silence detector calls silence (RMS below
//! `silence.threshold_dbfs` for `silence.min_duration`) is never "too quiet": silence is
//! `silence`'s, and an open "too quiet" ends when silence is confirmed (shorter pauses,
//! between words, do not count). A "too quiet" defect is not opened while a "too loud"
//! one is tracked (a loud passage lifts the gated long window over the floor anyway).
//!
//! **Timing.** A window lags the sound it measures, so the interval reported is the
//! sound's, not the window's. Too loud: the verdict is the short-term value, but the
//! onset is the first loud 400 ms momentary reading (placed at the centre of its window)
//! of the run of loud readings the short-term window crossed on (readings less than 3 s
//! apart are one run), the end the last loud reading before the short-term value fell
//! back under the ceiling: a step up or down in level is placed within about ±0.2 s,
//! whatever the two levels. Too quiet: the long window can only fall below the floor
//! once quiet sound fills it, so the onset is the start of the window that first read
//! below the floor (when it crossed, minus `long_window`), the end when it rose above
//! again (loud sound entering the window lifts a gated loudness at once).
//!
//! ```
//! use vqprobe::config::LoudnessConfig;
//! use vqprobe::decode::AudioLevel;
//! use vqprobe::detect::loudness::LoudnessDetector;
//! let mut d = LoudnessDetector::new(LoudnessConfig::default(), -60.0, 2.0);
//! let mut found = vec![];
//! for i in 0..1000 {
//!     let t = i as f64 * 0.02;
//!     let loud = (5.0..13.0).contains(&t);
//!     let l = AudioLevel {
//!         duration: 1800,
//!         rms_dbfs: -20.0,
//!         momentary_lufs: Some(if loud { -6.0 } else { -23.0 }),
//!         short_term_lufs: Some(if (6.0..14.0).contains(&t) { -7.0 } else { -20.0 }),
//!         ..AudioLevel::default()
//!     };
//!     found.extend(d.observe(t, &l).into_iter().flatten());
//! }
//! assert_eq!(found.len(), 2);
//! assert!((found[0].start_s - 4.8).abs() < 0.05, "{}", found[0].start_s);
//! ```

use super::{transition, Edge, Hysteresis};
use crate::config::LoudnessConfig;
use crate::decode::AudioLevel;
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// The short-term window (EBU R128), seconds.
pub const SHORT_TERM_S: f64 = 3.0;
/// A momentary reading is placed at the centre of its 400 ms window, which ends at the
/// end of the block it closed in.
const MOMENTARY_CENTRE_S: f64 = 0.2;

/// The "too loud" states; times are the sound's.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Loud {
    Idle,
    /// The short-term value is over the ceiling; not yet `min_duration` of loud sound.
    Pending {
        onset: f64,
    },
    /// Confirmed (a start was reported).
    Active {
        onset: f64,
    },
    /// Confirmed, the short-term value fell under the ceiling at `clean_since` (block
    /// time); the loud sound ended at `end`.
    Clearing {
        onset: f64,
        end: f64,
        clean_since: f64,
    },
}

/// The loudness detector (see the module docs).
#[derive(Debug, Clone)]
pub struct LoudnessDetector {
    cfg: LoudnessConfig,
    /// The silence detector's threshold and duration: sound below it for that long is
    /// silence, not too quiet.
    silence_dbfs: f64,
    silence_min_s: f64,
    /// Start of the current run of blocks under the silence threshold.
    silent_since: Option<f64>,
    loud: Loud,
    last_t: f64,
    first_t: Option<f64>,
    /// Start and last of the current run of loud momentary readings (centres).
    run_start: Option<f64>,
    last_loud: f64,
    /// End of the last "too loud" defect: loud readings before it belong to it.
    loud_ended_at: f64,
    quiet: Hysteresis,
    /// Onset of the "too quiet" defect being tracked (moved back by the window) and end
    /// of the last one.
    quiet_onset: f64,
    quiet_ended_at: f64,
    /// Evidence: loudest short-term and momentary readings while too loud, quietest
    /// long-window reading while too quiet.
    short_max: f32,
    momentary_max: f32,
    long_min: f32,
}

impl LoudnessDetector {
    /// `silence_dbfs`, `silence_min_s`: `silence.threshold_dbfs` and
    /// `silence.min_duration` (silence is `silence`, not too quiet).
    pub fn new(cfg: LoudnessConfig, silence_dbfs: f64, silence_min_s: f64) -> Self {
        LoudnessDetector {
            quiet: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            cfg,
            silence_dbfs,
            silence_min_s,
            silent_since: None,
            loud: Loud::Idle,
            last_t: f64::NEG_INFINITY,
            first_t: None,
            run_start: None,
            last_loud: f64::NEG_INFINITY,
            loud_ended_at: f64::NEG_INFINITY,
            quiet_onset: 0.0,
            quiet_ended_at: f64::NEG_INFINITY,
            short_max: -200.0,
            momentary_max: -200.0,
            long_min: 0.0,
        }
    }

    /// Feeds one audio block at media time `t` (its first sample). At most one
    /// transition of each problem.
    pub fn observe(&mut self, t: f64, level: &AudioLevel) -> [Option<Transition>; 2] {
        if !self.cfg.enabled || !t.is_finite() {
            return [None, None];
        }
        let t = t.max(self.last_t);
        self.last_t = t;
        let first = *self.first_t.get_or_insert(t);
        let end_of_block = t + crate::timebase::secs(level.duration).max(0.0);
        // Too loud.
        if let Some(m) = level.momentary_lufs {
            if f64::from(m) > self.cfg.ceiling_lufs {
                let c = (end_of_block - MOMENTARY_CENTRE_S).max(first);
                if self.run_start.is_none() || c - self.last_loud > SHORT_TERM_S {
                    self.run_start = Some(c);
                }
                self.last_loud = self.last_loud.max(c);
            }
        }
        let loud = level
            .short_term_lufs
            .is_some_and(|s| f64::from(s) > self.cfg.ceiling_lufs);
        if loud {
            if matches!(self.loud, Loud::Idle) {
                self.short_max = -200.0;
                self.momentary_max = -200.0;
            }
            self.short_max = self.short_max.max(level.short_term_lufs.unwrap_or(-200.0));
            if let Some(m) = level.momentary_lufs {
                self.momentary_max = self.momentary_max.max(m);
            }
        }
        let loud_edge = self.step_loud(t, loud);
        // Too quiet (never while too loud is tracked, never on silence).
        let silent = if f64::from(level.rms_dbfs) < self.silence_dbfs {
            let since = *self.silent_since.get_or_insert(t);
            t - since >= self.silence_min_s
        } else {
            self.silent_since = None;
            false
        };
        let long = level.long_lufs.filter(|l| l.is_finite());
        let quiet = matches!(self.loud, Loud::Idle)
            && !silent
            && long.is_some_and(|l| f64::from(l) < self.cfg.floor_lufs);
        if quiet {
            if self.quiet.onset().is_none() {
                self.long_min = 0.0;
            }
            self.long_min = self.long_min.min(long.unwrap_or(0.0));
        }
        let quiet_edge = self
            .quiet
            .step(t, quiet)
            .map(|e| self.place_quiet(e, first));
        [
            loud_edge.map(|e| transition(DefectKind::Loudness, e, self.loud_metrics())),
            quiet_edge.map(|e| self.quiet_transition(e)),
        ]
    }

    fn quiet_transition(&self, e: Edge) -> Transition {
        let mut t = transition(DefectKind::Loudness, e, self.quiet_metrics());
        t.slot = 1;
        t
    }

    fn step_loud(&mut self, t: f64, loud: bool) -> Option<Edge> {
        let (state, edge) = match (self.loud, loud) {
            (Loud::Idle, false) => (Loud::Idle, None),
            (Loud::Idle, true) => {
                let onset = self.run_start.unwrap_or(t).max(self.loud_ended_at).min(t);
                self.confirm(onset)
            }
            (Loud::Pending { onset }, true) => self.confirm(onset),
            (Loud::Pending { .. }, false) => (Loud::Idle, None),
            (Loud::Active { onset }, true) => (Loud::Active { onset }, None),
            (Loud::Active { onset }, false) => {
                let end = self.last_loud.max(onset);
                if self.cfg.clear_duration <= 0.0 {
                    (Loud::Idle, Some(Edge::Ended { onset, end }))
                } else {
                    (
                        Loud::Clearing {
                            onset,
                            end,
                            clean_since: t,
                        },
                        None,
                    )
                }
            }
            (Loud::Clearing { onset, .. }, true) => (Loud::Active { onset }, None),
            (
                Loud::Clearing {
                    onset,
                    end,
                    clean_since,
                },
                false,
            ) => {
                if t - clean_since >= self.cfg.clear_duration {
                    (Loud::Idle, Some(Edge::Ended { onset, end }))
                } else {
                    (self.loud, None)
                }
            }
        };
        self.loud = state;
        if let Some(Edge::Ended { end, .. }) = edge {
            self.loud_ended_at = end;
            self.run_start = None;
        }
        edge
    }

    /// Pending from `onset`: confirmed once the loud sound spans `min_duration`.
    fn confirm(&self, onset: f64) -> (Loud, Option<Edge>) {
        if self.last_loud - onset >= self.cfg.min_duration {
            (Loud::Active { onset }, Some(Edge::Confirmed { onset }))
        } else {
            (Loud::Pending { onset }, None)
        }
    }

    /// A "too quiet" edge with its onset moved back to the start of the long window.
    fn place_quiet(&mut self, e: Edge, first: f64) -> Edge {
        match e {
            Edge::Confirmed { onset } => {
                self.quiet_onset = (onset - self.cfg.long_window)
                    .max(first)
                    .max(self.quiet_ended_at)
                    .min(onset);
                Edge::Confirmed {
                    onset: self.quiet_onset,
                }
            }
            Edge::Ended { end, .. } => {
                self.quiet_ended_at = end;
                Edge::Ended {
                    onset: self.quiet_onset,
                    end,
                }
            }
        }
    }

    /// End of input at media time `t`: closes a confirmed defect (an open one at `t`),
    /// forgets a pending one.
    pub fn finish(&mut self, t: f64) -> [Option<Transition>; 2] {
        if !self.cfg.enabled {
            return [None, None];
        }
        let t = if t.is_finite() {
            t.max(self.last_t)
        } else {
            self.last_t
        };
        let loud = match std::mem::replace(&mut self.loud, Loud::Idle) {
            Loud::Active { onset } => Some(Edge::Ended {
                onset,
                end: t.max(onset),
            }),
            Loud::Clearing { onset, end, .. } => Some(Edge::Ended { onset, end }),
            Loud::Idle | Loud::Pending { .. } => None,
        };
        let first = self.first_t.unwrap_or(t);
        let quiet = self.quiet.finish(t).map(|e| self.place_quiet(e, first));
        [
            loud.map(|e| transition(DefectKind::Loudness, e, self.loud_metrics())),
            quiet.map(|e| self.quiet_transition(e)),
        ]
    }

    fn loud_metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(&mut m, "problem", Metric::Str("too_loud"));
        put(
            &mut m,
            "short_term_max_lufs",
            Metric::Num(tenth(self.short_max)),
        );
        put(
            &mut m,
            "momentary_max_lufs",
            Metric::Num(tenth(self.momentary_max)),
        );
        put(&mut m, "ceiling_lufs", Metric::Num(self.cfg.ceiling_lufs));
        m
    }

    fn quiet_metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(&mut m, "problem", Metric::Str("too_quiet"));
        put(&mut m, "long_min_lufs", Metric::Num(tenth(self.long_min)));
        put(&mut m, "long_window_s", Metric::Num(self.cfg.long_window));
        put(&mut m, "floor_lufs", Metric::Num(self.cfg.floor_lufs));
        m
    }
}

/// LUFS to 0.1 LU (the meter's accuracy).
fn tenth(v: f32) -> f64 {
    (f64::from(v) * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::Phase;

    /// An AAC-sized block (1024 samples at 48 kHz).
    const STEP: f64 = 1024.0 / 48000.0;

    fn lvl(rms: f32, m: Option<f32>, s: Option<f32>, long: Option<f32>) -> AudioLevel {
        AudioLevel {
            duration: 1920,
            rms_dbfs: rms,
            momentary_lufs: m,
            short_term_lufs: s,
            long_lufs: long,
            ..AudioLevel::default()
        }
    }

    /// Runs `secs` of blocks; `f(t)` gives (rms, momentary, short-term, long).
    fn run(
        cfg: LoudnessConfig,
        secs: f64,
        f: impl Fn(f64) -> (f32, Option<f32>, Option<f32>, Option<f32>),
    ) -> Vec<Transition> {
        let mut d = LoudnessDetector::new(cfg, -60.0, 2.0);
        let mut v = vec![];
        let n = (secs / STEP) as usize;
        for i in 0..n {
            let t = i as f64 * STEP;
            let (r, m, s, l) = f(t);
            v.extend(d.observe(t, &lvl(r, m, s, l)).into_iter().flatten());
        }
        v.extend(d.finish(n as f64 * STEP).into_iter().flatten());
        v
    }

    /// A loud passage over [a, b) at `loud` LUFS in a programme at `base` LUFS, as the
    /// meter would read it: the momentary and short-term windows smeared over 0.4 and
    /// 3 s (energy means of the two levels).
    fn passage(
        t: f64,
        a: f64,
        b: f64,
        base: f64,
        loud: f64,
    ) -> (f32, Option<f32>, Option<f32>, Option<f32>) {
        passages(t, &[(a, b)], base, loud)
    }

    fn passages(
        t: f64,
        at: &[(f64, f64)],
        base: f64,
        loud: f64,
    ) -> (f32, Option<f32>, Option<f32>, Option<f32>) {
        let e = |l: f64| 10f64.powf(l / 10.0);
        let share = |w: f64| {
            at.iter()
                .map(|&(a, b)| {
                    let (lo, hi) = ((t + STEP - w).max(a), (t + STEP).min(b));
                    ((hi - lo) / w).clamp(0.0, 1.0)
                })
                .sum::<f64>()
        };
        let mix = |w: f64| {
            let f = share(w);
            (10.0 * (f * e(loud) + (1.0 - f) * e(base)).log10()) as f32
        };
        let s = (t + STEP >= SHORT_TERM_S).then(|| mix(SHORT_TERM_S));
        (-20.0, Some(mix(0.4)), s, None)
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
    fn a_loud_passage_is_timed_by_the_sound_not_the_window() {
        // -6 LUFS over [10, 18) in a -23 LUFS programme: the short-term value is over
        // -10 from ~11.2 s to ~19.2 s; the interval reported is the passage's.
        let tr = run(LoudnessConfig::default(), 30.0, |t| {
            passage(t, 10.0, 18.0, -23.0, -6.0)
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert_eq!(
            (tr[0].phase, tr[0].kind),
            (Phase::Start, DefectKind::Loudness)
        );
        assert!((tr[0].start_s - 10.0).abs() < 0.2, "{}", tr[0].start_s);
        assert!(
            (tr[1].end_s.unwrap() - 18.0).abs() < 0.2,
            "{:?}",
            tr[1].end_s
        );
        assert_eq!(metric(&tr[1], "problem"), Metric::Str("too_loud"));
        assert_eq!(metric(&tr[1], "ceiling_lufs"), Metric::Num(-10.0));
        let Metric::Num(s) = metric(&tr[1], "short_term_max_lufs") else {
            panic!()
        };
        assert!((s - -6.0).abs() < 0.2, "{s}");
        // Just over the ceiling (-9 after -30): the short-term value lags by ~2.9 s, the
        // interval does not.
        let tr = run(LoudnessConfig::default(), 30.0, |t| {
            passage(t, 10.0, 18.0, -30.0, -9.0)
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert!((tr[0].start_s - 10.0).abs() < 0.3, "{}", tr[0].start_s);
        assert!(
            (tr[1].end_s.unwrap() - 18.0).abs() < 0.3,
            "{:?}",
            tr[1].end_s
        );
    }

    #[test]
    fn within_the_limits_or_short_is_nothing() {
        // Loud but within the ceiling, quiet but above the floor.
        assert!(run(LoudnessConfig::default(), 40.0, |t| passage(
            t, 5.0, 30.0, -30.0, -14.0
        ))
        .is_empty());
        assert!(run(LoudnessConfig::default(), 40.0, |_| (
            -35.0,
            Some(-30.0),
            Some(-30.0),
            Some(-30.0)
        ))
        .is_empty());
        // Loud for 2 s only: the short-term value crosses, the sound is too short.
        assert!(run(LoudnessConfig::default(), 20.0, |t| passage(
            t, 5.0, 7.0, -23.0, 0.0
        ))
        .is_empty());
        // No meter (loudness fields None).
        assert!(run(LoudnessConfig::default(), 20.0, |_| (
            -3.0, None, None, None
        ))
        .is_empty());
        // Disabled.
        let off = LoudnessConfig {
            enabled: false,
            ..LoudnessConfig::default()
        };
        assert!(run(off, 30.0, |t| passage(t, 10.0, 18.0, -23.0, -6.0)).is_empty());
    }

    #[test]
    fn the_ceiling_and_durations_are_honoured() {
        let cfg = LoudnessConfig {
            ceiling_lufs: -16.0,
            ..LoudnessConfig::default()
        };
        assert_eq!(
            run(cfg, 40.0, |t| passage(t, 5.0, 30.0, -30.0, -14.0)).len(),
            2
        );
        let cfg = LoudnessConfig {
            min_duration: 10.0,
            ..LoudnessConfig::default()
        };
        assert!(run(cfg, 30.0, |t| passage(t, 10.0, 18.0, -23.0, -6.0)).is_empty());
        // Two passages 2 s apart: one defect with the 3-s clear_duration, two without.
        let two = |t: f64| passages(t, &[(5.0, 11.0), (13.0, 20.0)], -23.0, -6.0);
        let tr = run(LoudnessConfig::default(), 30.0, two);
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert!((tr[1].end_s.unwrap() - 20.0).abs() < 0.2, "{tr:?}");
        let cfg = LoudnessConfig {
            clear_duration: 0.0,
            ..LoudnessConfig::default()
        };
        let tr = run(cfg, 30.0, two);
        assert_eq!(tr.len(), 4, "{tr:?}");
        assert!((tr[1].end_s.unwrap() - 11.0).abs() < 0.2, "{tr:?}");
        assert!((tr[2].start_s - 13.0).abs() < 0.2, "{tr:?}");
    }

    #[test]
    fn too_quiet_is_timed_back_to_the_window_and_silence_wins() {
        // Quiet speech-like sound (-45 LUFS, -48 dBFS RMS) from the start: the 30 s
        // window reads it from 30 s on; the defect starts at 0 and runs to the end.
        let tr = run(LoudnessConfig::default(), 50.0, |t| {
            let long = (t + STEP >= 30.0).then_some(-45.0);
            (-48.0, Some(-45.0), Some(-45.0), long)
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert!(tr[0].start_s.abs() < 0.1, "{}", tr[0].start_s);
        assert!(
            (tr[1].end_s.unwrap() - 50.0).abs() < 0.1,
            "{:?}",
            tr[1].end_s
        );
        assert_eq!(metric(&tr[1], "problem"), Metric::Str("too_quiet"));
        assert_eq!((tr[0].slot, tr[1].slot), (1, 1));
        assert_eq!(metric(&tr[1], "long_min_lufs"), Metric::Num(-45.0));
        // The same window reading but the blocks silent (RMS under -60 dBFS): silence's.
        assert!(run(LoudnessConfig::default(), 50.0, |t| {
            let long = (t + STEP >= 30.0).then_some(-45.0);
            (-65.0, Some(-45.0), Some(-45.0), long)
        })
        .is_empty());
        // Pauses shorter than silence.min_duration (0.7 s of every 2 s) do not split it.
        let tr = run(LoudnessConfig::default(), 50.0, |t| {
            let long = (t + STEP >= 30.0).then_some(-45.0);
            let rms = if t % 2.0 < 0.7 { -200.0 } else { -48.0 };
            (rms, Some(-45.0), Some(-45.0), long)
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        // Silence from 40 s: the quiet defect ends once it is silence (at 42 s).
        let tr = run(LoudnessConfig::default(), 50.0, |t| {
            let long = (t + STEP >= 30.0).then_some(-45.0);
            (if t < 40.0 { -48.0 } else { -200.0 }, None, None, long)
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert!((tr[1].end_s.unwrap() - 42.0).abs() < 0.05, "{tr:?}");
        // Quiet, then a normal level again at 40 s: the end is when the window rose.
        let tr = run(LoudnessConfig::default(), 50.0, |t| {
            let long = (t + STEP >= 30.0).then_some(if t < 40.0 { -45.0 } else { -30.0 });
            (-40.0, None, None, long)
        });
        assert_eq!(tr.len(), 2, "{tr:?}");
        assert!((tr[1].end_s.unwrap() - 40.0).abs() < 0.05, "{tr:?}");
    }

    #[test]
    fn odd_blocks_do_not_break_it() {
        let mut d = LoudnessDetector::new(LoudnessConfig::default(), -60.0, 2.0);
        let nan = lvl(f32::NAN, Some(f32::NAN), Some(f32::NAN), Some(f32::NAN));
        assert_eq!(d.observe(0.0, &nan), [None, None]);
        assert_eq!(
            d.observe(f64::NAN, &lvl(0.0, Some(0.0), Some(0.0), Some(0.0))),
            [None, None]
        );
        assert_eq!(d.observe(1.0, &AudioLevel::default()), [None, None]);
        assert_eq!(
            d.observe(0.5, &lvl(0.0, Some(0.0), Some(0.0), Some(-100.0))),
            [None, None]
        );
        assert_eq!(d.finish(f64::INFINITY), [None, None]);
    }
}
