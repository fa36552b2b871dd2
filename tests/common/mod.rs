//! Shared test harness: ground-truth media (made once per checkout by
//! `tests/media/make_media.sh`, which ffmpeg must be able to run: a missing tool fails
//! the tests, it never skips them) and helpers to run the `vqprobe` binary.

#![allow(dead_code)]

pub mod mqtt;
pub mod peers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// The folder with the ground-truth clips and `truth.json`.
pub fn media_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = std::env::var_os("VQPROBE_TEST_MEDIA")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target").join("test-media"));
        let status = Command::new("bash")
            .arg(root.join("tests/media/make_media.sh"))
            .arg(&out)
            .status()
            .expect("cannot run tests/media/make_media.sh (bash missing?)");
        assert!(
            status.success(),
            "tests/media/make_media.sh failed: {status}"
        );
        out
    })
}

/// Parsed `truth.json`.
pub fn truth() -> Value {
    let text = std::fs::read_to_string(media_dir().join("truth.json")).expect("truth.json");
    serde_json::from_str(&text).expect("truth.json is JSON")
}

/// The (kind, start_s, end_s) events a `truth.json` clip entry lists.
pub fn clip_events(clip: &Value) -> Vec<(String, f64, f64)> {
    clip["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["start_s"].as_f64().unwrap(),
                e["end_s"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Runs the vqprobe binary with `args`.
pub fn vqprobe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vqprobe"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run vqprobe")
}

/// Starts the vqprobe binary with `args` in the background, stdout and stderr piped.
pub fn spawn_vqprobe(args: &[&str]) -> std::process::Child {
    spawn_vqprobe_env(args, &[])
}

/// [`spawn_vqprobe`] with extra environment variables (e.g. `VQPROBE_FAULT`).
pub fn spawn_vqprobe_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_vqprobe"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn vqprobe")
}

/// Waits for a `spawn_vqprobe` child and parses its JSON lines:
/// (exit success, events, stderr).
pub fn json_output(child: std::process::Child) -> (bool, Vec<Value>, String) {
    let out = child.wait_with_output().expect("wait for vqprobe");
    parse_output(&out)
}

fn parse_output(out: &Output) -> (bool, Vec<Value>, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "vqprobe panicked: {stderr}");
    let events = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out.status.success(), events, stderr)
}

/// Runs `vqprobe check FILE --format json` and returns (exit success, events, stderr).
pub fn check_json(file: &Path, extra: &[&str]) -> (bool, Vec<Value>, String) {
    let mut args = vec!["check", file.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    parse_output(&vqprobe(&args))
}

/// Checks the start/end pairing of a run's events and returns the `end` events.
pub fn paired_ends(events: &[Value]) -> Vec<Value> {
    let mut open: std::collections::HashMap<String, Value> = Default::default();
    let mut ends = vec![];
    for e in events {
        assert_eq!(e["v"], 1, "{e}");
        let id = e["defect_id"].as_str().expect("defect_id").to_string();
        match e["state"].as_str() {
            Some("start") => {
                assert!(
                    open.insert(id, e.clone()).is_none(),
                    "two starts for one defect: {e}"
                );
                assert_eq!(
                    e["id"].as_str().unwrap(),
                    format!("{}-start", e["defect_id"].as_str().unwrap())
                );
            }
            Some("end") => {
                let s = open
                    .remove(&id)
                    .unwrap_or_else(|| panic!("end without start: {e}"));
                assert_eq!(s["kind"], e["kind"]);
                assert_eq!(s["start_s"], e["start_s"]);
                let (st, en) = (e["start_s"].as_f64().unwrap(), e["end_s"].as_f64().unwrap());
                assert!(en >= st, "{e}");
                assert!(
                    (e["duration_s"].as_f64().unwrap() - (en - st)).abs() < 0.002,
                    "{e}"
                );
                ends.push(e.clone());
            }
            other => panic!("bad state {other:?}: {e}"),
        }
    }
    assert!(
        open.is_empty(),
        "starts without end: {:?}",
        open.values().collect::<Vec<_>>()
    );
    ends
}

/// Asserts the `end` events equal the expected (kind, start, end) list within `tol`
/// seconds, nothing missing and nothing else.
pub fn assert_intervals(what: &str, ends: &[Value], expected: &[(String, f64, f64)], tol: f64) {
    let mut used = vec![false; ends.len()];
    for (kind, s, e) in expected {
        let hit = ends.iter().enumerate().position(|(i, ev)| {
            !used[i]
                && ev["kind"] == kind.as_str()
                && (ev["start_s"].as_f64().unwrap() - s).abs() <= tol
                && (ev["end_s"].as_f64().unwrap() - e).abs() <= tol
        });
        match hit {
            Some(i) => used[i] = true,
            None => panic!("{what}: expected {kind} {s}-{e} not found in {ends:#?}"),
        }
    }
    let extra: Vec<&Value> = ends
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(e, _)| e)
        .collect();
    assert!(extra.is_empty(), "{what}: unexpected events {extra:#?}");
}

/// (parsed, broken, unchecked) from the coverage line's syntax-check counts.
pub fn parsed(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("coverage: "))
        .unwrap_or_else(|| panic!("no coverage line in {stderr}"));
    let tail = line.rsplit("; ").next().unwrap_or_else(|| panic!("{line}"));
    let (counts, shed) = tail
        .split_once("), syntax check shed ")
        .unwrap_or_else(|| panic!("{line}"));
    assert!(shed.ends_with(" s"), "{line}");
    let nums: Vec<u64> = counts
        .split(|c: char| !c.is_ascii_digit())
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(
        counts.contains(" parsed (") && counts.contains(" broken, ") && nums.len() == 3,
        "{line}"
    );
    (nums[0], nums[1], nums[2])
}
