//! `vqprobe demo`: the product on its embedded default. No camera, broker or media
//! file: a synthetic stream is made in-process (openh264's encoder for the picture,
//! generated PCM for the sound) with scripted defects, fed through the same pipeline as
//! any other input (a session fed by the generator instead of a parsed source), and the
//! events found are compared with the script. With `--mqtt` the events also go to a
//! broker through a throw-away spool. Writes only to the `Write` it is handed.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, QpRange, RateControlMode,
};
use openh264::formats::YUVBuffer;
use openh264::{OpenH264API, Timestamp};

use super::session::{self, SessionSpec};
use crate::defect::EndReason;
use crate::defect::{DefectKind, Phase};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ingest::sink::{Overflow, Sink};
use crate::ingest::{Codec, Elementary, Packet, ProgramInfo, Track};
use crate::publish::mqtt::Publisher;
use crate::publish::status::Status;
use crate::publish::{LinePrinter, OutputFormat};
use crate::shutdown::Shutdown;

/// Picture size of the synthetic stream.
const W: usize = 640;
const H: usize = 360;
/// Frames per second.
const FPS: u32 = 25;
/// Seconds of synthetic stream.
pub const DEMO_SECONDS: f64 = 64.0;
/// Sound: 48 kHz mono.
const RATE: u32 = 48_000;
/// A defect window that IDRs every 2 s end: corruption lasts until the next one.
const GOP_FRAMES: u32 = 50;

/// One scripted defect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scripted {
    pub kind: DefectKind,
    pub start_s: f64,
    pub end_s: f64,
}

/// The demo's script. Corruption is injected from 15.2 s to 15.6 s; the picture
/// recovers at the IDR at 16.0 s, which is when a viewer sees it clean again. Then a
/// blue "no signal" screen (`uniform`, at least 5 s), SMPTE-style colour bars
/// (`test_pattern`, at least 10 s) and a focus loss (`blur`, at least 10 s, against the
/// baseline learned from the sharp picture before).
pub const SCRIPT: [Scripted; 7] = [
    Scripted {
        kind: DefectKind::Black,
        start_s: 3.0,
        end_s: 6.0,
    },
    Scripted {
        kind: DefectKind::Freeze,
        start_s: 9.0,
        end_s: 12.0,
    },
    Scripted {
        kind: DefectKind::Corruption,
        start_s: 15.2,
        end_s: 16.0,
    },
    Scripted {
        kind: DefectKind::Silence,
        start_s: 19.0,
        end_s: 22.0,
    },
    Scripted {
        kind: DefectKind::Uniform,
        start_s: 25.0,
        end_s: 31.0,
    },
    Scripted {
        kind: DefectKind::TestPattern,
        start_s: 34.0,
        end_s: 46.0,
    },
    Scripted {
        kind: DefectKind::Blur,
        start_s: 49.0,
        end_s: 61.0,
    },
];

/// Tolerance on onset and end when matching found against scripted defects.
pub const TOLERANCE_S: f64 = 0.5;

/// Demo options.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    pub format: OutputFormat,
    /// Pace the synthetic stream at real time (64 s) instead of as fast as possible.
    pub realtime: bool,
    /// Also publish the events to this MQTT broker (`mqtt://` or `mqtts://`), on
    /// `vqprobe/{probe}/demo/events`.
    pub mqtt: Option<String>,
    /// Write the HTML report here at the end (every picture decoded, thumbnails).
    pub report: Option<PathBuf>,
}

/// How long `demo --mqtt` waits for the broker to acknowledge the events.
const MQTT_FLUSH: Duration = Duration::from_secs(10);

/// The outcome: which scripted defects were found and what else was reported.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub events: Vec<Event>,
    pub found: Vec<Scripted>,
    pub missing: Vec<Scripted>,
    pub unexpected: Vec<Event>,
    /// `--mqtt`: events the broker had not acknowledged after 10 s.
    pub unacknowledged: usize,
}

impl DemoReport {
    /// True when every scripted defect was found and nothing else.
    pub fn passed(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }

    /// The closing summary line.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "demo: {}/{} scripted defects found, {} unexpected",
            self.found.len(),
            SCRIPT.len(),
            self.unexpected.len()
        );
        for m in &self.missing {
            s.push_str(&format!(
                "; MISSING {} {:.1}-{:.1}s",
                m.kind.as_str(),
                m.start_s,
                m.end_s
            ));
        }
        for u in &self.unexpected {
            s.push_str(&format!(
                "; UNEXPECTED {} {:.3}-{:.3}s",
                u.kind.as_str(),
                u.start_s,
                u.end_s.unwrap_or(u.start_s)
            ));
        }
        s.push_str(if self.passed() {
            " — PASS"
        } else {
            " — FAIL"
        });
        s
    }
}

/// Compares end events against the script.
pub fn compare(events: &[Event]) -> DemoReport {
    let ends: Vec<&Event> = events.iter().filter(|e| e.state == Phase::End).collect();
    let mut used = vec![false; ends.len()];
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for s in SCRIPT {
        let hit = ends.iter().enumerate().position(|(i, e)| {
            !used[i]
                && e.kind == s.kind
                && (e.start_s - s.start_s).abs() <= TOLERANCE_S
                && e.end_s
                    .is_some_and(|end| (end - s.end_s).abs() <= TOLERANCE_S)
        });
        match hit {
            Some(i) => {
                used[i] = true;
                found.push(s);
            }
            None => missing.push(s),
        }
    }
    let unexpected = ends
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(e, _)| (*e).clone())
        .collect();
    DemoReport {
        events: events.to_vec(),
        found,
        missing,
        unexpected,
        unacknowledged: 0,
    }
}

fn in_window(kind: DefectKind, t: f64) -> bool {
    SCRIPT.iter().any(|s| {
        s.kind == kind
            && match kind {
                // Bits are flipped only in [15.2, 15.6); the decoder recovers at the IDR.
                DefectKind::Corruption => t >= s.start_s && t < s.start_s + 0.4,
                _ => t >= s.start_s && t < s.end_s,
            }
    })
}

/// Draws frame `n` of the moving test picture into `yuv` (I420).
fn draw(n: u32, yuv: &mut [u8]) {
    let (y, uv) = yuv.split_at_mut(W * H);
    let shift = n as usize * 3;
    for row in 0..H {
        for col in 0..W {
            // Diagonal bands sliding right, with a fine grain that moves with them (a
            // picture in focus has detail at the pixel scale: what `blur` measures),
            // plus a bright box moving across.
            let band = ((col + shift + row / 2) / 12) % 8;
            let x = (col + shift) as u32;
            let grain = (x.wrapping_mul(0x9E37_79B1) ^ (row as u32).wrapping_mul(0x85EB_CA77))
                .wrapping_mul(0xC2B2_AE35)
                >> 26;
            let mut v = 30 + band as u8 * 20 + grain as u8;
            let bx = (n as usize * 4) % (W - 40);
            if (bx..bx + 40).contains(&col) && (160..200).contains(&row) {
                v = 230;
            }
            y[row * W + col] = v;
        }
    }
    let half = uv.len() / 2;
    let (u, v) = uv.split_at_mut(half);
    u.fill(110 + (n % 20) as u8);
    v.fill(140);
}

fn black(yuv: &mut [u8]) {
    let (y, uv) = yuv.split_at_mut(W * H);
    y.fill(16);
    uv.fill(128);
}

/// A blue "no signal" screen with a small white caption box in the middle.
fn no_signal(yuv: &mut [u8]) {
    let (y, uv) = yuv.split_at_mut(W * H);
    y.fill(41);
    for row in H / 2 - 20..H / 2 + 20 {
        y[row * W + W / 2 - 80..row * W + W / 2 + 80].fill(235);
    }
    let (u, v) = uv.split_at_mut(uv.len() / 2);
    u.fill(240);
    v.fill(110);
    for row in H / 4 - 10..H / 4 + 10 {
        u[row * W / 2 + W / 4 - 40..row * W / 2 + W / 4 + 40].fill(128);
        v[row * W / 2 + W / 4 - 40..row * W / 2 + W / 4 + 40].fill(128);
    }
}

/// SMPTE-style 75% colour bars (white, yellow, cyan, green, magenta, red, blue; BT.601
/// limited-range levels), full height.
fn bars(yuv: &mut [u8]) {
    const BARS: [(u8, u8, u8); 7] = [
        (180, 128, 128),
        (162, 44, 142),
        (131, 156, 44),
        (112, 72, 58),
        (84, 184, 198),
        (65, 100, 212),
        (35, 212, 114),
    ];
    let bar = |col: usize| BARS[(col * BARS.len() / W).min(BARS.len() - 1)];
    let (y, uv) = yuv.split_at_mut(W * H);
    let (u, v) = uv.split_at_mut(uv.len() / 2);
    for row in 0..H {
        for col in 0..W {
            y[row * W + col] = bar(col).0;
        }
    }
    for row in 0..H / 2 {
        for col in 0..W / 2 {
            let (_, cb, cr) = bar(col * 2);
            u[row * W / 2 + col] = cb;
            v[row * W / 2 + col] = cr;
        }
    }
}

/// Frame `n` of the moving picture out of focus: its luma under a 9×9 box blur.
fn blurred(n: u32, yuv: &mut [u8], scratch: &mut Vec<u8>) {
    const R: usize = 4;
    draw(n, yuv);
    let y = &mut yuv[..W * H];
    scratch.clear();
    scratch.extend_from_slice(y);
    let avg = |sum: u32, n: usize| (sum / n as u32) as u8;
    // Horizontal pass (scratch -> y), then vertical (y -> scratch -> y).
    for row in 0..H {
        for col in 0..W {
            let (a, b) = (col.saturating_sub(R), (col + R).min(W - 1));
            let s: u32 = scratch[row * W + a..=row * W + b]
                .iter()
                .map(|&p| u32::from(p))
                .sum();
            y[row * W + col] = avg(s, b - a + 1);
        }
    }
    scratch.copy_from_slice(y);
    for row in 0..H {
        let (a, b) = (row.saturating_sub(R), (row + R).min(H - 1));
        for col in 0..W {
            let s: u32 = (a..=b).map(|r| u32::from(scratch[r * W + col])).sum();
            y[row * W + col] = avg(s, b - a + 1);
        }
    }
}

/// Flips bits inside the slice data of an encoded access unit (leaving parameter sets
/// and slice headers' first bytes intact), deterministically.
fn corrupt(au: &mut [u8], seed: u32) {
    use crate::codec::h264::{annexb_nal_ranges, nal, nal_type};
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    // The ranges are taken first: the flips below never forge a start code.
    let slices: Vec<std::ops::Range<usize>> = annexb_nal_ranges(au)
        .filter(|r| {
            matches!(
                au.get(r.start).map(|&h| nal_type(h)),
                Some(nal::SLICE | nal::IDR)
            )
        })
        .collect();
    for r in slices {
        // Leave the slice header's first bytes intact.
        for b in au[r].iter_mut().skip(9) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x % 24 == 0 && *b != 0 {
                *b ^= 1 << (x % 8);
                if *b == 0 {
                    *b = 0x5A; // never forge a start code
                }
            }
        }
    }
}

/// Produces the synthetic stream into `sink` (run on a blocking thread: encoding is CPU
/// work; `rt` runs the sink's sends). Returns when done or when the decode side is gone.
fn produce(sink: &mut Sink, rt: &tokio::runtime::Handle, realtime: bool) -> Result<EndReason> {
    let cfg = EncoderConfig::new()
        .max_frame_rate(FrameRate::from_hz(FPS as f32))
        .bitrate(BitRate::from_bps(600_000))
        .rate_control_mode(RateControlMode::Off)
        .qp(QpRange::new(20, 26))
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(GOP_FRAMES));
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), cfg)
        .map_err(|e| Error::Other(format!("demo encoder: {e}")))?;
    let program = ProgramInfo {
        video: Some(Elementary {
            pid: 0x100,
            stream_type: 0x1B,
            codec: Codec::H264,
        }),
        audio: Some(Elementary {
            pid: 0x101,
            stream_type: 0,
            codec: Codec::PcmS16le {
                sample_rate: RATE,
                channels: 1,
            },
        }),
        other_streams: 0,
    };
    if !rt.block_on(sink.program(program)) {
        return Ok(EndReason::Shutdown);
    }
    let frames = (DEMO_SECONDS * f64::from(FPS)) as u32;
    let per_frame = (RATE / FPS) as usize;
    let mut yuv = vec![0u8; W * H * 3 / 2];
    let mut frozen: Option<Vec<u8>> = None;
    let mut scratch = Vec::with_capacity(W * H);
    let began = Instant::now();
    let base_pts: i64 = 900_000; // like a real stream: not zero
    for n in 0..frames {
        let t = f64::from(n) / f64::from(FPS);
        if in_window(DefectKind::Black, t) {
            black(&mut yuv);
        } else if in_window(DefectKind::Freeze, t) {
            let f = frozen.get_or_insert_with(|| {
                draw(n.saturating_sub(1), &mut yuv);
                yuv.clone()
            });
            yuv.copy_from_slice(f);
        } else if in_window(DefectKind::Uniform, t) {
            no_signal(&mut yuv);
        } else if in_window(DefectKind::TestPattern, t) {
            bars(&mut yuv);
        } else if in_window(DefectKind::Blur, t) {
            blurred(n, &mut yuv, &mut scratch);
        } else {
            draw(n, &mut yuv);
        }
        let buf = YUVBuffer::from_vec(yuv.clone(), W, H);
        if n % GOP_FRAMES == 0 {
            enc.force_intra_frame();
        }
        let bs = enc
            .encode_at(&buf, Timestamp::from_millis((t * 1000.0) as u64))
            .map_err(|e| Error::Other(format!("demo encode: {e}")))?;
        let mut au = bs.to_vec();
        if au.is_empty() {
            continue;
        }
        if in_window(DefectKind::Corruption, t) {
            corrupt(&mut au, n);
        }
        let pts = base_pts + i64::from(n) * crate::timebase::HZ / i64::from(FPS);
        let key = crate::codec::h264::has_idr(&au);
        let video = Packet {
            track: Track::Video,
            pts: Some(pts),
            dts: Some(pts),
            key,
            damaged: false,
            data: au,
        };
        // Sound for the same 40 ms: a 440 Hz tone at -20 dBFS RMS, or digital silence.
        let amp = if in_window(DefectKind::Silence, t) {
            0.0
        } else {
            0.1 * std::f64::consts::SQRT_2
        };
        let mut pcm = Vec::with_capacity(per_frame * 2);
        for k in 0..per_frame {
            let s = n as usize * per_frame + k;
            let v = amp * (2.0 * std::f64::consts::PI * 440.0 * s as f64 / f64::from(RATE)).sin();
            pcm.extend_from_slice(&((v * 32767.0) as i16).to_le_bytes());
        }
        let audio = Packet {
            track: Track::Audio,
            pts: Some(pts),
            dts: Some(pts),
            key: true,
            damaged: false,
            data: pcm,
        };
        if realtime {
            let due = Duration::from_secs_f64(t);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if !rt.block_on(sink.send(video)) || !rt.block_on(sink.send(audio)) {
            return Ok(EndReason::Shutdown);
        }
    }
    Ok(EndReason::EndOfInput)
}

/// `demo --mqtt`: a publisher with a throw-away spool.
struct DemoPublisher {
    publisher: Publisher,
    spool_dir: PathBuf,
    status: Status,
}

impl DemoPublisher {
    fn start(url: &str, probe: &str) -> Result<Self> {
        let settings = super::agent::config::settings_for_url(url, probe)?;
        let dir = std::env::temp_dir().join(format!("vqprobe-demo-spool-{}", std::process::id()));
        let spool = crate::publish::spool::Spool::open(crate::publish::spool::SpoolOptions::new(
            dir.clone(),
            1 << 20,
            1 << 20,
        ))
        .map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let status = Status::new(probe, std::time::SystemTime::now(), vec!["demo".into()]);
        let publisher = Publisher::start(settings, spool, status.online(), status.offline())?;
        Ok(DemoPublisher {
            publisher,
            spool_dir: dir,
            status,
        })
    }

    /// Publishes `offline` after the events; returns how many events the broker had not
    /// acknowledged within [`MQTT_FLUSH`] (the spool is kept then).
    async fn finish(self) -> usize {
        let r = self
            .publisher
            .shutdown(self.status.offline(), MQTT_FLUSH)
            .await;
        if r.pending == 0 {
            let _ = std::fs::remove_dir_all(&self.spool_dir);
        }
        r.pending
    }
}

/// Runs the demo, writing events to `out` (and publishing them with `--mqtt`) as they
/// are detected.
pub async fn run(opts: &DemoOptions, probe_id: &str, out: &mut dyn Write) -> Result<DemoReport> {
    let publisher = match &opts.mqtt {
        Some(url) => Some(DemoPublisher::start(url, probe_id)?),
        None => None,
    };
    let mut spec = SessionSpec::new("demo", probe_id, "demo");
    if opts.report.is_some() {
        spec.detect.series = true;
        spec.detect.thumbnails = true;
        spec.detect.decode.level = crate::config::LevelChoice::Full;
    }
    let keep_jpegs = opts.report.is_some();
    let realtime = opts.realtime;
    let printer = LinePrinter {
        format: opts.format,
    };
    let mut events = Vec::new();
    let (_stop, shutdown) = Shutdown::new();
    let session = session::run_feed(
        &spec,
        Overflow::Block,
        false,
        shutdown,
        None,
        &mut |ev: Event| {
            let _ = writeln!(out, "{}", printer.line(&ev));
            let _ = out.flush();
            if let Some(p) = &publisher {
                p.publisher.event(&ev);
            }
            let mut ev = ev;
            if !keep_jpegs {
                // The demo's seven defects: a handful of KiB at most otherwise.
                ev.jpeg = None;
            }
            events.push(ev);
        },
        move |mut sink, _shutdown| async move {
            let rt = tokio::runtime::Handle::current();
            let produced = tokio::task::spawn_blocking(move || {
                let r = produce(&mut sink, &rt, realtime);
                (sink, r)
            })
            .await;
            match produced {
                Ok(done) => done,
                Err(e) => panic!("demo source: {e}"),
            }
        },
    )
    .await?;
    let mut report = compare(&events);
    if let Some(path) = &opts.report {
        let series = session.series.clone().unwrap_or_default();
        let html = crate::publish::report::render(&crate::publish::report::ReportInput {
            input: "demo: built-in synthetic stream, 640×360 at 25 fps with 48 kHz sound",
            probe_id,
            stream_id: "demo",
            stats: &session.stats,
            series: &series,
            events: &events,
            events_not_kept: 0,
            thumbs_not_kept: 0,
            detect: &spec.detect,
            note: Some(&report.summary()),
        });
        crate::publish::report::write(path, &html)?;
    }
    if let Some(p) = publisher {
        report.unacknowledged = p.finish().await;
    }
    Ok(report)
}
