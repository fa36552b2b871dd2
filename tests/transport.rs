//! Transport defects on files: TS packets dropped from the video PID give a `ts_error`
//! (continuity counters) at the right media time, and the damaged picture a
//! `corruption` until the next IDR.

mod common;

use common::*;

/// Media time (s) of each video PES start in a TS (PID 0x100 as ffmpeg writes it),
/// with the index of its first packet.
fn video_pes_starts(ts: &[u8]) -> Vec<(usize, f64)> {
    let mut first: Option<i64> = None;
    let mut out = vec![];
    for (i, p) in ts.chunks_exact(188).enumerate() {
        let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
        let pusi = p[1] & 0x40 != 0;
        if pid != 0x100 || !pusi {
            continue;
        }
        let off = if p[3] & 0x20 != 0 {
            5 + p[4] as usize
        } else {
            4
        };
        let pes = &p[off..];
        if pes.len() < 14 || pes[..3] != [0, 0, 1] || pes[7] & 0x80 == 0 {
            continue;
        }
        let b = &pes[9..14];
        let pts = (i64::from(b[0] >> 1 & 7) << 30)
            | (i64::from(b[1]) << 22)
            | (i64::from(b[2] >> 1) << 15)
            | (i64::from(b[3]) << 7)
            | i64::from(b[4] >> 1);
        let f = *first.get_or_insert(pts);
        out.push((i, (pts - f) as f64 / 90_000.0));
    }
    out
}

#[test]
fn dropped_video_packets_give_ts_error_and_corruption() {
    let src = std::fs::read(media_dir().join("black_high_360p.ts")).unwrap();
    // Decode order: find the PES whose (display) time is closest above 8.5 s.
    let starts = video_pes_starts(&src);
    let (idx, t) = *starts
        .iter()
        .filter(|(_, t)| *t >= 8.5)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    // Drop 4 video packets inside that picture (headers of other packets untouched).
    let mut dropped = 0;
    let mut out = Vec::with_capacity(src.len());
    for (i, p) in src.chunks_exact(188).enumerate() {
        let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
        if pid == 0x100 && i > idx && dropped < 4 {
            dropped += 1;
            continue;
        }
        out.extend_from_slice(p);
    }
    assert_eq!(dropped, 4);
    let path = std::env::temp_dir().join(format!("vqprobe-ccdrop-{}.ts", std::process::id()));
    std::fs::write(&path, &out).unwrap();
    let (ok, events, stderr) = check_json(&path, &[]);
    std::fs::remove_file(&path).ok();
    assert!(ok, "{stderr}");
    let ends = paired_ends(&events);
    let ts_err = ends
        .iter()
        .find(|e| e["kind"] == "ts_error")
        .unwrap_or_else(|| panic!("no ts_error in {ends:#?}"));
    assert!(
        (ts_err["start_s"].as_f64().unwrap() - t).abs() <= 0.5,
        "ts_error at {} vs {t}: {ts_err}",
        ts_err["start_s"]
    );
    assert!(
        ts_err["metrics"]["cc_errors"].as_i64().unwrap() >= 1,
        "{ts_err}"
    );
    assert_eq!(ts_err["metrics"]["sync_losses"], 0);
    // The damaged picture is corrupt until the next IDR (GOP 2 s: 10.0 s).
    assert_intervals(
        "ccdrop",
        &ends
            .iter()
            .filter(|e| e["kind"] != "ts_error")
            .cloned()
            .collect::<Vec<_>>(),
        &[("black".into(), 3.0, 6.0), ("corruption".into(), t, 10.0)],
        0.5,
    );
}

#[test]
fn frames_missing_from_the_timeline_are_low_fps() {
    // 25 fps, but only one frame in three from 4 s to 7 s (timestamps kept).
    let dir = std::env::temp_dir().join(format!("vqprobe-lowfps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lowfps.ts");
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=640x360:r=25",
            "-t",
            "10",
        ])
        .args([
            "-vf",
            "select='not(between(t\\,4\\,7)*mod(n\\,3))'",
            "-fps_mode",
            "passthrough",
        ])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-f", "mpegts",
        ])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let (ok, events, stderr) = check_json(&path, &[]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(ok, "{stderr}");
    let ends = paired_ends(&events);
    assert_intervals("lowfps", &ends, &[("low_fps".into(), 4.0, 7.0)], 0.5);
    let e = &ends[0];
    assert!(
        (e["metrics"]["fps_nominal"].as_f64().unwrap() - 25.0).abs() < 0.5,
        "{e}"
    );
    assert!(
        (e["metrics"]["fps_min"].as_f64().unwrap() - 25.0 / 3.0).abs() < 0.5,
        "{e}"
    );
}
