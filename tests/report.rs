//! The HTML report of `check --report` and `demo --report`, on ground-truth clips: what
//! it plots is what the clip holds (the luma dips where the picture is black, the sound
//! level where it is silent), the timeline puts each defect where the events say, the
//! thumbnails decode, and a real browser (headless Chromium) renders it all without a
//! console error or an external request.
//!
//! The browser checks need `chromium` (installed by .ci/install-deps). Without it they
//! are skipped with a message, except under CI=true, where its absence fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::peers::TempDir;
use common::{check_json, media_dir, paired_ends, vqprobe};
use serde_json::Value;

/// A headless Chromium, or None (after saying why) when there is none and this is not
/// CI.
fn browser() -> Option<PathBuf> {
    let names = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
        "chrome-headless-shell",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no headless Chromium on PATH under CI: .ci/install-deps must install `chromium`"
    );
    eprintln!("SKIPPED browser checks: no chromium/google-chrome on PATH (apt install chromium)");
    None
}

/// Loads `page` in headless Chromium and returns (the DOM after the load event, the
/// browser's log). Killed after 90 s.
fn load(chrome: &Path, page: &Path, scratch: &Path) -> (String, String) {
    let profile = scratch.join(format!(
        "profile-{}",
        page.file_stem().unwrap().to_string_lossy()
    ));
    let mut child = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    // Drain both pipes while waiting: a DOM dump larger than the pipe buffer (64 KiB;
    // a report with a few thumbnails) would otherwise block Chromium forever.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish loading {} in 90 s", page.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (out.join().unwrap(), err.join().unwrap())
}

/// What the page measures of itself once loaded (the report has no script: this one is
/// added to a copy, for the test only).
const PROBE_JS: &str = r#"<script>
window.addEventListener('load', function () {
  const box = e => { const b = e.getBoundingClientRect(); return {x: b.x, y: b.y, w: b.width, h: b.height}; };
  const r = {};
  r.imgs = [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight, box: box(i)}));
  const tl = document.getElementById('timeline');
  r.timeline = tl ? box(tl) : null;
  r.defects = [...document.querySelectorAll('#timeline rect.defect')].map(e => Object.assign({kind: e.dataset.kind}, box(e)));
  r.plots = {};
  for (const id of ['luma', 'motion', 'edges', 'sharpness', 'audio', 'loudness', 'clipping', 'channels']) {
    const s = document.getElementById('plot-' + id);
    r.plots[id] = s ? {
      box: box(s),
      line: [...s.querySelectorAll('polyline.series')].reduce((a, p) => a + p.getTotalLength(), 0),
      thresholds: s.querySelectorAll('.threshold').length,
    } : null;
  }
  const pre = document.createElement('pre');
  pre.id = 'vq-result';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"#;

/// Renders `report` in the browser: asserts no console message at all on the report
/// itself, then returns what the probe script measured on a copy.
fn render(chrome: &Path, report: &Path, scratch: &Path) -> Value {
    let (dom, log) = load(chrome, report, scratch);
    assert!(
        dom.contains("id=\"timeline\""),
        "the report did not load: {dom:.300}"
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let html = std::fs::read_to_string(report).unwrap();
    let probe = scratch.join("probe.html");
    std::fs::write(
        &probe,
        html.replace("</body>", &format!("{PROBE_JS}</body>")),
    )
    .unwrap();
    let (dom, log) = load(chrome, &probe, scratch);
    let start = dom
        .find("<pre id=\"vq-result\">")
        .unwrap_or_else(|| panic!("probe script did not run: {log}"));
    let rest = &dom[start + "<pre id=\"vq-result\">".len()..];
    let json = &rest[..rest.find("</pre>").unwrap()];
    let json = json
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// Static checks every report passes: one document, no script, no external resource.
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{html:.100}");
    assert!(html.trim_end().ends_with("</html>"));
    for bad in [
        "<script",
        "<link",
        "@import",
        "url(",
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "<iframe",
    ] {
        assert!(!html.contains(bad), "the report holds {bad:?}");
    }
    // Every image is embedded.
    for (i, _) in html.match_indices("<img ") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        assert!(tag.contains("src=\"data:image/jpeg;base64,"), "{tag:.120}");
    }
}

/// An attribute of the element whose opening tag starts with `open` (`<svg id="x"`).
fn attr<'a>(html: &'a str, open: &str, name: &str) -> &'a str {
    let i = html.find(open).unwrap_or_else(|| panic!("no {open}"));
    let tag = &html[i..i + html[i..].find('>').unwrap()];
    let k = tag
        .find(&format!(" {name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {tag}"));
    let v = &tag[k + name.len() + 3..];
    &v[..v.find('"').unwrap()]
}

fn nums(s: &str) -> Vec<f64> {
    s.split_whitespace().map(|v| v.parse().unwrap()).collect()
}

/// A plot's mean line as (media seconds, value) points, read back from the SVG with
/// the plot's own axes (`data-area`, `data-y`, `data-duration`).
fn plotted(html: &str, id: &str) -> Vec<(f64, f64)> {
    let open = format!("<svg id=\"plot-{id}\"");
    let area = nums(attr(html, &open, "data-area"));
    let y = nums(attr(html, &open, "data-y"));
    let duration: f64 = attr(html, &open, "data-duration").parse().unwrap();
    let svg = &html[html.find(&open).unwrap()..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    let mut pts = vec![];
    for (i, _) in svg.match_indices("class=\"series\" points=\"") {
        let p = &svg[i + "class=\"series\" points=\"".len()..];
        for xy in p[..p.find('"').unwrap()].split_whitespace() {
            let (x, v) = xy.split_once(',').unwrap();
            let (x, v): (f64, f64) = (x.parse().unwrap(), v.parse().unwrap());
            let t = (x - area[0]) / area[2] * duration;
            let val = y[1] - (v - area[1]) / area[3] * (y[1] - y[0]);
            pts.push((t, val));
        }
    }
    pts
}

/// Runs `check --report` on a ground-truth clip: (events, report HTML, its path).
fn check_report(clip: &str, dir: &TempDir) -> (Vec<Value>, String, PathBuf) {
    let path = dir.path().join(format!("{clip}.html"));
    let (ok, events, stderr) = check_json(
        &media_dir().join(clip),
        &["--report", path.to_str().unwrap()],
    );
    assert!(ok, "{stderr}");
    let html = std::fs::read_to_string(&path).expect("the report was written");
    (events, html, path)
}

/// The timeline's bars sit where the events put the defects (to 1.5 px).
fn assert_bars_match(r: &Value, html: &str, ends: &[Value]) {
    let duration: f64 = attr(html, "<svg id=\"timeline\"", "data-duration")
        .parse()
        .unwrap();
    let area = nums(attr(html, "<svg id=\"timeline\"", "data-area"));
    let tl = &r["timeline"];
    let px = area[2] / duration;
    // Bars are drawn lane by lane (one lane per kind), events come in time order:
    // compare them sorted by kind, then start.
    let mut bars: Vec<&Value> = r["defects"].as_array().unwrap().iter().collect();
    assert_eq!(bars.len(), ends.len(), "{bars:?}");
    let key = |kind: &Value, at: f64| (kind.as_str().unwrap_or("").to_owned(), at);
    bars.sort_by(|a, b| {
        key(&a["kind"], a["x"].as_f64().unwrap())
            .partial_cmp(&key(&b["kind"], b["x"].as_f64().unwrap()))
            .unwrap()
    });
    let mut ends: Vec<&Value> = ends.iter().collect();
    ends.sort_by(|a, b| {
        key(&a["kind"], a["start_s"].as_f64().unwrap())
            .partial_cmp(&key(&b["kind"], b["start_s"].as_f64().unwrap()))
            .unwrap()
    });
    for (bar, end) in bars.iter().zip(ends) {
        assert_eq!(bar["kind"], end["kind"]);
        let x = tl["x"].as_f64().unwrap() + area[0] + end["start_s"].as_f64().unwrap() * px;
        let w = end["duration_s"].as_f64().unwrap() * px;
        assert!(
            (bar["x"].as_f64().unwrap() - x).abs() < 1.5,
            "{bar} vs x={x}"
        );
        assert!(
            (bar["w"].as_f64().unwrap() - w).abs() < 1.5,
            "{bar} vs w={w}"
        );
        assert!(bar["h"].as_f64().unwrap() > 5.0, "{bar}");
    }
}

/// Every plot is laid out with its threshold; the picture plots have a line, the sound
/// plots when the clip has sound (`with_audio`), the quietest-channel plot only for a
/// track of two or more channels (`stereo`).
fn assert_plots_drawn(r: &Value, with_audio: bool, stereo: bool) {
    for id in [
        "luma",
        "motion",
        "edges",
        "sharpness",
        "audio",
        "loudness",
        "clipping",
        "channels",
    ] {
        let p = &r["plots"][id];
        assert!(p["box"]["w"].as_f64().unwrap() > 500.0, "{id}: {p}");
        assert!(p["box"]["h"].as_f64().unwrap() > 100.0, "{id}: {p}");
        let sound = ["audio", "loudness", "clipping", "channels"].contains(&id);
        if id == "channels" && with_audio && !stereo {
            assert_eq!(
                p["line"].as_f64().unwrap(),
                0.0,
                "mono has no channel line: {p}"
            );
        } else if !sound || with_audio {
            assert!(p["line"].as_f64().unwrap() > 200.0, "{id} has no line: {p}");
            assert_eq!(p["thresholds"], 1, "{id}: {p}");
        }
    }
}

#[test]
fn a_report_plots_what_the_clip_holds_and_renders_in_a_browser() {
    let dir = TempDir::new("report");
    // Black 2–5 s, freeze 8–11 s, silence 14–17 s (tests/media/make_media.sh).
    let (events, html, path) = check_report("multi_main_360p.ts", &dir);
    let ends = paired_ends(&events);
    let kinds: Vec<&str> = ends.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["black", "freeze", "silence"], "{ends:?}");
    assert_self_contained(&html);
    assert!(html.contains("<td>h264, 640×360</td>"), "video properties");
    assert!(html.contains("<td>aac ("), "audio properties");
    assert!(
        html.contains("100.0% of pictures decoded"),
        "--report decodes every picture"
    );
    // One thumbnail per picture defect (black, freeze), none for the silence.
    assert_eq!(html.matches("<img class=\"thumb\"").count(), 2);
    for e in &ends {
        assert!(html.contains(&format!(
            "id=\"defect-{}\"",
            e["defect_id"].as_str().unwrap()
        )));
    }
    // The luma line is near black (16) inside the black interval, bright outside.
    let luma = plotted(&html, "luma");
    assert!(luma.len() >= 18, "{luma:?}");
    for &(t, v) in &luma {
        if (2.6..4.6).contains(&t) {
            assert!(v < 25.0, "luma {v} at {t} s should be black");
        } else if !(1.4..5.6).contains(&t) {
            assert!(v > 60.0, "luma {v} at {t} s should be picture");
        }
    }
    // The motion line is far below the freeze threshold (-40 dB) while frozen, and at
    // least 15 dB above that while the picture moves (no points inside the black,
    // whose pictures the freeze detector does not compare).
    let motion = plotted(&html, "motion");
    let frozen: Vec<f64> = motion
        .iter()
        .filter(|p| (8.4..10.6).contains(&p.0))
        .map(|p| p.1)
        .collect();
    let moving: Vec<f64> = motion
        .iter()
        .filter(|p| !(7.4..11.6).contains(&p.0))
        .map(|p| p.1)
        .collect();
    assert!(frozen.len() >= 2 && moving.len() >= 8, "{motion:?}");
    assert!(frozen.iter().all(|&v| v < -55.0), "{motion:?}");
    let top = frozen.iter().copied().fold(f64::MIN, f64::max);
    assert!(moving.iter().all(|&v| v > top + 15.0), "{motion:?}");
    assert!(
        !motion.iter().any(|p| (2.4..4.6).contains(&p.0)),
        "black pictures plotted: {motion:?}"
    );
    // The sound level is silent inside the silence, a tone outside it.
    let audio = plotted(&html, "audio");
    for &(t, v) in &audio {
        if (14.6..16.6).contains(&t) {
            assert!(v < -60.0, "sound {v} dBFS at {t} s should be silent");
        } else if !(13.4..17.6).contains(&t) && t < 19.5 {
            assert!(v > -40.0, "sound {v} dBFS at {t} s should be a tone");
        }
    }
    let Some(chrome) = browser() else { return };
    let r = render(&chrome, &path, dir.path());
    let imgs = r["imgs"].as_array().unwrap();
    assert_eq!(imgs.len(), 2);
    for i in imgs {
        assert_eq!(
            (i["w"].as_u64(), i["h"].as_u64()),
            (Some(320), Some(180)),
            "{i}"
        );
        assert!(i["box"]["w"].as_f64().unwrap() > 100.0, "{i}");
    }
    assert_bars_match(&r, &html, &ends);
    assert_plots_drawn(&r, true, true);
}

#[test]
fn the_demo_report_shows_its_seven_scripted_defects() {
    let dir = TempDir::new("report-demo");
    let path = dir.path().join("demo.html");
    let out = vqprobe(&[
        "demo",
        "--format",
        "json",
        "--report",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ends = paired_ends(&events);
    let html = std::fs::read_to_string(&path).unwrap();
    assert_self_contained(&html);
    assert!(
        html.contains("7/7 scripted defects found, 0 unexpected"),
        "the verdict"
    );
    // Black, freeze, corruption, uniform, test_pattern and blur have pictures; silence
    // has none.
    assert_eq!(html.matches("<img class=\"thumb\"").count(), 6);
    let Some(chrome) = browser() else { return };
    let r = render(&chrome, &path, dir.path());
    assert!(
        r["imgs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["w"] == 320 && i["h"] == 180),
        "{r}"
    );
    assert_bars_match(&r, &html, &ends);
    assert_plots_drawn(&r, true, false);
}

/// Plotted (bin centre, mean) points of `id` with their centre inside `range`.
fn within(pts: &[(f64, f64)], range: std::ops::Range<f64>) -> Vec<f64> {
    pts.iter()
        .filter(|p| range.contains(&p.0))
        .map(|p| p.1)
        .collect()
}

/// The sound plots show what the clips hold: the share of samples at full scale and
/// the short-term loudness rise where the tone is clipped (4–7 s), the quietest
/// channel drops where one channel is digitally silent (3–6 s), and neither moves
/// where nothing happens.
#[test]
fn the_sound_plots_show_clipping_loudness_and_a_lost_channel() {
    let dir = TempDir::new("report-sound");
    let (events, html, path) = check_report("clipping_stereo_720p.ts", &dir);
    let clip_ends = paired_ends(&events);
    let ends = &clip_ends;
    let mut kinds: Vec<&str> = ends.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["clipping", "loudness"], "{ends:?}");
    // About 19% of the samples are at |s| >= 0.95 while clipped, none elsewhere
    // (tests/media/README.md). Bins are one second, plotted at their centres.
    let clip = plotted(&html, "clipping");
    let inside = within(&clip, 4.4..6.6);
    // (The 1024-sample AAC frames around 4 s and 7 s straddle the edges: the bins
    // that hold them are left out.)
    let outside: Vec<f64> = within(&clip, 0.0..3.0)
        .into_iter()
        .chain(within(&clip, 7.4..10.0))
        .collect();
    assert!(inside.len() == 3 && outside.len() == 6, "{clip:?}");
    assert!(inside.iter().all(|&v| v > 5.0), "{clip:?}");
    assert!(outside.iter().all(|&v| v < 0.1), "{clip:?}");
    // The -20 dBFS tone reads about -17 LUFS; clipped, +1 LUFS: the ceiling (-10) is
    // crossed once the clipped part dominates the 3-s window. No value before 3 s of
    // sound were measured (the block that completes them may start just before 3 s).
    let loud = plotted(&html, "loudness");
    assert!(
        loud.iter().all(|p| p.0 > 2.0),
        "short-term before 3 s: {loud:?}"
    );
    let before = within(&loud, 3.0..4.0);
    let clipped = within(&loud, 6.0..7.0);
    assert!(before.len() == 1 && clipped.len() == 1, "{loud:?}");
    assert!((-22.0..-12.0).contains(&before[0]), "{loud:?}");
    assert!(clipped[0] > -10.0, "{loud:?}");
    // Both channels carry the tone: the quietest one stays near -20 dBFS.
    let quiet = plotted(&html, "channels");
    assert!(quiet.len() >= 9, "{quiet:?}");
    assert!(quiet.iter().all(|&(_, v)| v > -30.0), "{quiet:?}");

    let (events, html2, _) = check_report("chanloss_stereo_360p.ts", &dir);
    let ends = paired_ends(&events);
    let kinds: Vec<&str> = ends.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["channel_loss"], "{ends:?}");
    let quiet = plotted(&html2, "channels");
    let lost = within(&quiet, 3.4..5.6);
    let both = within(&quiet, 0.0..2.6)
        .into_iter()
        .chain(within(&quiet, 6.4..10.0))
        .collect::<Vec<_>>();
    assert!(lost.len() == 3 && both.len() >= 5, "{quiet:?}");
    assert!(lost.iter().all(|&v| v < -60.0), "{quiet:?}");
    assert!(both.iter().all(|&v| v > -30.0), "{quiet:?}");
    // Nothing clipped in it.
    let clip = plotted(&html2, "clipping");
    assert!(
        clip.len() >= 9 && clip.iter().all(|&(_, v)| v < 0.1),
        "{clip:?}"
    );

    let Some(chrome) = browser() else { return };
    let r = render(&chrome, &path, dir.path());
    assert_bars_match(&r, &html, &clip_ends);
    assert_plots_drawn(&r, true, true);
}

#[test]
fn a_clean_report_has_no_defect_and_a_bad_report_path_fails_before_analysing() {
    let dir = TempDir::new("report-clean");
    let (events, html, _) = check_report("clean_dark_720p.ts", &dir);
    assert!(events.is_empty(), "{events:?}");
    assert_self_contained(&html);
    assert!(html.contains("<p id=\"no-defects\">No defect found.</p>"));
    assert!(!html.contains("class=\"defect\""));
    assert!(!html.contains("<img"));
    // Bad paths: refused with the option named, before any analysis, nothing written.
    let clip = media_dir().join("black_high_360p.ts");
    let missing = dir.path().join("no/such/folder/r.html");
    for (path, why) in [
        (missing.to_str().unwrap(), "its folder does not exist"),
        (dir.path().to_str().unwrap(), "is a folder"),
    ] {
        let out = vqprobe(&["check", clip.to_str().unwrap(), "--report", path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("--report") && stderr.contains(why),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "analysed anyway");
    }
    assert!(!missing.exists());
}

#[test]
fn a_report_never_shows_credentials_of_the_input() {
    let dir = TempDir::new("report-secret");
    let path = dir.path().join("r.html");
    // A dead HLS server (a port nobody listens on): the source is down, the report is
    // still written, and names the input without its password or token.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://viewer:s3cretPW@127.0.0.1:{port}/live/index.m3u8?token=T0KEN99");
    let out = vqprobe(&[
        "check",
        &url,
        "--format",
        "json",
        "--duration",
        "3",
        "--connect-timeout",
        "1",
        "--report",
        path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"kind\":\"source_down\""), "{stdout}");
    let html = std::fs::read_to_string(&path).expect("the report was written");
    assert_self_contained(&html);
    assert!(
        !html.contains("s3cretPW") && !html.contains("T0KEN99"),
        "credentials leaked"
    );
    assert!(html.contains("127.0.0.1"), "the input is still named");
    assert!(html.contains("data-kind=\"source_down\""));
}
