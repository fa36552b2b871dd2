//! Fragmented MP4 (CMAF, HLS fMP4) demuxer: an init section (`ftyp` + `moov`) gives the
//! tracks, each media segment (`styp`/`sidx`/`moof` + `mdat`) gives timestamped samples,
//! turned into the same [`Packet`]s the MPEG-TS demuxer produces: H.264 access units in
//! Annex B (SPS/PPS put in front of every sync sample) and AAC frames behind a 7-byte
//! ADTS header built from the AudioSpecificConfig, so the decoders need not know the
//! container.
//!
//! Boundaries: bytes in, packets out; no I/O, no clocks, no decoding.
//!
//! Written by hand on purpose, like [`super::ts`]. The candidate crate (`mp4-atom` 0.17)
//! parses every box we need, but it requires Rust 1.88 (this crate promises 1.85), pulls
//! `num`, `derive_more` and a second `thiserror` into an edge binary, and decodes an
//! `mdat` by copying it. We read about ten box types, always from one segment held in
//! memory, so a bounded reader over byte slices is ~500 lines that are easy to audit and
//! to fuzz.
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

use super::{Codec, Elementary, Packet, ProgramInfo, Track};

/// A structural error: the bytes are not the fMP4 we can read. The text names the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mp4Error(pub String);

impl std::fmt::Display for Mp4Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mp4Error {}

fn err<T>(msg: impl Into<String>) -> Result<T, Mp4Error> {
    Err(Mp4Error(msg.into()))
}

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

/// How a track's samples are turned into elementary packets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Media {
    /// H.264 in AVCC: `nal_len`-byte length prefixes; `param_sets` = SPS and PPS in Annex B.
    Avc { nal_len: u8, param_sets: Vec<u8> },
    /// AAC: ADTS header bytes 2 and 3 (profile, rate index, channels; no length bits).
    Aac { adts: [u8; 2] },
    /// A codec we report but do not decode.
    Other,
}

/// Sample defaults from `trex`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Defaults {
    duration: u32,
    size: u32,
    flags: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TrackCfg {
    id: u32,
    timescale: u32,
    /// Added to composition times (track timescale) by the edit list: empty edits
    /// (converted) minus the first edit's media_time.
    shift: i64,
    codec: Codec,
    media: Media,
    defaults: Defaults,
    /// Decode time where the next fragment continues when it has no `tfdt`.
    next_dts: u64,
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

/// A byte reader over a slice; every read is bounds-checked.
struct Rd<'a> {
    b: &'a [u8],
    p: usize,
    what: &'static str,
}

impl<'a> Rd<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        Rd { b, p: 0, what }
    }
    fn left(&self) -> usize {
        self.b.len() - self.p
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Mp4Error> {
        if n > self.left() {
            return err(format!("'{}' box too short", self.what));
        }
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }
    fn skip(&mut self, n: usize) -> Result<(), Mp4Error> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Result<u8, Mp4Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Mp4Error> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, Mp4Error> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, Mp4Error> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    /// Version and flags of a full box.
    fn full(&mut self) -> Result<(u8, u32), Mp4Error> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00FF_FFFF))
    }
}

/// One box: its type, where it starts in the slice iterated, and its body.
#[derive(Debug, Clone, Copy)]
struct Bx<'a> {
    kind: [u8; 4],
    start: usize,
    body: &'a [u8],
}

/// Iterates the boxes of `data` (a box body or a whole segment).
struct Boxes<'a> {
    data: &'a [u8],
    pos: usize,
    failed: bool,
}

fn boxes(data: &[u8]) -> Boxes<'_> {
    Boxes {
        data,
        pos: 0,
        failed: false,
    }
}

fn fourcc(k: &[u8; 4]) -> String {
    k.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<Bx<'a>, Mp4Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.data.len() {
            return None;
        }
        let rest = &self.data[self.pos..];
        if rest.len() < 8 {
            self.failed = true;
            return Some(err(format!("{} trailing bytes, not a box", rest.len())));
        }
        let size32 = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        let kind = [rest[4], rest[5], rest[6], rest[7]];
        let (size, header) = match size32 {
            0 => (rest.len() as u64, 8u64),
            1 => {
                if rest.len() < 16 {
                    self.failed = true;
                    return Some(err("box with a cut 64-bit size"));
                }
                let mut a = [0u8; 8];
                a.copy_from_slice(&rest[8..16]);
                (u64::from_be_bytes(a), 16)
            }
            s => (s, 8),
        };
        if size < header {
            self.failed = true;
            return Some(err(format!(
                "box '{}' claims {size} bytes, less than its header",
                fourcc(&kind)
            )));
        }
        if size > rest.len() as u64 {
            self.failed = true;
            return Some(err(format!(
                "box '{}' claims {size} bytes, only {} left",
                fourcc(&kind),
                rest.len()
            )));
        }
        let (size, header) = (size as usize, header as usize);
        let b = Bx {
            kind,
            start: self.pos,
            body: &rest[header..size],
        };
        self.pos += size;
        Some(Ok(b))
    }
}

/// The first child box of `kind` in `data`, if any (errors in the list are errors).
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<Bx<'a>>, Mp4Error> {
    for b in boxes(data) {
        let b = b?;
        if &b.kind == kind {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// Sample flag: sample_is_non_sync_sample.
const NON_SYNC: u32 = 0x0001_0000;
/// Sample rates indexed by the ADTS sampling_frequency_index.
const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];
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

fn stream_type(c: Codec) -> u8 {
    match c {
        Codec::H264 => 0x1B,
        Codec::Hevc => 0x24,
        Codec::Aac => 0x0F,
        Codec::MpegAudio => 0x03,
        Codec::Ac3 => 0x81,
        Codec::Eac3 => 0x87,
        Codec::Other(t) => t,
        _ => 0,
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

/// Parses one `trak`. None for tracks that are neither sound nor picture.
fn parse_trak(
    trak: &[u8],
    movie_timescale: u32,
    limits: &Mp4Limits,
) -> Result<Option<TrackCfg>, Mp4Error> {
    let Some(tkhd) = child(trak, b"tkhd")? else {
        return err("'trak' without 'tkhd'");
    };
    let mut r = Rd::new(tkhd.body, "tkhd");
    let (v, _) = r.full()?;
    r.skip(if v == 1 { 16 } else { 8 })?;
    let id = r.u32()?;
    let Some(mdia) = child(trak, b"mdia")? else {
        return err("'trak' without 'mdia'");
    };
    let Some(hdlr) = child(mdia.body, b"hdlr")? else {
        return err("'mdia' without 'hdlr'");
    };
    let mut r = Rd::new(hdlr.body, "hdlr");
    r.full()?;
    r.u32()?;
    let handler = r.take(4)?;
    let is_video = handler == b"vide";
    if !is_video && handler != b"soun" {
        return Ok(None);
    }
    let Some(mdhd) = child(mdia.body, b"mdhd")? else {
        return err("'mdia' without 'mdhd'");
    };
    let mut r = Rd::new(mdhd.body, "mdhd");
    let (v, _) = r.full()?;
    r.skip(if v == 1 { 16 } else { 8 })?;
    let timescale = r.u32()?;
    if timescale == 0 {
        return err("'mdhd' timescale is 0");
    }
    let stsd = child(mdia.body, b"minf")?
        .map(|m| child(m.body, b"stbl"))
        .transpose()?
        .flatten()
        .map(|s| child(s.body, b"stsd"))
        .transpose()?
        .flatten();
    let Some(stsd) = stsd else {
        return err("track without a sample description ('stsd')");
    };
    let mut r = Rd::new(stsd.body, "stsd");
    r.full()?;
    let count = r.u32()?;
    if count == 0 {
        return err("'stsd' lists no sample entry");
    }
    let Some(entry) = boxes(&stsd.body[8..]).next().transpose()? else {
        return err("'stsd' lists no sample entry");
    };
    let (codec, media) = if is_video {
        sample_entry_video(&entry, limits)?
    } else {
        sample_entry_audio(&entry)?
    };
    let shift = match child(trak, b"edts")? {
        Some(edts) => edit_shift(edts.body, timescale, movie_timescale)?,
        None => 0,
    };
    Ok(Some(TrackCfg {
        id,
        timescale,
        shift,
        codec,
        media,
        defaults: Defaults::default(),
        next_dts: 0,
    }))
}

/// Composition-time shift (track timescale) of the edit list: leading empty edits
/// delay the track, the first real edit's media_time is where presentation starts.
fn edit_shift(edts: &[u8], timescale: u32, movie_timescale: u32) -> Result<i64, Mp4Error> {
    let Some(elst) = child(edts, b"elst")? else {
        return Ok(0);
    };
    let mut r = Rd::new(elst.body, "elst");
    let (v, _) = r.full()?;
    let count = r.u32()? as usize;
    let entry = if v == 1 { 20 } else { 12 };
    if count.saturating_mul(entry) > r.left() {
        return err(format!("'elst' claims {count} entries"));
    }
    let mut empty: i128 = 0;
    for _ in 0..count.min(64) {
        let (dur, media_time) = if v == 1 {
            (r.u64()? as i128, r.u64()? as i64 as i128)
        } else {
            (i128::from(r.u32()?), i128::from(r.u32()? as i32))
        };
        r.u32()?;
        if media_time == -1 {
            empty += dur;
            continue;
        }
        let delay = empty * i128::from(timescale) / i128::from(movie_timescale.max(1));
        let s = delay - media_time;
        return Ok(s.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i64);
    }
    Ok(0)
}

fn sample_entry_video(e: &Bx<'_>, limits: &Mp4Limits) -> Result<(Codec, Media), Mp4Error> {
    match &e.kind {
        b"avc1" | b"avc3" => {}
        b"hvc1" | b"hev1" => return Ok((Codec::Hevc, Media::Other)),
        b"mp4v" => return Ok((Codec::Mpeg4Video, Media::Other)),
        _ => return Ok((Codec::Other(0), Media::Other)),
    }
    // VisualSampleEntry: 8 bytes SampleEntry + 70 bytes of picture fields, then boxes.
    let Some(children) = e.body.get(78..) else {
        return err("'avc1' sample entry too short");
    };
    let Some(avcc) = child(children, b"avcC")? else {
        if &e.kind == b"avc3" {
            // Parameter sets in band: the length size is then almost always 4.
            return Ok((
                Codec::H264,
                Media::Avc {
                    nal_len: 4,
                    param_sets: Vec::new(),
                },
            ));
        }
        return err("'avc1' without 'avcC'");
    };
    let mut r = Rd::new(avcc.body, "avcC");
    r.skip(4)?; // version, profile, compatibility, level
    let nal_len = (r.u8()? & 0x03) + 1;
    let mut param_sets = Vec::new();
    let n_sps = r.u8()? & 0x1F;
    for _ in 0..n_sps {
        let len = usize::from(r.u16()?);
        let nal = r.take(len)?;
        param_sets.extend_from_slice(&[0, 0, 0, 1]);
        param_sets.extend_from_slice(nal);
    }
    let n_pps = r.u8()?;
    for _ in 0..n_pps {
        let len = usize::from(r.u16()?);
        let nal = r.take(len)?;
        param_sets.extend_from_slice(&[0, 0, 0, 1]);
        param_sets.extend_from_slice(nal);
    }
    if param_sets.len() > limits.max_param_sets {
        return err(format!(
            "'avcC' parameter sets larger than {} bytes",
            limits.max_param_sets
        ));
    }
    Ok((
        Codec::H264,
        Media::Avc {
            nal_len,
            param_sets,
        },
    ))
}

fn sample_entry_audio(e: &Bx<'_>) -> Result<(Codec, Media), Mp4Error> {
    match &e.kind {
        b"mp4a" => {}
        b"ac-3" => return Ok((Codec::Ac3, Media::Other)),
        b"ec-3" => return Ok((Codec::Eac3, Media::Other)),
        b".mp3" => return Ok((Codec::MpegAudio, Media::Other)),
        _ => return Ok((Codec::Other(0), Media::Other)),
    }
    // AudioSampleEntry: 8 bytes SampleEntry, then a version (QuickTime v1/v2 are longer).
    let mut r = Rd::new(e.body, "mp4a");
    r.skip(8)?;
    let version = r.u16()?;
    let fixed = match version {
        0 => 28,
        1 => 28 + 16,
        2 => 28 + 36,
        v => return err(format!("'mp4a' sample entry version {v}")),
    };
    let Some(children) = e.body.get(fixed..) else {
        return err("'mp4a' sample entry too short");
    };
    let esds = match child(children, b"esds")? {
        Some(b) => b,
        // QuickTime puts it inside 'wave'.
        None => match child(children, b"wave")? {
            Some(w) => match child(w.body, b"esds")? {
                Some(b) => b,
                None => return err("'mp4a' without 'esds'"),
            },
            None => return err("'mp4a' without 'esds'"),
        },
    };
    let asc = esds_asc(esds.body)?;
    let (codec, adts) = match asc {
        Asc::Mp3 => return Ok((Codec::MpegAudio, Media::Other)),
        Asc::Aac(c) => (Codec::Aac, c),
    };
    Ok((codec, Media::Aac { adts }))
}

enum Asc {
    /// The fixed ADTS header bytes 2 and 3 (profile, rate index, channels).
    Aac([u8; 2]),
    Mp3,
}

/// Reads one MPEG-4 descriptor header: (tag, body).
fn descriptor<'a>(r: &mut Rd<'a>) -> Result<(u8, &'a [u8]), Mp4Error> {
    let tag = r.u8()?;
    let mut len = 0usize;
    for _ in 0..4 {
        let b = r.u8()?;
        len = (len << 7) | usize::from(b & 0x7F);
        if b & 0x80 == 0 {
            break;
        }
    }
    Ok((tag, r.take(len)?))
}

/// The AudioSpecificConfig in an `esds`, as the fixed part of an ADTS header.
fn esds_asc(body: &[u8]) -> Result<Asc, Mp4Error> {
    let mut r = Rd::new(body, "esds");
    r.full()?;
    let (tag, es) = descriptor(&mut r)?;
    if tag != 0x03 {
        return err("'esds' without an ES descriptor");
    }
    let mut r = Rd::new(es, "esds");
    r.u16()?; // ES_ID
    let flags = r.u8()?;
    if flags & 0x80 != 0 {
        r.skip(2)?;
    }
    if flags & 0x40 != 0 {
        let n = usize::from(r.u8()?);
        r.skip(n)?;
    }
    if flags & 0x20 != 0 {
        r.skip(2)?;
    }
    while r.left() > 0 {
        let (tag, d) = descriptor(&mut r)?;
        if tag != 0x04 {
            continue;
        }
        let mut r = Rd::new(d, "esds");
        let oti = r.u8()?;
        if matches!(oti, 0x69 | 0x6B) {
            return Ok(Asc::Mp3);
        }
        r.skip(12)?;
        while r.left() > 0 {
            let (tag, dsi) = descriptor(&mut r)?;
            if tag == 0x05 {
                return asc_to_adts(dsi).map(Asc::Aac);
            }
        }
        // MPEG-2 AAC without a config: LC is what is in use.
        if matches!(oti, 0x66..=0x68) {
            return err("MPEG-2 AAC without AudioSpecificConfig");
        }
    }
    err("'esds' without an AudioSpecificConfig")
}

/// Parses an AudioSpecificConfig (ISO 14496-3 §1.6.2.1) into ADTS header bytes 2..=3
/// (byte 3 without the length bits). SBR/PS signalling is followed to the core AAC.
fn asc_to_adts(asc: &[u8]) -> Result<[u8; 2], Mp4Error> {
    let mut bits = Bits { b: asc, p: 0 };
    let mut aot = bits.aot()?;
    let mut sf = bits.get(4)?;
    if sf == 15 {
        let f = bits.get(24)?;
        sf = AAC_RATES
            .iter()
            .position(|&r| r == f)
            .ok_or_else(|| Mp4Error(format!("AAC sample rate {f} Hz has no ADTS index")))?
            as u32;
    }
    let ch = bits.get(4)?;
    if aot == 5 || aot == 29 {
        // Explicit SBR/PS: the extension rate, then the core object type.
        if bits.get(4)? == 15 {
            bits.get(24)?;
        }
        aot = bits.aot()?;
    }
    if !(1..=4).contains(&aot) {
        return err(format!("AAC object type {aot} cannot be carried in ADTS"));
    }
    if sf as usize >= AAC_RATES.len() {
        return err(format!("AAC sampling frequency index {sf}"));
    }
    let b2 = (((aot - 1) as u8) << 6) | ((sf as u8) << 2) | ((ch as u8 >> 2) & 0x1);
    let b3 = (ch as u8 & 0x3) << 6;
    Ok([b2, b3])
}

/// MSB-first bit reader.
struct Bits<'a> {
    b: &'a [u8],
    p: usize,
}

impl Bits<'_> {
    fn get(&mut self, n: u32) -> Result<u32, Mp4Error> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self
                .b
                .get(self.p / 8)
                .ok_or_else(|| Mp4Error("AudioSpecificConfig too short".into()))?;
            v = (v << 1) | u32::from((byte >> (7 - self.p % 8)) & 1);
            self.p += 1;
        }
        Ok(v)
    }
    fn aot(&mut self) -> Result<u32, Mp4Error> {
        let a = self.get(5)?;
        Ok(if a == 31 { 32 + self.get(6)? } else { a })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &[u8] = include_bytes!("../../tests/data/fmp4/init.mp4");
    const SEG0: &[u8] = include_bytes!("../../tests/data/fmp4/seg0.m4s");
    const SEG1: &[u8] = include_bytes!("../../tests/data/fmp4/seg1.m4s");

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
    fn audio_specific_config_to_adts() {
        // AAC-LC 44.1 kHz stereo: 0x12 0x10.
        assert_eq!(asc_to_adts(&[0x12, 0x10]).unwrap(), [0x50, 0x80]);
        // HE-AAC (SBR, object type 5) over LC 24 kHz: core LC at index 6.
        // aot=5 (00101), sf=6 (0110), ch=2 (0010), ext sf=3 (0011), aot=2 (00010)
        let b = (5u32 << 27) | (6 << 23) | (2 << 19) | (3 << 15) | (2 << 10);
        let bytes = b.to_be_bytes();
        assert_eq!(asc_to_adts(&bytes[..3]).unwrap()[0], (1 << 6) | (6 << 2));
        assert!(asc_to_adts(&[]).is_err());
        // Object type 32 (escaped) has no ADTS form.
        assert!(asc_to_adts(&[0xF8, 0x00, 0x00]).is_err());
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
