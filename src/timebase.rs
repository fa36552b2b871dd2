//! Media time: the one place that knows the 90 kHz clock every source normalises to.
//!
//! Sources put presentation times on the 90 kHz MPEG clock, unwrapped past the 33-bit
//! wrap ([`crate::ingest::Packet::pts`]). Everything that turns them into seconds, or
//! seconds and other clock rates into them, goes through this module: no other file
//! writes `/ 90_000.0` (retina's `Timestamp` does the same for RTP clocks).
//!
//! A leaf module: it imports nothing from the crate.

/// Ticks per second of the media clock.
pub const HZ: i64 = 90_000;

/// A duration or position in 90 kHz ticks, as seconds.
pub fn secs(ticks: i64) -> f64 {
    ticks as f64 / HZ as f64
}

/// Seconds as 90 kHz ticks (rounded toward zero, saturating).
pub fn ticks(secs: f64) -> i64 {
    (secs * HZ as f64) as i64
}

/// `value` on a clock of `rate` Hz, in 90 kHz ticks (exact integer arithmetic,
/// saturating; a rate of 0 is treated as 1).
pub fn rescale(value: i64, rate: u32) -> i64 {
    let v = i128::from(value) * i128::from(HZ) / i128::from(rate.max(1));
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// A stream's media clock: seconds since its first timestamp (the origin).
///
/// The origin is the first timestamp given to [`MediaClock::start`]; before one is
/// set, a timestamp is its own origin (0 s), so nothing before the first picture or
/// sound is ever at a negative or arbitrary time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaClock {
    origin: Option<i64>,
}

impl MediaClock {
    /// Sets the origin if none is set yet; returns it.
    pub fn start(&mut self, pts: i64) -> i64 {
        *self.origin.get_or_insert(pts)
    }

    /// The origin, once set.
    pub fn origin(&self) -> Option<i64> {
        self.origin
    }

    /// Media seconds of `pts` (0 before the origin is set).
    pub fn secs(&self, pts: i64) -> f64 {
        secs(pts - self.origin.unwrap_or(pts))
    }

    /// Forgets the origin (a new program starts the clock again).
    pub fn reset(&mut self) {
        self.origin = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        assert_eq!(secs(90_000), 1.0);
        assert_eq!(ticks(2.5), 225_000);
        assert_eq!(rescale(48_000, 48_000), 90_000);
        assert_eq!(rescale(1, 0), 90_000);
        assert_eq!(rescale(i64::MAX, 1), i64::MAX);
    }

    #[test]
    fn the_clock_starts_at_its_first_timestamp() {
        let mut c = MediaClock::default();
        assert_eq!(c.secs(123), 0.0);
        assert_eq!(c.start(9_000), 9_000);
        assert_eq!(c.start(99_000), 9_000);
        assert_eq!(c.secs(99_000), 1.0);
        c.reset();
        assert_eq!(c.origin(), None);
    }
}
