//! `vqprobe run`: the long-running agent. Watches every configured stream in one
//! process and publishes each event over MQTT through the spooled outbox.
//!
//! * [`Agent`] is the running agent as a value: [`Agent::start`], [`Agent::apply`],
//!   [`Agent::reload`], [`Agent::shutdown`], driven by [`Agent::run`] with a stream of
//!   [`Signal`]s (real signals are mapped onto it by [`signals`]; tests send them).
//! * Each stream is a task looping run → [`session::run`] → backoff until it is
//!   stopped; a failing stream (dead source, hostile input, decoder error, even a panic)
//!   never disturbs the others. Each session decodes on its own named OS thread
//!   (`decode-{id}`), so decode threads are bounded by `limits.max_streams`.
//! * Signals: SIGTERM/SIGINT stop ingest, end open defects (`reason: "shutdown"`),
//!   flush the outbox within `shutdown_timeout`, publish `offline`, exit 0; a second
//!   signal exits at once (the spool keeps what was not delivered). SIGHUP reloads the
//!   file: added streams start, removed ones stop, changed ones restart, unchanged
//!   ones keep running.
//! * systemd `Type=notify`: READY, RELOADING, STOPPING, and WATCHDOG pings at half of
//!   `WatchdogSec` when it is set.

pub mod config;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use serde_json::json;

use self::config::{Loaded, StreamPlan};
use super::session::{self, SessionCounters, SessionSpec};
use crate::backoff::Backoff;
use crate::defect::Phase;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::publish::mqtt::Publisher;
use crate::publish::spool::{Spool, SpoolOptions};
use crate::publish::status::Status;
use crate::redact::{redact_in_text, redact_url};
use crate::shutdown::Shutdown;

/// Segment size of the spool files.
const SPOOL_SEGMENT_BYTES: u64 = 1 << 20;
/// How often the spool is fsynced (batched durability).
const SYNC_EVERY: Duration = Duration::from_millis(200);
/// A session that ran this long resets its stream's restart backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// Live state of one stream, shared by its task and the stats reporter.
#[derive(Debug, Default)]
struct StreamState {
    counters: SessionCounters,
    /// Open defects: kind, defect id, start.
    open: Mutex<Vec<(String, String, f64)>>,
    events: AtomicU64,
    restarts: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Previous stats sample: (frames, media bytes, at).
    prev: Mutex<Option<(u64, u64, Instant)>>,
}

struct StreamHandle {
    plan: StreamPlan,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    state: Arc<StreamState>,
}

/// What every stream needs from the agent.
#[derive(Clone)]
struct Ctx {
    publisher: Publisher,
    probe_id: String,
}

/// What the agent is told from outside. Real signals are mapped onto a stream of these
/// in one place ([`signals`]); tests send them on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload the configuration file.
    Hangup,
    /// SIGTERM: shut down cleanly (a second one: at once).
    Terminate,
    /// SIGINT: as SIGTERM.
    Interrupt,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        }
    }
}

/// How the agent ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Streams ended, the outbox flushed (or its leftovers spooled), `offline` published.
    Clean,
    /// A second signal during shutdown: exit at once (status 130); the spool keeps what
    /// was not delivered.
    Now,
}

/// SIGTERM, SIGINT and SIGHUP as a stream of [`Signal`]s: the one place real signals
/// reach the agent.
pub fn signals() -> Result<tokio::sync::mpsc::Receiver<Signal>> {
    use tokio::signal::unix::{signal, SignalKind};
    let sig =
        |k| signal(k).map_err(|e| Error::Other(format!("cannot install signal handler: {e}")));
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sighup = sig(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                Some(()) = sigterm.recv() => Signal::Terminate,
                Some(()) = sigint.recv() => Signal::Interrupt,
                Some(()) = sighup.recv() => Signal::Hangup,
                else => return,
            };
            if tx.send(s).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Runs the agent on the configuration at `config_path` until SIGTERM/SIGINT (SIGHUP
/// reloads). Errors: the configuration cannot be loaded, the spool cannot be opened,
/// the publisher task died.
pub async fn run(config_path: &Path) -> Result<Exit> {
    let signals = signals()?;
    Agent::start(config_path).await?.run(signals).await
}

/// The running agent: its configuration, its streams and its publisher. Driven by
/// [`Agent::run`] with a stream of [`Signal`]s.
pub struct Agent {
    config_path: PathBuf,
    current: Loaded,
    publisher: Publisher,
    ctx: Ctx,
    streams: HashMap<String, StreamHandle>,
    /// The status payload's fixed part (probe, start time, pid).
    status: Status,
    tls_digest: u64,
}

impl Agent {
    /// Loads the configuration, opens the spool, starts the publisher and every stream,
    /// and tells systemd READY.
    pub async fn start(config_path: &Path) -> Result<Agent> {
        let loaded = config::load(config_path)?;
        // Takes the spool's lock and proves the directory writable: a second agent on
        // the same spool or an unwritable directory fails here, before READY.
        let spool = Spool::open(SpoolOptions::new(
            loaded.cfg.spool.dir.clone(),
            loaded.cfg.spool.max_bytes,
            SPOOL_SEGMENT_BYTES,
        ))
        .map_err(|source| Error::Io {
            path: loaded.cfg.spool.dir.clone(),
            source,
        })?;
        let recovered = spool.stats().recovered;
        if recovered > 0 {
            tracing::info!(
                events = recovered,
                "spool: undelivered events from the previous run will be sent"
            );
        }
        let settings = loaded.mqtt_settings()?;
        if settings.password.is_some() && settings.tls.is_none() {
            if is_loopback(&settings.host) {
                tracing::info!(
                    "MQTT: the broker password is sent in clear text (mqtt://, loopback only)"
                );
            } else {
                tracing::warn!(
                    broker = %redact_url(&loaded.cfg.mqtt.url),
                    "MQTT: the broker password is sent in clear text over mqtt://: anyone on the network path can read it; use mqtts://"
                );
            }
        }
        let tls_digest = tls_files_digest(&loaded);
        let status = Status::new(&loaded.cfg.probe_id, SystemTime::now(), stream_ids(&loaded));
        let publisher = Publisher::start(settings, spool, status.online(), status.offline())?;
        tracing::info!(
            version = crate::VERSION,
            probe = %loaded.cfg.probe_id,
            config = %config_path.display(),
            broker = %redact_url(&loaded.cfg.mqtt.url),
            streams = loaded.streams.len(),
            "vqprobe agent starting"
        );
        let ctx = Ctx {
            publisher: publisher.clone(),
            probe_id: loaded.cfg.probe_id.clone(),
        };
        let mut streams = HashMap::new();
        apply(&ctx, &mut streams, &loaded).await;
        notify(&[sd_notify::NotifyState::Ready]);
        Ok(Agent {
            config_path: config_path.to_path_buf(),
            current: loaded,
            publisher,
            ctx,
            streams,
            status,
            tls_digest,
        })
    }

    /// The ids of the streams running now.
    pub fn stream_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.streams.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Brings the running streams in line with `loaded` (added streams start, removed
    /// ones stop, changed ones restart, unchanged ones keep running), makes it the
    /// current configuration and publishes the new stream list in the `online` status.
    /// The probe id and the broker connection keep their settings.
    pub async fn apply(&mut self, loaded: Loaded) {
        apply(&self.ctx, &mut self.streams, &loaded).await;
        self.status.streams = stream_ids(&loaded);
        self.publisher.set_online(self.status.online());
        self.current = loaded;
    }

    /// Reloads the configuration file and applies it; an invalid file is logged and the
    /// running configuration kept. True when the new one was applied.
    pub async fn reload(&mut self) -> bool {
        notify(&[sd_notify::NotifyState::Reloading]);
        let applied = match config::load(&self.config_path) {
            Ok(new) => {
                if new.cfg.probe_id != self.current.cfg.probe_id
                    || new.cfg.spool != self.current.cfg.spool
                {
                    tracing::warn!(
                        "SIGHUP: changes to probe_id or [spool] take effect after a restart"
                    );
                }
                let new_digest = tls_files_digest(&new);
                let changed = mqtt_changes(&self.current, &new, self.tls_digest != new_digest);
                if !changed.is_empty() {
                    tracing::warn!(
                        changed = %changed.join(", "),
                        "SIGHUP: changes to [mqtt] ({}) take effect only after a restart (systemctl restart vqprobe); the broker connection keeps its current settings",
                        changed.join(", ")
                    );
                }
                self.tls_digest = new_digest;
                self.apply(new).await;
                tracing::info!(
                    streams = self.streams.len(),
                    "SIGHUP: configuration reloaded"
                );
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the running one");
                false
            }
        };
        notify(&[sd_notify::NotifyState::Ready]);
        applied
    }

    /// Runs until a [`Signal::Terminate`] or [`Signal::Interrupt`] (then
    /// [`Agent::shutdown`]); [`Signal::Hangup`] reloads. Also publishes the stats, pings
    /// the watchdog and syncs the spool. Errors: the publisher task died (the streams'
    /// end events are spooled for the next start).
    pub async fn run(mut self, mut signals: tokio::sync::mpsc::Receiver<Signal>) -> Result<Exit> {
        let watchdog = watchdog_interval();
        let mut watchdog_tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut stats_tick = tokio::time::interval(self.current.cfg.stats_interval);
        stats_tick.tick().await;
        let mut sync_tick = tokio::time::interval(SYNC_EVERY);
        let mut failure = None;
        let mut connects = self.publisher.connects();
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The spool's fsyncs run on a blocking thread; a slow disk must not hold this
        // loop (signals, watchdog), and at most one sync is in flight.
        let mut sync_task: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                // After the link dropped and came back, the stats (with the link
                // counters) go out at once rather than at the next interval.
                Ok(()) = connects.changed() => {
                    if *connects.borrow_and_update() > 1 {
                        publish_stats(&self.publisher, &self.streams, &self.current);
                    }
                }
                why = self.publisher.failed() => {
                    tracing::error!(
                        reason = %why,
                        "MQTT publisher task ended unexpectedly: no event can be delivered; exiting with failure so that systemd restarts the agent (undelivered events stay in the spool)"
                    );
                    failure = Some(why);
                    break;
                }
                sig = signals.recv() => match sig {
                    Some(Signal::Hangup) => {
                        if self.reload().await {
                            stats_tick = tokio::time::interval(self.current.cfg.stats_interval);
                            stats_tick.tick().await;
                        }
                    }
                    Some(s) => {
                        tracing::info!("{}: shutting down", s.name());
                        break;
                    }
                    // Nobody can signal any more: run until the process is killed.
                    None => std::future::pending::<()>().await,
                },
                _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&[sd_notify::NotifyState::Watchdog]),
                _ = stats_tick.tick() => publish_stats(&self.publisher, &self.streams, &self.current),
                _ = sync_tick.tick() => {
                    if sync_task.as_ref().is_none_or(|t| t.is_finished()) {
                        let p = self.publisher.clone();
                        sync_task = Some(tokio::spawn(async move {
                            p.sync().await;
                        }));
                    }
                }
            }
        }
        notify(&[sd_notify::NotifyState::Stopping]);
        if let Some(why) = failure {
            // Streams end their open defects into the spool; the next start delivers them.
            let ids: Vec<String> = self.streams.keys().cloned().collect();
            stop_streams(&mut self.streams, &ids).await;
            self.publisher.sync().await;
            return Err(Error::Other(format!(
                "MQTT publisher task ended unexpectedly: {why}"
            )));
        }
        Ok(self.shutdown(signals).await)
    }

    /// Stops every stream (open defects end with `reason: "shutdown"`), waits up to
    /// `shutdown_timeout` for the broker to acknowledge the outbox and publishes
    /// `offline`. A second stop signal on `signals` meanwhile returns [`Exit::Now`] at
    /// once (the spool already holds every event).
    pub async fn shutdown(mut self, mut signals: tokio::sync::mpsc::Receiver<Signal>) -> Exit {
        let second = async {
            loop {
                match signals.recv().await {
                    Some(Signal::Terminate | Signal::Interrupt) => return,
                    Some(Signal::Hangup) => {}
                    None => std::future::pending::<()>().await,
                }
            }
        };
        let stop = async {
            let ids: Vec<String> = self.streams.keys().cloned().collect();
            stop_streams(&mut self.streams, &ids).await;
            self.status.streams = stream_ids(&self.current);
            let report = self
                .publisher
                .shutdown(self.status.offline(), self.current.cfg.shutdown_timeout)
                .await;
            if report.pending > 0 {
                tracing::warn!(
                    pending = report.pending,
                    "shutdown: events not yet acknowledged by the broker stay in the spool for the next start"
                );
            }
            tracing::info!(
                offline_published = report.offline_published,
                "vqprobe agent stopped"
            );
        };
        tokio::select! {
            () = stop => Exit::Clean,
            () = second => {
                tracing::warn!("second signal: exiting at once (undelivered events stay in the spool)");
                Exit::Now
            }
        }
    }
}

/// The stream ids of a configuration, in its order.
fn stream_ids(l: &Loaded) -> Vec<String> {
    l.streams.iter().map(|s| s.cfg.id.clone()).collect()
}

/// `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A digest of the TLS files' contents (CA, client certificate and key), to notice a
/// file replaced in place.
fn tls_files_digest(l: &Loaded) -> u64 {
    use std::hash::{Hash, Hasher};
    let m = &l.cfg.mqtt;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in [&m.ca_file, &m.client_cert, &m.client_key] {
        f.as_ref().map(std::fs::read).map(|r| r.ok()).hash(&mut h);
    }
    h.finish()
}

/// What a reload changed in `[mqtt]` (names only, never values).
fn mqtt_changes(old: &Loaded, new: &Loaded, tls_files_changed: bool) -> Vec<&'static str> {
    let (o, n) = (&old.cfg.mqtt, &new.cfg.mqtt);
    let mut changed = Vec::new();
    if o.url != n.url {
        changed.push("broker url");
    }
    if o.username != n.username
        || o.password != n.password
        || o.password_file != n.password_file
        || old.password != new.password
    {
        changed.push("credentials");
    }
    if o.ca_file != n.ca_file
        || o.client_cert != n.client_cert
        || o.client_key != n.client_key
        || tls_files_changed
    {
        changed.push("TLS");
    }
    if o.client_id != n.client_id
        || o.topic_prefix != n.topic_prefix
        || o.keepalive != n.keepalive
        || o.connect_timeout != n.connect_timeout
        || o.backoff_max != n.backoff_max
    {
        changed.push("connection settings");
    }
    changed
}

fn notify(state: &[sd_notify::NotifyState]) {
    // Not under systemd: NOTIFY_SOCKET is unset and this does nothing.
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Brings the running streams in line with `loaded`.
async fn apply(ctx: &Ctx, streams: &mut HashMap<String, StreamHandle>, loaded: &Loaded) {
    let wanted: HashMap<&str, &StreamPlan> = loaded
        .streams
        .iter()
        .map(|p| (p.cfg.id.as_str(), p))
        .collect();
    let stale: Vec<String> = streams
        .iter()
        .filter(|(id, h)| wanted.get(id.as_str()).is_none_or(|p| **p != h.plan))
        .map(|(id, _)| id.clone())
        .collect();
    for id in &stale {
        tracing::info!(stream = %id, "stopping stream (removed or changed)");
    }
    stop_streams(streams, &stale).await;
    for plan in &loaded.streams {
        if !streams.contains_key(&plan.cfg.id) {
            tracing::info!(stream = %plan.cfg.id, url = %redact_url(&plan.cfg.url), "starting stream");
            let handle = spawn_stream(ctx.clone(), plan.clone());
            streams.insert(plan.cfg.id.clone(), handle);
        }
    }
}

/// Stops the given streams (all at once) and waits for their end events.
async fn stop_streams(streams: &mut HashMap<String, StreamHandle>, ids: &[String]) {
    let mut tasks = Vec::new();
    for id in ids {
        if let Some(h) = streams.remove(id) {
            let _ = h.stop.send(true);
            tasks.push((id.clone(), h.task));
        }
    }
    stop_tasks(tasks, STOP_TIMEOUT, watchdog_interval(), &mut || {
        notify(&[sd_notify::NotifyState::Watchdog])
    })
    .await;
}

/// How long stopping streams may take before they are abandoned.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Half of systemd's `WatchdogSec`, when it is set.
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
}

/// Waits for stream tasks that were told to stop, all together under one deadline,
/// pinging the watchdog meanwhile; returns the ids of those abandoned.
async fn stop_tasks(
    mut tasks: Vec<(String, tokio::task::JoinHandle<()>)>,
    timeout: Duration,
    watchdog: Option<Duration>,
    ping: &mut (dyn FnMut() + Send),
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    tick.tick().await;
    loop {
        tasks.retain(|(_, t)| !t.is_finished());
        if tasks.is_empty() {
            return Vec::new();
        }
        let all = futures::future::join_all(tasks.iter_mut().map(|(_, t)| t));
        tokio::select! {
            _ = all => return Vec::new(),
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick(), if watchdog.is_some() => ping(),
        }
    }
    // A decode thread stuck in a pathological picture must not hold shutdown forever;
    // the session's end events are then lost, which is logged.
    let mut abandoned = Vec::new();
    for (id, task) in tasks {
        if !task.is_finished() {
            tracing::error!(
                stream = %id,
                timeout_s = timeout.as_secs_f64(),
                "stream did not stop in time; abandoning it"
            );
            task.abort();
            abandoned.push(id);
        }
    }
    abandoned
}

fn spawn_stream(ctx: Ctx, plan: StreamPlan) -> StreamHandle {
    let (stop, shutdown) = Shutdown::new();
    let state = Arc::new(StreamState::default());
    let task = tokio::spawn(stream_loop(ctx, plan.clone(), shutdown, state.clone()));
    StreamHandle {
        plan,
        stop,
        task,
        state,
    }
}

/// run → run_once → backoff, until stopped.
async fn stream_loop(ctx: Ctx, plan: StreamPlan, mut shutdown: Shutdown, state: Arc<StreamState>) {
    let id = plan.cfg.id.clone();
    let spec = SessionSpec {
        input: plan.cfg.url.clone(),
        // Resolved and validated with the configuration (`Source::parse`).
        source: plan.source.clone(),
        probe_id: ctx.probe_id.clone(),
        stream_id: id.clone(),
        detect: plan.detect.clone(),
        live: plan.live.clone(),
        queue_packets: plan.queue_packets,
        budget: plan.budget,
    };
    let mut backoff = Backoff::new(1.0, 60.0);
    loop {
        let began = Instant::now();
        let publisher = ctx.publisher.clone();
        let st = state.clone();
        let mut on_event = move |ev: Event| {
            // Spooled before it is logged: an event in the log is in the spool, even if
            // the process is killed right after.
            publisher.event(&ev);
            log_event(&ev);
            st.events.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut open) = st.open.lock() {
                match ev.state {
                    Phase::Start => open.push((
                        ev.kind.as_str().to_string(),
                        ev.defect_id.clone(),
                        ev.start_s,
                    )),
                    Phase::End => open.retain(|(_, d, _)| *d != ev.defect_id),
                }
            }
        };
        let result = std::panic::AssertUnwindSafe(session::run(
            &spec,
            shutdown.clone(),
            Some(&state.counters),
            &mut on_event,
        ))
        .catch_unwind()
        .await;
        if let Ok(mut open) = state.open.lock() {
            open.clear();
        }
        if shutdown.is_set() {
            return;
        }
        let failure = match result {
            // A looped file loops inside its session; it ends only on shutdown.
            Ok(Ok(_)) => {
                tracing::info!(stream = %id, "stream ended (end of input)");
                shutdown.wait().await;
                return;
            }
            // Errors are redacted where they are made; this is the last line of defence
            // before the journal and the stats messages.
            Ok(Err(e)) => Some(redact_in_text(&e.to_string())),
            Err(_) => Some("the stream's session panicked (a bug: please report it)".into()),
        };
        if began.elapsed() >= HEALTHY_AFTER {
            backoff.reset();
        }
        match failure {
            None => {
                // Loop a file; a file shorter than a second must not spin.
                if began.elapsed() < Duration::from_secs(1)
                    && !shutdown.sleep(Duration::from_secs(1)).await
                {
                    return;
                }
            }
            Some(msg) => {
                state.restarts.fetch_add(1, Ordering::Relaxed);
                let delay = backoff.next_delay();
                tracing::warn!(
                    stream = %id,
                    error = %msg,
                    retry_in_s = format!("{:.1}", delay.as_secs_f64()),
                    "stream failed; restarting"
                );
                if let Ok(mut e) = state.last_error.lock() {
                    *e = Some(msg);
                }
                if !shutdown.sleep(delay).await {
                    return;
                }
            }
        }
    }
}

/// One log line per event (journald-friendly key=value fields).
fn log_event(ev: &Event) {
    let state = match ev.state {
        Phase::Start => "start",
        Phase::End => "end",
    };
    tracing::info!(
        stream = %ev.stream,
        kind = %ev.kind.as_str(),
        state = %state,
        id = %ev.id,
        start_s = ev.start_s,
        end_s = ev.end_s,
        reason = ev.reason.map(|r| match r {
            crate::defect::EndReason::EndOfInput => "end_of_input",
            crate::defect::EndReason::Shutdown => "shutdown",
        }),
        "event"
    );
}

/// Publishes every stream's stats and the agent's outbox counters (QoS 0).
fn publish_stats(publisher: &Publisher, streams: &HashMap<String, StreamHandle>, loaded: &Loaded) {
    let settings = publisher.settings();
    let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    for (id, h) in streams {
        let payload = stream_stats(id, &h.state, &loaded.cfg.probe_id, &at);
        publisher.best_effort(settings.stats_topic(id), payload.to_string().into_bytes());
    }
    let ob = publisher.stats();
    let payload = json!({
        "v": 1,
        "probe": loaded.cfg.probe_id,
        "version": crate::VERSION,
        "at": at,
        "streams": streams.len(),
        "outbox": ob,
    });
    publisher.best_effort(
        settings.agent_stats_topic(),
        payload.to_string().into_bytes(),
    );
}

fn stream_stats(id: &str, s: &StreamState, probe: &str, at: &str) -> serde_json::Value {
    let (a, media_bytes) = s
        .counters
        .decode
        .lock()
        .map(|d| (d.analyzer, d.media_bytes))
        .unwrap_or_default();
    let live = s.counters.live.lock().map(|l| *l).unwrap_or_default();
    let now = Instant::now();
    let (fps, bitrate) = {
        let mut prev = s.prev.lock().unwrap_or_else(|e| e.into_inner());
        let r = match *prev {
            Some((f0, b0, t0)) => {
                let dt = now.duration_since(t0).as_secs_f64().max(1e-3);
                // A restarted session starts its counters at zero again.
                let df = if a.video.frames >= f0 {
                    a.video.frames - f0
                } else {
                    a.video.frames
                };
                let db = if media_bytes >= b0 {
                    media_bytes - b0
                } else {
                    media_bytes
                };
                (df as f64 / dt, db as f64 * 8.0 / dt)
            }
            None => (0.0, 0.0),
        };
        *prev = Some((a.video.frames, media_bytes, now));
        r
    };
    let open: Vec<serde_json::Value> = s
        .open
        .lock()
        .map(|o| {
            o.iter()
                .map(|(k, d, st)| json!({"kind": k, "defect_id": d, "start_s": st}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "v": 1,
        "probe": probe,
        "stream": id,
        "version": crate::VERSION,
        "at": at,
        "fps": (fps * 100.0).round() / 100.0,
        "media_bitrate_bps": bitrate.round(),
        "frames": a.video.frames,
        "media_s": (a.media_s * 1000.0).round() / 1000.0,
        "decode_errors": {"video": a.video.errors, "audio": a.audio.errors},
        "dropped": {
            "queue_full": live.dropped_queue_full,
            "until_key_frame": live.dropped_until_key,
            "before_first_key_frame": a.video.skipped_before_key,
            "above_max_resolution": a.video.refused,
            "oversized": live.oversized,
        },
        "reconnects": live.reconnects,
        "restarts": s.restarts.load(Ordering::Relaxed),
        "last_error": *s.last_error.lock().unwrap_or_else(|e| e.into_inner()),
        "events": s.events.load(Ordering::Relaxed),
        "open_defects": open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect 6: stuck streams are waited for together, under one deadline, and the
    /// watchdog keeps being pinged meanwhile.
    #[tokio::test]
    async fn stuck_streams_share_one_deadline_and_the_watchdog_is_pinged() {
        let stuck = || tokio::spawn(std::future::pending::<()>());
        let quick = tokio::spawn(async {});
        let tasks = vec![
            ("a".to_string(), stuck()),
            ("ok".to_string(), quick),
            ("b".to_string(), stuck()),
        ];
        let mut pings = 0u32;
        let began = std::time::Instant::now();
        let mut abandoned = stop_tasks(
            tasks,
            Duration::from_secs(2),
            Some(Duration::from_millis(100)),
            &mut || pings += 1,
        )
        .await;
        let took = began.elapsed();
        abandoned.sort();
        assert_eq!(abandoned, ["a", "b"]);
        // One overall deadline: two stuck streams do not add up to 2 × 2 s.
        assert!(took < Duration::from_secs(3), "waited {took:?}");
        assert!(pings >= 5, "watchdog pinged {pings} times while waiting");
    }
}
