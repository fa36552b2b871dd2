//! Fragmented MP4 (CMAF, HLS fMP4) demuxer: an init section (`ftyp` + `moov`) gives the
//! tracks, each media segment (`styp`/`sidx`/`moof` + `mdat`) gives timestamped samples,
//! turned into the same [`Packet`]s the MPEG-TS demuxer produces: H.264 access units in
//! Annex B (SPS/PPS put in front of every sync sample) and AAC frames behind a 7-byte
//! ADTS header built from the AudioSpecificConfig, so the decoders need not know the
//! container.
//!
//! Boundaries: bytes in, packets out; no I/O, no clocks, no decoding.
//!
//! Layout: this file owns the demuxer's public API ([`Fmp4Demuxer`], [`Mp4Limits`],
//! [`Mp4Stats`], [`SampleRef`], [`Mp4Error`] re-exported), choosing the monitored tracks of
//! an init section, the media-segment side (`moof`/`traf`/`trun` into [`SampleRef`]s) and
//! packet building (AVCC → Annex B, ADTS framing). `boxes.rs` owns the bounds-checked
//! reader and box iteration; `moov.rs` owns one `trak` into a track configuration
//! (timescale, edit list, `avcC`, `esds`). Neither submodule reaches into the other's job
//! or into this file's state.
//!
//! Written by hand on purpose, like [`super::ts`]. The candidate crate (`mp4-atom` 0.17)
//! parses every box we need, but it requires Rust 1.88 (this crate promises 1.85), pulls
//! `num`, `derive_more` and a second `thiserror` into an edge binary, and decodes an
//! `mdat` by copying it. We read about ten box types, always from one segment held in
//! memory, so a bounded reader over byte slices is ~1,100 lines (three files) that are
//! easy to audit and to fuzz.
//!
//! Bounds: nothing is allocated from a size or count a header claims before it was checked
//! against the bytes present; the samples of one segment are capped
//! ([`Mp4Limits::max_samples`]), and so is each sample's size. Nothing here panics on any
//! input.
//!
//! Calling contract: [`Fmp4Demuxer::init`] with the init section (again whenever the
//! playlist's `EXT-X-MAP` changes), then [`Fmp4Demuxer::segment`] per media segment, which
//! lists its samples in decode order across tracks; [`Fmp4Demuxer::packet`] turns one
//! into a [`Packet`] (one at a time, so a segment is never held twice).
//!
//! ```
//! use vqprobe::ingest::mp4::{Fmp4Demuxer, Mp4Limits};
//! let mut d = Fmp4Demuxer::new(Mp4Limits::default());
//! assert!(d.init(b"not an mp4").is_err());
//! let mut samples = Vec::new();
//! assert!(d.segment(&[0u8; 16], &mut samples).is_err()); // no init yet
//! assert!(samples.is_empty());
//! ```

mod boxes;
mod moov;

pub use boxes::Mp4Error;

use super::{Codec, Elementary, Packet, ProgramInfo, Track};
use boxes::{boxes, child, err, Rd};
use moov::{parse_trak, stream_type, Defaults, Media, TrackCfg};

/// Caps on what one segment may make us hold.
#[derive(Debug, Clone, Copy)]
pub struct Mp4Limits {
    /// Samples of all tracks in one segment. 100 000 is ~30 min of 48 kHz AAC plus video.
    pub max_samples: usize,
    /// Largest video sample (one access unit); larger ones are skipped and counted.
    pub max_video_sample: usize,
    /// Bytes of SPS + PPS kept from `avcC`.
    pub max_param_sets: usize,
}

impl Default for Mp4Limits {
    fn default() -> Self {
        Mp4Limits {
            max_samples: 100_000,
            max_video_sample: super::pool::StreamBudget::default().max_access_unit(),
            max_param_sets: 64 << 10,
        }
    }
}

/// Counters, cumulative since the demuxer was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mp4Stats {
    /// Media segments parsed (successfully or not).
    pub segments: u64,
    /// Samples listed by `trun` boxes of the monitored tracks.
    pub samples: u64,
    /// Samples skipped: outside the segment, larger than the caps, or with broken NAL
    /// length prefixes.
    pub bad_samples: u64,
}

/// One sample of a segment: where its bytes are and when it plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRef {
    pub track: Track,
    /// Decode time, 90 kHz.
    pub dts: i64,
    /// Presentation time, 90 kHz (edit list applied).
    pub pts: i64,
    /// The sample flags say it is a sync sample (random access point).
    pub sync: bool,
    /// Byte range in the segment.
    pub offset: usize,
    pub size: usize,
}

/// The demuxer. See the module docs for the calling contract.
#[derive(Debug)]
pub struct Fmp4Demuxer {
    limits: Mp4Limits,
    stats: Mp4Stats,
    video: Option<TrackCfg>,
    audio: Option<TrackCfg>,
    program: Option<ProgramInfo>,
}

/// Sample flag: sample_is_non_sync_sample.
const NON_SYNC: u32 = 0x0001_0000;
/// Largest AAC frame an ADTS header can describe (13-bit length, 7-byte header).
const MAX_ADTS_PAYLOAD: usize = 0x1FFF - 7;

impl Fmp4Demuxer {
    pub fn new(limits: Mp4Limits) -> Self {
        Fmp4Demuxer {
            limits,
            stats: Mp4Stats::default(),
            video: None,
            audio: None,
            program: None,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &Mp4Stats {
        &self.stats
    }

    /// The tracks of the last init section.
    pub fn program(&self) -> Option<&ProgramInfo> {
        self.program.as_ref()
    }

    /// Reads an init section (`ftyp` + `moov`) and returns the program it describes.
    /// Replaces the tracks of an earlier init.
    pub fn init(&mut self, data: &[u8]) -> Result<ProgramInfo, Mp4Error> {
        let Some(moov) = child(data, b"moov")? else {
            return err("no 'moov' box in the init section");
        };
        let mut movie_timescale = 1000u32;
        if let Some(mvhd) = child(moov.body, b"mvhd")? {
            let mut r = Rd::new(mvhd.body, "mvhd");
            let (v, _) = r.full()?;
            r.skip(if v == 1 { 16 } else { 8 })?;
            movie_timescale = r.u32()?.max(1);
        }
        let mut video: Option<TrackCfg> = None;
        let mut audio: Option<TrackCfg> = None;
        let mut other = 0u32;
        for b in boxes(moov.body) {
            let b = b?;
            if &b.kind != b"trak" {
                continue;
            }
            let Some(t) = parse_trak(b.body, movie_timescale, &self.limits)? else {
                other += 1;
                continue;
            };
            let slot = if t.codec.is_video() {
                &mut video
            } else if t.codec.is_audio() {
                &mut audio
            } else {
                other += 1;
                continue;
            };
            // Prefer the codec we decode; otherwise the first track of the kind.
            let better = match slot {
                None => true,
                Some(cur) => {
                    !matches!(cur.codec, Codec::H264 | Codec::Aac)
                        && matches!(t.codec, Codec::H264 | Codec::Aac)
                }
            };
            if better {
                if slot.is_some() {
                    other += 1;
                }
                *slot = Some(t);
            } else {
                other += 1;
            }
        }
        // Sample defaults for fragments come from mvex/trex.
        if let Some(mvex) = child(moov.body, b"mvex")? {
            for b in boxes(mvex.body) {
                let b = b?;
                if &b.kind != b"trex" {
                    continue;
                }
                let mut r = Rd::new(b.body, "trex");
                r.full()?;
                let id = r.u32()?;
                r.u32()?;
                let d = Defaults {
                    duration: r.u32()?,
                    size: r.u32()?,
                    flags: Some(r.u32()?),
                };
                for t in [&mut video, &mut audio].into_iter().flatten() {
                    if t.id == id {
                        t.defaults = d;
                    }
                }
            }
        }
        if video.is_none() && audio.is_none() {
            return err("the init section has no video and no audio track");
        }
        let elementary = |t: &TrackCfg| Elementary {
            pid: u16::try_from(t.id).unwrap_or(u16::MAX),
            stream_type: stream_type(t.codec),
            codec: t.codec,
        };
        let program = ProgramInfo {
            video: video.as_ref().map(elementary),
            audio: audio.as_ref().map(elementary),
            other_streams: other,
        };
        self.video = video;
        self.audio = audio;
        self.program = Some(program.clone());
        Ok(program)
    }

    /// Lists the samples of one media segment (of the monitored tracks) in `out`, in
    /// decode order across tracks. `out` is cleared first. On a structural error the
    /// samples found before it stay in `out` and the error says what was wrong.
    pub fn segment(&mut self, data: &[u8], out: &mut Vec<SampleRef>) -> Result<(), Mp4Error> {
        out.clear();
        self.stats.segments += 1;
        if self.video.is_none() && self.audio.is_none() {
            return err("media segment before any init section");
        }
        let r = self.segment_inner(data, out);
        // Stable: each track stays in decode order; tracks interleave by time.
        out.sort_by_key(|s| s.dts);
        r
    }

    fn segment_inner(&mut self, data: &[u8], out: &mut Vec<SampleRef>) -> Result<(), Mp4Error> {
        let mut saw_moof = false;
        for b in boxes(data) {
            let b = b?;
            if &b.kind != b"moof" {
                continue;
            }
            saw_moof = true;
            let moof_start = b.start;
            // Without explicit offsets, each traf's data follows the previous one's.
            let mut prev_end = moof_start;
            for t in boxes(b.body) {
                let t = t?;
                if &t.kind == b"traf" {
                    prev_end = self.traf(t.body, data.len(), moof_start, prev_end, out)?;
                }
            }
        }
        if !saw_moof {
            return err("no 'moof' box in the media segment");
        }
        Ok(())
    }

    /// Parses one `traf`; returns where its sample data ended.
    fn traf(
        &mut self,
        body: &[u8],
        seg_len: usize,
        moof_start: usize,
        prev_end: usize,
        out: &mut Vec<SampleRef>,
    ) -> Result<usize, Mp4Error> {
        let Some(tfhd) = child(body, b"tfhd")? else {
            return err("'traf' without 'tfhd'");
        };
        let mut r = Rd::new(tfhd.body, "tfhd");
        let (_, flags) = r.full()?;
        let id = r.u32()?;
        let base_offset = if flags & 0x01 != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        if flags & 0x02 != 0 {
            r.u32()?;
        }
        let which = match (&self.video, &self.audio) {
            (Some(v), _) if v.id == id => Track::Video,
            (_, Some(a)) if a.id == id => Track::Audio,
            _ => return Ok(prev_end),
        };
        let cfg = match which {
            Track::Video => self.video.as_ref(),
            Track::Audio => self.audio.as_ref(),
        };
        let Some(cfg) = cfg else { return Ok(prev_end) };
        let mut d = cfg.defaults;
        if flags & 0x08 != 0 {
            d.duration = r.u32()?;
        }
        if flags & 0x10 != 0 {
            d.size = r.u32()?;
        }
        if flags & 0x20 != 0 {
            d.flags = Some(r.u32()?);
        }
        let base = match base_offset {
            Some(o) => usize::try_from(o).unwrap_or(usize::MAX),
            None if flags & 0x2_0000 != 0 => moof_start,
            None => prev_end,
        };
        let (timescale, shift) = (cfg.timescale, cfg.shift);
        let mut dts: u64 = match child(body, b"tfdt")? {
            Some(b) => {
                let mut r = Rd::new(b.body, "tfdt");
                let (v, _) = r.full()?;
                if v == 1 {
                    r.u64()?
                } else {
                    u64::from(r.u32()?)
                }
            }
            None => cfg.next_dts,
        };
        let mut data_end = base;
        for b in boxes(body) {
            let b = b?;
            if &b.kind != b"trun" {
                continue;
            }
            let mut r = Rd::new(b.body, "trun");
            let (version, tf) = r.full()?;
            let count = r.u32()? as usize;
            let mut pos = if tf & 0x01 != 0 {
                // i128: a 64-bit base plus a signed 32-bit offset cannot overflow it.
                let off = i128::from(r.u32()? as i32);
                let p = base as i128 + off;
                if p < 0 {
                    return err("'trun' data offset before the segment");
                }
                usize::try_from(p).unwrap_or(usize::MAX)
            } else {
                data_end
            };
            let first_flags = if tf & 0x04 != 0 { Some(r.u32()?) } else { None };
            let per = 4 * [0x100, 0x200, 0x400, 0x800]
                .iter()
                .filter(|&&f| tf & f != 0)
                .count();
            // Check the claimed count against the bytes present before looping.
            if count.saturating_mul(per) > r.left() {
                return err(format!(
                    "'trun' claims {count} samples, its box holds {}",
                    r.left().checked_div(per).unwrap_or(0)
                ));
            }
            if out.len().saturating_add(count) > self.limits.max_samples {
                return err(format!(
                    "more than {} samples in one segment",
                    self.limits.max_samples
                ));
            }
            if per == 0 && count > 0 && d.size == 0 {
                // Every sample would be empty: nothing to read, but time still advances.
                dts = dts.saturating_add(u64::from(d.duration).saturating_mul(count as u64));
                continue;
            }
            for i in 0..count {
                let dur = if tf & 0x100 != 0 {
                    r.u32()?
                } else {
                    d.duration
                };
                let size = if tf & 0x200 != 0 { r.u32()? } else { d.size } as usize;
                let sflags = if tf & 0x400 != 0 {
                    Some(r.u32()?)
                } else if i == 0 && first_flags.is_some() {
                    first_flags
                } else {
                    d.flags
                };
                let cts: i64 = if tf & 0x800 != 0 {
                    let v = r.u32()?;
                    if version == 0 {
                        i64::from(v)
                    } else {
                        i64::from(v as i32)
                    }
                } else {
                    0
                };
                self.stats.samples += 1;
                let end = pos.saturating_add(size);
                if end > seg_len {
                    self.stats.bad_samples += 1;
                    return err(format!(
                        "sample data beyond the segment ({end} > {seg_len} bytes)"
                    ));
                }
                let pts_ts = (dts as i128) + i128::from(cts) + i128::from(shift);
                out.push(SampleRef {
                    track: which,
                    dts: to_90k(dts as i128, timescale),
                    pts: to_90k(pts_ts, timescale),
                    // Unknown flags: assume sync; the IDR check decides for video.
                    sync: sflags.is_none_or(|f| f & NON_SYNC == 0),
                    offset: pos,
                    size,
                });
                pos = end;
                dts = dts.saturating_add(u64::from(dur));
            }
            data_end = pos;
        }
        let cfg = match which {
            Track::Video => self.video.as_mut(),
            Track::Audio => self.audio.as_mut(),
        };
        if let Some(c) = cfg {
            c.next_dts = dts;
        }
        Ok(data_end)
    }

    /// Turns a listed sample into a packet: Annex B video (parameter sets before sync
    /// samples) or one ADTS frame. None (and counted) when the sample is unusable.
    pub fn packet(&mut self, data: &[u8], s: &SampleRef) -> Option<Packet> {
        let bytes = data.get(s.offset..s.offset.checked_add(s.size)?)?;
        if bytes.is_empty() {
            return None;
        }
        let cfg = match s.track {
            Track::Video => self.video.as_ref()?,
            Track::Audio => self.audio.as_ref()?,
        };
        let out = match &cfg.media {
            Media::Avc {
                nal_len,
                param_sets,
            } => {
                if bytes.len() > self.limits.max_video_sample {
                    None
                } else {
                    avcc_to_annexb(bytes, *nal_len, param_sets, s.sync)
                }
            }
            Media::Aac { adts } => {
                if bytes.len() > MAX_ADTS_PAYLOAD {
                    None
                } else {
                    let len = bytes.len() + 7;
                    let mut v = Vec::with_capacity(len);
                    v.extend_from_slice(&[
                        0xFF,
                        0xF1,
                        adts[0],
                        adts[1] | ((len >> 11) & 0x3) as u8,
                        ((len >> 3) & 0xFF) as u8,
                        (((len & 0x7) << 5) as u8) | 0x1F,
                        0xFC,
                    ]);
                    v.extend_from_slice(bytes);
                    Some((v, true))
                }
            }
            // Not decoded: the raw sample is enough to count and time it.
            Media::Other => Some((bytes.to_vec(), s.sync)),
        };
        let Some((data, key)) = out else {
            self.stats.bad_samples += 1;
            return None;
        };
        Some(Packet {
            track: s.track,
            pts: Some(s.pts),
            dts: Some(s.dts),
            key,
            damaged: false,
            data,
        })
    }
}

/// `t` in `timescale` units → 90 kHz, saturating.
fn to_90k(t: i128, timescale: u32) -> i64 {
    let v = t * i128::from(crate::timebase::HZ) / i128::from(timescale.max(1));
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// AVCC (length-prefixed NAL units) → Annex B. Returns the data and whether it is a key
/// frame (sync flag or an IDR slice). Parameter sets are prepended to key frames that do
/// not carry their own SPS. None when a length prefix runs past the sample.
fn avcc_to_annexb(b: &[u8], nal_len: u8, param_sets: &[u8], sync: bool) -> Option<(Vec<u8>, bool)> {
    use crate::codec::h264::{avcc_nals, nal, nal_type};
    // First pass: validate and look at the NAL types.
    let (mut nals, mut idr, mut has_sps) = (0usize, false, false);
    for unit in avcc_nals(b, nal_len) {
        let unit = unit.ok()?;
        match nal_type(unit[0]) {
            nal::IDR => idr = true,
            nal::SPS => has_sps = true,
            _ => {}
        }
        nals += 1;
    }
    if nals == 0 {
        return None;
    }
    let key = sync || idr;
    let prefix = key && !has_sps;
    let mut out =
        Vec::with_capacity(b.len() + nals * 4 + if prefix { param_sets.len() } else { 0 });
    if prefix {
        out.extend_from_slice(param_sets);
    }
    for unit in avcc_nals(b, nal_len).flatten() {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(unit);
    }
    Some((out, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &[u8] = include_bytes!("../../../tests/data/fmp4/init.mp4");
    const SEG0: &[u8] = include_bytes!("../../../tests/data/fmp4/seg0.m4s");
    const SEG1: &[u8] = include_bytes!("../../../tests/data/fmp4/seg1.m4s");

    fn demuxer() -> Fmp4Demuxer {
        let mut d = Fmp4Demuxer::new(Mp4Limits::default());
        d.init(INIT).expect("init parses");
        d
    }

    #[test]
    fn init_gives_h264_and_aac_with_parameter_sets() {
        let mut d = Fmp4Demuxer::new(Mp4Limits::default());
        let p = d.init(INIT).unwrap();
        assert_eq!(p.video.as_ref().unwrap().codec, Codec::H264);
        assert_eq!(p.audio.as_ref().unwrap().codec, Codec::Aac);
        assert_eq!(p.other_streams, 0);
        let v = d.video.as_ref().unwrap();
        assert_eq!(v.timescale, 12_800);
        match &v.media {
            Media::Avc {
                nal_len,
                param_sets,
            } => {
                assert_eq!(*nal_len, 4);
                assert_eq!(&param_sets[..5], &[0, 0, 0, 1, 0x67]);
                assert!(param_sets.windows(5).any(|w| w == [0, 0, 0, 1, 0x68]));
            }
            m => panic!("{m:?}"),
        }
        let a = d.audio.as_ref().unwrap();
        assert_eq!(a.timescale, 48_000);
        // AAC-LC (profile 1), 48 kHz (index 3), mono.
        assert_eq!(a.media, Media::Aac { adts: [0x4C, 0x40] });
    }

    #[test]
    fn segments_give_timed_annexb_video_and_adts_audio() {
        let mut d = demuxer();
        let mut samples = Vec::new();
        d.segment(SEG0, &mut samples).unwrap();
        let video: Vec<&SampleRef> = samples.iter().filter(|s| s.track == Track::Video).collect();
        let audio: Vec<&SampleRef> = samples.iter().filter(|s| s.track == Track::Audio).collect();
        assert_eq!(video.len(), 25, "1 s at 25 fps");
        assert!((44..=48).contains(&audio.len()), "{}", audio.len());
        // Decode order across tracks.
        assert!(samples.windows(2).all(|w| w[0].dts <= w[1].dts));
        // Video: 40 ms steps, the first one a sync sample. Its edit list is an empty edit
        // of 80 ms, then media from composition time 1024 (the B-frame delay): the first
        // picture plays at 80 ms.
        assert!(video[0].sync);
        assert!(!video[1].sync);
        assert_eq!(video[1].dts - video[0].dts, 3600);
        let first_pts = video.iter().map(|s| s.pts).min().unwrap();
        assert_eq!(first_pts, 7200);
        // Audio: 1024 samples at 48 kHz.
        assert_eq!(audio[1].dts - audio[0].dts, 1920);
        let p = d.packet(SEG0, video[0]).unwrap();
        assert!(p.key);
        assert_eq!(
            &p.data[..5],
            &[0, 0, 0, 1, 0x67],
            "SPS first on a key frame"
        );
        assert!(crate::codec::h264::has_idr(&p.data));
        let p1 = d.packet(SEG0, video[1]).unwrap();
        assert!(!p1.key);
        assert!(!p1.data.windows(5).any(|w| w == [0, 0, 0, 1, 0x67]));
        let a = d.packet(SEG0, audio[0]).unwrap();
        assert_eq!(&a.data[..3], &[0xFF, 0xF1, 0x4C]);
        let len = (usize::from(a.data[3] & 3) << 11)
            | (usize::from(a.data[4]) << 3)
            | usize::from(a.data[5] >> 5);
        assert_eq!(len, a.data.len());
        assert_eq!(len, audio[0].size + 7);
        // The next segment continues the timeline.
        let last0 = video.last().unwrap().dts;
        d.segment(SEG1, &mut samples).unwrap();
        let v1 = samples.iter().find(|s| s.track == Track::Video).unwrap();
        assert_eq!(v1.dts - last0, 3600);
        assert_eq!(d.stats().bad_samples, 0);
    }

    #[test]
    fn segment_before_init_and_garbage_are_errors() {
        let mut d = Fmp4Demuxer::new(Mp4Limits::default());
        let mut s = Vec::new();
        assert!(d.segment(SEG0, &mut s).is_err());
        assert!(d.init(SEG0).unwrap_err().0.contains("moov"));
        let mut d = demuxer();
        assert!(d.segment(INIT, &mut s).unwrap_err().0.contains("moof"));
        // A box that claims more than there is.
        let mut b = SEG0[..64].to_vec();
        b[0..4].copy_from_slice(&0xFFFF_FF00u32.to_be_bytes());
        assert!(d.segment(&b, &mut s).unwrap_err().0.contains("claims"));
    }

    /// Finds the first `trun` of `seg` and returns the offset of its sample_count.
    fn trun_count_at(seg: &[u8]) -> usize {
        seg.windows(4).position(|w| w == b"trun").unwrap() + 4 + 4
    }

    #[test]
    fn absurd_sample_counts_are_refused_without_allocating() {
        let mut d = demuxer();
        let mut seg = SEG0.to_vec();
        let at = trun_count_at(&seg);
        seg[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut s = Vec::new();
        let e = d.segment(&seg, &mut s).unwrap_err();
        assert!(e.0.contains("claims"), "{e}");
        assert!(s.capacity() < 1000);
        // A cap below the real count.
        let mut d = Fmp4Demuxer::new(Mp4Limits {
            max_samples: 10,
            ..Mp4Limits::default()
        });
        d.init(INIT).unwrap();
        assert!(d
            .segment(SEG0, &mut s)
            .unwrap_err()
            .0
            .contains("more than 10"));
    }

    #[test]
    fn cut_and_corrupted_segments_never_panic() {
        let mut d = demuxer();
        let mut s = Vec::new();
        for n in (0..SEG0.len()).step_by(7) {
            let _ = d.segment(&SEG0[..n], &mut s);
            for x in s.clone() {
                let _ = d.packet(&SEG0[..n], &x);
            }
        }
        let mut x: u32 = 0x9E37_79B9;
        for _ in 0..300 {
            let mut seg = SEG0.to_vec();
            let mut init = INIT.to_vec();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % 1200;
                seg[i] ^= (x >> 24) as u8;
                let j = (x >> 8) as usize % init.len();
                init[j] ^= (x >> 16) as u8;
            }
            let mut d = Fmp4Demuxer::new(Mp4Limits::default());
            let _ = d.init(&init);
            if d.segment(&seg, &mut s).is_ok() || !s.is_empty() {
                for x in s.clone() {
                    let _ = d.packet(&seg, &x);
                }
            }
        }
    }

    #[test]
    fn avcc_conversion_rejects_overlong_lengths() {
        assert!(avcc_to_annexb(&[0, 0, 0, 9, 0x65, 1], 4, &[], false).is_none());
        let (v, key) =
            avcc_to_annexb(&[0, 0, 0, 2, 0x65, 1], 4, &[0, 0, 0, 1, 0x67], false).unwrap();
        assert!(key, "IDR NAL makes a key frame even without the sync flag");
        assert_eq!(v, [0, 0, 0, 1, 0x67, 0, 0, 0, 1, 0x65, 1]);
        assert!(avcc_to_annexb(&[], 4, &[], true).is_none());
    }

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn extreme_offsets_and_times_never_overflow() {
        // tfhd with an explicit base data offset of 2^63 and a trun data offset of -1:
        // `base + offset` must not overflow i64 (it did, in debug and fuzz builds).
        for (base, off) in [
            (1u64 << 63, -1i32),
            (u64::MAX, i32::MIN),
            (u64::MAX, i32::MAX),
            ((1u64 << 63) - 1, i32::MAX),
        ] {
            let mut tfhd = vec![0, 0, 0, 0x01];
            tfhd.extend_from_slice(&1u32.to_be_bytes()); // track id: the video track
            tfhd.extend_from_slice(&base.to_be_bytes());
            let mut tfdt = vec![1, 0, 0, 0];
            tfdt.extend_from_slice(&u64::MAX.to_be_bytes());
            let mut trun = vec![1, 0, 0x0A, 0x01]; // data offset, size, composition offset
            trun.extend_from_slice(&1u32.to_be_bytes());
            trun.extend_from_slice(&off.to_be_bytes());
            trun.extend_from_slice(&4u32.to_be_bytes());
            trun.extend_from_slice(&i32::MIN.to_be_bytes());
            let traf = bx(
                b"traf",
                &[bx(b"tfhd", &tfhd), bx(b"tfdt", &tfdt), bx(b"trun", &trun)].concat(),
            );
            let moof = bx(b"moof", &[bx(b"mfhd", &[0; 8]), traf].concat());
            let seg = [moof, bx(b"mdat", &[0; 8])].concat();
            let mut d = demuxer();
            let mut s = Vec::new();
            match d.segment(&seg, &mut s) {
                Ok(()) => {
                    for x in s.clone() {
                        assert!(x.offset.saturating_add(x.size) <= seg.len(), "{x:?}");
                        let _ = d.packet(&seg, &x);
                    }
                }
                Err(e) => assert!(!e.0.is_empty()),
            }
        }
    }
}
