//! Defect thumbnails from `vqprobe check --thumbs DIR` on the ground-truth clips: one
//! JPEG per picture defect's start, of the right picture, at 320 px wide, and nothing
//! for anything else.

mod common;

use std::path::Path;
use std::process::Command;

use common::peers::TempDir;
use common::{check_json, media_dir};
use serde_json::Value;

/// A decoded thumbnail: (width, height, luma per pixel).
fn read_jpeg(path: &Path) -> (u16, u16, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut d = jpeg_decoder::Decoder::new(&bytes[..]);
    let px = d
        .decode()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let info = d.info().unwrap();
    let luma = px
        .chunks_exact(3)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect();
    (info.width, info.height, luma)
}

/// The clip's picture at `t` seconds, scaled to `w` × `h` grey by ffmpeg (full range).
fn ffmpeg_frame(clip: &Path, t: f64, w: u16, h: u16) -> Vec<f64> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-ss"])
        .arg(format!("{t}"))
        .arg("-i")
        .arg(clip)
        .args(["-frames:v", "1", "-vf"])
        .arg(format!("scale={w}:{h}:out_range=full,format=gray"))
        .args(["-f", "rawvideo", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success() && out.stdout.len() == usize::from(w) * usize::from(h),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.iter().map(|&v| f64::from(v)).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Runs check with `--thumbs`; (events, the JPEG files written).
fn run(clip: &str, extra: &[&str]) -> (Vec<Value>, Vec<String>, TempDir) {
    let dir = TempDir::new("thumbs");
    let out = dir.path().join("t");
    let mut args = vec!["--thumbs", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (ok, events, stderr) = check_json(&media_dir().join(clip), &args);
    assert!(ok, "{stderr}");
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap_or_else(|e| panic!("--thumbs made no folder: {e}"))
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    (events, files, dir)
}

/// The picture-defect starts, with their thumbnail paths (asserting that every other
/// event has none and that each path is DIR/{defect_id}.jpg).
fn starts_with_thumbs(events: &[Value], dir: &TempDir) -> Vec<(Value, String)> {
    let mut got = vec![];
    for e in events {
        let picture =
            ["black", "freeze", "corruption", "uniform"].contains(&e["kind"].as_str().unwrap());
        if picture && e["state"] == "start" {
            let want = dir
                .path()
                .join("t")
                .join(format!("{}.jpg", e["defect_id"].as_str().unwrap()));
            assert_eq!(e["thumb"].as_str(), want.to_str(), "{e}");
            got.push((e.clone(), want.display().to_string()));
        } else {
            assert!(e.get("thumb").is_none(), "{e}");
        }
    }
    got
}

#[test]
fn a_black_start_shows_a_black_picture_at_every_level() {
    for level in ["auto", "full"] {
        let (events, files, dir) = run("black_high_360p.ts", &["--decode-level", level]);
        let starts = starts_with_thumbs(&events, &dir);
        assert_eq!(starts.len(), 1, "{level}: {events:?}");
        assert_eq!(
            files,
            vec![starts[0].1.clone()],
            "{level}: one file, no leftovers"
        );
        let (w, h, luma) = read_jpeg(Path::new(&starts[0].1));
        assert_eq!((w, h), (320, 180), "{level}: 640×360 → 320×180");
        assert!(mean(&luma) < 25.0, "{level}: mean luma {}", mean(&luma));
    }
}

#[test]
fn a_uniform_start_shows_the_one_colour_screen() {
    // uniform_blue_360p: a blue "no signal" screen (Y 73, 66 in the JPEG's full range)
    // with a white caption over 12% of it, over [3, 9) s.
    let (events, files, dir) = run("uniform_blue_360p.ts", &[]);
    let starts = starts_with_thumbs(&events, &dir);
    assert_eq!(starts.len(), 1, "{events:?}");
    assert_eq!(starts[0].0["kind"], "uniform");
    assert_eq!(files, vec![starts[0].1.clone()]);
    let (_, _, luma) = read_jpeg(Path::new(&starts[0].1));
    let m = mean(&luma);
    assert!((55.0..100.0).contains(&m), "mean luma {m}");
}

#[test]
fn a_freeze_start_shows_the_frozen_picture() {
    // freeze_main_720p: frozen on one picture over [3, 7) s.
    let clip = media_dir().join("freeze_main_720p.ts");
    let (events, files, dir) = run("freeze_main_720p.ts", &[]);
    let starts = starts_with_thumbs(&events, &dir);
    assert_eq!(starts.len(), 1, "{events:?}");
    assert_eq!(files.len(), 1);
    let (w, h, luma) = read_jpeg(Path::new(&starts[0].1));
    assert_eq!((w, h), (320, 180));
    // The same picture as ffmpeg shows inside the freeze, and not the one 2 s after it.
    let diff = |other: &[f64]| {
        luma.iter()
            .zip(other)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / luma.len() as f64
    };
    let frozen = diff(&ffmpeg_frame(&clip, 5.0, w, h));
    let later = diff(&ffmpeg_frame(&clip, 8.0, w, h));
    eprintln!("mean abs luma difference: frozen {frozen:.2}, later {later:.2}");
    assert!(frozen < 6.0, "mean |Δ| to the frozen picture {frozen}");
    assert!(
        later > 2.0 * frozen,
        "to a later picture {later}, frozen {frozen}"
    );
}

#[test]
fn a_corruption_start_shows_a_picture_and_clean_or_audio_defects_none() {
    let (events, files, dir) = run("corrupt_baseline_1080p.ts", &[]);
    let starts = starts_with_thumbs(&events, &dir);
    assert_eq!(starts.len(), 1, "{events:?}");
    assert_eq!(starts[0].0["kind"], "corruption");
    assert_eq!(files.len(), 1);
    let (w, h, luma) = read_jpeg(Path::new(&starts[0].1));
    assert_eq!((w, h), (320, 180), "1920×1080 → 320×180");
    assert!(mean(&luma) > 20.0, "a picture, not an empty one");
    // Nothing to show: a clean clip and a sound defect write nothing.
    for clip in ["clean_dark_720p.ts", "silence_high_720p.ts"] {
        let (events, files, dir) = run(clip, &[]);
        assert!(starts_with_thumbs(&events, &dir).is_empty(), "{clip}");
        assert!(files.is_empty(), "{clip}: {files:?}");
    }
}

#[test]
fn an_unwritable_thumbs_folder_is_a_clear_error() {
    let dir = TempDir::new("thumbs-bad");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let target = file.join("sub");
    let (ok, events, stderr) = check_json(
        &media_dir().join("black_high_360p.ts"),
        &["--thumbs", target.to_str().unwrap()],
    );
    assert!(!ok && events.is_empty(), "{stderr}");
    assert!(stderr.contains(target.to_str().unwrap()), "{stderr}");
}
