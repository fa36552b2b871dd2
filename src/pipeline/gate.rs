//! Box-wide admission of `auto`'s syntax check.
//!
//! Each live `auto` stream sheds its syntax check when its own queue backs up
//! (`level::LevelControl::backlog`), and takes it back after a drained wait. Alone,
//! that is blind to the box: 64 streams starting together all make a parse-only
//! decoder, overload the box, shed, wait, and take them back in the same second. The
//! gate is the box's side of the decision: a stream (re)starts its check only while the
//! process uses less than [`ADMIT_BELOW`] of the CPUs it may run on, and at most
//! [`RATE_PER_S`] checks per second start across the process (after a burst of
//! [`BURST`]), so the load a new check adds is seen before the next one starts.
//! Shedding stays per stream and immediate; only coming back is gated.
//!
//! Boundaries: [`GateCore`] is pure (time and CPU seconds come in as arguments; unit
//! tests drive it); [`try_admit`] feeds it the monotonic clock and the process's CPU
//! time, behind one process-wide mutex taken only when a stream asks.

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Share of the process's CPUs (0–1) at or above which no check starts.
pub const ADMIT_BELOW: f64 = 0.7;
/// Checks that may start at once (a few streams starting together need no wait).
pub const BURST: f64 = 4.0;
/// Checks that may start per second, process-wide, after the burst.
pub const RATE_PER_S: f64 = 1.0;
/// Seconds between two CPU samples (the utilisation is the mean over that window).
pub const SAMPLE_S: f64 = 1.0;

/// The gate's counters (agent stats `check_gate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GateStats {
    /// Checks started or restored.
    pub admitted: u64,
    /// Requests refused because the box was busy or the rate was spent (a waiting
    /// stream asks again on its next packet; each refusal is counted).
    pub refused: u64,
    /// The process's CPU use at the last sample, as a share of its CPUs (0–1).
    pub cpu: f64,
}

/// The admission state (pure). See the module docs.
#[derive(Debug, Clone, Default)]
pub struct GateCore {
    /// The last CPU sample: (monotonic s, process CPU s).
    sample: Option<(f64, f64)>,
    tokens: f64,
    refilled_at: Option<f64>,
    pub stats: GateStats,
}

impl GateCore {
    /// May a check start at monotonic time `now` (s), the process having used `cpu`
    /// CPU seconds so far on `cores` CPUs? Takes a token when it says yes.
    pub fn try_admit(&mut self, now: f64, cpu: f64, cores: f64) -> bool {
        match self.sample {
            None => self.sample = Some((now, cpu)),
            Some((t, c)) if now - t >= SAMPLE_S => {
                self.stats.cpu = ((cpu - c) / ((now - t) * cores.max(1.0))).max(0.0);
                self.sample = Some((now, cpu));
            }
            Some(_) => {}
        }
        let last = *self.refilled_at.get_or_insert(now - BURST / RATE_PER_S);
        self.tokens = (self.tokens + (now - last).max(0.0) * RATE_PER_S).min(BURST);
        self.refilled_at = Some(now);
        if self.stats.cpu < ADMIT_BELOW && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.stats.admitted += 1;
            true
        } else {
            self.stats.refused += 1;
            false
        }
    }
}

static GATE: Mutex<Option<(Instant, GateCore)>> = Mutex::new(None);

/// The process-wide gate: may one more syntax check start now?
pub fn try_admit() -> bool {
    if crate::fault::fault("box_busy") {
        if let Ok(mut g) = GATE.lock() {
            g.get_or_insert_with(|| (Instant::now(), GateCore::default()))
                .1
                .stats
                .refused += 1;
        }
        return false;
    }
    let cpu = process_cpu_seconds();
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let Ok(mut g) = GATE.lock() else {
        // A panicked holder cannot have left the counters half-written in a way that
        // matters more than watching: admit.
        return true;
    };
    let (origin, core) = g.get_or_insert_with(|| (Instant::now(), GateCore::default()));
    let now = origin.elapsed().as_secs_f64();
    core.try_admit(now, cpu, cores)
}

/// The gate's counters.
pub fn stats() -> GateStats {
    GATE.lock()
        .ok()
        .and_then(|g| g.as_ref().map(|(_, c)| c.stats))
        .unwrap_or_default()
}

/// CPU seconds this process has used (all threads).
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a valid, owned out-param.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_starts_at_once_then_one_check_per_second() {
        let mut g = GateCore::default();
        let admitted = (0..10).filter(|_| g.try_admit(0.0, 0.0, 2.0)).count();
        assert_eq!(admitted, BURST as usize);
        assert!(!g.try_admit(0.5, 0.0, 2.0));
        assert!(g.try_admit(1.0, 0.0, 2.0));
        assert!(!g.try_admit(1.2, 0.0, 2.0));
        // Idle for a minute: the burst is back, not sixty tokens.
        let later = (0..10).filter(|_| g.try_admit(61.0, 0.0, 2.0)).count();
        assert_eq!(later, BURST as usize);
        assert_eq!(g.stats.admitted, 2 * BURST as u64 + 1);
        assert_eq!(g.stats.refused, 6 + 1 + 1 + 6);
    }

    #[test]
    fn a_busy_box_admits_nothing_until_its_load_falls() {
        let mut g = GateCore::default();
        assert!(g.try_admit(0.0, 0.0, 2.0));
        // 1.6 of 2 cores over the next 2 s: 80% busy.
        assert!(!g.try_admit(2.0, 3.2, 2.0));
        assert!((g.stats.cpu - 0.8).abs() < 1e-9);
        // Still busy 10 s later with tokens to spare: refused.
        assert!(!g.try_admit(12.0, 3.2 + 16.0, 2.0));
        // The load falls to 50%: admitted.
        assert!(g.try_admit(14.0, 19.2 + 2.0, 2.0));
        assert!((g.stats.cpu - 0.5).abs() < 1e-9);
    }

    #[test]
    fn the_utilisation_is_sampled_over_a_second_at_least() {
        let mut g = GateCore::default();
        assert!(g.try_admit(0.0, 0.0, 1.0));
        // 0.3 CPU s in 0.4 s would read 75%, but the window is not a second yet.
        assert!(g.try_admit(0.4, 0.3, 1.0));
        assert_eq!(g.stats.cpu, 0.0);
        // Over the whole second it is 0.9 / 1.0: 90%.
        assert!(!g.try_admit(1.0, 0.9, 1.0));
        assert!((g.stats.cpu - 0.9).abs() < 1e-9);
    }

    #[test]
    fn the_process_clock_moves() {
        let a = process_cpu_seconds();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_seconds() > a);
        let before = stats();
        try_admit();
        let after = stats();
        assert_eq!(
            after.admitted + after.refused,
            before.admitted + before.refused + 1
        );
    }
}
