//! Small colour pictures for defect thumbnails.
//!
//! A [`Preview`] is one decoded 4:2:0 picture downscaled to at most
//! [`PREVIEW_MAX_W`] × [`PREVIEW_MAX_H`] (aspect kept), as interleaved full-range
//! YCbCr: exactly what a JPEG encoder takes, so a thumbnail costs no colour conversion.
//! Made from the decoder's own output planes, before the next decode call (no second
//! decode), only for streams that want thumbnails and only for the pictures a
//! thumbnail may show (`pipeline::shots` decides); the JPEG is encoded only when a
//! defect starts.
//!
//! Hand-written: the downscale is a fixed 2 × 2-tap box sample per output pixel (four
//! luma reads, one chroma read each), cheaper than any general resampler and good
//! enough for a 320-px picture of a defect. The JPEG encoding is the `jpeg-encoder`
//! crate (pure Rust, no C library: the static build stays static).
//!
//! Boundaries: pure (bytes in, bytes out); knows nothing of detectors or events.

use crate::error::{Error, Result};

/// Largest preview width (pixels).
pub const PREVIEW_MAX_W: usize = 320;
/// Largest preview height (pixels; portrait pictures are scaled to fit it).
pub const PREVIEW_MAX_H: usize = 320;
/// JPEG quality of thumbnails (0–100).
pub const JPEG_QUALITY: u8 = 75;
/// The most bytes a preview holds (interleaved YCbCr at the largest size).
pub const PREVIEW_MAX_BYTES: usize = PREVIEW_MAX_W * PREVIEW_MAX_H * 3;

/// One decoded picture's planes, as openh264 returns them (4:2:0).
#[derive(Debug, Clone, Copy)]
pub struct Planes<'a> {
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub y_stride: usize,
    pub c_stride: usize,
    pub width: usize,
    pub height: usize,
}

/// A downscaled colour picture (see the module docs). Its buffer is allocated once at
/// [`PREVIEW_MAX_BYTES`] and reused.
#[derive(Clone, Default)]
pub struct Preview {
    width: usize,
    height: usize,
    /// Presentation time of the picture (90 kHz).
    pub pts: i64,
    ycc: Vec<u8>,
    /// Per output column: the two sampled source columns (luma).
    cols: Vec<(u32, u32)>,
    dims: (usize, usize),
}

impl std::fmt::Debug for Preview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preview")
            .field("size", &(self.width, self.height))
            .field("pts", &self.pts)
            .finish_non_exhaustive()
    }
}

/// The preview size for a `width` × `height` picture: aspect kept, within the
/// maximum, never larger than the picture, even (JPEG 4:2:0), at least 2 × 2.
pub fn preview_size(width: usize, height: usize) -> (usize, usize) {
    if width == 0 || height == 0 {
        return (0, 0);
    }
    let even = |v: usize| (v & !1).max(2);
    let mut w = width.min(PREVIEW_MAX_W);
    let mut h = (height * w + width / 2) / width;
    if h > PREVIEW_MAX_H {
        h = PREVIEW_MAX_H.min(height);
        w = (width * h + height / 2) / height;
    }
    (even(w.min(width)), even(h.min(height)))
}

impl Preview {
    /// An empty preview with its buffer allocated.
    pub fn new() -> Self {
        Preview {
            ycc: Vec::with_capacity(PREVIEW_MAX_BYTES),
            ..Preview::default()
        }
    }

    /// Width and height (0 × 0 when empty).
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0
    }

    /// Downscales one picture into this preview. `full_range`: the picture's samples
    /// use 0–255 (otherwise 16–235 / 16–240, expanded here, as JPEG is full range).
    /// Planes shorter than their strides say leave the preview empty (never read out
    /// of bounds).
    pub fn fill(&mut self, p: Planes<'_>, full_range: bool) {
        self.width = 0;
        self.height = 0;
        let (w, h) = preview_size(p.width, p.height);
        let (cw, ch) = (p.width.div_ceil(2), p.height.div_ceil(2));
        let fits = w > 0
            && p.y_stride >= p.width
            && p.c_stride >= cw
            && p.y.len() >= p.y_stride * (p.height - 1) + p.width
            && p.u.len() >= p.c_stride * (ch - 1) + cw
            && p.v.len() >= p.c_stride * (ch - 1) + cw;
        if !fits {
            return;
        }
        if self.dims != (p.width, w) {
            self.dims = (p.width, w);
            self.cols.clear();
            self.cols.extend((0..w).map(|x| taps(x, w, p.width)));
        }
        self.ycc.clear();
        self.ycc.resize(w * h * 3, 0);
        let luma = |v: u32| -> u8 {
            if full_range {
                v as u8
            } else {
                ((v.saturating_sub(16) * 255 + 109) / 219).min(255) as u8
            }
        };
        let chroma = |v: u8| -> u8 {
            if full_range {
                v
            } else {
                (((i32::from(v) - 128) * 255 + 112) / 224 + 128).clamp(0, 255) as u8
            }
        };
        for oy in 0..h {
            let (r0, r1) = taps(oy, h, p.height);
            let row0 = &p.y[r0 as usize * p.y_stride..];
            let row1 = &p.y[r1 as usize * p.y_stride..];
            let cy = ((r0 + r1) / 2) as usize / 2;
            let (urow, vrow) = (&p.u[cy * p.c_stride..], &p.v[cy * p.c_stride..]);
            let out = &mut self.ycc[oy * w * 3..(oy + 1) * w * 3];
            for (px, &(c0, c1)) in out.chunks_exact_mut(3).zip(&self.cols) {
                let (c0, c1) = (c0 as usize, c1 as usize);
                let sum = u32::from(row0[c0])
                    + u32::from(row0[c1])
                    + u32::from(row1[c0])
                    + u32::from(row1[c1]);
                let cx = (c0 + c1) / 4;
                px[0] = luma((sum + 2) / 4);
                px[1] = chroma(urow[cx]);
                px[2] = chroma(vrow[cx]);
            }
        }
        self.width = w;
        self.height = h;
    }

    /// The picture as a baseline JPEG (4:2:0, quality [`JPEG_QUALITY`]).
    pub fn jpeg(&self) -> Result<Vec<u8>> {
        if self.is_empty() {
            return Err(Error::Decoder("thumbnail: no picture".into()));
        }
        let mut out = Vec::with_capacity(16 * 1024);
        let mut enc = jpeg_encoder::Encoder::new(&mut out, JPEG_QUALITY);
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
        // Sizes are at most 320, far below u16::MAX.
        enc.encode(
            &self.ycc,
            self.width as u16,
            self.height as u16,
            jpeg_encoder::ColorType::Ycbcr,
        )
        .map_err(|e| Error::Decoder(format!("thumbnail: JPEG encoding failed: {e}")))?;
        Ok(out)
    }
}

/// The two source positions sampled for output position `o` of `n` over `len`
/// source pixels: a quarter and three quarters into its box.
fn taps(o: usize, n: usize, len: usize) -> (u32, u32) {
    let a = o * len / n;
    let b = ((o + 1) * len / n).max(a + 1);
    let span = b - a;
    let t0 = a + span / 4;
    let t1 = (a + (3 * span) / 4).min(len - 1);
    (t0 as u32, t1.max(t0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(
        w: usize,
        h: usize,
        y: impl Fn(usize, usize) -> u8,
        uv: (u8, u8),
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut yp = vec![0u8; w * h];
        for r in 0..h {
            for c in 0..w {
                yp[r * w + c] = y(c, r);
            }
        }
        let cs = w.div_ceil(2) * h.div_ceil(2);
        (yp, vec![uv.0; cs], vec![uv.1; cs])
    }

    fn planes<'a>(w: usize, h: usize, p: &'a (Vec<u8>, Vec<u8>, Vec<u8>)) -> Planes<'a> {
        Planes {
            y: &p.0,
            u: &p.1,
            v: &p.2,
            y_stride: w,
            c_stride: w.div_ceil(2),
            width: w,
            height: h,
        }
    }

    #[test]
    fn sizes_keep_the_aspect_within_320() {
        assert_eq!(preview_size(1920, 1080), (320, 180));
        assert_eq!(preview_size(1280, 720), (320, 180));
        assert_eq!(preview_size(640, 480), (320, 240));
        assert_eq!(preview_size(720, 576), (320, 256));
        // Portrait: fit the height.
        assert_eq!(preview_size(1080, 1920), (180, 320));
        // Smaller than the maximum: not enlarged.
        assert_eq!(preview_size(176, 144), (176, 144));
        assert_eq!(preview_size(3, 1), (2, 2));
        assert_eq!(preview_size(0, 10), (0, 0));
    }

    #[test]
    fn a_limited_range_picture_becomes_full_range_ycbcr() {
        // Left half black (16), right half white (235), neutral chroma.
        let p = picture(640, 360, |x, _| if x < 320 { 16 } else { 235 }, (128, 128));
        let mut pv = Preview::new();
        pv.fill(planes(640, 360, &p), false);
        assert_eq!(pv.size(), (320, 180));
        let px = |pv: &Preview, x: usize, y: usize| {
            pv.ycc[(y * 320 + x) * 3..(y * 320 + x) * 3 + 3].to_vec()
        };
        assert_eq!(px(&pv, 10, 90), [0, 128, 128]);
        assert_eq!(px(&pv, 300, 90), [255, 128, 128]);
        // Full range stays as it is.
        pv.fill(planes(640, 360, &p), true);
        assert_eq!(px(&pv, 10, 90), [16, 128, 128]);
    }

    #[test]
    fn the_jpeg_decodes_to_the_same_picture() {
        // A red-ish gradient: luma across, chroma constant.
        let p = picture(1280, 720, |x, _| (16 + x * 219 / 1279) as u8, (90, 240));
        let mut pv = Preview::new();
        pv.fill(planes(1280, 720, &p), false);
        let jpeg = pv.jpeg().unwrap();
        assert!(jpeg.len() < 32 * 1024, "{} bytes", jpeg.len());
        let mut d = jpeg_decoder::Decoder::new(&jpeg[..]);
        let rgb = d.decode().unwrap();
        let info = d.info().unwrap();
        assert_eq!((info.width, info.height), (320, 180));
        // Left edge dark, right edge bright, red above blue everywhere (Cr 240).
        let at = |x: usize, y: usize| &rgb[(y * 320 + x) * 3..(y * 320 + x) * 3 + 3];
        let (l, r) = (at(4, 90), at(315, 90));
        let lum = |p: &[u8]| u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2]);
        assert!(lum(l) + 200 < lum(r), "{l:?} {r:?}");
        assert!(r[0] > r[2] + 60, "{r:?}");
    }

    #[test]
    fn short_planes_leave_it_empty_and_never_panic() {
        let p = picture(64, 64, |_, _| 100, (128, 128));
        let mut pv = Preview::new();
        for (w, h) in [(64, 64), (1, 1), (3, 5), (63, 63)] {
            pv.fill(planes(w, h, &p), false);
            assert!(!pv.is_empty(), "{w}x{h}");
        }
        let short = (p.0[..100].to_vec(), p.1.clone(), p.2.clone());
        pv.fill(planes(64, 64, &short), false);
        assert!(pv.is_empty());
        assert!(pv.jpeg().is_err());
        let mut bad = planes(64, 64, &p);
        bad.y_stride = 10;
        pv.fill(bad, false);
        assert!(pv.is_empty());
    }
}
