//! The init-segment side of the fMP4 demuxer: one `trak` of a `moov` into a track
//! configuration ([`TrackCfg`]): handler, timescale, edit-list shift, and the sample
//! entry: `avc1`/`avc3` + `avcC` (NAL length size, SPS/PPS as Annex B) or `mp4a` +
//! `esds` (AudioSpecificConfig turned into the fixed part of an ADTS header).
//!
//! Owns: track configuration and codec setup from the init section.
//!
//! May not touch: media segments (`moof`/`trun`/`mdat`) and packet building (`mod.rs`),
//! the box reader itself (`boxes.rs`), I/O, clocks, decoding.

use super::boxes::{boxes, child, err, Bx, Mp4Error, Rd};
use super::Mp4Limits;
use crate::ingest::Codec;

/// How a track's samples are turned into elementary packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Media {
    /// H.264 in AVCC: `nal_len`-byte length prefixes; `param_sets` = SPS and PPS in Annex B.
    Avc { nal_len: u8, param_sets: Vec<u8> },
    /// AAC: ADTS header bytes 2 and 3 (profile, rate index, channels; no length bits).
    Aac { adts: [u8; 2] },
    /// A codec we report but do not decode.
    Other,
}

/// Sample defaults from `trex`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Defaults {
    pub(super) duration: u32,
    pub(super) size: u32,
    pub(super) flags: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TrackCfg {
    pub(super) id: u32,
    pub(super) timescale: u32,
    /// Added to composition times (track timescale) by the edit list: empty edits
    /// (converted) minus the first edit's media_time.
    pub(super) shift: i64,
    pub(super) codec: Codec,
    pub(super) media: Media,
    pub(super) defaults: Defaults,
    /// Decode time where the next fragment continues when it has no `tfdt`.
    pub(super) next_dts: u64,
}

/// Sample rates indexed by the ADTS sampling_frequency_index.
const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

pub(super) fn stream_type(c: Codec) -> u8 {
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

/// Parses one `trak`. None for tracks that are neither sound nor picture.
pub(super) fn parse_trak(
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
}
