//! A fleet member's view of the broker (docs/fleet.md): the fleet's catalog and its
//! membership, built from the retained messages every member reads, so that every
//! member computes the same assignment from the same view. Pure: time comes in as
//! arguments; the agent's fleet task feeds it.
//!
//! * Catalog: `{prefix}/fleet/{name}/streams/{id}` holds a stream entry (JSON, the
//!   fields of a `[[streams]]` entry); an empty message removes it. Entries that do not
//!   parse still take part in the assignment (every member must see the same set of
//!   ids, whatever each can resolve); the member they are assigned to reports why.
//! * Errors: `{prefix}/fleet/{name}/streams/{id}/error`, whose presence is tracked so
//!   that the member watching a stream can clear an error that no longer holds.
//! * Membership: `{prefix}/{probe}/status` with `status: online` and this fleet's name.
//!   A member seen coming online while subscribed counts after `settle`; members found
//!   as retained statuses on (re)subscription count at once (they were there before
//!   us). This probe counts itself `settle` after it started, as the others do.
//!   `offline` (the Last Will included), another fleet or an empty status: gone at once.
//! * Resync: after every (re)subscription the broker re-sends the retained state, but
//!   not what was deleted meanwhile. [`View::resubscribed`] starts a new generation;
//!   what was not seen again [`SWEEP_QUIET`] after the last message of the burst is
//!   swept.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::app::agent::config::StreamConfig;
use crate::app::fleet::assign::Member;
use crate::publish::mqtt::Incoming;
use crate::publish::status::{Presence, Status};
use crate::redact::take_credentials;

/// Largest catalog entry read; larger ones are reported invalid.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// How long after the last retained message of a resync burst the state not seen again
/// is swept (and at least this long after the subscription was sent).
pub const SWEEP_QUIET: Duration = Duration::from_secs(2);

/// One catalog entry: its payload and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub payload: Vec<u8>,
    /// The entry, or why it is not one (`field: why`).
    pub parsed: Result<StreamConfig, String>,
    gen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MemberState {
    capacity: u32,
    counted_from: Instant,
    gen: u64,
}

/// Counters of what the view refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ViewStats {
    /// New catalog entries ignored because `max_catalog` entries were kept already.
    pub catalog_refused: u64,
    /// Messages on the fleet's topics with an unusable topic (a bad stream id).
    pub bad_topics: u64,
    /// Status messages that did not parse.
    pub bad_statuses: u64,
    /// Entries, error topics and members swept after a resync.
    pub swept: u64,
}

/// What a message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing the assignment depends on.
    None,
    /// The catalog, the membership or an entry's content.
    Assignment,
}

/// See the module docs.
#[derive(Debug)]
pub struct View {
    me: String,
    my_capacity: u32,
    settle: Duration,
    max_catalog: usize,
    started: Instant,
    /// `{prefix}/fleet/{name}/streams/`.
    catalog_prefix: String,
    /// `{prefix}/`.
    prefix: String,
    fleet: String,
    catalog: BTreeMap<String, Entry>,
    errors: BTreeMap<String, (Vec<u8>, u64)>,
    members: BTreeMap<String, MemberState>,
    gen: u64,
    sweep_at: Option<Instant>,
    pub stats: ViewStats,
}

impl View {
    /// The view of probe `me` (capacity `my_capacity`, started at `started`) in fleet
    /// `fleet` under topic prefix `prefix`.
    pub fn new(
        prefix: &str,
        fleet: &str,
        me: &str,
        my_capacity: u32,
        settle: Duration,
        max_catalog: usize,
        started: Instant,
    ) -> View {
        View {
            me: me.to_string(),
            my_capacity,
            settle,
            max_catalog,
            started,
            catalog_prefix: catalog_prefix(prefix, fleet),
            prefix: format!("{prefix}/"),
            fleet: fleet.to_string(),
            catalog: BTreeMap::new(),
            errors: BTreeMap::new(),
            members: BTreeMap::new(),
            gen: 0,
            sweep_at: None,
            stats: ViewStats::default(),
        }
    }

    /// The topic filters the view needs.
    pub fn filters(&self) -> Vec<String> {
        vec![
            format!("{}#", self.catalog_prefix),
            format!("{}+/status", self.prefix),
        ]
    }

    /// The subscription was sent (again): a new generation starts; what is not seen
    /// again is swept [`SWEEP_QUIET`] after the burst.
    pub fn resubscribed(&mut self, now: Instant) {
        self.gen += 1;
        self.sweep_at = Some(now + SWEEP_QUIET);
    }

    /// Takes a message of one of [`View::filters`].
    pub fn on_message(&mut self, m: &Incoming, now: Instant) -> Change {
        if m.retained {
            if let Some(at) = &mut self.sweep_at {
                *at = (*at).max(now + SWEEP_QUIET);
            }
        }
        if let Some(rest) = m.topic.strip_prefix(&self.catalog_prefix) {
            return match rest.split_once('/') {
                None => self.on_entry(rest, &m.payload),
                Some((id, "error")) if valid_id(id) => {
                    if m.payload.is_empty() {
                        self.errors.remove(id);
                    } else {
                        self.errors
                            .insert(id.to_string(), (m.payload.clone(), self.gen));
                    }
                    Change::None
                }
                Some(_) => {
                    self.stats.bad_topics += 1;
                    Change::None
                }
            };
        }
        if let Some(probe) = m
            .topic
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_suffix("/status"))
        {
            if !probe.contains('/') {
                return self.on_status(probe, &m.payload, m.retained, now);
            }
        }
        Change::None
    }

    fn on_entry(&mut self, id: &str, payload: &[u8]) -> Change {
        if !valid_id(id) {
            self.stats.bad_topics += 1;
            return Change::None;
        }
        if payload.is_empty() {
            return match self.catalog.remove(id) {
                Some(_) => Change::Assignment,
                None => Change::None,
            };
        }
        let gen = self.gen;
        if let Some(e) = self.catalog.get_mut(id) {
            e.gen = gen;
            if e.payload == payload {
                return Change::None;
            }
            *e = Entry {
                payload: payload.to_vec(),
                parsed: parse_entry(id, payload),
                gen,
            };
            return Change::Assignment;
        }
        if self.catalog.len() >= self.max_catalog {
            self.stats.catalog_refused += 1;
            return Change::None;
        }
        self.catalog.insert(
            id.to_string(),
            Entry {
                payload: payload.to_vec(),
                parsed: parse_entry(id, payload),
                gen,
            },
        );
        Change::Assignment
    }

    fn on_status(&mut self, probe: &str, payload: &[u8], retained: bool, now: Instant) -> Change {
        let member = if payload.is_empty() {
            None
        } else {
            match serde_json::from_slice::<Status>(payload) {
                Ok(s) => (s.status == Presence::Online
                    && s.fleet.as_deref() == Some(self.fleet.as_str()))
                .then_some(s.capacity.unwrap_or(0)),
                Err(_) => {
                    self.stats.bad_statuses += 1;
                    None
                }
            }
        };
        if probe == self.me {
            return Change::None; // counted by its own rule
        }
        let gen = self.gen;
        match (member, self.members.get_mut(probe)) {
            (None, None) => Change::None,
            (None, Some(_)) => {
                self.members.remove(probe);
                Change::Assignment
            }
            (Some(capacity), Some(m)) => {
                m.gen = gen;
                if m.capacity == capacity {
                    Change::None
                } else {
                    m.capacity = capacity;
                    Change::Assignment
                }
            }
            (Some(capacity), None) => {
                let counted_from = if retained { now } else { now + self.settle };
                self.members.insert(
                    probe.to_string(),
                    MemberState {
                        capacity,
                        counted_from,
                        gen,
                    },
                );
                Change::Assignment
            }
        }
    }

    /// Sweeps what a resync did not bring back, once its burst is over. True when the
    /// catalog or the membership changed.
    pub fn sweep(&mut self, now: Instant) -> bool {
        match self.sweep_at {
            Some(at) if now >= at => self.sweep_at = None,
            _ => return false,
        }
        let gen = self.gen;
        let (c, e, m) = (self.catalog.len(), self.errors.len(), self.members.len());
        self.catalog.retain(|_, x| x.gen == gen);
        self.errors.retain(|_, x| x.1 == gen);
        self.members.retain(|_, x| x.gen == gen);
        let swept = (c - self.catalog.len()) + (e - self.errors.len()) + (m - self.members.len());
        self.stats.swept += swept as u64;
        c != self.catalog.len() || m != self.members.len()
    }

    /// The members counted now (this probe included once it has settled), sorted.
    pub fn members(&self, now: Instant) -> Vec<Member> {
        let mut out: Vec<Member> = self
            .members
            .iter()
            .filter(|(_, m)| now >= m.counted_from)
            .map(|(id, m)| Member {
                id: id.clone(),
                capacity: m.capacity,
            })
            .collect();
        if now >= self.started + self.settle {
            out.push(Member {
                id: self.me.clone(),
                capacity: self.my_capacity,
            });
            out.sort_by(|a, b| a.id.cmp(&b.id));
        }
        out
    }

    /// Members seen online, settled or not (this probe included).
    pub fn members_seen(&self) -> usize {
        self.members.len() + 1
    }

    /// When the view changes by itself next: a member's settle delay ends, or a sweep.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let me = self.started + self.settle;
        self.members
            .values()
            .map(|m| m.counted_from)
            .chain(std::iter::once(me))
            .filter(|t| *t > now)
            .chain(self.sweep_at)
            .min()
    }

    /// The catalog's stream ids, sorted.
    pub fn stream_ids(&self) -> Vec<String> {
        self.catalog.keys().cloned().collect()
    }

    /// A catalog entry.
    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.catalog.get(id)
    }

    /// The error message on the broker for stream `id`, if any.
    pub fn error_on_broker(&self, id: &str) -> Option<&[u8]> {
        self.errors.get(id).map(|e| e.0.as_slice())
    }

    /// The catalog's size.
    pub fn catalog_len(&self) -> usize {
        self.catalog.len()
    }
}

/// `{prefix}/fleet/{name}/streams/`: the catalog's topics start with it.
pub fn catalog_prefix(prefix: &str, fleet: &str) -> String {
    format!("{prefix}/fleet/{fleet}/streams/")
}

/// A stream id as the configuration accepts it.
use crate::app::agent::config::valid_id;

/// Parses a catalog entry for stream `id` (the structure only: the member that watches
/// it resolves and validates the rest against its own configuration).
pub fn parse_entry(id: &str, payload: &[u8]) -> Result<StreamConfig, String> {
    if payload.len() > MAX_ENTRY_BYTES {
        return Err(format!(
            "entry: {} bytes, larger than {MAX_ENTRY_BYTES}",
            payload.len()
        ));
    }
    let e: StreamConfig = serde_json::from_slice(payload).map_err(|e| {
        format!("entry: not a stream entry (JSON with the fields of [[streams]]): {e}")
    })?;
    if e.id != id {
        return Err(format!(
            "id: `{}` is not the topic's stream id `{id}`",
            e.id.chars().take(80).collect::<String>()
        ));
    }
    if take_credentials(e.url.trim()).2.is_some() {
        return Err(
            "url: credentials do not travel through the catalog: name a [credentials.NAME] of the probes' configuration in `credentials`"
                .into(),
        );
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn msg(topic: &str, payload: &str, retained: bool) -> Incoming {
        Incoming {
            topic: topic.into(),
            payload: payload.as_bytes().to_vec(),
            retained,
        }
    }

    fn status(probe: &str, online: bool, fleet: Option<&str>, capacity: u32) -> String {
        let mut s = Status::new(probe, std::time::SystemTime::UNIX_EPOCH, vec![]);
        s.status = if online {
            Presence::Online
        } else {
            Presence::Offline
        };
        s.fleet = fleet.map(String::from);
        s.capacity = Some(capacity);
        String::from_utf8(serde_json::to_vec(&s).unwrap()).unwrap()
    }

    fn view(t0: Instant) -> View {
        View::new("vq", "eu", "me", 8, 10 * S, 3, t0)
    }

    fn ids(ms: &[Member]) -> Vec<(&str, u32)> {
        ms.iter().map(|m| (m.id.as_str(), m.capacity)).collect()
    }

    #[test]
    fn members_settle_unless_found_retained_and_leave_at_once() {
        let t0 = Instant::now();
        let mut v = view(t0);
        v.resubscribed(t0);
        assert_eq!(
            v.on_message(
                &msg("vq/a/status", &status("a", true, Some("eu"), 4), true),
                t0
            ),
            Change::Assignment
        );
        // Another fleet, offline, garbage: not members.
        v.on_message(
            &msg("vq/b/status", &status("b", true, Some("us"), 4), true),
            t0,
        );
        v.on_message(
            &msg("vq/c/status", &status("c", false, Some("eu"), 4), true),
            t0,
        );
        v.on_message(&msg("vq/d/status", "{", true), t0);
        assert_eq!(v.stats.bad_statuses, 1);
        // Retained: counted at once; this probe only after its own settle.
        assert_eq!(ids(&v.members(t0)), [("a", 4)]);
        assert_eq!(ids(&v.members(t0 + 10 * S)), [("a", 4), ("me", 8)]);
        // A live `online`: counted after the settle delay.
        let t1 = t0 + 20 * S;
        v.on_message(
            &msg("vq/e/status", &status("e", true, Some("eu"), 2), false),
            t1,
        );
        assert_eq!(v.members(t1 + 9 * S).len(), 2);
        // The first burst's sweep (due since t0 + 2 s) wakes at once; then the settle.
        assert_eq!(v.next_wakeup(t1), Some(t0 + SWEEP_QUIET));
        assert!(!v.sweep(t1));
        assert_eq!(v.next_wakeup(t1), Some(t1 + 10 * S));
        assert_eq!(
            ids(&v.members(t1 + 10 * S)),
            [("a", 4), ("e", 2), ("me", 8)]
        );
        // Its status republished (new stream list, same capacity): nothing changes.
        assert_eq!(
            v.on_message(
                &msg("vq/e/status", &status("e", true, Some("eu"), 2), false),
                t1
            ),
            Change::None
        );
        // The Last Will: gone at once.
        assert_eq!(
            v.on_message(
                &msg("vq/a/status", &status("a", false, Some("eu"), 4), false),
                t1
            ),
            Change::Assignment
        );
        assert_eq!(ids(&v.members(t1 + 10 * S)), [("e", 2), ("me", 8)]);
        // Our own status is not a second "me".
        v.on_message(
            &msg("vq/me/status", &status("me", true, Some("eu"), 8), false),
            t1,
        );
        assert_eq!(v.members(t1 + 10 * S).len(), 2);
    }

    #[test]
    fn catalog_entries_parse_are_bounded_and_removed_by_an_empty_message() {
        let t0 = Instant::now();
        let mut v = view(t0);
        let e = |id: &str| format!(r#"{{"id":"{id}","url":"file:///x.ts","loop":true}}"#);
        assert_eq!(
            v.on_message(&msg("vq/fleet/eu/streams/s1", &e("s1"), true), t0),
            Change::Assignment
        );
        assert_eq!(
            v.on_message(&msg("vq/fleet/eu/streams/s1", &e("s1"), true), t0),
            Change::None
        );
        assert!(v.entry("s1").unwrap().parsed.as_ref().unwrap().looped);
        // Invalid entries are kept (every member sees the same ids) with the reason.
        v.on_message(&msg("vq/fleet/eu/streams/s2", &e("other"), true), t0);
        v.on_message(
            &msg(
                "vq/fleet/eu/streams/s3",
                r#"{"id":"s3","url":"rtsp://u:secret@cam/x"}"#,
                true,
            ),
            t0,
        );
        assert_eq!(v.stream_ids(), ["s1", "s2", "s3"]);
        assert!(v
            .entry("s2")
            .unwrap()
            .parsed
            .as_ref()
            .unwrap_err()
            .starts_with("id:"));
        let why = v.entry("s3").unwrap().parsed.clone().unwrap_err();
        assert!(
            why.contains("credentials") && !why.contains("secret"),
            "{why}"
        );
        // Full: a new id is refused and counted; a known one still changes.
        assert_eq!(
            v.on_message(&msg("vq/fleet/eu/streams/s4", &e("s4"), true), t0),
            Change::None
        );
        assert_eq!(v.stats.catalog_refused, 1);
        // Bad ids and deeper topics are not entries.
        v.on_message(&msg("vq/fleet/eu/streams/a b", &e("a b"), true), t0);
        v.on_message(&msg("vq/fleet/eu/streams/s1/x", "1", true), t0);
        assert_eq!(v.stats.bad_topics, 2);
        // Error topics are tracked, not entries.
        v.on_message(&msg("vq/fleet/eu/streams/s2/error", "{}", true), t0);
        assert_eq!(v.error_on_broker("s2"), Some(&b"{}"[..]));
        assert_eq!(
            v.on_message(&msg("vq/fleet/eu/streams/s2", "", false), t0),
            Change::Assignment
        );
        assert_eq!(v.stream_ids(), ["s1", "s3"]);
        let big = format!(
            r#"{{"id":"s2","url":"file:///x.ts","detect":{{"x":"{}"}}}}"#,
            "a".repeat(MAX_ENTRY_BYTES)
        );
        v.on_message(&msg("vq/fleet/eu/streams/s2", &big, false), t0);
        assert!(v
            .entry("s2")
            .unwrap()
            .parsed
            .as_ref()
            .unwrap_err()
            .contains("larger"));
    }

    #[test]
    fn a_resync_sweeps_what_was_deleted_meanwhile_after_the_burst() {
        let t0 = Instant::now();
        let mut v = View::new("vq", "eu", "me", 8, 10 * S, 100, t0);
        v.resubscribed(t0);
        let e = |id: &str| format!(r#"{{"id":"{id}","url":"file:///x.ts"}}"#);
        for id in ["s1", "s2"] {
            v.on_message(&msg(&format!("vq/fleet/eu/streams/{id}"), &e(id), true), t0);
        }
        v.on_message(
            &msg("vq/a/status", &status("a", true, Some("eu"), 4), true),
            t0,
        );
        v.on_message(&msg("vq/fleet/eu/streams/s2/error", "{}", true), t0);
        // The first burst: everything was seen in it, nothing to sweep.
        assert!(!v.sweep(t0 + 3 * S));
        assert_eq!(v.stream_ids(), ["s1", "s2"]);
        // Reconnected: s2, its error and member a were deleted while we were away.
        let t1 = t0 + 100 * S;
        v.resubscribed(t1);
        v.on_message(&msg("vq/fleet/eu/streams/s1", &e("s1"), true), t1 + S);
        // The burst is not over 2 s after the subscription: nothing swept yet.
        assert!(!v.sweep(t1 + 2 * S));
        assert_eq!(v.stream_ids(), ["s1", "s2"]);
        assert!(v.sweep(t1 + 3 * S));
        assert_eq!(v.stream_ids(), ["s1"]);
        assert_eq!(v.error_on_broker("s2"), None);
        assert_eq!(ids(&v.members(t1 + 3 * S)), [("me", 8)]);
        assert_eq!(v.stats.swept, 3);
        // Swept once only.
        assert!(!v.sweep(t1 + 10 * S));
    }
}
