//! The agent's streams: one task per configured stream looping session → backoff until
//! it is stopped, bringing the running set in line with a configuration, stopping
//! streams under one deadline, and the per-stream stats. Owns the stream tasks and their
//! shared counters; it may not load configuration or touch signals (that is the
//! [`Agent`](super::Agent)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use serde_json::json;

use super::config::{Loaded, StreamPlan};
use super::homeassistant::{problems, Ha};
use super::{notify, watchdog_interval};
use crate::app::session::{self, SessionCounters, SessionSpec};
use crate::backoff::Backoff;
use crate::defect::{DefectKind, Phase};
use crate::event::Event;
use crate::publish::homeassistant::Group;
use crate::publish::mqtt::Publisher;
use crate::redact::{redact_in_text, redact_url};
use crate::shutdown::Shutdown;

/// A session that ran this long resets its stream's restart backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// Live state of one stream, shared by its task and the stats reporter.
#[derive(Debug, Default)]
struct StreamState {
    counters: SessionCounters,
    /// Open defects: kind, defect id, start.
    open: Mutex<Vec<(DefectKind, String, f64)>>,
    /// The Home Assistant problem states published last ([`Group::ALL`] order).
    problems: Mutex<[bool; 3]>,
    events: AtomicU64,
    /// Events per kind ([`DefectKind::ALL`] order), for the Prometheus metrics.
    events_by_kind: [AtomicU64; DefectKind::COUNT],
    restarts: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Previous stats sample: (frames, media bytes, at).
    prev: Mutex<Option<(u64, u64, Instant)>>,
}

pub(super) struct StreamHandle {
    plan: StreamPlan,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    state: Arc<StreamState>,
}

/// What every stream needs from the agent.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) publisher: Publisher,
    pub(super) probe_id: String,
    /// Home Assistant discovery (`[homeassistant] discovery = true`).
    pub(super) ha: Option<Arc<Ha>>,
}

/// Brings the running streams in line with `loaded`.
pub(super) async fn apply(ctx: &Ctx, streams: &mut HashMap<String, StreamHandle>, loaded: &Loaded) {
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
pub(super) async fn stop_streams(streams: &mut HashMap<String, StreamHandle>, ids: &[String]) {
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
    // Home Assistant: every problem OFF until a defect opens (a restarted stream
    // starts clean, whatever its previous task left).
    if let Some(ha) = &ctx.ha {
        for g in Group::ALL {
            ha.problem(&id, g, false);
        }
    }
    loop {
        let began = Instant::now();
        let publisher = ctx.publisher.clone();
        let st = state.clone();
        let ha = ctx.ha.clone();
        let mut on_event = move |mut ev: Event| {
            // The thumbnail goes to its own topic (memory, bounded); the start event
            // names that topic.
            if let Some(jpeg) = ev.jpeg.take() {
                let topic = publisher.settings().thumbs_topic(&ev.stream, &ev.defect_id);
                ev.thumb = Some(topic.clone());
                publisher.thumb(topic, jpeg);
            }
            // Spooled before it is logged: an event in the log is in the spool, even if
            // the process is killed right after.
            publisher.event(&ev);
            log_event(&ev);
            st.events.fetch_add(1, Ordering::Relaxed);
            if let Some(i) = DefectKind::ALL.iter().position(|k| *k == ev.kind) {
                st.events_by_kind[i].fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(mut open) = st.open.lock() {
                match ev.state {
                    Phase::Start => open.push((ev.kind, ev.defect_id.clone(), ev.start_s)),
                    Phase::End => open.retain(|(_, d, _)| *d != ev.defect_id),
                }
            }
            sync_problems(ha.as_deref(), &ev.stream, &st);
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
        // A session that ended (failed, panicked, stopped) has nothing open any more,
        // whether or not its end events came out.
        sync_problems(ctx.ha.as_deref(), &id, &state);
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

/// Publishes the Home Assistant problem states that changed with the stream's open
/// defects.
fn sync_problems(ha: Option<&Ha>, stream: &str, st: &StreamState) {
    let Some(ha) = ha else {
        return;
    };
    let now = match st.open.lock() {
        Ok(open) => problems(open.iter().map(|(k, _, _)| *k)),
        Err(_) => return,
    };
    let mut last = st.problems.lock().unwrap_or_else(|e| e.into_inner());
    for g in Group::ALL {
        if last[g.index()] != now[g.index()] {
            ha.problem(stream, g, now[g.index()]);
        }
    }
    *last = now;
}

/// One log line per event (journald-friendly key=value fields).
fn log_event(ev: &Event) {
    tracing::info!(
        stream = %ev.stream,
        kind = %ev.kind.as_str(),
        state = %ev.state.as_str(),
        id = %ev.id,
        start_s = ev.start_s,
        end_s = ev.end_s,
        reason = ev.reason.map(|r| r.as_str()),
        "event"
    );
}

/// Publishes every stream's stats and the agent's outbox counters (QoS 0).
pub(super) fn publish_stats(
    publisher: &Publisher,
    streams: &HashMap<String, StreamHandle>,
    loaded: &Loaded,
    page: Option<&crate::publish::metrics::Page>,
    fleet: Option<serde_json::Value>,
) {
    let settings = publisher.settings();
    let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let mut samples = Vec::with_capacity(if page.is_some() { streams.len() } else { 0 });
    for (id, h) in streams {
        let payload = stream_stats(id, &h.state, &loaded.cfg.probe_id, &at);
        publisher.best_effort(settings.stats_topic(id), payload.to_string().into_bytes());
        if page.is_some() {
            let events = std::array::from_fn(|i| h.state.events_by_kind[i].load(Ordering::Relaxed));
            samples.push((id.as_str(), payload, events));
        }
    }
    let ob = publisher.stats();
    let mut payload = json!({
        "v": 1,
        "probe": loaded.cfg.probe_id,
        "version": crate::VERSION,
        "at": at,
        "streams": streams.len(),
        "outbox": ob,
        "decoder_pool": crate::decode::video::DecoderPool::stats(),
        "check_gate": crate::pipeline::gate::stats(),
    });
    if let (Some(f), Some(o)) = (fleet, payload.as_object_mut()) {
        o.insert("fleet".into(), f);
    }
    if let Some(page) = page {
        samples.sort_by(|a, b| a.0.cmp(b.0));
        let samples: Vec<_> = samples
            .iter()
            .map(
                |(id, stats, events)| crate::publish::metrics::StreamSample {
                    id,
                    stats,
                    events: *events,
                },
            )
            .collect();
        page.set(crate::publish::metrics::render(&samples, &payload));
    }
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
    // The stream's picture rate: access units received, decoded or not (a decode
    // level decodes fewer; `decode` says how many).
    let pictures = a.video.packets.saturating_sub(a.video.refused);
    let (fps, bitrate) = {
        let mut prev = s.prev.lock().unwrap_or_else(|e| e.into_inner());
        let r = match *prev {
            Some((f0, b0, t0)) => {
                let dt = now.duration_since(t0).as_secs_f64().max(1e-3);
                // A restarted session starts its counters at zero again.
                let df = if pictures >= f0 {
                    pictures - f0
                } else {
                    pictures
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
        *prev = Some((pictures, media_bytes, now));
        r
    };
    let open: Vec<serde_json::Value> = s
        .open
        .lock()
        .map(|o| {
            o.iter()
                .map(|(k, d, st)| json!({"kind": k.as_str(), "defect_id": d, "start_s": st}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "v": 1,
        "probe": probe,
        "stream": id,
        "version": crate::VERSION,
        "at": at,
        "fps": crate::defect::round_to(fps, 2),
        "media_bitrate_bps": bitrate.round(),
        "frames": pictures,
        "media_s": crate::defect::round_to(a.media_s, 3),
        "decode_errors": {"video": a.video.errors, "audio": a.audio.errors},
        "decode": decode_coverage(&a),
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
        "thumbs": a.thumbs.map(|t| json!({
            "made": t.made,
            "missing": t.missing,
            "dropped": t.dropped,
            "encode_ms": crate::defect::round_to(t.encode_ns as f64 / 1e6, 1),
        })),
    })
}

/// The `decode` object of the stream stats: the level now, the share of pictures
/// decoded and the seconds spent at each level (coverage is never hidden).
fn decode_coverage(a: &crate::pipeline::AnalyzerStats) -> serde_json::Value {
    let l = &a.levels;
    let secs = |i: usize| crate::defect::round_to(l.seconds[i], 1);
    json!({
        "level": a.level,
        "pictures": a.video.packets.saturating_sub(a.video.refused),
        "decoded": a.video.decoded,
        "decoded_share": a.decoded_share().map(|x| crate::defect::round_to(x, 4)),
        "seconds": {"full": secs(0), "reference": secs(1), "key": secs(2)},
        "escalations": l.escalations,
        "ring_overflows": l.ring_overflows,
        "ring_trims": l.ring_trims,
        "ring_bytes": a.ring_bytes,
        "step_downs": l.step_downs,
        "step_ups": l.step_ups,
        "syntax_checked": l.syntax_checked,
        "syntax_broken": l.syntax_broken,
        "syntax_unchecked": l.syntax_unchecked,
        "syntax_shed_s": crate::defect::round_to(l.syntax_shed_seconds, 1),
        "open_gop": l.open_gop,
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
