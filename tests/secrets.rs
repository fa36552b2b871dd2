//! Credentials and signed-URL tokens never leave the process: `vqprobe check` and the agent
//! run with a user:password and a `?token=…` in every kind of URL (RTSP against a real
//! GStreamer server with Digest auth, right and wrong password; HLS against the real
//! origin; `file://`; the MQTT broker URL against a real mosquitto with a password file),
//! and every byte they print is searched for the secrets: stdout, stderr (the log), and
//! every MQTT message (events, stats, status) seen by a `mosquitto_sub` on `#`.
//!
//! Passwords hold unencoded `/`, `+`, `?` and `@` on purpose (defect 12): the URL must
//! still be split right, and nothing of the password printed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::media_dir;
use common::mqtt::{wait_for, BrokerOpts, Mosquitto, SubOpts, Subscriber};
use common::peers::{make_hls, signal_group, HlsServer, RtspServer, TempDir};

// Every secret is a distinctive string: any 6-byte window of it found in the output is a
// leak (so half a password printed after a bad split is caught too).
const RTSP_USER: &str = "camUser7Q";
const RTSP_PASS: &str = "Rt/Pass+W0rd";
const RTSP_WRONG: &str = "Wr0ng/Pw+7x";
const RTSP_TOKEN: &str = "RTSPTOKEN-a1b2c3";
const HLS_USER: &str = "hlsUser8K";
const HLS_PASS: &str = "Hls/Pa@ss+9";
const HLS_TOKEN: &str = "HLSSIG-d4e5f6";
const HLS_404_TOKEN: &str = "HLSMISS-0x0x0x";
const FILE_TOKEN: &str = "FILETOKEN-g7h8";
const FILE_MISSING_TOKEN: &str = "FILEGONE-i9j0";
const RELOAD_TOKEN: &str = "RELOADTOK-k1l2";
const MQTT_USER: &str = "mqttUser3P";
const MQTT_PASS: &str = "Mq/tt+Pw?x5";
const MQTT_WRONG: &str = "MqWrong/+y6";
const CONFIG_PASS_NUM: &str = "98765432";

fn secrets() -> Vec<&'static str> {
    vec![
        RTSP_USER,
        RTSP_PASS,
        RTSP_WRONG,
        RTSP_TOKEN,
        HLS_USER,
        HLS_PASS,
        HLS_TOKEN,
        HLS_404_TOKEN,
        FILE_TOKEN,
        FILE_MISSING_TOKEN,
        RELOAD_TOKEN,
        MQTT_USER,
        MQTT_PASS,
        MQTT_WRONG,
        CONFIG_PASS_NUM,
    ]
}

/// Every 6-byte window of every secret, and each secret with `+` turned into a space and
/// percent-encoded (what a careless decoder or encoder would print).
fn needles() -> Vec<String> {
    let mut n = Vec::new();
    for s in secrets() {
        for w in s.as_bytes().windows(6) {
            n.push(String::from_utf8(w.to_vec()).unwrap());
        }
        n.push(s.replace('+', " "));
        n.push(s.replace('/', "%2F"));
    }
    n
}

/// Fails with every leaked needle and where it was found.
fn assert_clean(what: &str, text: &str) {
    let leaks: Vec<String> = needles()
        .into_iter()
        .filter(|n| text.contains(n.as_str()))
        .collect();
    if !leaks.is_empty() {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| leaks.iter().any(|n| l.contains(n.as_str())))
            .take(12)
            .collect();
        panic!(
            "{what}: secrets printed: {leaks:?}\n--- lines:\n{}",
            lines.join("\n")
        );
    }
}

fn clip(name: &str) -> String {
    media_dir().join(name).display().to_string()
}

/// VOD renditions of a ground-truth clip (as tests/hls.rs makes them).
fn renditions() -> std::path::PathBuf {
    let out = media_dir()
        .parent()
        .expect("media dir has a parent")
        .join("test-hls-multi");
    make_hls(&out, &media_dir().join("multi_main_360p.ts"));
    out
}

/// Runs `vqprobe ARGS` to the end; returns (exit success, stdout + stderr).
fn vqprobe_all(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vqprobe"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run vqprobe");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "vqprobe panicked: {text}");
    (out.status.success(), text)
}

struct Peers {
    rtsp: RtspServer,
    hls: HlsServer,
}

impl Peers {
    fn start() -> Peers {
        let rtsp = RtspServer::start(&[("/cam", "live")], Some(("/cam", RTSP_USER, RTSP_PASS)));
        let hls = HlsServer::start(&renditions(), None);
        Peers { rtsp, hls }
    }

    fn rtsp_url(&self, pass: &str) -> String {
        format!(
            "rtsp://{RTSP_USER}:{pass}@127.0.0.1:{}/cam?token={RTSP_TOKEN}",
            self.rtsp.port
        )
    }

    fn hls_url(&self) -> String {
        format!(
            "http://{HLS_USER}:{HLS_PASS}@127.0.0.1:{}/vod_ts/index.m3u8?sig={HLS_TOKEN}#t=0",
            self.hls.port
        )
    }

    fn hls_missing_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/nope/index.m3u8?sig={HLS_404_TOKEN}",
            self.hls.port
        )
    }
}

fn file_url() -> String {
    format!("file://{}?token={FILE_TOKEN}", clip("black_high_360p.ts"))
}

fn missing_file_url() -> String {
    format!("file:///nonexistent/vqprobe/x.ts?token={FILE_MISSING_TOKEN}")
}

#[test]
fn check_prints_no_credential_and_no_token() {
    let p = Peers::start();
    // The right password: media flows (the split of `user:Rt/Pass+W0rd@` is right and
    // `+` is not decoded to a space, or Digest auth would fail).
    let (ok, out) = vqprobe_all(&[
        "check",
        &p.rtsp_url(RTSP_PASS),
        "--format",
        "json",
        "--duration",
        "4",
    ]);
    assert!(ok, "{out}");
    assert!(
        !out.contains("source_down"),
        "the right password must be accepted:\n{out}"
    );
    assert_clean("check rtsp (right password)", &out);
    // The wrong password: source_down with a reason, no secret.
    let (ok, out) = vqprobe_all(&[
        "check",
        &p.rtsp_url(RTSP_WRONG),
        "--format",
        "json",
        "--duration",
        "3",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("source_down"), "{out}");
    assert_clean("check rtsp (wrong password)", &out);
    for (what, url, secs) in [
        ("check hls", p.hls_url(), "30"),
        ("check hls 404", p.hls_missing_url(), "3"),
        ("check file", file_url(), "30"),
        ("check missing file", missing_file_url(), "3"),
    ] {
        let (_, out) = vqprobe_all(&["check", &url, "--format", "json", "--duration", secs]);
        assert_clean(what, &out);
        if what == "check file" || what == "check hls" {
            assert!(
                out.contains("\"black\"") || out.contains("\"kind\""),
                "{what}: no event:\n{out}"
            );
        }
    }
    // URLs that do not parse: the error names the input without its secrets.
    for bad in [
        format!("rtsp://{RTSP_USER}:{RTSP_PASS}@bad host/x?token={RTSP_TOKEN}"),
        format!("ftp://{HLS_USER}:{HLS_PASS}@h/x?sig={HLS_TOKEN}"),
        format!("https://{HLS_USER}:{HLS_PASS}@/x.m3u8?sig={HLS_TOKEN}"),
    ] {
        let (ok, out) = vqprobe_all(&["check", &bad, "--duration", "1"]);
        assert!(!ok, "{bad} accepted: {out}");
        assert_clean(&format!("check {bad}"), &out);
    }
}

/// `vqprobe run` with the given config; stdout and stderr go to files.
struct Run {
    child: std::process::Child,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Run {
    fn start(dir: &Path, cfg: &Path, tag: &str) -> Run {
        let out = dir.join(format!("{tag}.stdout"));
        let err = dir.join(format!("{tag}.stderr"));
        use std::os::unix::process::CommandExt;
        let child = Command::new(env!("CARGO_BIN_EXE_vqprobe"))
            .args(["run", "--config"])
            .arg(cfg)
            .env("RUST_LOG", "info")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start vqprobe run");
        Run { child, out, err }
    }

    fn output(&self) -> String {
        format!(
            "{}\n{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    fn signal(&self, sig: &str) {
        signal_group(self.child.id(), sig);
    }

    fn stop(&mut self) {
        self.signal("TERM");
        if wait_for(Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten()
        })
        .is_none()
        {
            self.signal("KILL");
            let _ = self.child.wait();
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // Not after `stop` reaped it: its pid may belong to another test's process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.signal("KILL");
        let _ = self.child.wait();
    }
}

fn agent_config(
    broker_url: &str,
    spool: &Path,
    streams: &[(&str, String)],
    mqtt_extra: &str,
) -> String {
    let mut s = format!(
        "probe_id = \"edge-secrets\"\nstats_interval = \"1s\"\nshutdown_timeout = \"3s\"\n\
         [mqtt]\nurl = {}\nkeepalive = \"2s\"\nconnect_timeout = \"2s\"\nbackoff_max = \"1s\"\n{mqtt_extra}\n\
         [spool]\ndir = \"{}\"\n[live]\nconnect_timeout = 2.0\n",
        toml_str(broker_url),
        spool.display()
    );
    for (id, url) in streams {
        s.push_str(&format!(
            "[[streams]]\nid = \"{id}\"\nurl = {}\n",
            toml_str(url)
        ));
        if url.starts_with("file://") {
            s.push_str("pace = \"fast\"\n");
        }
    }
    s
}

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[test]
fn agent_prints_and_publishes_no_credential_and_no_token() {
    let p = Peers::start();
    let dir = TempDir::new("secrets-agent");
    let broker = Mosquitto::start(
        &dir.path().join("broker"),
        &BrokerOpts {
            auth: Some((MQTT_USER.into(), MQTT_PASS.into())),
            ..Default::default()
        },
    );
    // Everything published, on every topic.
    let sub = Subscriber::start(
        broker.port,
        "#",
        &SubOpts {
            auth: Some((MQTT_USER.into(), MQTT_PASS.into())),
            ..Default::default()
        },
    );
    let broker_url = format!("mqtt://{MQTT_USER}:{MQTT_PASS}@127.0.0.1:{}", broker.port);
    let streams = vec![
        ("rtsp-ok", p.rtsp_url(RTSP_PASS)),
        ("rtsp-wrong", p.rtsp_url(RTSP_WRONG)),
        ("hls", p.hls_url()),
        ("hls-404", p.hls_missing_url()),
        ("file", file_url()),
        ("file-missing", missing_file_url()),
    ];
    let cfg = dir.path().join("vqprobe.toml");
    std::fs::write(
        &cfg,
        agent_config(&broker_url, &dir.path().join("spool"), &streams, ""),
    )
    .unwrap();
    // The config check prints nothing secret either.
    let (ok, out) = vqprobe_all(&["run", "--config", cfg.to_str().unwrap(), "--check-config"]);
    assert!(ok, "{out}");
    assert_clean("run --check-config", &out);

    let mut run = Run::start(dir.path(), &cfg, "agent");
    // Online (the password with `/`, `+` and `?` in the URL was split and sent right),
    // events from the streams, stats of every stream.
    wait_for(Duration::from_secs(20), || {
        sub.on("/status")
            .iter()
            .any(|m| m.payload.contains("\"online\""))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("never online:\n{}", run.output()));
    wait_for(Duration::from_secs(30), || {
        let ev = sub.on("/events");
        let streams_with_events = ["rtsp-wrong", "hls-404", "file"]
            .iter()
            .filter(|s| ev.iter().any(|m| m.topic.contains(&format!("/{s}/"))))
            .count();
        (streams_with_events == 3 && sub.on("/stats").len() >= 12).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "missing events or stats: {:#?}\n{}",
            sub.messages(),
            run.output()
        )
    });
    // A reload that adds a stream with a token (logged at start).
    let mut more = streams.clone();
    more.push((
        "reloaded",
        format!("file://{}?token={RELOAD_TOKEN}", clip("black_high_360p.ts")),
    ));
    std::fs::write(
        &cfg,
        agent_config(&broker_url, &dir.path().join("spool"), &more, ""),
    )
    .unwrap();
    run.signal("HUP");
    std::thread::sleep(Duration::from_secs(4));
    run.stop();
    let out = run.output();
    assert!(out.contains("reloaded"), "{out}");
    assert_clean("agent stdout/stderr", &out);
    let msgs = sub.messages();
    assert!(
        msgs.iter().any(|m| m.topic.ends_with("/rtsp-ok/stats")),
        "{msgs:#?}"
    );
    let all: String = msgs
        .iter()
        .map(|m| format!("{} {}\n", m.topic, m.payload))
        .collect();
    assert_clean("MQTT messages (events, stats, status)", &all);

    // The wrong broker password, given in the config: refused, said clearly, not printed.
    let cfg2 = dir.path().join("wrong.toml");
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let extra = format!(
        "username = \"{MQTT_USER}\"\npassword = {}\n",
        toml_str(MQTT_WRONG)
    );
    std::fs::write(
        &cfg2,
        agent_config(&url, &dir.path().join("spool2"), &[], &extra),
    )
    .unwrap();
    let mut run = Run::start(dir.path(), &cfg2, "wrong");
    std::thread::sleep(Duration::from_secs(3));
    run.stop();
    let out = run.output();
    assert!(
        out.contains("bad user name or password") || out.contains("not authorized"),
        "{out}"
    );
    assert_clean("agent with a wrong broker password", &out);

    // Config errors do not echo the values of secret fields.
    let bad = [
        format!("username = \"{MQTT_USER}\"\npassword = {CONFIG_PASS_NUM}\n"),
        format!(
            "password = {}\npassword_file = \"/x\"\n",
            toml_str(MQTT_PASS)
        ),
    ];
    for (i, extra) in bad.iter().enumerate() {
        let c = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(
            &c,
            agent_config(&url, &dir.path().join("spool3"), &[], extra),
        )
        .unwrap();
        let (ok, out) = vqprobe_all(&["run", "--config", c.to_str().unwrap(), "--check-config"]);
        assert!(!ok, "{out}");
        assert_clean(&format!("config error {i}"), &out);
    }
    for (i, broker) in [
        format!("mqtt://{MQTT_USER}:{MQTT_PASS}@127.0.0.1:1883/path"),
        format!("mqtt://{MQTT_USER}:{MQTT_PASS}@127.0.0.1:1883?token={RTSP_TOKEN}"),
        format!("http://{MQTT_USER}:{MQTT_PASS}@127.0.0.1:1883"),
        format!("mqtt://{MQTT_USER}:{MQTT_PASS}@127.0.0.1:99999"),
    ]
    .iter()
    .enumerate()
    {
        let c = dir.path().join(format!("badurl{i}.toml"));
        std::fs::write(
            &c,
            agent_config(broker, &dir.path().join("spool4"), &[], ""),
        )
        .unwrap();
        let (ok, out) = vqprobe_all(&["run", "--config", c.to_str().unwrap(), "--check-config"]);
        assert!(!ok, "{broker} accepted: {out}");
        assert_clean(&format!("broker URL error {i}"), &out);
    }
}
