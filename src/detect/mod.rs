//! Detectors: pure, I/O-free state machines over per-frame summaries.
//!
//! Boundaries: detectors import only `defect` (the vocabulary) and `config`; no I/O, no
//! clocks, no allocation per sample. The pipeline feeds them; they never call out.
//!
//! Each detector turns a per-sample verdict ("this frame is black") into defect
//! intervals with the same [`Hysteresis`]: a defect is *confirmed* once it has lasted
//! `min_duration`, but its `start_s` is the onset; it *ends* at the first clean sample
//! after which the picture/sound stayed clean for `clear_duration`. All state is fixed
//! size; nothing allocates per sample.
//!
//! Calling contract: feed samples in media-time order (a sample older than the last one
//! is clamped to the last time); call `finish(t)` once at the end of the input, which
//! closes any confirmed defect at `t`.
//!
//! ```
//! use vqprobe::detect::{Hysteresis, Edge};
//! let mut h = Hysteresis::new(2.0, 0.0);
//! assert_eq!(h.step(0.0, false), None);
//! assert_eq!(h.step(1.0, true), None);            // onset, not yet confirmed
//! assert_eq!(h.step(3.0, true), Some(Edge::Confirmed { onset: 1.0 }));
//! assert_eq!(h.step(4.0, false), Some(Edge::Ended { onset: 1.0, end: 4.0 }));
//! ```

pub mod avsync;
pub mod black;
pub mod blur;
pub mod channel_loss;
pub mod clipping;
pub mod corruption;
pub mod fps;
pub mod freeze;
pub mod loudness;
pub mod silence;
pub mod test_pattern;
pub mod transport;
pub mod uniform;

use crate::defect::{DefectKind, Metrics, Phase, Transition};

/// An edge of the hysteresis state machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Edge {
    /// The defect has lasted `min_duration` since `onset`.
    Confirmed { onset: f64 },
    /// A confirmed defect is over: clean since `end`.
    Ended { onset: f64, end: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum HState {
    Idle,
    Pending { onset: f64 },
    Active { onset: f64 },
    Clearing { onset: f64, clean_since: f64 },
}

/// The shared confirm/clear state machine (see module docs).
#[derive(Debug, Clone)]
pub struct Hysteresis {
    min_on: f64,
    min_off: f64,
    state: HState,
    last_t: f64,
}

impl Hysteresis {
    /// `min_on`: seconds a defect must last to be confirmed (0 = at once);
    /// `min_off`: seconds the input must stay clean to end it (0 = at once).
    pub fn new(min_on: f64, min_off: f64) -> Self {
        Hysteresis {
            min_on: min_on.max(0.0),
            min_off: min_off.max(0.0),
            state: HState::Idle,
            last_t: f64::NEG_INFINITY,
        }
    }

    /// True while a defect is confirmed (including while it is clearing).
    pub fn is_active(&self) -> bool {
        matches!(self.state, HState::Active { .. } | HState::Clearing { .. })
    }

    /// Onset of the defect being tracked (pending or confirmed).
    pub fn onset(&self) -> Option<f64> {
        match self.state {
            HState::Idle => None,
            HState::Pending { onset }
            | HState::Active { onset }
            | HState::Clearing { onset, .. } => Some(onset),
        }
    }

    /// Feeds one sample at media time `t`.
    pub fn step(&mut self, t: f64, defect: bool) -> Option<Edge> {
        let t = if t.is_finite() {
            t.max(self.last_t)
        } else {
            self.last_t
        };
        if !t.is_finite() {
            return None;
        }
        self.last_t = t;
        match (self.state, defect) {
            (HState::Idle, false) => None,
            (HState::Idle, true) => {
                if self.min_on <= 0.0 {
                    self.state = HState::Active { onset: t };
                    Some(Edge::Confirmed { onset: t })
                } else {
                    self.state = HState::Pending { onset: t };
                    None
                }
            }
            (HState::Pending { onset }, true) => {
                if t - onset >= self.min_on {
                    self.state = HState::Active { onset };
                    Some(Edge::Confirmed { onset })
                } else {
                    None
                }
            }
            (HState::Pending { .. }, false) => {
                self.state = HState::Idle;
                None
            }
            (HState::Active { .. }, true) => None,
            (HState::Active { onset }, false) => {
                if self.min_off <= 0.0 {
                    self.state = HState::Idle;
                    Some(Edge::Ended { onset, end: t })
                } else {
                    self.state = HState::Clearing {
                        onset,
                        clean_since: t,
                    };
                    None
                }
            }
            (HState::Clearing { onset, .. }, true) => {
                self.state = HState::Active { onset };
                None
            }
            (HState::Clearing { onset, clean_since }, false) => {
                if t - clean_since >= self.min_off {
                    self.state = HState::Idle;
                    Some(Edge::Ended {
                        onset,
                        end: clean_since,
                    })
                } else {
                    None
                }
            }
        }
    }

    /// End of input at media time `t`: closes a confirmed defect, forgets a pending one.
    pub fn finish(&mut self, t: f64) -> Option<Edge> {
        let t = if t.is_finite() {
            t.max(self.last_t)
        } else {
            self.last_t
        };
        let state = std::mem::replace(&mut self.state, HState::Idle);
        match state {
            HState::Active { onset } => Some(Edge::Ended {
                onset,
                end: t.max(onset),
            }),
            HState::Clearing { onset, clean_since } => Some(Edge::Ended {
                onset,
                end: clean_since,
            }),
            HState::Idle | HState::Pending { .. } => None,
        }
    }

    /// Forgets any pending or active defect without reporting it (used on a track reset
    /// when the caller reports the end itself).
    pub fn reset(&mut self) {
        self.state = HState::Idle;
    }

    /// Forgets everything, including the last sample time, so that samples from
    /// earlier media time can be fed again (the pipeline decoding a GOP a second time).
    pub fn rewind(&mut self) {
        self.state = HState::Idle;
        self.last_t = f64::NEG_INFINITY;
    }
}

/// Turns an [`Edge`] into a [`Transition`] of `kind` with the given metrics.
pub(crate) fn transition(kind: DefectKind, edge: Edge, metrics: Metrics) -> Transition {
    match edge {
        Edge::Confirmed { onset } => Transition {
            kind,
            phase: Phase::Start,
            start_s: onset,
            end_s: None,
            metrics,
            slot: 0,
            media: None,
        },
        Edge::Ended { onset, end } => Transition {
            kind,
            phase: Phase::End,
            start_s: onset,
            end_s: Some(end),
            metrics,
            slot: 0,
            media: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_defects_are_not_reported() {
        let mut h = Hysteresis::new(2.0, 0.0);
        for i in 0..40 {
            let t = f64::from(i) * 0.04;
            assert_eq!(h.step(t, (10..50).contains(&i)), None);
        }
        assert_eq!(h.finish(2.0), None);
    }

    #[test]
    fn onset_is_reported_not_confirmation_time() {
        let mut h = Hysteresis::new(2.0, 0.0);
        let mut edges = vec![];
        for i in 0..250 {
            let t = f64::from(i) * 0.04;
            if let Some(e) = h.step(t, (75..150).contains(&i)) {
                edges.push((t, e));
            }
        }
        assert_eq!(edges.len(), 2);
        assert!((edges[0].0 - 5.0).abs() < 1e-9, "confirmed at 3.0+2.0");
        assert_eq!(edges[0].1, Edge::Confirmed { onset: 3.0 });
        assert_eq!(
            edges[1].1,
            Edge::Ended {
                onset: 3.0,
                end: 6.0
            }
        );
    }

    #[test]
    fn clear_duration_merges_blips_and_ends_at_first_clean_sample() {
        let mut h = Hysteresis::new(0.0, 0.5);
        assert_eq!(h.step(1.0, true), Some(Edge::Confirmed { onset: 1.0 }));
        assert_eq!(h.step(1.2, false), None);
        assert_eq!(h.step(1.4, true), None, "blip shorter than clear_duration");
        assert_eq!(h.step(2.0, false), None);
        assert_eq!(h.step(2.4, false), None);
        assert_eq!(
            h.step(2.5, false),
            Some(Edge::Ended {
                onset: 1.0,
                end: 2.0
            })
        );
    }

    #[test]
    fn finish_closes_confirmed_defects_only() {
        let mut h = Hysteresis::new(1.0, 0.0);
        h.step(0.0, true);
        h.step(1.5, true);
        assert_eq!(
            h.finish(3.0),
            Some(Edge::Ended {
                onset: 0.0,
                end: 3.0
            })
        );
        assert_eq!(h.finish(4.0), None);
        let mut h = Hysteresis::new(1.0, 0.0);
        h.step(0.0, true);
        assert_eq!(h.finish(0.5), None);
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let mut h = Hysteresis::new(1.0, 0.0);
        h.step(5.0, true);
        assert_eq!(h.step(4.0, true), None);
        assert_eq!(h.step(f64::NAN, true), None);
        assert_eq!(h.step(6.0, true), Some(Edge::Confirmed { onset: 5.0 }));
    }

    proptest! {
        /// Whatever the input, edges alternate Confirmed/Ended, an end never precedes
        /// its onset, and finish leaves nothing open.
        #[test]
        fn edges_alternate(min_on in 0.0f64..3.0, min_off in 0.0f64..1.0,
                           steps in proptest::collection::vec((0.0f64..0.5, any::<bool>()), 0..400)) {
            let mut h = Hysteresis::new(min_on, min_off);
            let mut t = 0.0;
            let mut open: Option<f64> = None;
            for (dt, d) in steps {
                t += dt;
                match h.step(t, d) {
                    Some(Edge::Confirmed { onset }) => {
                        prop_assert!(open.is_none());
                        prop_assert!(onset <= t);
                        open = Some(onset);
                    }
                    Some(Edge::Ended { onset, end }) => {
                        prop_assert_eq!(open.take(), Some(onset));
                        prop_assert!(end >= onset);
                    }
                    None => {}
                }
            }
            match h.finish(t + 1.0) {
                Some(Edge::Ended { onset, .. }) => prop_assert_eq!(open.take(), Some(onset)),
                Some(e) => prop_assert!(false, "finish gave {:?}", e),
                None => prop_assert!(open.is_none()),
            }
        }
    }
}

/// Every detector, driven with arbitrary inputs, emits strictly alternating start/end
/// transitions with consistent onsets, and `finish` closes what is open.
#[cfg(test)]
mod detector_properties {
    use super::black::BlackDetector;
    use super::blur::{BlurDetector, Claim as BlurClaim};
    use super::channel_loss::ChannelLossDetector;
    use super::clipping::ClippingDetector;
    use super::corruption::{CorruptionDetector, CorruptionSample};
    use super::freeze::FreezeDetector;
    use super::loudness::LoudnessDetector;
    use super::silence::SilenceDetector;
    use super::uniform::UniformDetector;
    use super::*;
    use crate::config::{
        BlackConfig, BlurConfig, ChannelLossConfig, ClippingConfig, CorruptionConfig, FreezeConfig,
        LoudnessConfig, SilenceConfig, UniformConfig,
    };
    use crate::decode::tests::thumb_from_fn;
    use crate::decode::AudioLevel;
    use proptest::prelude::*;

    fn check_sequence(trs: &[Transition]) -> Result<(), TestCaseError> {
        let mut open: Option<f64> = None;
        for t in trs {
            match t.phase {
                Phase::Start => {
                    prop_assert!(open.is_none(), "two starts: {:?}", trs);
                    open = Some(t.start_s);
                }
                Phase::End => {
                    prop_assert_eq!(open.take(), Some(t.start_s));
                    prop_assert!(t.end_s.unwrap() >= t.start_s);
                }
            }
        }
        prop_assert!(open.is_none(), "left open: {:?}", trs);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn video_detectors_alternate(frames in proptest::collection::vec((0u8..5, 0u8..3, 0.0f64..0.3), 1..300)) {
            // A small palette of pictures: black, two moving patterns, a blocky one, a
            // uniform grey.
            let pics = [
                thumb_from_fn(128, 96, false, |_, _| 16),
                thumb_from_fn(128, 96, false, |_, _| 120),
                thumb_from_fn(128, 96, false, |x, y| ((x + y) % 200 + 30) as u8),
                thumb_from_fn(128, 96, false, |x, y| ((x * 3 + y) % 180 + 40) as u8),
                thumb_from_fn(128, 96, false, |x, y| ((x / 8 * 37 + y / 8 * 91) % 200 + 20) as u8),
            ];
            let cfg = |d: f64| (d, d / 4.0);
            let (on, off) = cfg(1.0);
            let mut black = BlackDetector::new(BlackConfig { min_duration: on, clear_duration: off, ..Default::default() });
            let mut freeze = FreezeDetector::new(FreezeConfig { min_duration: on, clear_duration: off, ..Default::default() });
            let mut corr = CorruptionDetector::new(CorruptionConfig::default());
            let mut uni = UniformDetector::new(UniformConfig { min_duration: on, clear_duration: off, ..Default::default() }, &BlackConfig::default());
            let mut blur = BlurDetector::new(BlurConfig { min_duration: on, clear_duration: off, ..Default::default() });
            let (mut b, mut f, mut c, mut u, mut bl) = (vec![], vec![], vec![], vec![], vec![]);
            let mut t = 0.0;
            for (pic, what, dt) in frames {
                t += dt;
                let th = &pics[pic as usize];
                let is_black = black.is_black(th);
                b.extend(black.observe(t, th));
                u.extend(uni.observe(t, th, is_black));
                f.extend(freeze.observe(t, th, is_black || uni.last_uniform()));
                let s = if what == 0 { CorruptionSample::DecodeError } else { CorruptionSample::Frame(th) };
                c.extend(corr.observe(t, s));
                let claim = BlurClaim::of(is_black || uni.last_uniform(), &freeze);
                bl.extend(blur.observe(t, th, claim));
            }
            b.extend(black.finish(t));
            f.extend(freeze.finish(t));
            c.extend(corr.finish(t));
            u.extend(uni.finish(t));
            bl.extend(blur.finish(t));
            check_sequence(&bl)?;
            check_sequence(&b)?;
            check_sequence(&u)?;
            check_sequence(&f)?;
            check_sequence(&c)?;
        }

        #[test]
        fn silence_detector_alternates(levels in proptest::collection::vec((-200.0f32..0.0, 0.0f64..0.5), 1..400)) {
            let mut d = SilenceDetector::new(SilenceConfig { min_duration: 0.5, clear_duration: 0.1, ..Default::default() });
            let mut v = vec![];
            let mut t = 0.0;
            for (db, dt) in levels {
                t += dt;
                v.extend(d.observe(t, &AudioLevel { pts: 0, duration: 1920, rms_dbfs: db, peak_dbfs: db, ..AudioLevel::default() }));
            }
            v.extend(d.finish(t));
            check_sequence(&v)?;
        }

        #[test]
        fn sound_detectors_alternate(blocks in proptest::collection::vec((-200.0f32..0.0, -200.0f32..0.0, 0u32..200, 0.0f64..0.3), 1..400)) {
            // Clipping and channel loss on arbitrary stereo blocks: starts and ends pair
            // up, an end never before its start (the clipping detector moves both edges
            // to the sound's own: they must stay ordered).
            let mut clip = ClippingDetector::new(ClippingConfig { min_duration: 0.5, clear_duration: 0.1, ..Default::default() });
            let mut loss = ChannelLossDetector::new(ChannelLossConfig { min_duration: 0.5, clear_duration: 0.1, ..Default::default() }, -60.0);
            let (mut c, mut l) = (vec![], vec![]);
            let mut t = 0.0;
            for (left, right, near, dt) in blocks {
                t += dt;
                let mut lv = AudioLevel { duration: 1920, rms_dbfs: left.max(right), peak_dbfs: 0.0, channels: 2, near_full_scale: near, samples: 2048, ..AudioLevel::default() };
                lv.channel_rms_dbfs[0] = left;
                lv.channel_rms_dbfs[1] = right;
                c.extend(clip.observe(t, &lv));
                l.extend(loss.observe(t, &lv));
            }
            c.extend(clip.finish(t));
            l.extend(loss.finish(t));
            check_sequence(&c)?;
            check_sequence(&l)?;
        }

        #[test]
        fn loudness_detector_alternates(blocks in proptest::collection::vec((-80.0f32..5.0, -80.0f32..5.0, -80.0f32..0.0, -200.0f32..0.0, 0u8..4, 0.0f64..0.4), 1..400)) {
            // Arbitrary readings (some missing): each problem (slot) pairs its starts
            // and ends, an end never before its start.
            let cfg = LoudnessConfig { min_duration: 0.5, clear_duration: 0.2, long_window: 10.0, ..Default::default() };
            let mut d = LoudnessDetector::new(cfg, -60.0, 0.5);
            let mut v = vec![];
            let mut t = 0.0;
            for (m, s, long, rms, missing, dt) in blocks {
                t += dt;
                let lv = AudioLevel {
                    duration: 1920,
                    rms_dbfs: rms,
                    momentary_lufs: (missing != 1).then_some(m),
                    short_term_lufs: (missing != 2).then_some(s),
                    long_lufs: (missing != 3).then_some(long),
                    ..AudioLevel::default()
                };
                v.extend(d.observe(t, &lv).into_iter().flatten());
            }
            v.extend(d.finish(t).into_iter().flatten());
            for slot in [0, 1] {
                let one: Vec<Transition> = v.iter().filter(|x| x.slot == slot).cloned().collect();
                check_sequence(&one)?;
            }
        }
    }
}
