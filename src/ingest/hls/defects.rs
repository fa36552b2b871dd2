//! The delivery defects only HLS shows, opened, updated and closed in the sink:
//!
//! * `playlist_stale` — a live playlist's last media sequence number did not advance for
//!   more than `stale_factor` × target duration. Wall clock (session time).
//! * `slow_download` — segments take longer to fetch than they play. Wall clock.
//! * `segment_error` — a segment (or its init section) could not be fetched or read; closed
//!   by the next good segment. About a piece of media: timed by the segment's place on the
//!   media timeline ([`super::playlist::SegmentClock`]), with the session times as metrics.
//!   A failed playlist reload (live) has no media: session time.
//! * `ts_error` — TR 101 290 priority 1 on the segments' transport stream
//!   ([`crate::detect::transport`]), judged per segment on the media timeline: it opens at
//!   the start of the first damaged segment and closes once `clear_after` seconds of media
//!   came clean, spanning the damaged segments.
//!
//! Owns only the bookkeeping of these kinds (counts, worst ratios, the transport
//! detector); it fetches and demuxes nothing and decides nothing about the session
//! (`stall` and `source_down` are the sink's and the scheduler's).

use std::time::{Duration, Instant};

use m3u8_rs::MediaPlaylist;
use url::Url;

use super::display_url;
use super::playlist::is_stale;
use crate::defect::{put, round_to, DefectKind, MediaSpan, Metric, Metrics, Phase};
use crate::detect::transport::{transport_errors_grew, TsErrorDetector};
use crate::ingest::sink::Sink;
use crate::ingest::ts::TsStats;

/// A segment's place on the media timeline: (start, end) in 90 kHz PTS.
pub(super) type Span = (i64, i64);

fn media(span: Span) -> MediaSpan {
    MediaSpan {
        start_pts: span.0,
        end_pts: Some(span.1),
    }
}

/// State of the HLS delivery defects of one source.
pub(super) struct Defects {
    /// Last media sequence number + 1 of the live playlist, and when it last changed.
    stale_seq: Option<u64>,
    changed_at: Instant,
    seg_errors: i64,
    slow_worst: f64,
    slow_segments: i64,
    ts_errors: TsErrorDetector,
    /// Transport counters after the last segment observed.
    ts_last: TsStats,
    /// Media time (seconds of PTS) of the last segment observed: the time of a segment
    /// without a place on the timeline.
    ts_t: f64,
}

impl Defects {
    /// `clear_after`: seconds of clean media that end a `ts_error`.
    pub(super) fn new(clear_after: f64) -> Self {
        Defects {
            stale_seq: None,
            changed_at: Instant::now(),
            seg_errors: 0,
            slow_worst: 0.0,
            slow_segments: 0,
            ts_errors: TsErrorDetector::new(clear_after),
            ts_last: TsStats::default(),
            ts_t: 0.0,
        }
    }

    /// Opens, updates or closes `playlist_stale` after a live playlist load.
    pub(super) async fn observe_stale(
        &mut self,
        sink: &mut Sink,
        pl: &MediaPlaylist,
        target: f64,
        stale_factor: f64,
        shown: &str,
    ) {
        let end_seq = pl.media_sequence.saturating_add(pl.segments.len() as u64);
        if self.stale_seq != Some(end_seq) {
            self.stale_seq = Some(end_seq);
            self.changed_at = Instant::now();
            if sink.is_open(DefectKind::PlaylistStale) {
                sink.close(DefectKind::PlaylistStale, Metrics::new()).await;
            }
            return;
        }
        if pl.end_list {
            return;
        }
        let unchanged = self.changed_at.elapsed().as_secs_f64();
        if !is_stale(unchanged, target, stale_factor) {
            return;
        }
        let mut m = Metrics::new();
        put(
            &mut m,
            "seconds_unchanged",
            Metric::Num(round_to(unchanged, 3)),
        );
        put(&mut m, "target_duration", Metric::Num(target));
        put(
            &mut m,
            "media_sequence",
            Metric::Int(i64::try_from(pl.media_sequence).unwrap_or(i64::MAX)),
        );
        if sink.is_open(DefectKind::PlaylistStale) {
            sink.update(DefectKind::PlaylistStale, |mm| *mm = m);
        } else {
            tracing::warn!(
                url = shown,
                unchanged_s = unchanged,
                "the live playlist stopped advancing"
            );
            let onset = (sink.now_s() - unchanged).max(0.0);
            sink.open_at(DefectKind::PlaylistStale, onset, m).await;
        }
    }

    /// Opens (or updates) `segment_error`: a playlist, init section or segment at `url`
    /// failed. `span`: the segment's place on the media timeline (None for a playlist,
    /// or before the first timestamp).
    pub(super) async fn segment_failed(
        &mut self,
        sink: &mut Sink,
        url: &Url,
        reason: &str,
        status: Option<u16>,
        span: Option<Span>,
    ) {
        self.seg_errors += 1;
        let shown = display_url(url);
        tracing::warn!(url = %shown, reason, "HLS fetch failed");
        let mut m = Metrics::new();
        put(&mut m, "reason", Metric::Text(reason.into()));
        put(&mut m, "url", Metric::Text(shown.into()));
        if let Some(s) = status {
            put(&mut m, "status", Metric::Int(i64::from(s)));
        }
        put(&mut m, "errors", Metric::Int(self.seg_errors));
        match span {
            Some(s) => sink.open_media(DefectKind::SegmentError, m, media(s)).await,
            None => sink.open(DefectKind::SegmentError, m).await,
        }
    }

    /// A segment's media was delivered: an open `segment_error` ends.
    pub(super) async fn segment_ok(&mut self, sink: &mut Sink) {
        if sink.is_open(DefectKind::SegmentError) {
            sink.close(DefectKind::SegmentError, Metrics::new()).await;
        }
        self.seg_errors = 0;
    }

    /// `slow_download`: opened while segments take longer to fetch than they play.
    pub(super) async fn slow_check(
        &mut self,
        sink: &mut Sink,
        took: Duration,
        dur: f64,
        url: &Url,
    ) {
        let ratio = took.as_secs_f64() / dur;
        if ratio > 1.0 {
            self.slow_worst = self.slow_worst.max(ratio);
            self.slow_segments += 1;
            let mut m = Metrics::new();
            put(&mut m, "ratio", Metric::Num(round_to(self.slow_worst, 2)));
            put(
                &mut m,
                "fetch_s",
                Metric::Num(round_to(took.as_secs_f64(), 3)),
            );
            put(&mut m, "duration_s", Metric::Num(round_to(dur, 3)));
            put(&mut m, "segments", Metric::Int(self.slow_segments));
            put(&mut m, "url", Metric::Text(display_url(url).into()));
            sink.open(DefectKind::SlowDownload, m).await;
        } else if sink.is_open(DefectKind::SlowDownload) {
            sink.close(DefectKind::SlowDownload, Metrics::new()).await;
            self.slow_worst = 0.0;
            self.slow_segments = 0;
        }
    }

    /// `ts_error` after a readable TS segment: `total` the transport counters after it,
    /// `span` its place on the media timeline.
    pub(super) async fn transport(
        &mut self,
        sink: &mut Sink,
        total: &TsStats,
        span: Option<Span>,
        shown: &str,
    ) {
        let grew = transport_errors_grew(&self.ts_last, total);
        self.ts_last = *total;
        if let Some((start, _)) = span {
            self.ts_t = crate::timebase::secs(start);
        }
        match self.ts_errors.observe(self.ts_t, total) {
            Some(t) if t.phase == Phase::Start => {
                tracing::warn!(url = shown, "transport stream errors");
                match span {
                    Some(s) => {
                        sink.open_media(DefectKind::TsError, t.metrics, media(s))
                            .await
                    }
                    None => sink.open(DefectKind::TsError, t.metrics).await,
                }
            }
            // Clean for long enough: the span ends with the last damaged segment.
            Some(t) => sink.close(DefectKind::TsError, t.metrics).await,
            None => {
                let m = self.ts_errors.metrics();
                sink.update(DefectKind::TsError, |mm| *mm = m);
                if let (true, Some((_, end))) = (grew, span) {
                    sink.extend_media(DefectKind::TsError, end);
                }
            }
        }
    }
}
