//! `ts_error`: TR 101 290 priority-1 checks on a transport stream, as an interval.
//!
//! Fed with the demuxer's cumulative counters after each chunk of input; any growth of
//! sync losses, continuity-counter errors, PAT or PMT gaps (> 0.5 s) marks the moment
//! as erroneous. The interval ends once the transport stayed clean for `clear_after`
//! seconds. Times are those of the caller's clock: media time (the transport's own clock
//! for files, the segments' media positions for HLS). Pure bookkeeping: it reads no
//! input and sends nothing; callers deliver its transitions.
//!
//! Also the one definition of the interval's evidence ([`ts_error_metrics`]) and of
//! "the transport got worse" ([`transport_errors_grew`]), used by every source that
//! reports `ts_error` from [`TsStats`] (files here, HLS in `ingest::hls::defects`).

use super::{transition, Hysteresis};
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};

/// Transport counters, cumulative since the demuxer was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TsStats {
    /// Bytes fed in.
    pub bytes: u64,
    /// Transport packets parsed (sync byte found).
    pub packets: u64,
    /// Times the 0x47 sync pattern was lost and searched for again.
    pub sync_losses: u64,
    /// Bytes skipped while searching for sync.
    pub skipped_bytes: u64,
    /// Continuity-counter errors on any PID with payload.
    pub cc_errors: u64,
    /// Packets with the transport_error_indicator set.
    pub tei_packets: u64,
    /// PAT sections seen.
    pub pat_count: u64,
    /// PMT sections seen (for the selected program).
    pub pmt_count: u64,
    /// PES packets dropped because they exceeded the demuxer's limits (`TsLimits`).
    pub pes_overflows: u64,
    /// PES packets whose header could not be parsed.
    pub pes_header_errors: u64,
    /// PSI sections that failed their length or CRC checks.
    pub psi_errors: u64,
    /// Bytes of an incomplete last packet (the input was cut mid-packet).
    pub truncated_bytes: u64,
    /// Video PES dropped at the end because the input was cut inside them.
    pub truncated_pes: u64,
    /// Times more than 0.5 s of media passed without a PAT (TR 101 290 1.3).
    pub pat_missing: u64,
    /// Times more than 0.5 s of media passed without the PMT (TR 101 290 1.5).
    pub pmt_missing: u64,
}

/// The ts_error detector.
#[derive(Debug, Clone)]
pub struct TsErrorDetector {
    hyst: Hysteresis,
    last: TsStats,
    /// Counters at the onset of the current interval.
    at_onset: TsStats,
}

impl TsErrorDetector {
    pub fn new(clear_after: f64) -> Self {
        TsErrorDetector {
            hyst: Hysteresis::new(0.0, clear_after),
            last: TsStats::default(),
            at_onset: TsStats::default(),
        }
    }

    /// Feeds the cumulative counters at time `t`.
    pub fn observe(&mut self, t: f64, s: &TsStats) -> Option<Transition> {
        let l = self.last;
        let grew = transport_errors_grew(&l, s);
        if grew && self.hyst.onset().is_none() {
            self.at_onset = l;
        }
        self.last = *s;
        let edge = self.hyst.step(t, grew)?;
        Some(transition(DefectKind::TsError, edge, self.metrics()))
    }

    /// End of input.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let edge = self.hyst.finish(t)?;
        Some(transition(DefectKind::TsError, edge, self.metrics()))
    }

    /// Counts within the current interval (since its onset).
    pub fn metrics(&self) -> Metrics {
        ts_error_metrics(&self.last, &self.at_onset)
    }
}

/// Whether the counters `now` show new priority-1 errors since `before`: sync losses,
/// continuity-counter errors, PAT or PMT gaps, access units dropped as oversized.
pub fn transport_errors_grew(before: &TsStats, now: &TsStats) -> bool {
    now.sync_losses > before.sync_losses
        || now.cc_errors > before.cc_errors
        || now.pat_missing > before.pat_missing
        || now.pmt_missing > before.pmt_missing
        || now.pes_overflows > before.pes_overflows
}

/// `ts_error` evidence: the counts between the cumulative counters `onset` and `now`.
pub fn ts_error_metrics(now: &TsStats, onset: &TsStats) -> Metrics {
    let mut m = Metrics::new();
    for (name, a, b) in [
        ("cc_errors", now.cc_errors, onset.cc_errors),
        ("sync_losses", now.sync_losses, onset.sync_losses),
        ("pat_missing", now.pat_missing, onset.pat_missing),
        ("pmt_missing", now.pmt_missing, onset.pmt_missing),
        ("tei_packets", now.tei_packets, onset.tei_packets),
        ("psi_errors", now.psi_errors, onset.psi_errors),
        // Access units above the stream's memory budget (`ingest::pool`), dropped.
        ("oversized_pes", now.pes_overflows, onset.pes_overflows),
    ] {
        put(&mut m, name, Metric::Int(a.saturating_sub(b) as i64));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::Phase;

    #[test]
    fn errors_open_and_clean_time_closes() {
        let mut d = TsErrorDetector::new(2.0);
        let mut s = TsStats::default();
        assert!(d.observe(0.5, &s).is_none());
        s.cc_errors = 3;
        let start = d.observe(1.0, &s).unwrap();
        assert_eq!((start.phase, start.start_s), (Phase::Start, 1.0));
        s.cc_errors = 5;
        assert!(d.observe(1.5, &s).is_none());
        assert!(d.observe(2.0, &s).is_none());
        assert!(d.observe(3.9, &s).is_none());
        let end = d.observe(4.1, &s).unwrap();
        assert_eq!(end.end_s, Some(2.0));
        assert!(end.metrics.contains(&("cc_errors", Metric::Int(5))));
        assert!(d.finish(5.0).is_none());
    }

    #[test]
    fn oversized_pes_are_transport_errors() {
        // A video PES above the stream's access-unit ceiling is dropped by the demuxer:
        // that is reported, not silent.
        let mut d = TsErrorDetector::new(1.0);
        let mut s = TsStats::default();
        assert!(d.observe(0.5, &s).is_none());
        s.pes_overflows = 2;
        let start = d.observe(1.0, &s).expect("ts_error starts");
        assert_eq!(
            (start.kind, start.phase),
            (DefectKind::TsError, Phase::Start)
        );
        assert!(d.observe(2.0, &s).is_none());
        let end = d.observe(3.5, &s).expect("clean for clear_after: ends");
        let n = end
            .metrics
            .iter()
            .find(|(k, _)| *k == "oversized_pes")
            .map(|(_, v)| v.clone());
        assert_eq!(n, Some(Metric::Int(2)), "{end:?}");
    }
}
