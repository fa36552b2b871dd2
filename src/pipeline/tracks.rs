//! Tracks: which elementary streams a program offers, which of them the probe decodes,
//! and the `unsupported_codec` defects of those it cannot.
//!
//! Owns the open `unsupported_codec` defects (one slot per track) and the mapping from
//! a [`ProgramInfo`] to the decoders it asks for. It does not create or hold decoders
//! (the video and audio chains do, as [`TrackPlan`] tells the facade) and never emits
//! events: its transitions go to the analyzer's one transition list.

use crate::decode::audio::AudioFormat;
use crate::decode::video::Refusal;
use crate::defect::{put, DefectKind, Metric, Metrics, Phase, Transition};
use crate::ingest::{Codec, ProgramInfo, Track};

/// MPEG-TS stream type of H.264 (reported with a refused SPS).
const H264_STREAM_TYPE: i64 = 0x1B;

/// The decoders a program asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct TrackPlan {
    /// The video track is H.264 (the one video codec decoded).
    pub video: bool,
    /// The audio track's format, when it is one the probe decodes.
    pub audio: Option<AudioFormat>,
}

/// An open `unsupported_codec` defect: which track and why.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Unsupported {
    track: Track,
    start_s: f64,
    codec: &'static str,
    stream_type: i64,
    width: i64,
    height: i64,
    /// H.264 refused from its SPS: why (also its `codec` name). None for a codec the
    /// probe does not decode at all.
    reason: Option<&'static str>,
}

impl Unsupported {
    /// A codec the probe does not decode at all (no size, no reason).
    fn codec(track: Track, start_s: f64, codec: &'static str, stream_type: u8) -> Self {
        Unsupported {
            track,
            start_s,
            codec,
            stream_type: i64::from(stream_type),
            width: 0,
            height: 0,
            reason: None,
        }
    }
}

/// Open `unsupported_codec` defects, one slot per track. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Tracks {
    unsupported: [Option<Unsupported>; 2],
}

impl Tracks {
    /// A new program at media time `t`: opens `unsupported_codec` for each track the
    /// probe cannot decode, closes it for each it can (or that is gone), and returns
    /// which decoders the program needs. Video transitions come before audio ones.
    pub fn program(&mut self, p: &ProgramInfo, t: f64, found: &mut Vec<Transition>) -> TrackPlan {
        let video = match p.video.as_ref().map(|v| (v.codec, v.stream_type)) {
            Some((Codec::H264, _)) => {
                self.close(Track::Video, t, found);
                true
            }
            Some((codec, stream_type)) => {
                let u = Unsupported::codec(Track::Video, t, codec.name(), stream_type);
                self.open(u, found);
                false
            }
            None => {
                self.close(Track::Video, t, found);
                false
            }
        };
        let format = match p.audio.as_ref().map(|a| a.codec) {
            Some(Codec::Aac) => Some(AudioFormat::AacAdts),
            Some(Codec::PcmS16le {
                sample_rate,
                channels,
            }) => Some(AudioFormat::PcmS16le {
                sample_rate,
                channels,
            }),
            Some(Codec::G711 {
                alaw,
                sample_rate,
                channels,
            }) => Some(AudioFormat::G711 {
                alaw,
                sample_rate,
                channels,
            }),
            _ => None,
        };
        match (format, p.audio.as_ref()) {
            (Some(_), _) => self.close(Track::Audio, t, found),
            (None, Some(a)) => {
                let u = Unsupported::codec(Track::Audio, t, a.codec.name(), a.stream_type);
                self.open(u, found);
            }
            (None, None) => self.close(Track::Audio, t, found),
        }
        TrackPlan {
            video,
            audio: format,
        }
    }

    /// After a video packet: an SPS the decoder `refused` opens `unsupported_codec`
    /// (`codec` and `reason` name why, with the picture size when known); once the
    /// decoder is no longer `refusing`, an open refusal closes. `t` gives the packet's
    /// media time (only computed when a transition needs it).
    pub fn video_refusal(
        &mut self,
        refused: Option<Refusal>,
        refusing: bool,
        t: impl FnOnce() -> f64,
        found: &mut Vec<Transition>,
    ) {
        if let Some(r) = refused {
            let reason = r.reason.as_str();
            let u = Unsupported {
                track: Track::Video,
                start_s: t(),
                codec: reason,
                stream_type: H264_STREAM_TYPE,
                width: i64::from(r.width),
                height: i64::from(r.height),
                reason: Some(reason),
            };
            self.open(u, found);
        } else if !refusing
            && self
                .unsupported
                .iter()
                .flatten()
                .any(|u| u.reason.is_some())
        {
            self.close(Track::Video, t(), found);
        }
    }

    /// Opens `unsupported_codec` on `u`'s track unless one is open already.
    fn open(&mut self, u: Unsupported, found: &mut Vec<Transition>) {
        let slot = &mut self.unsupported[track_slot(u.track)];
        if slot.is_some() {
            return;
        }
        *slot = Some(u);
        found.push(unsupported_transition(&u, Phase::Start, None));
    }

    /// Closes `track`'s `unsupported_codec` at `t` (never before it started).
    pub fn close(&mut self, track: Track, t: f64, found: &mut Vec<Transition>) {
        if let Some(u) = self.unsupported[track_slot(track)].take() {
            found.push(unsupported_transition(
                &u,
                Phase::End,
                Some(t.max(u.start_s)),
            ));
        }
    }
}

/// Index of a track's `unsupported_codec` slot.
fn track_slot(track: Track) -> usize {
    match track {
        Track::Video => 0,
        Track::Audio => 1,
    }
}

fn unsupported_transition(u: &Unsupported, phase: Phase, end: Option<f64>) -> Transition {
    let mut m = Metrics::new();
    put(
        &mut m,
        "track",
        Metric::Str(match u.track {
            Track::Video => "video",
            Track::Audio => "audio",
        }),
    );
    put(&mut m, "codec", Metric::Str(u.codec));
    put(&mut m, "stream_type", Metric::Int(u.stream_type));
    if u.width > 0 {
        put(&mut m, "width", Metric::Int(u.width));
        put(&mut m, "height", Metric::Int(u.height));
    }
    if let Some(reason) = u.reason {
        put(&mut m, "reason", Metric::Str(reason));
    }
    Transition {
        kind: DefectKind::UnsupportedCodec,
        phase,
        start_s: u.start_s,
        end_s: end,
        metrics: m,
        slot: track_slot(u.track) as u8,
        media: None,
    }
}
