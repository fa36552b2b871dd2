//! H.264 decoder (openh264 + SPS inspection + frame reducer) under arbitrary bytes.
//!
//! Input: an Annex B byte stream (a raw .h264 file is a valid input). It is cut into
//! access units before every access unit delimiter (00 00 01 09), or used whole when it
//! has none. Access unit i gets PTS i*3600; the first is fed with key=true, later ones
//! with key = "contains an IDR slice", as the TS demuxer marks them. Then the decoder
//! is flushed. max_pixels is 1280*720, so an SPS announcing more is refused before
//! openh264 allocates for it.
//!
//! Invariants: no panic and no memory error (ASan) anywhere, openh264's C++ included as
//! far as the Rust side can observe; every Frame's Thumb is self-consistent (samples =
//! sum of the histogram, 0 <= luma_mean <= 255, finite edge statistics, non-zero size);
//! every Error carries a non-zero state; a Refused size is above max_pixels, or 0 x 0
//! (an SPS that does not parse) in an access unit that carries an SPS; a format
//! refusal (interlaced, bit depth, chroma format) comes from an access unit that
//! carries an SPS; the decoder's counters match the outputs seen. Every picture's
//! planes (the decoder runs with previews on, as the pipeline does for thumbnails) are
//! read whole: downscaled into a preview no larger than the picture, within 320 × 320,
//! and JPEG-encoded for every eighth picture, so ASan sees every byte of the `unsafe`
//! plane slices and the JPEG path runs on whatever picture sizes openh264 produces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vqprobe::codec::h264::has_idr as h264_has_idr;
use vqprobe::decode::preview::{Preview, PREVIEW_MAX_H, PREVIEW_MAX_W};
use vqprobe::decode::video::{RefuseReason, VideoDecoder, VideoOut};

const MAX_PIXELS: u64 = 1280 * 720;

/// Splits before each `00 00 01 09` (AUD), keeping a preceding zero byte of a 4-byte
/// start code with the unit it starts.
fn access_units(data: &[u8]) -> Vec<&[u8]> {
    let mut cuts = vec![0];
    let mut i = 1;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 && data[i + 3] & 0x1F == 9 {
            let at = if data[i - 1] == 0 { i - 1 } else { i };
            if at > *cuts.last().unwrap() {
                cuts.push(at);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    cuts.push(data.len());
    cuts.windows(2)
        .map(|w| &data[w[0]..w[1]])
        .filter(|au| !au.is_empty())
        .collect()
}

/// Whether an access unit holds an SPS NAL unit (type 7) after a 3-byte start code.
fn has_sps(au: &[u8]) -> bool {
    au.windows(4)
        .any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && w[3] & 0x1F == 7)
}

#[derive(Default)]
struct Seen {
    frames: u64,
    errors: u64,
    preview: Preview,
}

fn check(o: VideoOut<'_>, seen: &mut Seen, au_has_sps: bool) {
    match o {
        VideoOut::Frame(t, planes) => {
            seen.frames += 1;
            let p = planes.expect("previews are on: every picture comes with its planes");
            assert_eq!((p.width, p.height), (t.width as usize, t.height as usize));
            seen.preview.fill(p, seen.frames % 2 == 0);
            let (w, h) = seen.preview.size();
            assert!(
                w > 0 && w <= PREVIEW_MAX_W.min(t.width as usize).max(2),
                "{w}x{h} of {t:?}"
            );
            assert!(
                h > 0 && h <= PREVIEW_MAX_H.min(t.height as usize).max(2),
                "{w}x{h} of {t:?}"
            );
            if seen.frames % 8 == 1 {
                let jpeg = seen.preview.jpeg().expect("a filled preview encodes");
                assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
            }
            assert!(t.width > 0 && t.height > 0, "{t:?}");
            let sum: u64 = t.hist.iter().map(|&c| u64::from(c)).sum();
            assert_eq!(sum, u64::from(t.samples), "{t:?}");
            assert!(t.samples > 0, "{t:?}");
            assert!((0.0..=255.0).contains(&t.luma_mean), "{t:?}");
            assert!(
                t.edge_boundary.is_finite() && t.edge_boundary >= 0.0,
                "{t:?}"
            );
            assert!(t.edge_ratio.is_finite() && t.edge_ratio > 0.0, "{t:?}");
        }
        VideoOut::Error { state, .. } => {
            seen.errors += 1;
            assert_ne!(state, 0);
        }
        VideoOut::Refused(r) => {
            // Too large; or (0 x 0) an SPS that does not parse, or one in a format
            // openh264 cannot decode, either of which only an access unit carrying an
            // SPS can announce.
            let ok = match r.reason {
                RefuseReason::AboveMaxResolution => {
                    u64::from(r.width) * u64::from(r.height) > MAX_PIXELS
                }
                RefuseReason::UnparseableSps => (r.width, r.height) == (0, 0) && au_has_sps,
                _ => au_has_sps,
            };
            assert!(ok, "{r:?} (access unit has an SPS: {au_has_sps})");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut dec = VideoDecoder::new(MAX_PIXELS)
        .expect("openh264 init")
        .with_previews();
    let mut seen = Seen::default();
    let aus = access_units(data);
    for (i, au) in aus.iter().enumerate() {
        let key = i == 0 || h264_has_idr(au);
        let sps = has_sps(au);
        dec.decode(i as i64 * 3600, key, au, &mut |o| check(o, &mut seen, sps));
    }
    dec.flush(&mut |o| check(o, &mut seen, false));
    assert_eq!(dec.stats.packets, aus.len() as u64);
    assert_eq!(dec.stats.frames, seen.frames);
    assert_eq!(dec.stats.errors, seen.errors);
});
