//! Blurred picture (`blur`): the picture lost its fine detail against the stream's own
//! running baseline (a camera out of focus, a wrong scaler, a soft re-encode).
//!
//! The measure is relative twice over, so that soft content is not a defect:
//! * **per picture**, *sharpness* = fine detail / coarse contrast: the RMS luma step
//!   between neighbouring pixels inside 8×8 blocks (`Thumb::detail`, measured by the
//!   reducer on the samples it already reads for the block-edge ratio) over the RMS
//!   step between neighbouring cells of the 64×36 grid (computed here from the grid).
//!   A loss of focus takes the pixel-scale steps away and leaves the cell-scale ones;
//!   a darker, flatter or lower-contrast scene lowers both. RMS, not the mean absolute
//!   step: the mean absolute step across a blurred edge is the same as across a sharp
//!   one (the total variation of a monotone edge does not change), its squares are not.
//! * **per stream**, a picture is blurred when its sharpness is below `ratio` (0.5) ×
//!   the baseline: a running geometric mean (time constant `baseline_s`, 30 s of media)
//!   learned only on pictures that are judged and not blurred.
//!
//! Pictures that are not judged (neither blurred nor learned, [`Claim::Claimed`]):
//! black, one-colour and test-pattern pictures (those kinds win), pictures while a
//! `freeze` is confirmed (freeze wins), pictures while `corruption` is pending or open
//! (macroblocks are flat inside: corruption wins), and pictures with too little coarse
//! contrast to tell (`min_contrast`: a sky, a fade). A picture not judged counts as not
//! blurred for the interval.
//!
//! A picture the freeze detector finds identical to the last moving one while no freeze
//! is confirmed ([`Claim::Repeat`]: a slow pan, a slow zoom, an encoder that repeats a
//! picture now and then) is judged but not learned: it has the sharpness of the picture
//! it repeats, and learning it would count that picture twice. Counting such repeats as
//! "not blurred" would restart the 10-s wait at every repeat, and an out-of-focus slow
//! scene would never be reported.
//!
//! The baseline restarts on a resolution change (the ratio depends on the size of a
//! grid cell in pixels) and needs [`WARMUP_S`] of media before pictures are judged.

use super::freeze::FreezeDetector;
use super::{transition, Hysteresis};
use crate::config::BlurConfig;
use crate::decode::{neighbour_steps, Thumb};
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// Seconds of learned media before the baseline is trusted.
pub const WARMUP_S: f64 = 2.0;
/// Pictures learned before the baseline is trusted.
const WARMUP_PICTURES: u32 = 2;
/// Longest gap between two learned pictures that counts in full (key pictures while
/// `auto` watches are 2 s apart; a longer gap is not more evidence).
const MAX_STEP_S: f64 = 2.0;

/// What the detector made of one picture (for reports and tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judged {
    /// Not judged: black, frozen, corrupt, too flat, or the baseline not ready.
    No,
    /// Judged sharp enough (`sharpness`, and the threshold it was held to).
    Sharp { sharpness: f32, threshold: f32 },
    /// Judged blurred.
    Blurred { sharpness: f32, threshold: f32 },
}

/// What the other picture detectors made of a picture, as far as blur is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A new picture nobody claims: judged, and learned when it is sharp.
    Fresh,
    /// The same picture as the last moving one, no freeze confirmed: judged, not learned.
    Repeat,
    /// Black, one colour, a test pattern, a confirmed freeze or corruption: not judged,
    /// not learned, counts as not blurred (that kind wins).
    Claimed,
}

impl Claim {
    /// The claim on a picture: `other`, a kind that wins over blur claims it (black,
    /// one colour, a test pattern, corruption); `freeze`, the freeze detector after it
    /// observed the same picture.
    pub fn of(other: bool, freeze: &FreezeDetector) -> Claim {
        if other || freeze.is_active() {
            Claim::Claimed
        } else if freeze.last_frozen() {
            Claim::Repeat
        } else {
            Claim::Fresh
        }
    }
}

/// The blur detector.
#[derive(Debug, Clone)]
pub struct BlurDetector {
    cfg: BlurConfig,
    hyst: Hysteresis,
    dims: (u16, u16),
    /// Natural log of the baseline sharpness.
    base_ln: f64,
    /// Pictures and media seconds learned since the last reset.
    learned: u32,
    learned_s: f64,
    /// Media time of the last learned picture (never goes back, so a GOP fed again
    /// after a rewind is not learned twice).
    last_learn_t: f64,
    /// The last picture's sharpness (`None`: too flat to measure) and verdict.
    last: Judged,
    last_sharpness: Option<f32>,
    // Evidence for the current interval.
    frames: u32,
    sharpness_max: f32,
    baseline_at: f32,
}

impl BlurDetector {
    pub fn new(cfg: BlurConfig) -> Self {
        BlurDetector {
            hyst: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            cfg,
            dims: (0, 0),
            base_ln: 0.0,
            learned: 0,
            learned_s: 0.0,
            last_learn_t: f64::NEG_INFINITY,
            last: Judged::No,
            last_sharpness: None,
            frames: 0,
            sharpness_max: 0.0,
            baseline_at: 0.0,
        }
    }

    /// Coarse contrast of a picture: the RMS step between neighbouring cells of its
    /// 64×36 grid (luma levels).
    pub fn coarse_contrast(th: &Thumb) -> f32 {
        let (sq, n) = neighbour_steps(&th.grid).fold((0u64, 0u64), |(sq, n), d| {
            let d = u64::from(d);
            (sq + d * d, n + 1)
        });
        (sq as f64 / n.max(1) as f64).sqrt() as f32
    }

    /// The picture's sharpness (fine detail over coarse contrast), `None` when its
    /// coarse contrast is below `min_contrast` (too flat to tell).
    pub fn sharpness(&self, th: &Thumb) -> Option<f32> {
        let coarse = Self::coarse_contrast(th);
        if !(coarse > 0.0 && coarse >= self.cfg.min_contrast && th.detail.is_finite()) {
            return None;
        }
        Some(th.detail / coarse)
    }

    /// The baseline sharpness (`None` until it is learned).
    pub fn baseline(&self) -> Option<f32> {
        self.warm().then(|| self.base_ln.exp() as f32)
    }

    fn warm(&self) -> bool {
        self.learned >= WARMUP_PICTURES && self.learned_s >= WARMUP_S
    }

    /// What the last picture was judged (for reports).
    pub fn last(&self) -> Judged {
        self.last
    }

    /// The last picture's sharpness, judged or not (`None`: too flat or claimed).
    pub fn last_sharpness(&self) -> Option<f32> {
        self.last_sharpness
    }

    /// Feeds one decoded picture at media time `t`, with the other detectors' verdict
    /// on it (`claim`, see [`Claim`]).
    pub fn observe(&mut self, t: f64, th: &Thumb, claim: Claim) -> Option<Transition> {
        let dims = (th.width, th.height);
        if dims != self.dims {
            self.dims = dims;
            self.learned = 0;
            self.learned_s = 0.0;
        }
        self.last = Judged::No;
        self.last_sharpness = None;
        let mut blurred = false;
        if claim != Claim::Claimed {
            if let Some(s) = self.sharpness(th) {
                self.last_sharpness = Some(s);
                if let Some(base) = self.baseline() {
                    let threshold = (f64::from(base) * self.cfg.ratio) as f32;
                    blurred = s < threshold;
                    self.last = if blurred {
                        Judged::Blurred {
                            sharpness: s,
                            threshold,
                        }
                    } else {
                        Judged::Sharp {
                            sharpness: s,
                            threshold,
                        }
                    };
                    if blurred {
                        if self.hyst.onset().is_none() {
                            self.frames = 0;
                            self.sharpness_max = 0.0;
                            self.baseline_at = base;
                        }
                        self.frames = self.frames.saturating_add(1);
                        self.sharpness_max = self.sharpness_max.max(s);
                    }
                }
                if !blurred && claim == Claim::Fresh {
                    self.learn(t, s);
                }
            }
        }
        let edge = self.hyst.step(t, blurred)?;
        Some(transition(DefectKind::Blur, edge, self.metrics()))
    }

    /// Folds a picture judged not blurred into the baseline.
    fn learn(&mut self, t: f64, s: f32) {
        if !(t.is_finite() && t > self.last_learn_t) || s <= 0.0 {
            return;
        }
        let dt = if self.learned == 0 {
            0.0
        } else {
            (t - self.last_learn_t).min(MAX_STEP_S)
        };
        self.last_learn_t = t;
        let x = f64::from(s).ln();
        if self.learned == 0 {
            self.base_ln = x;
        } else {
            // A running mean while it is young, an exponential one (time constant
            // `baseline_s`) once it has seen that much.
            let ema = 1.0 - (-dt / self.cfg.baseline_s.max(1.0)).exp();
            let alpha = ema.max(1.0 / f64::from(self.learned.saturating_add(1)));
            self.base_ln += alpha * (x - self.base_ln);
        }
        self.learned = self.learned.saturating_add(1);
        self.learned_s += dt;
    }

    /// Nothing pending or open.
    pub fn is_idle(&self) -> bool {
        self.hyst.onset().is_none()
    }

    /// Forgets a pending or open interval and the sample clock; keeps the baseline (the
    /// pictures fed again are not learned twice). See `pipeline::level`.
    pub fn rewind(&mut self) {
        self.hyst.rewind();
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::Blur, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(
            &mut m,
            "sharpness_max",
            Metric::Num(f64::from(self.sharpness_max)),
        );
        put(
            &mut m,
            "sharpness_baseline",
            Metric::Num(f64::from(self.baseline_at)),
        );
        let r = if self.baseline_at > 0.0 {
            f64::from(self.sharpness_max / self.baseline_at)
        } else {
            0.0
        };
        put(&mut m, "sharpness_ratio_max", Metric::Num(r));
        put(&mut m, "ratio", Metric::Num(self.cfg.ratio));
        put(&mut m, "frames", Metric::Int(i64::from(self.frames)));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::thumb_from_fn;
    use crate::defect::Phase;

    /// A square wave of period 48 px, box-blurred over `2r + 1` px (r = 0: sharp).
    fn wave(u: usize, r: usize) -> f32 {
        let sq = |v: usize| if (v / 24) % 2 == 0 { -1.0 } else { 1.0 };
        let sum: f32 = (0..=2 * r).map(|k| sq(u + 48 + k - r)).sum();
        sum / (2 * r + 1) as f32
    }

    /// Fine texture: a fixed pseudo-random pattern, ±20 levels.
    fn texture(x: usize, y: usize) -> f32 {
        let h = (x as u32).wrapping_mul(0x9E37_79B1) ^ (y as u32).wrapping_mul(0x85EB_CA77);
        let h = h ^ (h >> 15);
        (h.wrapping_mul(0x2C1B_3C6D) >> 24) as f32 / 255.0 * 40.0 - 20.0
    }

    /// A moving textured checker-like scene (motion `i` px), `w`×`h`, sharp (r = 0)
    /// or out of focus (box blur of `2r + 1` px).
    fn scene(w: usize, h: usize, i: usize, r: usize) -> Thumb {
        let (pw, ph) = (w + 2 * r + 1, h + 2 * r + 1);
        let base: Vec<f32> = (0..ph)
            .flat_map(|y| {
                (0..pw).map(move |x| {
                    let (sx, sy) = (x + 3 * i, y + i);
                    120.0 + 40.0 * wave(sx, 0) + 40.0 * wave(sy, 0) + texture(sx, sy)
                })
            })
            .collect();
        // Separable box blur.
        let n = (2 * r + 1) as f32;
        let mut tmp = vec![0f32; pw * ph];
        for y in 0..ph {
            for x in 0..w {
                tmp[y * pw + x] = (0..=2 * r).map(|k| base[y * pw + x + k]).sum::<f32>() / n;
            }
        }
        thumb_from_fn(w, h, false, move |x, y| {
            ((0..=2 * r).map(|k| tmp[(y + k) * pw + x]).sum::<f32>() / n).clamp(0.0, 255.0) as u8
        })
    }

    /// Radius of the box blur of an out-of-focus picture (11 px wide).
    const BLUR: usize = 5;

    fn picture(i: usize, r: usize) -> Thumb {
        scene(320, 180, i, r)
    }

    /// 12 frames of motion, sharp and blurred (the motion repeats: 24 px period).
    struct Clip {
        sharp: Vec<Thumb>,
        soft: Vec<Thumb>,
    }

    impl Clip {
        fn new() -> Self {
            Clip {
                sharp: (0..8).map(|i| picture(i, 0)).collect(),
                soft: (0..8).map(|i| picture(i, BLUR)).collect(),
            }
        }
        /// Geometric mean sharpness of the sharp or blurred pictures.
        fn mean(&self, d: &BlurDetector, blurred: bool) -> f32 {
            let ln: f32 = (0..8)
                .map(|i| d.sharpness(self.frame(i, blurred)).unwrap().ln())
                .sum();
            (ln / 8.0).exp()
        }

        fn frame(&self, i: usize, blurred: bool) -> &Thumb {
            if blurred {
                &self.soft[i % 8]
            } else {
                &self.sharp[i % 8]
            }
        }
    }

    /// Feeds `n` frames at 25 fps; `blurred(i)` picks the blurred picture, `claim(i)`
    /// the other detectors' verdict.
    fn run(
        clip: &Clip,
        d: &mut BlurDetector,
        n: usize,
        blurred: impl Fn(usize) -> bool,
        claim: impl Fn(usize) -> Claim,
    ) -> Vec<Transition> {
        let mut v = vec![];
        for i in 0..n {
            v.extend(d.observe(i as f64 * 0.04, clip.frame(i, blurred(i)), claim(i)));
        }
        v.extend(d.finish(n as f64 * 0.04));
        v
    }

    fn detector() -> BlurDetector {
        BlurDetector::new(BlurConfig::default())
    }

    /// Claimed by another kind, or not.
    fn claimed(yes: bool) -> Claim {
        if yes {
            Claim::Claimed
        } else {
            Claim::Fresh
        }
    }

    #[test]
    fn the_measure_falls_with_focus_not_with_contrast() {
        let d = detector();
        let sharp = d.sharpness(&picture(0, 0)).unwrap();
        let soft = d.sharpness(&picture(0, BLUR)).unwrap();
        assert!(soft < 0.5 * sharp, "sharp {sharp}, blurred {soft}");
        // The same picture at a third of the contrast: about the same sharpness.
        let dim = thumb_from_fn(320, 180, false, |x, y| {
            (120.0 + (40.0 * wave(x, 0) + 40.0 * wave(y, 0) + texture(x, y)) / 3.0) as u8
        });
        let s = d.sharpness(&dim).unwrap();
        assert!((s / sharp - 1.0).abs() < 0.2, "sharp {sharp}, dim {s}");
        // A flat picture and a smooth sky are not judged at all.
        assert_eq!(
            d.sharpness(&thumb_from_fn(320, 180, false, |_, _| 90)),
            None
        );
        assert_eq!(d.sharpness(&sky()), None);
    }

    #[test]
    fn focus_loss_is_one_event_from_its_onset_to_the_first_sharp_picture() {
        // Sharp 0-4 s, out of focus 4-16 s, sharp again to 20 s.
        let clip = Clip::new();
        let mut d = detector();
        let mut v = vec![];
        let mut confirmed_at = None;
        for i in 0..500 {
            let t = i as f64 * 0.04;
            let tr = d.observe(t, clip.frame(i, (100..400).contains(&i)), Claim::Fresh);
            if tr.is_some() && confirmed_at.is_none() {
                confirmed_at = Some(t);
            }
            v.extend(tr);
        }
        v.extend(d.finish(20.0));
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!((v[0].kind, v[0].phase), (DefectKind::Blur, Phase::Start));
        // Confirmed after min_duration (10 s), dated back to the onset.
        assert!(
            (confirmed_at.unwrap() - 14.0).abs() < 1e-6,
            "{confirmed_at:?}"
        );
        assert!((v[0].start_s - 4.0).abs() < 1e-9, "{}", v[0].start_s);
        assert_eq!(v[1].phase, Phase::End);
        assert!(
            (v[1].end_s.unwrap() - 16.0).abs() < 1e-9,
            "{:?}",
            v[1].end_s
        );
        let num = |name: &str| {
            v[1].metrics
                .iter()
                .find(|m| m.0 == name)
                .and_then(|m| match m.1 {
                    Metric::Num(x) => Some(x),
                    _ => None,
                })
                .unwrap()
        };
        assert!(num("sharpness_ratio_max") < 0.5, "{v:?}");
        assert!(num("sharpness_baseline") > num("sharpness_max"), "{v:?}");
        assert!(v[1]
            .metrics
            .iter()
            .any(|m| m.0 == "frames" && m.1 == Metric::Int(300)));
    }

    #[test]
    fn shorter_than_min_duration_is_not_reported_and_blips_are_merged() {
        let clip = Clip::new();
        // 6 s out of focus: pending, never confirmed.
        let v = run(
            &clip,
            &mut detector(),
            500,
            |i| (100..250).contains(&i),
            |_| Claim::Fresh,
        );
        assert!(v.is_empty(), "{v:?}");
        // 12 s with 0.4 s sharp after the confirmation (under clear_duration, 1 s):
        // one event. (Before the confirmation a sharp picture starts the wait again,
        // as for every kind.)
        let v = run(
            &clip,
            &mut detector(),
            500,
            |i| (100..400).contains(&i) && !(360..370).contains(&i),
            |_| Claim::Fresh,
        );
        assert_eq!(v.len(), 2, "{v:?}");
        assert!((v[0].start_s - 4.0).abs() < 1e-9);
        assert!((v[1].end_s.unwrap() - 16.0).abs() < 1e-9);
    }

    #[test]
    fn the_baseline_is_not_learned_while_blurred() {
        // Out of focus from 4 s for a minute: the baseline stays the sharp picture's
        // and the event stays open until the end of input.
        let clip = Clip::new();
        let mut d = detector();
        let v = run(&clip, &mut d, 1600, |i| i >= 100, |_| Claim::Fresh);
        let sharp = clip.mean(&d, false);
        let base = d.baseline().unwrap();
        assert!(
            (base / sharp - 1.0).abs() < 0.1,
            "base {base}, sharp {sharp}"
        );
        assert_eq!(v.len(), 2, "{v:?}");
        assert!((v[0].start_s - 4.0).abs() < 1e-9);
        assert!((v[1].end_s.unwrap() - 64.0).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn soft_from_the_first_picture_is_not_blur() {
        let clip = Clip::new();
        let mut d = detector();
        let v = run(&clip, &mut d, 750, |_| true, |_| Claim::Fresh);
        assert!(v.is_empty(), "{v:?}");
        let soft = clip.mean(&d, true);
        let base = d.baseline().unwrap();
        assert!((base / soft - 1.0).abs() < 0.1, "base {base}, soft {soft}");
    }

    /// A clear sky: a smooth vertical gradient (50 levels over the picture).
    fn sky() -> Thumb {
        thumb_from_fn(320, 180, false, |_, y| (110 + y * 50 / 180) as u8)
    }

    #[test]
    fn a_cut_to_a_smooth_sky_is_not_blur() {
        let clip = Clip::new();
        let sky = sky();
        let mut d = detector();
        let mut v = vec![];
        for i in 0..750 {
            let th = if i < 150 { clip.frame(i, false) } else { &sky };
            v.extend(d.observe(i as f64 * 0.04, th, Claim::Fresh));
            if i >= 150 {
                assert_eq!(d.last(), Judged::No, "a sky is not judged");
            }
        }
        v.extend(d.finish(30.0));
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn black_frozen_or_corrupt_pictures_suspend_it() {
        let clip = Clip::new();
        // The blurred pictures are all called black (or frozen) by the other detectors.
        let v = run(
            &clip,
            &mut detector(),
            500,
            |i| (100..400).contains(&i),
            |i| claimed((100..400).contains(&i)),
        );
        assert!(v.is_empty(), "{v:?}");
        // A black second in the middle of a focus loss: the blur ends there, and what
        // follows is too short to be reported again.
        let v = run(
            &clip,
            &mut detector(),
            500,
            |i| (100..400).contains(&i),
            |i| claimed((375..400).contains(&i)),
        );
        assert_eq!(v.len(), 2, "{v:?}");
        assert!((v[1].end_s.unwrap() - 15.0).abs() < 1e-9, "{v:?}");
        // Suspended pictures are not learned: a stream that starts black, then shows
        // soft pictures, learns the soft ones.
        let mut d = detector();
        let black = thumb_from_fn(320, 180, false, |_, _| 16);
        for i in 0..100 {
            assert!(d.observe(i as f64 * 0.04, &black, Claim::Claimed).is_none());
        }
        assert_eq!(d.baseline(), None);
    }

    #[test]
    fn repeated_pictures_are_judged_but_not_learned() {
        // A slow, out-of-focus scene from 4 s to 16 s: every third picture repeats the
        // one before (no freeze confirmed). One event, from the onset to the end.
        let clip = Clip::new();
        let mut d = detector();
        let repeat = |i: usize| i % 3 == 2;
        let mut v = vec![];
        for i in 0..500 {
            let blurred = (100..400).contains(&i);
            let (pic, claim) = if repeat(i) {
                (clip.frame(i - 1, blurred), Claim::Repeat)
            } else {
                (clip.frame(i, blurred), Claim::Fresh)
            };
            v.extend(d.observe(i as f64 * 0.04, pic, claim));
        }
        v.extend(d.finish(20.0));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!((v[0].start_s - 4.0).abs() < 1e-9, "{v:?}");
        assert!((v[1].end_s.unwrap() - 16.0).abs() < 1e-9, "{v:?}");
        // Repeats are not learned: a stream whose sharp pictures are all repeats has
        // no baseline, so nothing can be judged against one.
        let mut d = detector();
        for i in 0..250 {
            d.observe(i as f64 * 0.04, clip.frame(i, false), Claim::Repeat);
        }
        assert_eq!(d.baseline(), None);
        assert_eq!(d.last(), Judged::No);
    }

    #[test]
    fn a_new_picture_size_learns_a_new_baseline() {
        let clip = Clip::new();
        let mut d = detector();
        for i in 0..150 {
            d.observe(i as f64 * 0.04, clip.frame(i, false), Claim::Fresh);
        }
        assert!(d.baseline().is_some());
        // 640x360 soft pictures after 320x180 sharp ones: a new stream, not a blur.
        let big: Vec<Thumb> = (0..8).map(|i| scene(640, 360, i, BLUR)).collect();
        let mut v = vec![];
        for i in 150..750 {
            v.extend(d.observe(i as f64 * 0.04, &big[i % 8], Claim::Fresh));
        }
        v.extend(d.finish(30.0));
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_gop_fed_again_after_a_rewind_is_found_at_the_same_onset() {
        // `auto` watching: the detector sees key pictures (every 2 s) and learns from
        // them; a blurred key picture makes the pipeline rewind and feed every picture
        // from the key before.
        let clip = Clip::new();
        let mut d = detector();
        for i in (0..100).step_by(50) {
            assert!(d
                .observe(i as f64 * 0.04, clip.frame(i, false), Claim::Fresh)
                .is_none());
        }
        d.observe(4.04, clip.frame(101, true), Claim::Fresh);
        assert!(!d.is_idle());
        d.rewind();
        let mut v = vec![];
        for i in 50..500 {
            v.extend(d.observe(
                i as f64 * 0.04,
                clip.frame(i, (100..400).contains(&i)),
                Claim::Fresh,
            ));
        }
        v.extend(d.finish(20.0));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!((v[0].start_s - 4.0).abs() < 1e-9);
        assert!((v[1].end_s.unwrap() - 16.0).abs() < 1e-9);
    }
}
