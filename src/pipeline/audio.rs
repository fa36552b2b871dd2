//! The audio chain: audio decoder (AAC, PCM, G.711) → sound levels and loudness →
//! `silence`, `clipping`, `channel_loss`, `loudness`.
//!
//! Owns the audio decoder and the sound detectors. It reads the media clock and pushes
//! the end of the media analysed ([`Timeline`]); it does not set the clock's origin,
//! does not touch tracks, `unsupported_codec` or A/V sync (the facade feeds A/V sync
//! from [`AudioChain::next_pts`]) and never emits events: transitions go to the
//! analyzer's one list.

use std::time::Instant;

use crate::config::DetectConfig;
use crate::decode::audio::{AudioDecoder, AudioFormat, AudioStats};
use crate::decode::AudioLevel;
use crate::defect::Transition;
use crate::detect::channel_loss::ChannelLossDetector;
use crate::detect::clipping::ClippingDetector;
use crate::detect::loudness::LoudnessDetector;
use crate::detect::silence::SilenceDetector;
use crate::timebase;

use super::series::SoundSeries;
use super::Timeline;

/// Decoder and sound detectors of one stream. See the module docs.
pub(super) struct AudioChain {
    decoder: Option<AudioDecoder>,
    /// `[detect.clipping] sample_level`: the decoder counts samples from this level on.
    full_scale: f32,
    /// `[detect.loudness] long_window` when loudness is on: the decoder measures it.
    loudness_window: Option<f64>,
    silence: SilenceDetector,
    clipping: ClippingDetector,
    channel_loss: ChannelLossDetector,
    loudness: LoudnessDetector,
    detect_ns: u64,
    /// A report's sound series (only when asked for).
    series: Option<Box<SoundSeries>>,
}

impl AudioChain {
    pub fn new(cfg: &DetectConfig) -> Self {
        AudioChain {
            decoder: None,
            full_scale: cfg.clipping.sample_level as f32,
            loudness_window: cfg.loudness.enabled.then_some(cfg.loudness.long_window),
            silence: SilenceDetector::new(cfg.silence.clone()),
            clipping: ClippingDetector::new(cfg.clipping.clone()),
            channel_loss: ChannelLossDetector::new(
                cfg.channel_loss.clone(),
                cfg.silence.threshold_dbfs,
            ),
            loudness: LoudnessDetector::new(
                cfg.loudness.clone(),
                cfg.silence.threshold_dbfs,
                cfg.silence.min_duration,
            ),
            detect_ns: 0,
            series: cfg.series.then(Box::default),
        }
    }

    /// The program's audio format (`None`: no audio the probe decodes). A decoder is
    /// made when the format changes; the same format keeps the running one.
    pub fn set_format(&mut self, format: Option<AudioFormat>) {
        match format {
            Some(f) => {
                if self.decoder.as_ref().map(|a| a.format()) != Some(f) {
                    self.decoder = Some(AudioDecoder::with_settings(
                        f,
                        self.full_scale,
                        self.loudness_window,
                    ));
                }
            }
            None => self.decoder = None,
        }
    }

    /// Decoder counters (zero without a decoder).
    pub fn stats(&self) -> AudioStats {
        self.decoder.as_ref().map(|a| a.stats).unwrap_or_default()
    }

    /// Time spent in the sound detectors (ns).
    pub fn detect_ns(&self) -> u64 {
        self.detect_ns
    }

    /// Where the sound decoded so far ends (the next packet's expected PTS).
    pub fn next_pts(&self) -> Option<i64> {
        self.decoder.as_ref().and_then(AudioDecoder::next_pts)
    }

    /// Decodes one packet (`pts` `None`: it continues the previous one) and runs the
    /// sound detectors on its levels.
    pub fn packet(
        &mut self,
        pts: Option<i64>,
        data: &[u8],
        tl: &mut Timeline,
        found: &mut Vec<Transition>,
    ) {
        let Some(dec) = self.decoder.as_mut() else {
            return;
        };
        let silence = &mut self.silence;
        let clipping = &mut self.clipping;
        let channel_loss = &mut self.channel_loss;
        let loudness = &mut self.loudness;
        let detect_ns = &mut self.detect_ns;
        let series = &mut self.series;
        dec.decode(pts, data, &mut |lvl: AudioLevel| {
            // AAC decoded before any timestamp was seen counts its samples from tick 0
            // (`decode::audio`); such sound is placed at that count, without starting
            // the clock, so the first real timestamp still becomes the origin.
            let t = match tl.clock.origin() {
                Some(_) => tl.clock.secs(lvl.pts),
                None => timebase::secs(lvl.pts),
            };
            tl.end = tl.end.max(t + timebase::secs(lvl.duration));
            let d0 = Instant::now();
            found.extend(silence.observe(t, &lvl));
            found.extend(clipping.observe(t, &lvl));
            found.extend(channel_loss.observe(t, &lvl));
            found.extend(loudness.observe(t, &lvl).into_iter().flatten());
            *detect_ns += d0.elapsed().as_nanos() as u64;
            if let Some(s) = series.as_mut() {
                s.block(t, &lvl);
            }
        });
    }

    /// The sound series so far (`None`: not recorded).
    pub fn take_series(&mut self) -> Option<SoundSeries> {
        self.series.take().map(|s| *s)
    }

    /// Closes an open `silence`, `clipping`, `channel_loss` or `loudness` at `t`.
    pub fn finish(&mut self, t: f64, found: &mut Vec<Transition>) {
        found.extend(self.silence.finish(t));
        found.extend(self.clipping.finish(t));
        found.extend(self.channel_loss.finish(t));
        found.extend(self.loudness.finish(t).into_iter().flatten());
    }
}

#[cfg(test)]
mod tests {
    use crate::config::DetectConfig;
    use crate::defect::{DefectKind, EndReason, Phase};
    use crate::ingest::{Codec, Elementary, IngestMsg, Packet, ProgramInfo, Track};
    use crate::pipeline::Analyzer;

    /// 20 ADTS frames: silence and a tone alternating every two frames.
    const ALTERNATING_AAC: &[u8] = include_bytes!("../../tests/data/aac/alternating.aac");

    fn adts_frames(mut d: &[u8]) -> Vec<&[u8]> {
        let mut v = vec![];
        while d.len() >= 7 {
            let len =
                (usize::from(d[3] & 3) << 11) | (usize::from(d[4]) << 3) | usize::from(d[5] >> 5);
            v.push(&d[..len]);
            d = &d[len..];
        }
        v
    }

    /// Silence events of the clip fed as `packets` (each with its own PTS).
    fn silence_events(packets: &[(Option<i64>, Vec<u8>)]) -> Vec<(Phase, f64, Option<f64>)> {
        let mut cfg = DetectConfig::default();
        cfg.silence.min_duration = 0.0;
        let mut a = Analyzer::new("p", "s", cfg).unwrap();
        let mut events = vec![];
        a.handle(
            IngestMsg::Program(ProgramInfo {
                video: None,
                audio: Some(Elementary {
                    pid: 0x101,
                    stream_type: 0x0F,
                    codec: Codec::Aac,
                }),
                other_streams: 0,
            }),
            &mut |e| events.push(e),
        );
        for (pts, data) in packets {
            a.handle(
                IngestMsg::Packet(Packet {
                    track: Track::Audio,
                    pts: *pts,
                    dts: None,
                    key: true,
                    damaged: false,
                    data: data.clone(),
                }),
                &mut |e| events.push(e),
            );
        }
        a.handle(IngestMsg::End(EndReason::EndOfInput), &mut |e| {
            events.push(e)
        });
        events
            .iter()
            .filter(|e| e.kind == DefectKind::Silence)
            .map(|e| (e.state, e.start_s, e.end_s))
            .collect()
    }

    #[test]
    fn a_pes_with_many_aac_frames_loses_no_transition() {
        let frames = adts_frames(ALTERNATING_AAC);
        assert_eq!(frames.len(), 20);
        // One frame per packet: the reference.
        let one_by_one: Vec<(Option<i64>, Vec<u8>)> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| (Some(i as i64 * 1920), f.to_vec()))
            .collect();
        let want = silence_events(&one_by_one);
        let starts = want.iter().filter(|e| e.0 == Phase::Start).count();
        let ends = want.iter().filter(|e| e.0 == Phase::End).count();
        assert!(starts >= 3 && starts == ends, "{want:?}");
        // All 20 frames in one PES: the same starts and ends, none lost.
        let all = vec![(Some(0), frames.concat())];
        assert_eq!(silence_events(&all), want);
    }

    #[test]
    fn aac_before_any_timestamp_is_placed_at_its_sample_count() {
        let frames = adts_frames(ALTERNATING_AAC);
        let timed: Vec<(Option<i64>, Vec<u8>)> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| (Some(i as i64 * 1920), f.to_vec()))
            .collect();
        // No PTS at all: the decoder counts 1024 samples (1920 ticks at 48 kHz) per
        // frame from tick 0, and the clock, with no origin yet, leaves them there
        // (the behaviour from before the pipeline split, kept on purpose).
        let untimed: Vec<(Option<i64>, Vec<u8>)> =
            frames.iter().map(|f| (None, f.to_vec())).collect();
        let want = silence_events(&timed);
        assert!(!want.is_empty());
        assert_eq!(silence_events(&untimed), want);
    }
}
