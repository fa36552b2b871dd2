//! Detection-core performance benchmark: writes the "Detection core" section of
//! `docs/PERFORMANCE.md`.
//!
//! Run with `cargo bench --bench pipeline` (the bench profile has the edge `dist`
//! profile's code generation: fat LTO, one codegen unit). `VQPROBE_BENCH_SECS` shortens the clips (default 20).
//!
//! For a 720p25 and a 1080p25 clip (libx264 High, `-bf 3`, testsrc2 + AAC sine, MPEG-TS,
//! made once with ffmpeg under `<target dir>/bench-media/`):
//!
//! * in process, three times: read the file in 188 KiB chunks, demux with
//!   [`TsDemuxer`], run [`Analyzer`] over every message, `finish`; report medians of
//!   decode fps (frames / time inside openh264), whole-pipeline fps (frames / wall) and
//!   the reducer + detector cost as a share of decode time;
//! * allocation calls per frame after a warm-up of 100 frames, counted by the counting
//!   global allocator below: (a) the whole loop including demux, (b) only
//!   `Analyzer::handle` of video packets. openh264 allocates with C++ `new`/`malloc`,
//!   which the Rust global allocator never sees;
//! * the release binary `vqprobe check CLIP --format json --decode-level full` (and
//!   `auto`, the default level) and ffmpeg (with
//!   blackdetect/freezedetect/silencedetect, and decode only), each three times under
//!   `/usr/bin/time -v`: wall, user CPU, peak RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

#[path = "common/doc.rs"]
mod doc;

use vqprobe::config::DetectConfig;
use vqprobe::defect::EndReason;
use vqprobe::event::Event;
use vqprobe::ingest::ts::{DemuxOutput, TsDemuxer, TsLimits};
use vqprobe::ingest::{IngestMsg, Track};
use vqprobe::pipeline::{Analyzer, AnalyzerStats};

// ---------------------------------------------------------------------------
// Counting allocator

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);

/// `System`, counting `alloc`/`alloc_zeroed` and `realloc` calls.
struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCS.fetch_add(1, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocation calls so far: (alloc + alloc_zeroed, realloc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Allocs {
    alloc: u64,
    realloc: u64,
}

impl Allocs {
    fn now() -> Self {
        Allocs {
            alloc: ALLOCS.load(Relaxed),
            realloc: REALLOCS.load(Relaxed),
        }
    }

    fn since(self, before: Allocs) -> Allocs {
        Allocs {
            alloc: self.alloc - before.alloc,
            realloc: self.realloc - before.realloc,
        }
    }

    fn add(&mut self, d: Allocs) {
        self.alloc += d.alloc;
        self.realloc += d.realloc;
    }

    fn total(self) -> u64 {
        self.alloc + self.realloc
    }
}

// ---------------------------------------------------------------------------
// Clips

/// Read size, as in `src/ingest/file.rs`.
const CHUNK: usize = 188 * 1024;
/// Frames decoded before allocation counting starts (capped at a quarter of the clip).
const WARMUP_FRAMES: u64 = 100;
const FPS: u32 = 25;
const RUNS: usize = 3;
const RSS_TARGET_MIB: f64 = 40.0;
const SHARE_TARGET: f64 = 0.03;

struct Clip {
    label: &'static str,
    width: u32,
    height: u32,
}

const CLIPS: [Clip; 2] = [
    Clip {
        label: "720p25",
        width: 1280,
        height: 720,
    },
    Clip {
        label: "1080p25",
        width: 1920,
        height: 1080,
    },
];

/// The ffmpeg arguments that make a clip (after `-y`), output path last.
fn encode_args(clip: &Clip, secs: f64) -> Vec<String> {
    [
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={}x{}:rate={FPS}", clip.width, clip.height),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=1000:sample_rate=48000",
        "-t",
        &format!("{secs}"),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-profile:v",
        "high",
        "-preset",
        "medium",
        "-bf",
        "3",
        "-g",
        "50",
        "-pix_fmt",
        "yuv420p",
        "-threads",
        "2",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ac",
        "2",
        "-f",
        "mpegts",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Makes the clip unless it is already there.
fn ensure_clip(dir: &Path, clip: &Clip, secs: f64) -> PathBuf {
    let path = dir.join(format!("testsrc2_{}_{}s_bf3.ts", clip.label, secs));
    if path.exists() {
        eprintln!("reusing {}", path.display());
        return path;
    }
    eprintln!("making {} ...", path.display());
    let tmp = path.with_extension("ts.part");
    let status = Command::new("ffmpeg")
        .arg("-y")
        .args(encode_args(clip, secs))
        .arg(&tmp)
        .status()
        .expect("ffmpeg must be installed to make the benchmark clips");
    assert!(status.success(), "ffmpeg failed to make {}", path.display());
    std::fs::rename(&tmp, &path).expect("rename clip");
    path
}

// ---------------------------------------------------------------------------
// In-process measurement

/// One in-process run over a clip.
struct InProcess {
    wall_s: f64,
    stats: AnalyzerStats,
    /// Frames in the allocation window (from warm-up to the end of input).
    window_frames: u64,
    /// (a) everything in the loop: reads, demux, every `handle`.
    loop_allocs: Allocs,
    /// Part of (a) inside `TsDemuxer::push`/`finish`.
    demux_allocs: Allocs,
    /// (b) `Analyzer::handle` for video packets only.
    video_handle_allocs: Allocs,
    /// Part of (b) for key-frame packets (SPS parsing happens there).
    key_handle_allocs: Allocs,
    /// Key-frame packets in the window.
    window_keys: u64,
    /// `Analyzer::handle` for audio packets (and program messages).
    other_handle_allocs: Allocs,
}

/// `extras`: thumbnails and a report's series on (as `check --thumbs --report`), to
/// measure what they add; off, as the agent runs without them.
fn run_in_process(path: &Path, warmup: u64, extras: bool) -> InProcess {
    let t0 = Instant::now();
    let mut file = File::open(path).expect("open clip");
    // As `vqprobe check` does: packet buffers circulate between demuxer and analyzer.
    let pool = vqprobe::ingest::pool::BufPool::new(72, TsLimits::default().max_video_pes);
    let mut demux = TsDemuxer::new(TsLimits::default()).with_pool(pool.clone());
    // The detection core: every picture decoded (the decode levels are measured by the
    // `check --decode-level auto` row and by benches/agent.rs).
    let mut cfg = DetectConfig::default();
    cfg.decode.level = vqprobe::config::LevelChoice::Full;
    cfg.thumbnails = extras;
    cfg.series = extras;
    let mut analyzer = Analyzer::new("bench", "clip", cfg).expect("valid config");
    analyzer.set_pool(pool);
    let mut buf = vec![0u8; CHUNK];
    let mut outs: Vec<DemuxOutput> = Vec::with_capacity(64);
    let mut sink = |_ev: Event| {};
    // (allocation counters, frames) when the window opened.
    let mut window: Option<(Allocs, u64)> = None;
    let mut demux_allocs = Allocs::default();
    let mut video_handle_allocs = Allocs::default();
    let mut key_handle_allocs = Allocs::default();
    let mut window_keys = 0;
    let mut other_handle_allocs = Allocs::default();
    let open = |window: &mut Option<(Allocs, u64)>, analyzer: &Analyzer| {
        if window.is_none() {
            let frames = analyzer.stats().video.frames;
            if frames >= warmup {
                *window = Some((Allocs::now(), frames));
            }
        }
        window.is_some()
    };
    loop {
        let n = file.read(&mut buf).expect("read clip");
        let counting = open(&mut window, &analyzer);
        let a0 = Allocs::now();
        if n == 0 {
            demux.finish(&mut |o| outs.push(o));
        } else {
            demux.push(&buf[..n], &mut |o| outs.push(o));
        }
        if counting {
            demux_allocs.add(Allocs::now().since(a0));
        }
        for o in outs.drain(..) {
            let (msg, video, key) = match o {
                DemuxOutput::Program(p) => (IngestMsg::Program(p), false, false),
                DemuxOutput::Packet(p) => {
                    let video = p.track == Track::Video;
                    let key = video && p.key;
                    (IngestMsg::Packet(p), video, key)
                }
            };
            let counting = open(&mut window, &analyzer);
            let a0 = Allocs::now();
            analyzer.handle(msg, &mut sink);
            if counting {
                let d = Allocs::now().since(a0);
                if video {
                    video_handle_allocs.add(d);
                    if key {
                        key_handle_allocs.add(d);
                        window_keys += 1;
                    }
                } else {
                    other_handle_allocs.add(d);
                }
            }
        }
        if n == 0 {
            break;
        }
    }
    let end = Allocs::now();
    let frames_at_end = analyzer.stats().video.frames;
    analyzer.finish(EndReason::EndOfInput, &mut sink);
    let wall_s = t0.elapsed().as_secs_f64();
    let (loop_allocs, window_frames) = match window {
        Some((a, f)) => (end.since(a), frames_at_end - f),
        None => (Allocs::default(), 0),
    };
    InProcess {
        wall_s,
        stats: analyzer.stats(),
        window_frames,
        loop_allocs,
        demux_allocs,
        video_handle_allocs,
        key_handle_allocs,
        window_keys,
        other_handle_allocs,
    }
}

// ---------------------------------------------------------------------------
// External processes

/// One external command run.
#[derive(Debug, Clone, Default)]
struct Ext {
    wall_s: f64,
    user_s: Option<f64>,
    sys_s: Option<f64>,
    rss_kib: Option<u64>,
    stdout_lines: usize,
}

/// Runs `prog args` (under `/usr/bin/time -v` when available); panics when it fails.
fn run_ext(prog: &Path, args: &[&str], time_v: bool, scratch: &Path) -> Ext {
    let report = scratch.join("time-v.txt");
    let _ = std::fs::remove_file(&report);
    let mut cmd = if time_v {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-v").arg("-o").arg(&report).arg(prog);
        c
    } else {
        Command::new(prog)
    };
    cmd.args(args).stdin(Stdio::null());
    let t0 = Instant::now();
    let out = cmd.output().expect("spawn");
    let wall_s = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{} {:?} failed ({}): {}",
        prog.display(),
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ext = Ext {
        wall_s,
        stdout_lines: out
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        ..Ext::default()
    };
    if let Ok(text) = std::fs::read_to_string(&report) {
        for line in text.lines() {
            let line = line.trim();
            let value = || line.rsplit(": ").next().unwrap_or("").trim();
            if line.starts_with("User time (seconds):") {
                ext.user_s = value().parse().ok();
            } else if line.starts_with("System time (seconds):") {
                ext.sys_s = value().parse().ok();
            } else if line.starts_with("Maximum resident set size (kbytes):") {
                ext.rss_kib = value().parse().ok();
            }
        }
    }
    ext
}

/// Per-field medians of several runs.
fn median_ext(runs: &[Ext]) -> Ext {
    Ext {
        wall_s: median(runs.iter().map(|r| r.wall_s)),
        user_s: opt_median(runs.iter().map(|r| r.user_s)),
        sys_s: opt_median(runs.iter().map(|r| r.sys_s)),
        rss_kib: opt_median(runs.iter().map(|r| r.rss_kib.map(|k| k as f64))).map(|k| k as u64),
        stdout_lines: runs.first().map_or(0, |r| r.stdout_lines),
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn opt_median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = values.collect();
    v.filter(|v| !v.is_empty()).map(|v| median(v.into_iter()))
}

// ---------------------------------------------------------------------------
// Machine facts

fn cmd_line(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog).args(args).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_string())
}

struct Machine {
    date: String,
    nproc: String,
    cpu: String,
    os: String,
    load: String,
    /// Load averages when the measurements ended.
    load_end: String,
    rustc: String,
    ffmpeg: String,
    nasm: String,
    commit: String,
}

/// Whether the openh264-sys2 build linked nasm objects: looks in the newest build-script
/// output directory next to this bench binary (`<target>/release/build/`).
fn nasm_used(profile_dir: &Path) -> String {
    let version = cmd_line("nasm", &["-v"]).unwrap_or_else(|| "nasm not found".into());
    let Ok(entries) = std::fs::read_dir(profile_dir.join("build")) else {
        return format!("unknown (no build directory); {version}");
    };
    let newest = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("openh264-sys2-")
        })
        .filter(|e| e.path().join("out").is_dir())
        .max_by_key(|e| {
            std::fs::metadata(e.path().join("output"))
                .and_then(|m| m.modified())
                .ok()
        });
    let Some(dir) = newest else {
        return format!("unknown (no openh264-sys2 build output found); {version}");
    };
    let output = std::fs::read_to_string(dir.path().join("output")).unwrap_or_default();
    if output.contains("not using any assembly") || output.contains("NASM compilation disabled") {
        return format!("no: the openh264-sys2 build script reports no assembly ({version})");
    }
    // nasm_rs names objects after the .asm file; cc prefixes C++ objects with a hash.
    let asm_objects = ["mc_luma.o", "deblock.o", "intra_pred.o", "dct.o", "cpuid.o"];
    let found = asm_objects
        .iter()
        .filter(|o| dir.path().join("out").join(o).exists())
        .count();
    if found == asm_objects.len() {
        format!("yes: openh264-sys2 linked nasm objects (mc_luma.o, deblock.o, ...); {version}")
    } else {
        format!("no: nasm objects missing from the openh264-sys2 build ({found}/5); {version}")
    }
}

/// Whether `src/`, `Cargo.lock` or `Cargo.toml` differ from HEAD, ignoring the
/// `[[bench]]` stanza of this benchmark.
fn tree_is_dirty(manifest: &str) -> bool {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(manifest)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let code = git(&["status", "--porcelain", "--", "src", "Cargo.lock"]);
    let toml = git(&["diff", "-U0", "HEAD", "--", "Cargo.toml"]);
    let stanza = ["[[bench]]", "name = \"pipeline\"", "harness = false", ""];
    !code.trim().is_empty()
        || toml
            .lines()
            .filter(|l| !l.starts_with("+++") && !l.starts_with("---"))
            .filter_map(|l| l.strip_prefix('+').or_else(|| l.strip_prefix('-')))
            .any(|l| !stanza.contains(&l.trim()))
}

/// The 1, 5 and 15-minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn machine(profile_dir: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".into(), |s| s.trim().to_string());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|s| s.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let load = loadavg();
    let manifest = env!("CARGO_MANIFEST_DIR");
    let commit = cmd_line("git", &["-C", manifest, "rev-parse", "--short=12", "HEAD"])
        .unwrap_or_else(|| "unknown".into());
    let dirty = tree_is_dirty(manifest);
    Machine {
        date: cmd_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown".into()),
        nproc: cmd_line("nproc", &[]).unwrap_or_else(|| "unknown".into()),
        cpu,
        os,
        load,
        load_end: String::new(),
        rustc: cmd_line(
            &std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()),
            &["--version"],
        )
        .unwrap_or_else(|| "unknown".into()),
        ffmpeg: cmd_line("ffmpeg", &["-hide_banner", "-version"])
            .unwrap_or_else(|| "unknown".into()),
        nasm: nasm_used(profile_dir),
        commit: if dirty {
            format!("{commit} + uncommitted changes in src/, Cargo.lock or Cargo.toml")
        } else {
            commit
        },
    }
}

// ---------------------------------------------------------------------------
// Per-clip results

struct ClipResult {
    label: &'static str,
    width: u32,
    height: u32,
    secs: f64,
    size_bytes: u64,
    frames: u64,
    audio_frames: u64,
    events: u64,
    warmup: u64,
    decode_fps: f64,
    pipeline_fps: f64,
    /// (reduce + detect) / decode, and the two parts.
    share: f64,
    reduce_share: f64,
    detect_share: f64,
    /// Share of the in-process wall time spent inside openh264.
    decode_of_wall: f64,
    first: InProcess,
    check: Ext,
    /// `check --decode-level auto`.
    check_auto: Ext,
    ff_detect: Ext,
    ff_decode: Ext,
    /// In-process wall (medians) without and with thumbnails + series, the detector
    /// share with them (preview and JPEG time included) and that time alone.
    wall_off: f64,
    wall_on: f64,
    share_on: f64,
    thumbs_ms: f64,
}

fn measure(
    clip: &Clip,
    path: &Path,
    secs: f64,
    bin: &Path,
    time_v: bool,
    scratch: &Path,
) -> ClipResult {
    let expected = (secs * f64::from(FPS)).round() as u64;
    let warmup = WARMUP_FRAMES.min(expected / 4);
    let p = path.to_str().expect("utf-8 path");
    let check_args = ["check", p, "--format", "json", "--decode-level", "full"];
    let auto_args = ["check", p, "--format", "json", "--decode-level", "auto"];
    let ff_detect_args = [
        "-hide_banner",
        "-nostats",
        "-threads",
        "1",
        "-i",
        p,
        "-vf",
        "blackdetect,freezedetect",
        "-af",
        "silencedetect",
        "-f",
        "null",
        "-",
    ];
    let ff_decode_args = [
        "-hide_banner",
        "-nostats",
        "-threads",
        "1",
        "-i",
        p,
        "-f",
        "null",
        "-",
    ];
    let ffmpeg = Path::new("ffmpeg");
    let mut runs = Vec::new();
    let (mut checks, mut ff_detects, mut ff_decodes) = (Vec::new(), Vec::new(), Vec::new());
    let mut autos = Vec::new();
    let mut extras: Vec<InProcess> = Vec::new();
    // Rounds interleave the four measurements, so a busy spell on the shared machine
    // slows all of them rather than one.
    for i in 0..RUNS {
        let r = run_in_process(path, warmup, false);
        let x = run_in_process(path, warmup, true);
        eprintln!(
            "  {} round {}: with thumbnails + series: wall {:.3} s, reduce {:.1} ms, detect {:.1} ms, preview/JPEG {:.1} ms",
            clip.label,
            i + 1,
            x.wall_s,
            x.stats.reduce_ns as f64 / 1e6,
            x.stats.detect_ns as f64 / 1e6,
            x.stats.thumbs.map_or(0, |t| t.encode_ns) as f64 / 1e6
        );
        extras.push(x);
        let s = &r.stats;
        eprintln!(
            "  {} round {}: in-process {} frames, wall {:.3} s, decode {:.3} s, reduce {:.1} ms, detect {:.1} ms, allocs (a) {}+{} (b) {}+{} over {} frames",
            clip.label,
            i + 1,
            s.video.frames,
            r.wall_s,
            s.decode_ns as f64 / 1e9,
            s.reduce_ns as f64 / 1e6,
            s.detect_ns as f64 / 1e6,
            r.loop_allocs.alloc,
            r.loop_allocs.realloc,
            r.video_handle_allocs.alloc,
            r.video_handle_allocs.realloc,
            r.window_frames
        );
        runs.push(r);
        for (what, prog, args, out) in [
            ("vqprobe check", bin, &check_args[..], &mut checks),
            ("vqprobe check auto", bin, &auto_args[..], &mut autos),
            (
                "ffmpeg detect",
                ffmpeg,
                &ff_detect_args[..],
                &mut ff_detects,
            ),
            (
                "ffmpeg decode-only",
                ffmpeg,
                &ff_decode_args[..],
                &mut ff_decodes,
            ),
        ] {
            let e = run_ext(prog, args, time_v, scratch);
            eprintln!(
                "  {} round {}: {what}: wall {:.3} s, user {:?} s, sys {:?} s, max RSS {:?} KiB",
                clip.label,
                i + 1,
                e.wall_s,
                e.user_s,
                e.sys_s,
                e.rss_kib
            );
            out.push(e);
        }
    }
    let frames = runs[0].stats.video.frames;
    let decode_fps = median(
        runs.iter()
            .map(|r| r.stats.video.frames as f64 / (r.stats.decode_ns as f64 / 1e9)),
    );
    let pipeline_fps = median(runs.iter().map(|r| r.stats.video.frames as f64 / r.wall_s));
    let ratio = |f: fn(&AnalyzerStats) -> u64| {
        median(
            runs.iter()
                .map(|r| f(&r.stats) as f64 / r.stats.decode_ns as f64),
        )
    };
    let share = ratio(|s| s.reduce_ns + s.detect_ns);
    let reduce_share = ratio(|s| s.reduce_ns);
    let detect_share = ratio(|s| s.detect_ns);
    let decode_of_wall = median(
        runs.iter()
            .map(|r| r.stats.decode_ns as f64 / 1e9 / r.wall_s),
    );
    let check = median_ext(&checks);
    let check_auto = median_ext(&autos);
    let ff_detect = median_ext(&ff_detects);
    let ff_decode = median_ext(&ff_decodes);
    let wall_off = median(runs.iter().map(|r| r.wall_s));
    let wall_on = median(extras.iter().map(|r| r.wall_s));
    let share_on = median(extras.iter().map(|r| {
        let s = &r.stats;
        let thumbs = s.thumbs.map_or(0, |t| t.encode_ns);
        (s.reduce_ns + s.detect_ns + thumbs) as f64 / s.decode_ns as f64
    }));
    let thumbs_ms = median(
        extras
            .iter()
            .map(|r| r.stats.thumbs.map_or(0, |t| t.encode_ns) as f64 / 1e6),
    );
    let first = runs.swap_remove(0);
    ClipResult {
        wall_off,
        wall_on,
        share_on,
        thumbs_ms,
        label: clip.label,
        width: clip.width,
        height: clip.height,
        secs,
        size_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        frames,
        audio_frames: first.stats.audio.frames,
        events: first.stats.events,
        warmup,
        decode_fps,
        pipeline_fps,
        share,
        reduce_share,
        detect_share,
        decode_of_wall,
        first,
        check,
        check_auto,
        ff_detect,
        ff_decode,
    }
}

// ---------------------------------------------------------------------------
// Report

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn secs_opt(s: Option<f64>) -> String {
    s.map_or_else(|| "n/a".into(), |s| format!("{s:.2} s"))
}

fn per_frame(a: Allocs, frames: u64) -> String {
    if frames == 0 {
        return "n/a".into();
    }
    format!(
        "{:.2} ({} alloc + {} realloc over {} frames)",
        a.total() as f64 / frames as f64,
        a.alloc,
        a.realloc,
        frames
    )
}

fn fps_of(frames: u64, e: &Ext) -> String {
    format!("{:.0} fps", frames as f64 / e.wall_s)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

fn clip_table(r: &ClipResult) -> String {
    let mut s = String::new();
    let a = &r.first;
    let _ = writeln!(
        s,
        "#### {} ({}×{}, {} s, {} video frames, {} AAC frames, {:.1} MB)\n",
        r.label,
        r.width,
        r.height,
        r.secs,
        r.frames,
        r.audio_frames,
        r.size_bytes as f64 / 1e6
    );
    let rows: Vec<(String, String, &str)> = vec![
        (
            "vqprobe decode fps (frames / time inside openh264)".into(),
            format!("{:.0} fps", r.decode_fps),
            "",
        ),
        (
            "vqprobe pipeline fps, in process, one thread (frames / wall: read + demux + H.264 + AAC + reduce + detect)".into(),
            format!("{:.0} fps (openh264 = {:.0}% of wall)", r.pipeline_fps, r.decode_of_wall * 100.0),
            "",
        ),
        (
            "reduce + detectors, share of decode time".into(),
            format!(
                "{:.2}% (reduce {:.2}%, detectors {:.3}%)",
                r.share * 100.0,
                r.reduce_share * 100.0,
                r.detect_share * 100.0
            ),
            "≤ 3%",
        ),
        (
            format!("allocation calls / frame after {} frames, (a) whole loop incl. demux", r.warmup),
            per_frame(a.loop_allocs, a.window_frames),
            "",
        ),
        (
            "… of which inside `TsDemuxer::push`/`finish`".into(),
            per_frame(a.demux_allocs, a.window_frames),
            "",
        ),
        (
            "… of which `Analyzer::handle` for audio packets".into(),
            per_frame(a.other_handle_allocs, a.window_frames),
            "",
        ),
        (
            "allocation calls / frame, (b) `Analyzer::handle` for video packets only".into(),
            per_frame(a.video_handle_allocs, a.window_frames),
            "0",
        ),
        (
            format!("… of which on the {} key-frame packets", a.window_keys),
            format!("{} alloc + {} realloc", a.key_handle_allocs.alloc, a.key_handle_allocs.realloc),
            "",
        ),
        (
            "`vqprobe check --decode-level auto` (the default level): fps, user + sys CPU".into(),
            format!(
                "{}, {} + {}",
                fps_of(r.frames, &r.check_auto),
                secs_opt(r.check_auto.user_s),
                secs_opt(r.check_auto.sys_s)
            ),
            "",
        ),
        (
            "`vqprobe check --format json --decode-level full` (release binary): fps, user + sys CPU".into(),
            format!(
                "{}, {} + {}",
                fps_of(r.frames, &r.check),
                secs_opt(r.check.user_s),
                secs_opt(r.check.sys_s)
            ),
            "",
        ),
        (
            "`vqprobe check` peak RSS".into(),
            mib(r.check.rss_kib),
            if r.height == 720 { "≤ 40 MiB" } else { "" },
        ),
        (
            "events: in process / `vqprobe check` lines printed".into(),
            format!("{} / {}", r.events, r.check.stdout_lines),
            "0 (clean clip)",
        ),
        (
            "ffmpeg `-threads 1` decode only: fps, user + sys CPU".into(),
            format!(
                "{}, {} + {}",
                fps_of(r.frames, &r.ff_decode),
                secs_opt(r.ff_decode.user_s),
                secs_opt(r.ff_decode.sys_s)
            ),
            "",
        ),
        (
            "ffmpeg `-threads 1` blackdetect + freezedetect + silencedetect: fps, user + sys CPU".into(),
            format!(
                "{}, {} + {}",
                fps_of(r.frames, &r.ff_detect),
                secs_opt(r.ff_detect.user_s),
                secs_opt(r.ff_detect.sys_s)
            ),
            "",
        ),
        (
            "ffmpeg with detectors, peak RSS".into(),
            mib(r.ff_detect.rss_kib),
            "",
        ),
    ];
    let _ = writeln!(s, "| measure | value | target |");
    let _ = writeln!(s, "| --- | --- | --- |");
    for (what, value, target) in rows {
        let _ = writeln!(s, "| {what} | {value} | {target} |");
    }
    s
}

fn per_frame_total(a: Allocs, frames: u64) -> f64 {
    a.total() as f64 / frames.max(1) as f64
}

/// CPU seconds per wall second of a single-threaded process: ~1 on an idle core, lower
/// when it had to wait for a CPU.
fn cpu_per_wall(e: &Ext) -> Option<f64> {
    Some((e.user_s? + e.sys_s?) / e.wall_s)
}

fn interpretation(results: &[ClipResult], m: &Machine) -> String {
    let mut s = String::new();
    let share_ok = results.iter().all(|r| r.share <= SHARE_TARGET);
    let shares: Vec<String> = results
        .iter()
        .map(|r| format!("{:.2}% ({})", r.share * 100.0, r.label))
        .collect();
    let reducer_dominates = results
        .iter()
        .all(|r| r.reduce_share > 4.0 * r.detect_share);
    let _ = writeln!(
        s,
        "- **Detectors vs decode** ({}): reduce + detectors cost {} of the time spent inside \
         openh264.{}",
        met(share_ok),
        shares.join(" and "),
        if reducer_dominates {
            " Nearly all of it is the reducer (`Reducer::reduce`: luma histogram, 64×36 grid and \
             block-edge samples read from the decoded picture); the detectors proper work on the \
             3.4 KiB thumb and are negligible."
        } else {
            ""
        }
    );
    for r in results {
        let ffd = r.frames as f64 / r.ff_decode.wall_s;
        let ffx = r.frames as f64 / r.ff_detect.wall_s;
        let check = r.frames as f64 / r.check.wall_s;
        let _ = writeln!(
            s,
            "- **{}**: openh264 alone decodes at {:.0} fps; the in-process pipeline runs at {:.0} fps \
             (openh264 is {:.0}% of its wall time: decode dominates) and the `vqprobe check` \
             process at {:.0} fps. ffmpeg's single-thread decode-only process runs at {:.0} fps \
             ({:.1}× the vqprobe pipeline), {:.0} fps with black/freeze/silence filters (the \
             filters cost {:.0}% of its throughput). ffmpeg figures are whole-process wall times \
             (demux, AAC decode, start-up): compare them with the pipeline and `check` figures.",
            r.label,
            r.decode_fps,
            r.pipeline_fps,
            r.decode_of_wall * 100.0,
            check,
            ffd,
            ffd / r.pipeline_fps,
            ffx,
            (1.0 - ffx / ffd) * 100.0
        );
    }
    let video_zero = results
        .iter()
        .all(|r| r.first.window_frames > 0 && r.first.video_handle_allocs.total() == 0);
    let only_keys = results
        .iter()
        .all(|r| r.first.video_handle_allocs.total() == r.first.key_handle_allocs.total());
    let video: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{} calls in {} frames at {} ({:.3}/frame; {} of them on the {} key-frame packets)",
                r.first.video_handle_allocs.total(),
                r.first.window_frames,
                r.label,
                per_frame_total(r.first.video_handle_allocs, r.first.window_frames),
                r.first.key_handle_allocs.total(),
                r.first.window_keys
            )
        })
        .collect();
    let whole: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{:.2}/frame at {} (demux {:.2}, audio `handle` {:.2})",
                per_frame_total(r.first.loop_allocs, r.first.window_frames),
                r.label,
                per_frame_total(r.first.demux_allocs, r.first.window_frames),
                per_frame_total(r.first.other_handle_allocs, r.first.window_frames)
            )
        })
        .collect();
    let demux_per_frame = results
        .iter()
        .map(|r| per_frame_total(r.first.demux_allocs, r.first.window_frames))
        .fold(0.0, f64::max);
    let demux_text = if demux_per_frame >= 0.5 {
        "The demuxer reassembles every PES, video and audio, into a fresh `Vec` that grows by \
         doubling (one alloc plus reallocs) and is dropped after decoding."
    } else if demux_per_frame > 0.0 {
        "The demuxer reassembles each PES into a buffer from the packet pool \
         (`ingest::pool::BufPool`, wired as `vqprobe check` does) and `Analyzer::handle` gives \
         it back after decoding; the few remaining calls are pooled buffers growing (`realloc`) \
         the first times they receive a larger access unit, or a new buffer (`alloc`) when the \
         pool was momentarily empty. They are occasional, not per frame."
    } else {
        "The demuxer reassembles each PES into a recycled buffer from the packet pool."
    };
    let _ = writeln!(
        s,
        "- **Allocations after warm-up** (none in `Analyzer::handle` for video: {}): {}.{} \
         The whole loop makes {}. {} openh264 allocates with C++ `new`/`malloc`, which this \
         counter does not see.",
        met(video_zero),
        video.join("; "),
        if !video_zero && only_keys {
            " Non-key video packets allocate nothing; on key frames `VideoDecoder::inspect_sps` \
             parses the SPS with `h264_reader`."
        } else {
            ""
        },
        whole.join("; "),
        demux_text
    );
    let r720 = results.iter().find(|r| r.height == 720);
    match r720.and_then(|r| r.check.rss_kib) {
        Some(k) => {
            let _ = writeln!(
                s,
                "- **Peak RSS at 720p** ({}): `vqprobe check` peaks at {} (ffmpeg with detectors: \
                 {}). That is the whole process: binary, tokio runtime, the 64-packet ingest \
                 queue, openh264's picture buffers, symphonia.",
                met(k as f64 / 1024.0 <= RSS_TARGET_MIB),
                mib(Some(k)),
                mib(r720.and_then(|r| r.ff_detect.rss_kib))
            );
        }
        None => {
            let _ = writeln!(
                s,
                "- **Peak RSS at 720p**: n/a (`/usr/bin/time` is missing; `apt-get install time`)."
            );
        }
    }
    let _ = writeln!(s, "- **nasm**: {}.", m.nasm);
    let busy: Vec<String> = results
        .iter()
        .filter_map(|r| cpu_per_wall(&r.ff_decode).map(|c| format!("{:.2} at {}", c, r.label)))
        .collect();
    let _ = writeln!(
        s,
        "- **Noise**: 2 cores shared with other work (load average {} at start, {} at end); \
         medians of {RUNS} runs. CPU seconds per wall second of the single-threaded ffmpeg \
         decode: {} (about 1.0 when it had a core to itself; lower means it waited for one). \
         Differences under ~10% are noise.",
        m.load,
        m.load_end,
        if busy.is_empty() {
            "n/a".to_string()
        } else {
            busy.join(", ")
        }
    );
    s
}

/// Verdict on "no per-frame allocation" for the whole loop: none at all, occasional
/// calls (well under one per frame, e.g. pooled buffers growing), or per frame.
fn whole_loop_verdict(results: &[ClipResult]) -> &'static str {
    let worst = results
        .iter()
        .map(|r| per_frame_total(r.first.loop_allocs, r.first.window_frames))
        .fold(0.0, f64::max);
    if worst == 0.0 {
        "met"
    } else if worst < 0.1 {
        "met: occasional calls, not per frame"
    } else {
        "**not met**"
    }
}

fn section(results: &[ClipResult], m: &Machine) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Detection core\n");
    let _ = writeln!(
        s,
        "_Written by `cargo bench --bench pipeline` (`benches/pipeline.rs`); rerun it to refresh this \
         section. Other sections of this file are kept._\n"
    );
    let _ = writeln!(s, "### Machine\n");
    let _ = writeln!(s, "- Date: {}", m.date);
    let _ = writeln!(s, "- vqprobe commit: {}", m.commit);
    let _ = writeln!(s, "- CPU: {} × `{}` (nproc); {}", m.nproc, m.cpu, m.os);
    let _ = writeln!(
        s,
        "- Load average (1, 5, 15 min) at start: {}; at end: {}",
        m.load, m.load_end
    );
    let _ = writeln!(
        s,
        "- {}; bench profile = the edge `dist` settings (fat LTO, codegen-units 1, vqprobe at opt-level \"s\" as in `dist`)",
        m.rustc
    );
    let _ = writeln!(s, "- openh264 0.9.9 from source; nasm: {}", m.nasm);
    let _ = writeln!(s, "- {}\n", m.ffmpeg);
    let _ = writeln!(s, "### Method\n");
    let _ = writeln!(
        s,
        "- Clips: ffmpeg `testsrc2` picture + 1 kHz `sine` (stereo AAC 128 kb/s), libx264 High, preset \
         medium, `-bf 3 -g 50`, 25 fps, MPEG-TS; made once under `<target dir>/bench-media/`."
    );
    let _ = writeln!(
        s,
        "- In process ({RUNS} runs, medians): read the file in 188 KiB chunks, `TsDemuxer::push` (with the \
         packet buffer pool wired as in `vqprobe check`), \
         `Analyzer::handle(IngestMsg::Program/Packet)` for every output, then `Analyzer::finish`, all on \
         one thread. Decode fps = frames / `decode_ns`; pipeline fps = frames / wall; detector share = \
         (`reduce_ns` + `detect_ns`) / `decode_ns` from `Analyzer::stats()`."
    );
    let _ = writeln!(
        s,
        "- Allocations: a counting `#[global_allocator]` (wrapping `System`) counts `alloc`/`alloc_zeroed` \
         and `realloc` calls from the first message after frame {} to the end of input (before \
         `finish`), in the first run. C++ allocations inside openh264 are not counted.",
        WARMUP_FRAMES
    );
    let _ = writeln!(
        s,
        "- Processes ({RUNS} runs each, interleaved with the in-process runs; medians) under `/usr/bin/time -v`: the release binary \
         `vqprobe check CLIP --format json --decode-level full` (and `--decode-level auto`), `ffmpeg -hide_banner -nostats -threads 1 -i CLIP -vf \
         blackdetect,freezedetect -af silencedetect -f null -`, and `ffmpeg -hide_banner -nostats -threads 1 \
         -i CLIP -f null -` (decodes audio too). fps = video frames / wall seconds.\n"
    );
    let _ = writeln!(s, "### Results\n");
    for r in results {
        s.push_str(&clip_table(r));
        s.push('\n');
    }
    let _ = writeln!(s, "### Targets\n");
    let _ = writeln!(s, "| target | result | |");
    let _ = writeln!(s, "| --- | --- | --- |");
    let shares: Vec<String> = results
        .iter()
        .map(|r| format!("{}: {:.2}%", r.label, r.share * 100.0))
        .collect();
    let _ = writeln!(
        s,
        "| reduce + detectors ≤ 3% of decode | {} | {} |",
        shares.join(", "),
        met(results.iter().all(|r| r.share <= SHARE_TARGET))
    );
    let vh: Vec<String> = results
        .iter()
        .map(|r| format!("{}: {}", r.label, r.first.video_handle_allocs.total()))
        .collect();
    let _ = writeln!(
        s,
        "| no allocation per frame in `Analyzer::handle` (video) after warm-up | total calls {} | {} |",
        vh.join(", "),
        met(results.iter().all(|r| r.first.video_handle_allocs.total() == 0))
    );
    let la: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{}: {:.2}/frame",
                r.label,
                r.first.loop_allocs.total() as f64 / r.first.window_frames.max(1) as f64
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "| no allocation per frame in the whole loop (incl. demux) | {} | {} |",
        la.join(", "),
        whole_loop_verdict(results)
    );
    if let Some(r) = results.iter().find(|r| r.height == 720) {
        let k = r.check.rss_kib;
        let _ = writeln!(
            s,
            "| peak RSS ≤ 40 MiB at 720p | {} | {} |",
            mib(k),
            k.map_or("n/a", |k| met(k as f64 / 1024.0 <= RSS_TARGET_MIB))
        );
    }
    let _ = writeln!(
        s,
        "| openh264 built with nasm | {} | {} |\n",
        if m.nasm.starts_with("yes") {
            "yes"
        } else {
            "no"
        },
        met(m.nasm.starts_with("yes"))
    );
    let _ = writeln!(s, "### Thumbnails and report series\n");
    let _ = writeln!(
        s,
        "The same in-process loop with `thumbnails` and `series` on (what `check --thumbs --report` \
         and the agent's `[thumbnails]` add: the decoder hands out its planes, one picture per media \
         second is downscaled and kept, series bins are updated), interleaved with the runs above \
         (off, the default of the detection core). Clean clips: no defect starts, so no JPEG is encoded; \
         a start adds one 320-px JPEG (about 1 ms).\n"
    );
    let _ = writeln!(
        s,
        "| clip | wall, off | wall, on | difference | reduce + detect (+ previews) / decode, on | previews |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- |");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {:.3} s | {:.3} s | {:+.1}% | {:.2}% (off {:.2}%) | {:.1} ms |",
            r.label,
            r.wall_off,
            r.wall_on,
            (r.wall_on / r.wall_off - 1.0) * 100.0,
            r.share_on * 100.0,
            r.share * 100.0,
            r.thumbs_ms
        );
    }
    s.push('\n');
    let _ = writeln!(s, "### Interpretation\n");
    s.push_str(&interpretation(results, m));
    let _ = writeln!(s, "\n### Reproduce\n");
    let _ = writeln!(
        s,
        "```sh\nexport CARGO_TARGET_DIR=/work/target-bench   # optional; any target dir works\n\
         cargo bench --bench pipeline                   # VQPROBE_BENCH_SECS=5 for a quick run\n```"
    );
    s
}

fn main() {
    let secs: f64 = std::env::var("VQPROBE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| s.is_finite() && *s >= 1.0)
        .unwrap_or(20.0);
    // This binary is <target>/release/deps/pipeline-HASH.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("bench binary inside <target>/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir.parent().unwrap_or(&profile_dir).to_path_buf();
    let media = target_dir.join("bench-media");
    std::fs::create_dir_all(&media).expect("create bench-media");
    // Built by cargo for benches with the bench profile (= the dist code generation).
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vqprobe"));
    let time_v = Path::new("/usr/bin/time").exists();
    if !time_v {
        eprintln!("/usr/bin/time missing (apt-get install time): RSS and CPU will be n/a");
    }
    let mut m = machine(&profile_dir);
    eprintln!(
        "machine: {} × {}, load {}, nasm: {}",
        m.nproc, m.cpu, m.load, m.nasm
    );
    let mut results = Vec::new();
    for clip in &CLIPS {
        let path = ensure_clip(&media, clip, secs);
        results.push(measure(clip, &path, secs, &bin, time_v, &media));
    }
    m.load_end = loadavg();
    let section = section(&results, &m);
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/PERFORMANCE.md");
    std::fs::create_dir_all(doc_path.parent().expect("docs dir")).expect("create docs/");
    let doc = doc::splice(
        std::fs::read_to_string(&doc_path).ok(),
        "## Detection core",
        &section,
    );
    std::fs::write(&doc_path, doc).expect("write docs/PERFORMANCE.md");
    println!("{section}");
    eprintln!("wrote {}", doc_path.display());
}
