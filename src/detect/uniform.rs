//! One-colour picture (`uniform`): at least `share` (75%) of the picture is one colour,
//! not black, for at least `min_duration` (5 s): a covered or sprayed lens, a "no
//! signal" or blue screen of any colour.
//!
//! The rule, per picture, on the summary ([`Thumb`]) only:
//!
//! 1. **The colour.** The luma of the 64×36 grid cells is binned; the window of
//!    ±`luma_tolerance` levels holding the most cells is the colour's luma (re-centred on
//!    the mean of the cells inside it). The cells in that window vote, by their 16×9
//!    chroma cell, for the colour's Cb the same way (±`chroma_tolerance`), then those
//!    also of that Cb for its Cr (so the colour is one that is there, not the Cb of
//!    one colour with the Cr of another).
//! 2. **Cell share.** The share of grid cells whose luma is in the luma window *and*
//!    whose chroma cell is in both chroma windows. A gradient (a sky, a lit wall) spreads
//!    its cells over many luma levels and fails here.
//! 3. **Pixel share.** The share of the sampled pixels (the luma histogram, not cell
//!    means) within ±`pixel_tolerance` of the colour's luma. Texture finer than a cell
//!    (clouds, foliage, a crowd) averages out in the cell means but not here; coding
//!    noise and the sensor noise of a covered lens (a few levels) stay inside.
//! 4. **Not black.** A picture the black detector calls black is `black` only, and a
//!    colour darker than black's pixel threshold (ffmpeg's `pix_th`) is left to the black
//!    detector, whose 98% rule keeps dark scenes (a night sky over 80% of the picture)
//!    from being defects.
//!
//! Uniform when both shares are at least `share` and the colour is not black. The
//! freeze detector gets this verdict with black's: a uniform picture never freezes (it
//! does not change, and that is not the defect worth reporting). Fixed memory, on the
//! stack; per picture one 256-bin histogram of the grid and a window search (about
//! 5 µs), and only when a luma window holds `share` of the cells and pixels, a second
//! pass over the grid and two chroma histograms (about 15–20 µs, measured at the
//! shipped opt-level on a loaded 2-core machine).
//!
//! Luma and chroma are compared in code levels of the stream's own range (the levels
//! are close enough in full and limited range for a tolerance of a few).

use std::sync::Arc;

use super::{transition, Hysteresis};
use crate::config::{BlackConfig, UniformConfig};
use crate::decode::{Thumb, CHROMA_LEN, CHROMA_W, GRID_H, GRID_LEN, GRID_W};
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// What one picture looks like to the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    /// Share (0–1) of the grid cells of the dominant colour. When the cells of its luma
    /// alone, or the pixels near it, are fewer than `share`, the chroma is not looked at:
    /// this is then the share of the cells of that luma (an upper bound, under `share`
    /// anyway), and `u`, `v` are 128.
    pub share: f32,
    /// Share (0–1) of the sampled pixels whose luma is near the dominant colour's.
    pub pixel_share: f32,
    /// The dominant colour: luma, Cb, Cr (code levels of the stream's range).
    pub y: u8,
    pub u: u8,
    pub v: u8,
}

/// The uniform-picture detector.
#[derive(Debug, Clone)]
pub struct UniformDetector {
    cfg: UniformConfig,
    /// Black's pixel threshold, limited and full range: darker colours are black's.
    dark: (u8, u8),
    hyst: Hysteresis,
    /// The verdict on the last picture observed.
    last: bool,
    // Evidence of the current interval.
    share_min: f32,
    pixel_share_min: f32,
    sum_y: f64,
    sum_u: f64,
    sum_v: f64,
    frames: u32,
    /// Range and height of the last uniform picture (for the RGB of the colour).
    full_range: bool,
    hd: bool,
}

impl UniformDetector {
    /// `black`: the black detector's settings (its pixel threshold bounds the colour).
    pub fn new(cfg: UniformConfig, black: &BlackConfig) -> Self {
        UniformDetector {
            hyst: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            cfg,
            dark: (black.luma_threshold(false), black.luma_threshold(true)),
            last: false,
            share_min: 1.0,
            pixel_share_min: 1.0,
            sum_y: 0.0,
            sum_u: 0.0,
            sum_v: 0.0,
            frames: 0,
            full_range: false,
            hd: false,
        }
    }

    /// Measures one picture (`None`: an empty picture).
    pub fn look(&self, thumb: &Thumb) -> Option<Look> {
        look(thumb, &self.cfg)
    }

    /// The per-picture verdict: `black` is the black detector's on the same picture.
    pub fn is_uniform(&self, thumb: &Thumb, black: bool) -> bool {
        !black && self.look(thumb).is_some_and(|l| self.judge(thumb, &l))
    }

    fn judge(&self, thumb: &Thumb, l: &Look) -> bool {
        let dark = if thumb.full_range {
            self.dark.1
        } else {
            self.dark.0
        };
        l.share >= self.cfg.share && l.pixel_share >= self.cfg.share && l.y >= dark
    }

    /// Feeds one decoded picture at media time `t`; `black` is the black detector's
    /// verdict on it. [`UniformDetector::last_uniform`] then tells the verdict.
    pub fn observe(&mut self, t: f64, thumb: &Thumb, black: bool) -> Option<Transition> {
        let look = if black { None } else { self.look(thumb) };
        if let Some(l) = &look {
            tracing::trace!(
                t,
                share = l.share,
                pixel_share = l.pixel_share,
                y = l.y,
                u = l.u,
                v = l.v,
                "uniform look"
            );
        }
        let uniform = match &look {
            Some(l) if self.judge(thumb, l) => {
                if self.hyst.onset().is_none() {
                    self.share_min = 1.0;
                    self.pixel_share_min = 1.0;
                    self.sum_y = 0.0;
                    self.sum_u = 0.0;
                    self.sum_v = 0.0;
                    self.frames = 0;
                }
                self.share_min = self.share_min.min(l.share);
                self.pixel_share_min = self.pixel_share_min.min(l.pixel_share);
                self.sum_y += f64::from(l.y);
                self.sum_u += f64::from(l.u);
                self.sum_v += f64::from(l.v);
                self.frames += 1;
                self.full_range = thumb.full_range;
                self.hd = thumb.height >= 720;
                true
            }
            _ => false,
        };
        self.last = uniform;
        let edge = self.hyst.step(t, uniform)?;
        Some(transition(DefectKind::Uniform, edge, self.metrics()))
    }

    /// The verdict on the last picture observed (for the freeze detector).
    pub fn last_uniform(&self) -> bool {
        self.last
    }

    /// Nothing pending or open.
    pub fn is_idle(&self) -> bool {
        self.hyst.onset().is_none()
    }

    /// Forgets a pending or open interval and the sample clock (the pipeline feeds an
    /// earlier GOP again; see `pipeline::level`).
    pub fn rewind(&mut self) {
        self.hyst.rewind();
        self.last = false;
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::Uniform, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let n = f64::from(self.frames.max(1));
        let (y, u, v) = (self.sum_y / n, self.sum_u / n, self.sum_v / n);
        let mut m = Metrics::new();
        put(&mut m, "share_min", Metric::Num(f64::from(self.share_min)));
        put(
            &mut m,
            "pixel_share_min",
            Metric::Num(f64::from(self.pixel_share_min)),
        );
        put(&mut m, "luma", Metric::Num(y));
        put(&mut m, "cb", Metric::Num(u));
        put(&mut m, "cr", Metric::Num(v));
        let (r, g, b) = to_rgb(y, u, v, self.full_range, self.hd);
        // Made once per transition, never per picture.
        let hex: Arc<str> = format!("#{r:02x}{g:02x}{b:02x}").into();
        put(&mut m, "rgb", Metric::Text(hex));
        put(&mut m, "frames", Metric::Int(i64::from(self.frames)));
        m
    }
}

/// See the module docs, steps 1–3.
fn look(thumb: &Thumb, cfg: &UniformConfig) -> Option<Look> {
    if thumb.samples == 0 || thumb.width == 0 || thumb.height == 0 {
        return None;
    }
    let mut hist = [0u32; 256];
    for &g in &thumb.grid {
        hist[usize::from(g)] += 1;
    }
    let (y, luma_cells) = dominant(&hist, cfg.luma_tolerance);
    let (plo, phi) = window(y, cfg.pixel_tolerance);
    let near: u32 = thumb.hist[usize::from(plo)..=usize::from(phi)].iter().sum();
    let pixel_share = near as f32 / thumb.samples as f32;
    let luma_share = luma_cells as f32 / GRID_LEN as f32;
    if luma_share < cfg.share || pixel_share < cfg.share {
        // Most pictures end here: no colour reaches `share` even by its luma alone,
        // and the chroma is not looked at.
        return Some(Look {
            share: luma_share,
            pixel_share,
            y,
            u: 128,
            v: 128,
        });
    }
    let (lo, hi) = window(y, cfg.luma_tolerance);
    // Cells of the dominant luma, per chroma cell (4 × 4 grid cells each).
    let mut weight = [0u32; CHROMA_LEN];
    let (sx, sy) = (GRID_W / CHROMA_W, GRID_H / (CHROMA_LEN / CHROMA_W));
    let span = hi - lo;
    for (gy, row) in thumb.grid.chunks_exact(GRID_W).enumerate() {
        let base = (gy / sy) * CHROMA_W;
        for (gx, &g) in row.iter().enumerate() {
            // g in lo..=hi, branch-free.
            weight[base + gx / sx] += u32::from(g.wrapping_sub(lo) <= span);
        }
    }
    // Cb among them, then Cr among those of that Cb: one colour, not two marginal
    // modes of different colours.
    let mut hu = [0u32; 256];
    for (&w, &cu) in weight.iter().zip(&thumb.chroma_u) {
        hu[usize::from(cu)] += w;
    }
    let (u, _) = dominant(&hu, cfg.chroma_tolerance);
    let (ulo, uhi) = window(u, cfg.chroma_tolerance);
    let mut hv = [0u32; 256];
    for ((&w, cu), &cv) in weight.iter().zip(&thumb.chroma_u).zip(&thumb.chroma_v) {
        if (ulo..=uhi).contains(cu) {
            hv[usize::from(cv)] += w;
        }
    }
    let (v, _) = dominant(&hv, cfg.chroma_tolerance);
    let (vlo, vhi) = window(v, cfg.chroma_tolerance);
    let mut cells = 0u32;
    for ((&w, &cu), &cv) in weight.iter().zip(&thumb.chroma_u).zip(&thumb.chroma_v) {
        let inside = cu.wrapping_sub(ulo) <= uhi - ulo && cv.wrapping_sub(vlo) <= vhi - vlo;
        cells += w * u32::from(inside);
    }
    Some(Look {
        share: cells as f32 / GRID_LEN as f32,
        pixel_share,
        y,
        u,
        v,
    })
}

/// The levels within `tol` of `c`, as an inclusive range.
fn window(c: u8, tol: u8) -> (u8, u8) {
    (c.saturating_sub(tol), c.saturating_add(tol))
}

/// The centre of the `±tol` window holding the most weight of `hist`, re-centred on the
/// weighted mean of what that window holds, and the weight around the new centre.
fn dominant(hist: &[u32; 256], tol: u8) -> (u8, u32) {
    let mut cum = [0u32; 257];
    for (i, &h) in hist.iter().enumerate() {
        cum[i + 1] = cum[i] + h;
    }
    let width = 2 * usize::from(tol) + 1;
    let (mut best, mut best_w) = (0usize, 0u32);
    for s in 0..256 {
        let e = (s + width).min(256);
        let w = cum[e] - cum[s];
        if w > best_w {
            (best, best_w) = (s, w);
        }
        if e == 256 {
            break;
        }
    }
    if best_w == 0 {
        return (0, 0);
    }
    let e = (best + width).min(256);
    let sum: u64 = (best..e).map(|i| i as u64 * u64::from(hist[i])).sum();
    let c = ((sum + u64::from(best_w) / 2) / u64::from(best_w)).min(255) as u8;
    let (lo, hi) = window(c, tol);
    (c, cum[usize::from(hi) + 1] - cum[usize::from(lo)])
}

/// A colour in code levels as 8-bit RGB, for people (BT.709 for HD, BT.601 below: the
/// summary does not carry the stream's matrix).
fn to_rgb(y: f64, u: f64, v: f64, full_range: bool, hd: bool) -> (u8, u8, u8) {
    let (y, cb, cr) = if full_range {
        (y, u - 128.0, v - 128.0)
    } else {
        (
            (y - 16.0) * 255.0 / 219.0,
            (u - 128.0) * 255.0 / 224.0,
            (v - 128.0) * 255.0 / 224.0,
        )
    };
    let (r, g, b) = if hd {
        (
            y + 1.5748 * cr,
            y - 0.1873 * cb - 0.4681 * cr,
            y + 1.8556 * cb,
        )
    } else {
        (
            y + 1.402 * cr,
            y - 0.344_136 * cb - 0.714_136 * cr,
            y + 1.772 * cb,
        )
    };
    let q = |x: f64| x.round().clamp(0.0, 255.0) as u8;
    (q(r), q(g), q(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{thumb_from_fn, thumb_from_yuv};
    use crate::defect::Phase;

    /// Normal content: a moving colour pattern.
    fn moving(i: usize) -> Thumb {
        thumb_from_yuv(320, 180, false, move |x, y| {
            (
                ((x * 3 + y + i * 5) % 200 + 30) as u8,
                ((x + i) % 120 + 60) as u8,
                ((y * 2 + i) % 120 + 70) as u8,
            )
        })
    }

    /// A "no signal" screen: blue, with a white caption box over `caption` of its width
    /// and a ninth of its height.
    fn blue_screen(w: usize, h: usize, caption: f64) -> Thumb {
        thumb_from_yuv(w, h, false, move |x, y| {
            let cx = (x as f64 - w as f64 / 2.0).abs() < caption * w as f64 / 2.0;
            let cy = (y as f64 - h as f64 / 2.0).abs() < h as f64 / 18.0;
            if cx && cy {
                (235, 128, 128)
            } else {
                (41, 240, 110)
            }
        })
    }

    fn detector() -> UniformDetector {
        UniformDetector::new(UniformConfig::default(), &BlackConfig::default())
    }

    /// Runs 25 fps pictures through the detector; `black` as the black detector says.
    fn run(frames: impl Iterator<Item = (f64, Thumb, bool)>) -> Vec<Transition> {
        let mut d = detector();
        let mut last = 0.0;
        let mut v = vec![];
        for (t, th, black) in frames {
            last = t;
            v.extend(d.observe(t, &th, black));
        }
        v.extend(d.finish(last + 0.04));
        v
    }

    fn num(tr: &Transition, name: &str) -> f64 {
        match tr.metrics.iter().find(|(n, _)| *n == name) {
            Some((_, Metric::Num(x))) => *x,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn blue_screen_is_one_event_with_onset_end_and_colour() {
        let screen = blue_screen(320, 180, 0.3);
        let trs = run((0..400).map(|i| {
            let t = i as f64 * 0.04;
            if (75..300).contains(&i) {
                (t, screen.clone(), false)
            } else {
                (t, moving(i), false)
            }
        }));
        assert_eq!(trs.len(), 2, "{trs:?}");
        assert_eq!(trs[0].kind, DefectKind::Uniform);
        assert_eq!(trs[0].phase, Phase::Start);
        assert!((trs[0].start_s - 3.0).abs() < 1e-9, "{}", trs[0].start_s);
        assert_eq!(trs[1].phase, Phase::End);
        assert!((trs[1].end_s.unwrap() - 12.0).abs() < 1e-9, "{trs:?}");
        let end = &trs[1];
        assert!((num(end, "luma") - 41.0).abs() <= 1.0, "{end:?}");
        assert!((num(end, "cb") - 240.0).abs() <= 1.0, "{end:?}");
        assert!((num(end, "cr") - 110.0).abs() <= 1.0, "{end:?}");
        let share = num(end, "share_min");
        assert!((0.9..0.99).contains(&share), "{share}");
        let rgb = end.metrics.iter().find(|(n, _)| *n == "rgb").unwrap();
        // BT.601 limited range (41, 240, 110): pure blue.
        assert_eq!(rgb.1, Metric::Text("#0000ff".into()), "{rgb:?}");
        assert_eq!(
            end.metrics.iter().find(|(n, _)| *n == "frames").unwrap().1,
            Metric::Int(225)
        );
    }

    #[test]
    fn a_uniform_screen_is_uniform_not_freeze_and_black_stays_black() {
        // The three picture detectors wired as the pipeline wires them: moving content,
        // a still blue screen over [3, 10), moving, black over [14, 18), moving.
        use crate::config::FreezeConfig;
        use crate::detect::black::BlackDetector;
        use crate::detect::freeze::FreezeDetector;
        let mut black = BlackDetector::new(BlackConfig::default());
        let mut uniform = detector();
        let mut freeze = FreezeDetector::new(FreezeConfig::default());
        let screen = blue_screen(320, 180, 0.3);
        let dark = thumb_from_yuv(320, 180, false, |_, _| (16, 128, 128));
        let mut trs = vec![];
        for i in 0..550 {
            let t = i as f64 * 0.04;
            let th = match i {
                75..=249 => screen.clone(),
                350..=449 => dark.clone(),
                _ => moving(i),
            };
            let b = black.is_black(&th);
            trs.extend(black.observe(t, &th));
            trs.extend(uniform.observe(t, &th, b));
            trs.extend(freeze.observe(t, &th, b || uniform.last_uniform()));
        }
        trs.extend(black.finish(22.0));
        trs.extend(uniform.finish(22.0));
        trs.extend(freeze.finish(22.0));
        let got: Vec<(DefectKind, f64, Option<f64>)> = trs
            .iter()
            .filter(|t| t.phase == Phase::End)
            .map(|t| (t.kind, t.start_s, t.end_s))
            .collect();
        assert_eq!(
            got,
            [
                (DefectKind::Uniform, 3.0, Some(10.0)),
                (DefectKind::Black, 14.0, Some(18.0))
            ],
            "{trs:?}"
        );
    }

    #[test]
    fn shorter_than_min_duration_is_nothing() {
        let screen = blue_screen(320, 180, 0.3);
        let trs = run((0..300).map(|i| {
            let t = i as f64 * 0.04;
            // 4.96 s of blue: under the 5 s default.
            let blue = (75..199).contains(&i);
            (t, if blue { screen.clone() } else { moving(i) }, false)
        }));
        assert!(trs.is_empty(), "{trs:?}");
    }

    #[test]
    fn hysteresis_clear_duration_merges_a_blip() {
        let cfg = UniformConfig {
            clear_duration: 0.5,
            ..UniformConfig::default()
        };
        let mut d = UniformDetector::new(cfg, &BlackConfig::default());
        let screen = blue_screen(320, 180, 0.0);
        let mut trs = vec![];
        for i in 0..500 {
            let t = i as f64 * 0.04;
            // Blue over [2, 16) but for 0.2 s of picture at 9 s.
            let blue = (50..400).contains(&i) && !(225..230).contains(&i);
            let th = if blue { screen.clone() } else { moving(i) };
            trs.extend(d.observe(t, &th, false));
        }
        trs.extend(d.finish(20.0));
        assert_eq!(trs.len(), 2, "{trs:?}");
        assert!((trs[0].start_s - 2.0).abs() < 1e-9);
        assert!((trs[1].end_s.unwrap() - 16.0).abs() < 1e-9, "{trs:?}");
    }

    #[test]
    fn black_wins() {
        // The black detector's verdict: black pictures are never uniform.
        let black = thumb_from_yuv(320, 180, false, |_, _| (16, 128, 128));
        let trs = run((0..400).map(|i| (i as f64 * 0.04, black.clone(), true)));
        assert!(trs.is_empty(), "{trs:?}");
        // Near-black but not black by the black detector (a caption over 5%): a colour
        // under black's pixel threshold is still left to black.
        let dark = thumb_from_yuv(320, 180, false, |x, y| {
            if x < 40 && y < 40 {
                (200, 128, 128)
            } else {
                (20, 128, 128)
            }
        });
        let d = detector();
        assert!(d.look(&dark).unwrap().share > 0.9);
        assert!(!d.is_uniform(&dark, false));
        let trs = run((0..400).map(|i| (i as f64 * 0.04, dark.clone(), false)));
        assert!(trs.is_empty(), "{trs:?}");
        // Dark grey above the threshold (a covered lens): uniform.
        let grey = thumb_from_yuv(320, 180, false, |x, y| {
            (50 + ((x * 7 + y * 13) % 5) as u8, 126, 131)
        });
        assert!(d.is_uniform(&grey, false));
        assert!(!d.is_uniform(&grey, true));
    }

    #[test]
    fn grey_sky_gradient_with_texture_is_not_uniform() {
        // A grey sky: a vertical gradient of 40 levels over the picture, low-contrast
        // texture, drifting; neutral chroma everywhere.
        let sky = |i: usize| {
            thumb_from_yuv(640, 360, false, move |x, y| {
                let grad = 150 + y * 40 / 360;
                let tex = ((x + i) / 3 * 7 + y / 3 * 13) % 9;
                ((grad + tex) as u8, 128, 126)
            })
        };
        let d = detector();
        let l = d.look(&sky(0)).unwrap();
        assert!(l.share < 0.5, "{l:?}");
        let trs = run((0..300).map(|i| (i as f64 * 0.04, sky(i), false)));
        assert!(trs.is_empty(), "{trs:?}");
        // A smooth gradient of 40 levels, no texture at all: still not uniform.
        let smooth = thumb_from_yuv(640, 360, false, |_, y| {
            ((150 + y * 40 / 360) as u8, 128, 126)
        });
        assert!(!d.is_uniform(&smooth, false), "{:?}", d.look(&smooth));
    }

    #[test]
    fn fine_texture_is_not_uniform_but_coding_noise_is() {
        let d = detector();
        // Cell means flat (a 2-pixel checkerboard of ±25 levels averages to 120 in
        // every cell), pixels far apart: grass, a crowd, gravel seen from afar.
        let texture = thumb_from_yuv(640, 360, false, |x, y| {
            (if (x / 2 + y / 2) % 2 == 0 { 95 } else { 145 }, 128, 128)
        });
        let l = d.look(&texture).unwrap();
        assert!(l.share > 0.9 && l.pixel_share < 0.5, "{l:?}");
        assert!(!d.is_uniform(&texture, false));
        // ±3 levels of noise on a flat brown: uniform.
        let noisy = thumb_from_yuv(640, 360, false, |x, y| {
            ((57 + (x * 31 + y * 17) % 7) as u8 - 3, 118, 136)
        });
        assert!(d.is_uniform(&noisy, false), "{:?}", d.look(&noisy));
    }

    #[test]
    fn chroma_tells_colours_of_one_luma_apart() {
        // Left half blue, right half red, the same luma: two colours, neither 75%.
        let two = thumb_from_yuv(640, 360, false, |x, _| {
            if x < 320 {
                (81, 240, 90)
            } else {
                (81, 90, 240)
            }
        });
        let d = detector();
        let l = d.look(&two).unwrap();
        assert!((0.45..0.55).contains(&l.share), "{l:?}");
        assert!(!d.is_uniform(&two, false));
        // Without chroma (4:0:0 or not read), the same luma is one colour.
        let grey = thumb_from_fn(640, 360, false, |_, _| 81);
        assert!(d.is_uniform(&grey, false));
    }

    #[test]
    fn caption_share_decides() {
        let d = detector();
        // A caption over 30% of the width and a ninth of the height: uniform.
        assert!(d.is_uniform(&blue_screen(640, 360, 0.3), false));
        // Most of the picture covered by something else: not.
        let half = thumb_from_yuv(640, 360, false, |x, y| {
            if x < 400 && y < 200 {
                ((x * 3 + y) as u8 % 200 + 30, 128, 128)
            } else {
                (41, 240, 110)
            }
        });
        assert!(!d.is_uniform(&half, false), "{:?}", d.look(&half));
    }

    #[test]
    fn resolution_change_keeps_one_event() {
        // The same blue screen at 360p then 720p (an encoder restarting): one event.
        let small = blue_screen(640, 360, 0.2);
        let large = blue_screen(1280, 720, 0.2);
        let trs = run((0..400).map(|i| {
            let t = i as f64 * 0.04;
            let th = match i {
                0..=49 | 350.. => moving(i),
                50..=199 => small.clone(),
                _ => large.clone(),
            };
            (t, th, false)
        }));
        assert_eq!(trs.len(), 2, "{trs:?}");
        assert!((trs[0].start_s - 2.0).abs() < 1e-9);
        assert!((trs[1].end_s.unwrap() - 14.0).abs() < 1e-9);
    }

    #[test]
    fn empty_and_full_range_pictures() {
        let d = detector();
        assert!(d.look(&Thumb::default()).is_none());
        assert!(!d.is_uniform(&Thumb::default(), false));
        // Full range: black's threshold is 25, so a flat 30 is a colour.
        let th = thumb_from_yuv(320, 180, true, |_, _| (30, 128, 128));
        assert!(d.is_uniform(&th, false));
        let th = thumb_from_yuv(320, 180, false, |_, _| (30, 128, 128));
        assert!(!d.is_uniform(&th, false));
    }

    #[test]
    fn dominant_window_is_recentred() {
        let mut h = [0u32; 256];
        h[100] = 10;
        h[101] = 10;
        // The first window holding both starts at 89; the centre is their mean.
        assert_eq!(dominant(&h, 6), (101, 20));
        assert_eq!(dominant(&[0; 256], 6), (0, 0));
        let mut h = [0u32; 256];
        h[255] = 5;
        h[0] = 3;
        assert_eq!(dominant(&h, 6), (255, 5));
    }

    #[test]
    fn rgb_of_known_colours() {
        assert_eq!(to_rgb(16.0, 128.0, 128.0, false, true), (0, 0, 0));
        assert_eq!(to_rgb(235.0, 128.0, 128.0, false, false), (255, 255, 255));
        assert_eq!(to_rgb(128.0, 128.0, 128.0, true, true), (128, 128, 128));
        // BT.709 limited-range red (ffmpeg's colour bars): R high, G and B low.
        let (r, g, b) = to_rgb(63.0, 102.0, 240.0, false, true);
        assert!(r > 240 && g < 10 && b < 10, "{r} {g} {b}");
    }
}
