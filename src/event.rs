//! The event wire schema, version 1 (documented in `docs/events.md`).
//!
//! Boundaries: transitions in, wire events out; imports only `defect`. Delivery
//! (printing, MQTT) is `publish/`.
//!
//! Every defect is a `start`/`end` pair sharing a `defect_id`; each event has its own
//! `id` (`{defect_id}-start` / `{defect_id}-end`), so at-least-once delivery can be
//! de-duplicated downstream by `id`.

use std::hash::{Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::defect::{DefectKind, EndReason, Metric, Phase, Severity, Transition};

/// Schema version carried in `v`.
pub const SCHEMA_VERSION: u32 = 1;

/// One defect event, exactly as published (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version (1).
    pub v: u32,
    /// Unique id of this event.
    pub id: String,
    /// Id shared by the `start` and `end` of one defect.
    pub defect_id: String,
    /// The probe that saw it.
    pub probe: String,
    /// The stream it concerns.
    pub stream: String,
    pub kind: DefectKind,
    pub state: Phase,
    /// Onset, media seconds since the stream's first timestamp.
    pub start_s: f64,
    /// End, media seconds (on `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    /// `end_s - start_s` (on `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Wall-clock time the event was emitted, RFC 3339 UTC.
    pub at: String,
    pub severity: Severity,
    /// Set on an `end` that was forced rather than observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
    /// Evidence: a few named values (see `docs/events.md` per kind).
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// The level the stream's video was decoded at when this was emitted (`full`,
    /// `reference`, `key`); absent for a stream without decoded video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_level: Option<crate::defect::DecodeLevel>,
    /// On the `start` of a picture defect with a thumbnail: where it is (the agent:
    /// its MQTT topic; `check --thumbs DIR`: the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumb: Option<String>,
    /// The thumbnail itself (JPEG), until whoever delivers the event stores or sends
    /// it; never serialised.
    #[serde(skip)]
    pub jpeg: Option<std::sync::Arc<[u8]>>,
}

impl Event {
    /// The JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serialising this struct cannot fail: all keys are strings, all floats are
        // finite (rounded in `EventFactory`).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Makes events for one stream: assigns ids, wall-clock time and rounding.
#[derive(Debug, Clone)]
pub struct EventFactory {
    probe: String,
    stream: String,
    /// Distinguishes this run from earlier ones of the same stream.
    run: u64,
    seq: u64,
    /// Open defects: (kind, slot), defect_id and onset; at most one per (kind, slot).
    /// Two slots per kind (`slot` is 0 or 1, see [`Transition::slot`]); should it ever
    /// be full, the oldest entry is evicted (its `end` then gets a fresh id) and logged.
    open: heapless::Vec<((DefectKind, u8), String, f64), { 2 * DefectKind::COUNT }>,
}

impl EventFactory {
    pub fn new(probe: &str, stream: &str) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        probe.hash(&mut h);
        stream.hash(&mut h);
        std::process::id().hash(&mut h);
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .hash(&mut h);
        EventFactory {
            probe: probe.to_string(),
            stream: stream.to_string(),
            run: h.finish(),
            seq: 0,
            open: heapless::Vec::new(),
        }
    }

    /// Kinds with an open (started, not ended) defect.
    pub fn open_defects(&self) -> impl Iterator<Item = (DefectKind, u8, f64)> + '_ {
        self.open.iter().map(|((k, slot), _, s)| (*k, *slot, *s))
    }

    /// Turns a detector transition into an event.
    pub fn make(&mut self, t: &Transition, reason: Option<EndReason>) -> Event {
        let defect_id = match t.phase {
            Phase::Start => {
                self.seq += 1;
                let id = format!("{:016x}-{}", self.run, self.seq);
                // Replace a stale open entry of the same kind (cannot happen with a
                // well-behaved detector; keeps the table bounded regardless).
                let key = (t.kind, t.slot);
                self.open.retain(|(k, _, _)| *k != key);
                if let Err(entry) = self.open.push((key, id.clone(), t.start_s)) {
                    tracing::error!(
                        kind = t.kind.as_str(),
                        "open-defect table full: oldest evicted (a bug)"
                    );
                    debug_assert!(false, "open-defect table full");
                    self.open.remove(0);
                    let _ = self.open.push(entry);
                }
                id
            }
            Phase::End => match self
                .open
                .iter()
                .position(|(k, _, _)| *k == (t.kind, t.slot))
            {
                Some(i) => self.open.swap_remove(i).1,
                None => {
                    self.seq += 1;
                    format!("{:016x}-{}", self.run, self.seq)
                }
            },
        };
        let suffix = t.phase.as_str();
        let mut metrics = serde_json::Map::new();
        for (name, v) in &t.metrics {
            let value = match v {
                Metric::Num(x) => serde_json::json!(round3(*x)),
                Metric::Int(i) => serde_json::json!(i),
                Metric::Str(s) => serde_json::json!(s),
                Metric::Text(s) => serde_json::json!(&**s),
            };
            metrics.insert((*name).to_string(), value);
        }
        let start_s = round3(t.start_s);
        let end_s = t.end_s.map(round3);
        Event {
            v: SCHEMA_VERSION,
            id: format!("{defect_id}-{suffix}"),
            defect_id,
            probe: self.probe.clone(),
            stream: self.stream.clone(),
            kind: t.kind,
            state: t.phase,
            start_s,
            end_s,
            duration_s: end_s.map(|e| round3((e - start_s).max(0.0))),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            severity: t.kind.severity(),
            reason,
            metrics,
            decode_level: None,
            thumb: None,
            jpeg: None,
        }
    }
}

/// Rounds to milliseconds (see [`crate::defect::round_to`]).
fn round3(x: f64) -> f64 {
    crate::defect::round_to(x, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::Metrics;

    fn tr(kind: DefectKind, phase: Phase, start: f64, end: Option<f64>) -> Transition {
        let mut m = Metrics::new();
        let _ = m.push(("frames", Metric::Int(7)));
        let _ = m.push(("luma", Metric::Num(f64::NAN)));
        Transition {
            kind,
            phase,
            start_s: start,
            end_s: end,
            metrics: m,
            slot: 0,
            media: None,
        }
    }

    #[test]
    fn two_open_defects_of_one_kind_in_different_slots() {
        let mut f = EventFactory::new("p", "s");
        let mut v = tr(DefectKind::UnsupportedCodec, Phase::Start, 0.0, None);
        let mut a = v.clone();
        a.slot = 1;
        let vs = f.make(&v, None);
        let as_ = f.make(&a, None);
        v.phase = Phase::End;
        a.phase = Phase::End;
        let ve = f.make(&v, None);
        let ae = f.make(&a, None);
        assert_eq!(vs.defect_id, ve.defect_id);
        assert_eq!(as_.defect_id, ae.defect_id);
        assert_ne!(vs.defect_id, as_.defect_id);
        assert_eq!(f.open_defects().count(), 0);
    }

    #[test]
    fn start_and_end_share_defect_id_and_schema_is_exact() {
        let mut f = EventFactory::new("edge-1", "cam1");
        let s = f.make(&tr(DefectKind::Black, Phase::Start, 3.00049, None), None);
        let e = f.make(
            &tr(DefectKind::Black, Phase::End, 3.0, Some(6.0)),
            Some(EndReason::EndOfInput),
        );
        assert_eq!(s.defect_id, e.defect_id);
        assert_ne!(s.id, e.id);
        assert!(s.id.ends_with("-start") && e.id.ends_with("-end"));
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "at",
                "defect_id",
                "duration_s",
                "end_s",
                "id",
                "kind",
                "metrics",
                "probe",
                "reason",
                "severity",
                "start_s",
                "state",
                "stream",
                "v"
            ]
        );
        assert_eq!(v["kind"], "black");
        assert_eq!(v["state"], "end");
        assert_eq!(v["duration_s"], 3.0);
        assert_eq!(v["reason"], "end_of_input");
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["metrics"]["frames"], 7);
        assert_eq!(v["metrics"]["luma"], 0.0);
        let sv: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(sv["start_s"], 3.0);
        assert!(sv.get("end_s").is_none());
        let back: Event = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn ids_are_unique_across_defects_and_factories() {
        let mut f = EventFactory::new("p", "s");
        let a = f.make(&tr(DefectKind::Freeze, Phase::Start, 1.0, None), None);
        let _ = f.make(&tr(DefectKind::Freeze, Phase::End, 1.0, Some(2.0)), None);
        let b = f.make(&tr(DefectKind::Freeze, Phase::Start, 5.0, None), None);
        assert_ne!(a.defect_id, b.defect_id);
        let mut g = EventFactory::new("p", "s2");
        let c = g.make(&tr(DefectKind::Freeze, Phase::Start, 1.0, None), None);
        assert_ne!(a.defect_id, c.defect_id);
    }
}
