//! The video chain: H.264 decoder → reduced pictures (thumbs) → the picture detectors
//! (`black`, `uniform`, `test_pattern`, `freeze`, `corruption`, `blur`, `low_fps`).
//!
//! Root cause first: on each picture the black verdict goes to `uniform`, black or
//! uniform to `test_pattern`, and any of the three to `freeze`, so a black picture is
//! `black` only, a one-colour picture `uniform` only, bars or a slate `test_pattern`
//! only (none of them is also a freeze). `blur` is not judged on any of those, nor on
//! frozen pictures or while `corruption` is pending or open.
//!
//! Owns the video decoder, the picture detectors, the frame timing (last picture time,
//! frame duration) and the overload state that suspends `low_fps` while the probe
//! drops packets itself. It reads the media clock and pushes the end of the media
//! analysed ([`Timeline`]); it does not set the clock's origin (the facade does, from
//! packets), does not touch tracks or `unsupported_codec` (it reports a refused SPS to
//! the facade) and never emits events: transitions go to the analyzer's one list.

use std::time::Instant;

use crate::codec::h264::{has_idr, AuInfo};
use crate::config::{DetectConfig, LowFpsConfig, SyntaxCheck};
use crate::decode::parse::{Parsed, SyntaxChecker};
use crate::decode::preview::Planes;
use crate::decode::video::{Refusal, VideoDecoder, VideoOut, VideoStats};
use crate::decode::Thumb;
use crate::defect::{DecodeLevel, DefectKind, Transition};
use crate::detect::black::BlackDetector;
use crate::detect::blur::{BlurDetector, Claim as BlurClaim, Judged};
use crate::detect::corruption::{CorruptionDetector, CorruptionSample};
use crate::detect::fps::LowFpsDetector;
use crate::detect::freeze::FreezeDetector;
use crate::detect::test_pattern::TestPatternDetector;
use crate::detect::uniform::UniformDetector;
use crate::timebase::MediaClock;

use super::level::{LevelControl, LevelStats, SizeWatch};
use super::ring::GopRing;
use super::series::PictureSeries;
use super::shots::{ShotStats, Shots};
use super::Timeline;

/// Frame duration assumed until two pictures give a real one (25 fps).
const DEFAULT_FRAME_DUR: f64 = 0.04;
/// Access units held to put presentation times back in order for `low_fps` (B-frames
/// arrive in decode order).
const PTS_REORDER: usize = 8;

/// Decoder and picture detectors of one stream. See the module docs.
pub(super) struct VideoChain {
    max_pixels: u64,
    max_decoder_mb: u64,
    decoder: Option<VideoDecoder>,
    pictures: Pictures,
    level: LevelControl,
    sizes: SizeWatch,
    ring: GopRing,
    /// Transitions of a key picture looked at while watching: evidence, not events.
    scratch: Vec<Transition>,
    syntax: SyntaxCheck,
    /// `auto` while watching: parses the pictures not decoded (made on first use).
    checker: Option<SyntaxChecker>,
    /// Decoders hand out previews for defect thumbnails.
    thumbnails: bool,
}

/// An access unit as the video chain needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Au<'a> {
    pub pts: i64,
    pub key: bool,
    pub damaged: bool,
    pub data: &'a [u8],
    /// Read once per access unit by the caller ([`crate::codec::h264::au_info`]).
    pub info: AuInfo,
}

/// The picture detectors and frame timing (apart from the decoder, so a decoder's
/// output callback can borrow them).
struct Pictures {
    low_fps_cfg: LowFpsConfig,
    black: BlackDetector,
    freeze: FreezeDetector,
    uniform: UniformDetector,
    test_pattern: TestPatternDetector,
    corruption: CorruptionDetector,
    blur: BlurDetector,
    low_fps: LowFpsDetector,
    /// A `probe_overload` is open: ingest drops packets (see [`VideoChain::overload`]).
    overloaded: bool,
    last_frame_t: Option<f64>,
    frame_dur: f64,
    /// Presentation times of the last access units, for `low_fps` in display order.
    pending_t: heapless::Vec<f64, PTS_REORDER>,
    detect_ns: u64,
    /// Defect thumbnails (only when asked for).
    shots: Option<Shots>,
    /// A report's series (only when asked for).
    series: Option<Box<PictureSeries>>,
}

impl VideoChain {
    pub fn new(cfg: &DetectConfig) -> Self {
        VideoChain {
            max_pixels: cfg.max_pixels,
            max_decoder_mb: cfg.max_decoder_mb,
            decoder: None,
            pictures: Pictures {
                low_fps_cfg: cfg.low_fps.clone(),
                black: BlackDetector::new(cfg.black.clone()),
                freeze: FreezeDetector::new(cfg.freeze.clone()),
                uniform: UniformDetector::new(cfg.uniform.clone(), &cfg.black),
                test_pattern: TestPatternDetector::new(cfg.test_pattern.clone(), &cfg.freeze),
                corruption: CorruptionDetector::new(cfg.corruption.clone()),
                blur: BlurDetector::new(cfg.blur.clone()),
                low_fps: LowFpsDetector::new(cfg.low_fps.clone()),
                overloaded: false,
                last_frame_t: None,
                frame_dur: DEFAULT_FRAME_DUR,
                pending_t: heapless::Vec::new(),
                detect_ns: 0,
                shots: cfg.thumbnails.then(Shots::new),
                series: cfg.series.then(Box::default),
            },
            level: LevelControl::new(cfg.decode.level),
            sizes: SizeWatch::default(),
            ring: GopRing::new(cfg.decode.ring_bytes()),
            scratch: Vec::new(),
            syntax: cfg.decode.syntax_check,
            checker: None,
            thumbnails: cfg.thumbnails,
        }
    }

    /// The program has an H.264 track: a decoder is made unless one runs already
    /// (it follows SPS changes itself).
    pub fn open(&mut self) {
        if self.decoder.is_none() {
            match VideoDecoder::new(self.max_pixels) {
                Ok(d) => {
                    let d = d.with_memory_limit(self.max_decoder_mb.saturating_mul(1 << 20));
                    self.decoder = Some(if self.thumbnails {
                        d.with_previews()
                    } else {
                        d
                    });
                }
                Err(e) => tracing::error!(error = %e, "video decoder unavailable"),
            }
        }
    }

    /// The program has no video the probe decodes: the decoder goes.
    pub fn close(&mut self) {
        self.decoder = None;
        self.checker = None;
        self.ring.clear();
    }

    /// Decoder counters (zero without a decoder).
    pub fn stats(&self) -> VideoStats {
        self.decoder.as_ref().map(|v| v.stats).unwrap_or_default()
    }

    /// Decode level counters.
    pub fn level_stats(&self) -> LevelStats {
        self.level.stats
    }

    /// The level pictures are decoded at now; `None` without a video decoder.
    pub fn current_level(&self) -> Option<DecodeLevel> {
        self.decoder.as_ref().map(|_| self.level.level())
    }

    /// The source is live: a backlog may step `auto` down (see `level`).
    pub fn set_live(&mut self, live: bool) {
        self.level.set_live(live);
    }

    /// The ingest queue's fill (0–1) at monotonic seconds `now`.
    pub fn backlog(&mut self, now: f64, fill: f32) {
        self.level.backlog(now, fill, &mut super::gate::try_admit);
    }

    /// Bytes held by the look-back ring.
    pub fn ring_bytes(&self) -> usize {
        self.ring.bytes()
    }

    /// Time spent in the picture detectors (ns).
    pub fn detect_ns(&self) -> u64 {
        self.pictures.detect_ns
    }

    /// The thumbnail (JPEG) made for the start of `kind` just found, if any.
    pub fn take_thumb(&mut self, kind: DefectKind) -> Option<std::sync::Arc<[u8]>> {
        self.pictures.shots.as_mut()?.take(kind)
    }

    /// The picture series so far (`None`: not recorded).
    pub fn take_series(&mut self) -> Option<PictureSeries> {
        self.pictures.series.take().map(|b| *b)
    }

    /// Thumbnail counters (None when the stream makes none).
    pub fn shot_stats(&self) -> Option<ShotStats> {
        self.pictures.shots.as_ref().map(|s| s.stats)
    }

    /// The decoder refuses the stream's SPS (see [`VideoDecoder::is_refusing`]).
    pub fn is_refusing(&self) -> bool {
        self.decoder.as_ref().is_some_and(VideoDecoder::is_refusing)
    }

    /// Decodes (or, per the decode level, only watches) one access unit and runs the
    /// detectors on what comes out. Returns the refusal of an SPS the decoder just
    /// refused, for `unsupported_codec`.
    pub fn packet(
        &mut self,
        au: Au<'_>,
        tl: &mut Timeline,
        found: &mut Vec<Transition>,
    ) -> Option<Refusal> {
        self.decoder.as_ref()?;
        let info = au.info;
        let collapsed = self.sizes.observe(au.data.len(), au.key, info.reference);
        let broken =
            self.level.watching() && !self.is_refusing() && !self.syntax_ok(au, info.reference);
        // A key picture that is not an IDR (open GOP, recovery point): openh264 restarts
        // only at IDRs, so watching (which skips the pictures between key pictures)
        // cannot be used on this stream. From here `auto` decodes the reference
        // pictures when nothing is suspected.
        let open_gop = au.key && !self.level.stats.open_gop && !has_idr(au.data);
        if open_gop {
            self.level.set_cheap(DecodeLevel::Reference);
            self.level.stats.open_gop = true;
            tracing::debug!("key picture without IDR: auto decodes reference pictures");
        }
        let watching =
            self.level.watching() || (open_gop && self.level.is_auto() && !self.level.escalated());
        let dec = self.decoder.as_mut()?;
        let mut refused = None;
        if watching {
            let mut overflow = false;
            if !self.ring.push(au.pts, au.key, info, au.data) {
                if self.ring.trim() {
                    self.level.stats.ring_trims += 1;
                }
                overflow = !self.ring.push(au.pts, au.key, info, au.data);
            }
            let mut suspect = au.damaged || collapsed || overflow || broken;
            if open_gop {
                // Watching cannot go on: the look-back is decoded from its IDR now.
                suspect = true;
            } else if au.key && !overflow {
                // The key picture is decoded and shown to the detectors; what they make
                // of it is evidence only (a pending or confirmed defect = a suspicion).
                let pics = &mut self.pictures;
                let scratch = &mut self.scratch;
                scratch.clear();
                let mut out = |o: VideoOut<'_>| match o {
                    VideoOut::Frame(th, pv) => pics.frame(th, pv, &tl.clock, scratch, true),
                    VideoOut::Error { pts, .. } => pics.error(pts, &tl.clock, scratch, true),
                    VideoOut::Refused(r) => refused = Some(r),
                };
                dec.decode(au.pts, true, au.data, &mut out);
                dec.flush(&mut out);
                // Until the next key picture the stream needs no decoder.
                dec.release();
                if !scratch.is_empty() || pics.busy() {
                    suspect = true;
                } else {
                    // A clean key picture: a later onset lies after the key before it.
                    self.ring.keep_from_key(2);
                }
            } else if !overflow {
                dec.skip(au.data, &info, &mut |o| {
                    if let VideoOut::Refused(r) = o {
                        refused = Some(r);
                    }
                });
            }
            if suspect && !dec.is_refusing() && self.level.escalate(overflow) {
                self.pictures.rewind();
                self.redecode(tl, found);
                if overflow {
                    self.decode_at_level(au, tl, found, &mut refused);
                }
            }
        } else {
            self.decode_at_level(au, tl, found, &mut refused);
            if self.level.is_auto() {
                let busy = self.pictures.busy() || au.damaged || collapsed;
                let t = tl.clock.secs(au.pts);
                if !self.level.escalated() {
                    // `auto` at reference pictures (open GOP): the detectors see every
                    // reference picture already; a suspicion adds the others.
                    if busy {
                        self.level.escalate(false);
                    }
                } else if self.level.settle(t, busy, au.key) && self.level.watching() {
                    // Back to watching from this key picture on (decoded already; the
                    // syntax checker resumes at it).
                    let _ = self.syntax_ok(au, info.reference);
                    self.ring.clear();
                    self.ring.push(au.pts, au.key, info, au.data);
                }
            }
        }
        if !self.is_refusing() {
            let t = tl.clock.secs(au.pts);
            self.level.account(t);
            self.pictures.au_time(t, tl, found);
        }
        refused
    }

    /// Parses an access unit that is watched rather than decoded (see
    /// [`DecodeConfig::syntax_check`](crate::config::DecodeConfig)); false when its
    /// syntax is broken. Key pictures are parsed too: the checker needs their
    /// parameter sets and references.
    fn syntax_ok(&mut self, au: Au<'_>, reference: bool) -> bool {
        let wanted = match self.syntax {
            SyntaxCheck::Off => false,
            SyntaxCheck::All => true,
            SyntaxCheck::Reference => reference || au.key,
        };
        if !wanted {
            return true;
        }
        if self.level.syntax_shed() {
            // Shed for overload: its memory goes too (it starts again at an IDR).
            self.checker = None;
            return true;
        }
        if self.checker.is_none() {
            match SyntaxChecker::new() {
                Ok(c) => self.checker = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "syntax check unavailable");
                    self.syntax = SyntaxCheck::Off;
                    return true;
                }
            }
        }
        let Some(c) = self.checker.as_mut() else {
            return true;
        };
        self.level.stats.syntax_checked += 1;
        match c.check(au.data) {
            Parsed::Clean => true,
            Parsed::Broken => {
                self.level.stats.syntax_broken += 1;
                false
            }
            Parsed::Unchecked => {
                self.level.stats.syntax_unchecked += 1;
                true
            }
        }
    }

    /// Decodes one access unit as the current level says (all, reference pictures,
    /// key pictures) and runs the detectors on the pictures.
    fn decode_at_level(
        &mut self,
        au: Au<'_>,
        tl: &mut Timeline,
        found: &mut Vec<Transition>,
        refused: &mut Option<Refusal>,
    ) {
        let Some(dec) = self.decoder.as_mut() else {
            return;
        };
        let level = self.level.level();
        let pics = &mut self.pictures;
        let mut out = |o: VideoOut<'_>| match o {
            VideoOut::Frame(th, pv) => pics.frame(th, pv, &tl.clock, found, false),
            VideoOut::Error { pts, .. } => pics.error(pts, &tl.clock, found, false),
            VideoOut::Refused(r) => *refused = Some(r),
        };
        let decode = match level {
            DecodeLevel::Full => true,
            DecodeLevel::Reference => au.key || au.info.reference,
            DecodeLevel::Key => au.key,
        };
        if decode {
            dec.decode(au.pts, au.key, au.data, &mut out);
            if level == DecodeLevel::Key {
                // Nothing follows to push a held picture out: take it now. Until the
                // next key picture the stream needs no decoder.
                dec.flush(&mut out);
                dec.release();
            }
        } else {
            dec.skip(au.data, &au.info, &mut out);
        }
    }

    /// Escalation: decodes the look-back ring again from its key picture, at the
    /// level now in force, so the detectors find the onset as a full decode would.
    fn redecode(&mut self, tl: &mut Timeline, found: &mut Vec<Transition>) {
        let mut aus = self.ring.take_all();
        let mut refused = None;
        self.restart_decoder();
        // These access units were counted when they arrived.
        let counted = self.decoder.as_ref().map(|d| d.stats);
        for a in aus.iter() {
            let au = Au {
                pts: a.pts,
                key: a.key,
                damaged: false,
                data: &a.data,
                info: a.info,
            };
            self.decode_at_level(au, tl, found, &mut refused);
        }
        if let (Some(dec), Some(c)) = (self.decoder.as_mut(), counted) {
            dec.stats.packets = c.packets;
            dec.stats.skipped_by_level = c.skipped_by_level;
            dec.stats.refused = c.refused;
            dec.stats.skipped_before_key = c.skipped_before_key;
        }
        for a in aus.drain(..) {
            self.ring.recycle(a.data);
        }
    }

    /// A fresh openh264 decoder (see [`VideoDecoder::restart`]); without one the
    /// stream has no video decoder.
    fn restart_decoder(&mut self) {
        if let Some(dec) = self.decoder.as_mut() {
            if let Err(e) = dec.restart() {
                tracing::error!(error = %e, "video decoder unavailable");
                self.decoder = None;
            }
        }
    }

    /// End of input: a watched look-back is decoded (a defect in the last GOP has no
    /// later key picture to reveal it), then the pictures still inside the decoder.
    pub fn flush(&mut self, tl: &mut Timeline, found: &mut Vec<Transition>) {
        if self.decoder.is_none() {
            return;
        }
        if self.level.watching() && !self.ring.is_empty() && !self.is_refusing() {
            if self.level.escalate(false) {
                self.pictures.rewind();
            }
            self.redecode(tl, found);
        }
        let Some(dec) = self.decoder.as_mut() else {
            return;
        };
        let pics = &mut self.pictures;
        dec.flush(&mut |o| {
            if let VideoOut::Frame(th, pv) = o {
                pics.frame(th, pv, &tl.clock, found, false);
            }
        });
        pics.drain_times(tl, found);
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
            p.pending_t.clear();
        }
    }

    /// Closes the open picture defects (`black`, `uniform`, `freeze`, `test_pattern`,
    /// `corruption`, `blur`) at `t`.
    pub fn finish_pictures(&mut self, t: f64, found: &mut Vec<Transition>) {
        let p = &mut self.pictures;
        let ends = [
            p.black.finish(t),
            p.uniform.finish(t),
            p.freeze.finish(t),
            p.test_pattern.finish(t),
            p.corruption.finish(t),
            p.blur.finish(t),
        ];
        found.extend(ends.into_iter().flatten());
    }

    /// Closes an open `low_fps` at `t`.
    pub fn finish_rate(&mut self, t: f64, found: &mut Vec<Transition>) {
        found.extend(self.pictures.low_fps.finish(t));
    }
}

impl Pictures {
    /// Runs the picture detectors on one decoded picture. `watch`: a key picture seen
    /// while watching (`auto`): the blockiness baseline is learned from full-rate
    /// pictures only, so it is not fed, and what is found is evidence, not events (no
    /// thumbnails).
    fn frame(
        &mut self,
        th: &Thumb,
        planes: Option<Planes<'_>>,
        clock: &MediaClock,
        found: &mut Vec<Transition>,
        watch: bool,
    ) {
        let t = clock.secs(th.pts);
        tracing::trace!(
            t,
            luma = th.luma_mean,
            black_share = th.share_below(40),
            edge_ratio = th.edge_ratio,
            edge_step = th.edge_boundary,
            detail = th.detail,
            "frame"
        );
        let d0 = Instant::now();
        // Root cause first: black, then test patterns, then freeze (docs/events.md).
        let black = self.black.is_black(th);
        let uniform = self.uniform.observe(t, th, black);
        let one_colour = black || self.uniform.last_uniform();
        let pattern = self.test_pattern.observe(t, th, one_colour);
        let still = one_colour || self.test_pattern.is_pattern();
        let f = self.freeze.observe(t, th, still);
        let c = if watch {
            None
        } else {
            self.corruption.observe(t, CorruptionSample::Frame(th))
        };
        // Pictures another kind claims (black, one colour, a pattern, a confirmed
        // freeze, corruption) are not judged for blur: those kinds win. A repeat of the
        // last moving picture with no freeze confirmed is judged, not learned.
        let claim = BlurClaim::of(still || !self.corruption.is_idle(), &self.freeze);
        let found_here = [
            self.black.observe(t, th),
            uniform,
            pattern,
            f,
            c,
            self.blur.observe(t, th, claim),
        ];
        tracing::trace!(
            t,
            sharpness = ?self.blur.last_sharpness(),
            baseline = ?self.blur.baseline(),
            ?claim,
            "blur"
        );
        self.detect_ns += d0.elapsed().as_nanos() as u64;
        if let Some(s) = self.series.as_mut() {
            let blur_threshold = match self.blur.last() {
                Judged::Sharp { threshold, .. } | Judged::Blurred { threshold, .. } => {
                    Some(threshold)
                }
                Judged::No => None,
            };
            s.picture(
                t,
                th,
                self.freeze.last_diff_db(),
                self.corruption.threshold(),
                self.blur.last_sharpness(),
                blur_threshold,
            );
        }
        if let Some(s) = self.shots.as_mut().filter(|_| !watch) {
            s.picture(th, t, planes, !self.corruption.is_idle(), &found_here);
        }
        found.extend(found_here.into_iter().flatten());
    }

    /// An access unit that failed to decode (`watch`: as for [`Pictures::frame`]).
    fn error(&mut self, pts: i64, clock: &MediaClock, found: &mut Vec<Transition>, watch: bool) {
        let t = clock.secs(pts);
        let tr = self.corruption.observe(t, CorruptionSample::DecodeError);
        if let (Some(s), Some(tr)) = (self.shots.as_mut().filter(|_| !watch), &tr) {
            s.no_picture(tr);
        }
        found.extend(tr);
    }

    /// A picture defect is pending or open.
    fn busy(&self) -> bool {
        !(self.black.is_idle()
            && self.uniform.is_idle()
            && self.freeze.is_idle()
            && self.test_pattern.is_idle()
            && self.corruption.is_idle()
            && self.blur.is_idle())
    }

    /// The detectors will see an earlier GOP again (see `level`).
    fn rewind(&mut self) {
        self.black.rewind();
        self.uniform.rewind();
        self.freeze.rewind();
        self.test_pattern.rewind();
        self.corruption.rewind();
        self.blur.rewind();
        if let Some(s) = self.shots.as_mut() {
            s.rewind();
        }
    }

    /// Every access unit, decoded or not, is a picture on the timeline: the frame
    /// duration, the end of the media analysed and `low_fps` (in presentation order)
    /// follow the access units, whatever the decode level.
    fn au_time(&mut self, t: f64, tl: &mut Timeline, found: &mut Vec<Transition>) {
        if self.pending_t.is_full() {
            self.release_earliest(tl, found);
        }
        // Cannot fail: a slot was just freed.
        let _ = self.pending_t.push(t);
        if self.pending_t.len() > PTS_REORDER / 2 {
            self.release_earliest(tl, found);
        }
    }

    /// End of input: the times still held.
    fn drain_times(&mut self, tl: &mut Timeline, found: &mut Vec<Transition>) {
        while !self.pending_t.is_empty() {
            self.release_earliest(tl, found);
        }
    }

    fn release_earliest(&mut self, tl: &mut Timeline, found: &mut Vec<Transition>) {
        let Some((i, _)) = self
            .pending_t
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
        else {
            return;
        };
        let t = self.pending_t.swap_remove(i);
        if let Some(last) = self.last_frame_t {
            let d = t - last;
            if d > 0.001 && d < 1.0 {
                self.frame_dur = d;
            }
        }
        self.last_frame_t = Some(t);
        tl.end = tl.end.max(t + self.frame_dur);
        if !self.overloaded {
            found.extend(self.low_fps.observe(t));
        }
    }
}
