//! The command line: `demo`, errors for bad invocations and inputs, text output.

mod common;

use common::*;

#[test]
fn demo_finds_every_scripted_defect_and_nothing_else() {
    let out = vqprobe(&["demo", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ends = paired_ends(&events);
    assert_intervals(
        "demo",
        &ends,
        &[
            ("black".into(), 3.0, 6.0),
            ("freeze".into(), 9.0, 12.0),
            ("corruption".into(), 15.2, 16.0),
            ("silence".into(), 19.0, 22.0),
            ("uniform".into(), 25.0, 31.0),
            ("test_pattern".into(), 34.0, 46.0),
            ("blur".into(), 49.0, 61.0),
        ],
        0.5,
    );
    assert!(
        stderr.contains("7/7 scripted defects found, 0 unexpected"),
        "{stderr}"
    );
}

#[test]
fn demo_text_output_ends_with_the_comparison() {
    let out = vqprobe(&["demo"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("demo: 7/7 scripted defects found, 0 unexpected"),
        "{last}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("black ")).count(),
        2
    );
}

#[test]
fn missing_file_is_a_one_line_error() {
    let out = vqprobe(&["check", "/nonexistent/clip.ts"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/clip.ts") && stderr.contains("No such file"),
        "{stderr}"
    );
}

#[test]
fn unreadable_input_is_an_error() {
    // A directory cannot be read as a file.
    let dir = std::env::temp_dir();
    let out = vqprobe(&["check", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn empty_file_is_an_error() {
    let p = std::env::temp_dir().join(format!("vqprobe-empty-{}.ts", std::process::id()));
    std::fs::write(&p, b"").unwrap();
    let (ok, events, stderr) = check_json(&p, &[]);
    std::fs::remove_file(&p).ok();
    assert!(!ok && events.is_empty());
    assert!(stderr.contains("empty file"), "{stderr}");
}

#[test]
fn credentials_in_urls_never_reach_the_output() {
    // Nothing listens on port 1: source_down for the run, with the URL redacted.
    let out = vqprobe(&[
        "check",
        "rtsp://admin:hunter2@127.0.0.1:1/cam",
        "--format",
        "json",
        "--duration",
        "1.5",
    ]);
    assert!(out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("hunter2") && !all.contains("admin"), "{all}");
    assert!(all.contains("source_down"), "{all}");
    // Unknown schemes are refused, redacted too.
    let out = vqprobe(&["check", "srt://admin:hunter2@127.0.0.1:1/cam"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("hunter2") && stderr.contains("srt://***@127.0.0.1:1/cam"),
        "{stderr}"
    );
}

#[test]
fn live_durations_out_of_range_are_refused() {
    for (flag, value) in [
        ("--stall-after", "inf"),
        ("--stall-after", "NaN"),
        ("--connect-timeout", "-1"),
        ("--connect-timeout", "1e300"),
        ("--duration", "1e300"),
    ] {
        // A bounded run, so that a value that is wrongly accepted cannot hang the test.
        let arg = format!("{flag}={value}");
        let mut args = vec!["check", "http://127.0.0.1:9/x.m3u8", &arg];
        if flag != "--duration" {
            args.extend(["--duration", "3"]);
        }
        let out = vqprobe(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn detector_config_errors_name_the_field() {
    let p = std::env::temp_dir().join(format!("vqprobe-detect-{}.toml", std::process::id()));
    std::fs::write(&p, "[freeze]\nnoise_dbb = -45\n").unwrap();
    let out = vqprobe(&["check", "/dev/null", "--detect-config", p.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("noise_dbb") && stderr.contains("line 2"),
        "{stderr}"
    );
    std::fs::write(&p, "[silence]\nthreshold_dbfs = 3\n").unwrap();
    let out = vqprobe(&["check", "/dev/null", "--detect-config", p.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("silence.threshold_dbfs"), "{stderr}");
    std::fs::remove_file(&p).ok();
}

#[test]
fn detector_config_changes_the_outcome() {
    // With a 4 s minimum, the 3 s black window of the clip is no longer a defect.
    let p = std::env::temp_dir().join(format!("vqprobe-detect2-{}.toml", std::process::id()));
    std::fs::write(&p, "[black]\nmin_duration = 4.0\n").unwrap();
    let (ok, events, _) = check_json(
        &media_dir().join("black_high_360p.ts"),
        &["--detect-config", p.to_str().unwrap()],
    );
    std::fs::remove_file(&p).ok();
    assert!(ok);
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn version_names_commit_and_target() {
    let out = vqprobe(&["--version"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.starts_with(&format!("vqprobe {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
    assert!(s.contains("linux"), "{s}");
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "no command given"),
        (&["chek", "x.ts"], "unknown command 'chek'"),
        (&["check"], "missing INPUT"),
        (&["check", "x.ts", "--bogus"], "--bogus"),
        (&["check", "x.ts", "--stall-after", "soon"], "--stall-after"),
        (&["demo", "--format=xml"], "--format"),
        (&["run", "--config"], "--config"),
    ];
    for (args, needle) in cases {
        let out = vqprobe(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("vqprobe: error: ") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
        assert!(stderr.trim_end().ends_with("--help)"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    for (args, usage) in [
        (&["--help"][..], "Usage: vqprobe <COMMAND>"),
        (&["help", "demo"], "Usage: vqprobe demo [OPTIONS]"),
        (&["check", "-h"], "Usage: vqprobe check [OPTIONS] <INPUT>"),
        (&["run", "--help"], "[default: /etc/vqprobe/config.toml]"),
    ] {
        let out = vqprobe(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        assert!(stdout.contains(usage), "{args:?}: {stdout}");
        assert!(out.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn pictures_above_max_pixels_are_refused_not_decoded() {
    let p = std::env::temp_dir().join(format!("vqprobe-maxpix-{}.toml", std::process::id()));
    std::fs::write(&p, "max_pixels = 1000000\n").unwrap();
    let (ok, events, stderr) = check_json(
        &media_dir().join("corrupt_baseline_1080p.ts"),
        &["--detect-config", p.to_str().unwrap()],
    );
    std::fs::remove_file(&p).ok();
    assert!(ok, "{stderr}");
    let ends = paired_ends(&events);
    // Not decoded: no corruption is seen, only the refusal, for the whole input.
    assert_eq!(ends.len(), 1, "{ends:#?}");
    let e = &ends[0];
    assert_eq!(e["kind"], "unsupported_codec");
    assert_eq!(e["metrics"]["codec"], "h264_above_max_resolution");
    assert_eq!(
        (
            e["metrics"]["width"].as_i64(),
            e["metrics"]["height"].as_i64()
        ),
        (Some(1920), Some(1080))
    );
    assert!(
        e["start_s"].as_f64().unwrap() < 0.1 && e["end_s"].as_f64().unwrap() > 9.5,
        "{e}"
    );
}
