//! Configuration: typed, documented, with defaults; unknown fields are errors.
//!
//! Boundaries: detector settings only (types, defaults, validation); the agent's file
//! format is `app/agent/config.rs`.
//!
//! Detector settings live in [`DetectConfig`]; the reference with every default is in
//! `docs/config.md`. Durations are seconds.

use serde::{Deserialize, Serialize};

use crate::defect::DecodeLevel;

/// All detector settings. Every field has a default; a TOML table may set any subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub black: BlackConfig,
    pub freeze: FreezeConfig,
    pub uniform: UniformConfig,
    pub corruption: CorruptionConfig,
    pub silence: SilenceConfig,
    pub clipping: ClippingConfig,
    pub channel_loss: ChannelLossConfig,
    pub loudness: LoudnessConfig,
    pub low_fps: LowFpsConfig,
    pub av_sync: AvSyncConfig,
    pub test_pattern: TestPatternConfig,
    pub blur: BlurConfig,
    /// Largest picture (width × height) decoded; a larger SPS is refused and reported
    /// as `unsupported_codec` instead of being allocated. Default 4096 × 2304.
    pub max_pixels: u64,
    /// Largest memory (MiB) the video decoder may allocate for one stream's pictures,
    /// estimated from the SPS (reference frames + 2 padded pictures); a larger SPS is
    /// refused (`unsupported_codec`, reason `h264_decoder_memory`). Default 160.
    pub max_decoder_mb: u64,
    /// How much of the video is decoded (`[detect.decode]`).
    pub decode: DecodeConfig,
    /// Make a JPEG thumbnail for each picture defect's start (set by `check --thumbs`,
    /// `demo --report` and the agent's `[thumbnails]`; not a `[detect]` key).
    #[serde(skip)]
    pub thumbnails: bool,
    /// Record the per-second series of a report (set by `check --report` and `demo
    /// --report`; not a `[detect]` key; see `pipeline::series`).
    #[serde(skip)]
    pub series: bool,
}

/// The decode level setting: `auto` (the default) or a level the stream is pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelChoice {
    /// As cheap as the evidence allows; every picture is decoded around a suspected or
    /// open picture defect (see `docs/events.md`, "Decode levels").
    #[default]
    Auto,
    Full,
    Reference,
    Key,
}

impl LevelChoice {
    /// The level a pinned stream keeps; `None` for `auto`.
    pub fn pinned(self) -> Option<DecodeLevel> {
        match self {
            LevelChoice::Auto => None,
            LevelChoice::Full => Some(DecodeLevel::Full),
            LevelChoice::Reference => Some(DecodeLevel::Reference),
            LevelChoice::Key => Some(DecodeLevel::Key),
        }
    }

    /// Parses a command-line value (`auto`, `full`, `reference`, `key`).
    pub fn parse(s: &str) -> Option<LevelChoice> {
        Some(match s {
            "auto" => LevelChoice::Auto,
            "full" => LevelChoice::Full,
            "reference" => LevelChoice::Reference,
            "key" => LevelChoice::Key,
            _ => return None,
        })
    }
}

impl std::str::FromStr for LevelChoice {
    type Err = crate::error::InvalidChoice;

    /// [`LevelChoice::parse`], with an error naming the valid values.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LevelChoice::parse(s).ok_or_else(|| {
            crate::error::InvalidChoice::new(s, &["auto", "full", "reference", "key"])
        })
    }
}

/// `[detect.decode]`: the decode level and the compressed look-back ring of `auto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// `auto` (default), or a pinned `full`, `reference` or `key`.
    pub level: LevelChoice,
    /// `auto`: megabytes of compressed video kept since the previous key picture, to
    /// decode again from there when a picture defect is suspected. A GOP that does not
    /// fit is decoded at once instead (counted as `ring_overflows`). Default 8.
    pub ring_mb: f64,
    /// `auto`: which pictures it does not decode are still parsed down to their
    /// macroblocks (openh264 parse-only, no reconstruction) so that a corrupt slice
    /// raises a suspicion: `reference` (default: pictures others predict from, whose
    /// damage lasts until the next key picture), `all`, or `off` (cheapest; corrupt
    /// slices in pictures not decoded are then seen only through the transport
    /// checks). Parsing costs about half of decoding (entropy decoding is most of
    /// openh264's time): docs/PERFORMANCE.md has the figures.
    pub syntax_check: SyntaxCheck,
}

/// See [`DecodeConfig::syntax_check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyntaxCheck {
    All,
    #[default]
    Reference,
    Off,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            level: LevelChoice::Auto,
            ring_mb: 8.0,
            syntax_check: SyntaxCheck::Reference,
        }
    }
}

impl DecodeConfig {
    /// The ring's byte bound.
    pub fn ring_bytes(&self) -> usize {
        (self.ring_mb * 1024.0 * 1024.0) as usize
    }
}

impl DetectConfig {
    /// Checks value ranges; returns a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        fn dur(name: &str, v: f64) -> Result<(), String> {
            if v.is_finite() && (0.0..=3600.0).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be between 0 and 3600 seconds, got {v}"
                ))
            }
        }
        fn unit(name: &str, v: f64) -> Result<(), String> {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be between 0 and 1, got {v}"))
            }
        }
        dur("black.min_duration", self.black.min_duration)?;
        dur("black.clear_duration", self.black.clear_duration)?;
        unit("black.pixel_threshold", self.black.pixel_threshold)?;
        unit("black.picture_ratio", f64::from(self.black.picture_ratio))?;
        dur("freeze.min_duration", self.freeze.min_duration)?;
        dur("freeze.clear_duration", self.freeze.clear_duration)?;
        if !(self.freeze.noise_db.is_finite() && (-120.0..=0.0).contains(&self.freeze.noise_db)) {
            return Err(format!(
                "freeze.noise_db must be between -120 and 0, got {}",
                self.freeze.noise_db
            ));
        }
        unit(
            "freeze.max_changed_share",
            f64::from(self.freeze.max_changed_share),
        )?;
        let u = &self.uniform;
        if !(u.share.is_finite() && (0.5..=1.0).contains(&u.share)) {
            return Err(format!(
                "uniform.share must be between 0.5 and 1 (a share of the picture), got {}",
                u.share
            ));
        }
        for (name, v) in [
            ("uniform.luma_tolerance", u.luma_tolerance),
            ("uniform.chroma_tolerance", u.chroma_tolerance),
            ("uniform.pixel_tolerance", u.pixel_tolerance),
        ] {
            if v > 64 {
                return Err(format!("{name} must be at most 64 levels, got {v}"));
            }
        }
        dur("uniform.min_duration", u.min_duration)?;
        dur("uniform.clear_duration", u.clear_duration)?;
        dur("corruption.min_duration", self.corruption.min_duration)?;
        dur("corruption.clear_duration", self.corruption.clear_duration)?;
        if !(self.corruption.edge_jump == 0.0
            || (self.corruption.edge_jump.is_finite() && self.corruption.edge_jump >= 1.0))
        {
            return Err(format!(
                "corruption.edge_jump must be 0 (off) or >= 1, got {}",
                self.corruption.edge_jump
            ));
        }
        dur("silence.min_duration", self.silence.min_duration)?;
        dur("silence.clear_duration", self.silence.clear_duration)?;
        if !(self.silence.threshold_dbfs.is_finite()
            && (-150.0..=0.0).contains(&self.silence.threshold_dbfs))
        {
            return Err(format!(
                "silence.threshold_dbfs must be between -150 and 0, got {}",
                self.silence.threshold_dbfs
            ));
        }
        let c = &self.clipping;
        if !(c.sample_level.is_finite() && (0.5..=1.0).contains(&c.sample_level)) {
            return Err(format!(
                "clipping.sample_level must be between 0.5 and 1 (a share of full scale), got {}",
                c.sample_level
            ));
        }
        if !(c.ratio.is_finite() && c.ratio > 0.0 && c.ratio <= 1.0) {
            return Err(format!(
                "clipping.ratio must be above 0 and at most 1 (a share of the samples), got {}",
                c.ratio
            ));
        }
        if !(c.window.is_finite() && (0.1..=10.0).contains(&c.window)) {
            return Err(format!(
                "clipping.window must be between 0.1 and 10 seconds, got {}",
                c.window
            ));
        }
        dur("clipping.min_duration", c.min_duration)?;
        dur("clipping.clear_duration", c.clear_duration)?;
        let l = &self.channel_loss;
        if !(l.threshold_dbfs.is_finite() && (-150.0..=0.0).contains(&l.threshold_dbfs)) {
            return Err(format!(
                "channel_loss.threshold_dbfs must be between -150 and 0, got {}",
                l.threshold_dbfs
            ));
        }
        dur("channel_loss.min_duration", l.min_duration)?;
        dur("channel_loss.clear_duration", l.clear_duration)?;
        let l = &self.loudness;
        if !(l.ceiling_lufs.is_finite() && (-70.0..=0.0).contains(&l.ceiling_lufs)) {
            return Err(format!(
                "loudness.ceiling_lufs must be between -70 and 0, got {}",
                l.ceiling_lufs
            ));
        }
        if !(l.floor_lufs.is_finite() && (-70.0..=0.0).contains(&l.floor_lufs)) {
            return Err(format!(
                "loudness.floor_lufs must be between -70 and 0, got {}",
                l.floor_lufs
            ));
        }
        if l.floor_lufs >= l.ceiling_lufs {
            return Err(format!(
                "loudness.floor_lufs ({}) must be below loudness.ceiling_lufs ({})",
                l.floor_lufs, l.ceiling_lufs
            ));
        }
        if !(l.long_window.is_finite() && (10.0..=120.0).contains(&l.long_window)) {
            return Err(format!(
                "loudness.long_window must be between 10 and 120 seconds, got {}",
                l.long_window
            ));
        }
        dur("loudness.min_duration", l.min_duration)?;
        dur("loudness.clear_duration", l.clear_duration)?;
        let p = &self.test_pattern;
        if !(p.cut_db.is_finite() && (-60.0..=0.0).contains(&p.cut_db)) {
            return Err(format!(
                "test_pattern.cut_db must be between -60 and 0, got {}",
                p.cut_db
            ));
        }
        dur("test_pattern.min_duration", p.min_duration)?;
        dur("test_pattern.clear_duration", p.clear_duration)?;
        unit("low_fps.ratio", self.low_fps.ratio)?;
        dur("low_fps.min_duration", self.low_fps.min_duration)?;
        dur("low_fps.clear_duration", self.low_fps.clear_duration)?;
        if !(self.av_sync.threshold_ms.is_finite()
            && (1.0..=60_000.0).contains(&self.av_sync.threshold_ms))
        {
            return Err(format!(
                "av_sync.threshold_ms must be between 1 and 60000, got {}",
                self.av_sync.threshold_ms
            ));
        }
        dur("av_sync.min_duration", self.av_sync.min_duration)?;
        dur("av_sync.clear_duration", self.av_sync.clear_duration)?;
        if !(self.av_sync.window.is_finite() && (0.2..=10.0).contains(&self.av_sync.window)) {
            return Err(format!(
                "av_sync.window must be between 0.2 and 10 seconds, got {}",
                self.av_sync.window
            ));
        }
        let b = &self.blur;
        if !(b.ratio.is_finite() && b.ratio > 0.0 && b.ratio < 1.0) {
            return Err(format!(
                "blur.ratio must be above 0 and below 1 (a share of the baseline), got {}",
                b.ratio
            ));
        }
        if !(b.min_contrast.is_finite() && (0.0..=255.0).contains(&b.min_contrast)) {
            return Err(format!(
                "blur.min_contrast must be between 0 and 255 luma levels, got {}",
                b.min_contrast
            ));
        }
        if !(b.baseline_s.is_finite() && (1.0..=3600.0).contains(&b.baseline_s)) {
            return Err(format!(
                "blur.baseline_s must be between 1 and 3600 seconds, got {}",
                b.baseline_s
            ));
        }
        dur("blur.min_duration", b.min_duration)?;
        dur("blur.clear_duration", b.clear_duration)?;
        if self.max_pixels == 0 {
            return Err("max_pixels must be positive".into());
        }
        if !(8..=65536).contains(&self.max_decoder_mb) {
            return Err(format!(
                "max_decoder_mb must be between 8 and 65536, got {}",
                self.max_decoder_mb
            ));
        }
        let ring = self.decode.ring_mb;
        if !(ring.is_finite() && (0.25..=256.0).contains(&ring)) {
            return Err(format!(
                "decode.ring_mb must be between 0.25 and 256 megabytes, got {ring}"
            ));
        }
        Ok(())
    }
}

/// Black picture detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlackConfig {
    /// A pixel is black below this share of the luma range (ffmpeg's pix_th). 0.10.
    pub pixel_threshold: f64,
    /// A picture is black when at least this share of its pixels is (pic_th). 0.98.
    pub picture_ratio: f32,
    /// Seconds a black picture must last to be reported. 2.0.
    pub min_duration: f64,
    /// Seconds the picture must stay non-black to end the event. 0.0.
    pub clear_duration: f64,
}

impl BlackConfig {
    /// The luma value below which a pixel counts as black: `pixel_threshold` of the
    /// signal range, i.e. `16 + 0.10 × 219 ≈ 37` in limited range, `0.10 × 255 ≈ 25`
    /// in full range.
    pub fn luma_threshold(&self, full_range: bool) -> u8 {
        let t = if full_range {
            self.pixel_threshold * 255.0
        } else {
            16.0 + self.pixel_threshold * 219.0
        };
        t.clamp(0.0, 255.0) as u8
    }
}

impl Default for BlackConfig {
    fn default() -> Self {
        BlackConfig {
            pixel_threshold: 0.10,
            picture_ratio: 0.98,
            min_duration: 2.0,
            clear_duration: 0.0,
        }
    }
}

/// Frozen picture detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreezeConfig {
    /// Noise floor, dB of the mean absolute difference of the 64×36 luma grid against
    /// the last moving picture (full scale = 0 dB). Below it a picture is frozen. -40.
    /// (A frozen picture re-encoded at an IDR differs by about -46 dB; one frame of
    /// real motion by -35 dB or more.)
    pub noise_db: f64,
    /// A grid cell "changed" when its mean luma moved by more than this many levels. 6.
    pub cell_step: u8,
    /// A picture is frozen only if at most this share of grid cells changed. 0.005
    /// (11 of 2304 cells): a clock or a ticker keeps a picture alive.
    pub max_changed_share: f32,
    /// Seconds a frozen picture must last to be reported. 2.0.
    pub min_duration: f64,
    /// Seconds the picture must keep moving to end the event. 0.0.
    pub clear_duration: f64,
}

impl Default for FreezeConfig {
    fn default() -> Self {
        FreezeConfig {
            noise_db: -40.0,
            cell_step: 6,
            max_changed_share: 0.005,
            min_duration: 2.0,
            clear_duration: 0.0,
        }
    }
}

/// One-colour picture detector (`uniform`: a covered lens, a "no signal" screen). See
/// `detect::uniform` and docs/events.md for the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UniformConfig {
    /// A picture is uniform when at least this share of it is one colour (0.5–1). 0.75.
    pub share: f32,
    /// A 64×36 grid cell is of the picture's colour when its mean luma is within this
    /// many levels of the colour's. 6.
    pub luma_tolerance: u8,
    /// ... and the mean Cb and Cr of its 16×9 chroma cell are each within this many
    /// levels of the colour's. 6.
    pub chroma_tolerance: u8,
    /// ... and at least `share` of the sampled pixels (not cell means) have a luma
    /// within this many levels of the colour's: texture finer than a grid cell (clouds,
    /// foliage, a crowd) keeps a smooth-looking picture from being uniform, while
    /// sensor noise after coding (a few levels) does not. 12.
    pub pixel_tolerance: u8,
    /// Seconds a uniform picture must last to be reported. 5.0.
    pub min_duration: f64,
    /// Seconds the picture must stay non-uniform to end the event. 0.0.
    pub clear_duration: f64,
}

impl Default for UniformConfig {
    fn default() -> Self {
        UniformConfig {
            share: 0.75,
            luma_tolerance: 6,
            chroma_tolerance: 6,
            pixel_tolerance: 12,
            min_duration: 5.0,
            clear_duration: 0.0,
        }
    }
}

/// Block corruption detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorruptionConfig {
    /// Seconds of corruption before it is reported (0 = the first corrupt frame). 0.0.
    pub min_duration: f64,
    /// Seconds the picture must stay clean to end the event; merges error bursts. 0.5.
    pub clear_duration: f64,
    /// A frame is blocky when its block-edge ratio exceeds the running baseline by this
    /// factor (0 disables the edge signal and keeps decoder errors only). 2.0.
    pub edge_jump: f32,
    /// ... and its mean luma step at block boundaries is at least this (0–255). 6.0.
    pub edge_min_step: f32,
    /// ... for at least this many consecutive frames (a moving pattern that lines up
    /// with the 8×8 grid for one frame is not macroblocking). 3.
    pub edge_min_frames: u32,
}

impl Default for CorruptionConfig {
    fn default() -> Self {
        CorruptionConfig {
            min_duration: 0.0,
            clear_duration: 0.5,
            edge_jump: 2.0,
            edge_min_step: 6.0,
            edge_min_frames: 3,
        }
    }
}

/// Silent audio detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceConfig {
    /// Audio below this RMS level is silent (dBFS). -60.
    pub threshold_dbfs: f64,
    /// Seconds of silence before it is reported. 2.0.
    pub min_duration: f64,
    /// Seconds the sound must stay above the threshold to end the event. 0.0.
    pub clear_duration: f64,
}

impl Default for SilenceConfig {
    fn default() -> Self {
        SilenceConfig {
            threshold_dbfs: -60.0,
            min_duration: 2.0,
            clear_duration: 0.0,
        }
    }
}

/// Clipped sound (`clipping`): too many samples at full scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClippingConfig {
    /// A sample is at full scale when its magnitude is at least this share of full
    /// scale (0.5–1). 0.95 (−0.45 dBFS): after AAC a clipped waveform ripples below
    /// and above ±1.0 instead of sitting on it (docs/events.md, "clipping").
    pub sample_level: f64,
    /// Clipping when at least this share of the samples (all channels) of the last
    /// `window` seconds is at full scale. 0.001 (0.1%).
    pub ratio: f64,
    /// Seconds of sound the share is taken over (0.1–10). 1.0.
    pub window: f64,
    /// Seconds of clipping before it is reported. 2.0.
    pub min_duration: f64,
    /// Seconds the share must stay below `ratio` to end the event. 0.0.
    pub clear_duration: f64,
}

impl Default for ClippingConfig {
    fn default() -> Self {
        ClippingConfig {
            sample_level: 0.95,
            ratio: 0.001,
            window: 1.0,
            min_duration: 2.0,
            clear_duration: 0.0,
        }
    }
}

/// A lost channel (`channel_loss`): in a track of two or more channels, one is silent
/// while another is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelLossConfig {
    /// A channel whose RMS is below this level (dBFS) is silent. -60.
    pub threshold_dbfs: f64,
    /// Seconds a channel must stay silent before it is reported. 2.0.
    pub min_duration: f64,
    /// Seconds every channel must carry sound again to end the event. 0.0.
    pub clear_duration: f64,
}

impl Default for ChannelLossConfig {
    fn default() -> Self {
        ChannelLossConfig {
            threshold_dbfs: -60.0,
            min_duration: 2.0,
            clear_duration: 0.0,
        }
    }
}

/// Loudness out of range (`loudness`, BS.1770 / EBU R128): too loud (short-term, 3 s,
/// above `ceiling_lufs`) or too quiet (gated over `long_window`, below `floor_lufs`,
/// while not silent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoudnessConfig {
    /// Measure loudness and report it. true. Off, no sample is K-weighted.
    pub enabled: bool,
    /// Too loud when the short-term loudness (3 s) is above this (LUFS, −70–0). −10.
    pub ceiling_lufs: f64,
    /// Too quiet when the gated loudness of the last `long_window` seconds is below
    /// this (LUFS, −70–0, below the ceiling), the sound not being silence. −40.
    pub floor_lufs: f64,
    /// Seconds of sound the "too quiet" loudness is gated over (10–120). 30.
    pub long_window: f64,
    /// Seconds of too loud (or too quiet) sound before it is reported. 3.0.
    pub min_duration: f64,
    /// Seconds the loudness must stay within the limits to end the event. 3.0.
    pub clear_duration: f64,
}

impl Default for LoudnessConfig {
    fn default() -> Self {
        LoudnessConfig {
            enabled: true,
            ceiling_lufs: -10.0,
            floor_lufs: -40.0,
            long_window: 30.0,
            min_duration: 3.0,
            clear_duration: 3.0,
        }
    }
}

/// Low frame rate detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LowFpsConfig {
    /// Low when the rate (mean of the last 5 frame intervals, from timestamps) is below
    /// this share of the best rate the stream sustained. 0.8.
    pub ratio: f64,
    /// Seconds the rate must stay low to be reported. 2.0.
    pub min_duration: f64,
    /// Seconds the rate must stay normal to end the event. 0.0.
    pub clear_duration: f64,
}

impl Default for LowFpsConfig {
    fn default() -> Self {
        LowFpsConfig {
            ratio: 0.8,
            min_duration: 2.0,
            clear_duration: 0.0,
        }
    }
}

/// Audio/video timestamp drift detector (`av_desync`). Measures timestamps, not the
/// lip-sync of the content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvSyncConfig {
    /// Audio and video timestamps are apart when their offset moved more than this many
    /// milliseconds away from the offset at the stream's start. 100.
    pub threshold_ms: f64,
    /// Seconds the offset must stay beyond the threshold to be reported. 2.0.
    pub min_duration: f64,
    /// Seconds the offset must stay within the threshold to end the event. 0.0.
    pub clear_duration: f64,
    /// MPEG-TS/HLS: seconds of arrivals whose median offset is one estimate (the
    /// muxer's interleaving makes single packets swing by ±0.35 s). 1.0.
    pub window: f64,
}

impl Default for AvSyncConfig {
    fn default() -> Self {
        AvSyncConfig {
            threshold_ms: 100.0,
            min_duration: 2.0,
            clear_duration: 0.0,
            window: 1.0,
        }
    }
}

/// Colour bars or a still slate where the programme should be (`test_pattern`; the
/// rules are in `detect::test_pattern` and docs/events.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestPatternConfig {
    /// Look for test patterns at all. true.
    pub enabled: bool,
    /// Colour bars (SMPTE, EBU, PAL 75%/100%). true.
    pub bars: bool,
    /// A still picture that began with a cut (the freeze detector's stillness test). true.
    pub slate: bool,
    /// A picture is a cut when it differs from the one before by at least this, dB of
    /// the mean absolute difference of the luma grid (full scale = 0 dB; −60–0). −20
    /// (about 25 luma levels on average; moving content is at −35 to −25 dB).
    pub cut_db: f64,
    /// Seconds bars or a slate must last to be reported. 10.0.
    pub min_duration: f64,
    /// Seconds the programme must be back to end the event. 0.0.
    pub clear_duration: f64,
}

impl Default for TestPatternConfig {
    fn default() -> Self {
        TestPatternConfig {
            enabled: true,
            bars: true,
            slate: true,
            cut_db: -20.0,
            min_duration: 10.0,
            clear_duration: 0.0,
        }
    }
}

/// Blurred picture (`blur`): the picture's sharpness (fine detail over coarse
/// contrast) below a share of the stream's own running baseline. See `detect::blur`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlurConfig {
    /// A picture is blurred when its sharpness is below this share of the baseline
    /// (above 0, below 1). 0.5.
    pub ratio: f64,
    /// Pictures whose coarse contrast (RMS luma step between neighbouring cells of the
    /// 64×36 grid) is below this many levels are not judged (too flat to tell: a sky,
    /// a fade). 2.0.
    pub min_contrast: f32,
    /// Time constant of the running baseline, seconds of media (1–3600). 30.
    pub baseline_s: f64,
    /// Seconds the picture must stay blurred to be reported. 10.0.
    pub min_duration: f64,
    /// Seconds the picture must stay sharp to end the event. 1.0.
    pub clear_duration: f64,
}

impl Default for BlurConfig {
    fn default() -> Self {
        BlurConfig {
            ratio: 0.5,
            min_contrast: 2.0,
            baseline_s: 30.0,
            min_duration: 10.0,
            clear_duration: 1.0,
        }
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            black: BlackConfig::default(),
            freeze: FreezeConfig::default(),
            uniform: UniformConfig::default(),
            corruption: CorruptionConfig::default(),
            silence: SilenceConfig::default(),
            clipping: ClippingConfig::default(),
            channel_loss: ChannelLossConfig::default(),
            loudness: LoudnessConfig::default(),
            low_fps: LowFpsConfig::default(),
            av_sync: AvSyncConfig::default(),
            test_pattern: TestPatternConfig::default(),
            blur: BlurConfig::default(),
            max_pixels: 4096 * 2304,
            max_decoder_mb: 160,
            decode: DecodeConfig::default(),
            thumbnails: false,
            series: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_tables_keep_defaults_and_unknown_fields_fail() {
        let c: DetectConfig = toml::from_str("[black]\nmin_duration = 3.5\n").unwrap();
        assert_eq!(c.black.min_duration, 3.5);
        assert_eq!(c.black.picture_ratio, 0.98);
        assert_eq!(c.freeze, FreezeConfig::default());
        assert_eq!(c.max_pixels, 4096 * 2304);
        let e = toml::from_str::<DetectConfig>("[black]\nmin_durration = 3\n").unwrap_err();
        assert!(e.to_string().contains("min_durration"), "{e}");
        let c: DetectConfig = toml::from_str("[silence]\nthreshold_dbfs = 5.0\n").unwrap();
        assert!(c.validate().unwrap_err().contains("silence.threshold_dbfs"));
        assert!(DetectConfig::default().validate().is_ok());
        let c: DetectConfig =
            toml::from_str("[av_sync]\nthreshold_ms = 250.0\nmin_duration = 4\n").unwrap();
        assert_eq!(c.av_sync.threshold_ms, 250.0);
        assert_eq!(c.av_sync.window, 1.0);
        assert!(c.validate().is_ok());
        let c: DetectConfig = toml::from_str("[av_sync]\nwindow = 0.01\n").unwrap();
        assert!(c.validate().unwrap_err().contains("av_sync.window"));
        let c: DetectConfig = toml::from_str("[av_sync]\nthreshold_ms = 0.0\n").unwrap();
        assert!(c.validate().unwrap_err().contains("av_sync.threshold_ms"));
    }

    #[test]
    fn clipping_and_channel_loss_settings_default_and_are_checked() {
        let d = DetectConfig::default();
        assert_eq!(d.clipping.sample_level, 0.95);
        assert_eq!(
            d.clipping.sample_level as f32,
            crate::decode::NEAR_FULL_SCALE
        );
        assert_eq!(d.clipping.ratio, 0.001);
        assert_eq!((d.clipping.window, d.clipping.min_duration), (1.0, 2.0));
        assert_eq!(d.channel_loss.threshold_dbfs, -60.0);
        assert_eq!(d.channel_loss.min_duration, 2.0);
        let c: DetectConfig =
            toml::from_str("[clipping]\nratio = 0.01\n[channel_loss]\nmin_duration = 5\n").unwrap();
        assert_eq!((c.clipping.ratio, c.clipping.window), (0.01, 1.0));
        assert_eq!(c.channel_loss.min_duration, 5.0);
        assert!(c.validate().is_ok());
        for (bad, field) in [
            ("[clipping]\nsample_level = 1.5\n", "clipping.sample_level"),
            ("[loudness]\nceiling_lufs = 3.0\n", "loudness.ceiling_lufs"),
            ("[loudness]\nfloor_lufs = nan\n", "loudness.floor_lufs"),
            ("[loudness]\nfloor_lufs = -5.0\n", "loudness.floor_lufs"),
            ("[loudness]\nlong_window = 5.0\n", "loudness.long_window"),
            ("[test_pattern]\ncut_db = 3.0\n", "test_pattern.cut_db"),
            (
                "[test_pattern]\nmin_duration = -1.0\n",
                "test_pattern.min_duration",
            ),
            ("[loudness]\nmin_duration = -1.0\n", "loudness.min_duration"),
            ("[clipping]\nsample_level = 0.2\n", "clipping.sample_level"),
            ("[clipping]\nratio = 0.0\n", "clipping.ratio"),
            ("[clipping]\nratio = nan\n", "clipping.ratio"),
            ("[clipping]\nwindow = 60.0\n", "clipping.window"),
            ("[clipping]\nmin_duration = -1.0\n", "clipping.min_duration"),
            (
                "[channel_loss]\nthreshold_dbfs = 3.0\n",
                "channel_loss.threshold_dbfs",
            ),
            (
                "[channel_loss]\nclear_duration = inf\n",
                "channel_loss.clear_duration",
            ),
        ] {
            let c: DetectConfig = toml::from_str(bad).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.contains(field), "{bad}: {e}");
        }
        for bad in [
            "[clipping]\nthreshold = 0.9\n",
            "[channel_loss]\nchannel = 1\n",
        ] {
            let e = toml::from_str::<DetectConfig>(bad).unwrap_err();
            assert!(e.to_string().contains("unknown field"), "{bad}: {e}");
        }
    }

    #[test]
    fn uniform_settings_default_and_are_checked() {
        let d = DetectConfig::default();
        assert_eq!(d.uniform.share, 0.75);
        assert_eq!(
            (
                d.uniform.luma_tolerance,
                d.uniform.chroma_tolerance,
                d.uniform.pixel_tolerance
            ),
            (6, 6, 12)
        );
        assert_eq!(
            (d.uniform.min_duration, d.uniform.clear_duration),
            (5.0, 0.0)
        );
        let c: DetectConfig =
            toml::from_str("[uniform]\nshare = 0.9\nmin_duration = 10\n").unwrap();
        assert_eq!((c.uniform.share, c.uniform.min_duration), (0.9, 10.0));
        assert_eq!(c.uniform.chroma_tolerance, 6);
        assert!(c.validate().is_ok());
        for (bad, field) in [
            ("[uniform]\nshare = 0.3\n", "uniform.share"),
            ("[uniform]\nshare = nan\n", "uniform.share"),
            (
                "[uniform]\nluma_tolerance = 100\n",
                "uniform.luma_tolerance",
            ),
            (
                "[uniform]\npixel_tolerance = 65\n",
                "uniform.pixel_tolerance",
            ),
            ("[uniform]\nmin_duration = -1.0\n", "uniform.min_duration"),
        ] {
            let c: DetectConfig = toml::from_str(bad).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.contains(field), "{bad}: {e}");
        }
        for bad in [
            "[uniform]\ntolerance = 5\n",
            "[uniform]\nluma_tolerance = -1\n",
            "[uniform]\nluma_tolerance = 300\n",
        ] {
            assert!(toml::from_str::<DetectConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blur_settings_default_and_are_checked() {
        let d = DetectConfig::default().blur;
        assert_eq!((d.ratio, d.min_contrast, d.baseline_s), (0.5, 2.0, 30.0));
        assert_eq!((d.min_duration, d.clear_duration), (10.0, 1.0));
        let c: DetectConfig = toml::from_str("[blur]\nratio = 0.3\n").unwrap();
        assert_eq!((c.blur.ratio, c.blur.min_duration), (0.3, 10.0));
        assert!(c.validate().is_ok());
        for bad in [
            "[blur]\nratio = 1.0\n",
            "[blur]\nratio = 0.0\n",
            "[blur]\nratio = nan\n",
            "[blur]\nmin_contrast = -1.0\n",
            "[blur]\nbaseline_s = 0.5\n",
            "[blur]\nmin_duration = -1.0\n",
            "[blur]\nclear_duration = inf\n",
        ] {
            let c: DetectConfig = toml::from_str(bad).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.contains("blur."), "{bad}: {e}");
        }
        let e = toml::from_str::<DetectConfig>("[blur]\nthreshold = 0.5\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn decode_settings_default_to_auto_and_are_checked() {
        let d = DetectConfig::default();
        assert_eq!(d.decode.level, LevelChoice::Auto);
        assert_eq!(d.decode.syntax_check, SyntaxCheck::Reference);
        assert_eq!(d.decode.ring_bytes(), 8 << 20);
        let c: DetectConfig =
            toml::from_str("[decode]\nlevel = \"key\"\nsyntax_check = \"off\"\n").unwrap();
        assert_eq!(c.decode.level.pinned(), Some(DecodeLevel::Key));
        assert_eq!(c.decode.syntax_check, SyntaxCheck::Off);
        for bad in [
            "[decode]\nlevel = \"half\"\n",
            "[decode]\nsyntax = \"off\"\n",
            "[decode]\nsyntax_check = \"some\"\n",
        ] {
            assert!(toml::from_str::<DetectConfig>(bad).is_err(), "{bad}");
        }
        let c: DetectConfig = toml::from_str("[decode]\nring_mb = 0.1\n").unwrap();
        assert!(c.validate().unwrap_err().contains("decode.ring_mb"));
        let c: DetectConfig = toml::from_str("max_decoder_mb = 4\n").unwrap();
        assert!(c.validate().unwrap_err().contains("max_decoder_mb"));
        assert_eq!(
            LevelChoice::parse("reference"),
            Some(LevelChoice::Reference)
        );
        assert_eq!(LevelChoice::parse("Full"), None);
    }
}
