//! Defect thumbnails: which picture the start of each picture defect shows.
//!
//! Only for streams that want thumbnails (the decoder then hands a downscaled colour
//! [`Preview`] out with every picture). `black` and `freeze` show the picture that
//! confirmed them (it is black, or frozen on the onset's picture, by definition);
//! `corruption` shows the worst picture seen since the detector left idle (the highest
//! block-edge ratio). The JPEG is encoded once, when the start is found, and waits here
//! for the facade to attach it to the start's event.
//!
//! Bounded: one preview copy (the worst so far, at most 300 KiB) and at most
//! [`READY_MAX`] JPEGs waiting (the oldest goes first, counted; the facade takes each
//! one within the same packet, so the list is normally empty).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::decode::preview::Preview;
use crate::decode::Thumb;
use crate::defect::{DefectKind, Phase, Transition};

/// JPEGs waiting for their events.
pub const READY_MAX: usize = 4;

/// Counters of the thumbnails of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ShotStats {
    /// JPEGs made.
    pub made: u64,
    /// Starts that got no thumbnail: no picture to show (a decode error confirmed the
    /// defect before any picture), or encoding failed.
    pub missing: u64,
    /// JPEGs dropped unclaimed (the oldest, when [`READY_MAX`] were waiting).
    pub dropped: u64,
    /// Time spent encoding (ns).
    pub encode_ns: u64,
}

/// See the module docs.
pub(super) struct Shots {
    worst: Preview,
    worst_score: Option<f32>,
    ready: heapless::Vec<(DefectKind, Arc<[u8]>), READY_MAX>,
    pub stats: ShotStats,
}

impl Shots {
    pub fn new() -> Self {
        Shots {
            worst: Preview::new(),
            worst_score: None,
            ready: heapless::Vec::new(),
            stats: ShotStats::default(),
        }
    }

    /// One decoded picture (`preview`, when the decoder made one), the transitions the
    /// detectors found on it, and whether `corruption` is pending or open after it.
    pub fn picture(
        &mut self,
        th: &Thumb,
        preview: Option<&Preview>,
        corrupting: bool,
        found: &[Option<Transition>],
    ) {
        if !corrupting {
            self.worst_score = None;
        } else if let Some(p) = preview {
            if self.worst_score.is_none_or(|s| th.edge_ratio > s) {
                self.worst.copy_from(p);
                self.worst_score = Some(th.edge_ratio);
            }
        }
        for t in found.iter().flatten().filter(|t| t.phase == Phase::Start) {
            let src = match t.kind {
                DefectKind::Black | DefectKind::Freeze => preview,
                DefectKind::Corruption => self.worst().or(preview),
                _ => continue,
            };
            let jpeg = src.map(encode);
            self.store(t.kind, jpeg);
        }
    }

    /// A transition found on an access unit that did not decode (a decode error
    /// confirmed `corruption`): the worst picture seen shows it, or, when no picture
    /// came out since the damage began, `last`, the last picture decoded (the picture
    /// at the onset: what the viewer was left with).
    pub fn no_picture(&mut self, t: &Transition, last: Option<&Preview>) {
        if t.phase == Phase::Start && t.kind == DefectKind::Corruption {
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
    use crate::decode::preview::Planes;
    use crate::defect::Metrics;

    fn preview(luma: u8) -> Preview {
        let (y, c) = (vec![luma; 64 * 36], vec![128u8; 32 * 18]);
        let mut p = Preview::new();
        p.fill(
            Planes {
                y: &y,
                u: &c,
                v: &c,
                y_stride: 64,
                c_stride: 32,
                width: 64,
                height: 36,
            },
            true,
        );
        p
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
            ..Thumb::default()
        }
    }

    #[test]
    fn black_and_freeze_show_the_confirming_picture() {
        let mut s = Shots::new();
        let dark = preview(20);
        s.picture(
            &thumb(1.0),
            Some(&dark),
            false,
            &[start(DefectKind::Black), None],
        );
        let bright = preview(200);
        s.picture(
            &thumb(1.0),
            Some(&bright),
            false,
            &[start(DefectKind::Freeze)],
        );
        assert!(mean_luma(&s.take(DefectKind::Black).unwrap()) < 40.0);
        assert!(mean_luma(&s.take(DefectKind::Freeze).unwrap()) > 180.0);
        assert!(s.take(DefectKind::Black).is_none(), "taken once");
        assert_eq!(s.stats.made, 2);
    }

    #[test]
    fn corruption_shows_the_worst_picture_seen_while_it_was_pending() {
        let mut s = Shots::new();
        // Before the corruption: not a candidate.
        s.picture(&thumb(9.0), Some(&preview(250)), false, &[]);
        s.picture(&thumb(2.0), Some(&preview(60)), true, &[]);
        s.picture(&thumb(5.0), Some(&preview(120)), true, &[]);
        s.picture(
            &thumb(3.0),
            Some(&preview(180)),
            true,
            &[start(DefectKind::Corruption)],
        );
        let l = mean_luma(&s.take(DefectKind::Corruption).unwrap());
        assert!((l - 120.0).abs() < 10.0, "{l}");
        // Idle again, then a start confirmed by a decode error with no picture since:
        // the last picture decoded shows it; without one, nothing, counted.
        s.picture(&thumb(1.0), Some(&preview(90)), false, &[]);
        let err = start(DefectKind::Corruption).unwrap();
        s.no_picture(&err, Some(&preview(90)));
        let l = mean_luma(&s.take(DefectKind::Corruption).unwrap());
        assert!((l - 90.0).abs() < 10.0, "{l}");
        s.no_picture(&err, None);
        assert!(s.take(DefectKind::Corruption).is_none());
        assert_eq!((s.stats.made, s.stats.missing), (2, 1));
    }

    #[test]
    fn unclaimed_jpegs_are_bounded_and_counted() {
        let mut s = Shots::new();
        for _ in 0..READY_MAX + 2 {
            s.picture(
                &thumb(1.0),
                Some(&preview(30)),
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
            Some(&preview(30)),
            false,
            &[end, start(DefectKind::Silence)],
        );
        assert_eq!(s.stats.made, READY_MAX as u64 + 2);
    }
}
