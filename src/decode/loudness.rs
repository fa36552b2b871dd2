//! Loudness (ITU-R BS.1770-4 / EBU R128), measured on the decoded samples of one track:
//! the momentary (400 ms), short-term (3 s) and a gated loudness over a long window
//! (`[detect.loudness] long_window`, 30 s), all in LUFS.
//!
//! An own implementation rather than the `ebur128` crate: that crate keeps the
//! K-weighted samples of its whole window (f64 per sample and channel: 2.3 MiB per
//! stereo 48 kHz stream for the 3 s short-term window, 23 MiB for 30 s) and sums the
//! window again on every query. Here every sample goes through the K-weighting filter
//! (two biquads per channel, coefficients of BS.1770 recomputed for the sample rate as
//! libebur128 does) and is only *summed* per 100 ms sub-block; a ring of the sub-blocks'
//! channel-weighted mean squares (one `f64` each, 300 for 30 s) gives every window:
//!
//! * momentary: the mean of the last 4 sub-blocks (400 ms);
//! * short-term: the mean of the last 30 (3 s);
//! * long: the BS.1770 *gated* loudness of the last `long_window` seconds: 400 ms blocks
//!   overlapping by 75% (one per sub-block), absolute gate −70 LUFS, relative gate −10 LU
//!   under the mean of the blocks over the absolute gate, i.e. the programme's integrated
//!   loudness measured over that window only. Gated so that pauses between words or songs
//!   do not make speech read "too quiet"; when no block reaches −70 LUFS, the ungated
//!   mean of the window (the sound is then far below any floor anyway).
//!
//! `L = −0.691 + 10·log10(Σ G_c · mean(z_c²))` with channel weights G = 1 for every
//! channel: mono and stereo are exact; for more than two channels the layout is unknown
//! here, so surround channels are not weighted 1.41 and an LFE is not left out (only
//! PCM/G.711 tracks can have more than two; only the first
//! [`MAX_CHANNELS`](super::MAX_CHANNELS) are measured). A mono track is one channel (a
//! −20 dBFS sine reads −23 LUFS, as in BS.1770 and ffmpeg's `ebur128`).
//!
//! Checked against the expected values of EBU Tech 3341 in the tests below: 1 kHz
//! stereo sines at −23 and −33 dBFS read −23.0 and −33.0 LUFS ±0.1 (momentary and
//! short-term, at 48 and 44.1 kHz; tests 1 and 2), and the gated sequences of tests 3
//! and 4 (−36/−23/−36 dBFS; −72/−36/−23/−36/−72 dBFS) integrate to −23.0 ±0.1 over a
//! long window as long as the sequence.
//! Allocation: one ring per track, made when the meter is (the decoder makes one per
//! sample rate and channel count); nothing per block or sample.

use super::MAX_CHANNELS;

/// Sub-blocks of the momentary (400 ms) and short-term (3 s) windows.
const MOMENTARY_SUBS: usize = 4;
const SHORT_SUBS: usize = 30;
/// Absolute gate (LUFS) and relative gate (LU) of BS.1770-4.
const ABS_GATE_LUFS: f64 = -70.0;
const REL_GATE_LU: f64 = -10.0;
/// Filter states below this are flushed to zero at each sub-block (no denormals in
/// long digital silence).
const TINY: f64 = 1e-20;

/// Loudness (LUFS) of a channel-weighted mean square.
pub fn lufs(energy: f64) -> f64 {
    if energy <= 1e-20 {
        -200.0
    } else {
        -0.691 + 10.0 * energy.log10()
    }
}

fn energy_of(lufs: f64) -> f64 {
    10f64.powf((lufs + 0.691) / 10.0)
}

/// One biquad's coefficients (a0 normalised to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Biquad {
    pub b: [f64; 3],
    pub a: [f64; 3],
}

/// The two stages of BS.1770's K-weighting for `rate` Hz: the high-shelf pre-filter
/// (+4 dB above ~1.7 kHz) and the RLB high-pass (~38 Hz). The analogue prototypes are
/// libebur128's, so the coefficients equal the table of BS.1770 at 48 kHz.
pub fn k_weighting(rate: u32) -> [Biquad; 2] {
    let rate = f64::from(rate.max(1));
    let (f0, g, q) = (1681.974450955533, 3.999843853973347, 0.7071752369554196);
    let k = (std::f64::consts::PI * f0 / rate).tan();
    let vh = 10f64.powf(g / 20.0);
    let vb = vh.powf(0.4996667741545416);
    let a0 = 1.0 + k / q + k * k;
    let pre = Biquad {
        b: [
            (vh + vb * k / q + k * k) / a0,
            2.0 * (k * k - vh) / a0,
            (vh - vb * k / q + k * k) / a0,
        ],
        a: [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
    };
    let (f0, q) = (38.13547087602444, 0.5003270373238773);
    let k = (std::f64::consts::PI * f0 / rate).tan();
    let a0 = 1.0 + k / q + k * k;
    let rlb = Biquad {
        b: [1.0, -2.0, 1.0],
        a: [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
    };
    [pre, rlb]
}

/// The latest readings (LUFS); `None` until the window has been filled once.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Loudness {
    pub momentary: Option<f32>,
    pub short_term: Option<f32>,
    pub long: Option<f32>,
}

/// The loudness meter of one track (see the module docs).
#[derive(Debug, Clone)]
pub struct LoudnessMeter {
    rate: u32,
    channels: usize,
    k: [Biquad; 2],
    /// Direct form II transposed state per channel: two per stage.
    state: [[f64; 4]; MAX_CHANNELS],
    /// Sum of squares of the K-weighted samples of the sub-block being filled.
    acc: [f64; MAX_CHANNELS],
    /// Frames in the sub-block being filled / in a sub-block.
    frames: u32,
    sub_len: u32,
    /// Channel of the next interleaved sample.
    phase: usize,
    /// Channel-weighted mean squares of the last sub-blocks, oldest overwritten.
    ring: Vec<f64>,
    head: usize,
    /// Sub-blocks seen (saturating).
    seen: u64,
    now: Loudness,
    /// Momentary readings closed since the last `take_momentary_max`.
    momentary_max: Option<f32>,
}

impl LoudnessMeter {
    /// A meter for `channels` channels at `rate` Hz whose long window is `long_s`
    /// seconds (at least the 3-s short-term window; rounded to 100 ms).
    pub fn new(rate: u32, channels: usize, long_s: f64) -> Self {
        let subs = if long_s.is_finite() {
            (long_s * 10.0).round().clamp(SHORT_SUBS as f64, 36_000.0) as usize
        } else {
            SHORT_SUBS
        };
        LoudnessMeter {
            rate,
            channels: channels.max(1),
            k: k_weighting(rate),
            state: [[0.0; 4]; MAX_CHANNELS],
            acc: [0.0; MAX_CHANNELS],
            frames: 0,
            // As libebur128: (rate + 5) / 10 frames per 100 ms.
            sub_len: rate.max(10).saturating_add(5) / 10,
            phase: 0,
            ring: vec![0.0; subs],
            head: 0,
            seen: 0,
            now: Loudness::default(),
            momentary_max: None,
        }
    }

    /// Sample rate and channel count it was made for.
    pub fn format(&self) -> (u32, usize) {
        (self.rate, self.channels)
    }

    /// Long window, seconds.
    pub fn long_window(&self) -> f64 {
        self.ring.len() as f64 / 10.0
    }

    #[inline]
    fn filter(&mut self, ch: usize, x: f64) -> f64 {
        let [pre, rlb] = &self.k;
        let s = &mut self.state[ch];
        let y1 = pre.b[0] * x + s[0];
        s[0] = pre.b[1] * x - pre.a[1] * y1 + s[1];
        s[1] = pre.b[2] * x - pre.a[2] * y1;
        let y2 = rlb.b[0] * y1 + s[2];
        s[2] = rlb.b[1] * y1 - rlb.a[1] * y2 + s[3];
        s[3] = rlb.b[2] * y1 - rlb.a[2] * y2;
        y2
    }

    /// Adds one frame given channel by channel (`frame(ch)`), closing a sub-block when
    /// it is full.
    #[inline]
    fn frame_done(&mut self) {
        self.frames += 1;
        if self.frames >= self.sub_len {
            self.close_sub_block();
        }
    }

    /// Adds planar samples in −1.0..=1.0 (one slice per channel, equal lengths; only
    /// the first `MAX_CHANNELS` planes are used).
    pub fn add_planar(&mut self, planes: &[&[f32]]) {
        let n_ch = planes.len().min(MAX_CHANNELS).min(self.channels);
        let frames = planes.iter().take(n_ch).map(|p| p.len()).min().unwrap_or(0);
        let mut i = 0;
        while i < frames {
            // Up to the end of the sub-block being filled, channel by channel.
            let room = (self.sub_len - self.frames) as usize;
            let end = frames.min(i + room);
            for (ch, plane) in planes.iter().enumerate().take(n_ch) {
                let mut sum = 0.0;
                for &s in &plane[i..end] {
                    let x = if s.is_finite() { f64::from(s) } else { 0.0 };
                    let y = self.filter(ch, x);
                    sum += y * y;
                }
                self.acc[ch] += sum;
            }
            self.frames += (end - i) as u32;
            i = end;
            if self.frames >= self.sub_len {
                self.close_sub_block();
            }
        }
    }

    /// Adds interleaved samples in −1.0..=1.0 (channel 0, 1, ..., 0, 1, ...),
    /// continuing where the previous call stopped.
    pub fn add_interleaved(&mut self, samples: &[f32]) {
        for &s in samples {
            let ch = self.phase;
            if ch < MAX_CHANNELS {
                let x = if s.is_finite() { f64::from(s) } else { 0.0 };
                let y = self.filter(ch, x);
                self.acc[ch] += y * y;
            }
            self.phase += 1;
            if self.phase >= self.channels {
                self.phase = 0;
                self.frame_done();
            }
        }
    }

    fn close_sub_block(&mut self) {
        let n = f64::from(self.frames.max(1));
        let used = self.channels.min(MAX_CHANNELS);
        let energy: f64 = self.acc[..used].iter().sum::<f64>() / n;
        self.acc = [0.0; MAX_CHANNELS];
        self.frames = 0;
        for s in self.state.iter_mut().flatten() {
            if s.abs() < TINY {
                *s = 0.0;
            }
        }
        let len = self.ring.len();
        self.ring[self.head] = if energy.is_finite() { energy } else { 0.0 };
        self.head = (self.head + 1) % len;
        self.seen = self.seen.saturating_add(1);
        let m =
            (self.seen >= MOMENTARY_SUBS as u64).then(|| lufs(self.mean(MOMENTARY_SUBS)) as f32);
        self.now.momentary = m;
        if let Some(m) = m {
            self.momentary_max = Some(self.momentary_max.map_or(m, |x| x.max(m)));
        }
        self.now.short_term =
            (self.seen >= SHORT_SUBS as u64).then(|| lufs(self.mean(SHORT_SUBS)) as f32);
        self.now.long = (self.seen >= len as u64).then(|| self.gated() as f32);
    }

    /// The `i`-th newest sub-block (0 = the newest).
    fn back(&self, i: usize) -> f64 {
        let len = self.ring.len();
        self.ring[(self.head + len - 1 - i % len) % len]
    }

    /// Mean of the newest `n` sub-blocks.
    fn mean(&self, n: usize) -> f64 {
        (0..n).map(|i| self.back(i)).sum::<f64>() / n as f64
    }

    /// The 400 ms blocks of the ring, oldest first: the mean of every 4 consecutive
    /// sub-blocks (overlapping by 75%).
    fn blocks(&self) -> impl Iterator<Item = f64> + '_ {
        let (newer, older) = self.ring.split_at(self.head);
        let mut subs = older.iter().chain(newer).copied();
        let mut last = [0.0; MOMENTARY_SUBS];
        let (mut i, mut sum) = (0usize, 0.0);
        std::iter::from_fn(move || loop {
            let e = subs.next()?;
            let slot = i % MOMENTARY_SUBS;
            sum += e - last[slot];
            last[slot] = e;
            i += 1;
            if i >= MOMENTARY_SUBS {
                return Some(sum.max(0.0) / MOMENTARY_SUBS as f64);
            }
        })
    }

    /// Gated loudness of the whole ring (see the module docs).
    fn gated(&self) -> f64 {
        let len = self.ring.len();
        let abs = energy_of(ABS_GATE_LUFS);
        let (mut sum, mut n) = (0.0, 0usize);
        for e in self.blocks().filter(|&e| e > abs) {
            sum += e;
            n += 1;
        }
        if n == 0 {
            return lufs(self.mean(len));
        }
        let rel = sum / n as f64 * 10f64.powf(REL_GATE_LU / 10.0);
        let gate = abs.max(rel);
        let (mut sum, mut n) = (0.0, 0usize);
        for e in self.blocks().filter(|&e| e > gate) {
            sum += e;
            n += 1;
        }
        if n == 0 {
            return lufs(rel * 10.0);
        }
        lufs(sum / n as f64)
    }

    /// The latest readings.
    pub fn loudness(&self) -> Loudness {
        self.now
    }

    /// The loudest momentary reading closed since the last call (`None`: no 400 ms
    /// window closed in between).
    pub fn take_momentary_max(&mut self) -> Option<f32> {
        self.momentary_max.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `g711` fuzz target: a hostile sample rate near `u32::MAX` overflowed
    /// the sub-block length. Any rate makes a meter that takes samples without panicking.
    #[test]
    fn any_sample_rate_makes_a_meter() {
        for rate in [0, 1, 7, 8_000, 48_000, 4_000_000_000, u32::MAX] {
            let mut m = LoudnessMeter::new(rate, 2, 30.0);
            m.add_interleaved(&[0.5, -0.5, 1.0, -1.0, f32::NAN, f32::INFINITY]);
            let _ = m.loudness();
        }
    }

    /// A sine of `freq` Hz whose peak is `dbfs`, `secs` long, through the meter as
    /// interleaved `channels` (the same sine in each), in AAC-sized blocks.
    fn sine(rate: u32, channels: usize, dbfs: f64, freq: f64, secs: f64) -> LoudnessMeter {
        let mut m = LoudnessMeter::new(rate, channels, 30.0);
        let amp = 10f64.powf(dbfs / 20.0);
        let n = (f64::from(rate) * secs) as usize;
        let mut buf = Vec::with_capacity(1024 * channels);
        for i in 0..n {
            let s = (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                as f32;
            buf.extend(std::iter::repeat_n(s, channels));
            if buf.len() == 1024 * channels {
                m.add_interleaved(&buf);
                buf.clear();
            }
        }
        m.add_interleaved(&buf);
        m
    }

    #[test]
    fn k_weighting_at_48k_is_the_table_of_bs1770() {
        let [pre, rlb] = k_weighting(48000);
        let want_pre = [1.53512485958697, -2.69169618940638, 1.19839281085285];
        let want_pre_a = [-1.69065929318241, 0.73248077421585];
        for (g, w) in pre.b.iter().zip(want_pre) {
            assert!((g - w).abs() < 1e-9, "{pre:?}");
        }
        assert!((pre.a[1] - want_pre_a[0]).abs() < 1e-9 && (pre.a[2] - want_pre_a[1]).abs() < 1e-9);
        assert!((rlb.a[1] - -1.99004745483398).abs() < 1e-9, "{rlb:?}");
        assert!((rlb.a[2] - 0.99007225036621).abs() < 1e-9, "{rlb:?}");
    }

    /// EBU Tech 3341, tests 1 and 2 (and a −20 dBFS one), at 48 and 44.1 kHz:
    /// a 1 kHz stereo sine of peak −23 dBFS per channel reads −23.0 ± 0.1 LUFS.
    #[test]
    fn tech_3341_sines_read_their_level() {
        for rate in [48000, 44100] {
            for dbfs in [-23.0, -33.0, -20.0] {
                let m = sine(rate, 2, dbfs, 1000.0, 3.2);
                let l = m.loudness();
                let s = f64::from(l.short_term.unwrap());
                let mo = f64::from(l.momentary.unwrap());
                assert!((s - dbfs).abs() <= 0.1, "{rate} Hz {dbfs} dBFS: S = {s}");
                assert!((mo - dbfs).abs() <= 0.1, "{rate} Hz {dbfs} dBFS: M = {mo}");
                assert_eq!(l.long, None, "30 s not measured yet");
            }
        }
        // Mono is one channel: 3 dB under the same sine in stereo.
        let s = f64::from(
            sine(48000, 1, -20.0, 1000.0, 3.2)
                .loudness()
                .short_term
                .unwrap(),
        );
        assert!((s - -23.0).abs() <= 0.1, "{s}");
        // Planar input reads the same as interleaved.
        let mut p = LoudnessMeter::new(48000, 2, 30.0);
        let amp = 10f64.powf(-23.0 / 20.0);
        let plane: Vec<f32> = (0..48000 * 3)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * 1000.0 * f64::from(i) / 48000.0).sin()) as f32
            })
            .collect();
        for c in plane.chunks(1024) {
            p.add_planar(&[c, c]);
        }
        let s = f64::from(p.loudness().short_term.unwrap());
        assert!((s - -23.0).abs() <= 0.1, "{s}");
    }

    /// The long window is gated: a −23 LUFS programme with pauses of silence still
    /// reads −23, and silence alone reads far below any floor.
    #[test]
    fn long_window_is_gated_and_comes_after_the_window() {
        let mut m = LoudnessMeter::new(48000, 2, 10.0);
        let amp = 10f64.powf(-23.0 / 20.0);
        let mut buf = vec![0f32; 2048];
        for blk in 0..(48000 * 12 / 1024) {
            let on = (blk * 1024 / 48000) % 2 == 0; // one second on, one off
            for (i, f) in buf.chunks_exact_mut(2).enumerate() {
                let n = blk * 1024 + i;
                let s = if on {
                    (amp * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 48000.0).sin()) as f32
                } else {
                    0.0
                };
                f[0] = s;
                f[1] = s;
            }
            m.add_interleaved(&buf);
            if blk * 1024 < 48000 * 9 {
                assert_eq!(m.loudness().long, None);
            }
        }
        // Of each 2 s, 7 blocks of 400 ms are all tone, 6 partly (1/4, 2/4, 3/4 at each
        // edge: all above the relative gate), 7 silent (under the absolute gate): the
        // mean is 10/13 of the tone's energy, -23 - 1.14 = -24.14 LUFS. Ungated, the
        // 10 s would read -26.
        let l = f64::from(m.loudness().long.unwrap());
        assert!((l - -24.14).abs() < 0.2, "{l}");
        let mut s = LoudnessMeter::new(48000, 2, 10.0);
        for _ in 0..600 {
            s.add_interleaved(&[0.0; 2048]);
        }
        assert!(s.loudness().long.unwrap() <= -150.0);
        assert!(s.loudness().short_term.unwrap() <= -150.0);
    }

    /// EBU Tech 3341 tests 3 and 4 (integrated loudness, the gates): 1 kHz stereo sines
    /// in sequence, read by a long window as long as the sequence: -23.0 ± 0.1 LUFS.
    #[test]
    fn tech_3341_gating_sequences_read_minus_23() {
        for seq in [
            &[(-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0)][..],
            &[
                (-72.0, 10.0),
                (-36.0, 10.0),
                (-23.0, 60.0),
                (-36.0, 10.0),
                (-72.0, 10.0),
            ][..],
        ] {
            let total: f64 = seq.iter().map(|s| s.1).sum();
            let mut m = LoudnessMeter::new(48000, 2, total);
            let mut buf = Vec::with_capacity(2048);
            let mut n = 0u64;
            for &(dbfs, secs) in seq {
                let amp = 10f64.powf(dbfs / 20.0);
                for _ in 0..(48000.0 * secs) as u64 {
                    let x = (amp * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 48000.0).sin())
                        as f32;
                    buf.extend([x, x]);
                    n += 1;
                    if buf.len() == 2048 {
                        m.add_interleaved(&buf);
                        buf.clear();
                    }
                }
            }
            m.add_interleaved(&buf);
            let l = f64::from(m.loudness().long.expect("window filled"));
            assert!((l - -23.0).abs() <= 0.1, "{seq:?}: {l}");
        }
    }

    #[test]
    fn odd_input_does_not_break_it() {
        let mut m = LoudnessMeter::new(8000, 3, f64::NAN);
        m.add_interleaved(&[f32::NAN, f32::INFINITY, 1.0, -1.0]);
        m.add_planar(&[]);
        m.add_planar(&[&[0.5; 10], &[0.5; 3]]);
        for _ in 0..100 {
            m.add_interleaved(&[0.1; 999]);
        }
        assert!(m.loudness().short_term.unwrap().is_finite());
        assert_eq!(m.long_window(), 3.0);
        let mut z = LoudnessMeter::new(0, 0, 30.0);
        z.add_interleaved(&[0.5; 100]);
    }
}
