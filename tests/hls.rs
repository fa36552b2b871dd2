//! HLS ingest against real peers on 127.0.0.1 (tests/peers/hls_server.py serving renditions
//! made by ffmpeg, and ffmpeg writing a live sliding window): VOD over TS and fMP4 gives the
//! same picture/sound intervals as the file, and the delivery defects come out as pairs with
//! their evidence. Driven through the library (`app::session::run`: the HLS source → its
//! sink → the decode thread), the way `check` runs a live source.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::peers::{make_hls, make_test_ca, HlsServer, LiveHls, TempDir};
use common::*;
use serde_json::{json, Value};
use vqprobe::app::session::{self, SessionSpec};
use vqprobe::ingest::hls::{HlsOptions, VariantChoice};
use vqprobe::ingest::live::LiveConfig;
use vqprobe::ingest::sink::LiveStats;
use vqprobe::ingest::source::SourceOptions;
use vqprobe::shutdown::Shutdown;

const TOL: f64 = 0.5;

/// VOD renditions of the ground-truth clip with black 2-5 s, freeze 8-11 s, silence 14-17 s.
fn renditions() -> PathBuf {
    let out = media_dir()
        .parent()
        .expect("media dir has a parent")
        .join("test-hls-multi");
    make_hls(&out, &media_dir().join("multi_main_360p.ts"));
    out
}

fn expected() -> Vec<(String, f64, f64)> {
    vec![
        ("black".into(), 2.0, 5.0),
        ("freeze".into(), 8.0, 11.0),
        ("silence".into(), 14.0, 17.0),
    ]
}

/// Runs the HLS source through a session (as `check` does: the same source contract,
/// sink, queue and decode thread) for at most `secs` (wall clock); returns the events as
/// JSON and the sink's counters.
fn run_hls(input: &str, opts: HlsOptions, cfg: LiveConfig, secs: f64) -> (Vec<Value>, LiveStats) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut spec = SessionSpec::new(input, "test", "hls");
        spec.live = cfg;
        spec.source = SourceOptions {
            hls: opts,
            duration: Some(secs),
            ..SourceOptions::default()
        };
        let (_stop, shutdown) = Shutdown::new();
        let mut events = vec![];
        let report = session::run(&spec, shutdown, None, &mut |e| events.push(e))
            .await
            .expect("HLS session");
        let events = events
            .iter()
            .map(|e| serde_json::from_str(&e.to_json()).unwrap())
            .collect();
        (events, report.live.expect("HLS is a live source"))
    })
}

fn of_kind<'a>(ends: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ends.iter().filter(|e| e["kind"] == kind).collect()
}

fn is_delivery(kind: &str) -> bool {
    matches!(
        kind,
        "stall"
            | "source_down"
            | "packet_loss"
            | "playlist_stale"
            | "segment_error"
            | "slow_download"
            | "ts_error"
            | "probe_overload"
    )
}

/// Media (picture and sound) ends only.
fn media_ends(ends: &[Value]) -> Vec<Value> {
    ends.iter()
        .filter(|e| !is_delivery(e["kind"].as_str().unwrap()))
        .cloned()
        .collect()
}

fn assert_file_intervals(what: &str, events: &[Value], stats: &LiveStats) {
    let ends = paired_ends(events);
    let delivery: Vec<&Value> = ends
        .iter()
        .filter(|e| is_delivery(e["kind"].as_str().unwrap()))
        .collect();
    assert!(
        delivery.is_empty(),
        "{what}: delivery defects {delivery:#?}"
    );
    assert_intervals(what, &media_ends(&ends), &expected(), TOL);
    assert_eq!(
        stats.dropped_queue_full + stats.dropped_until_key,
        0,
        "{what}: {stats:?}"
    );
    assert!(stats.packets > 500, "{what}: {stats:?}");
}

#[test]
fn vod_ts_over_http_and_from_disk_gives_the_file_intervals() {
    let dir = renditions();
    let server = HlsServer::start(&dir, None);
    let (events, stats) = run_hls(
        &server.url("vod_ts/index.m3u8?token=abc"),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    assert_file_intervals("vod ts http", &events, &stats);
    // The same playlist from disk.
    let path = dir.join("vod_ts/index.m3u8");
    let (events, stats) = run_hls(
        path.to_str().unwrap(),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    assert_file_intervals("vod ts disk", &events, &stats);
}

#[test]
fn vod_fmp4_over_http_gives_the_file_intervals() {
    let server = HlsServer::start(&renditions(), None);
    let (events, stats) = run_hls(
        &server.url("vod_fmp4/index.m3u8"),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    assert_file_intervals("vod fmp4", &events, &stats);
}

#[test]
fn master_playlist_picks_a_variant() {
    let server = HlsServer::start(&renditions(), None);
    // The half-size variant (index 1, lower bandwidth) through the bandwidth limit: the
    // same defects in a re-encode.
    let opts = HlsOptions {
        variant: VariantChoice::MaxBandwidth(600_000),
        ..HlsOptions::default()
    };
    let (events, stats) = run_hls(
        &server.url("master.m3u8"),
        opts,
        LiveConfig::default(),
        60.0,
    );
    assert_file_intervals("master lo", &events, &stats);
    let asked: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(String::from))
        .collect();
    assert!(asked.iter().any(|p| p.starts_with("/lo/")), "{asked:?}");
    assert!(!asked.iter().any(|p| p.starts_with("/hi/")), "{asked:?}");
}

#[test]
fn a_404_segment_is_one_segment_error_pair_with_its_status() {
    let server = HlsServer::start(&renditions(), None);
    server.fault(json!({"path": "vod_ts/seg3.ts", "status": 404}));
    let (events, _) = run_hls(
        &server.url("vod_ts/index.m3u8?sig=s3cret"),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    let ends = paired_ends(&events);
    let errs = of_kind(&ends, "segment_error");
    assert_eq!(errs.len(), 1, "{ends:#?}");
    let e = errs[0];
    assert_eq!(e["metrics"]["status"], 404, "{e}");
    assert_eq!(e["metrics"]["reason"], "HTTP 404", "{e}");
    assert!(
        e["metrics"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/vod_ts/seg3.ts"),
        "{e}"
    );
    assert!(e.get("reason").is_none(), "closed by the next segment: {e}");
    // A refused segment has no timestamps at all: it is placed after the last good
    // segment by the playlist's EXTINF durations (seg3 holds 6-8 s of 2 s segments from
    // 0), the session times in its metrics (issue 10 item 6).
    let (s, t) = (e["start_s"].as_f64().unwrap(), e["end_s"].as_f64().unwrap());
    assert!((s - 6.0).abs() <= TOL && (t - 8.0).abs() <= TOL, "{e}");
    assert!(e["metrics"]["session_start_s"].is_number(), "{e}");
    assert!(e["metrics"]["session_end_s"].is_number(), "{e}");
    for ev in &events {
        assert!(
            !ev.to_string().contains("s3cret"),
            "query string leaked: {ev}"
        );
    }
    // The media before and after the hole is still analysed.
    assert!(!of_kind(&ends, "black").is_empty(), "{ends:#?}");
}

#[test]
fn a_huge_segment_is_refused_at_half_the_stream_budget() {
    // Per-stream memory: a segment may take at most half of the stream's budget (12 MiB
    // by default: 6 MiB), however large the origin makes it.
    let server = HlsServer::start(&renditions(), None);
    server.fault(json!({"path": "vod_ts/seg6.ts", "pad_to": 20_000_000}));
    let (events, stats) = run_hls(
        &server.url("vod_ts/index.m3u8"),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    let ends = paired_ends(&events);
    let errs = of_kind(&ends, "segment_error");
    assert_eq!(errs.len(), 1, "{ends:#?}");
    let reason = errs[0]["metrics"]["reason"].as_str().unwrap();
    // Half of the default 12 MiB budget.
    assert_eq!(
        reason,
        format!("segment larger than {} bytes", 6 << 20),
        "{}",
        errs[0]
    );
    assert!(
        errs[0]["metrics"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/vod_ts/seg6.ts"),
        "{}",
        errs[0]
    );
    // The stream goes on: the segments before and after are analysed.
    assert!(!of_kind(&ends, "black").is_empty(), "{ends:#?}");
    assert!(!of_kind(&ends, "silence").is_empty(), "{ends:#?}");
    assert!(stats.packets > 400, "{stats:?}");
    // The probe stopped reading at the cap: it did not take the 20 MB.
    let got: u64 = server
        .requests()
        .iter()
        .filter(|r| r["path"] == "/vod_ts/seg6.ts")
        .map(|r| r["bytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(got < 20_000_000, "{got} bytes sent");
}

#[test]
fn byte_ranges_from_a_server_that_ignores_range_are_cut_from_the_stream() {
    // One file, segments as EXT-X-BYTERANGE; the origin answers every range request with
    // 200 and the whole file (1.7 MB), larger than the segment cap (1 MB) here: each
    // range is cut from the stream as it passes, the rest is discarded unbuffered.
    let dir = TempDir::new("hls-byterange");
    let o = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
        .arg(media_dir().join("multi_main_360p.ts"))
        .args(["-map", "0", "-c", "copy", "-f", "hls", "-hls_time", "2"])
        .args(["-hls_playlist_type", "vod", "-hls_flags", "single_file"])
        .arg(dir.path().join("index.m3u8"))
        .output()
        .expect("run ffmpeg");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let playlist = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-BYTERANGE"), "{playlist}");
    let size = std::fs::metadata(dir.path().join("index.ts"))
        .unwrap()
        .len();
    assert!(size > 1_000_000, "{size}");
    let server = HlsServer::start(dir.path(), None);
    let opts = HlsOptions {
        max_segment_bytes: 1_000_000,
        ..HlsOptions::default()
    };
    let (events, stats) = run_hls(&server.url("index.m3u8"), opts, LiveConfig::default(), 60.0);
    assert_file_intervals("byte ranges, range ignored", &events, &stats);
}

#[test]
fn http_redirects_are_still_followed() {
    let server = HlsServer::start(&renditions(), None);
    server.fault(json!({"path": "moved.m3u8", "redirect_to": "/vod_ts/index.m3u8"}));
    let (events, stats) = run_hls(
        &server.url("moved.m3u8"),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    assert_file_intervals("redirected", &events, &stats);
}

#[test]
fn slow_and_truncated_segments() {
    let server = HlsServer::start(&renditions(), None);
    server.fault(json!({"path": "vod_fmp4/seg1.m4s", "delay_s": 3}));
    server.fault(json!({"path": "vod_fmp4/seg4.m4s", "truncate": 1000}));
    let (events, _) = run_hls(
        &server.url("vod_fmp4/index.m3u8"),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    let ends = paired_ends(&events);
    let slow = of_kind(&ends, "slow_download");
    assert_eq!(slow.len(), 1, "{ends:#?}");
    let ratio = slow[0]["metrics"]["ratio"].as_f64().unwrap();
    assert!(
        (1.2..3.0).contains(&ratio),
        "3 s for a 2 s segment: {}",
        slow[0]
    );
    assert!(slow[0].get("reason").is_none(), "{}", slow[0]);
    let errs = of_kind(&ends, "segment_error");
    assert_eq!(errs.len(), 1, "{ends:#?}");
    let reason = errs[0]["metrics"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("truncated"), "{reason}");
}

#[test]
fn frozen_live_playlist_is_playlist_stale_until_it_moves_again() {
    let dir = TempDir::new("hls-live");
    let _live = LiveHls::start(dir.path());
    let server = HlsServer::start(dir.path(), None);
    let url = server.url("index.m3u8");
    let (events, stats) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            server.fault(json!({"path": "index.m3u8", "freeze": true}));
            std::thread::sleep(Duration::from_secs(4));
            server.clear_faults();
        });
        run_hls(&url, HlsOptions::default(), LiveConfig::default(), 11.0)
    });
    let ends = paired_ends(&events);
    let stale = of_kind(&ends, "playlist_stale");
    assert_eq!(stale.len(), 1, "{ends:#?}");
    let e = stale[0];
    assert!(
        e.get("reason").is_none(),
        "ended by the playlist moving again: {e}"
    );
    let d = e["duration_s"].as_f64().unwrap();
    assert!((2.0..6.0).contains(&d), "frozen for 4 s: {e}");
    assert_eq!(e["metrics"]["target_duration"], 1.0, "{e}");
    assert!(
        e["metrics"]["seconds_unchanged"].as_f64().unwrap() > 1.5,
        "{e}"
    );
    assert!(e["metrics"]["media_sequence"].as_i64().is_some(), "{e}");
    assert!(of_kind(&ends, "segment_error").is_empty(), "{ends:#?}");
    assert!(of_kind(&ends, "source_down").is_empty(), "{ends:#?}");
    assert!(stats.packets > 100, "{stats:?}");
}

#[test]
fn unreachable_origins_are_source_down_with_a_clear_reason() {
    let dir = renditions();
    let mut server = HlsServer::start(&dir, None);
    let fast = LiveConfig {
        connect_timeout: 1.0,
        read_timeout: 1.0,
        backoff_initial: 0.2,
        backoff_max: 0.5,
        ..LiveConfig::default()
    };
    let reason_of = |events: &[Value]| -> String {
        let ends = paired_ends(events);
        let down = of_kind(&ends, "source_down");
        assert_eq!(down.len(), 1, "{ends:#?}");
        down[0]["metrics"]["reason"].as_str().unwrap().to_string()
    };

    server.fault(json!({"path": "vod_ts/index.m3u8", "redirect_loop": true}));
    let (events, _) = run_hls(
        &server.url("vod_ts/index.m3u8"),
        HlsOptions::default(),
        fast.clone(),
        1.5,
    );
    let r = reason_of(&events);
    assert!(r.contains("too many redirects (limit 5)"), "{r}");
    server.clear_faults();

    let (events, _) = run_hls(
        &server.url("nope/index.m3u8"),
        HlsOptions::default(),
        fast.clone(),
        1.0,
    );
    let r = reason_of(&events);
    assert!(r.contains("HTTP 404"), "{r}");

    // Accepts connections (the kernel does), never answers.
    server.stop();
    let t0 = Instant::now();
    let (events, _) = run_hls(
        &server.url("vod_ts/index.m3u8"),
        HlsOptions::default(),
        fast.clone(),
        3.0,
    );
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    let r = reason_of(&events);
    assert!(r.contains("timeout"), "{r}");
    server.cont();

    server.kill();
    let (events, _) = run_hls(
        &server.url("vod_ts/index.m3u8"),
        HlsOptions::default(),
        fast,
        1.0,
    );
    let r = reason_of(&events);
    assert!(r.contains("connection failed"), "{r}");
}

#[test]
fn https_verifies_the_certificate_and_takes_an_extra_ca() {
    let ca_dir = TempDir::new("hls-ca");
    let (ca, cert, key) = make_test_ca(ca_dir.path());
    let server = HlsServer::start(&renditions(), Some((&cert, &key)));
    let url = server.url("vod_fmp4/index.m3u8");
    assert!(url.starts_with("https://"));
    // Unknown issuer: fail closed.
    let (events, _) = run_hls(&url, HlsOptions::default(), LiveConfig::default(), 1.5);
    let ends = paired_ends(&events);
    let down = of_kind(&ends, "source_down");
    assert_eq!(down.len(), 1, "{ends:#?}");
    let r = down[0]["metrics"]["reason"].as_str().unwrap();
    assert!(r.contains("certificate"), "{r}");
    // With the CA: the stream plays.
    let opts = HlsOptions {
        ca_file: Some(ca),
        ..HlsOptions::default()
    };
    let (events, stats) = run_hls(&url, opts, LiveConfig::default(), 60.0);
    assert_file_intervals("https fmp4", &events, &stats);
}

/// Rewrites a TS file keeping only the 188-byte packets `keep` accepts (index, PID).
fn filter_ts(path: &std::path::Path, keep: impl Fn(usize, u16) -> bool) {
    let b = std::fs::read(path).unwrap();
    let out: Vec<u8> = b
        .chunks(188)
        .enumerate()
        .filter(|(i, p)| p.len() < 4 || keep(*i, (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2])))
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    std::fs::write(path, out).unwrap();
}

#[test]
fn lost_ts_packets_and_a_segment_without_pat_are_ts_error() {
    let src = renditions().join("vod_ts");
    let dir = TempDir::new("hls-tserr");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    // 20 packets of seg2 lost in the middle; seg5 without its PAT.
    filter_ts(&dir.path().join("seg2.ts"), |i, _| !(300..320).contains(&i));
    filter_ts(&dir.path().join("seg5.ts"), |_, pid| pid != 0);
    let (events, _) = run_hls(
        dir.path().join("index.m3u8").to_str().unwrap(),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    let ends = paired_ends(&events);
    let ts = of_kind(&ends, "ts_error");
    // Timed by the media (issue 10 item 6): seg2 (4-6 s) and seg5 (10-12 s) lie 4 s of
    // clean media apart, more than `clear_after`: two intervals, each at its segment
    // (however fast the VOD was fetched).
    assert_eq!(ts.len(), 2, "{ends:#?}");
    let at = |e: &Value| e["start_s"].as_f64().unwrap();
    assert!((at(ts[0]) - 4.0).abs() <= TOL, "{}", ts[0]);
    assert!((at(ts[1]) - 10.0).abs() <= TOL, "{}", ts[1]);
    let m = &ts[0]["metrics"];
    assert!(m["cc_errors"].as_i64().unwrap() >= 1, "{}", ts[0]);
    assert_eq!(m["pat_missing"], 0, "{}", ts[0]);
    let m = &ts[1]["metrics"];
    assert_eq!(m["pat_missing"], 1, "{}", ts[1]);
    for e in &ts {
        assert_eq!(e["metrics"]["pmt_missing"], 0, "{e}");
    }
}

#[test]
fn ts_segments_without_psi_take_it_from_a_ts_init_section() {
    let src = renditions().join("vod_ts");
    let dir = TempDir::new("hls-tsinit");
    // ffmpeg's PMT is on PID 0x1000: PAT + PMT of seg0 make the init section.
    let seg0 = std::fs::read(src.join("seg0.ts")).unwrap();
    let init: Vec<u8> = seg0
        .chunks(188)
        .filter(|p| {
            let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
            pid == 0 || pid == 0x1000
        })
        .take(2)
        .flatten()
        .copied()
        .collect();
    assert_eq!(init.len(), 376);
    std::fs::write(dir.path().join("init.ts"), init).unwrap();
    let mut playlist = std::fs::read_to_string(src.join("index.m3u8")).unwrap();
    playlist = playlist.replacen("#EXTINF", "#EXT-X-MAP:URI=\"init.ts\"\n#EXTINF", 1);
    std::fs::write(dir.path().join("index.m3u8"), playlist).unwrap();
    for i in 0..10 {
        let name = format!("seg{i}.ts");
        std::fs::copy(src.join(&name), dir.path().join(&name)).unwrap();
        filter_ts(&dir.path().join(&name), |_, pid| pid != 0 && pid != 0x1000);
    }
    let (events, stats) = run_hls(
        dir.path().join("index.m3u8").to_str().unwrap(),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    assert_file_intervals("ts init", &events, &stats);
}

#[test]
fn check_binary_takes_http_and_local_playlists_without_leaking_tokens() {
    let dir = renditions();
    let server = HlsServer::start(&dir, None);
    for input in [
        server.url("vod_fmp4/index.m3u8?token=TopSecret99"),
        dir.join("vod_ts/index.m3u8").display().to_string(),
    ] {
        let child = spawn_vqprobe(&["check", &input, "--format", "json", "--duration", "60"]);
        let (ok, events, stderr) = json_output(child);
        assert!(ok, "{input}: {stderr}");
        assert!(
            !format!("{events:?}{stderr}").contains("TopSecret99"),
            "token leaked"
        );
        let ends = paired_ends(&events);
        assert_intervals(&input, &ends, &expected(), TOL);
        assert!(
            events.iter().all(|e| e["stream"] == "index.m3u8"),
            "{events:?}"
        );
    }
}

#[test]
fn audio_timestamps_shifted_inside_ts_segments_are_av_desync() {
    // The clean 720p clip as VOD TS segments, then the audio PTS of the segments
    // shifted by +300 ms over [4, 7) s of media time, in place (packets stay where the
    // muxer put them). A remux would re-interleave the packets by their new timestamps
    // and leave nothing for a timestamp measure to see; an in-place shift is what a
    // packager's timestamp error looks like.
    let dir = media_dir().parent().unwrap().join("test-hls-desync");
    make_hls(&dir, &media_dir().join("clean_dark_720p.ts"));
    let shifted = dir.join("vod_ts_desync");
    std::fs::create_dir_all(&shifted).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/media/shift_pts.py");
    for entry in std::fs::read_dir(dir.join("vod_ts")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if p.extension().is_some_and(|e| e == "ts") {
            // The clip's first PTS is 1.48 s (media time 0).
            let o = std::process::Command::new("/usr/bin/python3")
                .arg(&script)
                .arg(&p)
                .arg(shifted.join(&name))
                .args([
                    "--origin", "1.48", "--start", "4", "--end", "7", "--shift", "0.3",
                ])
                .arg("--allow-none")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        } else {
            std::fs::copy(&p, shifted.join(&name)).unwrap();
        }
    }
    let (events, stats) = run_hls(
        shifted.join("index.m3u8").to_str().unwrap(),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    let ends = paired_ends(&events);
    assert_intervals(
        "hls desync",
        &media_ends(&ends),
        &[("av_desync".into(), 4.0, 7.0)],
        TOL,
    );
    assert!(stats.packets > 300, "{stats:?}");
    // And the untouched segments give nothing at all.
    let (events, _) = run_hls(
        dir.join("vod_ts/index.m3u8").to_str().unwrap(),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    assert!(events.is_empty(), "{events:#?}");
}

/// Issue 10 item 6, "two clocks for one fault": 40 KB of garbage in the middle of the VOD
/// segment that holds media 10-12 s. The VOD is fetched far faster than it plays, so the
/// session clock says ~1-3 s when the probe reads that segment; the `ts_error` it causes
/// must be timed where the damage is in the media (like the `corruption` it causes), with
/// the session times kept as metrics.
#[test]
fn a_damaged_segment_is_timed_by_its_media_not_by_when_it_was_fetched() {
    let src = renditions().join("vod_ts");
    let dir = TempDir::new("hls-garbage");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    // The segment covering 10-12 s of media, by the playlist's durations.
    let playlist = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
    let (mut at, mut damaged) = (0.0f64, None);
    let mut lines = playlist.lines();
    while let Some(l) = lines.next() {
        if let Some(d) = l.strip_prefix("#EXTINF:") {
            let d: f64 = d.trim_end_matches(',').parse().unwrap();
            let uri = lines.next().unwrap().to_string();
            if at <= 10.5 && 10.5 < at + d {
                damaged = Some((uri, at, at + d));
            }
            at += d;
        }
    }
    let (uri, seg_start, seg_end) = damaged.expect("a segment covers 10.5 s");
    assert!(
        (seg_start - 10.0).abs() < 0.1 && (seg_end - 12.0).abs() < 0.1,
        "{uri}: {seg_start}-{seg_end}"
    );
    let path = dir.path().join(&uri);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 120_000, "{} bytes", bytes.len());
    let mid = bytes.len() / 2 - 20_000;
    let mut x: u32 = 0x9E37_79B9;
    for b in &mut bytes[mid..mid + 40_000] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = (x >> 24) as u8;
    }
    std::fs::write(&path, bytes).unwrap();

    let server = HlsServer::start(dir.path(), None);
    let (events, _) = run_hls(
        &server.url("index.m3u8"),
        HlsOptions::default(),
        LiveConfig::default(),
        60.0,
    );
    let ends = paired_ends(&events);
    // Within one segment of the damaged one's media time.
    let near = |e: &Value| {
        let (s, t) = (e["start_s"].as_f64().unwrap(), e["end_s"].as_f64().unwrap());
        s >= seg_start - 2.0 && t <= seg_end + 2.0 && s < seg_end && t > seg_start
    };
    let corruption = of_kind(&ends, "corruption");
    assert!(!corruption.is_empty(), "{ends:#?}");
    assert!(corruption.iter().all(|e| near(e)), "{corruption:#?}");
    let ts = of_kind(&ends, "ts_error");
    assert_eq!(ts.len(), 1, "{ends:#?}");
    let e = ts[0];
    assert!(
        near(e),
        "ts_error at the damaged media, not at fetch time: {e}"
    );
    assert!(e["metrics"]["sync_losses"].as_i64().unwrap() >= 1, "{e}");
    // When the probe saw it, on the session clock: early, the VOD is read fast.
    let (s0, s1) = (
        e["metrics"]["session_start_s"]
            .as_f64()
            .expect("session_start_s"),
        e["metrics"]["session_end_s"]
            .as_f64()
            .expect("session_end_s"),
    );
    assert!(0.0 <= s0 && s0 <= s1, "{e}");
    // The start event carries the same media time and its session time too.
    let start = events
        .iter()
        .find(|x| x["kind"] == "ts_error" && x["state"] == "start")
        .expect("ts_error start");
    assert_eq!(start["start_s"], e["start_s"], "{start}");
    assert!(start["metrics"]["session_start_s"].is_number(), "{start}");
    assert!(of_kind(&ends, "segment_error").is_empty(), "{ends:#?}");
}
