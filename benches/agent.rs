//! Agent-mode benchmark: writes the "Agent mode" section of `docs/PERFORMANCE.md`.
//!
//! Run with `cargo bench --bench agent`. `VQPROBE_BENCH_AGENT_SECS` sets the soak length
//! (default 600 s), `VQPROBE_BENCH_STREAMS` the stream count (default 8).
//!
//! 1. **Soak**: a private mosquitto on 127.0.0.1, a `mosquitto_sub` recording every
//!    event with its arrival time (`%U`), and `vqprobe run` (the bench-profile binary)
//!    watching N looped 720p25 file streams at real-time pace. The clip (30 s, libx264
//!    High with B-frames, AAC) has a black picture at 5–8 s and silence at 15–18 s, so
//!    every stream emits four events per loop. Every 10 s the agent's CPU time
//!    (`/proc/PID/stat`) and RSS (`/proc/PID/status`) are sampled. Reported: CPU per
//!    stream, RSS after warm-up (30 s) and at the end, events sent vs received, and the
//!    latency from an event's creation (its `at`, taken when the defect is confirmed) to
//!    its arrival at the subscriber.
//! 2. **ffmpeg side by side**: N `ffmpeg -re -stream_loop -1 -threads 1` processes with
//!    blackdetect, freezedetect and silencedetect on the same clip, for 60 s: CPU per
//!    stream and total RSS.
//! 3. **Outbox throughput**: the library's `Publisher` (spool on disk) pushes 20 000
//!    events of ~450 bytes into the broker; reported: events/s until every PUBACK is in,
//!    with the broker up, and the drain rate of a spool filled while the broker was down.

#[path = "common/doc.rs"]
mod doc;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

const CLIP_SECS: u32 = 30;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ensure_clip(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("agent_720p25_30s_black5-8_silence15-18.ts");
    if path.exists() {
        return path;
    }
    eprintln!("making {} ...", path.display());
    let tmp = path.with_extension("part.ts");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-t", &CLIP_SECS.to_string(), "-map", "0:v", "-map", "1:a"])
        .args(["-vf", "drawbox=c=black:t=fill:enable='between(t,5,8)'"])
        .args(["-af", "volume=0:enable='between(t,15,18)'"])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "high",
            "-preset",
            "medium",
            "-bf",
            "3",
        ])
        .args([
            "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
        ])
        .args(["-f", "mpegts"])
        .arg(&tmp)
        .status()
        .expect("ffmpeg");
    assert!(st.success(), "ffmpeg failed");
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (user + system CPU seconds, RSS KiB) of a process.
fn sample(pid: u32, tck: f64) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tck;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, rss))
}

struct Broker {
    child: Child,
    port: u16,
    conf: PathBuf,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nmax_queued_messages 100000\nlog_dest none\n"
            ),
        )
        .unwrap();
        let mut b = Broker {
            child: Command::new("true").spawn().unwrap(),
            port,
            conf,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        self.child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("mosquitto did not start");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Messages received: (arrival unix seconds, payload).
type Received = Arc<Mutex<Vec<(f64, String)>>>;

/// `mosquitto_sub` recording what arrives.
fn subscribe(port: u16, topic: &str) -> (Child, Received) {
    let mut child = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .args(["-F", "%U\t%p"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    let out = child.stdout.take().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some((t, p)) = line.split_once('\t') {
                if let Ok(t) = t.parse::<f64>() {
                    g.lock().unwrap().push((t, p.to_string()));
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    (child, got)
}

fn rfc3339_secs(s: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs_f64())
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

struct Soak {
    cpu_per_stream: f64,
    rss_start_kib: u64,
    rss_end_kib: u64,
    rss_max_kib: u64,
    rss_series: Vec<(u64, u64)>,
    logged: usize,
    received: usize,
    lat_ms: Vec<f64>,
}

fn soak(bin: &Path, clip: &Path, dir: &Path, streams: usize, secs: u64, tck: f64) -> Soak {
    let broker = Broker::start(dir);
    let (mut sub, got) = subscribe(broker.port, "vqprobe/+/+/events");
    let mut cfg = format!(
        "probe_id = \"bench\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[spool]\ndir = \"{}\"\n",
        broker.port,
        dir.join("spool").display()
    );
    for i in 0..streams {
        write!(
            cfg,
            "[[streams]]\nid = \"s{i}\"\nurl = \"file://{}\"\npace = \"realtime\"\nloop = true\n",
            clip.display()
        )
        .unwrap();
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
    let warm = Duration::from_secs(30.min(secs / 4).max(5));
    let mut series = Vec::new();
    let mut first: Option<(f64, u64, Instant)> = None;
    let mut last = (0.0, 0u64, t0);
    let mut rss_max = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(
            Duration::from_secs(10)
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
            first = Some((cpu, rss, now));
        }
        last = (cpu, rss, now);
        eprintln!(
            "t={:>4}s rss={} KiB cpu={cpu:.1}s",
            t0.elapsed().as_secs(),
            rss
        );
    }
    let (c0, r0, i0) = first.expect("soak shorter than the warm-up");
    let cpu_per_stream = (last.0 - c0) / last.2.duration_since(i0).as_secs_f64() / streams as f64;
    // Stop cleanly so every event is flushed, then let the subscriber catch up.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = agent.wait();
    std::thread::sleep(Duration::from_secs(1));
    let _ = sub.kill();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let logged = text.lines().filter(|l| l.contains(" event ")).count();
    let got = got.lock().unwrap().clone();
    let mut ids = std::collections::HashSet::new();
    let mut lat = Vec::new();
    for (arr, payload) in &got {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) else {
            continue;
        };
        if !ids.insert(v["id"].as_str().unwrap_or("").to_string()) {
            continue;
        }
        // Shutdown ends are made at SIGTERM, not at a confirmation: leave them out.
        if v["reason"].is_string() {
            continue;
        }
        if let Some(at) = v["at"].as_str().and_then(rfc3339_secs) {
            lat.push((arr - at) * 1000.0);
        }
    }
    Soak {
        cpu_per_stream,
        rss_start_kib: r0,
        rss_end_kib: last.1,
        rss_max_kib: rss_max,
        rss_series: series,
        logged,
        received: ids.len(),
        lat_ms: lat,
    }
}

/// N ffmpeg processes doing the same job for `secs`: (CPU per stream, total RSS KiB).
fn ffmpeg_side(clip: &Path, streams: usize, secs: u64, tck: f64) -> (f64, u64) {
    let mut kids: Vec<Child> = (0..streams)
        .map(|_| {
            Command::new("ffmpeg")
                .args([
                    "-hide_banner",
                    "-nostats",
                    "-loglevel",
                    "error",
                    "-threads",
                    "1",
                ])
                .args(["-re", "-stream_loop", "-1", "-i"])
                .arg(clip)
                .args([
                    "-vf",
                    "blackdetect=d=2,freezedetect=d=2",
                    "-af",
                    "silencedetect=d=2",
                ])
                .args(["-f", "null", "-"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("ffmpeg")
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let s0: Vec<(f64, u64)> = kids.iter().filter_map(|k| sample(k.id(), tck)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let s1: Vec<(f64, u64)> = kids.iter().filter_map(|k| sample(k.id(), tck)).collect();
    let dt = t0.elapsed().as_secs_f64();
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    let cpu: f64 = s1.iter().map(|s| s.0).sum::<f64>() - s0.iter().map(|s| s.0).sum::<f64>();
    let rss: u64 = s1.iter().map(|s| s.1).sum();
    (cpu / dt / streams as f64, rss)
}

/// Outbox throughput through the library publisher: (events/s live, events/s draining).
fn outbox(dir: &Path, n: usize) -> (f64, f64) {
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let secs: u64 = std::env::var("VQPROBE_BENCH_AGENT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let streams: usize = std::env::var("VQPROBE_BENCH_STREAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vqprobe"));
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let media = ensure_clip(&target.join("bench-media"));
    let scratch = std::env::temp_dir().join(format!("vqprobe-bench-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let tck = clk_tck();
    let load_start = loadavg();
    let commit = vqprobe::VERSION;
    eprintln!("soak: {streams} streams for {secs} s");
    let mut s = soak(&bin, &media, &scratch, streams, secs, tck);
    eprintln!("ffmpeg side by side: 60 s");
    let (ff_cpu, ff_rss) = ffmpeg_side(&media, streams, 60, tck);
    eprintln!("outbox throughput");
    let (live, drain) = outbox(&scratch, 20_000);
    let load_end = loadavg();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let n_lat = s.lat_ms.len();
    let p50 = percentile(&mut s.lat_ms, 0.5);
    let p95 = percentile(&mut s.lat_ms, 0.95);
    let pmax = percentile(&mut s.lat_ms, 1.0);
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    let mut out = String::new();
    writeln!(out, "## Agent mode\n").unwrap();
    writeln!(
        out,
        "Produced by `cargo bench --bench agent` (source: `benches/agent.rs`) with vqprobe {commit}, \
         on {nproc} cores, load average {load_start} at start and {load_end} at the end. \
         {streams} looped 720p25 file streams (libx264 High, B-frames, AAC; {CLIP_SECS} s clip with a \
         black picture at 5–8 s and silence at 15–18 s, so four events per stream per loop) at \
         real-time pace, published to a private mosquitto on 127.0.0.1, for {secs} s. ffmpeg ran \
         the same clip with blackdetect, freezedetect and silencedetect, one single-threaded \
         process per stream (`-re -stream_loop -1 -threads 1`), for 60 s in the same run.\n"
    )
    .unwrap();
    writeln!(out, "| | vqprobe agent | ffmpeg (N processes) |").unwrap();
    writeln!(out, "| --- | --- | --- |").unwrap();
    writeln!(
        out,
        "| CPU per stream (user + system, share of one core) | {:.1}% | {:.1}% |",
        s.cpu_per_stream * 100.0,
        ff_cpu * 100.0
    )
    .unwrap();
    writeln!(
        out,
        "| RSS, {streams} streams: after warm-up → at the end (max) | {} → {} ({}) | {} |",
        mib(s.rss_start_kib),
        mib(s.rss_end_kib),
        mib(s.rss_max_kib),
        mib(ff_rss)
    )
    .unwrap();
    writeln!(
        out,
        "| events emitted / received by the subscriber | {} / {} | — |",
        s.logged, s.received
    )
    .unwrap();
    writeln!(
        out,
        "| latency, defect confirmed → subscriber (median / p95 / max over {n_lat}) | {p50:.0} / {p95:.0} / {pmax:.0} ms | — |"
    )
    .unwrap();
    writeln!(
        out,
        "| outbox into mosquitto, broker up (20 000 events, each fsync-batched and PUBACKed) | {live:.0} events/s | — |"
    )
    .unwrap();
    writeln!(
        out,
        "| outbox drain after an outage (20 000 spooled events) | {drain:.0} events/s | — |"
    )
    .unwrap();
    writeln!(
        out,
        "\nRSS over the soak (seconds: MiB): {}.",
        s.rss_series
            .iter()
            .map(|(t, r)| format!("{t}: {:.1}", *r as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    let grew = s.rss_end_kib as f64 > s.rss_start_kib as f64 * 1.10;
    writeln!(
        out,
        "\nTargets: RSS must not grow ({}); latency ≤ 500 ms on loopback ({}).",
        if grew {
            "NOT MET: grew more than 10%"
        } else {
            "met"
        },
        if p95 <= 500.0 {
            "met at p95"
        } else {
            "NOT MET at p95"
        }
    )
    .unwrap();
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/PERFORMANCE.md");
    let doc = doc::splice(
        std::fs::read_to_string(&doc_path).ok(),
        "## Agent mode",
        &out,
    );
    std::fs::write(&doc_path, doc).unwrap();
    println!("{out}");
    let _ = std::fs::remove_dir_all(&scratch);
}
