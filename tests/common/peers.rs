//! Real test peers for live ingest, run as child processes on 127.0.0.1 and free ports only:
//! an RTSP server (GStreamer's gst-rtsp-server driven from `tests/peers/rtsp_server.py`), an
//! HLS origin with run-time fault injection (`tests/peers/hls_server.py`), a live HLS
//! encoder (`tests/peers/live_hls.sh`), VOD HLS renditions (`tests/peers/make_hls.sh`) and a
//! throw-away TLS CA (openssl CLI).
//!
//! Every peer runs in its own process group and is killed with it on `Drop` (so GStreamer's
//! and ffmpeg's children die too); the Python servers also exit when the test process dies.
//! A peer that does not print `READY port=N` within 10 s fails the test with its stderr.
//! Needs Debian's `/usr/bin/python3` with `python3-gi`, `gstreamer1.0-rtsp`,
//! `gir1.2-gst-rtsp-server-1.0`, the GStreamer good/bad/ugly plugins, ffmpeg and openssl.
//!
//! Included from `tests/common/mod.rs` (`pub mod peers;`); it uses nothing from there.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Debian's interpreter: a pyenv `python3` earlier on PATH cannot import `gi`.
pub const PYTHON: &str = "/usr/bin/python3";
/// How long a peer may take to print its `READY` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// `tests/peers/NAME`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// A fresh directory under the system temp dir, removed on drop unless the test is
/// panicking (then it is kept, and its path printed, for the post-mortem).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "vqprobe-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {path:?}: {e}"));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for the post-mortem", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Sends `sig` (e.g. "STOP", "CONT", "KILL", "INT") to the whole process group `pgid`.
pub fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One running peer process (leader of its own process group).
struct Proc {
    name: String,
    child: Child,
    stderr_path: PathBuf,
    dead: bool,
}

impl Proc {
    /// Spawns `cmd` in a new process group with stderr going to `stderr_path`.
    fn spawn(name: &str, mut cmd: Command, stderr_path: &Path) -> (Proc, mpsc::Receiver<String>) {
        let err = std::fs::File::create(stderr_path)
            .unwrap_or_else(|e| panic!("create {stderr_path:?}: {e}"));
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        // Forwards stdout lines, then keeps draining so the peer never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let proc = Proc {
            name: name.to_string(),
            child,
            stderr_path: stderr_path.to_path_buf(),
            dead: false,
        };
        (proc, rx)
    }

    /// Waits for the `READY ...` line and returns its `key=value` pairs. If the peer exits
    /// or stays silent for `READY_TIMEOUT`, kills its group and returns its stderr.
    fn wait_ready(&mut self, rx: &mpsc::Receiver<String>) -> Result<Vec<(String, String)>, String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("READY") => {
                    return Ok(line
                        .split_whitespace()
                        .skip(1)
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect());
                }
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    return Err(format!(
                        "{} printed no READY line within {READY_TIMEOUT:?}; stderr:\n{}",
                        self.name,
                        self.stderr()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    self.kill();
                    return Err(format!(
                        "{} exited ({status:?}) before READY; stderr:\n{}",
                        self.name,
                        self.stderr()
                    ));
                }
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        if !self.dead {
            signal_group(self.pid(), sig);
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL to the group, then reaps the leader.
    fn kill(&mut self) {
        if !self.dead {
            signal_group(self.pid(), "KILL");
            let _ = self.child.wait();
            self.dead = true;
        }
    }

    /// Whether the leader is still running (reaps it if not). Once reaped, the rest of
    /// its group is killed at once and the pid is never signalled again: it may be
    /// reused by another test's process.
    fn is_running(&mut self) -> bool {
        if self.dead {
            return false;
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            return true;
        }
        signal_group(self.pid(), "KILL");
        self.dead = true;
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} stderr ({}):\n{}",
                self.name,
                self.stderr_path.display(),
                tail(&self.stderr(), 4000)
            );
        }
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

fn ready_value(kv: &[(String, String)], key: &str, who: &str) -> u16 {
    kv.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("{who}: READY line without {key}=N: {kv:?}"))
}

// ---------------------------------------------------------------------------------------
// RTSP

/// GStreamer RTSP server on 127.0.0.1. Mount specs: `file:/abs/clip.ts` (each client from
/// t=0, real-time pace, ends with the file), `loop:/abs/clip.ts`, `live`, `live-noaudio`.
pub struct RtspServer {
    pub port: u16,
    mounts: Vec<(String, String)>,
    digest: Option<(String, String, String)>,
    dir: TempDir,
    proc: Proc,
    starts: usize,
}

impl RtspServer {
    /// Starts the server with `mounts` (path, spec), e.g.
    /// `&[("/clip", "file:/abs/black_high_360p.ts"), ("/live", "live")]`, and optional Digest
    /// auth `(path, user, password)` on one of the mounts (the others stay open).
    pub fn start(mounts: &[(&str, &str)], digest: Option<(&str, &str, &str)>) -> RtspServer {
        let mounts: Vec<(String, String)> = mounts
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect();
        let digest = digest.map(|(p, u, w)| (p.to_string(), u.to_string(), w.to_string()));
        let dir = TempDir::new("rtsp");
        let (proc, port) =
            Self::spawn(&mounts, &digest, dir.path(), 0, 0).unwrap_or_else(|e| panic!("{e}"));
        RtspServer {
            port,
            mounts,
            digest,
            dir,
            proc,
            starts: 1,
        }
    }

    fn spawn(
        mounts: &[(String, String)],
        digest: &Option<(String, String, String)>,
        dir: &Path,
        port: u16,
        n: usize,
    ) -> Result<(Proc, u16), String> {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(peer_script("rtsp_server.py"))
            .arg("--port")
            .arg(port.to_string());
        for (path, spec) in mounts {
            cmd.arg("--mount").arg(format!("{path}={spec}"));
        }
        if let Some((path, user, pass)) = digest {
            cmd.arg("--digest-auth")
                .arg(format!("{path}={user}:{pass}"));
        }
        // GST_DEBUG=2: errors and warnings (e.g. why a DESCRIBE got a bare 503) in stderr.
        if std::env::var_os("GST_DEBUG").is_none() {
            cmd.env("GST_DEBUG", "2");
        }
        cmd.env("GST_DEBUG_NO_COLOR", "1");
        let (mut proc, rx) = Proc::spawn("rtsp_server.py", cmd, &dir.join(format!("stderr.{n}")));
        let kv = proc.wait_ready(&rx)?;
        let port = ready_value(&kv, "port", "rtsp_server.py");
        Ok((proc, port))
    }

    /// `rtsp://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "rtsp://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// `rtsp://user:password@127.0.0.1:PORT/path` (no escaping: keep test credentials plain).
    pub fn url_with_credentials(&self, path: &str, user: &str, password: &str) -> String {
        format!(
            "rtsp://{user}:{password}@127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// SIGSTOP: the server hangs (TCP stays open, no data, no answers).
    pub fn stop(&self) {
        self.proc.signal("STOP");
    }

    /// SIGCONT after `stop()`: live media bursts to catch up.
    pub fn cont(&self) {
        self.proc.signal("CONT");
    }

    /// SIGKILL: connections are reset (to a naive client it looks like a clean end).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Kills the server (if running) and starts it again on the same port with the same
    /// mounts. Retries for a few seconds while the port is still taken.
    pub fn restart(&mut self) {
        self.proc.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = self.starts;
            self.starts += 1;
            match Self::spawn(&self.mounts, &self.digest, self.dir.path(), self.port, n) {
                Ok((proc, port)) => {
                    assert_eq!(port, self.port, "restarted on another port");
                    self.proc = proc;
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("restart failed: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The current server process's stderr so far.
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}

// ---------------------------------------------------------------------------------------
// HLS

/// A tiny HTTP response, from [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Plain HTTP/1.1 over a std `TcpStream` to 127.0.0.1:`port` (`Connection: close`; no TLS).
/// The body is whatever arrived before the server closed (a truncated body stays short).
pub fn http_request(port: u16, method: &str, path: &str, body: Option<&[u8]>) -> HttpResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or(b"");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    // A reset after a truncated body is part of the fault: keep what arrived.
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// HLS origin serving `dir` on 127.0.0.1 (HTTPS with `tls`), with faults switchable at run
/// time by [`HlsServer::fault`]. See `tests/peers/hls_server.py` for the rule format.
pub struct HlsServer {
    pub port: u16,
    /// Plain-HTTP port for the control paths (== `port` without TLS).
    pub control_port: u16,
    dir: PathBuf,
    tls: Option<(PathBuf, PathBuf)>,
    logs: TempDir,
    proc: Proc,
    starts: usize,
}

impl HlsServer {
    /// Serves `dir`; `tls` = (certificate PEM, key PEM), e.g. from [`make_test_ca`].
    pub fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> HlsServer {
        let tls = tls.map(|(c, k)| (c.to_path_buf(), k.to_path_buf()));
        let logs = TempDir::new("hls");
        let (proc, port, control_port) =
            Self::spawn(dir, &tls, logs.path(), 0, 0).unwrap_or_else(|e| panic!("{e}"));
        HlsServer {
            port,
            control_port,
            dir: dir.to_path_buf(),
            tls,
            logs,
            proc,
            starts: 1,
        }
    }

    fn spawn(
        dir: &Path,
        tls: &Option<(PathBuf, PathBuf)>,
        logs: &Path,
        port: u16,
        n: usize,
    ) -> Result<(Proc, u16, u16), String> {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(peer_script("hls_server.py"))
            .arg("--dir")
            .arg(dir)
            .arg("--port")
            .arg(port.to_string());
        if let Some((cert, key)) = tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let (mut proc, rx) = Proc::spawn("hls_server.py", cmd, &logs.join(format!("stderr.{n}")));
        let kv = proc.wait_ready(&rx)?;
        let port = ready_value(&kv, "port", "hls_server.py");
        let control = ready_value(&kv, "control_port", "hls_server.py");
        Ok((proc, port, control))
    }

    /// `http(s)://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!(
            "{scheme}://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Sets a fault rule, e.g. `json!({"path": "seg3.ts", "status": 404})`,
    /// `{"path": "x.ts", "delay_s": 5}`, `{"path": "index.m3u8", "freeze": true}`,
    /// `{"path": "x.ts", "truncate": 1000}`, `{"redirect_loop": true}`, `{"clear": true}`
    /// (add `"times": N` to apply a rule N times only). Returns the rules now in force.
    pub fn fault(&self, rule: Value) -> Value {
        let body = rule.to_string();
        let r = http_request(self.control_port, "POST", "/__fault", Some(body.as_bytes()));
        assert_eq!(r.status, 200, "fault {body} refused: {}", r.text());
        serde_json::from_slice(&r.body).expect("fault answer is JSON")
    }

    /// Drops every fault rule.
    pub fn clear_faults(&self) {
        self.fault(serde_json::json!({"clear": true}));
    }

    /// The server's request log: objects with method, path, status, bytes, duration_s, t, fault.
    pub fn requests(&self) -> Vec<Value> {
        let r = http_request(self.control_port, "GET", "/__requests", None);
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).expect("request log is JSON")
    }

    /// Plain-HTTP GET of `path` (servers without TLS only).
    pub fn get(&self, path: &str) -> HttpResponse {
        assert!(
            self.tls.is_none(),
            "HlsServer::get is plain HTTP; use curl for TLS"
        );
        http_request(
            self.port,
            "GET",
            &format!("/{}", path.trim_start_matches('/')),
            None,
        )
    }

    /// SIGSTOP: a hung origin (connections accepted by the kernel, never answered).
    pub fn stop(&self) {
        self.proc.signal("STOP");
    }

    pub fn cont(&self) {
        self.proc.signal("CONT");
    }

    /// SIGKILL: connection refused from now on.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Kills the server and starts it again on the same port (fault rules are reset; with
    /// TLS the control port changes). Retries for a few seconds while the port is taken.
    pub fn restart(&mut self) {
        self.proc.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = self.starts;
            self.starts += 1;
            match Self::spawn(&self.dir, &self.tls, self.logs.path(), self.port, n) {
                Ok((proc, port, control)) => {
                    assert_eq!(port, self.port, "restarted on another port");
                    self.proc = proc;
                    self.control_port = control;
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("restart failed: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}

/// Runs `tests/peers/make_hls.sh OUT SRC`: `OUT/vod_ts/index.m3u8` (seg0.ts...),
/// `OUT/vod_fmp4/index.m3u8` (init.mp4, seg0.m4s...) and `OUT/master.m3u8` (variants
/// `hi/index.m3u8` = copy, `lo/index.m3u8` = half size). Idempotent per OUT.
pub fn make_hls(out: &Path, src: &Path) {
    let o = Command::new("bash")
        .arg(peer_script("make_hls.sh"))
        .arg(out)
        .arg(src)
        .output()
        .expect("run make_hls.sh");
    assert!(
        o.status.success(),
        "make_hls.sh {out:?} {src:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// ffmpeg writing a live sliding-window HLS stream into a directory (`index.m3u8`, 1 s
/// segments `segN.ts`, 5 in the window, old ones deleted). Killed on drop.
pub struct LiveHls {
    pub dir: PathBuf,
    proc: Proc,
}

impl LiveHls {
    /// Starts ffmpeg and waits (10 s at most) until the playlist lists a segment.
    pub fn start(dir: &Path) -> LiveHls {
        std::fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(peer_script("live_hls.sh")).arg(dir);
        let stderr = dir.join(".live_hls.stderr");
        let (mut proc, _rx) = Proc::spawn("live_hls.sh", cmd, &stderr);
        let playlist = dir.join("index.m3u8");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&playlist).unwrap_or_default();
            if text.contains("#EXTINF") {
                break;
            }
            if !proc.is_running() {
                proc.kill();
                panic!("live_hls.sh exited early; stderr:\n{}", proc.stderr());
            }
            if Instant::now() > deadline {
                proc.kill();
                panic!(
                    "live_hls.sh wrote no playlist within {READY_TIMEOUT:?}; stderr:\n{}",
                    proc.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        LiveHls {
            dir: dir.to_path_buf(),
            proc,
        }
    }

    /// The playlist as it is on disk now.
    pub fn playlist(&self) -> String {
        std::fs::read_to_string(self.dir.join("index.m3u8")).unwrap_or_default()
    }

    /// SIGSTOP: a dead origin (playlist stops changing, no `#EXT-X-ENDLIST`).
    pub fn stop(&self) {
        self.proc.signal("STOP");
    }

    pub fn cont(&self) {
        self.proc.signal("CONT");
    }

    /// SIGKILL: the playlist stays as it was, without `#EXT-X-ENDLIST`.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGINT: ffmpeg finishes the segment and appends `#EXT-X-ENDLIST` (the live stream
    /// ends). Waits up to 5 s, then kills.
    pub fn end_cleanly(&mut self) {
        self.proc.signal("INT");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.proc.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc.kill();
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}

/// A throw-away CA and a server certificate for `127.0.0.1` (subjectAltName IP:127.0.0.1
/// and DNS:localhost), EC P-256, valid 30 days, made with the openssl CLI in `dir`.
/// Returns (CA certificate PEM, server certificate PEM, server key PEM).
pub fn make_test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let openssl = |args: &str| {
        // File names are relative to `dir`; no argument has a space.
        let o = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            o.status.success(),
            "openssl {args} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 30 -subj /CN=vqprobe-test-CA \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    ));
    openssl(&format!(
        "req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
    ));
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
         -days 30 -extfile server.ext",
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}
