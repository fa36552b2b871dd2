//! Per-second series of what the detectors already measure, for `check --report` and
//! `demo --report`: picture luma, the freeze detector's difference (motion), the
//! block-edge ratio with the corruption detector's threshold, the sound level, the
//! short-term loudness, the share of samples at full scale, the quietest channel and
//! the blur detector's sharpness with its threshold.
//! Nothing is measured twice: the values are the ones the detectors just used. Off
//! unless asked for ([`crate::config::DetectConfig::series`]).
//!
//! Bounded: a [`Lane`] holds at most [`MAX_BINS`] bins. When media time runs past the
//! last one, neighbouring bins are merged in pairs and the bin width doubles, keeping
//! each bin's minimum, maximum and mean, so a one-picture peak survives any amount of
//! downsampling. Ten lanes of 2048 bins of 16 bytes: 320 KiB at most for any duration.

use crate::decode::{AudioLevel, Thumb};

/// Bins per lane at most; the bin width starts at one second and doubles as needed.
pub const MAX_BINS: usize = 2048;
/// Media times beyond this (seconds, about 31 700 years) are not recorded.
const MAX_T: f64 = 1e12;
/// Sound levels and picture differences are recorded no lower than this (digital
/// silence and an identical picture are −200 dB).
pub const FLOOR_DB: f32 = -120.0;

/// The values one bin saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    pub min: f32,
    pub max: f32,
    sum: f32,
    /// Samples in the bin (0: none).
    pub n: u32,
}

impl Default for Bin {
    fn default() -> Self {
        Bin {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            sum: 0.0,
            n: 0,
        }
    }
}

impl Bin {
    fn add(&mut self, v: f32) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.n += 1;
    }

    fn merge(a: Bin, b: Bin) -> Bin {
        Bin {
            min: a.min.min(b.min),
            max: a.max.max(b.max),
            sum: a.sum + b.sum,
            n: a.n + b.n,
        }
    }

    /// The mean (`None`: no sample).
    pub fn mean(&self) -> Option<f32> {
        (self.n > 0).then(|| self.sum / self.n as f32)
    }
}

/// One measure over media time, in bins of [`Lane::width`] seconds from 0 s.
#[derive(Debug, Clone)]
pub struct Lane {
    bins: Vec<Bin>,
    width: f64,
    /// The last sample's time: a sample at or before it is not taken again (the
    /// pipeline may decode a GOP a second time; see `level`).
    last_t: f64,
}

impl Default for Lane {
    fn default() -> Self {
        Lane {
            bins: Vec::new(),
            width: 1.0,
            last_t: f64::NEG_INFINITY,
        }
    }
}

impl Lane {
    /// Records `v` at media time `t` (seconds). Non-finite values, negative times and
    /// times not after the last sample's are ignored.
    pub fn push(&mut self, t: f64, v: f32) {
        if !v.is_finite() || !(0.0..MAX_T).contains(&t) || t <= self.last_t {
            return;
        }
        self.last_t = t;
        let mut i = (t / self.width) as usize;
        while i >= MAX_BINS {
            self.halve();
            i = (t / self.width) as usize;
        }
        if self.bins.len() <= i {
            self.bins.resize(i + 1, Bin::default());
        }
        self.bins[i].add(v);
    }

    /// Merges bins in pairs: the width doubles, minimum, maximum and mean are kept.
    fn halve(&mut self) {
        let merged: Vec<Bin> = self
            .bins
            .chunks(2)
            .map(|c| c.iter().copied().fold(Bin::default(), Bin::merge))
            .collect();
        self.bins = merged;
        self.width *= 2.0;
    }

    /// The bins, the first starting at 0 s.
    pub fn bins(&self) -> &[Bin] {
        &self.bins
    }

    /// Seconds per bin.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// No sample recorded.
    pub fn is_empty(&self) -> bool {
        self.bins.iter().all(|b| b.n == 0)
    }

    /// The smallest minimum and largest maximum over all bins (`None`: empty).
    pub fn range(&self) -> Option<(f32, f32)> {
        let (lo, hi) = self
            .bins
            .iter()
            .filter(|b| b.n > 0)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), b| {
                (lo.min(b.min), hi.max(b.max))
            });
        (lo <= hi).then_some((lo, hi))
    }
}

/// Picture sizes remembered (the first ones; later changes are only counted).
const SIZES: usize = 4;

/// What the video chain records per decoded picture.
#[derive(Debug, Clone, Default)]
pub struct PictureSeries {
    /// Mean luma, 0–255 as coded.
    pub luma: Lane,
    /// The freeze detector's difference to its reference picture, dB (pictures it
    /// compared only: not black ones, not the first after a size change).
    pub motion_db: Lane,
    /// Block-edge ratio.
    pub edge_ratio: Lane,
    /// The ratio above which a picture counts as blocky (baseline × `edge_jump`), once
    /// the corruption detector has learned its baseline.
    pub edge_threshold: Lane,
    /// The blur detector's sharpness (fine detail over coarse contrast; pictures it
    /// measured only: not black, frozen, corrupt or too flat ones).
    pub sharpness: Lane,
    /// The sharpness under which a picture counts as blurred (baseline × `ratio`),
    /// for the pictures it judged.
    pub sharpness_threshold: Lane,
    /// Picture sizes seen, in order (at most four).
    pub sizes: heapless::Vec<(u16, u16), SIZES>,
    /// Size changes beyond the ones remembered.
    pub more_sizes: u32,
    /// Pictures recorded.
    pub pictures: u64,
}

impl PictureSeries {
    /// One decoded picture at `t`, with the detectors' values for it.
    pub fn picture(
        &mut self,
        t: f64,
        th: &Thumb,
        motion_db: Option<f64>,
        edge_threshold: Option<f32>,
        sharpness: Option<f32>,
        sharpness_threshold: Option<f32>,
    ) {
        self.pictures += 1;
        let size = (th.width, th.height);
        if self.sizes.last() != Some(&size) && self.sizes.push(size).is_err() {
            self.more_sizes = self.more_sizes.saturating_add(1);
        }
        self.luma.push(t, th.luma_mean);
        if let Some(d) = motion_db {
            self.motion_db.push(t, (d as f32).max(FLOOR_DB));
        }
        self.edge_ratio.push(t, th.edge_ratio);
        if let Some(x) = edge_threshold {
            self.edge_threshold.push(t, x);
        }
        if let Some(x) = sharpness {
            self.sharpness.push(t, x);
        }
        if let Some(x) = sharpness_threshold {
            self.sharpness_threshold.push(t, x);
        }
    }
}

/// What the audio chain records per decoded block of sound: the values the sound
/// detectors just used.
#[derive(Debug, Clone, Default)]
pub struct SoundSeries {
    /// RMS level over all channels, dBFS (no lower than [`FLOOR_DB`]): `silence`.
    pub level_dbfs: Lane,
    /// Short-term loudness (3 s), LUFS, once 3 s were measured (no lower than
    /// [`FLOOR_DB`]): `loudness`.
    pub short_term_lufs: Lane,
    /// Share of the block's samples at or above the full-scale level, percent:
    /// `clipping`.
    pub full_scale_pct: Lane,
    /// RMS of the quietest channel, dBFS, for tracks of two or more channels (no lower
    /// than [`FLOOR_DB`]): `channel_loss`.
    pub quietest_channel_dbfs: Lane,
}

impl SoundSeries {
    /// One decoded block of sound at `t`.
    pub fn block(&mut self, t: f64, lvl: &AudioLevel) {
        self.level_dbfs.push(t, lvl.rms_dbfs.max(FLOOR_DB));
        if let Some(l) = lvl.short_term_lufs {
            self.short_term_lufs.push(t, l.max(FLOOR_DB));
        }
        if lvl.samples > 0 {
            let pct = 100.0 * f64::from(lvl.near_full_scale) / f64::from(lvl.samples);
            self.full_scale_pct.push(t, pct as f32);
        }
        let n = usize::from(lvl.channels).min(lvl.channel_rms_dbfs.len());
        if n >= 2 {
            let q = lvl.channel_rms_dbfs[..n]
                .iter()
                .copied()
                .fold(f32::INFINITY, f32::min);
            self.quietest_channel_dbfs.push(t, q.max(FLOOR_DB));
        }
    }
}

/// A stream's series and the properties a report states.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub pictures: PictureSeries,
    pub sound: SoundSeries,
    /// Codec names of the program's video and audio tracks (the last program seen).
    pub video_codec: Option<&'static str>,
    pub audio_codec: Option<&'static str>,
    /// Audio sample rate and channels, when the container says (PCM, G.711).
    pub audio_format: Option<(u32, u16)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_keeps_one_bin_per_second_until_it_must_merge() {
        let mut l = Lane::default();
        for i in 0..100 {
            l.push(f64::from(i) * 0.04, i as f32);
        }
        assert_eq!(l.width(), 1.0);
        assert_eq!(l.bins().len(), 4);
        assert_eq!(l.bins()[0].n, 25);
        assert_eq!((l.bins()[0].min, l.bins()[0].max), (0.0, 24.0));
        assert_eq!(l.bins()[0].mean(), Some(12.0));
        assert_eq!(l.range(), Some((0.0, 99.0)));
    }

    #[test]
    fn a_long_lane_halves_and_keeps_a_one_sample_peak() {
        let mut l = Lane::default();
        // 3 hours at 10 samples/s, one spike at 5000.05 s.
        for i in 0..108_000u32 {
            let t = f64::from(i) * 0.1 + 0.05;
            l.push(t, if i == 50_000 { 99.0 } else { 1.0 });
        }
        assert!(l.bins().len() <= MAX_BINS, "{}", l.bins().len());
        assert_eq!(l.width(), 8.0, "10 800 s in 2048 bins: 8-s bins");
        let spike = l.bins().iter().position(|b| b.max == 99.0);
        assert_eq!(spike, Some((5000.05 / 8.0) as usize));
        let total: u32 = l.bins().iter().map(|b| b.n).sum();
        assert_eq!(total, 108_000, "merging loses no sample");
        assert!(l.bins().iter().all(|b| b.min == 1.0));
    }

    #[test]
    fn a_sound_block_records_level_loudness_full_scale_share_and_quietest_channel() {
        let mut s = SoundSeries::default();
        let mut lvl = AudioLevel {
            rms_dbfs: -250.0,
            channels: 2,
            samples: 2048,
            near_full_scale: 512,
            ..AudioLevel::default()
        };
        lvl.channel_rms_dbfs[0] = -20.0;
        lvl.channel_rms_dbfs[1] = -200.0;
        s.block(0.5, &lvl);
        assert_eq!(s.level_dbfs.range(), Some((FLOOR_DB, FLOOR_DB)));
        assert_eq!(s.short_term_lufs.range(), None, "no short-term value yet");
        assert_eq!(s.full_scale_pct.range(), Some((25.0, 25.0)));
        assert_eq!(s.quietest_channel_dbfs.range(), Some((FLOOR_DB, FLOOR_DB)));
        // Mono: no quietest-channel value; an empty block: no share.
        let mono = AudioLevel {
            channels: 1,
            short_term_lufs: Some(-23.0),
            ..AudioLevel::default()
        };
        s.block(1.5, &mono);
        assert_eq!(s.short_term_lufs.range(), Some((-23.0, -23.0)));
        assert_eq!(s.full_scale_pct.bins().len(), 1);
        assert_eq!(s.quietest_channel_dbfs.bins().len(), 1);
    }

    #[test]
    fn a_lane_ignores_repeats_negative_times_and_non_finite_values() {
        let mut l = Lane::default();
        l.push(1.0, 5.0);
        l.push(1.0, 50.0);
        l.push(0.5, 50.0);
        l.push(-1.0, 50.0);
        l.push(2.0, f32::NAN);
        l.push(f64::INFINITY, 1.0);
        l.push(1e13, 1.0);
        assert_eq!(l.range(), Some((5.0, 5.0)));
        assert_eq!(l.bins().len(), 2);
        // A far time merges at most log2(t / 2048) times and stays bounded.
        l.push(9e11, 7.0);
        assert!(l.bins().len() <= MAX_BINS);
        assert_eq!(l.range(), Some((5.0, 7.0)));
    }
}
