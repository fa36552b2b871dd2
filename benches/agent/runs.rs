//! The measured runs of the agent benchmark: `vqprobe run` with N looped real-time
//! streams at one decode level, the same job as N ffmpeg processes, and the outbox
//! throughput. Owns what is measured and how (warm-up, sampling, the stats topic); it
//! formats nothing for the report and writes only in the scratch dir it is given.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{percentile, rfc3339_secs, sample, subscribe, unix_now, Broker};

/// Warm-up before CPU and pace are measured: a quarter of the run, 5–30 s.
pub fn warm_up(secs: u64) -> Duration {
    Duration::from_secs((secs / 4).clamp(5, 30))
}

/// Sampling period of CPU and RSS: a tenth of the run, 1–10 s.
fn sample_every(secs: u64) -> Duration {
    Duration::from_secs((secs / 10).clamp(1, 10))
}

/// The `decode` objects of every stream's last stats, summed.
#[derive(Debug, Clone, Default)]
pub struct DecodeSum {
    pub pictures: u64,
    pub decoded: u64,
    /// Media seconds at full, reference, key.
    pub seconds: [f64; 3],
    pub escalations: u64,
    pub ring_overflows: u64,
    pub ring_trims: u64,
    pub step_downs: u64,
    pub step_ups: u64,
}

impl DecodeSum {
    pub fn share(&self) -> f64 {
        if self.pictures == 0 {
            f64::NAN
        } else {
            self.decoded as f64 / self.pictures as f64
        }
    }

    fn add(&mut self, d: &serde_json::Value) {
        let u = |k: &str| d[k].as_u64().unwrap_or(0);
        self.pictures += u("pictures");
        self.decoded += u("decoded");
        for (i, k) in ["full", "reference", "key"].iter().enumerate() {
            self.seconds[i] += d["seconds"][k].as_f64().unwrap_or(0.0);
        }
        self.escalations += u("escalations");
        self.ring_overflows += u("ring_overflows");
        self.ring_trims += u("ring_trims");
        self.step_downs += u("step_downs");
        self.step_ups += u("step_ups");
    }
}

/// (stats `at`, unix seconds; `media_s`).
type Point = (f64, f64);

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Most seconds a stream's media may trail the wall clock at the end of a run that
/// sustains (start-up included).
pub const MAX_LAG_S: f64 = 3.0;

/// One `vqprobe run` measurement.
#[derive(Debug, Clone)]
pub struct AgentRun {
    pub streams: usize,
    pub level: String,
    pub secs: u64,
    /// Share of one core per stream (user + system), after the warm-up.
    pub cpu_per_stream: f64,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub rss_max_kib: u64,
    /// (seconds since start, RSS KiB).
    pub rss_series: Vec<(u64, u64)>,
    /// Media seconds analysed per wall second after the warm-up (stats topic), the
    /// slowest stream and the mean; NaN without stats.
    pub pace_min: f64,
    pub pace_mean: f64,
    /// Streams that published stats after the warm-up.
    pub reporting: usize,
    /// How far the furthest-behind stream's media is behind the wall clock at its last
    /// stats: wall seconds since the agent started minus `media_s` (start-up included).
    pub lag_max: f64,
    /// Packets dropped (queue full + until a key frame), all streams.
    pub dropped: u64,
    pub decode: DecodeSum,
    pub logged: usize,
    pub received: usize,
    pub lat_ms: Vec<f64>,
}

impl AgentRun {
    /// Media keeping up with the wall clock on every stream (pace ≥ 0.95 after the
    /// warm-up, at most [`MAX_LAG_S`] behind at the end), nothing dropped.
    pub fn sustains(&self) -> bool {
        self.reporting == self.streams
            && self.pace_min >= 0.95
            && self.lag_max <= MAX_LAG_S
            && self.dropped == 0
    }
}

/// Runs `vqprobe run` (`bin`) on `streams` looped real-time copies of `clip` at `level`
/// for `secs`.
pub fn agent(
    bin: &Path,
    clip: &Path,
    dir: &Path,
    streams: usize,
    level: &str,
    secs: u64,
    tck: f64,
) -> AgentRun {
    agent_with(bin, clip, dir, streams, level, secs, tck, false)
}

/// [`agent`], with the streams in the configuration file (`fleet` false) or in a fleet's
/// catalog on the broker, the agent its only member (`fleet` true).
#[allow(clippy::too_many_arguments)]
pub fn agent_with(
    bin: &Path,
    clip: &Path,
    dir: &Path,
    streams: usize,
    level: &str,
    secs: u64,
    tck: f64,
    fleet: bool,
) -> AgentRun {
    let _ = std::fs::remove_dir_all(dir);
    let broker = Broker::start(dir);
    let (mut sub, got) = subscribe(
        broker.port,
        &["vqprobe/+/+/events", "vqprobe/bench/+/stats"],
    );
    // `LEVEL+syntax=S`: the level with `syntax_check = "S"` (auto only).
    let decode = match level.split_once("+syntax=") {
        Some((l, sc)) => format!("level = \"{l}\"\nsyntax_check = \"{sc}\"\n"),
        None => format!("level = \"{level}\"\n"),
    };
    let mut cfg = format!(
        "probe_id = \"bench\"\nstats_interval = \"2s\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\
         [spool]\ndir = \"{}\"\n[limits]\nmax_streams = {}\n[detect.decode]\n{decode}",
        broker.port,
        dir.join("spool").display(),
        streams.max(32)
    );
    if fleet {
        cfg.push_str("[fleet]\nname = \"bench\"\nsettle = \"0s\"\n");
        for i in 0..streams {
            let entry = format!(
                r#"{{"id":"s{i}","url":"file://{}","pace":"realtime","loop":true}}"#,
                clip.display()
            );
            let st = Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &broker.port.to_string(),
                    "-r",
                    "-q",
                    "1",
                ])
                .args([
                    "-t",
                    &format!("vqprobe/fleet/bench/streams/s{i}"),
                    "-m",
                    &entry,
                ])
                .status()
                .expect("mosquitto_pub");
            assert!(st.success(), "mosquitto_pub failed");
        }
    } else {
        for i in 0..streams {
            write!(
                cfg,
                "[[streams]]\nid = \"s{i}\"\nurl = \"file://{}\"\npace = \"realtime\"\nloop = true\n",
                clip.display()
            )
            .unwrap();
        }
    }
    let cfg_path = dir.join("agent.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let log = dir.join("agent.log");
    let mut agent = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("vqprobe run");
    let pid = agent.id();
    let t0 = Instant::now();
    let start_unix = unix_now();
    let warm = warm_up(secs);
    let every = sample_every(secs);
    let mut series = Vec::new();
    let mut first: Option<(f64, u64, Instant, f64)> = None;
    let mut last = (0.0, 0u64, t0);
    let mut rss_max = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(
            every
                .min(Duration::from_secs(secs).saturating_sub(t0.elapsed()))
                .max(Duration::from_millis(100)),
        );
        let Some((cpu, rss)) = sample(pid, tck) else {
            panic!(
                "agent died:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let now = Instant::now();
        series.push((t0.elapsed().as_secs(), rss));
        rss_max = rss_max.max(rss);
        if first.is_none() && t0.elapsed() >= warm {
            first = Some((cpu, rss, now, unix_now()));
        }
        last = (cpu, rss, now);
        eprintln!(
            "  [{level} x{streams}] t={:>4}s rss={} KiB cpu={cpu:.1}s",
            t0.elapsed().as_secs(),
            rss
        );
    }
    let (c0, r0, i0, warm_unix) = first.expect("run shorter than the warm-up");
    let cpu_per_stream = (last.0 - c0) / last.2.duration_since(i0).as_secs_f64() / streams as f64;
    // Stop cleanly so every event is flushed, then let the subscriber catch up.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = agent.wait();
    std::thread::sleep(Duration::from_secs(1));
    let _ = sub.kill();
    let _ = sub.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let logged = text.lines().filter(|l| l.contains(" event ")).count();
    let got = got.lock().unwrap().clone();
    let mut ids = HashSet::new();
    let mut lat = Vec::new();
    // Per stream: (at, media_s) of the first stats after the warm-up, and the last stats.
    let mut paces: HashMap<String, (Point, Point)> = HashMap::new();
    let mut last_stats: HashMap<String, serde_json::Value> = HashMap::new();
    for m in &got {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&m.payload) else {
            continue;
        };
        if m.topic.ends_with("/stats") {
            let (Some(s), Some(at), Some(media)) = (
                v["stream"].as_str(),
                v["at"].as_str().and_then(rfc3339_secs),
                v["media_s"].as_f64(),
            ) else {
                continue;
            };
            if at >= warm_unix {
                paces
                    .entry(s.to_string())
                    .and_modify(|p| p.1 = (at, media))
                    .or_insert(((at, media), (at, media)));
            }
            last_stats.insert(s.to_string(), v);
            continue;
        }
        if !ids.insert(v["id"].as_str().unwrap_or("").to_string()) {
            continue;
        }
        // Shutdown ends are made at SIGTERM, not at a confirmation: leave them out.
        if v["reason"].is_string() {
            continue;
        }
        if let Some(at) = v["at"].as_str().and_then(rfc3339_secs) {
            lat.push((m.arrived - at) * 1000.0);
        }
    }
    let ratios: Vec<f64> = paces
        .values()
        .filter(|(a, b)| b.0 - a.0 >= 1.0)
        .map(|(a, b)| (b.1 - a.1) / (b.0 - a.0))
        .collect();
    let mut decode = DecodeSum::default();
    let mut dropped = 0;
    let mut lag_max = f64::NAN;
    for v in last_stats.values() {
        if let (Some(at), Some(media)) = (
            v["at"].as_str().and_then(rfc3339_secs),
            v["media_s"].as_f64(),
        ) {
            let lag = at - start_unix - media;
            if lag_max.is_nan() || lag > lag_max {
                lag_max = lag;
            }
        }
        decode.add(&v["decode"]);
        dropped += v["dropped"]["queue_full"].as_u64().unwrap_or(0)
            + v["dropped"]["until_key_frame"].as_u64().unwrap_or(0);
    }
    let mut mins = ratios.clone();
    AgentRun {
        streams,
        level: level.to_string(),
        secs,
        cpu_per_stream,
        rss_start_kib: r0,
        rss_end_kib: last.1,
        rss_max_kib: rss_max,
        rss_series: series,
        pace_min: percentile(&mut mins, 0.0),
        pace_mean: mean(&ratios),
        reporting: ratios.len(),
        lag_max,
        dropped,
        decode,
        logged,
        received: ids.len(),
        lat_ms: lat,
    }
}

/// N ffmpeg processes doing the same job.
#[derive(Debug, Clone)]
pub struct FfRun {
    pub streams: usize,
    pub cpu_per_stream: f64,
    pub rss_total_kib: u64,
    /// Output media seconds per wall second after the warm-up (`-progress`), slowest
    /// process and the mean.
    pub pace_min: f64,
    pub pace_mean: f64,
}

fn ff_out_time(progress: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(progress).ok()?;
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("out_time_us="))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|us| us / 1e6)
}

/// `ffmpeg -re -stream_loop -1 -threads 1 -i CLIP -vf blackdetect,freezedetect -af
/// silencedetect -f null -`, one process per stream, for `secs` (measured after the
/// same warm-up as the agent).
pub fn ffmpeg(clip: &Path, dir: &Path, streams: usize, secs: u64, tck: f64) -> FfRun {
    std::fs::create_dir_all(dir).unwrap();
    let progress: Vec<_> = (0..streams)
        .map(|i| dir.join(format!("ffmpeg-{i}.progress")))
        .collect();
    let mut kids: Vec<Child> = progress
        .iter()
        .map(|p| {
            let _ = std::fs::remove_file(p);
            Command::new("ffmpeg")
                .args(["-hide_banner", "-nostats", "-loglevel", "error"])
                .args(["-re", "-stream_loop", "-1", "-threads", "1", "-i"])
                .arg(clip)
                .args(["-vf", "blackdetect,freezedetect", "-af", "silencedetect"])
                .args(["-f", "null", "-", "-progress"])
                .arg(p)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("ffmpeg")
        })
        .collect();
    let warm = warm_up(secs);
    std::thread::sleep(warm);
    let s0: Vec<(f64, u64)> = kids.iter().filter_map(|k| sample(k.id(), tck)).collect();
    let o0: Vec<Option<f64>> = progress.iter().map(|p| ff_out_time(p)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs).saturating_sub(warm));
    let s1: Vec<(f64, u64)> = kids.iter().filter_map(|k| sample(k.id(), tck)).collect();
    let o1: Vec<Option<f64>> = progress.iter().map(|p| ff_out_time(p)).collect();
    let dt = t0.elapsed().as_secs_f64();
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    assert_eq!(s1.len(), streams, "an ffmpeg process died");
    let cpu: f64 = s1.iter().map(|s| s.0).sum::<f64>() - s0.iter().map(|s| s.0).sum::<f64>();
    let mut paces: Vec<f64> = o0
        .iter()
        .zip(&o1)
        .filter_map(|(a, b)| Some((b.as_ref()? - a.as_ref()?) / dt))
        .collect();
    FfRun {
        streams,
        cpu_per_stream: cpu / dt / streams as f64,
        rss_total_kib: s1.iter().map(|s| s.1).sum(),
        pace_mean: mean(&paces),
        pace_min: percentile(&mut paces, 0.0),
    }
}

/// Outbox throughput through the library publisher: (events/s live, events/s draining).
pub fn outbox(dir: &Path, n: usize) -> (f64, f64) {
    use vqprobe::publish::mqtt::{MqttSettings, Publisher};
    use vqprobe::publish::spool::{Spool, SpoolOptions};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sample_event = {
        let text = r#"{"v":1,"id":"0123456789abcdef-1-start","defect_id":"0123456789abcdef-1","probe":"bench","stream":"s0","kind":"black","state":"start","start_s":5.0,"at":"2026-11-26T06:30:52.490Z","severity":"critical","metrics":{"black_ratio_min":1.0,"frames":51,"luma_mean_max":16.003}}"#;
        serde_json::from_str::<vqprobe::event::Event>(text).unwrap()
    };
    let run = |broker_first: bool, tag: &str| -> f64 {
        let mut broker = Broker::start(&dir.join(tag));
        if !broker_first {
            broker.stop();
        }
        let settings = MqttSettings {
            host: "127.0.0.1".into(),
            port: broker.port,
            tls: None,
            client_id: format!("bench-{tag}"),
            username: None,
            password: None,
            keepalive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            backoff_initial: 0.1,
            backoff_max: 0.5,
            prefix: "vqprobe".into(),
            probe_id: "bench".into(),
        };
        let spool = Spool::open(SpoolOptions::new(
            dir.join(tag).join("spool"),
            64 << 20,
            1 << 20,
        ))
        .unwrap();
        rt.block_on(async {
            let p =
                Publisher::start(settings, spool, b"online".to_vec(), b"offline".to_vec()).unwrap();
            let t0 = Instant::now();
            for i in 0..n {
                let mut e = sample_event.clone();
                e.id = format!("bench-{i}");
                p.event(&e);
                if i % 256 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let start = if broker_first {
                t0
            } else {
                // Everything is spooled; now the broker comes up and the spool drains.
                p.sync().await;
                broker.spawn();
                Instant::now()
            };
            loop {
                if p.stats().pending == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert!(
                    start.elapsed() < Duration::from_secs(300),
                    "outbox did not drain"
                );
            }
            let rate = n as f64 / start.elapsed().as_secs_f64();
            let _ = p
                .shutdown(b"offline".to_vec(), Duration::from_secs(2))
                .await;
            rate
        })
    };
    let live = run(true, "outbox-live");
    let drain = run(false, "outbox-drain");
    (live, drain)
}
