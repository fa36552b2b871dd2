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

use super::{Reducer, Thumb};
use crate::codec::h264::{annexb_nals, au_info, has_idr, parameter_sets_into};
use crate::error::{Error, Result};

/// Decoder outputs, in the order the decoder produced them.
#[derive(Debug)]
pub enum VideoOut<'a> {
    /// A decoded picture, summarised.
    Frame(&'a Thumb),
    /// The access unit with this PTS failed to decode (openh264 decoding-state bits).
    Error { pts: i64, state: i32 },
    /// An SPS announces a picture larger than the configured maximum, or does not
    /// parse (then 0 × 0): the track is not decoded until every SPS in force is
    /// acceptable again.
    Refused { width: u32, height: u32 },
}

/// Counters of the video decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct VideoStats {
    pub packets: u64,
    pub frames: u64,
    pub errors: u64,
    /// Access units skipped while waiting for the first key frame.
    pub skipped_before_key: u64,
    /// Access units not decoded because the resolution is above the limit.
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
    dec: Decoder,
    reducer: Reducer,
    thumb: Box<Thumb>,
    full_range: bool,
    max_pixels: u64,
    /// Dimensions of the refused SPS (0 × 0: one that does not parse); cleared once
    /// every SPS in force is acceptable.
    refused: Option<(u32, u32)>,
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
    /// Scratch for the parameter sets of a skipped access unit.
    params: Vec<u8>,
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

impl VideoDecoder {
    /// A decoder that refuses pictures larger than `max_pixels` (width × height).
    pub fn new(max_pixels: u64) -> Result<Self> {
        let cfg = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let dec = Decoder::with_api_config(OpenH264API::from_source(), cfg)
            .map_err(|e| Error::Decoder(format!("openh264 init: {e}")))?;
        Ok(VideoDecoder {
            dec,
            reducer: Reducer::default(),
            thumb: Box::default(),
            full_range: false,
            max_pixels,
            refused: None,
            started: false,
            sps: Vec::new(),
            unreadable_sps: false,
            gap: false,
            params: Vec::new(),
            stats: VideoStats::default(),
        })
    }

    /// Replaces openh264's decoder by a fresh one (the SPS checks and counters stay):
    /// before a GOP is decoded a second time from its key picture, and when a stream
    /// goes back to decoding key pictures only. openh264 is not made to be fed an
    /// earlier key picture again: after pictures were skipped and flushed it can run
    /// out of picture buffers (`dsOutOfMemory`) on the next P picture.
    pub fn restart(&mut self) -> Result<()> {
        let cfg = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        self.dec = Decoder::with_api_config(OpenH264API::from_source(), cfg)
            .map_err(|e| Error::Decoder(format!("openh264 init: {e}")))?;
        self.gap = false;
        // Parameter sets come again with the key picture the caller starts from.
        Ok(())
    }

    /// True while the current SPS is above the size limit.
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
        self.stats.decoded += 1;
        let idr = has_idr(data);
        let (mut state, frame) = self.decode_raw(pts, data);
        if idr {
            self.gap = false;
        } else if self.gap && key {
            // A non-IDR key picture after skipped pictures: openh264 notes references
            // it lost while skipping; the picture itself decodes (it is intra).
            state &= !(DS_REF_LOST | DS_REF_LIST_NULL_PTRS);
        }
        if state & !DS_FRAME_PENDING != 0 {
            self.stats.errors += 1;
            tracing::debug!(pts, state, idr, gap = self.gap, "decode error");
            out(VideoOut::Error { pts, state });
        }
        if frame {
            self.stats.frames += 1;
            out(VideoOut::Frame(&self.thumb));
        }
    }

    /// An access unit the decode level leaves out: its SPS are still checked (refusals
    /// and the signal range follow the stream) and its parameter sets still reach
    /// openh264, so the next decoded picture finds them.
    pub fn skip(&mut self, data: &[u8], out: &mut dyn FnMut(VideoOut<'_>)) {
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
        let info = au_info(data);
        if info.slices > 0 && (info.reference || self.gap) {
            self.gap = true;
        }
        if info.parameter_sets {
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
        let mut remaining: i32 = 0;
        // SAFETY: get_option writes one int for this option id.
        let rc = unsafe {
            self.dec.raw_api().get_option(
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
            // SAFETY: dst has room for three plane pointers, info is a valid out-param.
            unsafe {
                self.dec
                    .raw_api()
                    .flush_frame(dst.as_mut_ptr(), &raw mut info);
            }
            if self.take_frame(&dst, &info) {
                self.stats.frames += 1;
                out(VideoOut::Frame(&self.thumb));
            }
        }
    }

    /// Checks every SPS of an access unit: learns the signal range and enforces the
    /// size limit. An SPS that does not parse is refused (its size is unknown: it could
    /// be anything once openh264 reads it).
    fn inspect_sps(&mut self, data: &[u8], out: &mut dyn FnMut(VideoOut<'_>)) {
        let mut changed = false;
        for nal in annexb_nals(data) {
            if nal.first().map(|h| h & 0x1F) != Some(7) {
                continue;
            }
            // Streams repeat the same SPS on every key frame: parse only a new one.
            if self.sps.iter().any(|(_, raw, _)| raw.as_slice() == nal) {
                continue;
            }
            changed = true;
            let (id, verdict) = match check_sps(nal, self.max_pixels) {
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
        let bad = self.sps.iter().find_map(|(_, _, v)| match *v {
            SpsVerdict::Ok => None,
            SpsVerdict::TooLarge(w, h) => Some((w, h)),
            SpsVerdict::Unparseable => Some((0, 0)),
        });
        let refused = bad.or(self.unreadable_sps.then_some((0, 0)));
        if refused != self.refused {
            self.refused = refused;
            if let Some((width, height)) = refused {
                out(VideoOut::Refused { width, height });
            }
        }
    }

    /// Calls openh264 on one access unit. Returns (decoding state, picture available).
    fn decode_raw(&mut self, pts: i64, data: &[u8]) -> (i32, bool) {
        let mut dst = [null_mut::<u8>(); 3];
        let mut info = SBufferInfo {
            uiInBsTimeStamp: pts as u64,
            ..SBufferInfo::default()
        };
        let t0 = Instant::now();
        // SAFETY: `data` is a live slice of `len` bytes (checked to fit i32); `dst` has
        // room for three plane pointers; `info` is a valid, initialised out-param.
        let state = unsafe {
            self.dec.raw_api().decode_frame_no_delay(
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
        self.stats.reduce_ns += t0.elapsed().as_nanos() as u64;
        true
    }
}

/// What an SPS allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpsVerdict {
    Ok,
    /// Larger than `max_pixels` (width, height).
    TooLarge(u32, u32),
    /// Does not parse (or its size cannot be computed).
    Unparseable,
}

/// Parses an SPS NAL: Ok((id, verdict, full range)); Err(Some(id)) when only its id
/// could be read, Err(None) when not even that (or the id is out of range).
fn check_sps(
    nal: &[u8],
    max_pixels: u64,
) -> std::result::Result<(u32, SpsVerdict, bool), Option<u32>> {
    let rbsp = h264_reader::rbsp::decode_nal(nal).map_err(|_| None)?;
    let sps = match h264_reader::nal::sps::SeqParameterSet::from_bits(
        h264_reader::rbsp::BitReader::new(&rbsp[..]),
    ) {
        Ok(s) => s,
        Err(_) => return Err(sps_id(&rbsp)),
    };
    let id = u32::from(sps.seq_parameter_set_id.id());
    let full_range = sps
        .vui_parameters
        .as_ref()
        .and_then(|v| v.video_signal_type.as_ref())
        .is_some_and(|s| s.video_full_range_flag);
    let verdict = match sps.pixel_dimensions() {
        Ok((w, h)) if u64::from(w) * u64::from(h) > max_pixels => SpsVerdict::TooLarge(w, h),
        Ok(_) => SpsVerdict::Ok,
        Err(_) => SpsVerdict::Unparseable,
    };
    Ok((id, verdict, full_range))
}

/// The `seq_parameter_set_id` (ue(v) after header, profile, constraints and level) of
/// an SPS RBSP that does not parse as a whole; None if unreadable or above 31.
fn sps_id(rbsp: &[u8]) -> Option<u32> {
    let bytes = rbsp.get(4..)?;
    let bit = |n: usize| bytes.get(n / 8).map(|b| (b >> (7 - n % 8)) & 1);
    let mut zeros = 0;
    while bit(zeros)? == 0 {
        zeros += 1;
        if zeros > 5 {
            return None; // a value above 62: not an SPS id
        }
    }
    let mut v: u32 = 1;
    for k in 0..zeros {
        v = (v << 1) | u32::from(bit(zeros + 1 + k)?);
    }
    let id = v - 1;
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

    /// An SPS NAL (Baseline, POC type 2, no VUI) with id `id` for `w_mbs` × `h_mbs`
    /// macroblocks.
    fn sps(id: u32, w_mbs: u32, h_mbs: u32) -> Vec<u8> {
        let mut bits: Vec<bool> = vec![];
        let mut u = |bits: &mut Vec<bool>, n: u32, v: u32| {
            for i in (0..n).rev() {
                bits.push((v >> i) & 1 == 1);
            }
        };
        let ue = |bits: &mut Vec<bool>, u: &mut dyn FnMut(&mut Vec<bool>, u32, u32), v: u32| {
            let x = v + 1;
            let n = 32 - x.leading_zeros();
            u(bits, n - 1, 0);
            u(bits, n, x);
        };
        u(&mut bits, 8, 66);
        u(&mut bits, 8, 0);
        u(&mut bits, 8, 40);
        for v in [id, 0, 2, 1] {
            ue(&mut bits, &mut u, v);
        }
        u(&mut bits, 1, 0); // gaps_in_frame_num_allowed
        ue(&mut bits, &mut u, w_mbs - 1);
        ue(&mut bits, &mut u, h_mbs - 1);
        u(&mut bits, 4, 0b1100); // frame_mbs_only, direct_8x8, no cropping, no VUI
        u(&mut bits, 1, 1); // rbsp stop bit
        while bits.len() % 8 != 0 {
            bits.push(false);
        }
        let mut nal = vec![0x67];
        let mut zeros = 0;
        for c in bits.chunks(8) {
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

    fn au(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&[0, 0, 0, 1][..], n].concat())
            .collect()
    }

    /// Feeds (key, access unit) pairs; returns the refusals and the refused count.
    fn refusals(aus: &[(bool, Vec<u8>)]) -> (Vec<(u32, u32)>, u64) {
        let mut d = VideoDecoder::new(1280 * 720).unwrap();
        let mut refused = vec![];
        for (key, data) in aus {
            d.decode(0, *key, data, &mut |o| {
                if let VideoOut::Refused { width, height } = o {
                    refused.push((width, height));
                }
            });
        }
        (refused, d.stats.refused)
    }

    #[test]
    fn every_sps_of_every_access_unit_is_checked() {
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
        assert_eq!(r, [(4096, 2304)]);
        // An oversized SPS in the middle of the stream, in a non-key access unit: that
        // access unit and the next are refused.
        let (r, n) = refusals(&[
            (true, au(&[&small, idr])),
            (false, au(&[&huge, p])),
            (false, au(&[p])),
        ]);
        assert_eq!((r, n), (vec![(4096, 2304)], 2));
        // An SPS that does not parse is refused (0 x 0: size unknown), not accepted.
        let (r, _) = refusals(&[(true, au(&[&small, idr])), (false, au(&[&[0x67, 0x42], p]))]);
        assert_eq!(r, [(0, 0)]);
        // A good SPS for the same id lifts the refusal; one for another id does not.
        let (r, n) = refusals(&[
            (true, au(&[&small, &huge1, idr])),
            (true, au(&[&small, idr])),
            (true, au(&[&sps(1, 80, 45), idr])),
            (false, au(&[p])),
        ]);
        assert_eq!((r, n), (vec![(4096, 2304)], 2));
    }
}
