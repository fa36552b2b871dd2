//! The MQTT link under faults, against a real mosquitto: the publisher library directly
//! (records the broker rejects, a broker frozen in the middle of a flush) and the agent
//! binary (a dead publisher task, plain-text credentials, SIGHUP with changed broker
//! settings, stats after a reconnect).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::mqtt::{wait_for, Agent, BrokerOpts, Mosquitto, SubOpts, Subscriber};
use common::peers::TempDir;
use vqprobe::defect::Severity;
use vqprobe::defect::{DefectKind, Phase};
use vqprobe::event::Event;
use vqprobe::publish::mqtt::{MqttSettings, Publisher};
use vqprobe::publish::spool::{Spool, SpoolOptions};

const PROBE: &str = "link-test";

fn settings(port: u16, client_id: &str) -> MqttSettings {
    MqttSettings {
        host: "127.0.0.1".into(),
        port,
        tls: None,
        client_id: client_id.into(),
        username: None,
        password: None,
        keepalive: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        backoff_initial: 0.05,
        backoff_max: 0.3,
        prefix: "vqprobe".into(),
        probe_id: PROBE.into(),
    }
}

fn spool(dir: &Path) -> Spool {
    Spool::open(SpoolOptions::new(dir.join("spool"), 64 << 20, 1 << 20)).unwrap()
}

/// An event of `stream` whose JSON carries `pad` filler bytes.
fn event(stream: &str, id: &str, pad: usize) -> Event {
    let mut metrics = serde_json::Map::new();
    if pad > 0 {
        metrics.insert("pad".into(), "x".repeat(pad).into());
    }
    Event {
        v: 1,
        id: id.into(),
        defect_id: id.into(),
        probe: PROBE.into(),
        stream: stream.into(),
        kind: DefectKind::Black,
        state: Phase::Start,
        start_s: 0.0,
        end_s: None,
        duration_s: None,
        at: "2026-01-01T00:00:00Z".into(),
        severity: Severity::Critical,
        reason: None,
        metrics,
        decode_level: None,
        thumb: None,
        jpeg: None,
    }
}

/// Distinct event ids the subscriber received.
fn received_ids(sub: &Subscriber) -> HashSet<String> {
    sub.on("/events")
        .iter()
        .map(|m| m.json()["id"].as_str().unwrap().to_string())
        .collect()
}

fn link_stat(p: &Publisher, key: &str) -> serde_json::Value {
    serde_json::to_value(p.stats()).unwrap()["link"][key].clone()
}

/// Defect 4: a record the broker refuses by dropping the connection (here: larger than
/// its `max_packet_size`) is set aside after a few attempts and counted; every other
/// record of every stream still arrives.
#[test]
fn a_record_the_broker_rejects_is_set_aside_and_the_others_still_arrive() {
    let dir = TempDir::new("link-reject");
    let opts = BrokerOpts {
        extra: "max_packet_size 4096".into(),
        ..Default::default()
    };
    let broker = Mosquitto::start(&dir.path().join("broker"), &opts);
    let sub = Subscriber::start(broker.port, "vqprobe/+/+/events", &SubOpts::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let publisher = Publisher::start(
        settings(broker.port, "link-reject"),
        spool(dir.path()),
        b"online".to_vec(),
        b"offline".to_vec(),
    )
    .unwrap();
    let mut small = Vec::new();
    for i in 0..5 {
        let id = format!("a-{i}");
        publisher.event(&event("a", &id, 0));
        small.push(id);
    }
    publisher.event(&event("b", "too-big", 8000));
    for i in 5..10 {
        let id = format!("c-{i}");
        publisher.event(&event(if i % 2 == 0 { "a" } else { "c" }, &id, 0));
        small.push(id);
    }
    let want: HashSet<String> = small.iter().cloned().collect();
    wait_for(Duration::from_secs(30), || {
        want.is_subset(&received_ids(&sub)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "records behind the rejected one never arrived: got {:?}, stats {:?}",
            received_ids(&sub),
            publisher.stats()
        )
    });
    wait_for(Duration::from_secs(10), || {
        (publisher.stats().pending == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("still pending: {:?}", publisher.stats()));
    assert_eq!(
        link_stat(&publisher, "rejected"),
        1,
        "{:?}",
        publisher.stats()
    );
    assert!(!received_ids(&sub).contains("too-big"));
    // The broker did drop the connection on it (and only a few times).
    let errors = link_stat(&publisher, "connection_errors").as_u64().unwrap();
    assert!((3..10).contains(&errors), "{:?}", publisher.stats());
}

/// Defect 3: the broker freezes while many large records are being written (the flush
/// times out, rumqttc keeps a stale `Outgoing::Publish`), then comes back: every record
/// reaches the subscriber and none is left pending or lost.
#[test]
fn a_broker_frozen_in_the_middle_of_a_flush_loses_no_record() {
    let dir = TempDir::new("link-freeze");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/+/+/events", &SubOpts::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let publisher = Publisher::start(
        settings(broker.port, "link-freeze"),
        spool(dir.path()),
        b"online".to_vec(),
        b"offline".to_vec(),
    )
    .unwrap();
    let n = 40;
    let want: HashSet<String> = (0..n).map(|i| format!("big-{i}")).collect();
    for i in 0..n {
        publisher.event(&event("s", &format!("big-{i}"), 600_000));
    }
    wait_for(Duration::from_secs(30), || {
        (!received_ids(&sub).is_empty()).then_some(())
    })
    .expect("first records delivered");
    broker.freeze();
    wait_for(Duration::from_secs(20), || {
        (link_stat(&publisher, "connection_errors").as_u64() >= Some(1)).then_some(())
    })
    .unwrap_or_else(|| panic!("the link never failed: {:?}", publisher.stats()));
    std::thread::sleep(Duration::from_secs(3));
    broker.thaw();
    wait_for(Duration::from_secs(60), || {
        want.is_subset(&received_ids(&sub)).then_some(())
    })
    .unwrap_or_else(|| {
        let got = received_ids(&sub);
        panic!(
            "missing: {:?}, stats {:?}",
            want.difference(&got).collect::<Vec<_>>(),
            publisher.stats()
        )
    });
    wait_for(Duration::from_secs(20), || {
        (publisher.stats().pending == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("still pending: {:?}", publisher.stats()));
}

/// An agent config without streams.
fn agent_config(broker: &str, spool: &Path, top: &str, mqtt: &str) -> String {
    format!(
        "probe_id = \"{PROBE}\"\nshutdown_timeout = \"3s\"\n{top}\n\
         [mqtt]\nurl = \"{broker}\"\nkeepalive = \"1s\"\nconnect_timeout = \"1s\"\nbackoff_max = \"1s\"\n{mqtt}\n\
         [spool]\ndir = \"{}\"\n",
        spool.display()
    )
}

/// Defect 6: a publisher task that dies (here an injected panic in the feeder) must not
/// leave an agent that looks alive (READY, WATCHDOG) but delivers nothing: it exits
/// non-zero so that systemd restarts it.
#[test]
fn a_dead_publisher_task_makes_the_agent_exit_with_failure() {
    let dir = TempDir::new("link-dead-task");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let cfg = dir.path().join("vqprobe.toml");
    std::fs::write(
        &cfg,
        agent_config(&broker.url(), &dir.path().join("spool"), "", ""),
    )
    .unwrap();
    let mut agent = Agent::start_env(
        dir.path(),
        &cfg,
        "agent",
        &[("VQPROBE_FAULT", "feeder_panic")],
    );
    let st = agent.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "the agent kept running without its MQTT feeder:\n{}",
            agent.log()
        )
    });
    assert!(!st.success(), "{st:?}");
    assert!(
        agent
            .log()
            .contains("MQTT publisher task ended unexpectedly"),
        "{}",
        agent.log()
    );
}

/// Defect 14: a password over plain mqtt:// is called out at start (never printed), and a
/// SIGHUP that changes credentials or TLS files says that a restart is needed.
#[test]
fn cleartext_password_is_called_out_and_sighup_says_credential_changes_need_a_restart() {
    let dir = TempDir::new("link-creds");
    let broker = Mosquitto::start(
        &dir.path().join("broker"),
        &BrokerOpts {
            auth: Some(("probe".into(), "s3cret-One".into())),
            ..Default::default()
        },
    );
    let status = Subscriber::start(
        broker.port,
        "vqprobe/+/status",
        &SubOpts {
            auth: Some(("probe".into(), "s3cret-One".into())),
            ..Default::default()
        },
    );
    let pw = dir.path().join("mqtt.password");
    std::fs::write(&pw, "s3cret-One\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let spool = dir.path().join("spool");
    let mqtt = format!(
        "username = \"probe\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    let cfg = dir.path().join("vqprobe.toml");
    std::fs::write(&cfg, agent_config(&broker.url(), &spool, "", &mqtt)).unwrap();
    let mut agent = Agent::start_with(dir.path(), &cfg, "agent");
    wait_for(Duration::from_secs(10), || {
        status
            .on("/status")
            .iter()
            .any(|m| m.json()["status"] == "online")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("agent online:\n{}", agent.log()));
    assert!(
        agent.log().contains("sent in clear text"),
        "no word about the clear-text password:\n{}",
        agent.log()
    );
    // Same file, new password: not applied until a restart, and the log says so.
    std::fs::write(&pw, "s3cret-Two\n").unwrap();
    agent.signal("HUP");
    wait_for(Duration::from_secs(10), || {
        agent
            .log()
            .contains("SIGHUP: configuration reloaded")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no reload:\n{}", agent.log()));
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("SIGHUP") && l.contains("restart"))
        .unwrap_or_else(|| panic!("SIGHUP ignored the new password silently:\n{log}"));
    assert!(line.contains("credentials"), "{line}");
    // A changed CA file is also named.
    std::fs::write(
        &cfg,
        agent_config(
            &broker.url(),
            &spool,
            "",
            &format!("{mqtt}ca_file = \"/etc/ssl/certs/ca-certificates.crt\"\n"),
        ),
    )
    .unwrap();
    agent.signal("HUP");
    wait_for(Duration::from_secs(10), || {
        (agent
            .log()
            .matches("SIGHUP: configuration reloaded")
            .count()
            >= 2)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no second reload:\n{}", agent.log()));
    let log = agent.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("SIGHUP") && l.contains("restart"))
            .any(|l| l.contains("TLS")),
        "{log}"
    );
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(15)).expect("exit");
    let log = agent.log();
    for secret in ["s3cret-One", "s3cret-Two"] {
        assert!(!log.contains(secret), "password in the log:\n{log}");
    }
}

/// After the link dropped and came back, the stats are published at once, not at the
/// next interval.
#[test]
fn stats_are_published_at_once_after_a_reconnect() {
    let dir = TempDir::new("link-stats");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(
        broker.port,
        &format!("vqprobe/{PROBE}/stats"),
        &SubOpts::default(),
    );
    let status = Subscriber::start(broker.port, "vqprobe/+/status", &SubOpts::default());
    let cfg = dir.path().join("vqprobe.toml");
    std::fs::write(
        &cfg,
        agent_config(
            &broker.url(),
            &dir.path().join("spool"),
            "stats_interval = \"1h\"",
            "",
        ),
    )
    .unwrap();
    let agent = Agent::start_with(dir.path(), &cfg, "agent");
    wait_for(Duration::from_secs(10), || {
        status
            .on("/status")
            .iter()
            .any(|m| m.json()["status"] == "online")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("agent online:\n{}", agent.log()));
    let before = sub.messages().len();
    // Freeze the broker long enough for the agent's keepalive (1 s) to give up.
    broker.freeze();
    wait_for(Duration::from_secs(15), || {
        agent
            .log()
            .contains("MQTT broker unreachable")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the agent did not notice:\n{}", agent.log()));
    broker.thaw();
    let stats = wait_for(Duration::from_secs(20), || {
        let m = sub.messages();
        (m.len() > before).then(|| m[before].json())
    })
    .unwrap_or_else(|| panic!("no stats after the reconnect:\n{}", agent.log()));
    let link = &stats["outbox"]["link"];
    assert_eq!(link["connected"], true, "{stats}");
    assert!(link["connection_errors"].as_u64() >= Some(1), "{stats}");
}
