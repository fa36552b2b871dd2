//! Ingest: turns a source into timestamped elementary packets and transport facts.
//! It never decodes.
//!
//! [`source::Source`] is the one source contract (classify an input, run it); the
//! sources are a local MPEG-TS file (`file`), RTSP (`rtsp`) and HLS (`hls`). Every
//! source hands [`IngestMsg`]s to the one [`sink::Sink`], which puts them on the bounded
//! queue read by the stream's decode thread with the source's overflow policy.

pub mod file;
pub mod hls;
pub mod live;
pub mod mp4;
pub mod pool;
pub mod rtsp;
pub mod sink;
pub mod source;
pub mod ts;

/// Which elementary stream a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    Video,
    Audio,
}

/// Codecs we recognise in a program map. Only H.264 video and AAC audio are decoded;
/// the others are named so they can be reported as `unsupported_codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    Hevc,
    Mpeg2Video,
    Mpeg4Video,
    Aac,
    AacLatm,
    MpegAudio,
    Ac3,
    Eac3,
    /// Interleaved signed 16-bit little-endian PCM (the built-in demo's sound).
    PcmS16le {
        sample_rate: u32,
        channels: u16,
    },
    /// G.711 (RTSP PCMU/PCMA): 8-bit logarithmic samples, μ-law or A-law.
    G711 {
        alaw: bool,
        sample_rate: u32,
        channels: u16,
    },
    Other(u8),
}

impl Codec {
    /// Maps an ISO 13818-1 stream_type (plus the common ATSC/DVB private ones).
    pub fn from_stream_type(t: u8) -> Codec {
        match t {
            0x1B => Codec::H264,
            0x24 => Codec::Hevc,
            0x01 | 0x02 => Codec::Mpeg2Video,
            0x10 => Codec::Mpeg4Video,
            0x0F => Codec::Aac,
            0x11 => Codec::AacLatm,
            0x03 | 0x04 => Codec::MpegAudio,
            0x81 => Codec::Ac3,
            0x87 => Codec::Eac3,
            other => Codec::Other(other),
        }
    }

    /// A picture codec.
    pub fn is_video(self) -> bool {
        matches!(
            self,
            Codec::H264 | Codec::Hevc | Codec::Mpeg2Video | Codec::Mpeg4Video
        )
    }

    /// A sound codec.
    pub fn is_audio(self) -> bool {
        matches!(
            self,
            Codec::Aac
                | Codec::AacLatm
                | Codec::MpegAudio
                | Codec::Ac3
                | Codec::Eac3
                | Codec::PcmS16le { .. }
                | Codec::G711 { .. }
        )
    }

    /// Short lowercase name used in events and logs.
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Hevc => "hevc",
            Codec::Mpeg2Video => "mpeg2video",
            Codec::Mpeg4Video => "mpeg4video",
            Codec::Aac => "aac",
            Codec::AacLatm => "aac_latm",
            Codec::MpegAudio => "mp3",
            Codec::Ac3 => "ac3",
            Codec::Eac3 => "eac3",
            Codec::PcmS16le { .. } => "pcm_s16le",
            Codec::G711 { alaw: false, .. } => "pcm_mulaw",
            Codec::G711 { alaw: true, .. } => "pcm_alaw",
            Codec::Other(_) => "other",
        }
    }
}

/// One elementary stream of the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elementary {
    pub pid: u16,
    pub stream_type: u8,
    pub codec: Codec,
}

/// The tracks of the monitored program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramInfo {
    /// The video track chosen (H.264 preferred).
    pub video: Option<Elementary>,
    /// The audio track chosen (AAC preferred).
    pub audio: Option<Elementary>,
    /// How many other elementary streams the program lists (not monitored).
    pub other_streams: u32,
}

/// One elementary-stream packet: a video access unit (Annex B) or a run of ADTS frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub track: Track,
    /// Presentation time, 90 kHz, unwrapped (monotonic across the 33-bit wrap).
    pub pts: Option<i64>,
    /// Decode time, 90 kHz, unwrapped.
    pub dts: Option<i64>,
    /// Video: contains an IDR picture (or the transport flagged random access).
    pub key: bool,
    /// Bytes of this packet were lost in transport (continuity error, TEI).
    pub damaged: bool,
    pub data: Vec<u8>,
}

/// What ingest sends to the decode thread.
#[derive(Debug)]
pub enum IngestMsg {
    /// The program's tracks (first, and whenever they change).
    Program(ProgramInfo),
    /// One elementary packet.
    Packet(Packet),
    /// A delivery defect opened or closed by the source (stall, source_down, ...).
    /// A forced `end` (source finishing) carries its reason.
    Delivery(
        Box<crate::defect::Transition>,
        Option<crate::defect::EndReason>,
    ),
    /// The source is over; the decode thread closes open defects with this reason.
    End(crate::defect::EndReason),
    /// RTSP: the sender reports (RTCP SR) say audio timestamps run `offset_s` seconds
    /// ahead of video timestamps (negative: behind) around video PTS `pts` (90 kHz).
    /// Rare (one per SR); replaces the PTS-at-arrival estimate for `av_desync`.
    AvSync { pts: i64, offset_s: f64 },
}
