//! The outbox on a real filesystem with a real broker: a full disk, SIGKILL at random
//! moments, a second agent on the same spool, an unwritable spool directory. Every event
//! id the agent logged must reach a real `mosquitto_sub` subscriber (duplicates allowed,
//! nothing missing).
//!
//! The full-disk test mounts a 512 KiB tmpfs and needs root (CI runs as root); without
//! root it says so and returns.

mod common;

use std::collections::HashSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::media_dir;
use common::mqtt::{free_port, wait_for, Agent, BrokerOpts, Mosquitto, Msg, SubOpts, Subscriber};
use common::peers::TempDir;

const PROBE: &str = "edge-outbox-01";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A tmpfs mounted for the test's lifetime (unmounted on drop, even on panic).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, opts: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs -o {opts} failed (as root)");
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn config(broker: &str, spool: &Path, streams: &[(&str, &str, bool)]) -> String {
    let mut s = format!(
        "probe_id = \"{PROBE}\"\nstats_interval = \"1s\"\nshutdown_timeout = \"2s\"\n\
         [mqtt]\nurl = \"{broker}\"\nkeepalive = \"2s\"\nconnect_timeout = \"1s\"\nbackoff_max = \"1s\"\n\
         [spool]\ndir = \"{}\"\n",
        spool.display()
    );
    for (id, clip, looped) in streams {
        s.push_str(&format!(
            "[[streams]]\nid = \"{id}\"\nurl = \"file://{}\"\npace = \"{}\"\nloop = {looped}\n",
            media_dir().join(clip).display(),
            if *looped { "fast" } else { "realtime" }
        ));
    }
    s
}

/// Event ids received (first copy of each).
fn received_ids(msgs: &[Msg]) -> HashSet<String> {
    msgs.iter()
        .filter(|m| m.topic.ends_with("/events"))
        .filter_map(|m| m.json()["id"].as_str().map(str::to_string))
        .collect()
}

/// Waits until every id in `want` was received; panics with the missing ones.
fn assert_all_received(sub: &Subscriber, want: &[String], secs: u64, what: &str) {
    let ok = wait_for(Duration::from_secs(secs), || {
        let got = received_ids(&sub.messages());
        want.iter().all(|id| got.contains(id)).then_some(())
    });
    if ok.is_none() {
        let got = received_ids(&sub.messages());
        let missing: Vec<&String> = want.iter().filter(|id| !got.contains(*id)).collect();
        panic!(
            "{what}: {} of {} event ids never reached the subscriber: {missing:?}",
            missing.len(),
            want.len()
        );
    }
}

/// Fills the filesystem at `dir` (one file, written until the disk is full).
fn fill(dir: &Path) -> PathBuf {
    let f = dir.join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", f.display()))
        .args(["bs=4k"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    f
}

/// The scenario: spool on a 512 KiB tmpfs, the broker down, the disk full while
/// black and silence start and end, the disk freed, SIGKILL, restart with the broker up:
/// every event reaches the subscriber. Before the fix: 0 of 4.
#[test]
fn full_disk_then_sigkill_loses_no_event() {
    if !is_root() {
        eprintln!(
            "SKIPPED full_disk_then_sigkill_loses_no_event: needs root to mount a tmpfs \
             (run the tests as root, as CI does)"
        );
        return;
    }
    let dir = TempDir::new("outbox-full");
    let fs = Tmpfs::mount(&dir.path().join("fs"), "size=512k");
    let spool = fs.path.join("spool");
    // No broker yet: a port nobody listens on.
    let down = format!("mqtt://127.0.0.1:{}", free_port());
    let mut first = Agent::start(
        dir.path(),
        &config(
            &down,
            &spool,
            &[
                ("black", "black_high_360p.ts", false),
                ("silence", "silence_high_720p.ts", false),
            ],
        ),
    );
    wait_for(Duration::from_secs(10), || {
        first.log().contains("vqprobe agent starting").then_some(())
    })
    .unwrap_or_else(|| panic!("agent did not start:\n{}", first.log()));
    // The disk is full before the first defect starts (black at 3 s, silence at 4 s).
    let filler = fill(&fs.path);
    let began = Instant::now();
    let events = wait_for(Duration::from_secs(30), || {
        let ids = first.logged_event_ids(None);
        (ids.len() >= 4).then_some(ids)
    })
    .unwrap_or_else(|| panic!("the agent did not emit 4 events:\n{}", first.log()));
    assert!(
        first.log().contains("spool: cannot write"),
        "the disk was full while the events arrived:\n{}",
        first.log()
    );
    // Keep the disk full a little longer, then free it.
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(&filler).unwrap();
    // The events that waited in memory are written once the disk has room again
    // (retried at least every second), then SIGKILL.
    let rewritten = wait_for(Duration::from_secs(5), || {
        first
            .log()
            .contains("the disk takes writes again")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    eprintln!(
        "disk full for {:.1} s; SIGKILL",
        began.elapsed().as_secs_f64()
    );
    first.kill();
    // Broker up, a subscriber, and the agent again without streams: whatever arrives
    // came from the spool.
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let cfg2 = dir.path().join("second.toml");
    std::fs::write(&cfg2, config(&broker.url(), &spool, &[])).unwrap();
    let second = Agent::start_with(dir.path(), &cfg2, "second");
    assert_all_received(&sub, &events, 20, "after a full disk and SIGKILL");
    assert!(second.logged_event_ids(None).is_empty());
    assert!(
        rewritten.is_some(),
        "the spool did not log that it writes again:\n{}",
        first.log()
    );
}

/// A busy agent (two looped streams at full speed) killed with SIGKILL at random
/// moments, 20 times, with the broker up: every event id any run logged is received.
#[test]
fn sigkill_at_random_moments_loses_no_event() {
    let dir = TempDir::new("outbox-kill");
    let broker = Mosquitto::start(&dir.path().join("broker"), &BrokerOpts::default());
    let sub = Subscriber::start(broker.port, "vqprobe/#", &SubOpts::default());
    let spool = dir.path().join("spool");
    let cfg = dir.path().join("busy.toml");
    std::fs::write(
        &cfg,
        config(
            &broker.url(),
            &spool,
            &[
                ("black", "black_high_360p.ts", true),
                ("multi", "multi_main_360p.ts", true),
            ],
        ),
    )
    .unwrap();
    // A small deterministic PRNG (xorshift) for the kill moments; the seed is printed.
    let mut x: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill schedule seed {x}");
    let mut logged: Vec<String> = Vec::new();
    for run in 0..20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let after = Duration::from_millis(300 + x % 1700);
        let mut agent = Agent::start_with(dir.path(), &cfg, &format!("run-{run}"));
        std::thread::sleep(after);
        agent.kill();
        let ids = agent.logged_event_ids(None);
        assert!(
            !agent.log().contains("panicked"),
            "run {run} panicked:\n{}",
            agent.log()
        );
        logged.extend(ids);
    }
    assert!(
        logged.len() >= 20,
        "the runs were not busy: {} events",
        logged.len()
    );
    eprintln!("{} events logged over 20 killed runs", logged.len());
    // One last start without streams delivers what the spool still holds.
    let final_cfg = dir.path().join("final.toml");
    std::fs::write(&final_cfg, config(&broker.url(), &spool, &[])).unwrap();
    let _last = Agent::start_with(dir.path(), &final_cfg, "final");
    assert_all_received(&sub, &logged, 30, "after 20 SIGKILLs");
}

/// Starts `vqprobe run` with NOTIFY_SOCKET pointing at a socket of ours; returns its exit
/// status (within 10 s), stderr, and whether it sent READY=1.
fn run_with_notify(dir: &Path, cfg: &Path, tag: &str) -> (Option<i32>, String, bool) {
    let sock_path = dir.join(format!("{tag}.notify"));
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vqprobe"))
        .args(["run", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = false;
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(n) = sock.recv(&mut buf) {
            ready |= String::from_utf8_lossy(&buf[..n]).contains("READY=1");
        }
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
    };
    while let Ok(n) = sock.recv(&mut buf) {
        ready |= String::from_utf8_lossy(&buf[..n]).contains("READY=1");
    }
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (status.and_then(|s| s.code()), err, ready)
}

/// A second agent on the same spool directory fails at start with a clear error, a
/// non-zero exit and no READY; the first keeps running.
#[test]
fn a_second_agent_on_the_same_spool_fails_before_ready() {
    let dir = TempDir::new("outbox-lock");
    let spool = dir.path().join("spool");
    let down = format!("mqtt://127.0.0.1:{}", free_port());
    let mut first = Agent::start(dir.path(), &config(&down, &spool, &[]));
    wait_for(Duration::from_secs(10), || {
        first.log().contains("vqprobe agent starting").then_some(())
    })
    .unwrap_or_else(|| panic!("agent did not start:\n{}", first.log()));
    let cfg2 = dir.path().join("second.toml");
    std::fs::write(&cfg2, config(&down, &spool, &[])).unwrap();
    let (code, err, ready) = run_with_notify(dir.path(), &cfg2, "second");
    assert!(
        code.is_some_and(|c| c != 0),
        "second agent: exit {code:?}\n{err}"
    );
    assert!(!ready, "the second agent reported READY:\n{err}");
    assert!(
        err.contains("in use by another vqprobe process")
            && err.contains(&spool.display().to_string()),
        "unclear error: {err}"
    );
    assert!(
        first.wait_exit(Duration::from_millis(200)).is_none(),
        "the first agent still runs"
    );
    first.kill();
}

/// An unwritable spool directory (a read-only filesystem as root; a mode 0500 directory
/// otherwise) fails the start before READY.
#[test]
fn an_unwritable_spool_directory_fails_before_ready() {
    let dir = TempDir::new("outbox-ro");
    let spool = dir.path().join("ro");
    let _fs = if is_root() {
        Some(Tmpfs::mount(&spool, "size=64k,ro"))
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o500)).unwrap();
        None
    };
    let down = format!("mqtt://127.0.0.1:{}", free_port());
    let cfg = dir.path().join("ro.toml");
    std::fs::write(&cfg, config(&down, &spool, &[])).unwrap();
    let (code, err, ready) = run_with_notify(dir.path(), &cfg, "ro");
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}\n{err}");
    assert!(!ready, "READY with an unwritable spool:\n{err}");
    assert!(
        err.contains(&spool.display().to_string()),
        "unclear error: {err}"
    );
}
