//! Defect thumbnails: which picture the start of each picture defect shows.
//!
//! Only for streams that want thumbnails (the decoder then hands each picture's planes
//! out with its summary, valid during that call). `black` and `freeze` show the picture
//! that confirmed them (it is black, or frozen on the onset's picture, by definition);
//! `corruption` shows the worst picture seen since the detector left idle (the highest
//! block-edge ratio) or, when a decode error confirmed it before any picture came out,
//! the last picture kept (refreshed once per media second: the picture at the onset,
//! within a second). A picture is downscaled ([`Preview`]) only when it is needed: a
//! start, a new worst picture, or the once-a-second refresh, so a stream with nothing
//! to report pays one downscale per second. The JPEG is encoded once, when the start is
//! found, and waits here for the facade to attach it to the start's event.
//!
//! Bounded: two previews (the last kept and the worst, at most 300 KiB each) and at
//! most [`READY_MAX`] JPEGs waiting (the oldest goes first, counted; the facade takes
//! each one within the same packet, so the list is normally empty).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::decode::preview::{Planes, Preview};
use crate::decode::Thumb;
use crate::defect::{DefectKind, Phase, Transition};

/// JPEGs waiting for their events.
pub const READY_MAX: usize = 4;
/// Media seconds between two refreshes of the last picture kept.
pub const KEEP_EVERY_S: f64 = 1.0;

/// Counters of the thumbnails of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ShotStats {
    /// JPEGs made.
    pub made: u64,
    /// Starts that got no thumbnail: no picture to show (the stream had decoded none),
    /// or encoding failed.
    pub missing: u64,
    /// JPEGs dropped unclaimed (the oldest, when [`READY_MAX`] were waiting).
    pub dropped: u64,
    /// Time spent downscaling and encoding (ns).
    pub encode_ns: u64,
}

/// See the module docs.
pub(super) struct Shots {
    /// The last picture kept (every [`KEEP_EVERY_S`], and each picture shown by a start).
    last: Preview,
    last_t: Option<f64>,
    worst: Preview,
    worst_score: Option<f32>,
    ready: heapless::Vec<(DefectKind, Arc<[u8]>), READY_MAX>,
    pub stats: ShotStats,
}

impl Shots {
    pub fn new() -> Self {
        Shots {
            last: Preview::new(),
            last_t: None,
            worst: Preview::new(),
            worst_score: None,
            ready: heapless::Vec::new(),
            stats: ShotStats::default(),
        }
    }

    /// One decoded picture at media time `t` (`planes`, when the decoder handed them
    /// out), the transitions the detectors found on it, and whether `corruption` is
    /// pending or open after it.
    pub fn picture(
        &mut self,
        th: &Thumb,
        t: f64,
        planes: Option<Planes<'_>>,
        corrupting: bool,
        found: &[Option<Transition>],
    ) {
        let t0 = Instant::now();
        let starts = || found.iter().flatten().filter(|t| t.phase == Phase::Start);
        let shown = starts().any(|t| {
            matches!(
                t.kind,
                DefectKind::Black
                    | DefectKind::Freeze
                    | DefectKind::Uniform
                    | DefectKind::TestPattern
                    | DefectKind::Blur
            )
        }) || (starts().any(|t| t.kind == DefectKind::Corruption)
            && self.worst().is_none());
        let due = self.last_t.is_none_or(|l| t - l >= KEEP_EVERY_S || t < l);
        if let Some(p) = planes {
            if shown || due {
                self.last.fill(p, th.full_range);
                self.last.pts = th.pts;
                self.last_t = Some(t);
            }
            if !corrupting {
                self.worst_score = None;
            } else if self.worst_score.is_none_or(|s| th.edge_ratio > s) {
                self.worst.fill(p, th.full_range);
                self.worst.pts = th.pts;
                self.worst_score = Some(th.edge_ratio);
            }
        } else if !corrupting {
            self.worst_score = None;
        }
        self.stats.encode_ns += t0.elapsed().as_nanos() as u64;
        for t in starts() {
            let src = match t.kind {
                DefectKind::Black
                | DefectKind::Freeze
                | DefectKind::Uniform
                | DefectKind::TestPattern
                | DefectKind::Blur => self.last_shown(planes.is_some()),
                DefectKind::Corruption => self.worst().or(self.last_shown(planes.is_some())),
                _ => continue,
            };
            let jpeg = src.map(encode);
            self.store(t.kind, jpeg);
        }
    }

    /// A transition found on an access unit that did not decode (a decode error
    /// confirmed `corruption`): the worst picture seen shows it or, when no damaged
    /// picture came out, the last picture kept (the picture at the onset, within a
    /// second: what the viewer was left with).
    pub fn no_picture(&mut self, t: &Transition) {
        if t.phase == Phase::Start && t.kind == DefectKind::Corruption {
            let last = Some(&self.last).filter(|l| !l.is_empty());
            let jpeg = self.worst().or(last).map(encode);
            self.store(t.kind, jpeg);
        }
    }

    /// The JPEG made for the last start of `kind`, if any.
    pub fn take(&mut self, kind: DefectKind) -> Option<Arc<[u8]>> {
        let i = self.ready.iter().position(|(k, _)| *k == kind)?;
        Some(self.ready.remove(i).1)
    }

    /// The detectors will see an earlier GOP again: the worst picture is looked for
    /// afresh.
    pub fn rewind(&mut self) {
        self.worst_score = None;
    }

    /// The picture just filled into `last` (only when this picture had planes).
    fn last_shown(&self, had_planes: bool) -> Option<&Preview> {
        Some(&self.last).filter(|l| had_planes && !l.is_empty())
    }

    fn worst(&self) -> Option<&Preview> {
        Some(&self.worst).filter(|w| self.worst_score.is_some() && !w.is_empty())
    }

    fn store(&mut self, kind: DefectKind, jpeg: Option<(Option<Vec<u8>>, u64)>) {
        let Some((jpeg, ns)) = jpeg else {
            self.stats.missing += 1;
            return;
        };
        self.stats.encode_ns += ns;
        let Some(jpeg) = jpeg else {
            self.stats.missing += 1;
            return;
        };
        if self.ready.is_full() {
            self.ready.remove(0);
            self.stats.dropped += 1;
        }
        // Cannot fail: a slot was just freed.
        let _ = self.ready.push((kind, jpeg.into()));
        self.stats.made += 1;
    }
}

/// Encodes a preview: (the JPEG, or None when encoding failed; nanoseconds spent).
fn encode(p: &Preview) -> (Option<Vec<u8>>, u64) {
    let t0 = Instant::now();
    let jpeg = p
        .jpeg()
        .map_err(|e| tracing::warn!(error = %e, "thumbnail not made"))
        .ok();
    (jpeg, t0.elapsed().as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::Metrics;

    /// A flat 64 × 36 picture of this luma (full range, neutral chroma).
    struct Pic(Vec<u8>, Vec<u8>);

    fn pic(luma: u8) -> Pic {
        Pic(vec![luma; 64 * 36], vec![128u8; 32 * 18])
    }

    impl Pic {
        fn planes(&self) -> Option<Planes<'_>> {
            Some(Planes {
                y: &self.0,
                u: &self.1,
                v: &self.1,
                y_stride: 64,
                c_stride: 32,
                width: 64,
                height: 36,
            })
        }
    }

    fn start(kind: DefectKind) -> Option<Transition> {
        Some(Transition {
            kind,
            phase: Phase::Start,
            start_s: 1.0,
            end_s: None,
            metrics: Metrics::new(),
            slot: 0,
            media: None,
        })
    }

    fn mean_luma(jpeg: &[u8]) -> f64 {
        let mut d = jpeg_decoder::Decoder::new(jpeg);
        let px = d.decode().unwrap();
        px.iter().map(|&v| f64::from(v)).sum::<f64>() / px.len() as f64
    }

    fn thumb(edge_ratio: f32) -> Thumb {
        Thumb {
            edge_ratio,
            full_range: true,
            ..Thumb::default()
        }
    }

    #[test]
    fn black_and_freeze_show_the_confirming_picture() {
        let mut s = Shots::new();
        let (dark, bright) = (pic(20), pic(200));
        s.picture(
            &thumb(1.0),
            0.0,
            dark.planes(),
            false,
            &[start(DefectKind::Black), None],
        );
        // 40 ms later: not a refresh, but a start is always shown as it is.
        s.picture(
            &thumb(1.0),
            0.04,
            bright.planes(),
            false,
            &[start(DefectKind::Freeze)],
        );
        assert!(mean_luma(&s.take(DefectKind::Black).unwrap()) < 40.0);
        assert!(mean_luma(&s.take(DefectKind::Freeze).unwrap()) > 180.0);
        assert!(s.take(DefectKind::Black).is_none(), "taken once");
        assert_eq!(s.stats.made, 2);
        // No planes (previews off): nothing to show, counted.
        s.picture(&thumb(1.0), 0.08, None, false, &[start(DefectKind::Black)]);
        assert!(s.take(DefectKind::Black).is_none());
        assert_eq!(s.stats.missing, 1);
    }

    #[test]
    fn corruption_shows_the_worst_picture_seen_while_it_was_pending() {
        let mut s = Shots::new();
        let (a, b, c, d) = (pic(250), pic(60), pic(120), pic(180));
        // Before the corruption: not a candidate.
        s.picture(&thumb(9.0), 0.0, a.planes(), false, &[]);
        s.picture(&thumb(2.0), 0.04, b.planes(), true, &[]);
        s.picture(&thumb(5.0), 0.08, c.planes(), true, &[]);
        s.picture(
            &thumb(3.0),
            0.12,
            d.planes(),
            true,
            &[start(DefectKind::Corruption)],
        );
        let l = mean_luma(&s.take(DefectKind::Corruption).unwrap());
        assert!((l - 120.0).abs() < 10.0, "{l}");
    }

    #[test]
    fn a_corruption_confirmed_by_a_decode_error_shows_the_picture_kept_last() {
        let mut s = Shots::new();
        let err = start(DefectKind::Corruption).unwrap();
        // Nothing decoded yet: nothing to show.
        s.no_picture(&err);
        assert!(s.take(DefectKind::Corruption).is_none());
        // The last picture is kept once per media second: at 0 s (90), not at 0.5 s
        // (30), again at 1.0 s (150).
        let (p90, p30, p150) = (pic(90), pic(30), pic(150));
        s.picture(&thumb(1.0), 0.0, p90.planes(), false, &[]);
        s.picture(&thumb(1.0), 0.5, p30.planes(), false, &[]);
        s.no_picture(&err);
        let l = mean_luma(&s.take(DefectKind::Corruption).unwrap());
        assert!((l - 90.0).abs() < 10.0, "{l}");
        s.picture(&thumb(1.0), 1.0, p150.planes(), false, &[]);
        s.no_picture(&err);
        let l = mean_luma(&s.take(DefectKind::Corruption).unwrap());
        assert!((l - 150.0).abs() < 10.0, "{l}");
        assert_eq!((s.stats.made, s.stats.missing), (2, 1));
    }

    #[test]
    fn unclaimed_jpegs_are_bounded_and_counted() {
        let mut s = Shots::new();
        let p = pic(30);
        for i in 0..READY_MAX + 2 {
            s.picture(
                &thumb(1.0),
                i as f64,
                p.planes(),
                false,
                &[start(DefectKind::Black)],
            );
        }
        assert_eq!(s.stats.dropped, 2);
        assert_eq!(s.ready.len(), READY_MAX);
        // Other kinds and ends make nothing.
        let mut end = start(DefectKind::Black);
        if let Some(t) = end.as_mut() {
            t.phase = Phase::End;
        }
        s.picture(
            &thumb(1.0),
            9.0,
            p.planes(),
            false,
            &[end, start(DefectKind::Silence)],
        );
        assert_eq!(s.stats.made, READY_MAX as u64 + 2);
    }
}
