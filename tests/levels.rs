//! Decode levels on the ground-truth media (docs/events.md, "Decode levels").
//!
//! - `full`, `reference` and `auto` find every injected defect within ±0.5 s of the
//!   truth and nothing else; `auto`'s intervals are within 0.1 s of `full`'s (the
//!   look-back ring is decoded again from its key picture, so onsets do not move).
//! - `key` meets the documented limit instead: the events a detector fed with key
//!   pictures only must give, predicted here from the truth and the clip's key
//!   pictures (read with ffprobe, not with vqprobe), and not one more.
//! - The coverage line on stderr tells the truth: `full` decodes every picture, `key`
//!   exactly the key pictures, `auto` fewer than all on clips it has nothing to look at.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const TOL: f64 = 0.5;

fn clips() -> Vec<Value> {
    truth()["clips"].as_array().unwrap().clone()
}

/// (`end` events, stderr) of `check --decode-level LEVEL`.
fn run(name: &str, level: &str) -> (Vec<Value>, String) {
    let (ok, events, stderr) = check_json(&media_dir().join(name), &["--decode-level", level]);
    assert!(ok, "{name} at {level}: check failed: {stderr}");
    (paired_ends(&events), stderr)
}

/// (decoded, pictures) from the coverage line.
fn coverage(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("coverage: "))
        .unwrap_or_else(|| panic!("no coverage line in {stderr}"));
    let inner = line
        .split('(')
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("{line}"));
    let mut it = inner
        .split(" of ")
        .map(|x| x.trim().parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Key picture times of a clip in media seconds (origin: the first timestamp of any
/// stream, as vqprobe's media clock), and the number of video pictures, by ffprobe.
fn keys_of(name: &str) -> (Vec<f64>, u64) {
    let path = media_dir().join(name);
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=start_time",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let origin: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=pts_time,flags", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut keys = vec![];
    let mut n = 0;
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        n += 1;
        let mut f = l.split(',');
        let t: f64 = f.next().unwrap().parse().unwrap();
        if f.next().unwrap_or("").starts_with('K') {
            keys.push(t - origin);
        }
    }
    keys.sort_by(f64::total_cmp);
    (keys, n)
}

/// What a hysteresis with `min_on` seconds (and no clear time) makes of samples at the
/// key pictures: runs of flagged keys confirmed once a later flagged key is `min_on`
/// after the first; the end is the first key not flagged (or the clip's end).
fn key_runs(
    keys: &[f64],
    flagged: impl Fn(usize) -> bool,
    min_on: f64,
    end: f64,
) -> Vec<(f64, f64)> {
    key_runs_from(keys, flagged, min_on, end, 0)
}

/// [`key_runs`] with each run dated from `back` key pictures before its first flagged
/// one (`flagged` must be false on the first `back` key pictures).
fn key_runs_from(
    keys: &[f64],
    flagged: impl Fn(usize) -> bool,
    min_on: f64,
    end: f64,
    back: usize,
) -> Vec<(f64, f64)> {
    let mut out = vec![];
    let mut i = 0;
    while i < keys.len() {
        if !flagged(i) {
            i += 1;
            continue;
        }
        let onset = keys[i.saturating_sub(back)];
        let mut j = i;
        while j + 1 < keys.len() && flagged(j + 1) {
            j += 1;
        }
        if keys[j] - onset >= min_on {
            out.push((onset, keys.get(j + 1).copied().unwrap_or(end)));
        }
        i = j + 1;
    }
    out
}

/// The documented outcome at `key` for a clip (docs/events.md): pictures are sampled at
/// key pictures only; audio, A/V sync and rate are as at `full`.
fn predicted_at_key(clip: &Value, keys: &[f64]) -> Vec<(String, f64, f64)> {
    const EPS: f64 = 0.02;
    const FRAME: f64 = 0.04;
    const MIN_ON: f64 = 2.0; // black / freeze min_duration defaults
    const MIN_ON_UNIFORM: f64 = 5.0; // uniform's
    const MIN_ON_PATTERN: f64 = 10.0; // test_pattern's
    let dur = clip["duration_s"].as_f64().unwrap();
    let mut out = vec![];
    for (kind, s, e) in clip_events(clip) {
        match kind.as_str() {
            "black" | "uniform" => {
                let min_on = if kind == "black" {
                    MIN_ON
                } else {
                    MIN_ON_UNIFORM
                };
                let shown = |i: usize| keys[i] >= s - EPS && keys[i] < e - EPS;
                for (a, b) in key_runs(keys, shown, min_on, dur) {
                    out.push((kind.clone(), a, b));
                }
            }
            "freeze" => {
                // The frozen interval shows the picture of the frame before it: a key
                // picture is frozen when the key before it already showed that picture.
                let frozen =
                    |i: usize| i > 0 && keys[i - 1] >= s - FRAME - EPS && keys[i] < e - EPS;
                for (a, b) in key_runs(keys, frozen, MIN_ON, dur) {
                    out.push((kind.clone(), a, b));
                }
            }
            // Bars are seen on every key picture inside them; a slate from the second
            // key picture of it on (the first one is the cut, the new reference), dated
            // back to that first one.
            "test_pattern" => {
                let form = clip["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|ev| ev["kind"] == "test_pattern" && ev["start_s"].as_f64() == Some(s))
                    .and_then(|ev| ev["form"].as_str())
                    .unwrap_or_else(|| panic!("test_pattern truth without a form: {clip}"));
                let shown = |i: usize| keys[i] >= s - EPS && keys[i] < e - EPS;
                let still = |i: usize| i > 0 && shown(i - 1) && shown(i);
                let runs = if form == "bars" {
                    key_runs(keys, shown, MIN_ON_PATTERN, dur)
                } else {
                    // Dated back to the key before the first still one (the cut).
                    key_runs_from(keys, still, MIN_ON_PATTERN, dur, 1)
                };
                for (a, b) in runs {
                    out.push((kind.clone(), a, b));
                }
            }
            // Corruption in the ground truth is never in a key picture.
            "corruption" => {}
            _ => out.push((kind, s, e)),
        }
    }
    out
}

#[test]
fn full_reference_and_auto_find_every_truth_and_auto_matches_full() {
    for c in clips() {
        let name = c["file"].as_str().unwrap();
        let truth = clip_events(&c);
        let (full, _) = run(name, "full");
        assert_intervals(&format!("{name} at full"), &full, &truth, TOL);
        let (reference, _) = run(name, "reference");
        assert_intervals(&format!("{name} at reference"), &reference, &truth, TOL);
        let (auto, _) = run(name, "auto");
        assert_intervals(&format!("{name} at auto"), &auto, &truth, TOL);
        // The re-decoded look-back gives the onsets and ends of a full decode.
        let at_full: Vec<(String, f64, f64)> = full
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["start_s"].as_f64().unwrap(),
                    e["end_s"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_intervals(&format!("{name}: auto against full"), &auto, &at_full, 0.1);
        // Picture defects found by auto were found decoding every picture.
        for e in &auto {
            if ["black", "freeze", "corruption", "uniform", "test_pattern"]
                .contains(&e["kind"].as_str().unwrap())
            {
                assert_eq!(e["decode_level"], "full", "{name}: {e}");
            }
        }
    }
}

#[test]
fn key_meets_its_documented_limit_on_every_truth_clip() {
    for c in clips() {
        let name = c["file"].as_str().unwrap();
        let (keys, pictures) = keys_of(name);
        assert!(keys.len() >= 2, "{name}: key pictures {keys:?}");
        let (ends, stderr) = run(name, "key");
        let want = predicted_at_key(&c, &keys);
        // Picture defects land on key pictures (0.1 s); sound and sync keep the
        // truth's own tolerance.
        let picture =
            |k: &str| ["black", "freeze", "corruption", "uniform", "test_pattern"].contains(&k);
        let (pic_ends, other_ends): (Vec<Value>, Vec<Value>) = ends
            .iter()
            .cloned()
            .partition(|e| picture(e["kind"].as_str().unwrap()));
        let (pic_want, other_want): (Vec<_>, Vec<_>) =
            want.into_iter().partition(|(k, ..)| picture(k));
        let what = format!("{name} at key (keys {keys:?})");
        assert_intervals(&what, &pic_ends, &pic_want, 0.1);
        assert_intervals(&what, &other_ends, &other_want, TOL);
        for e in &ends {
            assert_eq!(e["decode_level"], "key", "{name}: {e}");
        }
        // Exactly the key pictures were decoded.
        let (decoded, seen) = coverage(&stderr);
        assert_eq!(seen, pictures, "{name}: pictures seen");
        assert_eq!(decoded, keys.len() as u64, "{name}: decoded at key");
    }
}

#[test]
fn the_coverage_line_tells_what_was_decoded() {
    let name = "clean_slow_1080p.ts";
    let (_, pictures) = keys_of(name);
    let (_, stderr) = run(name, "full");
    assert_eq!(coverage(&stderr), (pictures, pictures), "{stderr}");
    assert!(
        stderr.contains("full 10.0 s, reference 0.0 s, key 0.0 s"),
        "{stderr}"
    );
    // Nothing to look at: auto decodes the key pictures and, at the end of input, the
    // last look-back (two GOPs of 2 s) only.
    let (ends, stderr) = run(name, "auto");
    assert!(ends.is_empty(), "{ends:?}");
    let (decoded, seen) = coverage(&stderr);
    assert_eq!(seen, pictures);
    assert!(
        decoded * 2 < pictures,
        "auto decoded {decoded} of {pictures}: {stderr}"
    );
    assert!(stderr.contains(", key 10.0 s;"), "{stderr}");
    // Every reference picture not decoded was parsed, none broken, none left
    // unchecked (the checker saw each IDR).
    let (n, broken, unchecked) = parsed(&stderr);
    assert!(n + decoded >= pictures / 2, "{stderr}");
    assert_eq!((broken, unchecked), (0, 0), "{stderr}");
    // Corrupt slices with the transport intact: only the syntax check sees them
    // between key pictures.
    let (_, stderr) = run("corrupt_baseline_1080p.ts", "auto");
    let (n, broken, _) = parsed(&stderr);
    assert!(n > 0 && broken >= 1, "{stderr}");
    let (ok, _, stderr) = check_json(
        &media_dir().join("corrupt_baseline_1080p.ts"),
        &["--decode-level", "full"],
    );
    assert!(ok);
    assert_eq!(
        parsed(&stderr),
        (0, 0, 0),
        "nothing is parsed at full: {stderr}"
    );
}

#[test]
fn the_default_level_is_auto() {
    let name = "black_high_360p.ts";
    let (ok, events, stderr) = check_json(&media_dir().join(name), &[]);
    assert!(ok, "{stderr}");
    let (_, auto_err) = run(name, "auto");
    assert_eq!(coverage(&stderr), coverage(&auto_err), "{stderr}");
    assert!(
        events.iter().all(|e| e["decode_level"] == "full"),
        "{events:?}"
    );
}

#[test]
fn a_bad_decode_level_is_refused_with_the_choices() {
    let out = vqprobe(&["check", "x.ts", "--decode-level", "half"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("half") && err.contains("reference"), "{err}");
}

#[test]
fn a_stream_over_the_decoder_memory_budget_is_refused_with_an_event() {
    // 720p with libx264's references needs more than 8 MiB of decoder pictures
    // (docs/config.md, max_decoder_mb); audio goes on.
    let dir = std::env::temp_dir().join(format!("vqprobe-levels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("detect.toml");
    std::fs::write(&cfg, "max_decoder_mb = 8\n").unwrap();
    let name = "silence_high_720p.ts";
    let (ok, events, stderr) = check_json(
        &media_dir().join(name),
        &["--detect-config", cfg.to_str().unwrap()],
    );
    assert!(ok, "{stderr}");
    let ends = paired_ends(&events);
    let refused: Vec<&Value> = ends
        .iter()
        .filter(|e| e["kind"] == "unsupported_codec")
        .collect();
    assert_eq!(refused.len(), 1, "{ends:#?}");
    let m = &refused[0]["metrics"];
    assert_eq!(m["reason"], "h264_decoder_memory", "{m}");
    assert_eq!(
        (m["width"].as_u64(), m["height"].as_u64()),
        (Some(1280), Some(720))
    );
    // Nothing of the video was decoded; the silence is still found.
    let (decoded, _) = coverage(&stderr);
    assert_eq!(decoded, 0, "{stderr}");
    let truth = clip_events(&clips().into_iter().find(|c| c["file"] == name).unwrap());
    let others: Vec<Value> = ends
        .iter()
        .filter(|e| e["kind"] != "unsupported_codec")
        .cloned()
        .collect();
    assert_intervals(name, &others, &truth, TOL);
    let _ = std::fs::remove_dir_all(&dir);
}
