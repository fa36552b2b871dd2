//! The agent (`vqprobe run`) against a real broker: a private mosquitto per test,
//! real `mosquitto_sub` subscribers, ground-truth clips as file streams.

mod common;

use std::path::Path;
use std::time::Duration;

use common::mqtt::{
    make_client_cert, wait_for, Agent, BrokerOpts, BrokerTls, Mosquitto, Msg, SubOpts, Subscriber,
};
use common::peers::{make_hls, make_test_ca, HlsServer, TempDir};
use common::{assert_intervals, media_dir, paired_ends, truth};
use serde_json::Value;

const PROBE: &str = "edge-test-01";

/// Expected (kind, start, end) of a ground-truth clip.
fn expected(clip: &str) -> Vec<(String, f64, f64)> {
    let truth = truth();
    let entry = truth["clips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["file"] == clip)
        .unwrap_or_else(|| panic!("{clip} not in truth.json"))
        .clone();
    common::clip_events(&entry)
}

/// A config with `streams` = (id, clip, pace).
fn config(broker: &str, spool: &Path, streams: &[(&str, &str, &str)], extra_mqtt: &str) -> String {
    let mut s = format!(
        "probe_id = \"{PROBE}\"\nstats_interval = \"1s\"\nshutdown_timeout = \"5s\"\n\
         [mqtt]\nurl = \"{broker}\"\nkeepalive = \"2s\"\nconnect_timeout = \"2s\"\nbackoff_max = \"2s\"\n{extra_mqtt}\n\
         [spool]\ndir = \"{}\"\n",
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

/// Events of `stream` as received, first copy of each id only (at-least-once).
fn events_of(msgs: &[Msg], stream: &str) -> Vec<Value> {
    let topic = format!("vqprobe/{PROBE}/{stream}/events");
    let mut seen = std::collections::HashSet::new();
    msgs.iter()
        .filter(|m| m.topic == topic)
        .map(|m| {
            assert_eq!(m.qos, 1, "events are published at QoS 1: {m:?}");
            assert!(!m.retained, "events are not retained: {m:?}");
            m.json()
        })
        .filter(|e| seen.insert(e["id"].as_str().unwrap().to_string()))
        .collect()
}

/// Asserts that the delivered events are exactly the ones the agent logged, in order.
fn assert_delivered_in_order(agent_ids: &[String], delivered: &[Value], what: &str) {
    let got: Vec<String> = delivered
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got, agent_ids,
        "{what}: delivered ids differ from the ones the agent emitted"
    );
}

fn wait_events(sub: &Subscriber, stream: &str, n: usize, secs: u64) -> Vec<Value> {
    wait_for(Duration::from_secs(secs), || {
        let e = events_of(&sub.messages(), stream);
        (e.len() >= n).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "{stream}: fewer than {n} events within {secs} s: {:?}\n{}",
            events_of(&sub.messages(), stream),
            sub.describe()
        )
    })
}

fn status_msgs(sub: &Subscriber) -> Vec<Value> {
    sub.on("/status").iter().map(|m| m.json()).collect()
}

#[test]
fn events_of_two_streams_reach_a_subscriber_with_schema_topics_and_status() {
    let dir = TempDir::new("agent-basic");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let thumbs = Subscriber::start(
        broker.port,
        "vqprobe/+/+/thumbs/#",
        &SubOpts {
            hex: true,
            ..Default::default()
        },
    );
    let mut agent = Agent::start(
        dir.path(),
        &config(
            &broker.url(),
            &dir.path().join("spool"),
            &[
                ("multi", "multi_main_360p.ts", "fast"),
                ("black", "black_high_360p.ts", "fast"),
            ],
            "",
        ),
    );
    let mut picture_starts = 0;
    for (stream, clip) in [
        ("multi", "multi_main_360p.ts"),
        ("black", "black_high_360p.ts"),
    ] {
        let want = expected(clip);
        let events = wait_events(&sub, stream, want.len() * 2, 60);
        for e in &events {
            assert_eq!(e["probe"], PROBE);
            assert_eq!(e["stream"], stream);
            for field in [
                "id",
                "defect_id",
                "kind",
                "state",
                "start_s",
                "at",
                "severity",
                "metrics",
            ] {
                assert!(e.get(field).is_some(), "{field} missing: {e}");
            }
        }
        let ends = paired_ends(&events);
        assert_intervals(stream, &ends, &want, 0.5);
        assert_delivered_in_order(&agent.logged_event_ids(Some(stream)), &events, stream);
        // Each picture defect's start names its thumbnail's topic, where a 320×180
        // JPEG of the picture (QoS 1, not retained) arrives; nothing else has one.
        for e in &events {
            let picture = e["kind"] == "black" || e["kind"] == "freeze";
            if !(picture && e["state"] == "start") {
                assert!(e.get("thumb").is_none(), "{e}");
                continue;
            }
            picture_starts += 1;
            let topic = format!(
                "vqprobe/{PROBE}/{stream}/thumbs/{}",
                e["defect_id"].as_str().unwrap()
            );
            assert_eq!(e["thumb"].as_str(), Some(topic.as_str()), "{e}");
            let msg = wait_for(Duration::from_secs(10), || {
                thumbs.messages().into_iter().find(|m| m.topic == topic)
            })
            .unwrap_or_else(|| panic!("no thumbnail on {topic}"));
            assert_eq!((msg.qos, msg.retained), (1, false), "{}", msg.topic);
            let jpeg = msg.bytes();
            let mut d = jpeg_decoder::Decoder::new(&jpeg[..]);
            let px = d.decode().expect("a JPEG");
            let info = d.info().unwrap();
            assert_eq!((info.width, info.height), (320, 180), "{topic}");
            let mean = px.iter().map(|&v| f64::from(v)).sum::<f64>() / px.len() as f64;
            if e["kind"] == "black" {
                assert!(mean < 30.0, "{topic}: a black picture, mean {mean}");
            } else {
                assert!(mean > 40.0, "{topic}: the frozen picture, mean {mean}");
            }
        }
    }
    assert_eq!(
        picture_starts, 3,
        "black and freeze of multi, black of black"
    );
    // Status: retained `online` with version, start time and streams, for a late subscriber.
    let late = Subscriber::start(
        broker.port,
        &format!("vqprobe/{PROBE}/status"),
        &SubOpts::default(),
    );
    let online = wait_for(Duration::from_secs(5), || {
        late.on("/status").into_iter().next()
    })
    .expect("retained status");
    assert!(online.retained, "status is retained: {online:?}");
    let s = online.json();
    assert_eq!(s["status"], "online");
    assert!(s["version"]
        .as_str()
        .unwrap()
        .starts_with(env!("CARGO_PKG_VERSION")));
    assert!(s["started_at"].as_str().is_some());
    let mut streams: Vec<&str> = s["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    streams.sort();
    assert_eq!(streams, ["black", "multi"]);
    // Stats every second per stream, with the counters of a finished file.
    // The stream has ended: its stats settle on the whole clip (20 s at 25 fps).
    let stats = wait_for(Duration::from_secs(5), || {
        sub.on("/multi/stats")
            .into_iter()
            .map(|m| m.json())
            .find(|j| j["frames"].as_u64() == Some(500))
    })
    .unwrap_or_else(|| {
        panic!(
            "no stats with all 500 frames: {:?}",
            sub.on("/multi/stats").last()
        )
    });
    assert_eq!(stats["events"].as_u64(), Some(6), "{stats}");
    // Coverage is never hidden: the default level is auto, which decoded fewer
    // pictures than the stream has, every picture around the defects.
    let d = &stats["decode"];
    assert_eq!(d["pictures"].as_u64(), Some(500), "{stats}");
    let decoded = d["decoded"].as_u64().unwrap();
    assert!(decoded > 0 && decoded < 500, "{stats}");
    assert!(
        d["escalations"].as_u64().unwrap() >= 2,
        "black and freeze: {stats}"
    );
    let secs = &d["seconds"];
    let total: f64 = ["full", "reference", "key"]
        .iter()
        .map(|k| secs[*k].as_f64().unwrap())
        .sum();
    assert!((total - 20.0).abs() < 0.2, "{stats}");
    assert_eq!(stats["stream"], "multi");
    assert!(stats["version"].as_str().is_some());
    assert_eq!(stats["open_defects"].as_array().unwrap().len(), 0);
    assert_eq!(stats["decode_errors"]["video"], 0);
    assert_eq!(stats["thumbs"]["made"], 2, "{stats}");
    // The agent stats of the same tick may still be on their way; they count the
    // thumbnails the broker acknowledged.
    let agent_stats = wait_for(Duration::from_secs(5), || {
        sub.on(&format!("{PROBE}/stats"))
            .into_iter()
            .map(|m| m.json())
            .find(|j| j["outbox"]["thumbs"]["delivered"] == 3)
    });
    assert!(
        agent_stats.is_some(),
        "agent stats with 3 thumbnails delivered: {:?}",
        sub.on(&format!("{PROBE}/stats")).last()
    );
    // SIGKILL: the broker publishes the Last Will, retained `offline`.
    agent.kill();
    let off = wait_for(Duration::from_secs(10), || {
        status_msgs(&sub)
            .into_iter()
            .find(|s| s["status"] == "offline")
    })
    .expect("offline via the Last Will after SIGKILL");
    assert_eq!(off["probe"], PROBE);
    let late = Subscriber::start(
        broker.port,
        &format!("vqprobe/{PROBE}/status"),
        &SubOpts::default(),
    );
    let retained = wait_for(Duration::from_secs(5), || {
        late.on("/status").into_iter().next()
    })
    .unwrap();
    assert_eq!(retained.json()["status"], "offline");
}

/// Broker down (or frozen) while defects start and end: every event arrives, in order.
fn outage(freeze: bool) {
    let dir = TempDir::new(if freeze {
        "agent-freeze"
    } else {
        "agent-outage"
    });
    let opts = BrokerOpts {
        persistence: true,
        ..Default::default()
    };
    let mut broker = Mosquitto::start(&dir.path().join("broker"), &opts);
    let sub_opts = SubOpts {
        persistent_id: Some("test-sub".into()),
        ..Default::default()
    };
    let sub1 = Subscriber::start(broker.port, "vqprobe/+/+/events", &sub_opts);
    let status = Subscriber::start(broker.port, "vqprobe/+/status", &SubOpts::default());
    let agent = Agent::start(
        dir.path(),
        &config(
            &broker.url(),
            &dir.path().join("spool"),
            &[("multi", "multi_main_360p.ts", "realtime")],
            "",
        ),
    );
    wait_for(Duration::from_secs(10), || {
        status_msgs(&status)
            .into_iter()
            .find(|s| s["status"] == "online")
    })
    .expect("agent online");
    // The clip's defects run from 2 s to 17 s of media: take the broker away now.
    let outage_began = std::time::Instant::now();
    if freeze {
        broker.freeze();
    } else {
        broker.stop();
    }
    // Wait until the agent has emitted all 6 events (the end of the clip), then keep
    // the broker away a little longer.
    wait_for(Duration::from_secs(40), || {
        (agent.logged_event_ids(Some("multi")).len() >= 6).then_some(())
    })
    .unwrap_or_else(|| panic!("agent did not emit 6 events:\n{}", agent.log()));
    // At least 30 s without a broker in all.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(outage_began.elapsed()));
    if !freeze {
        assert!(
            agent.log().contains("MQTT broker unreachable"),
            "the agent noticed the outage"
        );
    }
    let receiver = if freeze {
        broker.thaw();
        sub1
    } else {
        // The subscriber goes away too (before the broker returns, so that nothing is
        // delivered to it), and comes back with its persistent session: the broker
        // kept its queue.
        drop(sub1);
        broker.restart();
        Subscriber::start(broker.port, "vqprobe/+/+/events", &sub_opts)
    };
    let logged = agent.logged_event_ids(Some("multi"));
    assert_eq!(logged.len(), 6, "{logged:?}");
    let events = wait_events(&receiver, "multi", 6, 30);
    assert_delivered_in_order(&logged, &events, "after the outage");
    let ends = paired_ends(&events);
    assert_intervals("multi", &ends, &expected("multi_main_360p.ts"), 0.5);
}

#[test]
fn broker_outage_loses_no_event() {
    outage(false);
}

#[test]
fn frozen_broker_loses_no_event() {
    outage(true);
}

#[test]
fn events_spooled_before_an_agent_crash_are_delivered_after_restart() {
    let dir = TempDir::new("agent-crash");
    let spool = dir.path().join("spool");
    // No broker yet: reserve a port nobody listens on.
    let port = common::mqtt::free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut first = Agent::start(
        dir.path(),
        &config(&url, &spool, &[("black", "black_high_360p.ts", "fast")], ""),
    );
    wait_for(Duration::from_secs(30), || {
        (first.logged_event_ids(None).len() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no events:\n{}", first.log()));
    let logged = first.logged_event_ids(None);
    first.kill();
    // A broker on that port, a subscriber, and the agent again with no streams at all:
    // whatever arrives came from the spool.
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let broker = Mosquitto::start(&broker_dir, &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let cfg2 = dir.path().join("second.toml");
    std::fs::write(&cfg2, config(&broker.url(), &spool, &[], "")).unwrap();
    let second = Agent::start_with(dir.path(), &cfg2, "second");
    let events = wait_events(&sub, "black", 2, 20);
    assert_delivered_in_order(&logged, &events, "from the spool");
    assert!(second
        .log()
        .contains("undelivered events from the previous run"));
    assert!(second.logged_event_ids(None).is_empty());
}

#[test]
fn wrong_password_is_refused_clearly_retried_with_backoff_and_never_printed() {
    let dir = TempDir::new("agent-auth");
    let opts = BrokerOpts {
        auth: Some(("probe".into(), "right-pass".into())),
        ..Default::default()
    };
    let broker = Mosquitto::start(&dir.path().join("broker"), &opts);
    let pw = dir.path().join("mqtt.password");
    std::fs::write(&pw, "wrong-secret-XYZ\n").unwrap();
    let extra = format!(
        "username = \"probe\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    let mut agent = Agent::start(
        dir.path(),
        &config(&broker.url(), &dir.path().join("spool"), &[], &extra),
    );
    std::thread::sleep(Duration::from_secs(6));
    agent.signal("TERM");
    let st = agent
        .wait_exit(Duration::from_secs(15))
        .expect("exits on SIGTERM");
    assert!(st.success(), "{st:?}");
    let log = agent.log();
    assert!(
        log.contains("bad user name or password") || log.contains("not authorized"),
        "clear reason:\n{log}"
    );
    assert!(
        !log.contains("wrong-secret-XYZ"),
        "secret in the log:\n{log}"
    );
    // Backoff 0.5, 1, 2, 2 (cap) ... s with jitter: a handful of attempts in 6 s, not a spin.
    let attempts = log.matches("MQTT broker unreachable").count();
    assert!(
        (2..=8).contains(&attempts),
        "{attempts} attempts in 6 s:\n{log}"
    );
    // The right password gets through.
    std::fs::write(&pw, "right-pass\n").unwrap();
    let sub = Subscriber::start(
        broker.port,
        "vqprobe/#",
        &SubOpts {
            auth: Some(("probe".into(), "right-pass".into())),
            ..Default::default()
        },
    );
    let _agent = Agent::start_with(dir.path(), &agent.config.clone(), "agent2");
    wait_for(Duration::from_secs(10), || {
        status_msgs(&sub)
            .into_iter()
            .find(|s| s["status"] == "online")
    })
    .expect("online with the right password");
}

#[test]
fn tls_with_test_ca_and_client_certificate_and_wrong_ca_refused() {
    let dir = TempDir::new("agent-tls");
    let (ca, cert, key) = make_test_ca(&dir.path().join("ca"));
    let (ccert, ckey) = make_client_cert(&dir.path().join("ca"));
    let (other_ca, _, _) = make_test_ca(&dir.path().join("other-ca"));
    let opts = BrokerOpts {
        tls: Some(BrokerTls {
            ca: ca.clone(),
            cert,
            key,
            require_client_cert: true,
        }),
        ..Default::default()
    };
    let broker = Mosquitto::start(&dir.path().join("broker"), &opts);
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let sub = Subscriber::start(
        broker.port,
        "vqprobe/#",
        &SubOpts {
            tls: Some((ca.clone(), Some((ccert.clone(), ckey.clone())))),
            ..Default::default()
        },
    );
    // Right CA and a client certificate: events flow.
    let good = format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        ca.display(),
        ccert.display(),
        ckey.display()
    );
    let d1 = dir.path().join("good");
    std::fs::create_dir_all(&d1).unwrap();
    let _agent = Agent::start(
        &d1,
        &config(
            &url,
            &d1.join("spool"),
            &[("black", "black_high_360p.ts", "fast")],
            &good,
        ),
    );
    let events = wait_events(&sub, "black", 2, 30);
    assert_intervals(
        "black",
        &paired_ends(&events),
        &expected("black_high_360p.ts"),
        0.5,
    );
    // Wrong CA: refused, nothing published.
    let d2 = dir.path().join("bad-ca");
    std::fs::create_dir_all(&d2).unwrap();
    let bad = format!(
        "probe_id = \"other-probe\"\n[mqtt]\nurl = \"{url}\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n[spool]\ndir = \"{}\"\n",
        other_ca.display(),
        ccert.display(),
        ckey.display(),
        d2.join("spool").display()
    );
    let bad_agent = Agent::start(&d2, &bad);
    // No client certificate although the broker requires one: refused too.
    let d3 = dir.path().join("no-cert");
    std::fs::create_dir_all(&d3).unwrap();
    let nocert = format!(
        "probe_id = \"third-probe\"\n[mqtt]\nurl = \"{url}\"\nca_file = \"{}\"\n[spool]\ndir = \"{}\"\n",
        ca.display(),
        d3.join("spool").display()
    );
    let nocert_agent = Agent::start(&d3, &nocert);
    let refused = wait_for(Duration::from_secs(10), || {
        (bad_agent.log().contains("MQTT broker unreachable")
            && nocert_agent.log().contains("MQTT broker unreachable"))
        .then_some(())
    });
    assert!(
        refused.is_some(),
        "bad CA:\n{}\nno cert:\n{}",
        bad_agent.log(),
        nocert_agent.log()
    );
    assert!(
        bad_agent.log().to_lowercase().contains("certificate"),
        "the reason names the certificate:\n{}",
        bad_agent.log()
    );
    let statuses = status_msgs(&sub);
    assert!(
        statuses.iter().all(|s| s["probe"] == PROBE),
        "a refused agent got through: {statuses:?}"
    );
}

#[test]
fn sighup_adds_and_removes_streams_and_sigterm_ends_open_defects_and_flushes() {
    let dir = TempDir::new("agent-hup");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let spool = dir.path().join("spool");
    let mut agent = Agent::start(
        dir.path(),
        &config(
            &broker.url(),
            &spool,
            &[("multi", "multi_main_360p.ts", "realtime")],
            "",
        ),
    );
    // multi: black from 2 s, confirmed at 4 s. Remove it while black is open, add `black`.
    let started = wait_events(&sub, "multi", 1, 30);
    assert_eq!(started[0]["kind"], "black");
    std::fs::write(
        &agent.config,
        config(
            &broker.url(),
            &spool,
            &[("black", "black_high_360p.ts", "realtime")],
            "",
        ),
    )
    .unwrap();
    agent.signal("HUP");
    let multi = wait_events(&sub, "multi", 2, 15);
    assert_eq!(multi[1]["state"], "end");
    assert_eq!(multi[1]["reason"], "shutdown", "{}", multi[1]);
    // black: black from 3 s, confirmed at 5 s. SIGTERM while it is open.
    let b = wait_events(&sub, "black", 1, 30);
    assert_eq!(b[0]["state"], "start");
    let online: Vec<Value> = status_msgs(&sub)
        .into_iter()
        .filter(|s| s["status"] == "online")
        .collect();
    assert!(
        wait_for(Duration::from_secs(5), || {
            status_msgs(&sub)
                .into_iter()
                .find(|s| s["status"] == "online" && s["streams"] == serde_json::json!(["black"]))
        })
        .is_some(),
        "status lists the new stream set: {online:?}"
    );
    agent.signal("TERM");
    let st = agent
        .wait_exit(Duration::from_secs(20))
        .expect("exit after SIGTERM");
    assert!(st.success(), "{st:?}");
    let b = wait_events(&sub, "black", 2, 5);
    assert_eq!(b[1]["state"], "end");
    assert_eq!(b[1]["reason"], "shutdown");
    let last = status_msgs(&sub).pop().unwrap();
    assert_eq!(
        last["status"], "offline",
        "clean shutdown publishes offline"
    );
    assert!(
        !agent.log().contains("stay in the spool"),
        "{}",
        agent.log()
    );
}

#[test]
fn invalid_config_names_file_line_and_field() {
    let dir = TempDir::new("agent-badcfg");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "probe_id = \"p\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nkeep_alive = \"5s\"\n",
    )
    .unwrap();
    let out = common::vqprobe(&["run", "--config", cfg.to_str().unwrap(), "--check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4") && err.contains("keep_alive"),
        "{err}"
    );
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "probe_id = \"p\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = common::vqprobe(&["run", "--config", good.to_str().unwrap(), "--check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_hls_stream_that_ends_is_source_down_and_reloaded_with_backoff() {
    // A VOD playlist (EXT-X-ENDLIST from the first load): in agent mode the end of a
    // network source is an outage, not the end of monitoring.
    let hls_dir = media_dir()
        .parent()
        .expect("media dir has a parent")
        .join("test-hls-multi");
    make_hls(&hls_dir, &media_dir().join("multi_main_360p.ts"));
    let origin = HlsServer::start(&hls_dir, None);
    let dir = TempDir::new("agent-hls-ended");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let mut cfg = config(&broker.url(), &dir.path().join("spool"), &[], "");
    cfg.push_str(&format!(
        "[live]\nbackoff_initial = 0.2\nbackoff_max = 1.0\n\
         [[streams]]\nid = \"vod\"\nurl = \"{}\"\n",
        origin.url("vod_ts/index.m3u8")
    ));
    let agent = Agent::start(dir.path(), &cfg);
    let down = wait_for(Duration::from_secs(60), || {
        events_of(&sub.messages(), "vod")
            .into_iter()
            .find(|e| e["kind"] == "source_down" && e["state"] == "start")
    })
    .unwrap_or_else(|| panic!("no source_down after the playlist ended:\n{}", agent.log()));
    let reason = down["metrics"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("ENDLIST") || reason.contains("ended"),
        "{down}"
    );
    // Reloaded with backoff: the reconnect counter rises and the origin sees the playlist
    // asked for again and again.
    let stats = wait_for(Duration::from_secs(30), || {
        sub.messages()
            .iter()
            .filter(|m| m.topic == format!("vqprobe/{PROBE}/vod/stats"))
            .map(|m| m.json())
            .find(|s| s["reconnects"].as_u64().unwrap_or(0) >= 3)
    })
    .unwrap_or_else(|| panic!("reconnects did not rise:\n{}", agent.log()));
    assert!(stats["reconnects"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(stats["dropped"]["oversized"], 0, "{stats}");
    let loads = origin
        .requests()
        .iter()
        .filter(|r| r["path"] == "/vod_ts/index.m3u8")
        .count();
    assert!(loads >= 3, "playlist loaded {loads} times");
    assert!(
        !agent.log().contains("stream ended (end of input)"),
        "{}",
        agent.log()
    );
}

#[test]
fn live_durations_out_of_range_are_config_errors() {
    let dir = TempDir::new("agent-livecfg");
    for (key, value) in [
        ("stall_after", "inf"),
        ("backoff_max", "nan"),
        ("connect_timeout", "-1.0"),
        ("read_timeout", "1e300"),
        ("backoff_initial", "-inf"),
    ] {
        let cfg = dir.path().join("live.toml");
        std::fs::write(
            &cfg,
            format!(
                "probe_id = \"p\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[live]\n{key} = {value}\n"
            ),
        )
        .unwrap();
        for extra in [&["--check-config"][..], &[][..]] {
            let mut args = vec!["run", "--config", cfg.to_str().unwrap()];
            args.extend_from_slice(extra);
            let out = common::vqprobe(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{key} = {value} accepted: {err}");
            assert!(
                err.contains(&format!("live.{key}")),
                "{key} = {value}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

#[test]
fn demo_publishes_its_events_over_mqtt() {
    let dir = TempDir::new("agent-demo");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/+/demo/events", &SubOpts::default());
    let out = common::vqprobe(&["demo", "--format", "json", "--mqtt", &broker.url()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got = wait_for(Duration::from_secs(5), || {
        let m = sub.messages();
        (m.len() >= printed.len()).then_some(m)
    })
    .expect("demo events over MQTT");
    let got: Vec<Value> = got.iter().map(|m| m.json()).collect();
    assert_eq!(got, printed, "the broker got exactly what demo printed");
}

#[test]
fn a_failing_stream_does_not_disturb_the_others() {
    let dir = TempDir::new("agent-isolation");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let spool = dir.path().join("spool");
    let mut cfg = config(
        &broker.url(),
        &spool,
        &[("good", "multi_main_360p.ts", "fast")],
        "",
    );
    // Not MPEG-TS at all, and a file that does not exist: both fail every session.
    for (id, path) in [
        ("garbage", media_dir().join("random.bin")),
        ("missing", dir.path().join("nope.ts")),
    ] {
        cfg.push_str(&format!(
            "[[streams]]\nid = \"{id}\"\nurl = \"file://{}\"\npace = \"fast\"\n",
            path.display()
        ));
    }
    let agent = Agent::start(dir.path(), &cfg);
    let events = wait_events(&sub, "good", 6, 60);
    assert_intervals(
        "good",
        &paired_ends(&events),
        &expected("multi_main_360p.ts"),
        0.5,
    );
    for (id, reason) in [("garbage", "not an MPEG-TS"), ("missing", "nope.ts")] {
        let stats = wait_for(Duration::from_secs(10), || {
            sub.on(&format!("/{id}/stats"))
                .into_iter()
                .map(|m| m.json())
                .find(|j| j["restarts"].as_u64().unwrap_or(0) >= 2)
        })
        .unwrap_or_else(|| panic!("{id}: no stats with restarts:\n{}", agent.log()));
        let err = stats["last_error"].as_str().unwrap_or("");
        assert!(err.contains(reason), "{id}: {stats}");
        assert!(events_of(&sub.messages(), id).is_empty());
    }
    assert!(agent.log().contains("stream failed; restarting"));
}

#[test]
fn a_looped_file_loops_inside_one_session_with_growing_media_time() {
    let dir = TempDir::new("agent-loop");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let mut cfg = config(&broker.url(), &dir.path().join("spool"), &[], "");
    cfg.push_str(&format!(
        "[[streams]]\nid = \"loop\"\nurl = \"file://{}\"\npace = \"fast\"\nloop = true\n",
        media_dir().join("black_high_360p.ts").display()
    ));
    let _agent = Agent::start(dir.path(), &cfg);
    // black_high_360p.ts: 12 s, black 3–6 s. Pass k starts at k × (12 s + one frame).
    let events = wait_events(&sub, "loop", 6, 60);
    let ends = paired_ends(&events[..6]);
    let pass = 12.0 + 0.04;
    let want: Vec<(String, f64, f64)> = (0..3)
        .map(|k| {
            (
                "black".to_string(),
                3.0 + k as f64 * pass,
                6.0 + k as f64 * pass,
            )
        })
        .collect();
    assert_intervals("loop", &ends, &want, 0.5);
    assert!(ends.iter().all(|e| e.get("reason").is_none()), "{ends:?}");
    let stats = wait_for(Duration::from_secs(5), || sub.on("/loop/stats").pop())
        .unwrap()
        .json();
    assert_eq!(stats["restarts"], 0, "{stats}");
}

/// The agent as a library value (issue 10): reload and shutdown driven through its signal
/// stream, without a real signal. SIGHUP's reload stops the removed stream (its open
/// defect ends with `reason: "shutdown"`) and lists the new set in `online`; SIGTERM's
/// shutdown ends cleanly and publishes `offline` with the same fields.
#[test]
fn the_agent_value_reloads_and_shuts_down_through_its_signal_stream() {
    use vqprobe::app::agent::{Agent as AgentValue, Exit, Signal};
    let dir = TempDir::new("agent-value");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let spool = dir.path().join("spool");
    let path = dir.path().join("config.toml");
    let write = |streams: &[(&str, &str, &str)]| {
        std::fs::write(&path, config(&broker.url(), &spool, streams, "")).unwrap()
    };
    write(&[("multi", "multi_main_360p.ts", "realtime")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt
        .block_on(AgentValue::start(&path))
        .expect("the agent starts");
    assert_eq!(agent.stream_ids(), ["multi"]);
    let (signals, rx) = tokio::sync::mpsc::channel(4);
    let running = rt.spawn(agent.run(rx));
    // multi: black from 2 s, confirmed at 4 s. Reload without it while black is open.
    let started = wait_events(&sub, "multi", 1, 30);
    assert_eq!(started[0]["kind"], "black");
    write(&[("black", "black_high_360p.ts", "realtime")]);
    signals.blocking_send(Signal::Hangup).unwrap();
    let multi = wait_events(&sub, "multi", 2, 15);
    assert_eq!(multi[1]["state"], "end");
    assert_eq!(multi[1]["reason"], "shutdown", "{}", multi[1]);
    wait_for(Duration::from_secs(10), || {
        status_msgs(&sub)
            .into_iter()
            .find(|s| s["status"] == "online" && s["streams"] == serde_json::json!(["black"]))
    })
    .unwrap_or_else(|| panic!("status lists the new stream set: {:?}", status_msgs(&sub)));
    signals.blocking_send(Signal::Terminate).unwrap();
    let exit = rt
        .block_on(running)
        .expect("the agent task")
        .expect("a clean run");
    assert_eq!(exit, Exit::Clean);
    let last = status_msgs(&sub).pop().unwrap();
    assert_eq!(last["status"], "offline", "{last}");
    assert_eq!(last["streams"], serde_json::json!(["black"]), "{last}");
    assert!(
        last["started_at"].as_str().is_some() && last["pid"].is_u64(),
        "{last}"
    );
}

/// `curl` a URL: (HTTP status, content type, body).
fn curl(url: &str) -> (u16, String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code} %{content_type}",
            url,
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, ctype) = tail.split_once(' ').unwrap_or((tail, ""));
    (
        code.parse().unwrap_or(0),
        ctype.to_string(),
        body.to_string(),
    )
}

/// Checks a page against the text exposition format: every family has one HELP and
/// one TYPE before its samples, every sample is `name{labels} value` with a number,
/// no series twice. Returns the samples as (series, value).
fn parse_exposition(page: &str) -> std::collections::HashMap<String, f64> {
    let mut samples = std::collections::HashMap::new();
    let mut helped = std::collections::HashSet::new();
    let mut typed = std::collections::HashMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helped.insert(name.to_string()), "HELP twice: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap_or(""));
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            assert!(
                typed.insert(name.to_string(), kind.to_string()).is_none(),
                "{line}"
            );
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        assert!(typed.contains_key(name), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        let v: f64 = if value == "NaN" {
            f64::NAN
        } else {
            value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}"))
        };
        if typed[name] == "counter" && !v.is_nan() {
            assert!(v >= 0.0, "negative counter: {line}");
        }
        assert!(
            samples.insert(series.to_string(), v).is_none(),
            "twice: {line}"
        );
    }
    samples
}

#[test]
fn prometheus_metrics_give_the_streams_counters_and_the_broker_state() {
    let dir = TempDir::new("agent-metrics");
    let mut broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let port = common::mqtt::free_port();
    let cfg = config(
        &broker.url(),
        &dir.path().join("spool"),
        &[("multi", "multi_main_360p.ts", "fast")],
        "",
    )
    .replacen(
        "[mqtt]",
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n[mqtt]"),
        1,
    );
    let _agent = Agent::start(dir.path(), &cfg);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let done = r#"vqprobe_stream_events_total{stream="multi",kind="silence"} 2"#;
    // The whole 20-s clip at one level or another: the page of a stats tick after the
    // stream has read to its end (the silence ends 3 s before it does).
    let level_secs = |m: &std::collections::HashMap<String, f64>| -> f64 {
        ["full", "reference", "key"]
            .iter()
            .filter_map(|l| {
                m.get(&format!(
                    "vqprobe_stream_decode_level_seconds_total{{stream=\"multi\",level=\"{l}\"}}"
                ))
            })
            .sum()
    };
    let page = wait_for(Duration::from_secs(60), || {
        let (code, _, body) = curl(&url);
        (code == 200
            && body.lines().any(|l| l == done)
            && level_secs(&parse_exposition(&body)) > 19.0)
            .then_some(body)
    })
    .unwrap_or_else(|| panic!("no page with the whole clip's counters: {:?}", curl(&url)));
    let (_, ctype, _) = curl(&url);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let m = parse_exposition(&page);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} missing:\n{page}"));
    // multi_main_360p: black, freeze and silence, each a start and an end.
    for (kind, n) in [
        ("black", 2.0),
        ("freeze", 2.0),
        ("silence", 2.0),
        ("corruption", 0.0),
    ] {
        assert_eq!(
            get(&format!(
                "vqprobe_stream_events_total{{stream=\"multi\",kind=\"{kind}\"}}"
            )),
            n,
            "{kind}"
        );
        assert_eq!(
            get(&format!(
                "vqprobe_stream_open_defects{{stream=\"multi\",kind=\"{kind}\"}}"
            )),
            0.0
        );
    }
    let secs = level_secs(&m);
    assert!((secs - 20.0).abs() < 0.2, "{secs}");
    assert_eq!(get("vqprobe_streams"), 1.0);
    assert_eq!(get("vqprobe_broker_connected"), 1.0);
    assert_eq!(
        get(r#"vqprobe_stream_decode_errors_total{stream="multi",track="video"}"#),
        0.0
    );
    // Thumbnails of the black and the freeze reached the broker.
    let delivered = wait_for(Duration::from_secs(5), || {
        let m = parse_exposition(&curl(&url).2);
        (m.get("vqprobe_outbox_delivered_total") == Some(&6.0)
            && m.get("vqprobe_thumbs_delivered_total") == Some(&2.0))
        .then_some(())
    });
    assert!(delivered.is_some(), "{}", curl(&url).2);
    assert!(get("vqprobe_stats_age_seconds") < 5.0);
    // Only /metrics is served.
    assert_eq!(curl(&format!("http://127.0.0.1:{port}/")).0, 404);
    // With the broker gone the metrics go on, and say so.
    broker.stop();
    let down = wait_for(Duration::from_secs(15), || {
        let m = parse_exposition(&curl(&url).2);
        (m.get("vqprobe_broker_connected") == Some(&0.0)).then_some(())
    });
    assert!(down.is_some(), "{}", curl(&url).2);
    // A second agent cannot take the port: it fails at start and names the setting.
    let dir2 = TempDir::new("agent-metrics-2");
    let cfg2 = cfg.replace(
        &dir.path().join("spool").display().to_string(),
        &dir2.path().join("spool").display().to_string(),
    );
    let mut second = Agent::start(dir2.path(), &cfg2);
    let status = second
        .wait_exit(Duration::from_secs(15))
        .expect("the second agent exits");
    assert!(!status.success());
    assert!(
        second
            .log()
            .contains(&format!("metrics.listen = \"127.0.0.1:{port}\"")),
        "{}",
        second.log()
    );
}
