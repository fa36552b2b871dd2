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
use crate::detect::Phase;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ingest::live::{Backoff, Shutdown};
use crate::publish::mqtt::Publisher;
use crate::publish::spool::{Spool, SpoolOptions};
use crate::redact::redact_url;

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
    let spool = Spool::open(SpoolOptions {
        dir: loaded.cfg.spool.dir.clone(),
        max_bytes: loaded.cfg.spool.max_bytes,
        segment_bytes: SPOOL_SEGMENT_BYTES,
    })
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
    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(100)));
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut stats_tick = tokio::time::interval(current.cfg.stats_interval);
    stats_tick.tick().await;
    let mut sync_tick = tokio::time::interval(SYNC_EVERY);
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match config::load(config_path) {
                    Ok(new) => {
                        if new.cfg.mqtt.url != current.cfg.mqtt.url
                            || new.cfg.probe_id != current.cfg.probe_id
                            || new.cfg.spool != current.cfg.spool
                        {
                            tracing::warn!("SIGHUP: changes to probe_id, [mqtt] or [spool] take effect after a restart");
                        }
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
            _ = sync_tick.tick() => publisher.sync().await,
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
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
    for (id, mut task) in tasks {
        // A decode thread stuck in a pathological picture must not hold shutdown
        // forever; the session's end events are then lost, which is logged.
        match tokio::time::timeout(Duration::from_secs(10), &mut task).await {
            Ok(_) => {}
            Err(_) => {
                tracing::error!(stream = %id, "stream did not stop within 10 s; abandoning it");
                task.abort();
            }
        }
    }
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
            log_event(&ev);
            publisher.event(&ev);
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
            Ok(Err(e)) => Some(e.to_string()),
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
            crate::event::EndReason::EndOfInput => "end_of_input",
            crate::event::EndReason::Shutdown => "shutdown",
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
