//! MQTT test peers: a private mosquitto per test (127.0.0.1, free port, own config,
//! optional password file, TLS with a throw-away CA, persistence), `mosquitto_sub`
//! subscribers whose every message is recorded, and the `vqprobe run` agent as a child
//! process with its log captured.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::peers::signal_group;

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// TLS files of a broker listener.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub require_client_cert: bool,
}

/// Broker settings.
#[derive(Debug, Clone, Default)]
pub struct BrokerOpts {
    /// (user, password) required; anonymous refused.
    pub auth: Option<(String, String)>,
    pub tls: Option<BrokerTls>,
    /// Keep sessions and queued messages across restarts (persistence file in the dir).
    pub persistence: bool,
    /// Extra lines for mosquitto.conf (e.g. `max_packet_size 4096`).
    pub extra: String,
}

/// A private mosquitto.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start(dir: &Path, opts: &BrokerOpts) -> Mosquitto {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\nuser root\nlog_dest file {}\nlog_type all\nmax_queued_messages 10000\n",
            dir.join("mosquitto.log").display()
        );
        if opts.persistence {
            conf.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                dir.display()
            ));
        } else {
            conf.push_str("persistence false\n");
        }
        conf.push_str(&opts.extra);
        conf.push('\n');
        match &opts.auth {
            Some((u, p)) => {
                let pw = dir.join("passwd");
                let st = Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&pw)
                    .args([u, p])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("mosquitto_passwd");
                assert!(st.success(), "mosquitto_passwd failed");
                conf.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    pw.display()
                ));
            }
            None => conf.push_str("allow_anonymous true\n"),
        }
        if let Some(t) = &opts.tls {
            conf.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                t.ca.display(),
                t.cert.display(),
                t.key.display(),
                t.require_client_cert
            ));
        }
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut m = Mosquitto {
            port,
            dir: dir.to_path_buf(),
            conf: conf_path,
            child: None,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (apt install mosquitto)");
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .unwrap_or_else(|| panic!("mosquitto did not listen on {port}:\n{}", self.log()));
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Freezes the broker (`kill -STOP`): clients hang rather than fail.
    pub fn freeze(&self) {
        if let Some(p) = self.pid() {
            signal_group(p, "STOP");
        }
    }

    pub fn thaw(&self) {
        if let Some(p) = self.pid() {
            signal_group(p, "CONT");
        }
    }

    /// Stops the broker (SIGTERM: it saves its persistence file) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal_group(c.id(), "CONT");
            signal_group(c.id(), "TERM");
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same configuration.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal_group(c.id(), "KILL");
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(3000)..];
            eprintln!("--- mosquitto log:\n{tail}");
        }
    }
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub qos: u8,
    pub retained: bool,
    pub payload: String,
}

impl Msg {
    /// The payload of a subscriber started with `hex`.
    pub fn bytes(&self) -> Vec<u8> {
        (0..self.payload.len() / 2)
            .map(|i| u8::from_str_radix(&self.payload[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.payload)
            .unwrap_or_else(|e| panic!("not JSON on {}: {e}: {}", self.topic, self.payload))
    }
}

/// A `mosquitto_sub` recording every message. `start` returns once the broker has
/// acknowledged the subscription (SUBACK), so nothing published afterwards is missed.
pub struct Subscriber {
    child: Mutex<Child>,
    msgs: Arc<Mutex<Vec<Msg>>>,
    /// SUBACKs seen (one per connection; mosquitto_sub resubscribes after a reconnect).
    subacks: Arc<AtomicUsize>,
    /// mosquitto_sub's stderr (why it could not connect, if it could not).
    stderr: PathBuf,
}

/// Extra `mosquitto_sub` arguments (TLS, credentials, persistent session).
#[derive(Debug, Clone, Default)]
pub struct SubOpts {
    pub persistent_id: Option<String>,
    pub tls: Option<(PathBuf, Option<(PathBuf, PathBuf)>)>,
    pub auth: Option<(String, String)>,
    /// Payloads as hex (binary payloads such as thumbnails); see [`Msg::bytes`].
    pub hex: bool,
}

impl Subscriber {
    pub fn start(port: u16, topic: &str, opts: &SubOpts) -> Subscriber {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let stderr = std::env::temp_dir().join(format!(
            "vqprobe-sub-{}-{}.err",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // stdbuf (coreutils): mosquitto_sub flushes stdout after a message but not after
        // its -d lines, which would otherwise wait in the pipe's buffer.
        let mut cmd = Command::new("stdbuf");
        // -d: protocol lines on stdout ("Subscribed (mid: 1): 1" after the SUBACK); they
        // have no tabs, so the reader below tells them from messages.
        cmd.args(["-oL", "mosquitto_sub"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-V",
                "mqttv311",
                "-d",
            ])
            .args(["-q", "1", "-t", topic])
            // QoS, retained flag, topic, payload (or its hex); tab-separated.
            .args([
                "-F",
                if opts.hex {
                    "%q\t%r\t%t\t%x"
                } else {
                    "%q\t%r\t%t\t%p"
                },
            ]);
        if let Some(id) = &opts.persistent_id {
            cmd.args(["-c", "-i", id]);
        }
        if let Some((ca, client)) = &opts.tls {
            cmd.arg("--cafile").arg(ca);
            if let Some((c, k)) = client {
                cmd.arg("--cert").arg(c).arg("--key").arg(k);
            }
        }
        if let Some((u, p)) = &opts.auth {
            cmd.args(["-u", u, "-P", p]);
        }
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start mosquitto_sub (apt install mosquitto-clients)");
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let subacks = Arc::new(AtomicUsize::new(0));
        let out = child.stdout.take().unwrap();
        let m = msgs.clone();
        let acks = subacks.clone();
        std::thread::spawn(move || {
            // Byte lines, read lossily: a binary payload (a thumbnail on `vqprobe/#`)
            // must not end the reader; its fragments do not parse as messages.
            let mut reader = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches('\n');
                if line.starts_with("Subscribed (mid: ") {
                    acks.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let mut it = line.splitn(4, '\t');
                let (Some(q), Some(r), Some(t), Some(p)) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    continue;
                };
                m.lock().unwrap().push(Msg {
                    topic: t.to_string(),
                    qos: q.parse().unwrap_or(9),
                    retained: r == "1",
                    payload: p.to_string(),
                });
            }
        });
        let mut sub = Subscriber {
            child: Mutex::new(child),
            msgs,
            subacks,
            stderr,
        };
        // Subscribed before anything is published: wait for the SUBACK, not a guess.
        let acked = wait_for(Duration::from_secs(20), || {
            if sub.subacks.load(Ordering::SeqCst) > 0 {
                return Some(true);
            }
            match sub.child.get_mut().unwrap().try_wait() {
                Ok(Some(_)) => Some(false),
                _ => None,
            }
        });
        if acked != Some(true) {
            let why = std::fs::read_to_string(&sub.stderr).unwrap_or_default();
            sub.stop();
            panic!("mosquitto_sub on port {port} did not subscribe to {topic}: {why}");
        }
        sub
    }

    /// SUBACKs received so far: more than one means it lost its connection and came back.
    pub fn subscriptions(&self) -> usize {
        self.subacks.load(Ordering::SeqCst)
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Messages on topics ending with `suffix`.
    pub fn on(&self, suffix: &str) -> Vec<Msg> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic.ends_with(suffix))
            .collect()
    }

    /// Idempotent: once reaped, its pid may belong to another test's process.
    pub fn stop(&mut self) {
        let child = self.child.get_mut().unwrap();
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        signal_group(child.id(), "KILL");
        let _ = child.wait();
    }

    /// For failure messages: alive or not, subscriptions, messages, its stderr.
    pub fn describe(&self) -> String {
        let state = match self.child.lock().unwrap().try_wait() {
            Ok(None) => "running".to_string(),
            Ok(Some(s)) => format!("exited ({s})"),
            Err(e) => format!("unknown ({e})"),
        };
        format!(
            "mosquitto_sub {state}, {} SUBACK(s), {} message(s), stderr: {:?}",
            self.subscriptions(),
            self.msgs.lock().unwrap().len(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// `vqprobe run --config` as a child process; stderr (the log) goes to a file.
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
    pub config: PathBuf,
}

impl Agent {
    pub fn start(dir: &Path, config: &str) -> Agent {
        let cfg = dir.join("vqprobe.toml");
        std::fs::write(&cfg, config).unwrap();
        Self::start_with(dir, &cfg, "agent")
    }

    /// Starts an agent on an existing config file; `tag` names its log file.
    pub fn start_with(dir: &Path, cfg: &Path, tag: &str) -> Agent {
        Self::start_env(dir, cfg, tag, &[])
    }

    /// Like `start_with`, with extra environment variables.
    pub fn start_env(dir: &Path, cfg: &Path, tag: &str, env: &[(&str, &str)]) -> Agent {
        let log = dir.join(format!("{tag}.log"));
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vqprobe"))
            .envs(env.iter().copied())
            .args(["run", "--config"])
            .arg(cfg)
            .env("RUST_LOG", "info")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start vqprobe run");
        Agent {
            child: Some(child),
            log,
            config: cfg.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Event ids the agent logged, in order, for `stream` (None: all streams).
    pub fn logged_event_ids(&self, stream: Option<&str>) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" event ") || l.ends_with(" event"))
            .filter(|l| stream.is_none_or(|s| l.contains(&format!("stream={s} "))))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("id="))
                    .map(str::to_string)
            })
            .collect()
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            signal_group(c.id(), sig);
        }
    }

    /// Waits for the exit; None if it did not exit within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_for(timeout, || {
            self.child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal_group(c.id(), "KILL");
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(4000)..];
            eprintln!("--- agent log ({}):\n{tail}", self.log.display());
        }
    }
}

/// A client certificate signed by the CA that `peers::make_test_ca` made in `dir`.
pub fn make_client_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let run = |args: &str| {
        let o = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            o.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout client.key -out client.csr -subj /CN=vqprobe-test-client");
    run("x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 30 -extfile client.ext");
    (dir.join("client.pem"), dir.join("client.key"))
}
