//! `vqprobe run`: the long-running agent. Watches every configured stream in one
//! process and publishes each event over MQTT through the spooled outbox.
//!
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
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use serde_json::json;

use self::config::{Loaded, Pace, StreamPlan};
use super::session::{self, SessionCounters, SessionSpec};
use crate::backoff::Backoff;
use crate::defect::Phase;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::publish::mqtt::Publisher;
use crate::publish::spool::{Spool, SpoolOptions};
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

/// Runs the agent until SIGTERM/SIGINT. Errors: the configuration cannot be loaded,
/// the spool cannot be opened.
pub async fn run(config_path: &Path) -> Result<()> {
    let loaded = config::load(config_path)?;
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    // Takes the spool's lock and proves the directory writable: a second agent on the
    // same spool or an unwritable directory fails here, before READY.
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
    let mut tls_digest = tls_files_digest(&loaded);
    let status = |state: &str, loaded: &Loaded| -> Vec<u8> {
        json!({
            "v": 1,
            "status": state,
            "probe": loaded.cfg.probe_id,
            "version": crate::VERSION,
            "started_at": started_at,
            "pid": std::process::id(),
            "streams": loaded.streams.iter().map(|s| s.cfg.id.clone()).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    };
    let publisher = Publisher::start(
        settings,
        spool,
        status("online", &loaded),
        status("offline", &loaded),
    )?;
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
    let mut streams: HashMap<String, StreamHandle> = HashMap::new();
    apply(&ctx, &mut streams, &loaded).await;
    let mut current = loaded;

    use tokio::signal::unix::{signal, SignalKind};
    let sig =
        |k| signal(k).map_err(|e| Error::Other(format!("cannot install signal handler: {e}")));
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sighup = sig(SignalKind::hangup())?;
    notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut stats_tick = tokio::time::interval(current.cfg.stats_interval);
    stats_tick.tick().await;
    let mut sync_tick = tokio::time::interval(SYNC_EVERY);
    let mut failure = None;
    let mut connects = publisher.connects();
    sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The spool's fsyncs run on a blocking thread; a slow disk must not hold this loop
    // (signals, watchdog), and at most one sync is in flight.
    let mut sync_task: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            // After the link dropped and came back, the stats (with the link counters)
            // go out at once rather than at the next interval.
            Ok(()) = connects.changed() => {
                if *connects.borrow_and_update() > 1 {
                    publish_stats(&publisher, &streams, &current);
                }
            }
            why = publisher.failed() => {
                tracing::error!(
                    reason = %why,
                    "MQTT publisher task ended unexpectedly: no event can be delivered; exiting with failure so that systemd restarts the agent (undelivered events stay in the spool)"
                );
                failure = Some(why);
                break;
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match config::load(config_path) {
                    Ok(new) => {
                        if new.cfg.probe_id != current.cfg.probe_id
                            || new.cfg.spool != current.cfg.spool
                        {
                            tracing::warn!("SIGHUP: changes to probe_id or [spool] take effect after a restart");
                        }
                        let new_digest = tls_files_digest(&new);
                        let changed = mqtt_changes(&current, &new, tls_digest != new_digest);
                        if !changed.is_empty() {
                            tracing::warn!(
                                changed = %changed.join(", "),
                                "SIGHUP: changes to [mqtt] ({}) take effect only after a restart (systemctl restart vqprobe); the broker connection keeps its current settings",
                                changed.join(", ")
                            );
                        }
                        tls_digest = new_digest;
                        apply(&ctx, &mut streams, &new).await;
                        let mut online = new.clone();
                        online.cfg.probe_id = current.cfg.probe_id.clone();
                        publisher.set_online(status("online", &online));
                        stats_tick = tokio::time::interval(new.cfg.stats_interval);
                        stats_tick.tick().await;
                        current = new;
                        tracing::info!(streams = streams.len(), "SIGHUP: configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the running one"),
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&[sd_notify::NotifyState::Watchdog]),
            _ = stats_tick.tick() => publish_stats(&publisher, &streams, &current),
            _ = sync_tick.tick() => {
                if sync_task.as_ref().is_none_or(|t| t.is_finished()) {
                    let p = publisher.clone();
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
        let ids: Vec<String> = streams.keys().cloned().collect();
        stop_streams(&mut streams, &ids).await;
        publisher.sync().await;
        return Err(Error::Other(format!(
            "MQTT publisher task ended unexpectedly: {why}"
        )));
    }
    // A second signal means "now": the spool already holds every event.
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        tracing::warn!("second signal: exiting at once (undelivered events stay in the spool)");
        std::process::exit(130);
    });
    let ids: Vec<String> = streams.keys().cloned().collect();
    stop_streams(&mut streams, &ids).await;
    let report = publisher
        .shutdown(status("offline", &current), current.cfg.shutdown_timeout)
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
    Ok(())
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
    ping: &mut dyn FnMut(),
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
        probe_id: ctx.probe_id.clone(),
        stream_id: id.clone(),
        detect: plan.detect.clone(),
        live: plan.live.clone(),
        rtsp_transport: plan.cfg.rtsp_transport,
        hls: plan.hls.clone(),
        duration: None,
        realtime: plan.is_file && plan.cfg.pace.unwrap_or_default() == Pace::Realtime,
        looped: plan.is_file && plan.cfg.looped,
        queue_packets: plan.queue_packets,
        ended_is_down: true,
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
