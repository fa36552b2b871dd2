//! Audio decoder under arbitrary bytes.
//!
//! Input: the payload of an AAC PES (a run of ADTS frames; a real .adts file is a valid
//! input). It is decoded twice by one `AudioDecoder` (AacAdts): first with a PTS, then
//! again without one (the decoder continues from its own clock and reuses its AAC
//! state). The same bytes then go through the PcmS16le path, with the sample rate and
//! channel count taken from the first three bytes.
//!
//! Invariants: no panic (including arithmetic overflow: run with --debug-assertions);
//! every AudioLevel has finite rms/peak dBFS with rms <= peak, a positive duration for
//! AAC (non-negative for PCM), and a PTS later than the previous level's; per-channel
//! RMS finite, at most the peak, −200 past the measured channels (at most
//! `MAX_CHANNELS`, none in an empty block); samples at full scale at most the samples;
//! stats.frames equals the levels produced and stats.packets the decode calls.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vqprobe::decode::audio::{AudioDecoder, AudioFormat};
use vqprobe::decode::{AudioLevel, MAX_CHANNELS};

fn check(l: &AudioLevel, last_pts: &mut Option<i64>, aac: bool) {
    assert!(l.rms_dbfs.is_finite() && l.peak_dbfs.is_finite(), "{l:?}");
    assert!(l.rms_dbfs >= -200.0 && l.peak_dbfs >= -200.0, "{l:?}");
    assert!(l.rms_dbfs <= l.peak_dbfs + 1e-3, "rms above peak: {l:?}");
    let n = usize::from(l.channels);
    assert!(n <= MAX_CHANNELS, "{l:?}");
    assert!(l.near_full_scale <= l.samples, "{l:?}");
    if l.samples == 0 {
        assert_eq!(n, 0, "{l:?}");
    }
    for (ch, &db) in l.channel_rms_dbfs.iter().enumerate() {
        assert!(db.is_finite() && db >= -200.0, "{l:?}");
        assert!(db <= l.peak_dbfs + 1e-3, "channel RMS above peak: {l:?}");
        if ch >= n {
            assert_eq!(db, -200.0, "{l:?}");
        }
    }
    if aac {
        assert!(l.duration > 0, "{l:?}");
        if let Some(p) = *last_pts {
            assert!(l.pts > p, "AAC level PTS not increasing: {p} then {l:?}");
        }
    } else {
        assert!(l.duration >= 0, "{l:?}");
        if let Some(p) = *last_pts {
            assert!(l.pts >= p, "PCM level PTS going back: {p} then {l:?}");
        }
    }
    *last_pts = Some(l.pts);
}

fuzz_target!(|data: &[u8]| {
    let mut d = AudioDecoder::new(AudioFormat::AacAdts);
    let mut n = 0u64;
    let mut last = None;
    d.decode(Some(900_000), data, &mut |l| {
        check(&l, &mut last, true);
        n += 1;
    });
    d.decode(None, data, &mut |l| {
        check(&l, &mut last, true);
        n += 1;
    });
    assert_eq!(d.stats.frames, n);
    assert_eq!(d.stats.packets, 2);

    if let [r0, r1, ch, pcm @ ..] = data {
        let sample_rate = u32::from(u16::from_le_bytes([*r0, *r1])) * 2;
        let channels = u16::from(*ch & 0x0F);
        let mut p = AudioDecoder::new(AudioFormat::PcmS16le {
            sample_rate,
            channels,
        });
        let mut n = 0u64;
        let mut last = None;
        p.decode(None, pcm, &mut |_| n += 1); // no clock yet: nothing comes out
        assert_eq!(n, 0);
        p.decode(Some(0), pcm, &mut |l| {
            check(&l, &mut last, false);
            n += 1;
        });
        p.decode(None, pcm, &mut |l| {
            check(&l, &mut last, false);
            n += 1;
        });
        assert_eq!(p.stats.frames, n);
    }
});
