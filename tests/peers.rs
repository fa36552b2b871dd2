//! Tests of the live-ingest test peers themselves (tests/peers/, tests/common/peers.rs):
//! the RTSP server, the HLS origin with its faults, TLS with a throw-away CA, live HLS.
//! Clients here are ffprobe, curl and a std TcpStream, never vqprobe.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::{self, make_hls, make_test_ca, HlsServer, LiveHls, RtspServer, TempDir};
use serde_json::{json, Value};

fn clip(name: &str) -> PathBuf {
    let p = common::media_dir().join(name);
    assert!(p.is_file(), "missing ground-truth clip {p:?}");
    p
}

/// `ffprobe` of `url`: Ok(codec names) or Err(stderr). `timeout_s` bounds the RTSP socket.
fn ffprobe(url: &str, rtsp_transport: Option<&str>, timeout_s: u32) -> Result<Vec<String>, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error"]);
    if let Some(t) = rtsp_transport {
        cmd.args(["-rtsp_transport", t]);
        cmd.args(["-timeout", &(u64::from(timeout_s) * 1_000_000).to_string()]);
    } else {
        cmd.args([
            "-rw_timeout",
            &(u64::from(timeout_s) * 1_000_000).to_string(),
        ]);
    }
    let out = cmd
        .args(["-show_entries", "stream=codec_name", "-of", "json", url])
        .output()
        .expect("run ffprobe");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    Ok(v["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["codec_name"].as_str().map(String::from))
        .collect())
}

fn assert_codecs(what: &str, got: Result<Vec<String>, String>, want: &[&str]) {
    match got {
        Ok(mut c) => {
            c.sort();
            let mut w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            w.sort();
            assert_eq!(c, w, "{what}: codecs");
        }
        Err(e) => panic!("{what}: ffprobe failed: {e}"),
    }
}

#[test]
fn rtsp_file_and_live_mounts_carry_h264_and_aac() {
    let file = format!("file:{}", clip("black_high_360p.ts").display());
    let srv = RtspServer::start(
        &[
            ("/clip", file.as_str()),
            ("/live", "live"),
            ("/noaudio", "live-noaudio"),
        ],
        None,
    );
    let t0 = Instant::now();
    // Probe in parallel: each takes about 1-1.5 s.
    let jobs: Vec<(&str, String, &str, Vec<&str>)> = vec![
        ("file/tcp", srv.url("/clip"), "tcp", vec!["h264", "aac"]),
        ("file/udp", srv.url("/clip"), "udp", vec!["h264", "aac"]),
        ("live/tcp", srv.url("/live"), "tcp", vec!["h264", "aac"]),
        ("live/udp", srv.url("/live"), "udp", vec!["h264", "aac"]),
        ("live-noaudio/tcp", srv.url("/noaudio"), "tcp", vec!["h264"]),
    ];
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(what, url, tr, want)| {
                s.spawn(move || assert_codecs(what, ffprobe(url, Some(tr), 10), want))
            })
            .collect();
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
    eprintln!("5 RTSP probes took {:?}", t0.elapsed());
    let missing = ffprobe(&srv.url("/nothing"), Some("tcp"), 10).unwrap_err();
    assert!(missing.contains("404"), "unknown mount: {missing}");
}

#[test]
fn rtsp_digest_auth_refuses_wrong_password() {
    let file = format!("file:{}", clip("clean_quiet_360p.ts").display());
    let srv = RtspServer::start(
        &[("/secure", file.as_str()), ("/open", file.as_str())],
        Some(("/secure", "alice", "s3cret")),
    );
    let wrong = ffprobe(
        &srv.url_with_credentials("/secure", "alice", "nope"),
        Some("tcp"),
        10,
    )
    .expect_err("wrong password accepted");
    assert!(wrong.contains("401"), "wrong password: {wrong}");
    let anonymous =
        ffprobe(&srv.url("/secure"), Some("tcp"), 10).expect_err("no credentials accepted");
    assert!(anonymous.contains("401"), "no credentials: {anonymous}");
    assert_codecs(
        "right password",
        ffprobe(
            &srv.url_with_credentials("/secure", "alice", "s3cret"),
            Some("tcp"),
            10,
        ),
        &["h264", "aac"],
    );
    assert_codecs(
        "other mount stays open",
        ffprobe(&srv.url("/open"), Some("tcp"), 10),
        &["h264", "aac"],
    );
}

#[test]
fn rtsp_stop_cont_kill_restart() {
    let file = format!("file:{}", clip("black_high_360p.ts").display());
    let mut srv = RtspServer::start(&[("/clip", file.as_str())], None);
    let port = srv.port;

    srv.stop();
    let t0 = Instant::now();
    let hung = ffprobe(&srv.url("/clip"), Some("tcp"), 1).expect_err("stopped server answered");
    assert!(t0.elapsed() >= Duration::from_millis(900), "{hung}");
    srv.cont();
    assert_codecs(
        "after SIGCONT",
        ffprobe(&srv.url("/clip"), Some("tcp"), 10),
        &["h264", "aac"],
    );

    srv.kill();
    assert!(!srv.is_running());
    let refused = ffprobe(&srv.url("/clip"), Some("tcp"), 2).expect_err("killed server answered");
    assert!(refused.contains("refused"), "{refused}");

    srv.restart();
    assert_eq!(srv.port, port);
    assert_codecs(
        "after restart",
        ffprobe(&srv.url("/clip"), Some("tcp"), 10),
        &["h264", "aac"],
    );
}

#[test]
fn hls_vod_playlists_and_faults() {
    let tmp = TempDir::new("peers-hls");
    let out = tmp.path().join("hls");
    make_hls(&out, &clip("black_high_360p.ts"));
    let srv = HlsServer::start(&out, None);

    let pl = srv.get("vod_ts/index.m3u8");
    assert_eq!(pl.status, 200);
    assert_eq!(
        pl.header("Content-Type"),
        Some("application/vnd.apple.mpegurl")
    );
    let text = pl.text();
    assert!(
        text.contains("#EXT-X-ENDLIST") && text.contains("seg3.ts"),
        "{text}"
    );
    assert_codecs(
        "VOD TS",
        ffprobe(&srv.url("vod_ts/index.m3u8"), None, 10),
        &["h264", "aac"],
    );
    assert_codecs(
        "VOD fMP4",
        ffprobe(&srv.url("vod_fmp4/index.m3u8"), None, 10),
        &["h264", "aac"],
    );
    let master = srv.get("master.m3u8").text();
    assert_eq!(master.matches("#EXT-X-STREAM-INF").count(), 2, "{master}");

    let seg = srv.get("vod_ts/seg3.ts");
    assert_eq!(seg.status, 200);
    let full = std::fs::read(out.join("vod_ts/seg3.ts")).unwrap();
    assert_eq!(seg.body, full);

    // 404 on one segment, for one request only.
    srv.fault(json!({"path": "seg3.ts", "status": 404, "times": 1}));
    assert_eq!(srv.get("vod_ts/seg3.ts").status, 404);
    assert_eq!(srv.get("vod_ts/seg3.ts").status, 200);
    assert_eq!(srv.get("vod_ts/seg2.ts").status, 200);

    // Truncated body: full Content-Length, fewer bytes, then close.
    srv.fault(json!({"path": "seg1.ts", "truncate": 1000}));
    let cut = srv.get("vod_ts/seg1.ts");
    assert_eq!(cut.status, 200);
    assert_eq!(cut.body.len(), 1000);
    assert!(
        cut.header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 1000
    );

    // Slow body.
    srv.fault(json!({"path": "seg0.ts", "delay_s": 0.5}));
    let t0 = Instant::now();
    let slow = srv.get("vod_ts/seg0.ts");
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        slow.body,
        std::fs::read(out.join("vod_ts/seg0.ts")).unwrap()
    );

    // Redirect loop.
    srv.fault(json!({"redirect_loop": true}));
    let r = srv.get("vod_ts/index.m3u8");
    assert_eq!(
        (r.status, r.header("Location")),
        (302, Some("/vod_ts/index.m3u8"))
    );
    srv.clear_faults();
    assert_eq!(srv.get("vod_ts/index.m3u8").status, 200);

    // Frozen playlist: served as it was when frozen while the file keeps changing.
    let live = out.join("vod_ts/moving.m3u8");
    std::fs::write(&live, "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:1\n").unwrap();
    srv.fault(json!({"path": "moving.m3u8", "freeze": true}));
    std::fs::write(&live, "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:2\n").unwrap();
    assert!(srv.get("vod_ts/moving.m3u8").text().contains("SEQUENCE:1"));
    srv.fault(json!({"path": "moving.m3u8", "clear": true}));
    assert!(srv.get("vod_ts/moving.m3u8").text().contains("SEQUENCE:2"));

    // Bad rule refused; request log kept.
    let bad = peers::http_request(
        srv.control_port,
        "POST",
        "/__fault",
        Some(br#"{"stauts": 404}"#),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    let log = srv.requests();
    assert!(
        log.iter()
            .any(|e| e["path"] == "/vod_ts/seg3.ts" && e["status"] == 404),
        "{log:?}"
    );
    assert_eq!(srv.get("../../../etc/passwd").status, 404);
}

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl (apt-get install curl)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn hls_tls_with_test_ca() {
    let tmp = TempDir::new("peers-tls");
    let (ca, cert, key) = make_test_ca(&tmp.path().join("ca"));
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("index.m3u8"), "#EXTM3U\n#EXT-X-ENDLIST\n").unwrap();
    let srv = HlsServer::start(&docs, Some((&cert, &key)));
    let url = srv.url("index.m3u8");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca_s = ca.to_str().unwrap();

    let (rc, body) = curl(&["--cacert", ca_s, &url]);
    assert_eq!(rc, 0, "{body}");
    assert!(body.starts_with("#EXTM3U"), "{body}");

    // Without the CA: certificate verification fails (curl exit 60).
    let (rc, err) = curl(&[&url]);
    assert_eq!(rc, 60, "{err}");

    // Faults through the plain-HTTP control port apply to the HTTPS side.
    assert_ne!(srv.control_port, srv.port);
    srv.fault(json!({"path": "index.m3u8", "status": 503}));
    let (rc, code) = curl(&[
        "--cacert",
        ca_s,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!((rc, code.as_str()), (0, "503"));
}

#[test]
fn live_hls_slides_and_ends_cleanly() {
    let tmp = TempDir::new("peers-live");
    let dir = tmp.path().join("live");
    let mut live = LiveHls::start(&dir);
    let srv = HlsServer::start(&dir, None);
    let first = srv.get("index.m3u8");
    assert_eq!(first.status, 200);
    let text = first.text();
    assert!(
        text.contains("#EXTINF") && !text.contains("#EXT-X-ENDLIST"),
        "{text}"
    );
    assert!(
        !text.contains("PLAYLIST-TYPE"),
        "live playlist has no type: {text}"
    );
    // The playlist grows by one 1 s segment at a time.
    let n0 = text.matches("#EXTINF").count();
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.playlist().matches("#EXTINF").count() <= n0 {
        assert!(
            Instant::now() < deadline,
            "playlist did not grow: {}",
            live.playlist()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    live.end_cleanly();
    assert!(
        live.playlist().contains("#EXT-X-ENDLIST"),
        "{}",
        live.playlist()
    );
}
