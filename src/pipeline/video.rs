//! The video chain: H.264 decoder → reduced pictures (thumbs) → the picture detectors
//! (`black`, `freeze`, `corruption`, `low_fps`).
//!
//! Owns the video decoder, the picture detectors, the frame timing (last picture time,
//! frame duration) and the overload state that suspends `low_fps` while the probe
//! drops packets itself. It reads the media clock and pushes the end of the media
//! analysed ([`Timeline`]); it does not set the clock's origin (the facade does, from
//! packets), does not touch tracks or `unsupported_codec` (it reports a refused SPS to
//! the facade) and never emits events: transitions go to the analyzer's one list.

use std::time::Instant;

use crate::config::{DetectConfig, LowFpsConfig};
use crate::decode::video::{Refusal, VideoDecoder, VideoOut, VideoStats};
use crate::decode::Thumb;
use crate::defect::Transition;
use crate::detect::black::BlackDetector;
use crate::detect::corruption::{CorruptionDetector, CorruptionSample};
use crate::detect::fps::LowFpsDetector;
use crate::detect::freeze::FreezeDetector;

use super::Timeline;

/// Frame duration assumed until two pictures give a real one (25 fps).
const DEFAULT_FRAME_DUR: f64 = 0.04;

/// Decoder and picture detectors of one stream. See the module docs.
pub(super) struct VideoChain {
    max_pixels: u64,
    decoder: Option<VideoDecoder>,
    pictures: Pictures,
}

/// The picture detectors and frame timing (apart from the decoder, so a decoder's
/// output callback can borrow them).
struct Pictures {
    low_fps_cfg: LowFpsConfig,
    black: BlackDetector,
    freeze: FreezeDetector,
    corruption: CorruptionDetector,
    low_fps: LowFpsDetector,
    /// A `probe_overload` is open: ingest drops packets (see [`VideoChain::overload`]).
    overloaded: bool,
    last_frame_t: Option<f64>,
    frame_dur: f64,
    detect_ns: u64,
}

impl VideoChain {
    pub fn new(cfg: &DetectConfig) -> Self {
        VideoChain {
            max_pixels: cfg.max_pixels,
            decoder: None,
            pictures: Pictures {
                low_fps_cfg: cfg.low_fps.clone(),
                black: BlackDetector::new(cfg.black.clone()),
                freeze: FreezeDetector::new(cfg.freeze.clone()),
                corruption: CorruptionDetector::new(cfg.corruption.clone()),
                low_fps: LowFpsDetector::new(cfg.low_fps.clone()),
                overloaded: false,
                last_frame_t: None,
                frame_dur: DEFAULT_FRAME_DUR,
                detect_ns: 0,
            },
        }
    }

    /// The program has an H.264 track: a decoder is made unless one runs already
    /// (it follows SPS changes itself).
    pub fn open(&mut self) {
        if self.decoder.is_none() {
            match VideoDecoder::new(self.max_pixels) {
                Ok(d) => self.decoder = Some(d),
                Err(e) => tracing::error!(error = %e, "video decoder unavailable"),
            }
        }
    }

    /// The program has no video the probe decodes: the decoder goes.
    pub fn close(&mut self) {
        self.decoder = None;
    }

    /// Decoder counters (zero without a decoder).
    pub fn stats(&self) -> VideoStats {
        self.decoder.as_ref().map(|v| v.stats).unwrap_or_default()
    }

    /// Time spent in the picture detectors (ns).
    pub fn detect_ns(&self) -> u64 {
        self.pictures.detect_ns
    }

    /// The decoder refuses the stream's SPS (see [`VideoDecoder::is_refusing`]).
    pub fn is_refusing(&self) -> bool {
        self.decoder.as_ref().is_some_and(VideoDecoder::is_refusing)
    }

    /// Decodes one access unit with presentation time `pts` and runs the detectors
    /// on what comes out. Returns the refusal of an SPS the decoder just refused, for
    /// `unsupported_codec`.
    pub fn packet(
        &mut self,
        pts: i64,
        key: bool,
        data: &[u8],
        tl: &mut Timeline,
        found: &mut Vec<Transition>,
    ) -> Option<Refusal> {
        let dec = self.decoder.as_mut()?;
        let pics = &mut self.pictures;
        let mut refused = None;
        dec.decode(pts, key, data, &mut |o| match o {
            VideoOut::Frame(th) => pics.frame(th, tl, found),
            VideoOut::Error { pts: epts, .. } => pics.error(epts, tl, found),
            VideoOut::Refused(r) => refused = Some(r),
        });
        refused
    }

    /// End of input: the pictures still inside the decoder.
    pub fn flush(&mut self, tl: &mut Timeline, found: &mut Vec<Transition>) {
        let Some(dec) = self.decoder.as_mut() else {
            return;
        };
        let pics = &mut self.pictures;
        dec.flush(&mut |o| {
            if let VideoOut::Frame(th) = o {
                pics.frame(th, tl, found);
            }
        });
    }

    /// The probe drops packets (decode is behind a live source) or stopped doing so.
    /// Frames we dropped ourselves are not the source's frame rate: `low_fps` is not
    /// judged while the overload lasts, and starts afresh after it.
    pub fn overload(&mut self, on: bool, tl: &Timeline, found: &mut Vec<Transition>) {
        let p = &mut self.pictures;
        p.overloaded = on;
        if on {
            let t = p.last_frame_t.unwrap_or(tl.end);
            found.extend(p.low_fps.finish(t));
            p.low_fps = LowFpsDetector::new(p.low_fps_cfg.clone());
        }
    }

    /// Closes the open picture defects (`black`, `freeze`, `corruption`) at `t`.
    pub fn finish_pictures(&mut self, t: f64, found: &mut Vec<Transition>) {
        let p = &mut self.pictures;
        let ends = [
            p.black.finish(t),
            p.freeze.finish(t),
            p.corruption.finish(t),
        ];
        found.extend(ends.into_iter().flatten());
    }

    /// Closes an open `low_fps` at `t`.
    pub fn finish_rate(&mut self, t: f64, found: &mut Vec<Transition>) {
        found.extend(self.pictures.low_fps.finish(t));
    }
}

impl Pictures {
    /// Runs the video detectors on one decoded picture.
    fn frame(&mut self, th: &Thumb, tl: &mut Timeline, found: &mut Vec<Transition>) {
        let t = tl.clock.secs(th.pts);
        if let Some(last) = self.last_frame_t {
            let d = t - last;
            if d > 0.001 && d < 1.0 {
                self.frame_dur = d;
            }
        }
        self.last_frame_t = Some(t);
        tl.end = tl.end.max(t + self.frame_dur);
        tracing::trace!(
            t,
            luma = th.luma_mean,
            black_share = th.share_below(40),
            edge_ratio = th.edge_ratio,
            edge_step = th.edge_boundary,
            "frame"
        );
        let d0 = Instant::now();
        let black = self.black.is_black(th);
        let found_here = [
            self.black.observe(t, th),
            self.freeze.observe(t, th, black),
            self.corruption.observe(t, CorruptionSample::Frame(th)),
            if self.overloaded {
                None
            } else {
                self.low_fps.observe(t)
            },
        ];
        found.extend(found_here.into_iter().flatten());
        self.detect_ns += d0.elapsed().as_nanos() as u64;
    }

    /// An access unit that failed to decode: a rejected picture still was a picture
    /// on the timeline.
    fn error(&mut self, pts: i64, tl: &mut Timeline, found: &mut Vec<Transition>) {
        let t = tl.clock.secs(pts);
        tl.end = tl.end.max(t);
        let found_here = [
            self.corruption.observe(t, CorruptionSample::DecodeError),
            if self.overloaded {
                None
            } else {
                self.low_fps.observe(t)
            },
        ];
        found.extend(found_here.into_iter().flatten());
    }
}
