//! `ts_error`: TR 101 290 priority-1 checks on a transport stream, as an interval.
//!
//! Fed with the demuxer's cumulative counters after each chunk of input; any growth of
//! sync losses, continuity-counter errors, PAT or PMT gaps (> 0.5 s) marks the moment
//! as erroneous. The interval ends once the transport stayed clean for `clear_after`
//! seconds. Times are those of the caller's clock (media time for files, the session
//! clock for live sources).

use super::{transition, Hysteresis};
use crate::defect::{put, DefectKind, Metric, Metrics, Transition};
use crate::ingest::ts::TsStats;

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
        let grew = s.sync_losses > l.sync_losses
            || s.cc_errors > l.cc_errors
            || s.pat_missing > l.pat_missing
            || s.pmt_missing > l.pmt_missing
            || s.pes_overflows > l.pes_overflows;
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

    /// Counts within the current interval.
    fn metrics(&self) -> Metrics {
        let (s, o) = (self.last, self.at_onset);
        let mut m = Metrics::new();
        put(
            &mut m,
            "cc_errors",
            Metric::Int((s.cc_errors - o.cc_errors) as i64),
        );
        put(
            &mut m,
            "sync_losses",
            Metric::Int((s.sync_losses - o.sync_losses) as i64),
        );
        put(
            &mut m,
            "pat_missing",
            Metric::Int((s.pat_missing - o.pat_missing) as i64),
        );
        put(
            &mut m,
            "pmt_missing",
            Metric::Int((s.pmt_missing - o.pmt_missing) as i64),
        );
        put(
            &mut m,
            "tei_packets",
            Metric::Int((s.tei_packets - o.tei_packets) as i64),
        );
        put(
            &mut m,
            "psi_errors",
            Metric::Int((s.psi_errors - o.psi_errors) as i64),
        );
        // Access units above the stream's memory budget (`ingest::pool`), dropped.
        put(
            &mut m,
            "oversized_pes",
            Metric::Int(s.pes_overflows.saturating_sub(o.pes_overflows) as i64),
        );
        m
    }
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
