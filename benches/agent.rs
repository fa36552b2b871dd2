//! Agent-mode benchmark: writes the "Agent mode" section of `docs/PERFORMANCE.md`, one
//! `###` block per part (a run of some parts keeps the other blocks; the hand-written
//! interpretation block is never overwritten).
//!
//! Run with `cargo bench --bench agent`. Everything is a real process: a private
//! mosquitto on 127.0.0.1, `vqprobe run` (the bench-profile binary) watching N looped
//! file streams at real-time pace, a `mosquitto_sub` recording events and the per-stream
//! stats, and for comparison N `ffmpeg -re -stream_loop -1 -threads 1 … -vf
//! blackdetect,freezedetect -af silencedetect -f null -` processes, in the same run.
//! CPU is user + system time from `/proc/PID/stat` after a warm-up, RSS from
//! `/proc/PID/status`; media pace is media seconds analysed per wall second (the
//! stats' `media_s`, ffmpeg's `-progress`).
//!
//! Parts (`VQPROBE_BENCH_PARTS`, comma-separated; default all):
//! - `levels`: content (a) broadcast-like and (b) camera-like 720p25, N streams
//!   (`VQPROBE_BENCH_STREAMS`, 8) at `full`, `reference`, `key`, `auto`, `auto` without
//!   its syntax check (or the levels of `VQPROBE_BENCH_LEVELS`), `auto` with a defect
//!   every 30 s, and the ffmpeg chain, each for `VQPROBE_BENCH_AGENT_SECS` (300 s); plus
//!   event latency of the `auto` run of (a) with defects.
//! - `sides`: content (a) at 360p and 1080p, `full` and `auto` vs ffmpeg, each for
//!   `VQPROBE_BENCH_SIDE_SECS` (60 s).
//! - `capacity`: the most 720p25 (a) streams sustained in real time at `full` and at
//!   `auto` (N = 1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128 up to
//!   `VQPROBE_BENCH_CAPACITY_MAX` (128), each `VQPROBE_BENCH_CAPACITY_SECS`, 60 s), RSS
//!   per added stream at `auto`. `VQPROBE_BENCH_CAPACITY_LEVELS` (comma-separated)
//!   and `VQPROBE_BENCH_CAPACITY_MIN` (the lowest N) re-run part of the ladder.
//! - `soak`: RSS of N streams at `auto` over `VQPROBE_BENCH_SOAK_SECS` (600 s).
//! - `outbox`: events/s through the library `Publisher` into the broker, live and
//!   draining a spool.
//! - `fleet`: the same N streams at `auto` from the configuration file and from a fleet
//!   catalog (the agent its only member), interleaved, `VQPROBE_BENCH_FLEET_SECS` (60 s)
//!   each, twice; and the catalog handling alone (view, assignment, resolving entries)
//!   timed in-process for 10 000 entries and 100 members.

#[path = "common/doc.rs"]
mod doc;
#[path = "agent/media.rs"]
mod media;
#[path = "agent/procs.rs"]
mod procs;
#[path = "agent/runs.rs"]
mod runs;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use media::{Content, CLIP_SECS};
use procs::{clk_tck, loadavg, percentile, slope};
use runs::{AgentRun, FfRun};

const HEADING: &str = "## Agent mode";
const INTERPRETATION: &str = "### Interpretation (written by hand after the run)";
/// The `###` blocks of the section, in this order.
const BLOCKS: [&str; 8] = [
    "### Decode levels against ffmpeg, 720p25",
    "### 360p and 1080p",
    "### Capacity, 720p25 content (a)",
    "### Soak, `auto`",
    "### Event latency, `auto`",
    "### Outbox throughput",
    "### Fleet catalog",
    INTERPRETATION,
];
/// The levels measured; `auto+syntax=off` is `auto` without its syntax check (the
/// cheapest setting; see docs/events.md for what it cannot see).
const LEVELS: [&str; 5] = ["full", "reference", "key", "auto", "auto+syntax=off"];

/// The levels of the `levels` part: `VQPROBE_BENCH_LEVELS` (comma-separated, from
/// [`LEVELS`]), default all.
fn levels_wanted() -> Vec<&'static str> {
    match std::env::var("VQPROBE_BENCH_LEVELS") {
        Ok(v) => v
            .split(',')
            .map(str::trim)
            .map(|l| {
                LEVELS
                    .into_iter()
                    .find(|k| *k == l)
                    .unwrap_or_else(|| panic!("unknown level `{l}` (known: {LEVELS:?})"))
            })
            .collect(),
        Err(_) => LEVELS.to_vec(),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

fn mib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "—".into()
    } else {
        format!("{:.1}%", x * 100.0)
    }
}

fn pace(x: f64) -> String {
    if x.is_nan() {
        "—".into()
    } else if x < 0.95 {
        format!("**{x:.2} (behind)**")
    } else {
        format!("{x:.2}")
    }
}

/// Everything a part needs.
struct Ctx {
    bin: PathBuf,
    media_dir: PathBuf,
    scratch: PathBuf,
    tck: f64,
    streams: usize,
    nproc: usize,
}

impl Ctx {
    fn conditions(&self, secs_note: &str) -> String {
        format!(
            "vqprobe {}, {} cores, load average {} at the end of this part; {secs_note}.",
            vqprobe::VERSION,
            self.nproc,
            loadavg()
        )
    }
}

/// The rows of one content: each level, then ffmpeg.
fn level_table(
    out: &mut String,
    title: &str,
    runs: &[(String, AgentRun)],
    ff: &FfRun,
    nproc: usize,
) {
    writeln!(out, "{title}\n").unwrap();
    writeln!(
        out,
        "| | CPU per stream (share of one core) | vqprobe / ffmpeg | RSS, all streams (per stream) | media s / wall s, slowest (mean); lag at the end | pictures decoded | media time at full / reference / key | escalations / ring overflows / overload step-downs |"
    )
    .unwrap();
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |").unwrap();
    for (label, r) in runs {
        let d = &r.decode;
        let t: f64 = d.seconds.iter().sum();
        let share = |i: usize| {
            if t > 0.0 {
                format!("{:.0}%", d.seconds[i] / t * 100.0)
            } else {
                "—".into()
            }
        };
        let total = r.cpu_per_stream * r.streams as f64;
        let floor = if total >= nproc as f64 * 0.9 || r.pace_min < 0.95 {
            format!(" (saturated: {total:.2} cores; a floor)")
        } else {
            String::new()
        };
        writeln!(
            out,
            "| vqprobe {label} | {}{floor} | {:.2} | {} ({}) | {} ({:.2}); {:.1} s | {} | {} / {} / {} | {} / {} / {} |",
            pct(r.cpu_per_stream),
            r.cpu_per_stream / ff.cpu_per_stream,
            mib(r.rss_end_kib),
            mib(r.rss_end_kib / r.streams.max(1) as u64),
            pace(r.pace_min),
            r.pace_mean,
            r.lag_max,
            pct(d.share()),
            share(0),
            share(1),
            share(2),
            d.escalations,
            d.ring_overflows,
            d.step_downs
        )
        .unwrap();
    }
    let total = ff.cpu_per_stream * ff.streams as f64;
    let floor = if total >= nproc as f64 * 0.9 || ff.pace_min < 0.95 {
        format!(" (saturated: {total:.2} cores; a floor)")
    } else {
        String::new()
    };
    writeln!(
        out,
        "| ffmpeg chain, {} processes | {}{floor} | 1 | {} ({}) | {} ({:.2}) | 100% | — | — |",
        ff.streams,
        pct(ff.cpu_per_stream),
        mib(ff.rss_total_kib),
        mib(ff.rss_total_kib / ff.streams.max(1) as u64),
        pace(ff.pace_min),
        ff.pace_mean
    )
    .unwrap();
    for (label, what) in [
        ("`auto`", "`auto` (default syntax check)"),
        (
            "`auto`, `syntax_check = \"off\"`",
            "`auto`, `syntax_check = \"off\"`",
        ),
    ] {
        if let Some((_, auto)) = runs.iter().find(|r| r.0 == label) {
            let ratio = auto.cpu_per_stream / ff.cpu_per_stream;
            writeln!(
                out,
                "\nTarget: CPU per stream at {what} ≤ 1/3 of ffmpeg's: {:.2} ({}).",
                ratio,
                if ratio <= 1.0 / 3.0 { "met" } else { "NOT MET" }
            )
            .unwrap();
        }
    }
}

fn part_levels(ctx: &Ctx, secs: u64, latency: &mut Option<(AgentRun, &'static str)>) -> String {
    let mut out = String::from("### Decode levels against ffmpeg, 720p25\n\n");
    writeln!(
        out,
        "{} streams of each content, looped at real-time pace (`pace = \"realtime\"`, \
         `loop = true`), at each level (`[detect.decode] level`) and as the ffmpeg chain, \
         {secs} s each in turn; CPU and pace measured after a {} s warm-up. The clips \
         ({CLIP_SECS} s) have nothing to report, except the row \"`auto`, a defect every \
         {CLIP_SECS} s\": the same content with a black picture at 5–8 s and silence at \
         15–18 s, so `auto` escalates (and the ring is decoded again) once per loop and \
         each stream emits four events per loop. \"pictures decoded\" and the time per \
         level are the streams' own stats (`decode` on the stats topic, summed over the \
         streams, whole run); the lag is how far the furthest-behind stream's media trails \
         the wall clock at the end (start-up included).\n",
        ctx.streams,
        runs::warm_up(secs).as_secs()
    )
    .unwrap();
    for content in [Content::Broadcast, Content::Camera] {
        let clip = media::ensure(&ctx.media_dir, content, 720, false);
        let mut rs = Vec::new();
        for level in levels_wanted() {
            eprintln!(
                "levels: {} 720p, {level}, {} streams, {secs} s",
                content.tag(),
                ctx.streams
            );
            let r = runs::agent(
                &ctx.bin,
                &clip,
                &ctx.scratch
                    .join(format!("levels-{}-{level}", content.tag())),
                ctx.streams,
                level,
                secs,
                ctx.tck,
            );
            let label = match level.split_once("+syntax=") {
                Some((l, sc)) => format!("`{l}`, `syntax_check = \"{sc}\"`"),
                None => format!("`{level}`"),
            };
            rs.push((label, r));
        }
        let defects = media::ensure(&ctx.media_dir, content, 720, true);
        eprintln!("levels: {} 720p with defects, auto", content.tag());
        let r = runs::agent(
            &ctx.bin,
            &defects,
            &ctx.scratch
                .join(format!("levels-{}-auto-defects", content.tag())),
            ctx.streams,
            "auto",
            secs,
            ctx.tck,
        );
        if content == Content::Broadcast {
            *latency = Some((
                r.clone(),
                "the `levels` part's run of content (a) with a defect every 30 s",
            ));
        }
        rs.push((format!("`auto`, a defect every {CLIP_SECS} s"), r));
        eprintln!("levels: {} 720p, ffmpeg", content.tag());
        let ff = runs::ffmpeg(
            &clip,
            &ctx.scratch.join(format!("ff-{}", content.tag())),
            ctx.streams,
            secs,
            ctx.tck,
        );
        level_table(
            &mut out,
            &format!("**{}**", content.describe(720)),
            &rs,
            &ff,
            ctx.nproc,
        );
        out.push('\n');
    }
    out.push_str(&ctx.conditions(&format!("{secs} s per run")));
    out.push('\n');
    out
}

fn part_sides(ctx: &Ctx, secs: u64) -> String {
    let mut out = String::from("### 360p and 1080p\n\n");
    writeln!(
        out,
        "Content (a) only (nothing to report in the clip), {} streams, `full` and `auto` \
         against the ffmpeg chain, {secs} s each (warm-up {} s).\n",
        ctx.streams,
        runs::warm_up(secs).as_secs()
    )
    .unwrap();
    for height in [360, 1080] {
        let clip = media::ensure(&ctx.media_dir, Content::Broadcast, height, false);
        let mut rs = Vec::new();
        for level in ["full", "auto"] {
            eprintln!("sides: {height}p, {level}");
            rs.push((
                format!("`{level}`"),
                runs::agent(
                    &ctx.bin,
                    &clip,
                    &ctx.scratch.join(format!("side-{height}-{level}")),
                    ctx.streams,
                    level,
                    secs,
                    ctx.tck,
                ),
            ));
        }
        eprintln!("sides: {height}p, ffmpeg");
        let ff = runs::ffmpeg(
            &clip,
            &ctx.scratch.join(format!("ff-{height}")),
            ctx.streams,
            secs,
            ctx.tck,
        );
        level_table(
            &mut out,
            &format!("**{}**", Content::Broadcast.describe(height)),
            &rs,
            &ff,
            ctx.nproc,
        );
        out.push('\n');
    }
    out.push_str(&ctx.conditions(&format!("{secs} s per run")));
    out.push('\n');
    out
}

fn part_capacity(ctx: &Ctx, secs: u64, max: usize) -> String {
    let clip = media::ensure(&ctx.media_dir, Content::Broadcast, 720, false);
    let min = env_u64("VQPROBE_BENCH_CAPACITY_MIN", 1) as usize;
    let ladder: Vec<usize> = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128]
        .into_iter()
        .filter(|&n| n <= max && n >= min)
        .collect();
    let mut out = String::from("### Capacity, 720p25 content (a)\n\n");
    writeln!(
        out,
        "N streams for {secs} s each (warm-up {} s), N = {} upward until a step does not \
         sustain: \"sustains\" = every stream's media seconds analysed ≥ 0.95 × wall seconds \
         after the warm-up, its media at most {} s behind the wall clock at the end \
         (start-up included), and no packet dropped (stats `dropped.queue_full` + \
         `until_key_frame`). A file source waits for room in the queue rather than dropping, \
         so falling behind shows as pace below 1 and a growing lag. The clip has nothing to \
         report (steady state). The ladder also stops before a step whose RSS, extrapolated \
         from the last one, would exceed half of `MemAvailable`.\n",
        runs::warm_up(secs).as_secs(),
        ladder
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        runs::MAX_LAG_S,
    )
    .unwrap();
    writeln!(
        out,
        "| level | N | CPU, all streams (cores) | RSS at the end | media s / wall s, slowest | lag at the end | dropped | pictures decoded | sustains |"
    )
    .unwrap();
    writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    const CAP_LEVELS: [&str; 3] = ["full", "auto", "auto+syntax=off"];
    let mut best = [0usize; 3];
    let mut stopped = [None::<usize>; 3];
    let mut rss_points = [Vec::new(), Vec::new(), Vec::new()];
    // `VQPROBE_BENCH_CAPACITY_LEVELS`: a subset to run (a re-run of one level).
    let only = std::env::var("VQPROBE_BENCH_CAPACITY_LEVELS").ok();
    for (li, level) in CAP_LEVELS.into_iter().enumerate() {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x.trim() == level))
        {
            continue;
        }
        let mut last_rss: Option<(usize, u64)> = None;
        for &n in &ladder {
            if let (Some((n0, r0)), Some(avail)) = (last_rss, mem_available_kib()) {
                if r0 / n0 as u64 * n as u64 > avail / 2 {
                    stopped[li] = Some(n);
                    break;
                }
            }
            eprintln!("capacity: {level}, {n} streams, {secs} s");
            let r = runs::agent(
                &ctx.bin,
                &clip,
                &ctx.scratch.join(format!("cap-{level}-{n}")),
                n,
                level,
                secs,
                ctx.tck,
            );
            let ok = r.sustains();
            writeln!(
                out,
                "| `{level}` | {n} | {:.2} | {} | {} | {:.1} s | {} | {} | {} |",
                r.cpu_per_stream * n as f64,
                mib(r.rss_end_kib),
                pace(r.pace_min),
                r.lag_max,
                r.dropped,
                pct(r.decode.share()),
                if ok { "yes" } else { "**no**" }
            )
            .unwrap();
            rss_points[li].push((n as f64, r.rss_end_kib as f64 / 1024.0));
            last_rss = Some((n, r.rss_end_kib));
            if !ok {
                break;
            }
            best[li] = n;
        }
    }
    let top = ladder.last().copied().unwrap_or(0);
    // A level that never failed is only known to be at least its last step.
    let open = |li: usize| best[li] == top || stopped[li].is_some();
    let said = |li: usize| {
        let n = best[li];
        match stopped[li] {
            Some(m) => format!("≥ {n} (stopped before {m}: memory)"),
            None if n == top => format!("≥ {n} (the top of the ladder)"),
            None => n.to_string(),
        }
    };
    for li in [1, 2] {
        let verdict = if best[0] > 0 && best[li] >= 5 * best[0] {
            "met"
        } else if open(li) {
            "not decided: raise `VQPROBE_BENCH_CAPACITY_MAX`"
        } else {
            "NOT MET"
        };
        let rss_slope = slope(&rss_points[li]);
        writeln!(
            out,
            "\nCapacity: `full` {}, `{}` {} streams (target ≥ 5× `full`: {verdict}). RSS \
             per added stream there (least-squares slope of the RSS at the end over N, {} \
             points): {:.1} MiB (target ≤ 12 MiB at 720p: {}).",
            said(0),
            CAP_LEVELS[li],
            said(li),
            rss_points[li].len(),
            rss_slope,
            if rss_slope <= 12.0 { "met" } else { "NOT MET" }
        )
        .unwrap();
    }
    let full_slope = slope(&rss_points[0]);
    writeln!(
        out,
        "RSS per added stream at `full`: {full_slope:.1} MiB ({} points).\n",
        rss_points[0].len()
    )
    .unwrap();
    out.push_str(&ctx.conditions(&format!("{secs} s per step")));
    out.push('\n');
    out
}

fn part_soak(ctx: &Ctx, secs: u64) -> (String, AgentRun) {
    let clip = media::ensure(&ctx.media_dir, Content::Broadcast, 720, true);
    eprintln!("soak: auto, {} streams, {secs} s", ctx.streams);
    let r = runs::agent(
        &ctx.bin,
        &clip,
        &ctx.scratch.join("soak"),
        ctx.streams,
        "auto",
        secs,
        ctx.tck,
    );
    let mut out = String::from("### Soak, `auto`\n\n");
    let half = r
        .rss_series
        .iter()
        .find(|(t, _)| *t >= secs / 2)
        .map_or(r.rss_start_kib, |p| p.1);
    let grew = r.rss_end_kib as f64 > r.rss_start_kib as f64 * 1.10;
    writeln!(
        out,
        "{} streams of 720p25 content (a) with a defect every {CLIP_SECS} s (a black picture \
         at 5–8 s, silence at 15–18 s: `auto` escalates and decodes its ring once per loop) \
         at `auto` for {secs} s. RSS after the warm-up \
         ({} s) {}, at half time {}, at the end {} (max {}): {} over the run, {} over the \
         second half; CPU per stream {}, slowest stream's pace {}. Flat: {}.\n",
        ctx.streams,
        runs::warm_up(secs).as_secs(),
        mib(r.rss_start_kib),
        mib(half),
        mib(r.rss_end_kib),
        mib(r.rss_max_kib),
        signed_mib(r.rss_end_kib as i64 - r.rss_start_kib as i64),
        signed_mib(r.rss_end_kib as i64 - half as i64),
        pct(r.cpu_per_stream),
        pace(r.pace_min),
        if grew {
            "NO (grew more than 10%)"
        } else {
            "yes (within 10% of the post-warm-up RSS)"
        }
    )
    .unwrap();
    writeln!(
        out,
        "RSS over the soak (seconds: MiB): {}.\n",
        r.rss_series
            .iter()
            .map(|(t, k)| format!("{t}: {:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    out.push_str(&ctx.conditions(&format!("{secs} s")));
    out.push('\n');
    (out, r)
}

/// `MemAvailable` of `/proc/meminfo`, KiB.
fn mem_available_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn signed_mib(k: i64) -> String {
    format!("{:+.1} MiB", k as f64 / 1024.0)
}

fn part_latency(ctx: &Ctx, r: &AgentRun, which: &str) -> String {
    let mut lat = r.lat_ms.clone();
    let n = lat.len();
    let p50 = percentile(&mut lat, 0.5);
    let p95 = percentile(&mut lat, 0.95);
    let pmax = percentile(&mut lat, 1.0);
    let mut out = String::from("### Event latency, `auto`\n\n");
    writeln!(
        out,
        "From {which} (`{}`, content (a) 720p25, {} streams, {} s): events emitted (agent log) / \
         received by the subscriber {} / {}; latency from an event's `at` (taken when the \
         defect is confirmed) to its arrival at `mosquitto_sub`, median / p95 / max over {n}: \
         {p50:.0} / {p95:.0} / {pmax:.0} ms (target ≤ 500 ms on loopback: {}).\n",
        r.level,
        r.streams,
        r.secs,
        r.logged,
        r.received,
        if p95 <= 500.0 {
            "met at p95"
        } else {
            "NOT MET at p95"
        }
    )
    .unwrap();
    out.push_str(&ctx.conditions(&format!("{} s", r.secs)));
    out.push('\n');
    out
}

fn part_outbox(ctx: &Ctx) -> String {
    eprintln!("outbox throughput");
    let (live, drain) = runs::outbox(&ctx.scratch, 20_000);
    let mut out = String::from("### Outbox throughput\n\n");
    writeln!(
        out,
        "The library's `Publisher` (spool on disk, 32 in flight) and a private mosquitto:\n\n\
         | | events/s |\n| --- | --- |\n\
         | outbox into mosquitto, broker up (20 000 events, each fsync-batched and PUBACKed) | {live:.0} |\n\
         | outbox drain after an outage (20 000 spooled events) | {drain:.0} |\n"
    )
    .unwrap();
    out.push_str(&ctx.conditions("20 000 events each way"));
    out.push('\n');
    out
}

fn part_fleet(ctx: &Ctx, secs: u64) -> String {
    let clip = media::ensure(&ctx.media_dir, Content::Broadcast, 720, false);
    let n = ctx.streams;
    let mut rows = Vec::new();
    // Interleaved (file, catalog, file, catalog): drift in the machine's load hits both.
    for round in 0..2 {
        for fleet in [false, true] {
            eprintln!(
                "fleet part: round {round}, streams from the {}",
                if fleet { "catalog" } else { "file" }
            );
            let r = runs::agent_with(
                &ctx.bin,
                &clip,
                &ctx.scratch.join("fleet"),
                n,
                "auto",
                secs,
                ctx.tck,
                fleet,
            );
            rows.push((fleet, r));
        }
    }
    let mut out = String::from("### Fleet catalog\n\n");
    writeln!(
        out,
        "{n} streams of content (a) 720p25 at `auto`, from the configuration file or from a \
         fleet catalog on the broker with the agent its only member (`settle = \"0s\"`), \
         {secs} s each, interleaved:\n\n\
         | round | streams from | CPU per stream | RSS end | pace (min) | reporting |\n\
         | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    for (i, (fleet, r)) in rows.iter().enumerate() {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}/{} |",
            i / 2 + 1,
            if *fleet { "catalog" } else { "file" },
            pct(r.cpu_per_stream),
            mib(r.rss_end_kib),
            pace(r.pace_min),
            r.reporting,
            r.streams
        )
        .unwrap();
    }
    let mean = |fleet: bool| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|(f, _)| *f == fleet)
            .map(|(_, r)| r.cpu_per_stream)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    writeln!(
        out,
        "\nMean CPU per stream: file {}, catalog {} (difference {:+.2} points of a core).\n",
        pct(mean(false)),
        pct(mean(true)),
        (mean(true) - mean(false)) * 100.0
    )
    .unwrap();
    let (ingest, assign, resolve) = catalog_micro(10_000, 100);
    writeln!(
        out,
        "The catalog handling alone, in-process, 10 000 entries and 100 members: taking the \
         retained entries into the view {ingest:.2} µs per entry, one assignment over the \
         whole view {assign:.1} ms, resolving an entry into a stream plan {resolve:.2} µs. \
         It runs once per catalog or membership change, never per picture.\n"
    )
    .unwrap();
    out.push_str(&ctx.conditions(&format!("{secs} s per run")));
    out.push('\n');
    out
}

/// In-process timings (µs per entry, ms per assignment, µs per entry) of the fleet
/// catalog's handling for `entries` entries and `members` members.
fn catalog_micro(entries: usize, members: usize) -> (f64, f64, f64) {
    use std::time::Instant;
    use vqprobe::app::fleet::assign::{assign, Member};
    use vqprobe::app::fleet::view::View;
    use vqprobe::publish::mqtt::Incoming;
    let t0 = Instant::now();
    let mut view = View::new(
        "vqprobe",
        "bench",
        "m0",
        100,
        std::time::Duration::ZERO,
        entries,
        t0,
    );
    view.resubscribed(t0);
    let msgs: Vec<Incoming> = (0..entries)
        .map(|i| Incoming {
            topic: format!("vqprobe/fleet/bench/streams/s{i}"),
            payload: format!(
                r#"{{"id":"s{i}","url":"rtsp://10.0.{}.{}/stream1"}}"#,
                i / 250,
                i % 250
            )
            .into_bytes(),
            retained: true,
        })
        .collect();
    let t = Instant::now();
    for m in &msgs {
        view.on_message(m, t0);
    }
    let ingest = t.elapsed().as_secs_f64() * 1e6 / entries as f64;
    let ms: Vec<Member> = (0..members)
        .map(|i| Member {
            id: format!("m{i}"),
            capacity: 200,
        })
        .collect();
    let ids = view.stream_ids();
    let t = Instant::now();
    let a = assign(&ids, &ms, 1);
    let assign_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(a.placed.len(), entries);
    let cfg =
        "probe_id = \"m0\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[fleet]\nname = \"bench\"\n";
    let loaded =
        vqprobe::app::agent::config::parse(Path::new("bench.toml"), cfg).expect("bench config");
    let t = Instant::now();
    for id in &ids {
        if let Some(Ok(e)) = view.entry(id).map(|e| &e.parsed) {
            loaded.plan_entry(e).expect("valid entry");
        }
    }
    let resolve = t.elapsed().as_secs_f64() * 1e6 / entries as f64;
    (ingest, assign_ms, resolve)
}

const INTRO: &str = "Produced by `cargo bench --bench agent` (source: `benches/agent.rs` and \
`benches/agent/`); each block below is one part of it (`VQPROBE_BENCH_PARTS`) and says how \
long it ran and under which load. Streams are MPEG-TS files looped at real-time pace \
inside `vqprobe run`, published to a private mosquitto on 127.0.0.1; the ffmpeg chain \
is `ffmpeg -re -stream_loop -1 -threads 1 -i CLIP -vf blackdetect,freezedetect -af \
silencedetect -f null -`, one process per stream, run in turn in the same benchmark. \
CPU is user + system time of the processes (`/proc/PID/stat`), as a share of one core; \
it is not the machine's idle time, so other load on the box changes it little unless \
the cores are saturated (then the figure is a floor and the media falls behind the \
wall clock, shown in bold).";

/// Writes one block (its first line is its heading) into `docs/PERFORMANCE.md`.
fn write_block(text: &str) {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/PERFORMANCE.md");
    let old = std::fs::read_to_string(&doc_path).ok();
    let mut doc = doc::splice_sub(old, HEADING, INTRO, &BLOCKS, text);
    if !doc.contains(INTERPRETATION) {
        doc = doc::splice_sub(
            Some(doc),
            HEADING,
            INTRO,
            &BLOCKS,
            &format!(
                "{INTERPRETATION}\n\n**TO BE WRITTEN BY THE LEAD after the full-length run.** \
                 The benchmark keeps this block as it is.\n"
            ),
        );
    }
    std::fs::write(&doc_path, doc).unwrap();
    println!("{text}");
}

fn main() {
    let parts_env = std::env::var("VQPROBE_BENCH_PARTS")
        .unwrap_or_else(|_| "levels,sides,capacity,soak,outbox,fleet".into());
    let parts: Vec<&str> = parts_env.split(',').map(str::trim).collect();
    let known = ["levels", "sides", "capacity", "soak", "outbox", "fleet"];
    for p in &parts {
        assert!(
            known.contains(p),
            "unknown part `{p}` in VQPROBE_BENCH_PARTS (known: {known:?})"
        );
    }
    let has = |p: &str| parts.contains(&p);
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let scratch = std::env::temp_dir().join(format!("vqprobe-bench-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let ctx = Ctx {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_vqprobe")),
        media_dir: target.join("bench-media"),
        scratch: scratch.clone(),
        tck: clk_tck(),
        streams: env_u64("VQPROBE_BENCH_STREAMS", 8).max(1) as usize,
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    };
    let mut latency = None;
    if has("levels") {
        let secs = env_u64("VQPROBE_BENCH_AGENT_SECS", 300).max(10);
        let text = part_levels(&ctx, secs, &mut latency);
        write_block(&text);
    }
    if has("sides") {
        let secs = env_u64("VQPROBE_BENCH_SIDE_SECS", 60).max(10);
        write_block(&part_sides(&ctx, secs));
    }
    if has("capacity") {
        let secs = env_u64("VQPROBE_BENCH_CAPACITY_SECS", 60).max(10);
        let max = env_u64("VQPROBE_BENCH_CAPACITY_MAX", 128) as usize;
        write_block(&part_capacity(&ctx, secs, max));
    }
    if has("soak") {
        let secs = env_u64("VQPROBE_BENCH_SOAK_SECS", 600).max(20);
        let (text, run) = part_soak(&ctx, secs);
        write_block(&text);
        // The latency of the `levels` part's `auto` run, else of the soak.
        latency.get_or_insert((run, "the soak"));
    }
    if let Some((r, which)) = &latency {
        write_block(&part_latency(&ctx, r, which));
    }
    if has("outbox") {
        write_block(&part_outbox(&ctx));
    }
    if has("fleet") {
        let secs = env_u64("VQPROBE_BENCH_FLEET_SECS", 60).max(20);
        write_block(&part_fleet(&ctx, secs));
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
