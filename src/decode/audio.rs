//! Audio decode: AAC in ADTS (symphonia's pure-Rust AAC-LC decoder), raw PCM or G.711
//! (μ-law/A-law), reduced to one [`AudioLevel`] per codec frame (per packet for PCM):
//! overall and per-channel RMS, peak, and how many samples reached full scale.
//!
//! Boundaries: owns the audio decoders; knows nothing of detectors, events or sources.
//!
//! G.711 is decoded here with the two 256-entry tables of ITU-T G.711 rather than
//! through a crate: the tables are the whole codec (a few lines, computed at compile
//! time), symphonia's PCM decoder would need its format machinery around every RTP
//! packet, and one table lookup per sample feeds the same level meter as 16-bit PCM.
//!
//! The ADTS header is 7 bytes with fixed fields (ISO/IEC 13818-7 §6.2); it is parsed
//! here rather than through symphonia's ADTS *format reader*, which wants to own the
//! byte stream while we receive frames inside PES packets.

use symphonia_codec_aac::AacDecoder;
use symphonia_core::audio::{Channels, GenericAudioBufferRef};
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder as _, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration, Timestamp};

use super::loudness::LoudnessMeter;
use super::{AudioLevel, LevelMeter, NEAR_FULL_SCALE};

/// Which audio format the track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// AAC in ADTS frames (MPEG-TS stream type 0x0F).
    AacAdts,
    /// Interleaved signed 16-bit little-endian PCM (the built-in demo; RTSP L16 later).
    PcmS16le { sample_rate: u32, channels: u16 },
    /// G.711 (RTSP PCMU / PCMA): one byte per sample, interleaved.
    G711 {
        alaw: bool,
        sample_rate: u32,
        channels: u16,
    },
}

/// ITU-T G.711 μ-law byte to linear 16-bit (the classic bias-and-shift expansion).
pub const fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let mut t = (((u & 0x0F) as i32) << 3) + 0x84;
    t <<= ((u & 0x70) >> 4) as i32;
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// ITU-T G.711 A-law byte to linear 16-bit.
pub const fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn g711_table(alaw: bool) -> [f32; 256] {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        let v = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        t[i] = v as f32 / 32768.0;
        i += 1;
    }
    t
}

static ULAW: [f32; 256] = g711_table(false);
static ALAW: [f32; 256] = g711_table(true);

/// G.711 bytes (A-law or μ-law) as samples in −1.0..=1.0, one per byte: what the level
/// meter of [`AudioFormat::G711`] measures.
pub fn g711_samples(alaw: bool, data: &[u8]) -> impl Iterator<Item = f32> + '_ {
    let table = if alaw { &ALAW } else { &ULAW };
    data.iter().map(move |&b| table[usize::from(b)])
}

/// Counters of the audio decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct AudioStats {
    pub packets: u64,
    pub frames: u64,
    pub errors: u64,
}

/// Sample rates indexed by the ADTS sampling_frequency_index.
const ADTS_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AdtsHeader {
    header_len: usize,
    frame_len: usize,
    sample_rate: u32,
    channels: u8,
    /// audio object type (1 = AAC Main, 2 = LC, ...).
    object_type: u8,
}

fn parse_adts(b: &[u8]) -> Option<AdtsHeader> {
    if b.len() < 7 || b[0] != 0xFF || b[1] & 0xF0 != 0xF0 {
        return None;
    }
    let protection_absent = b[1] & 0x01 != 0;
    let object_type = ((b[2] >> 6) & 0x3) + 1;
    let sf_index = usize::from((b[2] >> 2) & 0xF);
    let channels = ((b[2] & 0x1) << 2) | (b[3] >> 6);
    let frame_len =
        (usize::from(b[3] & 0x3) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
    let header_len = if protection_absent { 7 } else { 9 };
    let sample_rate = *ADTS_RATES.get(sf_index)?;
    if frame_len < header_len {
        return None;
    }
    Some(AdtsHeader {
        header_len,
        frame_len,
        sample_rate,
        channels,
        object_type,
    })
}

/// The audio decoder of one stream.
pub struct AudioDecoder {
    format: AudioFormat,
    aac: Option<(AdtsHeader, AacDecoder)>,
    /// Where the next frame starts when a packet carries no PTS (90 kHz).
    next_pts: Option<i64>,
    /// |s| from which a sample counts as at full scale (`AudioLevel::near_full_scale`).
    full_scale: f32,
    /// Long window of the loudness meter, seconds (`None`: no loudness measured).
    loudness_window: Option<f64>,
    /// The track's loudness meter, made on its sample rate and channel count and made
    /// again only when they change.
    loudness: Option<LoudnessMeter>,
    pub stats: AudioStats,
}

impl std::fmt::Debug for AudioDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioDecoder")
            .field("format", &self.format)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl AudioDecoder {
    pub fn new(format: AudioFormat) -> Self {
        Self::with_full_scale(format, NEAR_FULL_SCALE)
    }

    /// A decoder whose levels count samples with |s| ≥ `full_scale` as at full scale
    /// (`[detect.clipping] sample_level`).
    pub fn with_full_scale(format: AudioFormat, full_scale: f32) -> Self {
        Self::with_settings(format, full_scale, Some(30.0))
    }

    /// A decoder counting samples from `full_scale` on, whose levels carry the track's
    /// loudness with a `loudness_window`-second long window (`None`: no loudness, the
    /// `AudioLevel` loudness fields stay `None` and no sample is K-weighted).
    pub fn with_settings(
        format: AudioFormat,
        full_scale: f32,
        loudness_window: Option<f64>,
    ) -> Self {
        AudioDecoder {
            format,
            aac: None,
            next_pts: None,
            full_scale,
            loudness_window,
            loudness: None,
            stats: AudioStats::default(),
        }
    }

    /// The loudness meter for `rate` Hz and `channels` (made, or made again when the
    /// track changed; `None` when loudness is off).
    fn loudness_meter(&mut self, rate: u32, channels: usize) -> Option<&mut LoudnessMeter> {
        let window = self.loudness_window?;
        if self.loudness.as_ref().map(LoudnessMeter::format) != Some((rate, channels.max(1))) {
            self.loudness = Some(LoudnessMeter::new(rate, channels, window));
        }
        self.loudness.as_mut()
    }

    /// Copies the meter's readings into a block's level.
    fn stamp(&mut self, mut level: AudioLevel) -> AudioLevel {
        if let Some(m) = self.loudness.as_mut() {
            let l = m.loudness();
            level.momentary_lufs = m.take_momentary_max();
            level.short_term_lufs = l.short_term;
            level.long_lufs = l.long;
        }
        level
    }

    /// Where the next packet's sound starts (90 kHz): the end of what was decoded so far,
    /// counted from the last PTS (also past frames that failed to decode).
    pub fn next_pts(&self) -> Option<i64> {
        self.next_pts
    }

    /// The format this decoder was made for.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Decodes one packet (a PES payload: one or more ADTS frames, or PCM bytes).
    pub fn decode(&mut self, pts: Option<i64>, data: &[u8], out: &mut dyn FnMut(AudioLevel)) {
        self.stats.packets += 1;
        if let Some(p) = pts {
            self.next_pts = Some(p);
        }
        match self.format {
            AudioFormat::AacAdts => self.decode_adts(data, out),
            AudioFormat::PcmS16le {
                sample_rate,
                channels,
            } => self.decode_pcm(data, sample_rate, channels, out),
            AudioFormat::G711 {
                alaw,
                sample_rate,
                channels,
            } => self.decode_g711(data, alaw, sample_rate, channels, out),
        }
    }

    fn decode_g711(
        &mut self,
        data: &[u8],
        alaw: bool,
        sample_rate: u32,
        channels: u16,
        out: &mut dyn FnMut(AudioLevel),
    ) {
        let Some(pts) = self.next_pts else { return };
        if sample_rate == 0 || channels == 0 {
            self.stats.errors += 1;
            return;
        }
        let mut meter = LevelMeter::new(usize::from(channels), self.full_scale);
        let mut buf = [0f32; 256];
        for chunk in data.chunks(256) {
            for (b, s) in buf.iter_mut().zip(g711_samples(alaw, chunk)) {
                *b = s;
            }
            meter.add_interleaved(&buf[..chunk.len()]);
            if let Some(l) = self.loudness_meter(sample_rate, usize::from(channels)) {
                l.add_interleaved(&buf[..chunk.len()]);
            }
        }
        let frames = (data.len() / usize::from(channels)) as i64;
        let duration = crate::timebase::rescale(frames, sample_rate);
        self.stats.frames += 1;
        self.next_pts = Some(pts.saturating_add(duration));
        out(self.stamp(meter.level(pts, duration)));
    }

    fn decode_pcm(
        &mut self,
        data: &[u8],
        sample_rate: u32,
        channels: u16,
        out: &mut dyn FnMut(AudioLevel),
    ) {
        let Some(pts) = self.next_pts else { return };
        if sample_rate == 0 || channels == 0 {
            self.stats.errors += 1;
            return;
        }
        let mut meter = LevelMeter::new(usize::from(channels), self.full_scale);
        let mut buf = [0f32; 256];
        let mut n = 0usize;
        for chunk in data.chunks_exact(2 * 256) {
            for (i, s) in chunk.chunks_exact(2).enumerate() {
                buf[i] = f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0;
            }
            meter.add_interleaved(&buf);
            if let Some(l) = self.loudness_meter(sample_rate, usize::from(channels)) {
                l.add_interleaved(&buf);
            }
            n += 256;
        }
        let rest = data.chunks_exact(2 * 256).remainder();
        for (i, s) in rest.chunks_exact(2).enumerate() {
            buf[i] = f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0;
        }
        let tail = rest.len() / 2;
        meter.add_interleaved(&buf[..tail]);
        if let Some(l) = self.loudness_meter(sample_rate, usize::from(channels)) {
            l.add_interleaved(&buf[..tail]);
        }
        n += tail;
        let frames = (n / usize::from(channels)) as i64;
        let duration = crate::timebase::rescale(frames, sample_rate);
        self.stats.frames += 1;
        self.next_pts = Some(pts.saturating_add(duration));
        out(self.stamp(meter.level(pts, duration)));
    }

    fn decode_adts(&mut self, mut data: &[u8], out: &mut dyn FnMut(AudioLevel)) {
        while !data.is_empty() {
            let Some(h) = parse_adts(data) else {
                // Lost ADTS sync inside a packet: count once and drop the rest of it.
                self.stats.errors += 1;
                return;
            };
            if h.frame_len > data.len() {
                self.stats.errors += 1;
                return;
            }
            let payload = &data[h.header_len..h.frame_len];
            data = &data[h.frame_len..];
            self.decode_aac_frame(h, payload, out);
        }
    }

    fn decode_aac_frame(&mut self, h: AdtsHeader, payload: &[u8], out: &mut dyn FnMut(AudioLevel)) {
        let pts = self.next_pts.unwrap_or(0);
        let duration = crate::timebase::rescale(1024, h.sample_rate);
        self.next_pts = Some(pts.saturating_add(duration));
        // (Re)create the decoder when the stream's configuration changes.
        let same = self.aac.as_ref().is_some_and(|(c, _)| {
            c.sample_rate == h.sample_rate
                && c.channels == h.channels
                && c.object_type == h.object_type
        });
        if !same {
            self.aac = None;
            let channels = match h.channels {
                1 | 2 => Channels::Discrete(u16::from(h.channels)),
                _ => {
                    self.stats.errors += 1;
                    return;
                }
            };
            let mut params = AudioCodecParameters::new();
            params.codec = CODEC_ID_AAC;
            params.sample_rate = Some(h.sample_rate);
            params.channels = Some(channels);
            match AacDecoder::try_new(&params, &AudioDecoderOptions::default()) {
                Ok(d) => self.aac = Some((h, d)),
                Err(_) => {
                    self.stats.errors += 1;
                    return;
                }
            }
        }
        // Made (or kept) first; then borrowed beside the decoder (disjoint fields).
        let _ = self.loudness_meter(h.sample_rate, usize::from(h.channels));
        let loudness = self.loudness.as_mut();
        let Some((_, dec)) = self.aac.as_mut() else {
            return;
        };
        let packet = PacketRef::new(0, Timestamp::new(pts), Duration::new(1024), payload);
        let level = match dec.decode_ref(&packet) {
            Ok(buf) => {
                let mut meter = LevelMeter::new(usize::from(h.channels), self.full_scale);
                match buf {
                    GenericAudioBufferRef::F32(b) => {
                        use symphonia_core::audio::Audio as _;
                        let mut planes: [&[f32]; super::MAX_CHANNELS] = [&[]; super::MAX_CHANNELS];
                        let mut n = 0;
                        for (ch, plane) in b.iter_planes().enumerate() {
                            meter.add_channel(ch, plane);
                            if ch < planes.len() {
                                planes[ch] = plane;
                                n = ch + 1;
                            }
                        }
                        if let Some(l) = loudness {
                            l.add_planar(&planes[..n]);
                        }
                        Some(meter.level(pts, duration))
                    }
                    _ => None,
                }
            }
            Err(_) => None,
        };
        match level {
            Some(level) => {
                self.stats.frames += 1;
                out(self.stamp(level));
            }
            None => self.stats.errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adts_header() {
        // 48 kHz, stereo, LC, frame length 371, no CRC.
        let b = [0xFF, 0xF1, 0x4C, 0x80, 0x2E, 0x7F, 0xFC];
        let h = parse_adts(&b).unwrap();
        assert_eq!(h.sample_rate, 48000);
        assert_eq!(h.channels, 2);
        assert_eq!(h.object_type, 2);
        assert_eq!(h.header_len, 7);
        assert_eq!(h.frame_len, 371);
        assert!(
            parse_adts(&[0xFF, 0xF1, 0x7C, 0x80, 0, 0, 0]).is_none(),
            "bad rate index"
        );
        assert!(parse_adts(&[0x00; 7]).is_none());
    }

    #[test]
    fn pcm_levels_and_timing() {
        let mut d = AudioDecoder::new(AudioFormat::PcmS16le {
            sample_rate: 48000,
            channels: 1,
        });
        let samples: Vec<u8> = (0..960)
            .flat_map(|i| (((i % 2) * 2 - 1) * 3277i16).to_le_bytes())
            .collect();
        let mut got = vec![];
        d.decode(Some(9000), &samples, &mut |l| got.push(l));
        d.decode(None, &[0u8; 1920], &mut |l| got.push(l));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].pts, 9000);
        assert_eq!(got[0].duration, 1800);
        assert!(
            (got[0].rms_dbfs - (-20.0)).abs() < 0.05,
            "{}",
            got[0].rms_dbfs
        );
        assert_eq!(got[1].pts, 10800);
        assert_eq!(got[1].rms_dbfs, -200.0);
    }

    #[test]
    fn pcm_stereo_levels_per_channel_and_full_scale() {
        let mut d = AudioDecoder::new(AudioFormat::PcmS16le {
            sample_rate: 48000,
            channels: 2,
        });
        // 1000 frames (more than one 256-sample chunk): left a ±3277 square wave
        // (-20 dBFS), right silent, except 30 left samples at 32767 and 10 at 30000
        // (0.916, below the 0.95 full-scale level).
        let samples: Vec<u8> = (0..1000)
            .flat_map(|i| {
                let left: i16 = match i {
                    0..=29 => 32767,
                    30..=39 => 30000,
                    _ => ((i % 2) * 2 - 1) * 3277,
                };
                [left.to_le_bytes(), 0i16.to_le_bytes()].concat()
            })
            .collect();
        let mut got = vec![];
        d.decode(Some(0), &samples, &mut |l| got.push(l));
        let l = got[0];
        assert_eq!(l.duration, 1875);
        assert_eq!((l.channels, l.samples, l.near_full_scale), (2, 2000, 30));
        assert!(l.channel_rms_dbfs[0] > -20.0, "{l:?}");
        assert_eq!(l.channel_rms_dbfs[1], -200.0);
        // A stricter level counts fewer samples.
        let mut d = AudioDecoder::with_full_scale(
            AudioFormat::PcmS16le {
                sample_rate: 48000,
                channels: 2,
            },
            0.9,
        );
        d.decode(Some(0), &samples, &mut |l| got.push(l));
        assert_eq!(got[1].near_full_scale, 40);
    }

    #[test]
    fn aac_levels_carry_the_channel_count() {
        // The alternating clip is mono: one channel, its RMS the block's, 1024 samples
        // per frame, a tone peaking at -6 dBFS never at full scale.
        let data = include_bytes!("../../tests/data/aac/alternating.aac");
        let mut d = AudioDecoder::new(AudioFormat::AacAdts);
        let mut got = vec![];
        d.decode(Some(0), data, &mut |l| got.push(l));
        assert_eq!(got.len(), 20);
        for l in &got {
            assert_eq!(
                (l.channels, l.samples, l.near_full_scale),
                (1, 1024, 0),
                "{l:?}"
            );
            assert_eq!(l.channel_rms_dbfs[0], l.rms_dbfs, "{l:?}");
            assert!(
                l.channel_rms_dbfs[1..].iter().all(|&d| d == -200.0),
                "{l:?}"
            );
        }
        assert!(got.iter().any(|l| l.channel_rms_dbfs[0] > -20.0));
    }

    #[test]
    fn g711_tables_match_the_standard() {
        // Reference values of ITU-T G.711 (Sun's g711.c): silence codes and extremes.
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        // Monotonic over each sign half (μ-law codes count down in magnitude).
        for i in 0x80..0xFFu8 {
            assert!(ulaw_to_linear(i) >= ulaw_to_linear(i + 1));
        }
    }

    #[test]
    fn g711_levels_and_timing() {
        let mut d = AudioDecoder::new(AudioFormat::G711 {
            alaw: false,
            sample_rate: 8000,
            channels: 1,
        });
        let mut got = vec![];
        // 20 ms of μ-law silence (0xFF), then 20 ms at ±8316 (-11.9 dBFS square wave).
        d.decode(Some(0), &[0xFF; 160], &mut |l| got.push(l));
        let loud: Vec<u8> = (0..160)
            .map(|i| if i % 2 == 0 { 0x9F } else { 0x1F })
            .collect();
        d.decode(None, &loud, &mut |l| got.push(l));
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].pts, got[0].duration), (0, 1800));
        assert_eq!(got[0].rms_dbfs, -200.0);
        assert_eq!(got[1].pts, 1800);
        assert!(
            (got[1].rms_dbfs - (-11.9)).abs() < 0.2,
            "{}",
            got[1].rms_dbfs
        );
        // A-law silence is ±8: far below -60 dBFS.
        let mut a = AudioDecoder::new(AudioFormat::G711 {
            alaw: true,
            sample_rate: 8000,
            channels: 1,
        });
        let mut lv = vec![];
        a.decode(Some(0), &[0xD5; 160], &mut |l| lv.push(l));
        assert!(lv[0].rms_dbfs < -70.0, "{}", lv[0].rms_dbfs);
    }

    /// Found by the `g711` fuzz target: a PTS near the end of the i64 range overflowed
    /// `pts + duration` (a panic in debug builds, a wrap to a negative time in release).
    #[test]
    fn timestamps_near_the_end_of_the_range_saturate() {
        for format in [
            AudioFormat::G711 {
                alaw: false,
                sample_rate: 8000,
                channels: 1,
            },
            AudioFormat::PcmS16le {
                sample_rate: 8000,
                channels: 1,
            },
        ] {
            let mut d = AudioDecoder::new(format);
            let mut got = vec![];
            d.decode(Some(i64::MAX - 100), &[0xFF; 160], &mut |l| got.push(l));
            d.decode(None, &[0xFF; 160], &mut |l| got.push(l));
            assert_eq!(got.len(), 2, "{format:?}");
            assert_eq!(got[0].pts, i64::MAX - 100);
            assert!(got[0].duration > 100);
            assert_eq!(got[1].pts, i64::MAX, "{format:?}");
            assert_eq!(d.next_pts(), Some(i64::MAX));
        }
        // AAC: a frame that fails to decode still advances the clock.
        let mut d = AudioDecoder::new(AudioFormat::AacAdts);
        let frame = [0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x1F, 0xFC, 0x00];
        d.decode(Some(i64::MAX - 100), &frame, &mut |_| {});
        assert_eq!(d.next_pts(), Some(i64::MAX));
    }

    #[test]
    fn garbage_adts_is_counted_not_fatal() {
        let mut d = AudioDecoder::new(AudioFormat::AacAdts);
        let mut n = 0;
        d.decode(
            Some(0),
            &[0xFF, 0xF1, 0x4C, 0x80, 0x2E, 0x7F, 0xFC, 1, 2, 3],
            &mut |_| n += 1,
        );
        d.decode(Some(0), &[1, 2, 3], &mut |_| n += 1);
        let mut junk = vec![0xFF, 0xF1, 0x4C, 0x80, 0x02, 0x1F, 0xFC];
        junk.extend_from_slice(&[0xAB; 9]);
        d.decode(Some(0), &junk, &mut |_| n += 1);
        assert_eq!(n, 0);
        assert_eq!(d.stats.errors, 3);
    }
}
