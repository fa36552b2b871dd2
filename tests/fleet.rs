//! Fleet mode (`[fleet]`, docs/fleet.md) against a real mosquitto: three agents of one
//! fleet share a catalog of looped file streams managed with `vqprobe fleet`; every
//! stream is watched by exactly one probe (two with `replicas = 2`), a SIGKILLed probe's
//! streams are taken over within keepalive × 1.5 + 5 s by the survivors only, the
//! restarted probe takes back exactly its share, `fleet remove` stops a stream
//! everywhere, and an invalid entry is reported on its error topic without harming the
//! others.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::media_dir;
use common::mqtt::{wait_for, Agent, BrokerOpts, Mosquitto, SubOpts, Subscriber};
use common::peers::TempDir;
use common::vqprobe;
use serde_json::Value;

const KEEPALIVE_S: f64 = 2.0;
const FLEET: &str = "t1";

/// The config of probe `id` in fleet `FLEET`.
fn config(broker: &str, dir: &Path, id: &str, replicas: u32) -> PathBuf {
    let spool = dir.join(format!("spool-{id}"));
    let text = format!(
        "probe_id = \"{id}\"\nstats_interval = \"1s\"\nshutdown_timeout = \"3s\"\n\
         [mqtt]\nurl = \"{broker}\"\nkeepalive = \"{KEEPALIVE_S}s\"\nconnect_timeout = \"2s\"\nbackoff_max = \"2s\"\n\
         [spool]\ndir = \"{}\"\n[fleet]\nname = \"{FLEET}\"\nreplicas = {replicas}\nsettle = \"1s\"\n\
         [credentials.cams]\nusername = \"viewer\"\npassword = \"s3cret-pw\"\n",
        spool.display()
    );
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The latest status of every probe seen by `sub` (a subscriber to `vqprobe/+/status`).
fn statuses(sub: &Subscriber) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for m in sub.messages() {
        if let Some(p) = m
            .topic
            .strip_prefix("vqprobe/")
            .and_then(|r| r.strip_suffix("/status"))
        {
            if let Ok(v) = serde_json::from_str::<Value>(&m.payload) {
                out.insert(p.to_string(), v);
            }
        }
    }
    out
}

/// Stream → the online probes (of `FLEET`) whose status lists it.
fn watchers(sub: &Subscriber) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (p, s) in statuses(sub) {
        if s["status"] != "online" || s["fleet"] != FLEET {
            continue;
        }
        for id in s["streams"].as_array().unwrap() {
            out.entry(id.as_str().unwrap().to_string())
                .or_default()
                .insert(p.clone());
        }
    }
    out
}

/// Whether every stream of `ids` is watched by exactly `n` probes, all in `allowed`.
fn covered(
    w: &BTreeMap<String, BTreeSet<String>>,
    ids: &[String],
    n: usize,
    allowed: &[&str],
) -> bool {
    w.len() == ids.len()
        && ids.iter().all(|id| {
            w.get(id)
                .is_some_and(|ps| ps.len() == n && ps.iter().all(|p| allowed.contains(&p.as_str())))
        })
}

fn fleet_cmd(cfg: &Path, args: &[&str]) -> (bool, String, String) {
    let mut a = vec!["fleet"];
    a.extend_from_slice(&args[..1]);
    a.push("--config");
    a.push(cfg.to_str().unwrap());
    a.extend_from_slice(&args[1..]);
    let out = vqprobe(&a);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn clip_url() -> String {
    format!(
        "file://{}",
        media_dir().join("clean_quiet_360p.ts").display()
    )
}

#[test]
fn three_probes_share_the_catalog_fail_over_and_take_back_their_share() {
    let dir = TempDir::new("fleet3");
    let broker = Mosquitto::start(dir.path(), &BrokerOpts::default());
    let url = broker.url();
    let sub = Subscriber::start(broker.port, "vqprobe/+/status", &SubOpts::default());
    let errors = Subscriber::start(
        broker.port,
        &format!("vqprobe/fleet/{FLEET}/streams/+/error"),
        &SubOpts::default(),
    );
    let probes = ["p1", "p2", "p3"];
    let cfgs: Vec<PathBuf> = probes
        .iter()
        .map(|p| config(&url, dir.path(), p, 1))
        .collect();
    let ids: Vec<String> = (1..=9).map(|i| format!("s{i}")).collect();
    // The catalog first (retained): the probes find it when they start.
    for id in &ids {
        let (ok, out, err) = fleet_cmd(&cfgs[0], &["add", id, &clip_url(), "--loop"]);
        assert!(ok, "fleet add {id}: {err}");
        assert!(out.contains(&format!("added stream `{id}`")), "{out}");
    }
    let mut agents: Vec<Option<Agent>> = probes
        .iter()
        .zip(&cfgs)
        .map(|(p, c)| Some(Agent::start_with(dir.path(), c, p)))
        .collect();
    let w = wait_for(Duration::from_secs(30), || {
        let w = watchers(&sub);
        covered(&w, &ids, 1, &probes).then_some(w)
    })
    .unwrap_or_else(|| panic!("not every stream watched once: {:?}", watchers(&sub)));
    let before: BTreeMap<String, String> = w
        .iter()
        .map(|(s, ps)| (s.clone(), ps.iter().next().unwrap().clone()))
        .collect();
    // Balanced enough that each probe has some (capacities are equal).
    for p in probes {
        assert!(
            before.values().any(|q| q == p),
            "{p} watches nothing: {before:?}"
        );
    }
    // The streams really run on their probe (its log says so).
    for (s, p) in &before {
        let log = agents[probes.iter().position(|q| q == p).unwrap()]
            .as_ref()
            .unwrap()
            .log();
        assert!(
            log.contains(&format!("starting stream stream={s} ")),
            "{p} does not run {s}"
        );
    }

    // An invalid entry (an unsupported scheme) published behind the CLI's back is
    // reported by the probe it is assigned to, and harms nothing else.
    let bad = r#"{"id":"bad","url":"ftp://cam.example/x"}"#;
    let st = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-r",
            "-q",
            "1",
        ])
        .args([
            "-t",
            &format!("vqprobe/fleet/{FLEET}/streams/bad"),
            "-m",
            bad,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let err = wait_for(Duration::from_secs(15), || {
        errors
            .messages()
            .into_iter()
            .find(|m| m.topic.ends_with("/bad/error") && !m.payload.is_empty())
    })
    .expect("no error reported for the invalid entry");
    let ev: Value = serde_json::from_str(&err.payload).unwrap();
    assert_eq!(ev["stream"], "bad");
    assert!(ev["error"].as_str().unwrap().starts_with("url:"), "{ev}");
    assert!(probes.contains(&ev["probe"].as_str().unwrap()), "{ev}");
    std::thread::sleep(Duration::from_secs(2));
    let w = watchers(&sub);
    assert!(
        !w.contains_key("bad"),
        "the invalid entry is watched: {w:?}"
    );
    assert!(covered(&w, &ids, 1, &probes), "others disturbed: {w:?}");
    // The CLI refuses it before it reaches the broker, and never echoes a password.
    let (ok, _, e) = fleet_cmd(&cfgs[0], &["add", "bad2", "ftp://cam.example/x"]);
    assert!(!ok && e.contains("url"), "{e}");
    let (ok, _, e) = fleet_cmd(
        &cfgs[0],
        &["add", "cam", "rtsp://u:pw-in-url@127.0.0.1:1/x"],
    );
    assert!(
        !ok && e.contains("credentials") && !e.contains("pw-in-url"),
        "{e}"
    );
    // Fixed: watched, and the error is cleared.
    let (ok, _, e) = fleet_cmd(&cfgs[0], &["add", "bad", &clip_url(), "--loop"]);
    assert!(ok, "{e}");
    let mut all: Vec<String> = ids.clone();
    all.push("bad".into());
    wait_for(Duration::from_secs(15), || {
        covered(&watchers(&sub), &all, 1, &probes).then_some(())
    })
    .unwrap_or_else(|| panic!("fixed entry not watched: {:?}", watchers(&sub)));
    wait_for(Duration::from_secs(10), || {
        errors
            .messages()
            .last()
            .filter(|m| m.topic.ends_with("/bad/error") && m.payload.is_empty())
            .map(|_| ())
    })
    .expect("the error was not cleared");
    let before: BTreeMap<String, String> = watchers(&sub)
        .into_iter()
        .map(|(s, ps)| (s, ps.into_iter().next().unwrap()))
        .collect();

    // Two failures, each on the probe with the most streams: a frozen probe (SIGSTOP:
    // its connection stays open and silent, as after a power cut or a network
    // partition, so only the keepalive tells), then a SIGKILLed one (its socket
    // closes). The survivors take its streams within keepalive × 1.5 + 5 s, only its
    // streams move, and once back (SIGCONT, restart) it takes back exactly its share
    // (the assignment is a function of the view) and nothing else moves.
    let limit = Duration::from_secs_f64(KEEPALIVE_S * 1.5 + 5.0);
    for how in ["SIGSTOP", "SIGKILL"] {
        let victim = probes
            .iter()
            .max_by_key(|p| before.values().filter(|q| q == p).count())
            .unwrap()
            .to_string();
        let vi = probes.iter().position(|p| *p == victim).unwrap();
        let survivors: Vec<&str> = probes.iter().copied().filter(|p| *p != victim).collect();
        let failed = Instant::now();
        if how == "SIGSTOP" {
            agents[vi].as_ref().unwrap().signal("STOP");
        } else {
            agents[vi].take().unwrap().kill();
        }
        // The broker's part: its Last Will (`offline`) reaches the subscribers.
        wait_for(limit + Duration::from_secs(10), || {
            (statuses(&sub)[&victim]["status"] == "offline").then_some(())
        })
        .unwrap_or_else(|| panic!("{how}: no Last Will"));
        let will = failed.elapsed();
        // Ours: the survivors watch its streams.
        wait_for(limit + Duration::from_secs(10), || {
            covered(&watchers(&sub), &all, 1, &survivors).then_some(())
        })
        .unwrap_or_else(|| panic!("{how}: not taken over: {:?}", watchers(&sub)));
        let took = failed.elapsed();
        eprintln!(
            "failover after {how}: Last Will after {:.1} s, every stream watched again by the survivors after {:.1} s (keepalive {KEEPALIVE_S} s, target {:.1} s)",
            will.as_secs_f64(),
            took.as_secs_f64(),
            limit.as_secs_f64()
        );
        // What vqprobe owns: from the Last Will to every stream watched again.
        assert!(
            took - will <= Duration::from_secs(5),
            "{how}: takeover took {:?} after the Last Will",
            took - will
        );
        // The whole: the target, plus what mosquitto 2.0 adds on its own: it checks
        // keepalives every 5 s, in whole seconds (docs/fleet.md, "Failover").
        let broker_slack = if how == "SIGSTOP" { 6.0 } else { 0.0 };
        assert!(
            took <= limit + Duration::from_secs_f64(broker_slack),
            "{how}: failover took {took:?} > {limit:?} + {broker_slack} s"
        );
        if how == "SIGSTOP" {
            // Silent, not closed: only the keepalive (1.5 × 2 s) can have told.
            assert!(
                will >= Duration::from_secs_f64(KEEPALIVE_S * 1.5),
                "{how}: {will:?}"
            );
        }
        let during: BTreeMap<String, String> = watchers(&sub)
            .into_iter()
            .map(|(s, ps)| (s, ps.into_iter().next().unwrap()))
            .collect();
        // The victim's streams moved; a survivor's stream moves only where the
        // assignment's load bounds pass one on (app::fleet::assign: at most 1.5 × the
        // ideal movement in all).
        let ideal = before.values().filter(|p| **p == victim).count();
        let extra: Vec<&String> = before
            .iter()
            .filter(|(s, p)| **p != victim && during[*s] != **p)
            .map(|(s, _)| s)
            .collect();
        eprintln!("{how}: {ideal} streams of {victim} moved, and {extra:?} of the survivors");
        assert!(
            2 * (ideal + extra.len()) <= 3 * ideal,
            "{how}: {} moved for {ideal} of the victim's: {extra:?}",
            ideal + extra.len()
        );
        if how == "SIGSTOP" {
            agents[vi].as_ref().unwrap().signal("CONT");
        } else {
            agents[vi] = Some(Agent::start_with(
                dir.path(),
                &cfgs[vi],
                &format!("{victim}-2"),
            ));
        }
        wait_for(Duration::from_secs(30), || {
            let now: BTreeMap<String, String> = watchers(&sub)
                .into_iter()
                .filter(|(_, ps)| ps.len() == 1)
                .map(|(s, ps)| (s, ps.into_iter().next().unwrap()))
                .collect();
            (now == before).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{how}: share not taken back: {:?} vs {before:?}",
                watchers(&sub)
            )
        });
    }

    // `fleet list` shows the catalog, who watches what, and the members.
    let (ok, out, e) = fleet_cmd(&cfgs[0], &["list", "--format", "json"]);
    assert!(ok, "{e}");
    let l: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(l["members"].as_array().unwrap().len(), 3, "{l}");
    let listed: BTreeMap<String, Vec<Value>> = l["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["watched_by"].as_array().unwrap().clone(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 10);
    for (s, p) in &before {
        assert_eq!(listed[s], vec![Value::from(p.as_str())], "{s}");
    }

    // `fleet remove` stops the stream everywhere.
    let holder = before["s5"].clone();
    let (ok, _, e) = fleet_cmd(&cfgs[1], &["remove", "s5"]);
    assert!(ok, "{e}");
    wait_for(Duration::from_secs(10), || {
        let w = watchers(&sub);
        (!w.contains_key("s5") && w.len() == 9).then_some(())
    })
    .unwrap_or_else(|| panic!("s5 still watched: {:?}", watchers(&sub)));
    let hi = probes.iter().position(|p| *p == holder).unwrap();
    assert!(agents[hi]
        .as_ref()
        .unwrap()
        .log()
        .contains("stopping stream (removed or changed) stream=s5"));
    drop(agents);
    drop(broker);
}

#[test]
fn replicas_two_puts_every_stream_on_two_probes() {
    let dir = TempDir::new("fleet-r2");
    let broker = Mosquitto::start(dir.path(), &BrokerOpts::default());
    let url = broker.url();
    let sub = Subscriber::start(broker.port, "vqprobe/+/status", &SubOpts::default());
    let probes = ["r1", "r2", "r3"];
    let cfgs: Vec<PathBuf> = probes
        .iter()
        .map(|p| config(&url, dir.path(), p, 2))
        .collect();
    let agents: Vec<Agent> = probes
        .iter()
        .zip(&cfgs)
        .map(|(p, c)| Agent::start_with(dir.path(), c, p))
        .collect();
    // Added while the probes run (live messages, not retained ones).
    let ids: Vec<String> = (1..=6).map(|i| format!("r{i}s")).collect();
    for id in &ids {
        let (ok, _, e) = fleet_cmd(
            &cfgs[2],
            &["add", id, &clip_url(), "--loop", "--pace", "realtime"],
        );
        assert!(ok, "{e}");
    }
    let w = wait_for(Duration::from_secs(30), || {
        let w = watchers(&sub);
        covered(&w, &ids, 2, &probes).then_some(w)
    })
    .unwrap_or_else(|| panic!("not every stream on two probes: {:?}", watchers(&sub)));
    // Equal capacities: 12 placements over 3 probes, fair share 4, each within the
    // assignment's ±10% band rounded outwards: 3 to 5.
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for ps in w.values() {
        for p in ps {
            *load
                .entry(probes.iter().find(|q| *q == p).unwrap())
                .or_default() += 1;
        }
    }
    assert_eq!(load.len(), 3, "{w:?}");
    assert_eq!(load.values().sum::<usize>(), 12, "{w:?}");
    assert!(load.values().all(|l| (3..=5).contains(l)), "{load:?}");
    drop(agents);
}

#[test]
fn fleet_config_errors_are_refused_with_the_field() {
    let dir = TempDir::new("fleet-cfg");
    let base = "probe_id = \"p\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n";
    for (extra, want) in [
        ("[fleet]\nname = \"a b\"\n", "fleet.name"),
        ("[fleet]\nname = \"f\"\nreplicas = 0\n", "fleet.replicas"),
        ("[fleet]\nname = \"f\"\ncolour = 1\n", "unknown field `colour`"),
        ("[fleet]\nname = \"f\"\ncapacity = 40\n", "fleet.capacity"),
        (
            "[credentials.c]\nusername = \"u\"\npassword = \"pw-secret\"\npassword_file = \"/x\"\n",
            "credentials.c",
        ),
        ("[credentials.c]\nusername = \"u\"\n", "credentials.c"),
        (
            "[[streams]]\nid = \"s\"\nurl = \"rtsp://127.0.0.1/x\"\ncredentials = \"nope\"\n",
            "no [credentials.nope]",
        ),
        (
            "[credentials.c]\nusername = \"u\"\npassword = \"pw-secret\"\n[[streams]]\nid = \"s\"\nurl = \"rtsp://a:b@127.0.0.1/x\"\ncredentials = \"c\"\n",
            "not both",
        ),
    ] {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, format!("{base}{extra}")).unwrap();
        let out = vqprobe(&["run", "--config", p.to_str().unwrap(), "--check-config"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {extra}");
        assert!(err.contains(want), "{extra}: {err}");
        assert!(!err.contains("pw-secret"), "{err}");
    }
    // The same file without [fleet]: `fleet list` needs a fleet name.
    let p = dir.path().join("c.toml");
    std::fs::write(&p, base).unwrap();
    let (ok, _, e) = fleet_cmd(&p, &["list"]);
    assert!(!ok && e.contains("--fleet"), "{e}");
    // A dead broker: a clear one-line error, no hang.
    let (ok, _, e) = fleet_cmd(&p, &["list", "--fleet", "f"]);
    assert!(!ok && e.contains("127.0.0.1:1"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

/// Consumers scale with shared subscriptions (docs/fleet.md, "Consumers"): two members of
/// `$share/alerting/…` split the events between them, each event to exactly one, and
/// together they get every event a plain subscriber gets.
#[test]
fn shared_subscriptions_split_the_events_among_consumers() {
    let dir = TempDir::new("fleet-share");
    let broker = Mosquitto::start(dir.path(), &BrokerOpts::default());
    let filter = "$share/alerting/vqprobe/+/+/events";
    let a = Subscriber::start(broker.port, filter, &SubOpts::default());
    let b = Subscriber::start(broker.port, filter, &SubOpts::default());
    let all = Subscriber::start(broker.port, "vqprobe/+/+/events", &SubOpts::default());
    std::thread::sleep(Duration::from_millis(500));
    let cfg = format!(
        "probe_id = \"share\"\n[mqtt]\nurl = \"{}\"\n[spool]\ndir = \"{}\"\n\
         [[streams]]\nid = \"blk\"\nurl = \"file://{}\"\npace = \"fast\"\nloop = true\n",
        broker.url(),
        dir.path().join("spool").display(),
        media_dir().join("black_high_360p.ts").display()
    );
    let mut agent = Agent::start(dir.path(), &cfg);
    let ids = |s: &Subscriber| -> Vec<String> {
        s.messages()
            .iter()
            .filter_map(|m| serde_json::from_str::<Value>(&m.payload).ok())
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for(Duration::from_secs(60), || {
        (ids(&all).len() >= 12).then_some(())
    })
    .expect("fewer than 12 events");
    agent.signal("TERM");
    agent
        .wait_exit(Duration::from_secs(20))
        .expect("agent did not stop");
    std::thread::sleep(Duration::from_millis(500));
    let (ia, ib, everything) = (ids(&a), ids(&b), ids(&all));
    let sa: BTreeSet<&String> = ia.iter().collect();
    let sb: BTreeSet<&String> = ib.iter().collect();
    assert!(
        !sa.is_empty() && !sb.is_empty(),
        "one consumer got nothing: {} / {}",
        sa.len(),
        sb.len()
    );
    assert!(sa.is_disjoint(&sb), "an event went to both consumers");
    let union: BTreeSet<&String> = sa.union(&sb).copied().collect();
    let whole: BTreeSet<&String> = everything.iter().collect();
    assert_eq!(union, whole, "the group did not get every event");
}

/// A catalog entry names a credential; the member resolves it from its own file and logs
/// in to a real RTSP server with Digest auth. A wrong credential is a failing stream,
/// nothing else. The password appears nowhere: not in the catalog, the log, events or
/// stats.
#[test]
fn catalog_credentials_log_in_to_an_rtsp_camera() {
    let dir = TempDir::new("fleet-cred");
    let clip = format!("loop:{}", media_dir().join("clean_quiet_360p.ts").display());
    let rtsp = common::peers::RtspServer::start(
        &[("/cam", clip.as_str())],
        Some(("/cam", "viewer", "s3cret-pw")),
    );
    let broker = Mosquitto::start(dir.path(), &BrokerOpts::default());
    let everything = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let cfg = config(&broker.url(), dir.path(), "c1", 1);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[credentials.wrong]\nusername = \"viewer\"\npassword = \"not-it\"\n");
    std::fs::write(&cfg, text).unwrap();
    let cam = rtsp.url("/cam");
    for (id, cred) in [("cam", "cams"), ("cam-bad", "wrong")] {
        let (ok, _, e) = fleet_cmd(&cfg, &["add", id, &cam, "--credentials", cred]);
        assert!(ok, "{e}");
    }
    let agent = Agent::start_with(dir.path(), &cfg, "c1");
    let stats = |id: &str| -> Option<Value> {
        everything
            .messages()
            .into_iter()
            .rev()
            .find(|m| m.topic == format!("vqprobe/c1/{id}/stats"))
            .and_then(|m| serde_json::from_str(&m.payload).ok())
    };
    wait_for(Duration::from_secs(30), || {
        stats("cam")
            .filter(|s| s["frames"].as_u64() > Some(25))
            .map(|_| ())
    })
    .unwrap_or_else(|| {
        panic!(
            "the camera with credentials decodes nothing: {:?}",
            stats("cam")
        )
    });
    // The wrong password: refused by the server, so the source is down (and retried).
    let bad = wait_for(Duration::from_secs(20), || {
        stats("cam-bad").filter(|s| {
            s["open_defects"]
                .as_array()
                .is_some_and(|o| o.iter().any(|d| d["kind"] == "source_down"))
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no failure for the wrong credential: {:?}",
            stats("cam-bad")
        )
    });
    assert_eq!(bad["frames"], 0, "{bad}");
    drop(agent);
    let log = std::fs::read_to_string(dir.path().join("c1.log")).unwrap();
    for secret in ["s3cret-pw", "not-it"] {
        assert!(!log.contains(secret), "log holds {secret}");
        for m in everything.messages() {
            assert!(!m.payload.contains(secret), "{} holds {secret}", m.topic);
        }
    }
}
