//! The agent's side of fleet mode (`[fleet]`, docs/fleet.md): a task that keeps the
//! [`View`] of the broker (catalog, membership), recomputes the [`assign`]ment when it
//! changes, resolves this probe's share against the configuration and hands the
//! resulting stream plans to the [`Agent`](super::Agent), which runs them beside the
//! file's own streams. The member a stream is assigned to reports an entry it cannot
//! run on `…/streams/{id}/error` (retained) and clears that report once the entry is
//! valid again.
//!
//! Bounds: the catalog holds `max_catalog` entries; the subscription's queue holds as
//! many messages plus 1024 (beyond: dropped, counted, and resubscribed, which makes the
//! broker re-send the retained state). Changes are batched for [`DEBOUNCE`]; an
//! assignment over more than [`INLINE_WORK`] (stream, member) pairs is computed on a
//! blocking thread, never on a runtime worker.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::watch;

use super::config::{Loaded, StreamPlan};
use super::AbortOnDrop;
use crate::app::fleet::assign::assign;
use crate::app::fleet::view::{catalog_prefix, Change, View, ViewStats};
use crate::publish::mqtt::Publisher;

/// Changes are batched this long before the assignment is recomputed.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// Assignments with more (stream, member) pairs than this run on a blocking thread.
const INLINE_WORK: usize = 20_000;

/// What the fleet task reports in the agent's stats (`fleet`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(super) struct FleetStats {
    pub name: String,
    /// Members counted in the assignment (this probe included once settled).
    pub members: usize,
    /// Members seen online, settled or not.
    pub members_seen: usize,
    pub catalog: usize,
    /// Fleet streams assigned to this probe.
    pub assigned: usize,
    /// Of those, entries this probe cannot run (reported on their error topic).
    pub invalid: usize,
    /// Fleet streams short of a replica: the fleet's capacity is exhausted.
    pub unplaced: usize,
    pub recomputes: u64,
    #[serde(flatten)]
    pub view: ViewStats,
}

/// The running fleet task and what the agent reads from it.
pub(super) struct Fleet {
    /// This probe's fleet streams, resolved and valid.
    pub plans: watch::Receiver<Vec<StreamPlan>>,
    cfg: watch::Sender<Loaded>,
    stats: Arc<Mutex<FleetStats>>,
    _task: AbortOnDrop,
}

impl Fleet {
    /// Starts the fleet task when `loaded` has a `[fleet]`.
    pub(super) fn start(publisher: &Publisher, loaded: &Loaded) -> Option<Fleet> {
        let f = loaded.cfg.fleet.as_ref()?;
        let settings = publisher.settings();
        let view = View::new(
            &settings.prefix,
            &f.name,
            &loaded.cfg.probe_id,
            loaded.fleet_capacity(),
            f.settle,
            f.max_catalog,
            Instant::now(),
        );
        let (cfg, cfg_rx) = watch::channel(loaded.clone());
        let (plans_tx, plans) = watch::channel(Vec::new());
        let stats = Arc::new(Mutex::new(FleetStats {
            name: f.name.clone(),
            ..FleetStats::default()
        }));
        let task = tokio::spawn(run(
            publisher.clone(),
            view,
            cfg_rx,
            plans_tx,
            stats.clone(),
            f.max_catalog.saturating_add(1024),
        ));
        tracing::info!(
            fleet = %f.name,
            capacity = loaded.fleet_capacity(),
            replicas = f.replicas,
            settle_s = f.settle.as_secs_f64(),
            "fleet: member; reading the catalog and the members from the broker"
        );
        Some(Fleet {
            plans,
            cfg,
            stats,
            _task: AbortOnDrop(task),
        })
    }

    /// A reloaded configuration: entries are resolved against it from now on.
    pub(super) fn set_config(&self, loaded: &Loaded) {
        self.cfg.send_replace(loaded.clone());
    }

    /// The `fleet` object of the agent's stats.
    pub(super) fn stats(&self) -> serde_json::Value {
        let s = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        serde_json::to_value(s).unwrap_or_default()
    }
}

/// The task: view in, plans out. Ends when the publisher's subscription closes.
async fn run(
    publisher: Publisher,
    mut view: View,
    mut cfg: watch::Receiver<Loaded>,
    plans: watch::Sender<Vec<StreamPlan>>,
    stats: Arc<Mutex<FleetStats>>,
    queue: usize,
) {
    let (mut rx, mut sent) = publisher.subscribe(view.filters(), queue);
    let mut state = Reporter::default();
    // The first assignment once this probe has settled (or earlier if anything comes).
    let mut dirty: Option<Instant> = Some(Instant::now() + DEBOUNCE);
    loop {
        let now = Instant::now();
        let wake = [view.next_wakeup(now), dirty].into_iter().flatten().min();
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let mut changed = false;
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => changed = view.on_message(&m, Instant::now()) == Change::Assignment,
                None => return,
            },
            Ok(()) = sent.changed() => {
                sent.borrow_and_update();
                view.resubscribed(Instant::now());
            }
            Ok(()) = cfg.changed() => changed = true,
            () = sleep => {
                view.sweep(Instant::now());
                // A settle delay ended, a sweep ran or the batch is due.
                changed = true;
            }
        }
        let now = Instant::now();
        if changed && dirty.is_none() {
            dirty = Some(now + DEBOUNCE);
        }
        if dirty.is_some_and(|t| now >= t) {
            dirty = None;
            let loaded = cfg.borrow_and_update().clone();
            let mine = recompute(&view, &loaded, now, &publisher, &mut state, &stats).await;
            plans.send_if_modified(|p| {
                if *p == mine {
                    return false;
                }
                *p = mine;
                true
            });
        }
    }
}

/// What the task remembers between assignments: the errors it reported, and what it
/// logged last.
#[derive(Default)]
struct Reporter {
    /// Stream id → the error this probe put on the broker.
    errors: BTreeMap<String, String>,
    last: Option<(usize, usize, usize)>,
}

/// Computes the assignment of the view now and resolves this probe's share.
async fn recompute(
    view: &View,
    loaded: &Loaded,
    now: Instant,
    publisher: &Publisher,
    rep: &mut Reporter,
    stats: &Mutex<FleetStats>,
) -> Vec<StreamPlan> {
    let Some(f) = &loaded.cfg.fleet else {
        return Vec::new();
    };
    let members = view.members(now);
    let ids = view.stream_ids();
    let me = loaded.cfg.probe_id.clone();
    let replicas = f.replicas;
    let a = if ids.len().saturating_mul(members.len()) > INLINE_WORK {
        let (ids, members) = (ids.clone(), members.clone());
        tokio::task::spawn_blocking(move || assign(&ids, &members, replicas))
            .await
            .unwrap_or_default()
    } else {
        assign(&ids, &members, replicas)
    };
    let mine = a.streams_of(&me);
    let static_ids: HashSet<&str> = loaded.streams.iter().map(|p| p.cfg.id.as_str()).collect();
    let topics = publisher.settings();
    let error_topic = |id: &str| format!("{}{id}/error", catalog_prefix(&topics.prefix, &f.name));
    let mut plans = Vec::with_capacity(mine.len());
    let mut invalid = 0;
    for id in &mine {
        let resolved = match view.entry(id).map(|e| &e.parsed) {
            None => continue,
            Some(Err(m)) => Err(m.clone()),
            Some(Ok(_)) if static_ids.contains(id.as_str()) => Err(format!(
                "id: `{id}` is also a stream of {}'s configuration file",
                me
            )),
            Some(Ok(entry)) => loaded.plan_entry(entry),
        };
        match resolved {
            Ok(plan) => {
                if rep.errors.remove(id).is_some() || view.error_on_broker(id).is_some() {
                    tracing::info!(stream = %id, "fleet: the entry is valid now; clearing its error");
                    publisher.retain(error_topic(id), Vec::new());
                }
                plans.push(plan);
            }
            Err(m) => {
                invalid += 1;
                if rep.errors.get(id) != Some(&m) {
                    tracing::warn!(stream = %id, error = %m, "fleet: catalog entry assigned to this probe is invalid; not watched (reported on its error topic)");
                    let payload = json!({
                        "v": 1,
                        "stream": id,
                        "probe": me,
                        "error": m,
                        "at": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                    });
                    publisher.retain(error_topic(id), payload.to_string().into_bytes());
                    rep.errors.insert(id.clone(), m);
                }
            }
        }
    }
    // Reports of streams no longer ours: the new member rewrites or clears them; those of
    // streams gone from the catalog are cleared here.
    let gone: Vec<String> = rep
        .errors
        .keys()
        .filter(|id| !mine.contains(id))
        .cloned()
        .collect();
    for id in gone {
        rep.errors.remove(&id);
        if view.entry(&id).is_none() {
            publisher.retain(error_topic(&id), Vec::new());
        }
    }
    let unplaced = a.short.len();
    let now_state = (members.len(), ids.len(), plans.len());
    if rep.last != Some(now_state) {
        rep.last = Some(now_state);
        if unplaced > 0 {
            tracing::warn!(
                unplaced,
                "fleet: the members' capacity is exhausted: streams short of a replica"
            );
        }
        tracing::info!(
            members = members.len(),
            catalog = ids.len(),
            watching = plans.len(),
            invalid,
            "fleet: assignment"
        );
    }
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    s.members = members.len();
    s.members_seen = view.members_seen();
    s.catalog = ids.len();
    s.assigned = mine.len();
    s.invalid = invalid;
    s.unplaced = unplaced;
    s.recomputes += 1;
    s.view = view.stats.clone();
    drop(s);
    plans
}
