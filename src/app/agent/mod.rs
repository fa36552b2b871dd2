//! `vqprobe run`: the long-running agent. Watches every configured stream in one
//! process and publishes each event over MQTT through the spooled outbox.
//!
//! * [`Agent`] is the running agent as a value: [`Agent::start`], [`Agent::apply`],
//!   [`Agent::reload`], [`Agent::shutdown`], driven by [`Agent::run`] with a stream of
//!   [`Signal`]s (real signals are mapped onto it by [`signals`]; tests send them).
//! * Each stream (`streams.rs`) is a task looping run → `session::run` → backoff until it is
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
mod fleet;
mod homeassistant;
mod streams;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use self::config::{Loaded, StreamPlan};
use self::fleet::Fleet;
use self::streams::{apply, publish_stats, stop_streams, Ctx, StreamHandle};
use crate::error::{Error, Result};
use crate::publish::metrics::Page;
use crate::publish::mqtt::Publisher;
use crate::publish::spool::{Spool, SpoolOptions};
use crate::publish::status::Status;
use crate::redact::redact_url;

/// Segment size of the spool files.
const SPOOL_SEGMENT_BYTES: u64 = 1 << 20;
/// How often the spool is fsynced (batched durability).
const SYNC_EVERY: Duration = Duration::from_millis(200);
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
    /// `[metrics]`: the page the stats tick renders, and the HTTP server's task
    /// (aborted when the agent goes).
    metrics: Option<(Page, AbortOnDrop)>,
    /// `[homeassistant]`: the task handling Home Assistant's birth messages and stale
    /// configs (aborted when the agent goes).
    _ha_task: Option<AbortOnDrop>,
    /// `[fleet]`: the fleet task, and the fleet streams it assigned to this probe.
    fleet: Option<Fleet>,
    fleet_plans: Vec<StreamPlan>,
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
        let metrics = match loaded.cfg.metrics.listen {
            Some(addr) => {
                // Bound before READY: a port in use is a start failure, not a log line.
                let listener = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|e| Error::Config(format!("metrics.listen = \"{addr}\": {e}")))?;
                let page = Page::default();
                let task = tokio::spawn(crate::publish::metrics::serve(listener, page.clone()));
                tracing::info!(%addr, "metrics: serving GET /metrics");
                Some((page, AbortOnDrop(task)))
            }
            None => None,
        };
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
        let mut status = Status::new(&loaded.cfg.probe_id, SystemTime::now(), stream_ids(&loaded));
        if let Some(f) = &loaded.cfg.fleet {
            status.fleet = Some(f.name.clone());
            status.capacity = Some(loaded.fleet_capacity());
        }
        let publisher = Publisher::start(settings, spool, status.online(), status.offline())?;
        publisher.set_thumb_budget(
            usize::try_from(loaded.cfg.thumbnails.queue_bytes).unwrap_or(usize::MAX),
        );
        tracing::info!(
            version = crate::VERSION,
            probe = %loaded.cfg.probe_id,
            config = %config_path.display(),
            broker = %redact_url(&loaded.cfg.mqtt.url),
            streams = loaded.streams.len(),
            "vqprobe agent starting"
        );
        let ha = homeassistant::Ha::start(&publisher, publisher.settings(), &loaded);
        let ha_task = ha.clone().map(|ha| AbortOnDrop(tokio::spawn(ha.listen())));
        if ha.is_some() {
            tracing::info!(
                prefix = %loaded.cfg.homeassistant.prefix,
                "Home Assistant discovery: announcing the probe and its streams"
            );
        }
        let ctx = Ctx {
            publisher: publisher.clone(),
            probe_id: loaded.cfg.probe_id.clone(),
            ha,
        };
        let mut streams = HashMap::new();
        apply(&ctx, &mut streams, &loaded).await;
        let fleet = Fleet::start(&publisher, &loaded);
        notify(&[sd_notify::NotifyState::Ready]);
        Ok(Agent {
            config_path: config_path.to_path_buf(),
            current: loaded,
            publisher,
            ctx,
            streams,
            status,
            tls_digest,
            metrics,
            _ha_task: ha_task,
            fleet,
            fleet_plans: Vec::new(),
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
        if let Some(f) = &self.fleet {
            f.set_config(&loaded);
        }
        self.current = loaded;
        self.apply_effective().await;
    }

    /// The configuration in effect: the file's streams and, in a fleet, the fleet
    /// streams assigned to this probe (a file's stream wins over a fleet stream of the
    /// same id; the fleet task reports that entry).
    fn effective(&self) -> Loaded {
        let mut streams = self.current.streams.clone();
        for p in &self.fleet_plans {
            if !streams.iter().any(|s| s.cfg.id == p.cfg.id) {
                streams.push(p.clone());
            }
        }
        self.current.with_streams(streams)
    }

    /// Brings the running streams in line with [`Agent::effective`].
    async fn apply_effective(&mut self) {
        let loaded = self.effective();
        apply(&self.ctx, &mut self.streams, &loaded).await;
        // After the streams: a removed stream's end events (problems OFF) go before
        // its topics are cleared.
        if let Some(ha) = &self.ctx.ha {
            ha.announce(&loaded);
        }
        self.publisher.set_thumb_budget(
            usize::try_from(loaded.cfg.thumbnails.queue_bytes).unwrap_or(usize::MAX),
        );
        self.status.streams = stream_ids(&loaded);
        self.publisher.set_online(self.status.online());
    }

    /// Reloads the configuration file and applies it; an invalid file is logged and the
    /// running configuration kept. True when the new one was applied.
    pub async fn reload(&mut self) -> bool {
        notify(&[sd_notify::NotifyState::Reloading]);
        let applied = match config::load(&self.config_path) {
            Ok(new) => {
                if new.cfg.probe_id != self.current.cfg.probe_id
                    || new.cfg.spool != self.current.cfg.spool
                    || new.cfg.metrics != self.current.cfg.metrics
                    || new.cfg.homeassistant != self.current.cfg.homeassistant
                    || new.cfg.fleet != self.current.cfg.fleet
                {
                    tracing::warn!(
                        "SIGHUP: changes to probe_id, [spool], [metrics], [homeassistant] or [fleet] take effect after a restart"
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
        let mut signals_open = true;
        let mut connects = self.publisher.connects();
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The spool's fsyncs run on a blocking thread; a slow disk must not hold this
        // loop (signals, watchdog), and at most one sync is in flight.
        let mut sync_task: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                // Fleet mode: the fleet streams of this probe changed.
                Some(plans) = fleet_changed(&mut self.fleet) => {
                    self.fleet_plans = plans;
                    self.apply_effective().await;
                }
                // After the link dropped and came back, the stats (with the link
                // counters) go out at once rather than at the next interval.
                Ok(()) = connects.changed() => {
                    if *connects.borrow_and_update() > 1 {
                        publish_stats(
                            &self.publisher,
                            &self.streams,
                            &self.current,
                            self.metrics.as_ref().map(|m| &m.0),
                            self.fleet.as_ref().map(Fleet::stats),
                        );
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
                sig = signals.recv(), if signals_open => match sig {
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
                    None => signals_open = false,
                },
                _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&[sd_notify::NotifyState::Watchdog]),
                _ = stats_tick.tick() => publish_stats(
                            &self.publisher,
                            &self.streams,
                            &self.current,
                            self.metrics.as_ref().map(|m| &m.0),
                            self.fleet.as_ref().map(Fleet::stats),
                        ),
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

/// The next fleet streams of this probe (never resolves outside a fleet).
async fn fleet_changed(f: &mut Option<Fleet>) -> Option<Vec<StreamPlan>> {
    match f {
        Some(f) => {
            if f.plans.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            Some(f.plans.borrow_and_update().clone())
        }
        None => std::future::pending().await,
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

/// Half of systemd's `WatchdogSec`, when it is set.
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
}
