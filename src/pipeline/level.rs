//! Decode levels: which access units of a stream the video chain decodes, and when
//! that changes (`docs/events.md`, "Decode levels").
//!
//! Owns the level state machine of one stream ([`LevelControl`]: pinned or `auto`,
//! escalation around suspected defects, the overload cap with hysteresis, seconds per
//! level) and the compressed-size watch ([`SizeWatch`]) that suspects frozen or black
//! pictures without decoding them. Pure: time comes in as arguments (media seconds for
//! the level accounting, any monotonic seconds for the backlog), so tests drive it
//! with a simulated clock. It decodes nothing and emits nothing.

use crate::config::LevelChoice;
use crate::defect::DecodeLevel;

/// Media seconds a stream escalated by `auto` stays escalated after the last sign of
/// a defect (detectors idle and no suspicion) before it returns to watching, at a key
/// picture.
pub const CALM_S: f64 = 2.0;
/// Queue fill at or above which a live `auto` stream steps down one level.
pub const BACKLOG_HIGH: f32 = 0.75;
/// Queue fill at or below which the backlog counts as drained.
pub const BACKLOG_LOW: f32 = 0.25;
/// Seconds the queue must stay at or above [`BACKLOG_HIGH`] before a step down: a
/// burst (an escalation decoding its look-back again) fills the queue for a moment
/// and drains at once; only a box that cannot keep up keeps it full.
pub const STEP_DOWN_AFTER_S: f64 = 0.5;
/// Seconds between two step-downs (the queue needs time to react).
pub const STEP_DOWN_EVERY_S: f64 = 1.0;
/// Seconds the queue must stay drained before a step back up.
pub const STEP_UP_AFTER_S: f64 = 10.0;
/// Seconds the queue must stay drained before the shed syntax check comes back, the
/// first time. A box at its limit would otherwise take it back, fall behind, shed it
/// again, and so on (each time making a parse-only decoder, and dropping packets
/// before the step down): so each shed within [`SHED_MEMORY_S`] of a restore doubles
/// the wait, up to [`SYNTAX_RESTORE_MAX_S`].
pub const SYNTAX_RESTORE_S: f64 = 30.0;
/// See [`SYNTAX_RESTORE_S`].
pub const SYNTAX_RESTORE_MAX_S: f64 = 600.0;
/// See [`SYNTAX_RESTORE_S`].
pub const SHED_MEMORY_S: f64 = 300.0;

/// Counters of the decode levels (per stream, cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LevelStats {
    /// Media seconds of video spent at each level ([`DecodeLevel::ALL`] order).
    pub seconds: [f64; 3],
    /// `auto` escalations to decode every picture (a suspicion or a full ring).
    pub escalations: u64,
    /// Escalations forced because a GOP did not fit the ring.
    pub ring_overflows: u64,
    /// Times the ring dropped its older GOP to make room (look-back shortened).
    pub ring_trims: u64,
    /// Steps down because decoding fell behind a live source, and back up.
    pub step_downs: u64,
    pub step_ups: u64,
    /// Access units parsed (not decoded) by `auto`'s syntax check, and those found
    /// broken.
    pub syntax_checked: u64,
    pub syntax_broken: u64,
    /// Of those, the ones openh264 could not check (parameter sets or references
    /// missing, as after a start or a re-decode): not taken for a defect.
    pub syntax_unchecked: u64,
    /// Media seconds during which the syntax check was shed for overload.
    pub syntax_shed_seconds: f64,
    /// A key picture was not an IDR: `auto` decodes reference pictures instead of
    /// watching (openh264 restarts only at IDRs).
    pub open_gop: bool,
}

/// The level state of one stream. See the module docs.
#[derive(Debug, Clone)]
pub struct LevelControl {
    choice: LevelChoice,
    /// `auto` only: pictures are decoded at `cap` (instead of watching at `key`).
    escalated: bool,
    /// Since when (media s) nothing is suspected or open while escalated.
    quiet_since: Option<f64>,
    /// The richest level the box affords now (`auto` on a live source only).
    cap: DecodeLevel,
    /// `auto`'s level when not escalated: `Key` (watching), or `Reference` on a stream
    /// whose key pictures are not IDRs (openh264 cannot start at them).
    cheap: DecodeLevel,
    live: bool,
    /// The syntax check is shed: the first step down of a live `auto` stream whose
    /// decoder falls behind (it is most of what a watching stream costs).
    syntax_shed: bool,
    /// A live `auto` stream's check has not started yet: it waits for the box-wide
    /// gate (`gate`), as a shed check waits to come back.
    syntax_pending: bool,
    /// Seconds drained before the shed check comes back (see [`SYNTAX_RESTORE_S`]).
    syntax_restore_s: f64,
    /// When (monotonic s) the check last came back.
    syntax_restored_at: Option<f64>,
    last_change: Option<f64>,
    drained_since: Option<f64>,
    /// Since when (monotonic s) the queue is at or above [`BACKLOG_HIGH`].
    full_since: Option<f64>,
    last_t: Option<f64>,
    pub stats: LevelStats,
}

impl LevelControl {
    pub fn new(choice: LevelChoice) -> Self {
        LevelControl {
            choice,
            escalated: false,
            quiet_since: None,
            cap: DecodeLevel::Full,
            cheap: DecodeLevel::Key,
            live: false,
            syntax_shed: false,
            syntax_pending: false,
            syntax_restore_s: SYNTAX_RESTORE_S,
            syntax_restored_at: None,
            last_change: None,
            drained_since: None,
            full_since: None,
            last_t: None,
            stats: LevelStats::default(),
        }
    }

    /// The source is live (it drops packets when decoding falls behind): only then
    /// does a backlog step the level down.
    pub fn set_live(&mut self, live: bool) {
        self.live = live;
        // A live stream's check starts when the box-wide gate admits it (on the first
        // packet unless the box is busy; see `backlog`).
        self.syntax_pending = live && self.is_auto();
    }

    /// True for `auto`.
    pub fn is_auto(&self) -> bool {
        self.choice.pinned().is_none()
    }

    /// `auto`, not escalated, at `Key`: key pictures are decoded, the rest is watched.
    pub fn watching(&self) -> bool {
        self.is_auto() && !self.escalated && self.cheap == DecodeLevel::Key
    }

    /// `auto` and escalated (decoding at the cap around a suspected or open defect).
    pub fn escalated(&self) -> bool {
        self.is_auto() && self.escalated
    }

    /// `auto`'s level when nothing is suspected: `Key`, or `Reference` for a stream
    /// whose key pictures are not IDRs.
    pub fn set_cheap(&mut self, level: DecodeLevel) {
        self.cheap = level;
    }

    /// The level pictures are decoded at now.
    pub fn level(&self) -> DecodeLevel {
        match self.choice.pinned() {
            Some(l) => l,
            None if self.escalated => self.cap,
            None => self.cheap.max(self.cap),
        }
    }

    /// The overload cap (`Full` unless a live source outran the decoder).
    pub fn cap(&self) -> DecodeLevel {
        self.cap
    }

    /// The syntax check is shed for overload, or not admitted yet (see
    /// [`LevelControl::backlog`]).
    pub fn syntax_shed(&self) -> bool {
        self.syntax_shed || self.syntax_pending
    }

    /// Accounts the video up to media time `t` to the current level.
    pub fn account(&mut self, t: f64) {
        if let Some(last) = self.last_t {
            let d = t - last;
            // Gaps over 2 s are outages; backwards is a discontinuity.
            if d > 0.0 && d <= 2.0 {
                self.stats.seconds[self.level().index()] += d;
                if self.syntax_shed() {
                    self.stats.syntax_shed_seconds += d;
                }
            }
        }
        if self.last_t.is_none_or(|l| t > l) || t < self.last_t.unwrap_or(t) - 2.0 {
            self.last_t = Some(t);
        }
    }

    /// A defect is suspected: decode every picture (at the cap) from now on. Returns
    /// true when this escalated (a watching caller decodes its look-back again).
    pub fn escalate(&mut self, overflow: bool) -> bool {
        if !self.is_auto() || self.escalated {
            return false;
        }
        self.escalated = true;
        self.quiet_since = None;
        self.stats.escalations += 1;
        if overflow {
            self.stats.ring_overflows += 1;
        }
        true
    }

    /// Escalated: called for every picture-carrying access unit with whether a
    /// defect is suspected or open (`busy`) at media time `t`, and whether it is a key
    /// picture. Returns true when the stream goes back to watching (at this key).
    pub fn settle(&mut self, t: f64, busy: bool, key: bool) -> bool {
        if !self.is_auto() || !self.escalated {
            return false;
        }
        if busy {
            self.quiet_since = None;
            return false;
        }
        let since = *self.quiet_since.get_or_insert(t);
        if key && t - since >= CALM_S {
            self.escalated = false;
            self.quiet_since = None;
            return true;
        }
        false
    }

    /// The ingest queue's fill (0–1) at monotonic time `now` (seconds). A live `auto`
    /// stream steps down once the queue stayed high for [`STEP_DOWN_AFTER_S`] (at most
    /// one step per [`STEP_DOWN_EVERY_S`]), before ingest has to drop, and back up once
    /// it stayed drained for [`STEP_UP_AFTER_S`]. Two things can go: the syntax check
    /// (most of what a watching stream costs; it sees what nothing else does, corrupt
    /// slices with the transport intact, but only between key pictures) and the cap
    /// on escalated decoding (`full` → `reference` → `key`). What costs now goes
    /// first: the check while watching, the cap while escalated. Back up, the cap
    /// comes back first and the check last.
    ///
    /// The check (re)starts only when `admit` says the box has room for it (the
    /// process-wide `gate::try_admit` in production): at the start of a live stream,
    /// and after a shed once the drained wait is over. `admit` is asked only then.
    pub fn backlog(&mut self, now: f64, fill: f32, admit: &mut dyn FnMut() -> bool) {
        if !self.is_auto() || !self.live {
            return;
        }
        if self.syntax_pending && !self.syntax_shed && fill < BACKLOG_HIGH && admit() {
            self.syntax_pending = false;
        }
        let since_change = self.last_change.map_or(f64::INFINITY, |c| now - c);
        if fill >= BACKLOG_HIGH {
            self.drained_since = None;
            let full_for = now - *self.full_since.get_or_insert(now);
            let floor = self.cap == DecodeLevel::Key && self.syntax_shed;
            if !floor && full_for >= STEP_DOWN_AFTER_S && since_change >= STEP_DOWN_EVERY_S {
                // What costs now goes first: the cap while decoding around a
                // suspicion, the syntax check while watching.
                let shed_first = !self.escalated;
                if !self.syntax_shed && (self.cap == DecodeLevel::Key || shed_first) {
                    self.syntax_shed = true;
                    self.syntax_pending = false;
                    let again = self
                        .syntax_restored_at
                        .is_some_and(|r| now - r < SHED_MEMORY_S);
                    self.syntax_restore_s = if again {
                        (self.syntax_restore_s * 2.0).min(SYNTAX_RESTORE_MAX_S)
                    } else {
                        SYNTAX_RESTORE_S
                    };
                } else {
                    self.cap = self.cap.cheaper();
                }
                self.last_change = Some(now);
                self.stats.step_downs += 1;
            }
        } else if fill <= BACKLOG_LOW {
            self.full_since = None;
            let since = *self.drained_since.get_or_insert(now);
            let top = self.cap == DecodeLevel::Full && !self.syntax_shed;
            let wait = if self.cap == DecodeLevel::Full {
                self.syntax_restore_s
            } else {
                STEP_UP_AFTER_S
            };
            // Short-circuits: the gate is asked only when the check would come back.
            let ready = !top && now - since >= wait && since_change >= wait;
            if ready && (self.cap != DecodeLevel::Full || admit()) {
                if self.cap != DecodeLevel::Full {
                    self.cap = self.cap.richer();
                } else {
                    self.syntax_shed = false;
                    self.syntax_restored_at = Some(now);
                }
                self.last_change = Some(now);
                self.drained_since = Some(now);
                self.stats.step_ups += 1;
            }
        } else {
            self.drained_since = None;
            self.full_since = None;
        }
    }
}

/// Watches coded picture sizes: a collapse of the reference pictures' sizes (an
/// encoder coding the same or a flat picture over and over) is the classic sign of a
/// frozen or black source, visible without decoding.
#[derive(Debug, Clone, Default)]
pub struct SizeWatch {
    /// Running mean of non-key reference access unit sizes (bytes).
    mean: f64,
    samples: u32,
    run: u32,
    pub collapses: u64,
}

/// Samples before the mean is trusted.
const SIZE_WARMUP: u32 = 16;
/// A size this many times below the mean counts as collapsed.
const COLLAPSE_RATIO: f64 = 8.0;
/// Consecutive collapsed pictures that make a suspicion.
const COLLAPSE_RUN: u32 = 3;
/// Weight of a new sample in the running mean.
const SIZE_ALPHA: f64 = 1.0 / 16.0;

impl SizeWatch {
    /// Feeds one access unit; returns true when its size says "suspect a frozen or
    /// black picture". Only non-key reference pictures are judged (key pictures are
    /// decoded anyway; non-reference ones are small by design).
    pub fn observe(&mut self, len: usize, key: bool, reference: bool) -> bool {
        if key || !reference {
            return false;
        }
        let len = len as f64;
        let collapsed = self.samples >= SIZE_WARMUP && len * COLLAPSE_RATIO < self.mean;
        self.run = if collapsed { self.run + 1 } else { 0 };
        if self.samples == 0 {
            self.mean = len;
        } else {
            self.mean += SIZE_ALPHA * (len - self.mean);
        }
        self.samples = self.samples.saturating_add(1);
        if self.run == COLLAPSE_RUN {
            self.collapses += 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_levels_never_move() {
        for (choice, level) in [
            (LevelChoice::Full, DecodeLevel::Full),
            (LevelChoice::Reference, DecodeLevel::Reference),
            (LevelChoice::Key, DecodeLevel::Key),
        ] {
            let mut c = LevelControl::new(choice);
            c.set_live(true);
            assert!(!c.escalate(false));
            c.backlog(0.0, 1.0, &mut || true);
            c.backlog(5.0, 1.0, &mut || true);
            assert!(!c.settle(10.0, false, true));
            assert_eq!(c.level(), level);
            assert_eq!(c.stats.step_downs, 0);
        }
    }

    #[test]
    fn auto_watches_escalates_and_settles_at_a_key_after_a_calm() {
        let mut c = LevelControl::new(LevelChoice::Auto);
        assert_eq!((c.level(), c.watching()), (DecodeLevel::Key, true));
        // 4 s watching, at 25 fps.
        for i in 0..100 {
            c.account(f64::from(i) * 0.04);
        }
        assert!(c.escalate(false));
        assert!(!c.escalate(false), "already escalated");
        assert_eq!(c.level(), DecodeLevel::Full);
        // Busy until 7 s, keys every 2 s: quiet from 7.0; the key at 8.0 is too
        // early (1 s calm), the one at 10.0 settles.
        let mut settled = None;
        for i in 100..300 {
            let t = f64::from(i) * 0.04;
            c.account(t);
            let key = i % 50 == 0;
            if c.settle(t, t < 7.0, key) {
                settled = Some(t);
                break;
            }
        }
        assert!((settled.unwrap() - 10.0).abs() < 1e-9, "{settled:?}");
        assert_eq!(c.level(), DecodeLevel::Key);
        let s = c.stats.seconds;
        assert!((s[DecodeLevel::Key.index()] - 3.96).abs() < 1e-6, "{s:?}");
        assert!((s[DecodeLevel::Full.index()] - 6.04).abs() < 1e-6, "{s:?}");
        assert_eq!(c.stats.escalations, 1);
    }

    #[test]
    fn a_live_backlog_steps_down_with_hysteresis_and_back_up() {
        let mut c = LevelControl::new(LevelChoice::Auto);
        c.backlog(0.0, 1.0, &mut || true);
        assert_eq!(c.cap(), DecodeLevel::Full, "not live: never steps down");
        assert!(!c.syntax_shed());
        c.set_live(true);
        c.escalate(false);
        // A burst: full for 0.4 s, then drained. No step.
        c.backlog(0.0, 1.0, &mut || true);
        c.backlog(0.4, 0.9, &mut || true);
        c.backlog(0.45, 0.5, &mut || true);
        c.backlog(0.8, 0.9, &mut || true);
        assert_eq!(
            (c.cap(), c.syntax_shed()),
            (DecodeLevel::Full, false),
            "a burst is not an overload"
        );
        // Sustained while escalated: 0.5 s full lowers the cap first.
        c.backlog(1.3, 0.8, &mut || true);
        assert_eq!(
            (c.cap(), c.level(), c.syntax_shed()),
            (DecodeLevel::Reference, DecodeLevel::Reference, false)
        );
        c.backlog(1.8, 0.9, &mut || true);
        assert_eq!(c.cap(), DecodeLevel::Reference, "one step per second");
        c.backlog(2.4, 0.8, &mut || true);
        assert_eq!((c.cap(), c.syntax_shed()), (DecodeLevel::Key, false));
        c.backlog(3.4, 0.8, &mut || true);
        assert_eq!((c.cap(), c.syntax_shed()), (DecodeLevel::Key, true));
        c.backlog(5.0, 1.0, &mut || true);
        c.backlog(7.0, 1.0, &mut || true);
        assert_eq!(c.stats.step_downs, 3, "key without the check is the floor");
        // Half-full: neither step.
        c.backlog(8.0, 0.5, &mut || true);
        c.backlog(30.0, 0.5, &mut || true);
        assert_eq!((c.cap(), c.syntax_shed()), (DecodeLevel::Key, true));
        // Drained for 10 s: one step up, then 10 s more for the next; the syntax
        // check comes back last.
        c.backlog(31.0, 0.1, &mut || true);
        c.backlog(40.9, 0.1, &mut || true);
        assert_eq!(c.cap(), DecodeLevel::Key);
        c.backlog(41.0, 0.2, &mut || true);
        assert_eq!(c.cap(), DecodeLevel::Reference);
        c.backlog(45.0, 0.0, &mut || true);
        assert_eq!(c.cap(), DecodeLevel::Reference);
        c.backlog(51.0, 0.0, &mut || true);
        assert_eq!((c.cap(), c.syntax_shed()), (DecodeLevel::Full, true));
        // The check waits longer: 30 s drained.
        c.backlog(61.0, 0.0, &mut || true);
        assert!(c.syntax_shed());
        c.backlog(81.0, 0.0, &mut || true);
        assert_eq!((c.cap(), c.syntax_shed()), (DecodeLevel::Full, false));
        assert_eq!(c.stats.step_ups, 3);
        c.backlog(120.0, 0.0, &mut || true);
        assert_eq!(c.stats.step_ups, 3, "nothing above the top");
    }

    #[test]
    fn a_check_shed_again_soon_after_it_came_back_waits_twice_as_long() {
        let mut c = LevelControl::new(LevelChoice::Auto);
        c.set_live(true);
        let shed_at = |c: &mut LevelControl, t: f64| {
            c.backlog(t, 0.9, &mut || true);
            c.backlog(t + 0.6, 0.9, &mut || true);
            assert!(c.syntax_shed(), "shed at {t}");
        };
        let restored_after = |c: &mut LevelControl, from: f64| -> f64 {
            let mut t = from;
            while c.syntax_shed() {
                t += 1.0;
                c.backlog(t, 0.0, &mut || true);
                assert!(t < from + 2000.0);
            }
            t - from
        };
        shed_at(&mut c, 0.0);
        c.backlog(1.0, 0.0, &mut || true);
        assert_eq!(restored_after(&mut c, 1.0), 30.0);
        // Shed again 10 s after it came back: 60 s, then 120 s.
        shed_at(&mut c, 41.0);
        c.backlog(42.0, 0.0, &mut || true);
        assert_eq!(restored_after(&mut c, 42.0), 60.0);
        shed_at(&mut c, 110.0);
        c.backlog(111.0, 0.0, &mut || true);
        assert_eq!(restored_after(&mut c, 111.0), 120.0);
        // After 5 calm minutes the wait starts again at 30 s.
        shed_at(&mut c, 600.0);
        c.backlog(601.0, 0.0, &mut || true);
        assert_eq!(restored_after(&mut c, 601.0), 30.0);
    }

    #[test]
    fn a_watching_stream_sheds_its_syntax_check_first() {
        let mut c = LevelControl::new(LevelChoice::Auto);
        c.set_live(true);
        assert!(c.watching());
        c.backlog(0.0, 0.9, &mut || true);
        c.backlog(0.6, 0.9, &mut || true);
        assert_eq!((c.cap(), c.syntax_shed()), (DecodeLevel::Full, true));
        // Still behind: the cap of the next escalation goes down too.
        c.backlog(1.7, 0.9, &mut || true);
        assert_eq!(c.cap(), DecodeLevel::Reference);
        assert!(c.watching());
    }

    #[test]
    fn shed_seconds_are_accounted() {
        let mut c = LevelControl::new(LevelChoice::Auto);
        c.set_live(true);
        c.backlog(0.0, 0.0, &mut || true);
        for i in 0..50 {
            c.account(f64::from(i) * 0.04);
        }
        c.backlog(1.0, 1.0, &mut || true);
        c.backlog(1.6, 1.0, &mut || true);
        assert!(c.syntax_shed());
        for i in 50..100 {
            c.account(f64::from(i) * 0.04);
        }
        let shed = c.stats.syntax_shed_seconds;
        assert!((shed - 2.0).abs() < 1e-6, "{shed}");
    }

    #[test]
    fn a_live_stream_starts_its_check_when_the_box_admits_it() {
        // A file read as fast as it decodes is not live: its check runs from the start.
        let mut c = LevelControl::new(LevelChoice::Auto);
        c.set_live(false);
        assert!(!c.syntax_shed());
        let mut c = LevelControl::new(LevelChoice::Auto);
        c.set_live(true);
        assert!(c.syntax_shed(), "waits for the gate");
        let mut asked = 0;
        c.backlog(0.0, 0.0, &mut || {
            asked += 1;
            false
        });
        for i in 0..=25 {
            c.account(f64::from(i) * 0.04);
        }
        // Not asked while the stream's own queue is full.
        c.backlog(0.5, 0.9, &mut || {
            asked += 1;
            true
        });
        assert_eq!(asked, 1);
        assert!(c.syntax_shed());
        c.backlog(1.0, 0.1, &mut || true);
        assert!(!c.syntax_shed());
        for i in 26..=50 {
            c.account(f64::from(i) * 0.04);
        }
        // The second before admission counts as shed, the one after does not.
        let shed = c.stats.syntax_shed_seconds;
        assert!((shed - 1.0).abs() < 1e-6, "{shed}");
        assert_eq!((c.stats.step_downs, c.stats.step_ups), (0, 0));
    }

    #[test]
    fn a_shed_check_comes_back_only_when_the_box_admits_it() {
        let mut c = LevelControl::new(LevelChoice::Auto);
        c.set_live(true);
        c.backlog(0.0, 0.0, &mut || true);
        c.backlog(1.0, 0.9, &mut || true);
        c.backlog(1.6, 0.9, &mut || true);
        assert!(c.syntax_shed());
        let mut asked = 0;
        // Drained from 2 s: the gate is not asked before the restore wait is over...
        for t in 2..32 {
            c.backlog(f64::from(t), 0.0, &mut || {
                asked += 1;
                false
            });
        }
        assert_eq!(asked, 0);
        // ...then asked on each call, and the check stays shed while it says no.
        for t in 32..40 {
            c.backlog(f64::from(t), 0.0, &mut || {
                asked += 1;
                false
            });
        }
        assert_eq!(asked, 8);
        assert!(c.syntax_shed());
        c.backlog(40.0, 0.0, &mut || true);
        assert!(!c.syntax_shed());
        assert_eq!((c.stats.step_downs, c.stats.step_ups), (1, 1));
    }

    #[test]
    fn a_size_collapse_is_suspected_after_three_pictures_and_not_on_steady_small_ones() {
        let mut w = SizeWatch::default();
        let mut fired = vec![];
        let mut feed = |w: &mut SizeWatch, i: usize, len: usize| {
            if w.observe(len, i % 50 == 0, true) {
                fired.push(i);
            }
        };
        for i in 0..60 {
            feed(&mut w, i, 20_000);
        }
        // Frozen: 30-byte skip pictures from 60 on.
        for i in 60..200 {
            feed(&mut w, i, 30);
        }
        assert_eq!(fired, [62], "once, on the third collapsed picture");
        // Non-reference pictures are never judged.
        let mut w = SizeWatch::default();
        for _ in 0..40 {
            assert!(!w.observe(20_000, false, true));
        }
        assert!(!(0..10).any(|_| w.observe(10, false, false)));
    }
}
