//! A/V sync: which source feeds `av_desync`, and the detector itself.
//!
//! Two sources measure the audio/video offset: the PTS-at-arrival estimate (audio PTS
//! against video DTS as packets arrive: TS, HLS) and, once the first one arrives, RTCP
//! sender reports (RTSP), which then alone feed the detector. After a reconnect the
//! new session's timelines owe nothing to the old ones: the detector learns a new
//! baseline. Owns the estimator and the detector; reads the media clock, never sets
//! it; never emits events: transitions go to the analyzer's one list.

use crate::config::AvSyncConfig;
use crate::defect::Transition;
use crate::detect::avsync::{AvSyncDetector, PtsOffsetEstimator, SyncSource};
use crate::ingest::Track;
use crate::timebase::MediaClock;

/// A/V offset sources and the `av_desync` detector. See the module docs.
pub(super) struct AvSync {
    cfg: AvSyncConfig,
    /// `av_desync` from audio PTS against video DTS at arrival (TS, HLS) ...
    est: PtsOffsetEstimator,
    /// ... or from RTCP sender reports once the first one arrives (RTSP).
    detector: AvSyncDetector,
}

impl AvSync {
    pub fn new(cfg: &AvSyncConfig) -> Self {
        AvSync {
            cfg: cfg.clone(),
            est: PtsOffsetEstimator::new(cfg.window),
            detector: AvSyncDetector::new(cfg, SyncSource::Pts),
        }
    }

    /// Tracks may have changed: the arrival statistics start over (the baseline stays).
    pub fn tracks_changed(&mut self) {
        self.est.reset();
    }

    /// Feeds the PTS-at-arrival A/V offset estimate (unless sender reports took over):
    /// `ts` is a video packet's DTS, or the end time of an audio packet's samples.
    pub fn arrival(
        &mut self,
        track: Track,
        ts: i64,
        clock: &MediaClock,
        found: &mut Vec<Transition>,
    ) {
        if self.detector.source() != SyncSource::Pts {
            return;
        }
        let t = clock.secs(ts);
        match track {
            Track::Video => self.est.video(t),
            Track::Audio => {
                if let Some((at, offset)) = self.est.audio(t) {
                    tracing::trace!(at, offset, "A/V offset estimate");
                    found.extend(self.detector.observe(at, offset));
                }
            }
        }
    }

    /// An A/V offset from RTCP sender reports at media time `t`: from now on they alone
    /// feed `av_desync` (exact, where the PTS-at-arrival estimate is a statistic).
    pub fn sender_report(&mut self, t: f64, offset_s: f64, found: &mut Vec<Transition>) {
        if self.detector.source() != SyncSource::RtcpSr {
            found.extend(self.detector.finish(t));
            self.detector = AvSyncDetector::new(&self.cfg, SyncSource::RtcpSr);
        }
        found.extend(self.detector.observe(t, offset_s));
    }

    /// A new session (after `source_down`) has new RTP timelines whose A/V offset owes
    /// nothing to the old one: an open `av_desync` ends at `t` and the detector learns
    /// its baseline again (from the same source).
    pub fn new_baseline(&mut self, t: f64, found: &mut Vec<Transition>) {
        found.extend(self.detector.finish(t));
        self.detector = AvSyncDetector::new(&self.cfg, self.detector.source());
        self.est.reset();
    }

    /// Closes an open `av_desync` at `t`.
    pub fn finish(&mut self, t: f64, found: &mut Vec<Transition>) {
        found.extend(self.detector.finish(t));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::DetectConfig;
    use crate::defect::{DefectKind, EndReason};
    use crate::ingest::IngestMsg;
    use crate::pipeline::Analyzer;

    #[test]
    fn sender_report_offsets_drive_av_desync() {
        let mut a = Analyzer::new("p", "s", DetectConfig::default()).unwrap();
        let mut events = vec![];
        // One report per second; audio 250 ms behind from 4 s to 8 s; the origin is
        // the first timestamp seen (here the first report's).
        for i in 0..12i64 {
            let offset_s = if (4..8).contains(&i) { -0.24 } else { 0.01 };
            a.handle(
                IngestMsg::AvSync {
                    pts: 90_000 + i * 90_000,
                    offset_s,
                },
                &mut |e| events.push(e),
            );
        }
        a.handle(IngestMsg::End(EndReason::EndOfInput), &mut |e| {
            events.push(e)
        });
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].kind, DefectKind::AvDesync);
        assert_eq!((events[1].start_s, events[1].end_s), (4.0, Some(8.0)));
        assert_eq!(events[1].metrics["source"], "rtcp_sr");
        assert_eq!(events[1].metrics["offset_ms"], -250.0);
        assert_eq!(events[1].reason, None, "it ended by itself");
    }
}
