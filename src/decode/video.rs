//! H.264 decode with openh264, reduced to a [`Thumb`] per picture.
//!
//! Boundaries: owns the openh264 decoder and the SPS checks; knows nothing of
//! detectors, events or sources.
//!
//! Why the raw openh264 API: the safe `Decoder::decode` never sets the input
//! timestamp, so every output picture would carry timestamp 0, and with B-frames the
//! output order differs from the input order. We pass each access unit's PTS in
//! `uiInBsTimeStamp` and read the picture's own `uiOutYuvTimeStamp` back. The unsafe
//! code is confined to `VideoDecoder::decode_raw` and `VideoDecoder::take_frame`.
//!
//! Error concealment stays off: a corrupt slice returns an error state, which we count
//! and hand to the corruption detector; the decoder keeps going and recovers at the
//! next IDR.

use std::ptr::null_mut;
use std::time::Instant;

use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::OpenH264API;
use openh264_sys2::{SBufferInfo, DECODER_OPTION_NUM_OF_FRAMES_REMAINING_IN_BUFFER};

use super::preview::Planes;
use super::{Reducer, Thumb};
use crate::codec::h264::{annexb_nals, has_idr, parameter_sets_into, AuInfo};
use crate::error::{Error, Result};

/// Decoder outputs, in the order the decoder produced them.
#[derive(Debug)]
pub enum VideoOut<'a> {
    /// A decoded picture, summarised, with its planes when the decoder hands them out
    /// ([`VideoDecoder::with_previews`]): valid only during this call (a thumbnail is
    /// downscaled from them there, only when one is wanted).
    Frame(&'a Thumb, Option<Planes<'a>>),
    /// The access unit with this PTS failed to decode (openh264 decoding-state bits).
    Error { pts: i64, state: i32 },
    /// An SPS announces what the decoder cannot or may not decode (see [`Refusal`]):
    /// the track is not decoded until every SPS in force is acceptable again.
    Refused(Refusal),
}

/// Why the video is not decoded, and the picture size the SPS announces (0 × 0 when
/// it does not parse far enough to tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefuseReason,
    pub width: u32,
    pub height: u32,
}

/// What in an SPS makes the decoder refuse the stream. When several apply, the first
/// in this order is given: chroma format, bit depth, interlacing, size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Larger than `max_pixels`: refused before anything is allocated for it.
    AboveMaxResolution,
    /// Does not parse (or its size cannot be computed): its size is unknown.
    UnparseableSps,
    /// `frame_mbs_only_flag` = 0: field (PAFF) or MBAFF coding; openh264 decodes
    /// frames only.
    Interlaced,
    /// 9- or 10-bit samples (High 10, or the 10-bit modes of the 4:2:2 and 4:4:4
    /// profiles); openh264 decodes 8 bits only.
    High10,
    /// 11- to 14-bit samples (High 4:4:4 Predictive only).
    HighBitDepth,
    /// `chroma_format_idc` = 2 (4:2:2); openh264 decodes 4:2:0 and 4:0:0 only.
    Chroma422,
    /// `chroma_format_idc` = 3 (4:4:4, separate colour planes included).
    Chroma444,
    /// The pictures openh264 would allocate for this SPS (its reference frames + 2,
    /// each padded, with per-macroblock data) exceed `max_decoder_mb`: refused before
    /// anything is allocated, so one stream cannot exhaust the box.
    DecoderMemory,
}

impl RefuseReason {
    /// Stable name, as reported in the `unsupported_codec` event.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::AboveMaxResolution => "h264_above_max_resolution",
            RefuseReason::UnparseableSps => "h264_unparseable_sps",
            RefuseReason::Interlaced => "h264_interlaced",
            RefuseReason::High10 => "h264_high10",
            RefuseReason::HighBitDepth => "h264_high_bit_depth",
            RefuseReason::Chroma422 => "h264_422",
            RefuseReason::Chroma444 => "h264_444",
            RefuseReason::DecoderMemory => "h264_decoder_memory",
        }
    }
}

/// Counters of the video decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct VideoStats {
    pub packets: u64,
    pub frames: u64,
    pub errors: u64,
    /// Access units skipped while waiting for the first key frame.
    pub skipped_before_key: u64,
    /// Access units not decoded because an SPS in force is refused (see [`Refusal`]).
    pub refused: u64,
    /// Access units given to openh264 (a GOP decoded again counts again).
    pub decoded: u64,
    /// Access units not decoded because of the decode level.
    pub skipped_by_level: u64,
    /// Time spent inside openh264 (ns).
    pub decode_ns: u64,
    /// Time spent reducing pictures (ns).
    pub reduce_ns: u64,
}

/// openh264 wrapper owning the frame reducer.
pub struct VideoDecoder {
    /// The openh264 instance; None while released (see [`VideoDecoder::release`]).
    dec: Option<Decoder>,
    /// The instance decoded only IDR pictures and was flushed since it was made or
    /// taken from the pool: it may go back to the pool.
    clean: bool,
    /// The last access unit decoded was an IDR: the instance can be given up (the next
    /// one starts from an IDR too). After a non-IDR key picture (open GOP, intra-only
    /// streams with recovery points) it is kept: a fresh one could not decode the next.
    last_idr: bool,
    reducer: Reducer,
    thumb: Box<Thumb>,
    /// Pictures are handed out with their planes (for thumbnails).
    previews: bool,
    /// The planes of the picture just taken, between `take_frame` and its `out` call
    /// only (openh264 reuses the buffer at its next call).
    planes: Option<RawPlanes>,
    full_range: bool,
    max_pixels: u64,
    /// Largest picture memory allowed (see [`decoder_bytes`]).
    max_decoder_bytes: u64,
    /// The refusal in force; cleared once every SPS in force is acceptable.
    refused: Option<Refusal>,
    /// False until the first key frame: nothing before it can decode.
    started: bool,
    /// The SPS in force per id (openh264 keeps one per id and a PPS may pick any):
    /// (id, raw NAL, verdict). At most 32 entries; an unchanged SPS is not parsed again.
    sps: Vec<(u32, Vec<u8>, SpsVerdict)>,
    /// An SPS whose id could not even be read: refused until a good SPS arrives.
    unreadable_sps: bool,
    /// Pictures were skipped (decode level) since the last IDR: the references of the
    /// next non-IDR key picture may be missing, which is not corruption.
    gap: bool,
    /// Scratch for parameter sets handed to openh264 on their own.
    params: Vec<u8>,
    /// The PPS in force per id (raw NAL), for a restarted decoder. At most 256 (ids
    /// 0–255); a PPS whose id does not parse is not kept.
    pps: Vec<(u32, Vec<u8>)>,
    pub stats: VideoStats,
}

impl std::fmt::Debug for VideoDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoDecoder")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// openh264's `dsFramePending`: a frame is held for reordering; not an error.
const DS_FRAME_PENDING: i32 = 0x01;
/// openh264's `dsRefLost`: a reference picture is missing.
const DS_REF_LOST: i32 = 0x02;
/// openh264's `dsRefListNullPtrs`: the reference list has holes.
const DS_REF_LIST_NULL_PTRS: i32 = 0x40;
/// openh264's `dsNoParamSets`: waiting for an IDR with its parameter sets.
const DS_NO_PARAM_SETS: i32 = 0x10;

impl VideoDecoder {
    /// A decoder that refuses pictures whose memory would exceed `bytes` (see
    /// [`decoder_bytes`]; default: no limit besides `max_pixels`).
    pub fn with_memory_limit(mut self, bytes: u64) -> Self {
        self.max_decoder_bytes = bytes;
        self
    }

    /// Every picture is handed out with its planes too (for defect thumbnails; see
    /// [`VideoOut::Frame`]). Costs nothing until a plane is read.
    pub fn with_previews(mut self) -> Self {
        self.previews = true;
        self
    }

    /// The summary and planes of the picture just taken.
    fn picture(&self) -> VideoOut<'_> {
        let planes = self.planes.as_ref().map(|p| {
            let ch = p.height.div_ceil(2);
            // SAFETY: `planes` is set by `take_frame` from the buffer openh264 returned
            // (iBufferStatus == 1: luma of height × y_stride bytes, chroma of
            // ⌈height/2⌉ × c_stride bytes each) and cleared right after the `out` call
            // this value is made for, before any other call into openh264 (which is
            // when the buffer would be reused); the slices borrow `self`, so they
            // cannot outlive that call.
            unsafe {
                Planes {
                    y: std::slice::from_raw_parts(p.y, p.height * p.y_stride),
                    u: std::slice::from_raw_parts(p.u, ch * p.c_stride),
                    v: std::slice::from_raw_parts(p.v, ch * p.c_stride),
                    y_stride: p.y_stride,
                    c_stride: p.c_stride,
                    width: p.width,
                    height: p.height,
                }
            }
        });
        VideoOut::Frame(&self.thumb, planes)
    }

    /// A decoder that refuses pictures larger than `max_pixels` (width × height).
    pub fn new(max_pixels: u64) -> Result<Self> {
        Ok(VideoDecoder {
            dec: Some(new_openh264()?),
            clean: true,
            last_idr: false,
            reducer: Reducer::default(),
            thumb: Box::default(),
            previews: false,
            planes: None,
            full_range: false,
            max_pixels,
            max_decoder_bytes: u64::MAX,
            refused: None,
            started: false,
            sps: Vec::new(),
            unreadable_sps: false,
            gap: false,
            params: Vec::new(),
            pps: Vec::new(),
            stats: VideoStats::default(),
        })
    }

    /// Replaces openh264's decoder by a fresh one (the SPS checks and counters stay):
    /// before a GOP is decoded a second time from its key picture. openh264 is not made
    /// to be fed an earlier key picture again: after pictures were skipped and flushed
    /// it can run out of picture buffers (`dsOutOfMemory`) on the next P picture. The
    /// next picture must be an IDR: with error concealment off, openh264 starts a
    /// sequence at an IDR only.
    pub fn restart(&mut self) -> Result<()> {
        self.dec = Some(new_openh264()?);
        self.clean = true;
        self.gap = false;
        self.feed_parameter_sets();
        Ok(())
    }

    /// Gives the openh264 instance up between key pictures (the `auto` level while
    /// watching, and `key`): an instance that decoded only IDR pictures goes back to
    /// the process-wide pool of idle instances (see [`DecoderPool`]), any other is
    /// dropped. The next [`VideoDecoder::decode`] takes one again and gives it the
    /// parameter sets in force, so the next picture must be an IDR: an instance whose
    /// last picture was not an IDR is kept. The SPS checks, counters and reducer stay.
    /// Pictures held for reordering must have been flushed.
    pub fn release(&mut self) {
        if !self.last_idr {
            return;
        }
        if let Some(dec) = self.dec.take() {
            if self.clean {
                POOL.put(dec);
            } else {
                POOL.count_dropped();
            }
        }
    }

    /// An openh264 instance from the pool (or a new one) with the parameter sets in
    /// force, when released. False when none can be made.
    fn acquire(&mut self) -> bool {
        if self.dec.is_some() {
            return true;
        }
        let dec = match POOL.take() {
            Some(d) => d,
            None => match new_openh264() {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "video decoder unavailable");
                    return false;
                }
            },
        };
        self.dec = Some(dec);
        self.clean = true;
        self.feed_parameter_sets();
        true
    }

    /// Gives openh264 every SPS and PPS in force (a key picture that is not an IDR
    /// often comes without its parameter sets; a pooled instance holds another
    /// stream's).
    fn feed_parameter_sets(&mut self) {
        let mut params = std::mem::take(&mut self.params);
        params.clear();
        for raw in self
            .sps
            .iter()
            .map(|(_, raw, _)| raw)
            .chain(self.pps.iter().map(|(_, raw)| raw))
        {
            params.extend_from_slice(&[0, 0, 0, 1]);
            params.extend_from_slice(raw);
        }
        if !params.is_empty() && params.len() <= i32::MAX as usize {
            let _ = self.decode_raw(0, &params);
        }
        self.params = params;
    }

    /// True while an SPS in force is refused (see [`Refusal`]).
    pub fn is_refusing(&self) -> bool {
        self.refused.is_some()
    }

    /// Decodes one Annex B access unit with presentation time `pts` (90 kHz).
    pub fn decode(&mut self, pts: i64, key: bool, data: &[u8], out: &mut dyn FnMut(VideoOut<'_>)) {
        self.stats.packets += 1;
        // Every access unit: an SPS may come in the middle of a GOP, and an access unit
        // may carry several.
        self.inspect_sps(data, out);
        if self.refused.is_some() {
            self.stats.refused += 1;
            return;
        }
        if !self.started {
            if !key {
                self.stats.skipped_before_key += 1;
                return;
            }
            self.started = true;
        }
        if data.is_empty() || data.len() > i32::MAX as usize {
            return;
        }
        if !self.acquire() {
            return;
        }
        self.stats.decoded += 1;
        let idr = has_idr(data);
        self.clean &= idr;
        self.last_idr = idr;
        let (mut state, frame) = self.decode_raw(pts, data);
        if idr {
            self.gap = false;
        } else if self.gap && key {
            // A key picture that is not an IDR after skipped pictures: openh264 (with
            // error concealment off) restarts only at an IDR and refuses it, noting
            // lost references and parameter sets. That is the level's doing, not
            // corruption: no picture, no error.
            state &= !(DS_REF_LOST | DS_REF_LIST_NULL_PTRS | DS_NO_PARAM_SETS);
        }
        if state & !DS_FRAME_PENDING != 0 {
            self.stats.errors += 1;
            tracing::debug!(pts, state, idr, gap = self.gap, "decode error");
            out(VideoOut::Error { pts, state });
        }
        if frame {
            self.stats.frames += 1;
            out(self.picture());
            self.planes = None;
        }
    }

    /// An access unit the decode level leaves out: its SPS are still checked (refusals
    /// and the signal range follow the stream) and its parameter sets still reach
    /// openh264, so the next decoded picture finds them.
    pub fn skip(&mut self, data: &[u8], info: &AuInfo, out: &mut dyn FnMut(VideoOut<'_>)) {
        self.stats.packets += 1;
        self.inspect_sps(data, out);
        if self.refused.is_some() {
            self.stats.refused += 1;
            return;
        }
        self.stats.skipped_by_level += 1;
        if !self.started {
            return;
        }
        if info.slices > 0 && (info.reference || self.gap) {
            self.gap = true;
        }
        if info.parameter_sets && self.dec.is_some() {
            let mut params = std::mem::take(&mut self.params);
            params.clear();
            parameter_sets_into(data, &mut params);
            if !params.is_empty() && params.len() <= i32::MAX as usize {
                // Parameter sets only: no picture comes out, and a state here is not
                // about any picture.
                let _ = self.decode_raw(0, &params);
            }
            self.params = params;
        }
    }

    /// End of stream: outputs the pictures still held for reordering.
    pub fn flush(&mut self, out: &mut dyn FnMut(VideoOut<'_>)) {
        let Some(dec) = self.dec.as_mut() else {
            return;
        };
        let mut remaining: i32 = 0;
        // SAFETY: get_option writes one int for this option id.
        let rc = unsafe {
            dec.raw_api().get_option(
                DECODER_OPTION_NUM_OF_FRAMES_REMAINING_IN_BUFFER,
                (&raw mut remaining).cast(),
            )
        };
        if rc != 0 {
            return;
        }
        for _ in 0..remaining.clamp(0, 32) {
            let mut dst = [null_mut::<u8>(); 3];
            let mut info = SBufferInfo::default();
            let Some(dec) = self.dec.as_mut() else {
                return;
            };
            // SAFETY: dst has room for three plane pointers, info is a valid out-param.
            unsafe {
                dec.raw_api().flush_frame(dst.as_mut_ptr(), &raw mut info);
            }
            if self.take_frame(&dst, &info) {
                self.stats.frames += 1;
                out(self.picture());
                self.planes = None;
            }
        }
    }

    /// Checks every SPS of an access unit: learns the signal range, enforces the size
    /// limit and refuses what openh264 cannot decode (see [`RefuseReason`]). An SPS
    /// that does not parse is refused (its size is unknown: it could be anything once
    /// openh264 reads it).
    fn inspect_sps(&mut self, data: &[u8], out: &mut dyn FnMut(VideoOut<'_>)) {
        let mut changed = false;
        for nal in annexb_nals(data) {
            if nal.first().map(|h| h & 0x1F) == Some(8) {
                self.keep_pps(nal);
                continue;
            }
            if nal.first().map(|h| h & 0x1F) != Some(7) {
                continue;
            }
            // Streams repeat the same SPS on every key frame: parse only a new one.
            if self.sps.iter().any(|(_, raw, _)| raw.as_slice() == nal) {
                continue;
            }
            changed = true;
            let (id, verdict) = match check_sps(nal, self.max_pixels, self.max_decoder_bytes) {
                Ok((id, verdict, full_range)) => {
                    self.full_range = full_range;
                    self.unreadable_sps = false;
                    (id, verdict)
                }
                Err(Some(id)) => (id, SpsVerdict::Unparseable),
                Err(None) => {
                    self.unreadable_sps = true;
                    continue;
                }
            };
            match self.sps.iter_mut().find(|(i, _, _)| *i == id) {
                Some(e) => {
                    e.1.clear();
                    e.1.extend_from_slice(nal);
                    e.2 = verdict;
                }
                // Ids are 0..=31 (checked): at most 32 entries.
                None => self.sps.push((id, nal.to_vec(), verdict)),
            }
        }
        if !changed {
            return;
        }
        let bad = self.sps.iter().find_map(|(_, _, v)| v.refusal());
        let unreadable = self.unreadable_sps.then_some(SpsVerdict::Unparseable);
        let refused = bad.or_else(|| unreadable.and_then(SpsVerdict::refusal));
        if refused != self.refused {
            self.refused = refused;
            if let Some(r) = refused {
                out(VideoOut::Refused(r));
            }
        }
    }

    /// Remembers a PPS (for [`VideoDecoder::restart`]).
    fn keep_pps(&mut self, nal: &[u8]) {
        if self.pps.iter().any(|(_, raw)| raw.as_slice() == nal) {
            return;
        }
        let Some(id) = pps_id(nal) else {
            return;
        };
        match self.pps.iter_mut().find(|(i, _)| *i == id) {
            Some(e) => {
                e.1.clear();
                e.1.extend_from_slice(nal);
            }
            // Ids are 0..=255 (checked): at most 256 entries.
            None => self.pps.push((id, nal.to_vec())),
        }
    }

    /// Calls openh264 on one access unit. Returns (decoding state, picture available).
    fn decode_raw(&mut self, pts: i64, data: &[u8]) -> (i32, bool) {
        let Some(dec) = self.dec.as_mut() else {
            return (0, false);
        };
        let mut dst = [null_mut::<u8>(); 3];
        let mut info = SBufferInfo {
            uiInBsTimeStamp: pts as u64,
            ..SBufferInfo::default()
        };
        let t0 = Instant::now();
        if crate::fault::fault("slow_openh264") {
            std::thread::sleep(crate::fault::SLOW_OPENH264);
        }
        // SAFETY: `data` is a live slice of `len` bytes (checked to fit i32); `dst` has
        // room for three plane pointers; `info` is a valid, initialised out-param.
        let state = unsafe {
            dec.raw_api().decode_frame_no_delay(
                data.as_ptr(),
                data.len() as i32,
                dst.as_mut_ptr(),
                &raw mut info,
            )
        };
        self.stats.decode_ns += t0.elapsed().as_nanos() as u64;
        let frame = self.take_frame(&dst, &info);
        (state as i32, frame)
    }

    /// Reduces the picture openh264 returned (if any) into `self.thumb`.
    fn take_frame(&mut self, dst: &[*mut u8; 3], info: &SBufferInfo) -> bool {
        if info.iBufferStatus != 1 || dst[0].is_null() {
            return false;
        }
        // SAFETY: iBufferStatus == 1 means openh264 filled the union's system-buffer
        // member and dst[0] points at a luma plane of iHeight rows of iStride[0] bytes,
        // valid until the next decode call; we read it before returning.
        let (w, h, stride, y) = unsafe {
            let sb = info.UsrData.sSystemBuffer;
            let (w, h, stride) = (sb.iWidth, sb.iHeight, sb.iStride[0]);
            if w <= 0 || h <= 0 || stride < w {
                return false;
            }
            let y = std::slice::from_raw_parts(dst[0], h as usize * stride as usize);
            (w as usize, h as usize, stride as usize, y)
        };
        let t0 = Instant::now();
        self.thumb.pts = info.uiOutYuvTimeStamp as i64;
        self.thumb.full_range = self.full_range;
        self.reducer.reduce(y, stride, w, h, &mut self.thumb);
        self.planes = None;
        let cs = info_c_stride(info);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        if !dst[1].is_null() && !dst[2].is_null() && cs >= cw {
            // SAFETY: as for the luma plane: with iBufferStatus == 1, dst[1] and dst[2]
            // point at the 4:2:0 chroma planes of ⌈height/2⌉ rows of iStride[1] bytes
            // each, valid until the next decode call; they are read before returning.
            let (u, v) = unsafe {
                (
                    std::slice::from_raw_parts(dst[1], ch * cs),
                    std::slice::from_raw_parts(dst[2], ch * cs),
                )
            };
            self.reducer
                .reduce_chroma(u, v, cs, cw, ch, &mut self.thumb);
        }
        if self.previews && !dst[1].is_null() && !dst[2].is_null() && cs > 0 {
            self.planes = Some(RawPlanes {
                y: dst[0],
                u: dst[1],
                v: dst[2],
                y_stride: stride,
                c_stride: cs,
                width: w,
                height: h,
            });
        }
        self.stats.reduce_ns += t0.elapsed().as_nanos() as u64;
        true
    }
}

/// Where openh264's output planes are (see [`VideoDecoder::picture`]).
#[derive(Debug, Clone, Copy)]
struct RawPlanes {
    y: *const u8,
    u: *const u8,
    v: *const u8,
    y_stride: usize,
    c_stride: usize,
    width: usize,
    height: usize,
}

// SAFETY: the pointers are only dereferenced in `VideoDecoder::picture`, on the thread
// that owns the decoder, between the openh264 call that filled them and the next one;
// moving the (cleared) decoder to another thread moves no live pointer.
unsafe impl Send for RawPlanes {}

/// The chroma stride of a returned picture (0 when openh264 gave none).
fn info_c_stride(info: &SBufferInfo) -> usize {
    // SAFETY: only called after iBufferStatus == 1 (the system-buffer member is set).
    let s = unsafe { info.UsrData.sSystemBuffer.iStride[1] };
    usize::try_from(s).unwrap_or(0)
}

/// A new openh264 decoder as vqprobe runs it: one thread, no flush after each
/// picture (B-frames are reordered inside), error concealment off.
fn new_openh264() -> Result<Decoder> {
    let cfg = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    Decoder::with_api_config(OpenH264API::from_source(), cfg)
        .map_err(|e| Error::Decoder(format!("openh264 init: {e}")))
}

/// Idle openh264 instances shared by the streams that decode key pictures only (see
/// [`VideoDecoder::release`]). An instance holds about 14 MiB at 720p (its bitstream
/// buffer, per-macroblock arrays and reference-plus-two pictures, all touched), and
/// making one costs about 6 times an IDR decode (page faults); a stream that decodes
/// one key picture in 2 s needs it for about 1/1000 of the time. So the streams that
/// only watch share a few: memory per stream no longer carries a decoder.
///
/// Bound: at most [`DecoderPool::MAX_IDLE`] idle instances; one given back to a full
/// pool is dropped (counted). Instances in use belong to their streams (at most one
/// each), so the total is bounded by the streams.
pub struct DecoderPool {
    idle: std::sync::Mutex<Vec<Decoder>>,
    stats: std::sync::Mutex<PoolStats>,
}

/// Counters of the decoder pool (process-wide).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Instances taken from the pool.
    pub reused: u64,
    /// Instances made because the pool was empty.
    pub made: u64,
    /// Instances dropped: the pool was full, or the instance had decoded other than
    /// IDR pictures (after a re-decode) and is not lent to another stream.
    pub dropped: u64,
    /// Idle instances now.
    pub idle: u64,
}

impl DecoderPool {
    /// Idle instances kept: enough for the decode threads that run at once on a
    /// small box; more are made on demand and dropped when given back.
    pub const MAX_IDLE: usize = 4;

    const fn new() -> Self {
        DecoderPool {
            idle: std::sync::Mutex::new(Vec::new()),
            stats: std::sync::Mutex::new(PoolStats {
                reused: 0,
                made: 0,
                dropped: 0,
                idle: 0,
            }),
        }
    }

    fn take(&self) -> Option<Decoder> {
        let d = self.idle.lock().ok()?.pop();
        if let Ok(mut s) = self.stats.lock() {
            if d.is_some() {
                s.reused += 1;
                s.idle = s.idle.saturating_sub(1);
            } else {
                s.made += 1;
            }
        }
        d
    }

    fn put(&self, d: Decoder) {
        let kept = match self.idle.lock() {
            Ok(mut idle) if idle.len() < Self::MAX_IDLE => {
                idle.push(d);
                true
            }
            _ => false,
        };
        if let Ok(mut s) = self.stats.lock() {
            if kept {
                s.idle += 1;
            } else {
                s.dropped += 1;
            }
        }
    }

    fn count_dropped(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.dropped += 1;
        }
    }

    /// The pool's counters.
    pub fn stats() -> PoolStats {
        POOL.stats.lock().map(|s| *s).unwrap_or_default()
    }
}

static POOL: DecoderPool = DecoderPool::new();

/// What an SPS allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpsVerdict {
    Ok,
    /// Larger than `max_pixels` (width, height).
    TooLarge(u32, u32),
    /// The decoder's pictures would exceed the memory limit (width, height).
    OverMemory(u32, u32),
    /// Does not parse (or its size cannot be computed).
    Unparseable,
    /// A format openh264 cannot decode, with the picture size (0 × 0 when unknown).
    Unsupported(RefuseReason, u32, u32),
}

impl SpsVerdict {
    /// The refusal this verdict makes, if any.
    fn refusal(self) -> Option<Refusal> {
        let (reason, width, height) = match self {
            SpsVerdict::Ok => return None,
            SpsVerdict::TooLarge(w, h) => (RefuseReason::AboveMaxResolution, w, h),
            SpsVerdict::OverMemory(w, h) => (RefuseReason::DecoderMemory, w, h),
            SpsVerdict::Unparseable => (RefuseReason::UnparseableSps, 0, 0),
            SpsVerdict::Unsupported(r, w, h) => (r, w, h),
        };
        Some(Refusal {
            reason,
            width,
            height,
        })
    }
}

/// The SPS fields that decide whether openh264 can decode a stream at all: its
/// `ParseSps` rejects `chroma_format_idc` > 1, any bit depth but 8 and
/// `frame_mbs_only_flag` = 0, after which every slice fails. 4:0:0 (monochrome) it
/// decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpsFormat {
    /// 0 (4:0:0) to 3 (4:4:4).
    chroma_format_idc: u32,
    /// The larger of the luma and chroma bit depths (8 to 14).
    bit_depth: u32,
    /// None when the SPS could not be read as far as `frame_mbs_only_flag`.
    frame_mbs_only: Option<bool>,
}

impl SpsFormat {
    /// What in this format openh264 cannot decode, in [`RefuseReason`]'s order.
    fn unsupported(&self) -> Option<RefuseReason> {
        match self.chroma_format_idc {
            2 => return Some(RefuseReason::Chroma422),
            3 => return Some(RefuseReason::Chroma444),
            _ => {}
        }
        match self.bit_depth {
            ..=8 => {}
            9 | 10 => return Some(RefuseReason::High10),
            _ => return Some(RefuseReason::HighBitDepth),
        }
        (self.frame_mbs_only == Some(false)).then_some(RefuseReason::Interlaced)
    }

    /// The format of an SPS h264-reader parsed; None for an invalid chroma format.
    fn of(sps: &h264_reader::nal::sps::SeqParameterSet) -> Option<SpsFormat> {
        use h264_reader::nal::sps::{ChromaFormat, FrameMbsFlags};
        let c = &sps.chroma_info;
        let chroma_format_idc = match c.chroma_format {
            ChromaFormat::Monochrome => 0,
            ChromaFormat::YUV420 => 1,
            ChromaFormat::YUV422 => 2,
            ChromaFormat::YUV444 => 3,
            ChromaFormat::Invalid(_) => return None,
        };
        Some(SpsFormat {
            chroma_format_idc,
            bit_depth: 8 + u32::from(c.bit_depth_luma_minus8.max(c.bit_depth_chroma_minus8)),
            frame_mbs_only: Some(sps.frame_mbs_flags == FrameMbsFlags::Frames),
        })
    }

    /// Reads the format from the start of an SPS RBSP that h264-reader cannot parse
    /// whole (a VUI it rejects, say), so that a High 4:4:4 or interlaced stream is
    /// refused for what it is, not as unparseable. None when not even the chroma format
    /// and bit depths can be read, or they are out of range.
    fn read(rbsp: &[u8]) -> Option<SpsFormat> {
        use h264_reader::rbsp::{BitRead, BitReader};
        let mut r = BitReader::new(rbsp);
        let profile_idc: u8 = r.read(8, "profile_idc").ok()?;
        r.skip(16, "constraint_flags, level_idc").ok()?;
        r.read_ue("seq_parameter_set_id").ok()?;
        // The profiles with chroma information: the same list as h264-reader's and
        // openh264's.
        let chroma_info = h264_reader::nal::sps::ProfileIdc::from(profile_idc).has_chroma_info();
        let mut f = SpsFormat {
            chroma_format_idc: 1,
            bit_depth: 8,
            frame_mbs_only: None,
        };
        if chroma_info {
            f.chroma_format_idc = r.read_ue("chroma_format_idc").ok()?;
            if f.chroma_format_idc > 3 {
                return None;
            }
            if f.chroma_format_idc == 3 {
                r.read_bool("separate_colour_plane_flag").ok()?;
            }
            let luma = r.read_ue("bit_depth_luma_minus8").ok()?;
            let chroma = r.read_ue("bit_depth_chroma_minus8").ok()?;
            if luma > 6 || chroma > 6 {
                return None;
            }
            f.bit_depth = 8 + luma.max(chroma);
        }
        f.frame_mbs_only = read_frame_mbs_only(&mut r, chroma_info.then_some(f.chroma_format_idc));
        Some(f)
    }
}

/// Reads on from the bit depths (or from the SPS id without chroma information) to
/// `frame_mbs_only_flag`. Every loop is bounded by the syntax (12 scaling lists of at
/// most 64 entries, 255 offsets for reference frames).
fn read_frame_mbs_only(
    r: &mut impl h264_reader::rbsp::BitRead,
    chroma_format_idc: Option<u32>,
) -> Option<bool> {
    if let Some(cfi) = chroma_format_idc {
        r.read_bool("qpprime_y_zero_transform_bypass_flag").ok()?;
        if r.read_bool("seq_scaling_matrix_present_flag").ok()? {
            for i in 0..if cfi == 3 { 12 } else { 8 } {
                if !r.read_bool("seq_scaling_list_present_flag").ok()? {
                    continue;
                }
                let (mut last, mut next) = (8i64, 8i64);
                for _ in 0..if i < 6 { 16 } else { 64 } {
                    if next != 0 {
                        let delta = r.read_se("delta_scale").ok()?;
                        next = (last + i64::from(delta)).rem_euclid(256);
                    }
                    if next != 0 {
                        last = next;
                    }
                }
            }
        }
    }
    r.read_ue("log2_max_frame_num_minus4").ok()?;
    match r.read_ue("pic_order_cnt_type").ok()? {
        0 => {
            r.read_ue("log2_max_pic_order_cnt_lsb_minus4").ok()?;
        }
        1 => {
            r.read_bool("delta_pic_order_always_zero_flag").ok()?;
            r.read_se("offset_for_non_ref_pic").ok()?;
            r.read_se("offset_for_top_to_bottom_field").ok()?;
            let n = r.read_ue("num_ref_frames_in_pic_order_cnt_cycle").ok()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                r.read_se("offset_for_ref_frame").ok()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.read_ue("max_num_ref_frames").ok()?;
    r.read_bool("gaps_in_frame_num_value_allowed_flag").ok()?;
    r.read_ue("pic_width_in_mbs_minus1").ok()?;
    r.read_ue("pic_height_in_map_units_minus1").ok()?;
    r.read_bool("frame_mbs_only_flag").ok()
}

/// Parses an SPS NAL: Ok((id, verdict, full range)); Err(Some(id)) when only its id
/// could be read, Err(None) when not even that (or the id is out of range). What
/// openh264 cannot decode is refused for that reason even when the SPS does not parse
/// whole, as long as the fields that say so can be read.
fn check_sps(
    nal: &[u8],
    max_pixels: u64,
    max_decoder_bytes: u64,
) -> std::result::Result<(u32, SpsVerdict, bool), Option<u32>> {
    let rbsp = h264_reader::rbsp::decode_nal(nal).map_err(|_| None)?;
    let sps = match h264_reader::nal::sps::SeqParameterSet::from_bits(
        h264_reader::rbsp::BitReader::new(&rbsp[..]),
    ) {
        Ok(s) => s,
        Err(_) => {
            let id = sps_id(&rbsp).ok_or(None)?;
            return match SpsFormat::read(&rbsp).and_then(|f| f.unsupported()) {
                Some(reason) => Ok((id, SpsVerdict::Unsupported(reason, 0, 0), false)),
                None => Err(Some(id)),
            };
        }
    };
    let id = u32::from(sps.seq_parameter_set_id.id());
    let full_range = sps
        .vui_parameters
        .as_ref()
        .and_then(|v| v.video_signal_type.as_ref())
        .is_some_and(|s| s.video_full_range_flag);
    let Some(format) = SpsFormat::of(&sps) else {
        return Ok((id, SpsVerdict::Unparseable, full_range));
    };
    let verdict = match (format.unsupported(), sps.pixel_dimensions()) {
        (Some(reason), Ok((w, h))) => SpsVerdict::Unsupported(reason, w, h),
        (Some(reason), Err(_)) => SpsVerdict::Unsupported(reason, 0, 0),
        (None, Ok((w, h))) if u64::from(w) * u64::from(h) > max_pixels => {
            SpsVerdict::TooLarge(w, h)
        }
        (None, Ok((w, h))) if decoder_bytes(w, h, sps.max_num_ref_frames) > max_decoder_bytes => {
            SpsVerdict::OverMemory(w, h)
        }
        (None, Ok(_)) => SpsVerdict::Ok,
        (None, Err(_)) => SpsVerdict::Unparseable,
    };
    Ok((id, verdict, full_range))
}

/// What openh264 allocates for pictures of `w` × `h` with `refs` reference frames:
/// `refs + 2` pictures (`GetTargetRefListSize` in openh264's decoder.cpp), each padded
/// by 32 pixels on every side, 4:2:0, plus about 256 bytes of per-macroblock data
/// (motion vectors, reference indices, types) per picture.
pub fn decoder_bytes(w: u32, h: u32, refs: u32) -> u64 {
    let (w, h) = (u64::from(w), u64::from(h));
    let picture = (w + 64) * (h + 64) * 3 / 2 + w.div_ceil(16) * h.div_ceil(16) * 256;
    (u64::from(refs.min(16)) + 2) * picture
}

/// The `pic_parameter_set_id` (the first ue(v) after the header) of a PPS NAL; None if
/// unreadable or above 255.
fn pps_id(nal: &[u8]) -> Option<u32> {
    let rbsp = h264_reader::rbsp::decode_nal(nal).ok()?;
    let mut r = h264_reader::rbsp::BitReader::new(&rbsp[..]);
    let id = h264_reader::rbsp::BitRead::read_ue(&mut r, "pic_parameter_set_id").ok()?;
    (id <= 255).then_some(id)
}

/// The `seq_parameter_set_id` (ue(v) after profile, constraints and level) of an SPS
/// RBSP (NAL header removed) that does not parse as a whole; None if unreadable or
/// above 31.
fn sps_id(rbsp: &[u8]) -> Option<u32> {
    use h264_reader::rbsp::BitRead;
    let mut r = h264_reader::rbsp::BitReader::new(rbsp);
    r.skip(24, "profile_idc, constraint_flags, level_idc")
        .ok()?;
    let id = r.read_ue("seq_parameter_set_id").ok()?;
    (id <= 31).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_panics_and_counts() {
        let mut d = VideoDecoder::new(4096 * 2304).unwrap();
        let mut n_err = 0;
        let mut x: u32 = 99;
        for i in 0..200 {
            let mut buf = vec![0, 0, 0, 1, if i == 0 { 0x65 } else { 0x41 }];
            buf.extend((0..500).map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            }));
            d.decode(i * 3600, i == 0, &buf, &mut |o| {
                if matches!(o, VideoOut::Error { .. }) {
                    n_err += 1;
                }
            });
        }
        d.flush(&mut |_| {});
        assert_eq!(d.stats.errors, n_err);
        assert_eq!(d.stats.packets, 200);
    }

    /// A bit writer for hand-built SPS NAL units.
    #[derive(Default)]
    struct Bits(Vec<bool>);

    impl Bits {
        fn u(&mut self, n: u32, v: u32) {
            for i in (0..n).rev() {
                self.0.push((v >> i) & 1 == 1);
            }
        }
        fn ue(&mut self, v: u32) {
            let x = v + 1;
            let n = 32 - x.leading_zeros();
            self.u(n - 1, 0);
            self.u(n, x);
        }
        fn se(&mut self, v: i32) {
            self.ue(if v > 0 {
                2 * v as u32 - 1
            } else {
                2 * v.unsigned_abs()
            });
        }
        /// Stop bit, alignment, NAL header 0x67 and emulation prevention.
        fn sps_nal(mut self) -> Vec<u8> {
            self.u(1, 1);
            while self.0.len() % 8 != 0 {
                self.0.push(false);
            }
            let mut nal = vec![0x67];
            let mut zeros = 0;
            for c in self.0.chunks(8) {
                let b = c.iter().fold(0u8, |a, &x| (a << 1) | u8::from(x));
                if zeros >= 2 && b <= 3 {
                    nal.push(3);
                    zeros = 0;
                }
                nal.push(b);
                zeros = if b == 0 { zeros + 1 } else { 0 };
            }
            nal
        }
    }

    /// The fields of a hand-built SPS. The default: Baseline, id 0, 1280 × 720, POC
    /// type 2, frames only, no VUI.
    #[derive(Debug, Clone, Copy)]
    struct Spec {
        profile: u8,
        id: u32,
        w_mbs: u32,
        /// Map units: macroblock rows of a frame, or of a field when not frames only.
        h_mbs: u32,
        /// Written for the High profiles (100, 110, 122, 244, ...) only.
        chroma_format_idc: u32,
        separate_colour_plane: bool,
        bit_depth_luma: u32,
        bit_depth_chroma: u32,
        /// A scaling matrix with two lists (one 4×4 of 16 deltas, one 8×8 cut short).
        scaling_matrix: bool,
        poc_type: u32,
        frame_mbs_only: bool,
        mbaff: bool,
        /// A VUI flag with no VUI after it: h264-reader cannot parse the SPS whole.
        broken_vui: bool,
        max_num_ref_frames: u32,
    }

    impl Default for Spec {
        fn default() -> Self {
            Spec {
                profile: 66,
                id: 0,
                w_mbs: 80,
                h_mbs: 45,
                chroma_format_idc: 1,
                separate_colour_plane: false,
                bit_depth_luma: 8,
                bit_depth_chroma: 8,
                scaling_matrix: false,
                poc_type: 2,
                frame_mbs_only: true,
                mbaff: false,
                broken_vui: false,
                max_num_ref_frames: 1,
            }
        }
    }

    impl Spec {
        fn nal(&self) -> Vec<u8> {
            let mut b = Bits::default();
            b.u(8, u32::from(self.profile));
            b.u(8, 0);
            b.u(8, 40);
            b.ue(self.id);
            if h264_reader::nal::sps::ProfileIdc::from(self.profile).has_chroma_info() {
                b.ue(self.chroma_format_idc);
                if self.chroma_format_idc == 3 {
                    b.u(1, u32::from(self.separate_colour_plane));
                }
                b.ue(self.bit_depth_luma - 8);
                b.ue(self.bit_depth_chroma - 8);
                b.u(1, 0); // qpprime_y_zero_transform_bypass
                b.u(1, u32::from(self.scaling_matrix));
                if self.scaling_matrix {
                    for i in 0..if self.chroma_format_idc == 3 { 12 } else { 8 } {
                        match i {
                            // 16 deltas of +1: 9, 10, ..., 24.
                            0 => {
                                b.u(1, 1);
                                (0..16).for_each(|_| b.se(1));
                            }
                            // -8: the next scale is 0, the list ends (default list).
                            6 => {
                                b.u(1, 1);
                                b.se(-8);
                            }
                            _ => b.u(1, 0),
                        }
                    }
                }
            }
            b.ue(0); // log2_max_frame_num_minus4
            b.ue(self.poc_type);
            match self.poc_type {
                0 => b.ue(2),
                1 => {
                    b.u(1, 0);
                    b.se(-3);
                    b.se(2);
                    b.ue(2);
                    b.se(5);
                    b.se(-7);
                }
                _ => {}
            }
            b.ue(self.max_num_ref_frames);
            b.u(1, 0); // gaps_in_frame_num_allowed
            b.ue(self.w_mbs - 1);
            b.ue(self.h_mbs - 1);
            b.u(1, u32::from(self.frame_mbs_only));
            if !self.frame_mbs_only {
                b.u(1, u32::from(self.mbaff));
            }
            b.u(1, 1); // direct_8x8_inference
            b.u(1, 0); // no cropping
            b.u(1, u32::from(self.broken_vui));
            b.sps_nal()
        }
    }

    /// An SPS NAL (Baseline, POC type 2, no VUI) with id `id` for `w_mbs` × `h_mbs`
    /// macroblocks.
    fn sps(id: u32, w_mbs: u32, h_mbs: u32) -> Vec<u8> {
        Spec {
            id,
            w_mbs,
            h_mbs,
            ..Spec::default()
        }
        .nal()
    }

    fn au(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&[0, 0, 0, 1][..], n].concat())
            .collect()
    }

    /// Feeds (key, access unit) pairs; returns the refusals and the refused count.
    fn refusals(aus: &[(bool, Vec<u8>)]) -> (Vec<Refusal>, u64) {
        let (r, n, _) = decode_all(aus);
        (r, n)
    }

    /// Feeds (key, access unit) pairs to a decoder refusing more than 1280 × 720;
    /// returns the refusals, the refused count and the decode errors seen.
    fn decode_all(aus: &[(bool, Vec<u8>)]) -> (Vec<Refusal>, u64, u64) {
        let mut d = VideoDecoder::new(1280 * 720).unwrap();
        let mut refused = vec![];
        let mut errors = 0;
        for (key, data) in aus {
            d.decode(0, *key, data, &mut |o| match o {
                VideoOut::Refused(r) => refused.push(r),
                VideoOut::Error { .. } => errors += 1,
                VideoOut::Frame(..) => {}
            });
        }
        assert_eq!(d.stats.errors, errors);
        (refused, d.stats.refused, errors)
    }

    /// (width, height) of each refusal, checking its reason.
    fn sizes(r: &[Refusal], reason: RefuseReason) -> Vec<(u32, u32)> {
        r.iter()
            .map(|r| {
                assert_eq!(r.reason, reason, "{r:?}");
                (r.width, r.height)
            })
            .collect()
    }

    #[test]
    fn every_sps_of_every_access_unit_is_checked() {
        use RefuseReason::{AboveMaxResolution as Big, UnparseableSps};
        let small = sps(0, 80, 45); // 1280x720: at the limit, accepted
        let huge = sps(0, 256, 144); // 4096x2304
        let huge1 = sps(1, 256, 144);
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x21, 0xA0];
        let p: &[u8] = &[0x41, 0x9A, 0x21, 0x6C];
        let sanity = h264_reader::rbsp::decode_nal(&small).unwrap();
        let parsed = h264_reader::nal::sps::SeqParameterSet::from_bits(
            h264_reader::rbsp::BitReader::new(&sanity[..]),
        )
        .unwrap();
        assert_eq!(parsed.pixel_dimensions().unwrap(), (1280, 720));
        // A clean stream: nothing refused.
        assert_eq!(
            refusals(&[(true, au(&[&small, idr])), (false, au(&[p]))]).0,
            []
        );
        // The second SPS of a key frame's access unit is oversized.
        let (r, _) = refusals(&[(true, au(&[&small, &huge1, idr]))]);
        assert_eq!(sizes(&r, Big), [(4096, 2304)]);
        // An oversized SPS in the middle of the stream, in a non-key access unit: that
        // access unit and the next are refused.
        let (r, n) = refusals(&[
            (true, au(&[&small, idr])),
            (false, au(&[&huge, p])),
            (false, au(&[p])),
        ]);
        assert_eq!((sizes(&r, Big), n), (vec![(4096, 2304)], 2));
        // An SPS that does not parse is refused (0 x 0: size unknown), not accepted.
        let (r, _) = refusals(&[(true, au(&[&small, idr])), (false, au(&[&[0x67, 0x42], p]))]);
        assert_eq!(sizes(&r, UnparseableSps), [(0, 0)]);
        // A good SPS for the same id lifts the refusal; one for another id does not.
        let (r, n) = refusals(&[
            (true, au(&[&small, &huge1, idr])),
            (true, au(&[&small, idr])),
            (true, au(&[&sps(1, 80, 45), idr])),
            (false, au(&[p])),
        ]);
        assert_eq!((sizes(&r, Big), n), (vec![(4096, 2304)], 2));
    }

    #[test]
    fn an_sps_whose_pictures_exceed_the_memory_limit_is_refused() {
        // 720p with 1 reference frame: 3 pictures of 1344 × 784 × 1.5 + 3600 × 256 B.
        assert_eq!(decoder_bytes(1280, 720, 1), 3 * (1_580_544 + 921_600));
        let limit = decoder_bytes(1280, 720, 4);
        let nal = |refs| {
            Spec {
                max_num_ref_frames: refs,
                ..Spec::default()
            }
            .nal()
        };
        let v = |refs| check_sps(&nal(refs), u64::MAX, limit).map(|(_, v, _)| v);
        assert_eq!(v(4), Ok(SpsVerdict::Ok));
        assert_eq!(v(5), Ok(SpsVerdict::OverMemory(1280, 720)));
        let r = SpsVerdict::OverMemory(1280, 720).refusal().unwrap();
        assert_eq!(r.reason.as_str(), "h264_decoder_memory");
        // Through the decoder: refused, nothing decoded.
        let mut d = VideoDecoder::new(u64::MAX)
            .unwrap()
            .with_memory_limit(limit);
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x21, 0xA0];
        let mut refusals = vec![];
        d.decode(0, true, &au(&[&nal(16), idr]), &mut |o| {
            if let VideoOut::Refused(r) = o {
                refusals.push(r.reason);
            }
        });
        assert_eq!(refusals, [RefuseReason::DecoderMemory]);
        assert_eq!((d.stats.refused, d.stats.decoded), (1, 0));
    }

    /// The verdict on a hand-built SPS, refusing more than 1920 × 1088.
    fn verdict(spec: Spec) -> std::result::Result<SpsVerdict, Option<u32>> {
        check_sps(&spec.nal(), 1920 * 1088, u64::MAX).map(|(id, v, _)| {
            assert_eq!(id, spec.id);
            v
        })
    }

    /// Whether h264-reader parses a hand-built SPS whole.
    fn h264_reader_parses(spec: Spec) -> bool {
        let nal = spec.nal();
        let rbsp = h264_reader::rbsp::decode_nal(&nal).unwrap();
        h264_reader::nal::sps::SeqParameterSet::from_bits(h264_reader::rbsp::BitReader::new(
            &rbsp[..],
        ))
        .is_ok()
    }

    #[test]
    fn what_openh264_cannot_decode_is_refused_with_its_reason() {
        use RefuseReason::*;
        use SpsVerdict::Unsupported as U;
        let high = Spec {
            profile: 100,
            id: 3,
            ..Spec::default()
        };
        assert_eq!(verdict(high), Ok(SpsVerdict::Ok));
        assert_eq!(
            verdict(Spec {
                poc_type: 0,
                ..high
            }),
            Ok(SpsVerdict::Ok)
        );
        // A scaling matrix is read past (8 lists; 12 with 4:4:4 below).
        let scaled = Spec {
            scaling_matrix: true,
            ..high
        };
        assert!(h264_reader_parses(scaled));
        assert_eq!(verdict(scaled), Ok(SpsVerdict::Ok));
        // 4:0:0 (monochrome): openh264 decodes it, so it is not refused.
        let mono = Spec {
            chroma_format_idc: 0,
            ..high
        };
        assert_eq!(verdict(mono), Ok(SpsVerdict::Ok));

        // Bit depth: 9 or 10 bits (luma or chroma) is High 10; 11 to 14 bits is beyond.
        let deep = |luma, chroma| Spec {
            profile: 110,
            bit_depth_luma: luma,
            bit_depth_chroma: chroma,
            ..high
        };
        assert_eq!(verdict(deep(10, 10)), Ok(U(High10, 1280, 720)));
        assert_eq!(verdict(deep(8, 9)), Ok(U(High10, 1280, 720)));
        assert_eq!(verdict(deep(9, 8)), Ok(U(High10, 1280, 720)));
        let p444 = |luma, chroma| Spec {
            profile: 244,
            ..deep(luma, chroma)
        };
        assert_eq!(verdict(p444(12, 12)), Ok(U(HighBitDepth, 1280, 720)));
        assert_eq!(verdict(p444(14, 8)), Ok(U(HighBitDepth, 1280, 720)));
        // A 10-bit monochrome stream is refused for its depth.
        let mono10 = Spec {
            chroma_format_idc: 0,
            ..deep(10, 10)
        };
        assert_eq!(verdict(mono10), Ok(U(High10, 1280, 720)));

        // Chroma format: 4:2:2 and 4:4:4, at any depth (the format is named first).
        let c422 = Spec {
            profile: 122,
            chroma_format_idc: 2,
            ..high
        };
        assert_eq!(verdict(c422), Ok(U(Chroma422, 1280, 720)));
        let c422_10 = Spec {
            bit_depth_luma: 10,
            bit_depth_chroma: 10,
            ..c422
        };
        assert_eq!(verdict(c422_10), Ok(U(Chroma422, 1280, 720)));
        let c444 = Spec {
            profile: 244,
            chroma_format_idc: 3,
            ..high
        };
        assert_eq!(verdict(c444), Ok(U(Chroma444, 1280, 720)));
        let planes = Spec {
            separate_colour_plane: true,
            scaling_matrix: true,
            ..c444
        };
        assert!(h264_reader_parses(planes));
        assert_eq!(verdict(planes), Ok(U(Chroma444, 1280, 720)));

        // Interlaced: frame_mbs_only_flag = 0, MBAFF or not (the height counts fields:
        // 34 map units of 2 macroblock rows).
        let mbaff = Spec {
            w_mbs: 120,
            h_mbs: 34,
            frame_mbs_only: false,
            mbaff: true,
            ..high
        };
        assert_eq!(verdict(mbaff), Ok(U(Interlaced, 1920, 1088)));
        let paff = Spec {
            mbaff: false,
            ..mbaff
        };
        assert_eq!(verdict(paff), Ok(U(Interlaced, 1920, 1088)));
        // Baseline cannot be interlaced, but its SPS can say so: refused all the same.
        let base_i = Spec {
            profile: 66,
            ..mbaff
        };
        assert_eq!(verdict(base_i), Ok(U(Interlaced, 1920, 1088)));
        // Interlaced and too large: the reason is the interlacing, with the size.
        let big_i = Spec {
            w_mbs: 256,
            h_mbs: 72,
            ..mbaff
        };
        assert_eq!(verdict(big_i), Ok(U(Interlaced, 4096, 2304)));
        // Interlaced 4:2:2 10-bit: the chroma format is named.
        let i422 = Spec {
            frame_mbs_only: false,
            mbaff: true,
            ..c422_10
        };
        assert_eq!(verdict(i422), Ok(U(Chroma422, 1280, 1440)));
        // High 10 interlaced: the depth is named.
        let i10 = Spec {
            frame_mbs_only: false,
            ..deep(10, 10)
        };
        assert_eq!(verdict(i10), Ok(U(High10, 1280, 1440)));
    }

    #[test]
    fn the_reason_survives_an_sps_h264_reader_cannot_parse_whole() {
        use RefuseReason::*;
        use SpsVerdict::Unsupported as U;
        let broken = Spec {
            profile: 100,
            id: 7,
            broken_vui: true,
            ..Spec::default()
        };
        assert!(!h264_reader_parses(broken));
        // A 4:2:0 8-bit progressive SPS that does not parse stays unparseable (its
        // id is known).
        assert_eq!(verdict(broken), Err(Some(7)));
        for (spec, reason) in [
            (
                Spec {
                    profile: 244,
                    chroma_format_idc: 3,
                    scaling_matrix: true,
                    ..broken
                },
                Chroma444,
            ),
            (
                Spec {
                    profile: 122,
                    chroma_format_idc: 2,
                    ..broken
                },
                Chroma422,
            ),
            (
                Spec {
                    profile: 110,
                    bit_depth_luma: 10,
                    ..broken
                },
                High10,
            ),
            (
                Spec {
                    profile: 244,
                    bit_depth_chroma: 12,
                    ..broken
                },
                HighBitDepth,
            ),
            // frame_mbs_only_flag lies past the scaling lists and the POC fields.
            (
                Spec {
                    frame_mbs_only: false,
                    mbaff: true,
                    scaling_matrix: true,
                    ..broken
                },
                Interlaced,
            ),
            (
                Spec {
                    frame_mbs_only: false,
                    poc_type: 1,
                    ..broken
                },
                Interlaced,
            ),
            (
                Spec {
                    profile: 66,
                    frame_mbs_only: false,
                    poc_type: 0,
                    ..broken
                },
                Interlaced,
            ),
        ] {
            assert!(!h264_reader_parses(spec), "{spec:?}");
            assert_eq!(verdict(spec), Ok(U(reason, 0, 0)), "{spec:?}");
        }
        // Cut short right after the bit depths: the chroma format still says why.
        let mut cut = Spec {
            profile: 122,
            chroma_format_idc: 2,
            ..broken
        }
        .nal();
        cut.truncate(6);
        assert_eq!(
            check_sps(&cut, 1920 * 1088, u64::MAX).map(|(id, v, _)| (id, v)),
            Ok((7, U(Chroma422, 0, 0)))
        );
    }

    #[test]
    fn the_sps_id_of_an_sps_that_does_not_parse_is_read_after_the_level() {
        for id in [0, 1, 5, 31] {
            let nal = Spec {
                id,
                broken_vui: true,
                ..Spec::default()
            }
            .nal();
            let rbsp = h264_reader::rbsp::decode_nal(&nal).unwrap();
            assert_eq!(sps_id(&rbsp), Some(id));
        }
    }

    /// Access units of `n` pictures of flat luma `y` (`w` × `h`), coded by openh264's
    /// encoder: an IDR (with SPS and PPS) and P pictures.
    fn coded(w: usize, h: usize, y: u8, n: usize) -> Vec<Vec<u8>> {
        let mut enc = openh264::encoder::Encoder::new().unwrap();
        (0..n)
            .map(|_| {
                let mut yuv = vec![128u8; w * h * 3 / 2];
                yuv[..w * h].fill(y);
                let buf = openh264::formats::YUVBuffer::from_vec(yuv, w, h);
                enc.encode(&buf).unwrap().to_vec()
            })
            .collect()
    }

    /// Decodes one key picture and releases the decoder; (width, height, mean luma).
    fn key_picture(d: &mut VideoDecoder, pts: i64, au: &[u8]) -> (u16, u16, f32) {
        let mut got = None;
        let mut out = |o: VideoOut<'_>| match o {
            VideoOut::Frame(t, _) => got = Some((t.width, t.height, t.luma_mean)),
            other => panic!("{other:?}"),
        };
        d.decode(pts, true, au, &mut out);
        d.flush(&mut out);
        d.release();
        got.expect("a picture")
    }

    #[test]
    fn released_decoders_are_lent_to_other_streams_and_decode_their_key_pictures() {
        let dark = coded(64, 64, 40, 1);
        let bright = coded(96, 48, 200, 1);
        let before = DecoderPool::stats();
        let mut a = VideoDecoder::new(1 << 20).unwrap();
        let mut b = VideoDecoder::new(1 << 20).unwrap();
        for round in 0..3 {
            let pts = round * 90_000;
            let (w, h, y) = key_picture(&mut a, pts, &dark[0]);
            assert_eq!((w, h), (64, 64), "round {round}");
            assert!((y - 40.0).abs() < 6.0, "round {round}: luma {y}");
            let (w, h, y) = key_picture(&mut b, pts, &bright[0]);
            assert_eq!((w, h), (96, 48), "round {round}");
            assert!((y - 200.0).abs() < 6.0, "round {round}: luma {y}");
        }
        assert!(a.dec.is_none() && b.dec.is_none(), "released");
        assert_eq!((a.stats.frames, a.stats.errors), (3, 0));
        assert_eq!((b.stats.frames, b.stats.errors), (3, 0));
        let after = DecoderPool::stats();
        // Four acquisitions after the first releases (other tests may add theirs).
        assert!(
            after.reused + after.made >= before.reused + before.made + 4,
            "{before:?} {after:?}"
        );
    }

    #[test]
    fn a_decoder_that_decoded_p_pictures_is_not_lent() {
        let aus = coded(64, 64, 90, 3);
        let before = DecoderPool::stats();
        let mut d = VideoDecoder::new(1 << 20).unwrap();
        let mut frames = 0;
        for (i, au) in aus.iter().enumerate() {
            d.decode(i as i64 * 3600, i == 0, au, &mut |o| {
                if let VideoOut::Frame(..) = o {
                    frames += 1;
                }
            });
        }
        d.flush(&mut |o| {
            if let VideoOut::Frame(..) = o {
                frames += 1;
            }
        });
        assert_eq!(frames, 3);
        assert!(!d.clean);
        // Its last picture was a P picture: it is kept (a fresh one could not decode
        // the next non-IDR picture).
        d.release();
        assert!(d.dec.is_some());
        // After an IDR it is given up, and not lent: it decoded P pictures.
        let mut out = |_: VideoOut<'_>| {};
        d.decode(15_000, true, &aus[0], &mut out);
        d.flush(&mut out);
        d.release();
        assert!(d.dec.is_none());
        assert!(DecoderPool::stats().dropped > before.dropped);
        // Taken again, it starts from the parameter sets in force: the next key
        // picture decodes.
        let (w, h, y) = key_picture(&mut d, 20_000, &aus[0]);
        assert_eq!((w, h), (64, 64));
        assert!((y - 90.0).abs() < 6.0, "{y}");
    }

    #[test]
    fn an_interlaced_stream_is_refused_not_decoded_into_errors() {
        let interlaced = Spec {
            profile: 100,
            h_mbs: 23,
            frame_mbs_only: false,
            mbaff: true,
            ..Spec::default()
        }
        .nal();
        let progressive = Spec {
            profile: 100,
            ..Spec::default()
        }
        .nal();
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x21, 0xA0];
        let p: &[u8] = &[0x41, 0x9A, 0x21, 0x6C];
        let (r, n, errors) = decode_all(&[
            (true, au(&[&interlaced, idr])),
            (false, au(&[p])),
            (false, au(&[p])),
            (true, au(&[&interlaced, idr])),
        ]);
        assert_eq!(
            r,
            [Refusal {
                reason: RefuseReason::Interlaced,
                width: 1280,
                height: 736
            }]
        );
        assert_eq!((n, errors), (4, 0), "nothing reaches openh264");
        // A progressive SPS for the same id lifts the refusal: decoding resumes.
        let (r, n, _) = decode_all(&[
            (true, au(&[&interlaced, idr])),
            (true, au(&[&progressive, idr])),
        ]);
        assert_eq!((r.len(), n), (1, 1));
    }
}
