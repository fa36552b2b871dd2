//! Home Assistant MQTT discovery (`[homeassistant] discovery = true`) against a real
//! mosquitto: the retained discovery configs, the problem states driven by a clip's
//! real defects, the frame-rate sensor's source, Home Assistant's birth message, and
//! the clearing of streams removed across a restart and by SIGHUP, and the configs sent
//! again after a reconnection.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::media_dir;
use common::mqtt::{wait_for, Agent, BrokerOpts, Mosquitto, Msg, SubOpts, Subscriber};
use common::peers::TempDir;
use serde_json::Value;

const PROBE: &str = "edge-ha-01";
const NODE: &str = "vqprobe_edge-ha-01";

/// An agent config with Home Assistant discovery on and `streams` = (id, clip, pace).
fn config(broker: &str, spool: &Path, streams: &[(&str, &str, &str)]) -> String {
    let mut s = format!(
        "probe_id = \"{PROBE}\"\nstats_interval = \"1s\"\nshutdown_timeout = \"5s\"\n\
         [mqtt]\nurl = \"{broker}\"\nkeepalive = \"2s\"\nconnect_timeout = \"2s\"\nbackoff_max = \"2s\"\n\
         [spool]\ndir = \"{}\"\n[homeassistant]\ndiscovery = true\n",
        spool.display()
    );
    for (id, clip, pace) in streams {
        s.push_str(&format!(
            "[[streams]]\nid = \"{id}\"\nurl = \"file://{}\"\npace = \"{pace}\"\n",
            media_dir().join(clip).display()
        ));
    }
    s
}

/// Payloads received on `topic`, in order.
fn payloads(sub: &Subscriber, topic: &str) -> Vec<String> {
    sub.messages()
        .into_iter()
        .filter(|m| m.topic == topic)
        .map(|m| m.payload)
        .collect()
}

/// What a fresh subscriber to `filter` gets flagged retained, by topic (live messages
/// published meanwhile are left out; an empty payload is no retained message at all).
fn retained(port: u16, filter: &str) -> HashMap<String, Msg> {
    let sub = Subscriber::start(port, filter, &SubOpts::default());
    std::thread::sleep(Duration::from_millis(700));
    sub.messages()
        .into_iter()
        .filter(|m| m.retained)
        .map(|m| (m.topic.clone(), m))
        .collect()
}

fn problem_topic(stream: &str, group: &str) -> String {
    format!("vqprobe/{PROBE}/{stream}/problem/{group}")
}

/// The discovery configs of `streams` (and the probe's) are all there, retained,
/// complete for their component and with distinct unique ids.
fn assert_configs(configs: &HashMap<String, Msg>, streams: &[&str]) {
    let mut want: HashSet<String> =
        HashSet::from([format!("homeassistant/binary_sensor/{NODE}/status/config")]);
    for s in streams {
        for g in ["picture", "sound", "delivery"] {
            want.insert(format!("homeassistant/binary_sensor/{NODE}/{s}_{g}/config"));
        }
        for w in ["fps", "bitrate"] {
            want.insert(format!("homeassistant/sensor/{NODE}/{s}_{w}/config"));
        }
    }
    let got: HashSet<String> = configs.keys().cloned().collect();
    assert_eq!(got, want, "retained discovery configs");
    let mut unique = HashSet::new();
    for (topic, m) in configs {
        assert!(m.retained, "{m:?}");
        assert!(
            !m.payload.contains("://"),
            "a URL in a payload: {}",
            m.payload
        );
        let c = m.json();
        let component = topic.split('/').nth(1).unwrap();
        for key in ["name", "unique_id", "state_topic", "device", "origin"] {
            assert!(c.get(key).is_some(), "{key} missing on {topic}: {c}");
        }
        assert!(
            unique.insert(c["unique_id"].as_str().unwrap().to_string()),
            "unique_id used twice: {c}"
        );
        let dev = &c["device"];
        let ids = dev["identifiers"].as_array().expect("device.identifiers");
        assert_eq!(ids.len(), 1, "{c}");
        assert!(dev["name"].as_str().is_some_and(|n| !n.is_empty()), "{c}");
        assert_eq!(dev["manufacturer"], "vqprobe");
        assert!(dev["sw_version"].as_str().is_some(), "{c}");
        if topic.ends_with("/status/config") {
            // The probe itself: connectivity, read from the status message.
            assert_eq!(c["device_class"], "connectivity");
            assert_eq!(c["state_topic"], format!("vqprobe/{PROBE}/status"));
            assert_eq!(ids[0], NODE);
            continue;
        }
        let stream = streams
            .iter()
            .find(|s| topic.contains(&format!("/{s}_")))
            .unwrap();
        assert_eq!(ids[0], format!("{NODE}_{stream}"));
        assert_eq!(dev["via_device"], NODE);
        let av = &c["availability"][0];
        assert_eq!(av["topic"], format!("vqprobe/{PROBE}/status"), "{c}");
        assert_eq!(av["value_template"], "{{ value_json.status }}");
        assert_eq!(av["payload_available"], "online");
        assert_eq!(av["payload_not_available"], "offline");
        match component {
            "binary_sensor" => {
                let group = topic
                    .rsplit('/')
                    .nth(1)
                    .unwrap()
                    .rsplit('_')
                    .next()
                    .unwrap();
                assert_eq!(c["device_class"], "problem", "{c}");
                assert_eq!(c["payload_on"], "ON");
                assert_eq!(c["payload_off"], "OFF");
                assert_eq!(c["state_topic"], problem_topic(stream, group));
            }
            "sensor" => {
                assert_eq!(c["state_class"], "measurement", "{c}");
                assert_eq!(c["state_topic"], format!("vqprobe/{PROBE}/{stream}/stats"));
                let unit = c["unit_of_measurement"].as_str().unwrap();
                if topic.ends_with("_fps/config") {
                    assert_eq!(unit, "fps");
                    assert_eq!(c["value_template"], "{{ value_json.fps }}");
                } else {
                    assert_eq!(unit, "bit/s");
                    assert_eq!(c["device_class"], "data_rate");
                    assert_eq!(c["value_template"], "{{ value_json.media_bitrate_bps }}");
                }
            }
            other => panic!("unexpected component {other} on {topic}"),
        }
    }
}

/// `value_template` `{{ value_json.<field> }}` applied to a stats payload.
fn template_value(template: &str, payload: &Value) -> Option<f64> {
    let field = template
        .strip_prefix("{{ value_json.")?
        .strip_suffix(" }}")?;
    payload[field].as_f64()
}

#[test]
fn discovery_configs_problem_states_birth_and_removed_streams() {
    let dir = TempDir::new("ha");
    let mut broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let ha = Subscriber::start(broker.port, "homeassistant/#", &SubOpts::default());
    let vq = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let spool = dir.path().join("spool");
    // `black`: black 3-6 s in 12 s at 25 fps, real time; `gone`: removed later.
    let streams = [
        ("black", "black_high_360p.ts", "realtime"),
        ("gone", "black_high_360p.ts", "fast"),
    ];
    let cfg_path = dir.path().join("vqprobe.toml");
    let mut agent = Agent::start(dir.path(), &config(&broker.url(), &spool, &streams));

    // The picture problem goes ON during the black and OFF after it; exactly once.
    let picture = problem_topic("black", "picture");
    wait_for(Duration::from_secs(40), || {
        (payloads(&vq, &picture).len() >= 3).then_some(())
    })
    .unwrap_or_else(|| panic!("picture states: {:?}", payloads(&vq, &picture)));
    // The clip is 12 s: past its end nothing else may come.
    wait_for(Duration::from_secs(30), || {
        vq.messages()
            .iter()
            .any(|m| {
                m.topic.ends_with("/black/stats") && m.json()["media_s"].as_f64() >= Some(11.5)
            })
            .then_some(())
    })
    .expect("the black stream reached its end");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(payloads(&vq, &picture), ["OFF", "ON", "OFF"]);
    // The clean sound and the file's delivery stay OFF, as announced at start.
    for g in ["sound", "delivery"] {
        assert_eq!(payloads(&vq, &problem_topic("black", g)), ["OFF"], "{g}");
    }
    // The events agree: one black, started and ended, on the black stream.
    let kinds: Vec<(String, String)> = vq
        .messages()
        .iter()
        .filter(|m| m.topic == format!("vqprobe/{PROBE}/black/events"))
        .map(|m| {
            let e = m.json();
            (
                e["kind"].as_str().unwrap().into(),
                e["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("black".into(), "start".into()),
            ("black".into(), "end".into())
        ]
    );

    // Every config retained (a fresh subscriber gets them), complete, unique.
    let configs = retained(broker.port, "homeassistant/#");
    assert_configs(&configs, &["black", "gone"]);
    // The problem states are retained too.
    let states = retained(broker.port, "vqprobe/+/+/problem/#");
    for s in ["black", "gone"] {
        for g in ["picture", "sound", "delivery"] {
            let m = states
                .get(&problem_topic(s, g))
                .unwrap_or_else(|| panic!("no retained state for {s} {g}: {states:?}"));
            assert_eq!(m.payload, "OFF", "{s} {g}");
            assert_eq!(m.qos, 1);
        }
    }

    // The frame-rate sensor's state: its template on the stats topic gives the clip's
    // 25 fps while it plays in real time.
    let fps_cfg = configs[&format!("homeassistant/sensor/{NODE}/black_fps/config")].json();
    let template = fps_cfg["value_template"].as_str().unwrap();
    let fps: Vec<f64> = vq
        .messages()
        .iter()
        .filter(|m| m.topic == fps_cfg["state_topic"].as_str().unwrap())
        .map(|m| m.json())
        .filter(|s| {
            s["media_s"]
                .as_f64()
                .is_some_and(|t| (2.0..11.0).contains(&t))
        })
        .filter_map(|s| template_value(template, &s))
        .collect();
    assert!(fps.len() >= 5, "stats while playing: {fps:?}");
    let mut sorted = fps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!((median - 25.0).abs() <= 2.5, "fps {fps:?}");
    let br_cfg = configs[&format!("homeassistant/sensor/{NODE}/black_bitrate/config")].json();
    let last = vq
        .messages()
        .into_iter()
        .rfind(|m| m.topic == format!("vqprobe/{PROBE}/black/stats"))
        .unwrap()
        .json();
    assert!(template_value(br_cfg["value_template"].as_str().unwrap(), &last).is_some());

    // Home Assistant's birth message: every config goes out again.
    let before = ha.messages().len();
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "homeassistant/status", "-m", "online"])
        .status()
        .expect("mosquitto_pub");
    assert!(st.success());
    wait_for(Duration::from_secs(10), || {
        let again: HashSet<String> = ha.messages()[before..]
            .iter()
            .filter(|m| m.topic.ends_with("/config") && !m.payload.is_empty())
            .map(|m| m.topic.clone())
            .collect();
        (again.len() == configs.len()).then_some(())
    })
    .unwrap_or_else(|| panic!("configs not sent again after the birth message"));

    // Restart without `gone` (and with a new stream; `black` now as fast as it decodes,
    // so that its black is over before the checks below): the agent finds gone's
    // retained configs on the broker and clears them, with its problem states.
    agent.signal("TERM");
    assert!(agent
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    std::fs::write(
        &cfg_path,
        config(
            &broker.url(),
            &spool,
            &[
                ("black", "black_high_360p.ts", "fast"),
                ("new", "black_high_360p.ts", "fast"),
            ],
        ),
    )
    .unwrap();
    let agent = Agent::start_with(dir.path(), &cfg_path, "agent2");
    let gone_cleared = || {
        let c = retained(broker.port, "homeassistant/#");
        let s = retained(broker.port, "vqprobe/+/+/problem/#");
        let gone = c.keys().chain(s.keys()).any(|t| t.contains("gone"));
        (!gone && c.len() == 11).then_some((c, s))
    };
    let (configs, states) = wait_for(Duration::from_secs(20), gone_cleared).unwrap_or_else(|| {
        panic!(
            "gone's retained topics stay: {:?}",
            retained(broker.port, "#").keys()
        )
    });
    assert_configs(&configs, &["black", "new"]);
    assert!(states.contains_key(&problem_topic("new", "picture")));
    // Cleared with empty retained payloads, once per topic of gone's (5 configs, 3
    // states).
    let cleared: HashSet<String> = ha
        .messages()
        .into_iter()
        .chain(vq.messages())
        .filter(|m| m.topic.contains("gone") && m.payload.is_empty())
        .map(|m| m.topic)
        .collect();
    assert_eq!(cleared.len(), 8, "{cleared:?}");

    // SIGHUP without `new`, with `added`: new's topics cleared at once, added announced
    // with its states.
    std::fs::write(
        &cfg_path,
        config(
            &broker.url(),
            &spool,
            &[
                ("black", "black_high_360p.ts", "fast"),
                ("added", "black_high_360p.ts", "fast"),
            ],
        ),
    )
    .unwrap();
    agent.signal("HUP");
    let (configs, _) = wait_for(Duration::from_secs(20), || {
        let c = retained(broker.port, "homeassistant/#");
        let s = retained(broker.port, "vqprobe/+/+/problem/#");
        let stale = c.keys().chain(s.keys()).any(|t| t.contains("new"));
        let added = s.keys().filter(|t| t.contains("/added/")).count();
        (!stale && c.len() == 11 && added == 3).then_some((c, s))
    })
    .unwrap_or_else(|| {
        panic!(
            "new's retained topics stay: {:?}",
            retained(broker.port, "#").keys()
        )
    });
    assert_configs(&configs, &["black", "added"]);

    // A broker that lost its retained messages (restarted without persistence): after
    // the reconnection the agent has sent every config and state again.
    broker.restart();
    let (configs, states) = wait_for(Duration::from_secs(20), || {
        let c = retained(broker.port, "homeassistant/#");
        let s = retained(broker.port, "vqprobe/+/+/problem/#");
        let off = s.values().all(|m| m.payload == "OFF");
        (c.len() == 11 && s.len() == 6 && off).then_some((c, s))
    })
    .unwrap_or_else(|| panic!("not sent again: {:?}", retained(broker.port, "#").keys()));
    assert_configs(&configs, &["black", "added"]);
    for s in ["black", "added"] {
        for g in ["picture", "sound", "delivery"] {
            assert_eq!(states[&problem_topic(s, g)].payload, "OFF", "{s} {g}");
        }
    }
    assert!(!agent.log().contains("ERROR"), "{}", agent.log());
}

/// A defect still open when the agent stops ends with `reason: "shutdown"`: its problem
/// state is OFF on the broker before the probe goes offline.
#[test]
fn a_problem_open_at_shutdown_is_turned_off() {
    let dir = TempDir::new("ha-stop");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let vq = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let spool = dir.path().join("spool");
    let mut agent = Agent::start(
        dir.path(),
        &config(
            &broker.url(),
            &spool,
            &[("black", "black_high_360p.ts", "realtime")],
        ),
    );
    let picture = problem_topic("black", "picture");
    wait_for(Duration::from_secs(30), || {
        (payloads(&vq, &picture).last().map(String::as_str) == Some("ON")).then_some(())
    })
    .unwrap_or_else(|| panic!("picture states: {:?}", payloads(&vq, &picture)));
    agent.signal("TERM");
    assert!(agent
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    assert_eq!(payloads(&vq, &picture), ["OFF", "ON", "OFF"]);
    let end = vq
        .messages()
        .into_iter()
        .filter(|m| m.topic == format!("vqprobe/{PROBE}/black/events"))
        .map(|m| m.json())
        .find(|e| e["state"] == "end")
        .expect("the black's end event");
    assert_eq!(end["reason"], "shutdown", "{end}");
    // The OFF came before `offline`, and stays retained.
    let msgs = vq.messages();
    let off = msgs.iter().rposition(|m| m.topic == picture).unwrap();
    let offline = msgs
        .iter()
        .rposition(|m| m.topic.ends_with("/status") && m.payload.contains("offline"))
        .expect("offline status");
    assert!(off < offline, "OFF after offline");
    let states = retained(broker.port, "vqprobe/+/+/problem/#");
    assert_eq!(states[&picture].payload, "OFF");
}

#[test]
fn a_bad_discovery_prefix_and_unknown_keys_are_refused() {
    let dir = TempDir::new("ha-cfg");
    let base = "probe_id = \"p\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[homeassistant]\ndiscovery = true\n";
    for (extra, want) in [
        ("prefix = \"ha/#\"\n", "homeassistant.prefix"),
        ("prefix = \"/ha\"\n", "homeassistant.prefix"),
        ("prefix = \"\"\n", "homeassistant.prefix"),
        ("node_id = \"x\"\n", "unknown field `node_id`"),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, format!("{base}{extra}")).unwrap();
        let out = common::vqprobe(&["run", "--config", cfg.to_str().unwrap(), "--check-config"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}: accepted");
        assert!(
            err.contains("c.toml:6") && err.contains(want),
            "{extra}: {err}"
        );
    }
    let cfg = dir.path().join("ok.toml");
    std::fs::write(&cfg, format!("{base}prefix = \"ha/disc\"\n")).unwrap();
    let out = common::vqprobe(&["run", "--config", cfg.to_str().unwrap(), "--check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
