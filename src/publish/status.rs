//! The probe's retained status message (`{prefix}/{probe}/status`, docs/mqtt.md): one
//! typed [`Status`] and one builder, used by the agent and by `demo --mqtt`, beside the
//! [`Event`](crate::event::Event) schema. Owns the payload only; it may not publish.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// `online` while connected; `offline` on a clean shutdown and as the Last Will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    Offline,
}

/// The status payload. `offline` carries the same fields as `online`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Schema version: 1.
    pub v: u32,
    pub status: Presence,
    pub probe: String,
    /// [`crate::VERSION`].
    pub version: String,
    /// When the process started (RFC 3339, seconds).
    pub started_at: String,
    pub pid: u32,
    /// The ids of the streams watched now (the configured ones and, in a fleet, those
    /// assigned to this probe).
    pub streams: Vec<String>,
    /// `[fleet] name`: the fleet this probe is a member of (null outside a fleet).
    #[serde(default)]
    pub fleet: Option<String>,
    /// In a fleet: how many of the fleet's streams this probe takes at most (its weight
    /// in the assignment); null outside a fleet.
    #[serde(default)]
    pub capacity: Option<u32>,
}

impl Status {
    /// The status of this process (`online`), started at `started`, watching `streams`.
    pub fn new(probe: &str, started: SystemTime, streams: Vec<String>) -> Self {
        Status {
            v: 1,
            status: Presence::Online,
            probe: probe.to_string(),
            version: crate::VERSION.to_string(),
            started_at: humantime::format_rfc3339_seconds(started).to_string(),
            pid: std::process::id(),
            streams,
            fleet: None,
            capacity: None,
        }
    }

    /// The payload with `status` set to `presence`.
    pub fn payload(&self, presence: Presence) -> Vec<u8> {
        let s = Status {
            status: presence,
            ..self.clone()
        };
        // A struct of strings and numbers always serialises.
        serde_json::to_vec(&s).unwrap_or_default()
    }

    /// The `online` payload.
    pub fn online(&self) -> Vec<u8> {
        self.payload(Presence::Online)
    }

    /// The `offline` payload (same fields).
    pub fn offline(&self) -> Vec<u8> {
        self.payload(Presence::Offline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The fields docs/mqtt.md lists, in both states.
    #[test]
    fn online_and_offline_carry_the_documented_fields() {
        let s = Status::new("edge-1", SystemTime::UNIX_EPOCH, vec!["cam1".into()]);
        for (bytes, state) in [(s.online(), "online"), (s.offline(), "offline")] {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            keys.sort();
            assert_eq!(
                keys,
                [
                    "capacity",
                    "fleet",
                    "pid",
                    "probe",
                    "started_at",
                    "status",
                    "streams",
                    "v",
                    "version"
                ]
            );
            assert_eq!(v["status"], state);
            assert_eq!(v["started_at"], "1970-01-01T00:00:00Z");
            assert_eq!(v["streams"], serde_json::json!(["cam1"]));
            assert_eq!((&v["fleet"], &v["capacity"]), (&json!(null), &json!(null)));
        }
        let mut f = s.clone();
        f.fleet = Some("eu-west".into());
        f.capacity = Some(12);
        let v: serde_json::Value = serde_json::from_slice(&f.online()).unwrap();
        assert_eq!(
            (&v["fleet"], &v["capacity"]),
            (&json!("eu-west"), &json!(12))
        );
        // A status of an older probe (no fleet fields) still reads.
        let old = r#"{"v":1,"status":"offline","probe":"p","version":"0","started_at":"x","pid":1,"streams":[]}"#;
        let o: Status = serde_json::from_str(old).unwrap();
        assert_eq!(
            (o.status, o.fleet, o.capacity),
            (Presence::Offline, None, None)
        );
        let doc = include_str!("../../docs/mqtt.md");
        for k in [
            "\"v\"",
            "\"status\"",
            "\"probe\"",
            "\"version\"",
            "\"started_at\"",
            "\"pid\"",
            "\"streams\"",
            "\"fleet\"",
            "\"capacity\"",
        ] {
            assert!(doc.contains(k), "docs/mqtt.md lacks {k}");
        }
    }
}
