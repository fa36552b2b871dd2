//! Test pattern: colour bars, or a still slate, where the programme should be.
//!
//! Two forms, one kind (`test_pattern`), both from the 64×36 luma grid of the summary:
//!
//! * **Bars** (SMPTE RP 219 / EG 1, EBU and PAL 75%/100% bars, also letter- or
//!   pillarboxed): over the upper half of the picture (grid rows 2–19) each column is
//!   nearly constant from top to bottom (85% of the cells within ±10 levels of their
//!   column's median), and the column profile splits into at least six flat bands of at
//!   least 4 columns each, covering at least 70% of the width, of which at least five
//!   consecutive pairs step *down* by 10 levels or more. Every bar standard orders its
//!   bars by falling luma (white or grey, yellow, cyan, green, magenta, red, blue, then
//!   black on EBU/PAL): that order is what tells bars from a picture with vertical
//!   stripes. ffmpeg's `smptebars`, `smptehdbars`, `pal75bars` and `pal100bars` all
//!   pass; `testsrc`, `testsrc2`, `rgbtestsrc`, `colorspectrum` and natural pictures do
//!   not (measured with `tests/media/make_media.sh` and docs/events.md). Motion inside
//!   the bars (a clock, a caption) does not matter: the column median ignores it.
//! * **Slate**: a still picture that *began with a cut* from different content. The
//!   picture stays within the freeze detector's noise floor of its reference (the same
//!   test, `[detect.freeze] noise_db`, `cell_step`, `max_changed_share`), and that
//!   reference picture differed from the picture before it by at least `cut_db` (a cut,
//!   not the continuation of moving content), and the picture has the hard edges of
//!   graphics (1% of neighbouring grid cells 16+ levels apart; a gradient has none). A
//!   frozen picture of live content is the last moving picture held: it never starts
//!   with a cut, and stays a `freeze`.
//!
//! Either form lasting `min_duration` (10 s) is one `test_pattern` event whose start is
//! the first such picture (for a slate, the cut picture it began with). Root cause
//! first: pictures that are bars or a slate (even before the 10 s are reached) are not
//! `freeze` ([`TestPatternDetector::is_pattern`] is passed on to the freeze detector);
//! black and uniform pictures are neither (their own kinds win). A still picture after a cut that lasts less than `min_duration` is
//! reported as nothing: a title card is content.

use super::{transition, Hysteresis};
use crate::config::{FreezeConfig, TestPatternConfig};
use crate::decode::{neighbour_steps, to_db, Thumb, GRID_LEN, GRID_W};
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// Grid rows examined for bars: the upper half, below a possible top bar of overscan.
const BAR_ROWS: std::ops::Range<usize> = 2..20;
/// A cell belongs to its column's bar when within this many levels of the column median.
const BAR_COLUMN_TOLERANCE: u8 = 10;
/// Share of the examined cells that must belong to their column's bar (percent).
const BAR_COLUMN_SHARE_PCT: usize = 85;
/// Neighbouring columns of one bar differ by at most this many levels.
const BAR_FLAT_STEP: u8 = 4;
/// A bar is at least this many grid columns wide (1/16 of the picture).
const BAR_MIN_COLUMNS: usize = 4;
/// At least this many bars ...
const BARS_MIN: usize = 6;
/// ... covering at least this many of the 64 columns (70%) ...
const BARS_MIN_COLUMNS: usize = 45;
/// ... with at least this many steps down of at least `BAR_MIN_STEP` levels.
const BARS_MIN_STEPS_DOWN: usize = 5;
const BAR_MIN_STEP: i16 = 10;

/// What the bars test found in one picture.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BarsMeasure {
    /// Flat vertical bands of at least `BAR_MIN_COLUMNS` columns.
    pub bars: u8,
    /// Of the neighbouring pairs of those bands, the ones that step down by 10+ levels.
    pub steps_down: u8,
    /// Columns the bands cover (of 64).
    pub columns: u8,
    /// Share of the upper half's cells within ±10 levels of their column's median.
    pub column_share: f32,
}

impl BarsMeasure {
    /// Whether these are colour bars by the rule of the module docs.
    pub fn is_bars(&self) -> bool {
        usize::from(self.bars) >= BARS_MIN
            && usize::from(self.columns) >= BARS_MIN_COLUMNS
            && usize::from(self.steps_down) >= BARS_MIN_STEPS_DOWN
            && self.column_share * 100.0 >= BAR_COLUMN_SHARE_PCT as f32
    }
}

/// Measures the bar structure of a 64×36 luma grid (fixed memory, no allocation).
pub fn measure_bars(grid: &[u8; GRID_LEN]) -> BarsMeasure {
    let rows = BAR_ROWS.len();
    let mut profile = [0u8; GRID_W];
    let mut inside = 0usize;
    let mut col = [0u8; 18];
    for (c, p) in profile.iter_mut().enumerate() {
        for (k, r) in BAR_ROWS.enumerate() {
            col[k] = grid[r * GRID_W + c];
        }
        let col = &mut col[..rows];
        col.sort_unstable();
        let median = col[rows / 2];
        *p = median;
        inside += col
            .iter()
            .filter(|v| v.abs_diff(median) <= BAR_COLUMN_TOLERANCE)
            .count();
    }
    let mut m = BarsMeasure {
        column_share: inside as f32 / (rows * GRID_W) as f32,
        ..BarsMeasure::default()
    };
    let mut start = 0;
    let mut last_level: Option<u8> = None;
    for c in 1..=GRID_W {
        if c < GRID_W && profile[c].abs_diff(profile[c - 1]) <= BAR_FLAT_STEP {
            continue;
        }
        let width = c - start;
        if width >= BAR_MIN_COLUMNS {
            let level = profile[start + width / 2];
            m.bars = m.bars.saturating_add(1);
            m.columns = m.columns.saturating_add(width as u8);
            if let Some(prev) = last_level {
                if i16::from(prev) - i16::from(level) >= BAR_MIN_STEP {
                    m.steps_down = m.steps_down.saturating_add(1);
                }
            }
            last_level = Some(level);
        }
        start = c;
    }
    m
}

/// Neighbouring grid cells (either direction) that differ by at least this many levels
/// are a hard edge: the border of a box, a caption, a logo.
const SLATE_EDGE_STEP: u8 = 16;
/// A slate has hard edges between at least 1% of the neighbouring cell pairs (45 of
/// 4 508): graphics and text. A smooth still picture (a gradient, a sky) has none and is
/// not a slate, whatever its cut.
const SLATE_MIN_EDGE_PAIRS: usize = 45;

/// Whether a grid has the hard edges of graphics (see [`SLATE_MIN_EDGE_PAIRS`]).
fn has_hard_edges(grid: &[u8; GRID_LEN]) -> bool {
    neighbour_steps(grid)
        .filter(|&d| d >= SLATE_EDGE_STEP)
        .count()
        >= SLATE_MIN_EDGE_PAIRS
}

/// Which form the current picture has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Bars,
    Slate,
}

impl Form {
    fn as_str(self) -> &'static str {
        match self {
            Form::Bars => "bars",
            Form::Slate => "slate",
        }
    }
}

/// The test-pattern detector.
#[derive(Debug, Clone)]
pub struct TestPatternDetector {
    cfg: TestPatternConfig,
    /// The freeze detector's stillness test.
    noise: f32,
    cell_step: u8,
    max_changed_share: f32,
    /// A picture differing from the one before by at least this (0–1 mean absolute
    /// difference) is a cut.
    cut: f32,
    hyst: Hysteresis,
    reference: [u8; GRID_LEN],
    ref_dims: Option<(u16, u16)>,
    /// The reference picture began with a cut.
    ref_after_cut: bool,
    /// Media time of the reference picture (a slate's onset: the viewer sees the slate
    /// from the cut picture, not from its first repeat).
    ref_t: f64,
    /// The last picture's verdict.
    last: Option<Form>,
    /// Evidence of the current interval.
    form: Option<Form>,
    bars_max: u8,
    frames: u32,
}

impl TestPatternDetector {
    /// `freeze`: the stillness test of a slate is the freeze detector's.
    pub fn new(cfg: TestPatternConfig, freeze: &FreezeConfig) -> Self {
        TestPatternDetector {
            noise: 10f32.powf(freeze.noise_db as f32 / 20.0),
            cell_step: freeze.cell_step,
            max_changed_share: freeze.max_changed_share,
            cut: 10f32.powf(cfg.cut_db as f32 / 20.0),
            hyst: Hysteresis::new(cfg.min_duration, cfg.clear_duration),
            cfg,
            reference: [0; GRID_LEN],
            ref_dims: None,
            ref_after_cut: false,
            ref_t: 0.0,
            last: None,
            form: None,
            bars_max: 0,
            frames: 0,
        }
    }

    /// Whether the last picture observed was bars or a slate (confirmed or not): the
    /// freeze detector leaves such pictures alone.
    pub fn is_pattern(&self) -> bool {
        self.last.is_some()
    }

    /// Feeds one decoded picture at media time `t`. `other`: another kind that wins
    /// over this one claims the picture (black, uniform).
    pub fn observe(&mut self, t: f64, thumb: &Thumb, other: bool) -> Option<Transition> {
        self.last = None;
        if !self.cfg.enabled {
            return None;
        }
        let dims = (thumb.width, thumb.height);
        // Stillness against the reference, as the freeze detector tests it.
        let (still, diff) = match self.ref_dims {
            Some(d) if d == dims => {
                let (diff, changed) = thumb.grid_diff(&self.reference, self.cell_step);
                let share = changed as f32 / GRID_LEN as f32;
                (
                    diff < self.noise && share <= self.max_changed_share,
                    Some(diff),
                )
            }
            _ => (false, None),
        };
        if !still {
            // A new reference; a cut when it differs from the last one by `cut` or more
            // (the first picture and a new size are not cuts: nothing came before).
            self.ref_after_cut = diff.is_some_and(|d| d >= self.cut);
            self.ref_t = t;
            self.reference = thumb.grid;
            self.ref_dims = Some(dims);
        }
        let m = self.cfg.bars.then(|| measure_bars(&thumb.grid));
        let bars = m.is_some_and(|m| m.is_bars());
        self.last = if other {
            None
        } else if bars {
            Some(Form::Bars)
        } else if self.cfg.slate && still && self.ref_after_cut && has_hard_edges(&thumb.grid) {
            Some(Form::Slate)
        } else {
            None
        };
        if let Some(f) = self.last {
            if self.hyst.onset().is_none() {
                self.form = Some(f);
                self.frames = 0;
                self.bars_max = 0;
            }
            if f == Form::Bars {
                self.bars_max = self.bars_max.max(m.map_or(0, |m| m.bars));
            }
            self.frames += 1;
        }
        tracing::trace!(t, bars, still, diff_db = ?diff.map(|d| to_db(f64::from(d))), "test pattern");
        if self.last == Some(Form::Slate) && self.hyst.onset().is_none() {
            // A slate starts at the cut picture (its reference), shown since then. The
            // hysteresis clamps a time before its last sample to that sample.
            if let Some(edge) = self.hyst.step(self.ref_t, true) {
                return Some(transition(DefectKind::TestPattern, edge, self.metrics()));
            }
        }
        let edge = self.hyst.step(t, self.last.is_some())?;
        Some(transition(DefectKind::TestPattern, edge, self.metrics()))
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
        self.ref_after_cut = false;
        self.last = None;
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::TestPattern, edge, self.metrics()))
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        put(
            &mut m,
            "form",
            Metric::Str(self.form.map_or("bars", Form::as_str)),
        );
        if self.form == Some(Form::Bars) {
            put(&mut m, "bars", Metric::Int(i64::from(self.bars_max)));
        }
        put(&mut m, "frames", Metric::Int(i64::from(self.frames)));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::thumb_from_fn;
    use crate::defect::Phase;

    /// 75% bars (BT.601 luma, limited range), full height, `pillar` columns of black
    /// on each side.
    fn bars(w: usize, h: usize, pillar: usize) -> Thumb {
        const LEVELS: [u8; 7] = [180, 162, 131, 112, 84, 65, 35];
        thumb_from_fn(w, h, false, move |x, _| {
            if x < pillar || x >= w - pillar {
                return 16;
            }
            LEVELS[(x - pillar) * 7 / (w - 2 * pillar)]
        })
    }

    fn moving(i: usize) -> Thumb {
        thumb_from_fn(320, 180, false, move |x, y| {
            ((x * 3 + y + i * 5) % 220 + 20) as u8
        })
    }

    fn detector() -> TestPatternDetector {
        TestPatternDetector::new(TestPatternConfig::default(), &FreezeConfig::default())
    }

    fn run(frames: impl Iterator<Item = (f64, Thumb)>) -> Vec<Transition> {
        let mut d = detector();
        let mut last = 0.0;
        let mut v = vec![];
        for (t, th) in frames {
            last = t;
            v.extend(d.observe(t, &th, false));
        }
        v.extend(d.finish(last + 0.04));
        v
    }

    /// `frames` pictures at 25 fps of moving content, with `pic` over the frames in
    /// `shown` (cut in and out).
    fn cut_in(pic: &Thumb, frames: u32, shown: std::ops::Range<u32>) -> Vec<Transition> {
        run((0..frames).map(|i| {
            let t = f64::from(i) * 0.04;
            if shown.contains(&i) {
                (t, pic.clone())
            } else {
                (t, moving(i as usize))
            }
        }))
    }

    #[test]
    fn bars_of_every_layout_pass_and_stripes_or_ramps_do_not() {
        assert!(measure_bars(&bars(640, 360, 0).grid).is_bars());
        assert!(
            measure_bars(&bars(1280, 720, 160).grid).is_bars(),
            "pillarboxed"
        );
        assert!(measure_bars(&bars(1920, 1080, 0).grid).is_bars());
        // The same bars in rising order are stripes, not bars.
        let rising = thumb_from_fn(640, 360, false, |x, _| {
            [35, 65, 84, 112, 131, 162, 180][x * 7 / 640]
        });
        assert!(!measure_bars(&rising.grid).is_bars());
        // A smooth ramp (a sky) has no flat bands.
        let ramp = thumb_from_fn(640, 360, false, |x, y| (60 + x / 4 + y / 8) as u8);
        assert!(!measure_bars(&ramp.grid).is_bars());
        // Bars only in the lower half: not the layout of any standard.
        let low = thumb_from_fn(640, 360, false, |x, y| {
            if y < 180 {
                ((x * 7 + y * 3) % 200 + 20) as u8
            } else {
                [180, 162, 131, 112, 84, 65, 35][x * 7 / 640]
            }
        });
        assert!(!measure_bars(&low.grid).is_bars());
        // Busy content.
        assert!(!measure_bars(&moving(3).grid).is_bars());
    }

    #[test]
    fn bars_with_a_caption_still_pass() {
        let th = thumb_from_fn(640, 360, false, |x, y| {
            if (100..140).contains(&y) && (200..440).contains(&x) {
                if (x / 3 + y) % 2 == 0 {
                    235
                } else {
                    16
                }
            } else {
                [180, 162, 131, 112, 84, 65, 35][x * 7 / 640]
            }
        });
        let m = measure_bars(&th.grid);
        assert!(m.is_bars(), "{m:?}");
    }

    #[test]
    fn bars_for_twelve_seconds_are_one_event_from_their_first_picture() {
        let b = bars(320, 180, 0);
        let trs = cut_in(&b, 500, 100..400);
        assert_eq!(trs.len(), 2, "{trs:?}");
        assert_eq!(trs[0].phase, Phase::Start);
        assert!((trs[0].start_s - 4.0).abs() < 1e-9, "{}", trs[0].start_s);
        assert!((trs[1].end_s.unwrap() - 16.0).abs() < 1e-9, "{:?}", trs[1]);
        let form = trs[1]
            .metrics
            .iter()
            .find(|(k, _)| *k == "form")
            .map(|(_, v)| v.clone());
        assert_eq!(form, Some(Metric::Str("bars")), "{:?}", trs[1].metrics);
    }

    #[test]
    fn a_still_picture_after_a_cut_is_a_slate_and_a_held_live_picture_is_not() {
        let slate = thumb_from_fn(320, 180, false, |x, y| {
            if (40..140).contains(&y) && (60..260).contains(&x) {
                200
            } else {
                ((x / 40) * 20 + 40) as u8
            }
        });
        // Cut to the slate at 4 s, back to moving content at 16 s.
        let trs = cut_in(&slate, 500, 100..400);
        assert_eq!(trs.len(), 2, "{trs:?}");
        // The slate is found on its first repeat and dated from the cut picture.
        assert!((trs[0].start_s - 4.0).abs() < 1e-9, "{}", trs[0].start_s);
        assert!((trs[1].end_s.unwrap() - 16.0).abs() < 1e-9);
        // The last moving picture held for 12 s: no cut, so not a slate.
        let held = moving(99);
        let trs = cut_in(&held, 500, 100..400);
        assert!(trs.is_empty(), "{trs:?}");
    }

    #[test]
    fn a_smooth_still_picture_after_a_cut_is_not_a_slate() {
        // A gradient (a sky) cut in for 12 s: still, after a cut, but no hard edge.
        let sky = thumb_from_fn(320, 180, false, |x, y| (90 + x / 8 + y / 6) as u8);
        assert!(!has_hard_edges(&sky.grid));
        let trs = cut_in(&sky, 500, 100..400);
        assert!(trs.is_empty(), "{trs:?}");
    }

    #[test]
    fn a_short_title_card_and_other_kinds_are_not_reported() {
        let card = thumb_from_fn(320, 180, false, |x, _| ((x / 40) * 25 + 30) as u8);
        // 6 s still after a cut: under min_duration.
        let trs = cut_in(&card, 400, 100..250);
        assert!(trs.is_empty(), "{trs:?}");
        // Black (or uniform) claims the picture: not a pattern, and freeze is told so.
        let mut d = detector();
        let b = bars(320, 180, 0);
        for i in 0..400 {
            assert!(d.observe(f64::from(i) * 0.04, &b, true).is_none());
            assert!(!d.is_pattern());
        }
        assert!(d.finish(16.0).is_none());
    }

    #[test]
    fn pattern_pictures_are_flagged_at_once_for_the_freeze_detector() {
        let mut d = detector();
        let b = bars(320, 180, 0);
        d.observe(0.0, &moving(0), false);
        assert!(!d.is_pattern());
        d.observe(0.04, &b, false);
        assert!(d.is_pattern(), "bars are known from the first picture");
        let mut off = TestPatternDetector::new(
            TestPatternConfig {
                enabled: false,
                ..TestPatternConfig::default()
            },
            &FreezeConfig::default(),
        );
        off.observe(0.0, &b, false);
        assert!(!off.is_pattern());
    }
}
