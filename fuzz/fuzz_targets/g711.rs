//! G.711 (RTSP PCMU / PCMA) decoding under arbitrary bytes and timestamps.
//!
//! Input: `byte 0` (bit 0: A-law, else μ-law; bits 1-3: channels 0-7), bytes 1-4 the
//! sample rate (u32 LE, 0 included), bytes 5-12 the first PTS (i64 LE, any value), then
//! the G.711 payload. The payload is decoded twice by one `AudioDecoder`: with the PTS,
//! then without one (the decoder continues from its own clock).
//!
//! Invariants: no panic (timestamp arithmetic included); `g711_samples` gives exactly one
//! sample per input byte, each within −1.0..=1.0 and equal to an independent expansion
//! written from the G.711 segment/quantisation tables (odd symmetric: flipping the sign
//! bit negates the sample); a zero rate or channel count produces no level and counts
//! errors; otherwise each call produces one level with `duration = frames × 90000 /
//! rate` (frames = bytes / channels), the first at the given PTS, the second at
//! `pts + duration` (never wrapping: saturating at the end of the i64 range), peak dBFS
//! equal to the largest sample's level and rms ≤ peak; per channel (sample i is channel
//! i mod channels) an RMS equal to one computed here, and the count of samples at full
//! scale (|s| ≥ `NEAR_FULL_SCALE`) and of all samples equal to the payload's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vqprobe::decode::audio::{
    alaw_to_linear, g711_samples, ulaw_to_linear, AudioDecoder, AudioFormat,
};
use vqprobe::decode::{MAX_CHANNELS, NEAR_FULL_SCALE};

/// μ-law, G.711 table 2a: code inverted, 3-bit segment e, 4-bit step m: magnitude
/// (2m + 33) · 2^e − 33 in 14-bit units, here scaled by 4 to 16 bits.
fn ulaw_ref(code: u8) -> i32 {
    let c = !code;
    let e = i32::from((c >> 4) & 7);
    let m = i32::from(c & 15);
    let mag = ((2 * m + 33) << e) - 33;
    4 * if c & 0x80 != 0 { -mag } else { mag }
}

/// A-law, G.711 table 1a: even bits inverted (XOR 0x55), segment 0 is linear
/// (2m + 1), segment s ≥ 1 is (2m + 33) · 2^(s−1), in 13-bit units, scaled by 8.
fn alaw_ref(code: u8) -> i32 {
    let c = code ^ 0x55;
    let s = i32::from((c >> 4) & 7);
    let m = i32::from(c & 15);
    let mag = if s == 0 {
        2 * m + 1
    } else {
        (2 * m + 33) << (s - 1)
    };
    8 * if c & 0x80 != 0 { mag } else { -mag }
}

fn to_db(r: f64) -> f64 {
    if r <= 1e-10 {
        -200.0
    } else {
        20.0 * r.log10()
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let alaw = data[0] & 1 != 0;
    let channels = u16::from((data[0] >> 1) & 7);
    let sample_rate = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    let mut p = [0u8; 8];
    p.copy_from_slice(&data[5..13]);
    let pts = i64::from_le_bytes(p);
    let payload = &data[13..];

    // Samples: one per byte, in range, as the standard says.
    let samples: Vec<f32> = g711_samples(alaw, payload).collect();
    assert_eq!(samples.len(), payload.len());
    let mut peak = 0f32;
    let mut near = 0u32;
    let mut ch_sq = [0f64; MAX_CHANNELS];
    let mut ch_n = [0u64; MAX_CHANNELS];
    let chans = usize::from((data[0] >> 1) & 7).max(1);
    for (i, (&b, &s)) in payload.iter().zip(&samples).enumerate() {
        near += u32::from(s.abs() >= NEAR_FULL_SCALE);
        if i % chans < MAX_CHANNELS {
            ch_sq[i % chans] += f64::from(s) * f64::from(s);
            ch_n[i % chans] += 1;
        }
        assert!((-1.0..=1.0).contains(&s), "sample {s} of byte {b:#04x}");
        let lin = if alaw {
            alaw_to_linear(b)
        } else {
            ulaw_to_linear(b)
        };
        let want = if alaw { alaw_ref(b) } else { ulaw_ref(b) };
        assert_eq!(i32::from(lin), want, "byte {b:#04x} (alaw {alaw})");
        assert_eq!(s, f32::from(lin) / 32768.0);
        let other = g711_samples(alaw, &[b ^ 0x80]).next().unwrap();
        assert_eq!(other, -s, "not odd symmetric at {b:#04x}");
        peak = peak.max(s.abs());
    }

    let mut d = AudioDecoder::new(AudioFormat::G711 {
        alaw,
        sample_rate,
        channels,
    });
    let mut levels = Vec::new();
    d.decode(Some(pts), payload, &mut |l| levels.push(l));
    d.decode(None, payload, &mut |l| levels.push(l));
    assert_eq!(d.stats.packets, 2);
    if sample_rate == 0 || channels == 0 {
        assert!(levels.is_empty());
        assert_eq!(d.stats.errors, 2);
        return;
    }
    assert_eq!(levels.len(), 2);
    assert_eq!(d.stats.frames, 2);
    let frames = (payload.len() / usize::from(channels)) as i64;
    let duration = frames * 90_000 / i64::from(sample_rate);
    for l in &levels {
        assert_eq!(l.duration, duration);
        assert!(l.rms_dbfs.is_finite() && l.peak_dbfs.is_finite(), "{l:?}");
        assert!(l.rms_dbfs <= l.peak_dbfs + 1e-3, "rms above peak: {l:?}");
        let want = to_db(f64::from(peak)) as f32;
        assert!((l.peak_dbfs - want).abs() < 1e-3, "peak {l:?}, want {want}");
        assert_eq!(l.near_full_scale, near, "{l:?}");
        assert_eq!(l.samples as usize, payload.len(), "{l:?}");
        let n = if payload.is_empty() { 0 } else { usize::from(channels) };
        assert_eq!(usize::from(l.channels), n, "{l:?}");
        for ch in 0..MAX_CHANNELS {
            let want = if ch < n && ch_n[ch] > 0 {
                to_db((ch_sq[ch] / ch_n[ch] as f64).sqrt()) as f32
            } else {
                -200.0
            };
            let got = l.channel_rms_dbfs[ch];
            assert!((got - want).abs() < 1e-2, "channel {ch}: {got} != {want}: {l:?}");
            assert!(got <= l.peak_dbfs + 1e-3, "channel RMS above peak: {l:?}");
        }
    }
    assert_eq!(levels[0].pts, pts);
    let second = pts.saturating_add(duration);
    assert_eq!(levels[1].pts, second, "second block's PTS");
    assert_eq!(d.next_pts(), Some(second.saturating_add(duration)));
});
