//! Process plumbing of the agent benchmark: a private mosquitto, a `mosquitto_sub`
//! recorder, CPU and RSS samples from `/proc`, and small statistics helpers. Owns no
//! measurement policy (that is `runs.rs`) and writes nothing outside its scratch dir.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (user + system CPU seconds, RSS KiB) of a process.
pub fn sample(pid: u32, tck: f64) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tck;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, rss))
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub struct Broker {
    child: Child,
    pub port: u16,
    conf: PathBuf,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nmax_queued_messages 100000\nlog_dest none\n"
            ),
        )
        .unwrap();
        let mut b = Broker {
            child: Command::new("true").spawn().unwrap(),
            port,
            conf,
        };
        b.spawn();
        b
    }

    pub fn spawn(&mut self) {
        self.child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("mosquitto did not start");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message received by the subscriber.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Arrival, unix seconds.
    pub arrived: f64,
    pub topic: String,
    pub payload: String,
}

pub type Received = Arc<Mutex<Vec<Msg>>>;

/// `mosquitto_sub` recording what arrives on `topics`.
pub fn subscribe(port: u16, topics: &[&str]) -> (Child, Received) {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"]);
    for t in topics {
        cmd.args(["-t", t]);
    }
    let mut child = cmd
        .args(["-F", "%U\t%t\t%p"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    let out = child.stdout.take().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let mut it = line.splitn(3, '\t');
            let (Some(t), Some(topic), Some(p)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if let Ok(t) = t.parse::<f64>() {
                g.lock().unwrap().push(Msg {
                    arrived: t,
                    topic: topic.to_string(),
                    payload: p.to_string(),
                });
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    (child, got)
}

pub fn rfc3339_secs(s: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs_f64())
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Least-squares slope of y over x (NaN with fewer than two distinct x).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        f64::NAN
    } else {
        sxy / sxx
    }
}
