//! Decode: turns elementary packets into small fixed-size summaries, once per frame.
//!
//! Boundaries: decoders and reducers only (and the dB conversion every level uses); no detection, no timing decisions beyond
//! carrying each packet's PTS, no I/O. Used by `pipeline/` on the decode thread, never
//! on a tokio worker.
//!
//! * Video ([`video`]): openh264 → [`Thumb`] (luma histogram, 64×36 luma grid,
//!   16×9 chroma grid, block-edge statistics), or a decode error.
//! * Thumbnails ([`preview`]): on request, each picture also downscaled to at most
//!   320 × 320 colour, encoded as JPEG only when a defect starts.
//! * Audio ([`audio`]): AAC (symphonia), PCM or G.711 → [`AudioLevel`] (RMS and peak
//!   dBFS, RMS per channel, samples at full scale, per codec frame), with the track's
//!   loudness ([`loudness`]: BS.1770 momentary, short-term and gated long-window LUFS).
//!
//! Decoders run on the stream's decode thread (an OS thread, never a tokio worker).
//! Each decoded picture is reduced before the next `decode` call and then dropped.

pub mod audio;
pub mod loudness;
pub mod parse;
pub mod preview;
pub mod video;

/// Width of the downscaled luma grid.
pub const GRID_W: usize = 64;
/// Height of the downscaled luma grid.
pub const GRID_H: usize = 36;
/// Cells in the grid.
pub const GRID_LEN: usize = GRID_W * GRID_H;
/// The absolute luma steps between every pair of neighbouring cells of a grid: each
/// cell with the one to its right, then each with the one below (4 508 pairs).
pub fn neighbour_steps(grid: &[u8; GRID_LEN]) -> impl Iterator<Item = u8> + '_ {
    let across = grid
        .chunks_exact(GRID_W)
        .flat_map(|row| row.windows(2).map(|w| w[0].abs_diff(w[1])));
    let down = grid[..GRID_LEN - GRID_W]
        .iter()
        .zip(&grid[GRID_W..])
        .map(|(a, b)| a.abs_diff(*b));
    across.chain(down)
}

/// Width of the coarse chroma grid (one chroma cell covers 4 × 4 luma cells).
pub const CHROMA_W: usize = 16;
/// Height of the coarse chroma grid.
pub const CHROMA_H: usize = 9;
/// Cells in the chroma grid.
pub const CHROMA_LEN: usize = CHROMA_W * CHROMA_H;
/// The chroma sampling grid is laid out for about this many samples per plane and
/// picture (16 per chroma cell), then every other sampled row is skipped: about 1,200
/// samples per plane (8 per cell) in half the rows, which are what costs (each sampled
/// row is a run of cache lines of a picture just written by the decoder).
const TARGET_CHROMA_SAMPLES: usize = 2_400;
/// About this many pixels are sampled per picture for the histogram and the grid,
/// whatever the resolution: the cost of a summary stays flat while decoding cost grows
/// with the picture (2 px step at 360p, 4 at 720p, 7 at 1080p).
const TARGET_SAMPLES: usize = 40_000;

/// The per-frame summary every video detector works from (about 3.6 KiB, fixed).
#[derive(Clone)]
pub struct Thumb {
    /// Presentation time, 90 kHz, unwrapped.
    pub pts: i64,
    pub width: u16,
    pub height: u16,
    /// Full-range (0–255) luma, from the SPS; otherwise limited range (16–235).
    pub full_range: bool,
    /// Mean luma of the sampled pixels.
    pub luma_mean: f32,
    /// Histogram of sampled luma values.
    pub hist: [u32; 256],
    /// Number of sampled pixels (sum of `hist`).
    pub samples: u32,
    /// Mean luma per grid cell: the picture downscaled to 64×36.
    pub grid: [u8; GRID_LEN],
    /// Mean Cb (U) per chroma cell: the chroma planes downscaled to 16×9, sampled
    /// sparsely (see [`Reducer::reduce_chroma`]). 128 (neutral) when the picture had no
    /// chroma planes (4:0:0) or they were not read.
    pub chroma_u: [u8; CHROMA_LEN],
    /// Mean Cr (V) per chroma cell, as `chroma_u`.
    pub chroma_v: [u8; CHROMA_LEN],
    /// Mean absolute luma step across 8×8 block boundaries (0–255).
    pub edge_boundary: f32,
    /// Block-boundary step divided by the step inside blocks: ~1 for natural or
    /// deblocked pictures, well above 1 for macroblocking.
    pub edge_ratio: f32,
    /// Root mean square luma step between neighbouring pixels inside 8×8 blocks
    /// (0–255; the same samples as `edge_ratio`'s inside step): the picture's
    /// finest detail, what a loss of focus takes away first (`detect::blur`).
    pub detail: f32,
}

impl std::fmt::Debug for Thumb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thumb")
            .field("pts", &self.pts)
            .field("size", &(self.width, self.height))
            .field("luma_mean", &self.luma_mean)
            .field("edge_ratio", &self.edge_ratio)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

impl Default for Thumb {
    fn default() -> Self {
        Thumb {
            pts: 0,
            width: 0,
            height: 0,
            full_range: false,
            luma_mean: 0.0,
            hist: [0; 256],
            samples: 0,
            grid: [0; GRID_LEN],
            chroma_u: [128; CHROMA_LEN],
            chroma_v: [128; CHROMA_LEN],
            edge_boundary: 0.0,
            edge_ratio: 1.0,
            detail: 0.0,
        }
    }
}

impl Thumb {
    /// Share (0–1) of sampled pixels with luma strictly below `threshold`.
    pub fn share_below(&self, threshold: u8) -> f32 {
        if self.samples == 0 {
            return 0.0;
        }
        let below: u32 = self.hist[..usize::from(threshold)].iter().sum();
        below as f32 / self.samples as f32
    }

    /// Against a reference grid: the mean absolute difference normalised to 0–1, and
    /// how many cells differ by more than `cell_step` luma levels.
    pub fn grid_diff(&self, reference: &[u8; GRID_LEN], cell_step: u8) -> (f32, u32) {
        let mut sum: u32 = 0;
        let mut changed: u32 = 0;
        for (&a, &b) in self.grid.iter().zip(reference.iter()) {
            let d = a.abs_diff(b);
            sum += u32::from(d);
            changed += u32::from(d > cell_step);
        }
        (sum as f32 / (GRID_LEN as f32 * 255.0), changed)
    }
}

/// Reduces a luma plane to a [`Thumb`]. Holds per-resolution lookup tables so the hot
/// path does not allocate (they are rebuilt only when the resolution changes).
#[derive(Debug)]
pub struct Reducer {
    dims: (usize, usize),
    /// Sampling step in both directions at this resolution.
    step: usize,
    /// Grid row of every sampled row.
    row_cell: Vec<u16>,
    /// Pixel column where each grid column's samples start (sampled columns only),
    /// plus the end: GRID_W + 1 entries.
    col_start: Vec<usize>,
    /// Sampled pixels per grid cell at this resolution.
    cell_count: Vec<u32>,
    samples: u32,
    sums: Vec<u32>,
    /// Chroma plane size the chroma tables below are for.
    cdims: (usize, usize),
    /// Chroma sampling step along a row (in chroma pixels) at that size; rows are
    /// sampled at twice this step.
    cstep: usize,
    /// Chroma grid row of every sampled chroma row.
    crow_cell: Vec<u8>,
    /// Chroma grid column of every sampled chroma column.
    ccol_cell: Vec<u8>,
    /// Sampled chroma pixels per chroma cell.
    ccount: [u32; CHROMA_LEN],
    usums: [u32; CHROMA_LEN],
    vsums: [u32; CHROMA_LEN],
}

impl Default for Reducer {
    fn default() -> Self {
        Reducer {
            dims: (0, 0),
            step: 0,
            row_cell: Vec::new(),
            col_start: Vec::new(),
            cell_count: Vec::new(),
            samples: 0,
            sums: Vec::new(),
            cdims: (0, 0),
            cstep: 1,
            crow_cell: Vec::new(),
            ccol_cell: Vec::new(),
            ccount: [0; CHROMA_LEN],
            usums: [0; CHROMA_LEN],
            vsums: [0; CHROMA_LEN],
        }
    }
}

impl Reducer {
    /// Summarises one picture. `y` is the luma plane with `stride` bytes per row.
    /// A plane that is smaller than `stride × height` is summarised only as far as it
    /// goes (never read out of bounds).
    pub fn reduce(
        &mut self,
        y: &[u8],
        stride: usize,
        width: usize,
        height: usize,
        out: &mut Thumb,
    ) {
        let height = y
            .len()
            .checked_div(stride)
            .map_or(0, |rows| height.min(rows));
        let width = width.min(stride);
        out.width = width.min(usize::from(u16::MAX)) as u16;
        out.height = height.min(usize::from(u16::MAX)) as u16;
        out.hist = [0; 256];
        out.samples = 0;
        out.grid = [0; GRID_LEN];
        out.chroma_u = [128; CHROMA_LEN];
        out.chroma_v = [128; CHROMA_LEN];
        out.luma_mean = 0.0;
        out.edge_boundary = 0.0;
        out.edge_ratio = 1.0;
        out.detail = 0.0;
        if width == 0 || height == 0 {
            return;
        }
        if self.dims != (width, height) {
            self.rebuild(width, height);
        }
        self.sums.iter_mut().for_each(|s| *s = 0);
        let step = self.step;
        let mut total: u64 = 0;
        for (ri, yy) in (0..height).step_by(step).enumerate() {
            let row = &y[yy * stride..yy * stride + width];
            let base = usize::from(self.row_cell[ri]) * GRID_W;
            // Runs of sampled columns per grid column: one add per cell, not per pixel.
            for c in 0..GRID_W {
                let (x0, x1) = (self.col_start[c], self.col_start[c + 1]);
                let mut cell: u32 = 0;
                for &v in row[x0..x1].iter().step_by(step) {
                    out.hist[usize::from(v)] += 1;
                    cell += u32::from(v);
                }
                self.sums[base + c] += cell;
                total += u64::from(cell);
            }
        }
        out.samples = self.samples;
        out.luma_mean = (total as f64 / f64::from(self.samples.max(1))) as f32;
        for ((g, &s), &c) in out.grid.iter_mut().zip(&self.sums).zip(&self.cell_count) {
            *g = s.checked_div(c).map_or(0, |v| v as u8);
        }
        let e = block_edges(y, stride, width, height);
        out.edge_boundary = e.boundary;
        out.edge_ratio = (e.boundary + 0.5) / (e.inside + 0.5);
        out.detail = e.inside_rms;
    }

    /// Adds the chroma summary (`chroma_u`, `chroma_v`) of the picture just reduced.
    /// `u` and `v` are the 4:2:0 chroma planes (`width` × `height` are the chroma
    /// plane's, i.e. half the luma's, rounded up) with `stride` bytes per row. Sparse:
    /// about half [`TARGET_CHROMA_SAMPLES`] samples per plane, one add each, no float, no
    /// allocation (the tables are rebuilt only when the size changes). Planes shorter
    /// than declared are read only as far as they go; empty ones leave the neutral 128.
    pub fn reduce_chroma(
        &mut self,
        u: &[u8],
        v: &[u8],
        stride: usize,
        width: usize,
        height: usize,
        out: &mut Thumb,
    ) {
        out.chroma_u = [128; CHROMA_LEN];
        out.chroma_v = [128; CHROMA_LEN];
        let rows = u.len().min(v.len()).checked_div(stride).unwrap_or(0);
        let height = height.min(rows);
        let width = width.min(stride);
        if width == 0 || height == 0 {
            return;
        }
        if self.cdims != (width, height) {
            self.rebuild_chroma(width, height);
        }
        self.usums = [0; CHROMA_LEN];
        self.vsums = [0; CHROMA_LEN];
        let step = self.cstep;
        for (ri, yy) in (0..height).step_by(2 * step).enumerate() {
            let base = usize::from(self.crow_cell[ri]) * CHROMA_W;
            let ur = &u[yy * stride..yy * stride + width];
            let vr = &v[yy * stride..yy * stride + width];
            for ((&cu, &cv), &c) in ur
                .iter()
                .step_by(step)
                .zip(vr.iter().step_by(step))
                .zip(&self.ccol_cell)
            {
                let k = base + usize::from(c);
                self.usums[k] += u32::from(cu);
                self.vsums[k] += u32::from(cv);
            }
        }
        for k in 0..CHROMA_LEN {
            if let Some(m) = self.usums[k].checked_div(self.ccount[k]) {
                out.chroma_u[k] = m as u8;
            }
            if let Some(m) = self.vsums[k].checked_div(self.ccount[k]) {
                out.chroma_v[k] = m as u8;
            }
        }
    }

    fn rebuild_chroma(&mut self, width: usize, height: usize) {
        self.cdims = (width, height);
        let ideal = ((width * height) as f64 / TARGET_CHROMA_SAMPLES as f64)
            .sqrt()
            .round() as usize;
        self.cstep = ideal.clamp(1, 64);
        let step = self.cstep;
        self.crow_cell = (0..height)
            .step_by(2 * step)
            .map(|y| (y * CHROMA_H / height) as u8)
            .collect();
        self.ccol_cell = (0..width)
            .step_by(step)
            .map(|x| (x * CHROMA_W / width) as u8)
            .collect();
        self.ccount = [0; CHROMA_LEN];
        for &r in &self.crow_cell {
            for &c in &self.ccol_cell {
                self.ccount[usize::from(r) * CHROMA_W + usize::from(c)] += 1;
            }
        }
    }

    fn rebuild(&mut self, width: usize, height: usize) {
        self.dims = (width, height);
        let ideal = ((width * height) as f64 / TARGET_SAMPLES as f64)
            .sqrt()
            .round() as usize;
        self.step = ideal.clamp(2, 16);
        let step = self.step;
        self.row_cell = (0..height)
            .step_by(step)
            .map(|y| (y * GRID_H / height) as u16)
            .collect();
        // First sampled column (a multiple of `step`) whose cell is c.
        self.col_start = (0..=GRID_W)
            .map(|c| {
                let x = (c * width).div_ceil(GRID_W);
                x.div_ceil(step) * step
            })
            .map(|x| x.min(width))
            .collect();
        self.cell_count = vec![0; GRID_LEN];
        for &r in &self.row_cell {
            for c in 0..GRID_W {
                let (x0, x1) = (self.col_start[c], self.col_start[c + 1]);
                let n = if x1 > x0 { (x1 - x0).div_ceil(step) } else { 0 };
                self.cell_count[usize::from(r) * GRID_W + c] += n as u32;
            }
        }
        self.samples = self.cell_count.iter().sum();
        self.sums = vec![0; GRID_LEN];
    }
}

/// Luma steps at and inside 8-pixel blocks (see [`block_edges`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct BlockEdges {
    /// Mean absolute step across block boundaries.
    boundary: f32,
    /// Mean absolute step in the middle of blocks.
    inside: f32,
    /// Root mean square of the same steps in the middle of blocks.
    inside_rms: f32,
}

/// Mean absolute luma step across 8-pixel block boundaries and in the middle of
/// blocks (vertical and horizontal edges), and the RMS of the latter. Samples one
/// block row / column in `height / 360` (at least every one), so the cost stays flat
/// with resolution.
fn block_edges(y: &[u8], stride: usize, width: usize, height: usize) -> BlockEdges {
    let mut bsum: u64 = 0;
    let mut isum: u64 = 0;
    let mut isq: u64 = 0;
    let mut n: u64 = 0;
    if width < 16 || height < 16 {
        return BlockEdges::default();
    }
    let row_step = 8 * (height / 360).max(1);
    let col_step = 8 * (width / 640).max(1);
    // Vertical edges (steps along x), on rows 3, 3 + row_step, ...
    for yy in (3..height).step_by(row_step) {
        let row = &y[yy * stride..yy * stride + width];
        let mut x = 8;
        while x + 4 < width {
            bsum += u64::from(row[x].abs_diff(row[x - 1]));
            let d = u64::from(row[x + 4].abs_diff(row[x + 3]));
            isum += d;
            isq += d * d;
            n += 1;
            x += 8;
        }
    }
    // Horizontal edges (steps along y), on columns 3, 3 + col_step, ..., at every
    // `row_step`-th block boundary (each one reads four rows: the costly part).
    let mut yy = 8;
    while yy + 4 < height {
        let r0 = &y[(yy - 1) * stride..];
        let r1 = &y[yy * stride..];
        let r3 = &y[(yy + 3) * stride..];
        let r4 = &y[(yy + 4) * stride..];
        for x in (3..width).step_by(col_step) {
            bsum += u64::from(r1[x].abs_diff(r0[x]));
            let d = u64::from(r4[x].abs_diff(r3[x]));
            isum += d;
            isq += d * d;
            n += 1;
        }
        yy += row_step;
    }
    if n == 0 {
        return BlockEdges::default();
    }
    BlockEdges {
        boundary: bsum as f32 / n as f32,
        inside: isum as f32 / n as f32,
        inside_rms: (isq as f64 / n as f64).sqrt() as f32,
    }
}

/// Channels measured one by one in an [`AudioLevel`]: a track with more has its first
/// `MAX_CHANNELS` measured per channel (all of them still count in the overall levels).
pub const MAX_CHANNELS: usize = 8;

/// Default level from which a sample counts as at full scale (|s| ≥ 0.95, −0.45 dBFS):
/// after AAC a clipped waveform no longer sits at ±1.0 but ripples below and above it
/// (a tone clipped 9 dB deep decodes with no sample at 0.98 and a fifth of them above
/// 0.95), while sound mastered to a −1 dBFS ceiling stays under it after decoding
/// (docs/events.md, "clipping").
pub const NEAR_FULL_SCALE: f32 = 0.95;

/// Sound level of one block of samples (one codec frame, ~21 ms at 48 kHz). Fixed size
/// (about 100 bytes), `Copy`: made once per block, never allocated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioLevel {
    /// Presentation time of the block's first sample, 90 kHz, unwrapped.
    pub pts: i64,
    /// Block length, 90 kHz.
    pub duration: i64,
    /// RMS over all channels, dBFS (−200 for digital silence).
    pub rms_dbfs: f32,
    /// Peak absolute sample, dBFS.
    pub peak_dbfs: f32,
    /// Channels measured in `channel_rms_dbfs` (the track's count, at most
    /// [`MAX_CHANNELS`]; 0 for an empty block).
    pub channels: u8,
    /// RMS of each channel, dBFS; entries from `channels` on are −200.
    pub channel_rms_dbfs: [f32; MAX_CHANNELS],
    /// Samples (all channels) with |s| at or above the decoder's full-scale level
    /// ([`NEAR_FULL_SCALE`] unless configured).
    pub near_full_scale: u32,
    /// Samples in the block, all channels (the denominator of `near_full_scale`).
    pub samples: u32,
    /// The loudest momentary loudness (400 ms, LUFS) of the windows that closed in this
    /// block (one every 100 ms; `None`: none closed here, or no loudness meter).
    pub momentary_lufs: Option<f32>,
    /// Short-term loudness (3 s, LUFS) at the end of the block's last closed 100 ms
    /// sub-block (`None` until 3 s were measured).
    pub short_term_lufs: Option<f32>,
    /// Gated loudness of the last `[detect.loudness] long_window` seconds (30), LUFS
    /// (`None` until that long was measured). See [`loudness`].
    pub long_lufs: Option<f32>,
}

impl Default for AudioLevel {
    fn default() -> Self {
        AudioLevel {
            pts: 0,
            duration: 0,
            rms_dbfs: -200.0,
            peak_dbfs: -200.0,
            channels: 0,
            channel_rms_dbfs: [-200.0; MAX_CHANNELS],
            near_full_scale: 0,
            samples: 0,
            momentary_lufs: None,
            short_term_lufs: None,
            long_lufs: None,
        }
    }
}

/// Accumulates, over one block, the sum of squares (overall and per channel), the peak
/// and the samples at full scale, then gives an [`AudioLevel`]. Samples come either one
/// channel at a time ([`LevelMeter::add_channel`], planar decoders) or interleaved
/// ([`LevelMeter::add_interleaved`], which keeps the channel phase across calls). Fixed
/// size; one multiply-add and two compares per sample.
#[derive(Debug, Clone, Copy)]
pub struct LevelMeter {
    sum_sq: f64,
    peak: f32,
    n: u64,
    ch_sum_sq: [f64; MAX_CHANNELS],
    ch_n: [u64; MAX_CHANNELS],
    /// Channels of the track (any count; only the first `MAX_CHANNELS` are kept apart).
    channels: usize,
    /// Channel of the next interleaved sample.
    phase: usize,
    near_full: u64,
    full_scale: f32,
}

impl Default for LevelMeter {
    /// One channel, full scale at [`NEAR_FULL_SCALE`].
    fn default() -> Self {
        LevelMeter::new(1, NEAR_FULL_SCALE)
    }
}

impl LevelMeter {
    /// A meter for `channels` channels (at least 1) counting samples with
    /// |s| ≥ `full_scale` as at full scale.
    pub fn new(channels: usize, full_scale: f32) -> Self {
        LevelMeter {
            sum_sq: 0.0,
            peak: 0.0,
            n: 0,
            ch_sum_sq: [0.0; MAX_CHANNELS],
            ch_n: [0; MAX_CHANNELS],
            channels: channels.max(1),
            phase: 0,
            near_full: 0,
            full_scale,
        }
    }

    /// Adds samples in −1.0..=1.0 of one channel (a plane).
    pub fn add_channel(&mut self, ch: usize, samples: &[f32]) {
        let mut sum = 0f64;
        let mut peak = self.peak;
        let mut near = 0u64;
        for &s in samples {
            let s = if s.is_finite() { s } else { 0.0 };
            let a = s.abs();
            sum += f64::from(s) * f64::from(s);
            peak = peak.max(a);
            near += u64::from(a >= self.full_scale);
        }
        self.sum_sq += sum;
        self.peak = peak;
        self.near_full += near;
        self.n += samples.len() as u64;
        if ch < MAX_CHANNELS {
            self.ch_sum_sq[ch] += sum;
            self.ch_n[ch] += samples.len() as u64;
        }
    }

    /// Adds interleaved samples in −1.0..=1.0 (channel 0, 1, ..., 0, 1, ...),
    /// continuing where the previous call stopped.
    pub fn add_interleaved(&mut self, samples: &[f32]) {
        for &s in samples {
            let s = if s.is_finite() { s } else { 0.0 };
            let a = s.abs();
            let sq = f64::from(s) * f64::from(s);
            self.sum_sq += sq;
            self.peak = self.peak.max(a);
            self.near_full += u64::from(a >= self.full_scale);
            if self.phase < MAX_CHANNELS {
                self.ch_sum_sq[self.phase] += sq;
                self.ch_n[self.phase] += 1;
            }
            self.phase += 1;
            if self.phase >= self.channels {
                self.phase = 0;
            }
        }
        self.n += samples.len() as u64;
    }

    /// Adds samples of a single-channel track (same as channel 0).
    pub fn add(&mut self, samples: &[f32]) {
        self.add_channel(0, samples);
    }

    /// (RMS dBFS, peak dBFS) of what was added.
    pub fn levels(&self) -> (f32, f32) {
        if self.n == 0 {
            return (-200.0, -200.0);
        }
        let rms = (self.sum_sq / self.n as f64).sqrt();
        (to_db(rms) as f32, to_db(f64::from(self.peak)) as f32)
    }

    /// The block's summary, stamped `pts` and `duration` (90 kHz).
    pub fn level(&self, pts: i64, duration: i64) -> AudioLevel {
        let (rms_dbfs, peak_dbfs) = self.levels();
        let mut channel_rms_dbfs = [-200.0f32; MAX_CHANNELS];
        let channels = if self.n == 0 {
            0
        } else {
            self.channels.min(MAX_CHANNELS)
        };
        for (ch, out) in channel_rms_dbfs.iter_mut().enumerate().take(channels) {
            if self.ch_n[ch] > 0 {
                *out = to_db((self.ch_sum_sq[ch] / self.ch_n[ch] as f64).sqrt()) as f32;
            }
        }
        AudioLevel {
            pts,
            duration,
            rms_dbfs,
            peak_dbfs,
            channels: channels as u8,
            channel_rms_dbfs,
            near_full_scale: u32::try_from(self.near_full).unwrap_or(u32::MAX),
            samples: u32::try_from(self.n).unwrap_or(u32::MAX),
            momentary_lufs: None,
            short_term_lufs: None,
            long_lufs: None,
        }
    }
}

/// Converts an amplitude ratio to decibels, with a floor for zero.
pub fn to_db(ratio: f64) -> f64 {
    if ratio <= 1e-10 {
        -200.0
    } else {
        20.0 * ratio.log10()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A thumb made from a synthetic luma function.
    pub(crate) fn thumb_from_fn(
        w: usize,
        h: usize,
        full_range: bool,
        f: impl Fn(usize, usize) -> u8,
    ) -> Thumb {
        let mut plane = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                plane[y * w + x] = f(x, y);
            }
        }
        let mut r = Reducer::default();
        let mut t = Thumb {
            full_range,
            ..Thumb::default()
        };
        r.reduce(&plane, w, w, h, &mut t);
        t
    }

    /// A thumb made from a synthetic colour function `(x, y) -> (Y, U, V)`, with 4:2:0
    /// chroma planes sampled at the even pixels (as a 4:2:0 picture carries it).
    pub(crate) fn thumb_from_yuv(
        w: usize,
        h: usize,
        full_range: bool,
        f: impl Fn(usize, usize) -> (u8, u8, u8),
    ) -> Thumb {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut y = vec![0u8; w * h];
        let mut u = vec![128u8; cw * ch];
        let mut v = vec![128u8; cw * ch];
        for yy in 0..h {
            for xx in 0..w {
                let (py, pu, pv) = f(xx, yy);
                y[yy * w + xx] = py;
                if xx % 2 == 0 && yy % 2 == 0 {
                    u[yy / 2 * cw + xx / 2] = pu;
                    v[yy / 2 * cw + xx / 2] = pv;
                }
            }
        }
        let mut r = Reducer::default();
        let mut t = Thumb {
            full_range,
            ..Thumb::default()
        };
        r.reduce(&y, w, w, h, &mut t);
        r.reduce_chroma(&u, &v, cw, cw, ch, &mut t);
        t
    }

    #[test]
    fn neighbour_steps_are_every_pair_across_then_down() {
        // Columns step by 2 levels, rows by 3: 63 × 36 pairs of 2, then 64 × 35 of 3.
        let mut g = [0u8; GRID_LEN];
        for (i, c) in g.iter_mut().enumerate() {
            *c = ((i % GRID_W) * 2 + (i / GRID_W) * 3) as u8;
        }
        let steps: Vec<u8> = neighbour_steps(&g).collect();
        assert_eq!(steps.len(), 4508);
        let across = (GRID_W - 1) * GRID_H;
        assert!(steps[..across].iter().all(|&d| d == 2));
        assert!(steps[across..].iter().all(|&d| d == 3));
    }

    #[test]
    fn chroma_grid_is_a_coarse_downscale() {
        // Left half blue-ish, right half red-ish; a 720p picture (chroma 640 × 360).
        let t = thumb_from_yuv(1280, 720, false, |x, _| {
            if x < 640 {
                (80, 200, 100)
            } else {
                (80, 90, 220)
            }
        });
        assert_eq!((t.chroma_u[0], t.chroma_v[0]), (200, 100));
        assert_eq!(
            (t.chroma_u[CHROMA_LEN - 1], t.chroma_v[CHROMA_LEN - 1]),
            (90, 220)
        );
        assert_eq!((t.chroma_u[7], t.chroma_u[8]), (200, 90));
        // Short, odd and empty planes: no panic, neutral where nothing was read.
        let mut r = Reducer::default();
        let mut t = Thumb::default();
        for (w, h) in [(1, 1), (7, 3), (17, 17), (961, 541), (0, 5)] {
            let plane = vec![60u8; w * h];
            r.reduce_chroma(&plane, &plane, w, w, h, &mut t);
            r.reduce_chroma(&plane[..plane.len() / 2], &plane, w, w, h, &mut t);
        }
        r.reduce_chroma(&[], &[], 0, 10, 10, &mut t);
        assert!(t.chroma_u.iter().all(|&c| c == 128));
        // A plane too small for some cells leaves those neutral, the others measured.
        r.reduce_chroma(&[60; 4], &[70; 4], 2, 2, 2, &mut t);
        assert!(t.chroma_u.contains(&60) && t.chroma_v.contains(&70));
    }

    #[test]
    fn reduce_flat_plane() {
        let t = thumb_from_fn(1280, 720, false, |_, _| 100);
        // 720p: step 5 (sqrt(921600 / 40000) ≈ 4.8): 256 × 144 samples.
        assert_eq!(t.samples, 256 * 144);
        assert_eq!(t.hist[100], t.samples);
        assert!((t.luma_mean - 100.0).abs() < 1e-3);
        assert!(t.grid.iter().all(|&g| g == 100));
        assert_eq!(t.share_below(100), 0.0);
        assert_eq!(t.share_below(101), 1.0);
        assert!((t.edge_ratio - 1.0).abs() < 1e-6);
    }

    #[test]
    fn grid_is_a_downscale() {
        // Left half 0, right half 200.
        let t = thumb_from_fn(640, 360, false, |x, _| if x < 320 { 0 } else { 200 });
        assert_eq!(t.grid[0], 0);
        assert_eq!(t.grid[GRID_W - 1], 200);
        assert_eq!(t.grid[GRID_LEN - 1], 200);
    }

    #[test]
    fn blockiness_raises_edge_ratio() {
        // Smooth gradient: ratio ~1. Same gradient quantised to flat 8x8 blocks: steps
        // only at block boundaries, ratio far above 1.
        let smooth = thumb_from_fn(640, 360, false, |x, y| ((x + y) / 4) as u8);
        let blocky = thumb_from_fn(640, 360, false, |x, y| {
            (((x / 8) * 8 + (y / 8) * 8) / 4) as u8
        });
        assert!(smooth.edge_ratio < 1.5, "{}", smooth.edge_ratio);
        assert!(blocky.edge_ratio > 3.0, "{}", blocky.edge_ratio);
    }

    #[test]
    fn odd_sizes_and_short_planes_do_not_panic() {
        let mut r = Reducer::default();
        let mut t = Thumb::default();
        for (w, h) in [(1, 1), (7, 3), (17, 17), (1921, 1081), (0, 5)] {
            let plane = vec![50u8; w * h];
            r.reduce(&plane, w, w, h, &mut t);
            // Plane shorter than declared: summarised as far as it goes.
            r.reduce(&plane[..plane.len() / 2], w, w, h, &mut t);
        }
        r.reduce(&[], 0, 10, 10, &mut t);
        assert_eq!(t.samples, 0);
    }

    #[test]
    fn level_meter_dbfs() {
        let mut m = LevelMeter::default();
        let sine: Vec<f32> = (0..48000)
            .map(|i| 0.1 * (i as f32 * 0.0576).sin())
            .collect();
        m.add(&sine);
        let (rms, peak) = m.levels();
        assert!((rms - (-23.01)).abs() < 0.1, "{rms}");
        assert!((peak - (-20.0)).abs() < 0.1, "{peak}");
        assert_eq!(LevelMeter::default().levels().0, -200.0);
    }

    #[test]
    fn level_meter_per_channel_and_full_scale() {
        // Interleaved stereo: left a -20 dBFS square wave, right silent; fed in pieces
        // of odd length, so the channel phase must carry across calls.
        let mut m = LevelMeter::new(2, NEAR_FULL_SCALE);
        let inter: Vec<f32> = (0..2000)
            .map(|i| {
                if i % 2 == 1 {
                    0.0
                } else if i % 4 == 0 {
                    0.1
                } else {
                    -0.1
                }
            })
            .collect();
        for piece in inter.chunks(77) {
            m.add_interleaved(piece);
        }
        let l = m.level(90, 1800);
        assert_eq!(
            (l.pts, l.duration, l.channels, l.samples),
            (90, 1800, 2, 2000)
        );
        assert!((l.channel_rms_dbfs[0] - (-20.0)).abs() < 0.01, "{l:?}");
        assert_eq!(l.channel_rms_dbfs[1], -200.0);
        assert!((l.rms_dbfs - (-23.01)).abs() < 0.01, "{l:?}");
        assert!(l.channel_rms_dbfs[2..].iter().all(|&d| d == -200.0));
        assert_eq!(l.near_full_scale, 0);

        // Planar: samples at and around the full-scale level are counted by magnitude.
        let mut m = LevelMeter::new(2, 0.98);
        m.add_channel(0, &[1.0, -1.0, 0.98, -0.98, 0.979, 0.5, f32::NAN, 2.0]);
        m.add_channel(1, &[0.0; 8]);
        let l = m.level(0, 0);
        assert_eq!((l.near_full_scale, l.samples), (5, 16));
        assert_eq!(l.channel_rms_dbfs[1], -200.0);
        assert!(l.channel_rms_dbfs[0] > -3.0);

        // More channels than are kept apart: the first MAX_CHANNELS are measured, all
        // count in the totals.
        let mut m = LevelMeter::new(10, NEAR_FULL_SCALE);
        let frame: Vec<f32> = (0..10).map(|c| if c == 9 { 1.0 } else { 0.1 }).collect();
        for _ in 0..10 {
            m.add_interleaved(&frame);
        }
        let l = m.level(0, 0);
        assert_eq!(usize::from(l.channels), MAX_CHANNELS);
        assert_eq!((l.near_full_scale, l.samples), (10, 100));
        assert!(l
            .channel_rms_dbfs
            .iter()
            .all(|&d| (d - (-20.0)).abs() < 0.01));

        // Nothing measured: no channels, the floor everywhere.
        assert_eq!(LevelMeter::new(2, 0.98).level(0, 0), AudioLevel::default());
    }
}
