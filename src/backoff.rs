//! Capped exponential backoff with jitter, for every reconnect loop (sources and the
//! MQTT link). A leaf module.

use std::time::Duration;

/// Capped exponential backoff with jitter ("full jitter" on the upper half), so a fleet
/// of probes does not reconnect in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: f64,
    max: f64,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: f64, max: f64) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Backoff {
            initial: initial.max(0.01),
            max: max.max(initial.max(0.01)),
            attempt: 0,
            seed,
        }
    }

    /// Attempts so far since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The next delay: `initial × 2^attempt`, capped, then uniformly in [d/2, d].
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.initial * 2f64.powi(self.attempt.min(30) as i32);
        let d = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift: jitter needs no cryptographic quality.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac = (self.seed % 1000) as f64 / 1000.0;
        Duration::from_secs_f64(d * (0.5 + 0.5 * frac))
    }

    /// Media flows again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut b = Backoff::new(0.5, 8.0);
        let d: Vec<f64> = (0..8).map(|_| b.next_delay().as_secs_f64()).collect();
        assert!((0.25..=0.5).contains(&d[0]), "{d:?}");
        assert!((0.5..=1.0).contains(&d[1]), "{d:?}");
        assert!((2.0..=4.0).contains(&d[3]), "{d:?}");
        for x in &d[4..] {
            assert!((4.0..=8.0).contains(x), "capped: {d:?}");
        }
        assert_eq!(b.attempt(), 8);
        b.reset();
        assert!(b.next_delay().as_secs_f64() <= 0.5);
    }
}
