//! The defect vocabulary every layer shares: what kinds of defect exist, how bad each
//! is, and the transitions (start/end) detectors and sources report.
//!
//! A leaf module: it imports nothing from the crate, so ingest, pipeline, detect, event
//! and publish can all depend on it without depending on each other.

use serde::{Deserialize, Serialize};

/// The kinds of defect vqprobe reports. The wire name is the snake_case form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefectKind {
    Black,
    Freeze,
    Corruption,
    /// Most of the picture one colour, not black (a covered lens, a "no signal" screen).
    Uniform,
    Silence,
    Clipping,
    ChannelLoss,
    Loudness,
    UnsupportedCodec,
    LowFps,
    AvDesync,
    TestPattern,
    // Delivery defects (on the session clock, or on the media clock when they concern a
    // piece of media: see `Transition::media` and docs/events.md).
    Stall,
    SourceDown,
    PacketLoss,
    PlaylistStale,
    SegmentError,
    SlowDownload,
    TsError,
    ProbeOverload,
    // Picture kinds added later (appended: the order is the wire-stable list).
    Blur,
}

impl DefectKind {
    /// Every kind, in declaration order.
    pub const ALL: [DefectKind; 21] = [
        DefectKind::Black,
        DefectKind::Freeze,
        DefectKind::Corruption,
        DefectKind::Uniform,
        DefectKind::Silence,
        DefectKind::Clipping,
        DefectKind::ChannelLoss,
        DefectKind::Loudness,
        DefectKind::UnsupportedCodec,
        DefectKind::LowFps,
        DefectKind::AvDesync,
        DefectKind::TestPattern,
        DefectKind::Stall,
        DefectKind::SourceDown,
        DefectKind::PacketLoss,
        DefectKind::PlaylistStale,
        DefectKind::SegmentError,
        DefectKind::SlowDownload,
        DefectKind::TsError,
        DefectKind::ProbeOverload,
        DefectKind::Blur,
    ];
    /// How many kinds there are.
    pub const COUNT: usize = Self::ALL.len();

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DefectKind::Black => "black",
            DefectKind::Freeze => "freeze",
            DefectKind::Corruption => "corruption",
            DefectKind::Uniform => "uniform",
            DefectKind::Silence => "silence",
            DefectKind::Clipping => "clipping",
            DefectKind::ChannelLoss => "channel_loss",
            DefectKind::Loudness => "loudness",
            DefectKind::UnsupportedCodec => "unsupported_codec",
            DefectKind::LowFps => "low_fps",
            DefectKind::AvDesync => "av_desync",
            DefectKind::TestPattern => "test_pattern",
            DefectKind::Stall => "stall",
            DefectKind::SourceDown => "source_down",
            DefectKind::PacketLoss => "packet_loss",
            DefectKind::PlaylistStale => "playlist_stale",
            DefectKind::SegmentError => "segment_error",
            DefectKind::SlowDownload => "slow_download",
            DefectKind::TsError => "ts_error",
            DefectKind::ProbeOverload => "probe_overload",
            DefectKind::Blur => "blur",
        }
    }

    /// Delivery kinds: about how the stream arrives rather than what it shows. Timed by
    /// the wall clock (seconds since monitoring of the stream began) unless a transition
    /// carries the media it concerns ([`Transition::media`]); picture and sound kinds
    /// by media time.
    pub fn is_delivery(self) -> bool {
        matches!(
            self,
            DefectKind::Stall
                | DefectKind::SourceDown
                | DefectKind::PacketLoss
                | DefectKind::PlaylistStale
                | DefectKind::SegmentError
                | DefectKind::SlowDownload
                | DefectKind::TsError
                | DefectKind::ProbeOverload
        )
    }
}

/// Whether a transition opens or closes a defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    End,
}

impl Phase {
    /// Wire name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::End => "end",
        }
    }
}

/// One piece of evidence attached to a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    Num(f64),
    Int(i64),
    Str(&'static str),
    /// Text decided at run time (an error message, a colour's `#rrggbb`); allocated, so
    /// only when a transition is made (rare), never per frame or sample. Must not
    /// contain secrets.
    Text(std::sync::Arc<str>),
}

/// A small, fixed-capacity list of named evidence values: room for the at most 7 a
/// producer reports plus the two session times the pipeline adds to a delivery defect
/// timed on the media clock ([`Transition::media`]).
pub type Metrics = heapless::Vec<(&'static str, Metric), 10>;

/// Metrics that did not fit a [`Metrics`] (a bug: every producer reports fewer than
/// its capacity; counted rather than lost silently, asserted in debug builds).
static METRICS_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Metrics dropped so far for lack of room (see `put`); 0 unless there is a bug.
pub fn metrics_dropped() -> u64 {
    METRICS_DROPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets a metric: replaces one of the same name, else appends. A full list (10: every
/// producer here reports at most 7, plus 2 session times) drops the new value, counted in
/// [`metrics_dropped`], logged, and asserted against in debug builds.
pub(crate) fn put(m: &mut Metrics, name: &'static str, v: Metric) {
    if let Some(slot) = m.iter_mut().find(|(n, _)| *n == name) {
        slot.1 = v;
        return;
    }
    if m.push((name, v)).is_err() {
        METRICS_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(metric = name, "metric dropped: evidence list full (a bug)");
        debug_assert!(false, "metric {name} does not fit");
    }
}

/// Rounds an evidence or stats value to `decimals` places (events use 3: milliseconds);
/// non-finite values become 0 (JSON has no NaN). The one rounding rule for everything
/// the probe publishes.
pub fn round_to(x: f64, decimals: i32) -> f64 {
    if x.is_finite() {
        let f = 10f64.powi(decimals);
        (x * f).round() / f
    } else {
        0.0
    }
}

/// What a detector reports: a defect confirmed (start) or over (end).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub kind: DefectKind,
    pub phase: Phase,
    /// Media time of the onset (seconds since the stream's first timestamp).
    pub start_s: f64,
    /// Media time the defect ended (end transitions only).
    pub end_s: Option<f64>,
    pub metrics: Metrics,
    /// Tells apart defects of one kind that may be open at the same time on one
    /// stream (`unsupported_codec`: 0 video, 1 audio; `loudness`: 0 too loud, 1 too
    /// quiet). 0 for every other kind.
    pub slot: u8,
    /// Delivery defects about a piece of media (a damaged segment, a run of bad TS
    /// packets): where that media lies on the stream's own timeline. Sources set it
    /// with `start_s`/`end_s` on their session clock; the pipeline, which owns the
    /// media clock, turns it into media seconds in `start_s`/`end_s` and keeps the
    /// session times as the `session_start_s`/`session_end_s` metrics. `None` for
    /// picture and sound defects (already in media time) and for wall-clock defects
    /// (stall, source_down, playlist_stale, ...).
    pub media: Option<MediaSpan>,
}

/// A span of media on a stream's timeline, in 90 kHz presentation-time ticks (the
/// timeline of [`crate::timebase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaSpan {
    pub start_pts: i64,
    /// Unknown on a `start` whose end is still to come.
    pub end_pts: Option<i64>,
}

/// How bad a defect is for a viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The viewer sees or hears nothing useful (black, frozen, source down).
    Critical,
    /// Clearly visible or audible damage (corruption, silence).
    Major,
    /// Degraded or unmonitorable, not necessarily visible (unsupported codec).
    Warning,
}

impl DefectKind {
    /// Default severity of a kind.
    pub fn severity(self) -> Severity {
        match self {
            DefectKind::Black | DefectKind::Freeze => Severity::Critical,
            DefectKind::Corruption
            | DefectKind::Uniform
            | DefectKind::Silence
            | DefectKind::Clipping
            | DefectKind::ChannelLoss => Severity::Major,
            DefectKind::UnsupportedCodec
            | DefectKind::SlowDownload
            | DefectKind::ProbeOverload
            | DefectKind::Loudness => Severity::Warning,
            DefectKind::Stall | DefectKind::SourceDown | DefectKind::PlaylistStale => {
                Severity::Critical
            }
            DefectKind::PacketLoss
            | DefectKind::SegmentError
            | DefectKind::TsError
            | DefectKind::LowFps
            | DefectKind::AvDesync
            | DefectKind::TestPattern => Severity::Major,
            DefectKind::Blur => Severity::Warning,
        }
    }
}

/// Why an `end` was emitted other than the defect clearing by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The input ended (end of file, VOD playlist, `--duration` reached).
    EndOfInput,
    /// The probe is shutting down (signal).
    Shutdown,
}

impl EndReason {
    /// Wire name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::EndOfInput => "end_of_input",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// How much of a video stream the probe decodes (`docs/events.md`, "Decode levels").
/// Ordered from the most to the least decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeLevel {
    /// Every access unit is decoded.
    Full,
    /// Non-reference pictures (`nal_ref_idc == 0`, most B-frames) are not decoded.
    Reference,
    /// Only key pictures (IDR, or flagged random access) are decoded.
    Key,
}

impl DecodeLevel {
    /// Every level, most decoded first (the index order of per-level counters).
    pub const ALL: [DecodeLevel; 3] = [DecodeLevel::Full, DecodeLevel::Reference, DecodeLevel::Key];

    /// Wire name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeLevel::Full => "full",
            DecodeLevel::Reference => "reference",
            DecodeLevel::Key => "key",
        }
    }

    /// Index into per-level arrays ([`DecodeLevel::ALL`] order).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The next cheaper level (`Key` stays `Key`).
    pub fn cheaper(self) -> DecodeLevel {
        match self {
            DecodeLevel::Full => DecodeLevel::Reference,
            _ => DecodeLevel::Key,
        }
    }

    /// The next richer level (`Full` stays `Full`).
    pub fn richer(self) -> DecodeLevel {
        match self {
            DecodeLevel::Key => DecodeLevel::Reference,
            _ => DecodeLevel::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_level_wire_names_and_order() {
        for l in DecodeLevel::ALL {
            assert_eq!(serde_json::to_value(l).unwrap(), l.as_str());
            assert_eq!(DecodeLevel::ALL[l.index()], l);
        }
        assert!(DecodeLevel::Full < DecodeLevel::Reference);
        assert_eq!(DecodeLevel::Full.cheaper().cheaper(), DecodeLevel::Key);
        assert_eq!(DecodeLevel::Key.richer().richer(), DecodeLevel::Full);
    }

    #[test]
    fn wire_names_are_the_serde_names() {
        for k in DefectKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for p in [Phase::Start, Phase::End] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for r in [EndReason::EndOfInput, EndReason::Shutdown] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
