//! Home Assistant MQTT discovery (`[homeassistant]`, docs/mqtt.md "Home Assistant"):
//! which group each defect kind belongs to, and the discovery topics and payloads, as
//! pure functions of the probe id, the stream ids and the prefixes.
//!
//! Owns: [`Group`] and [`group`], the id sanitising, the discovery config payloads (a
//! `binary_sensor` per group and two `sensor`s per stream, one `binary_sensor` for the
//! probe) and the recognition of a config this probe announced earlier.
//! May not: publish (the agent's glue, `app/agent/homeassistant.rs`, does, through the
//! publisher's retained messages), know stream URLs (never in a payload: they may hold
//! credentials).

use serde_json::{json, Value};

use super::mqtt::MqttSettings;
use crate::defect::DefectKind;

/// `payload_on` of the problem binary sensors.
pub const ON: &str = "ON";
/// `payload_off` of the problem binary sensors.
pub const OFF: &str = "OFF";

/// The three problems a stream shows in Home Assistant; every defect kind belongs to
/// exactly one ([`group`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// What the viewer sees: black, freeze, corruption, low_fps.
    Picture,
    /// What the viewer hears: silence, av_desync.
    Sound,
    /// How the stream arrives: the delivery kinds, and unsupported_codec.
    Delivery,
}

impl Group {
    /// Every group, in the order of [`Group::index`].
    pub const ALL: [Group; 3] = [Group::Picture, Group::Sound, Group::Delivery];

    /// Name in topics and ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Picture => "picture",
            Group::Sound => "sound",
            Group::Delivery => "delivery",
        }
    }

    /// Position in [`Group::ALL`].
    pub fn index(self) -> usize {
        match self {
            Group::Picture => 0,
            Group::Sound => 1,
            Group::Delivery => 2,
        }
    }

    /// The entity's name in Home Assistant.
    fn title(self) -> &'static str {
        match self {
            Group::Picture => "Picture problem",
            Group::Sound => "Sound problem",
            Group::Delivery => "Delivery problem",
        }
    }
}

/// The group of a defect kind. Exhaustive on purpose: a new kind does not compile until
/// it is given a group here (and in docs/mqtt.md).
///
/// * `av_desync` is a sound problem: the viewer hears the sound early or late against
///   the picture (the picture itself is fine).
/// * `unsupported_codec` is a delivery problem: the stream arrives in a form the probe
///   cannot analyse (either track); nothing is known about what it shows.
/// * `probe_overload` is a delivery problem like the other delivery kinds
///   ([`DefectKind::is_delivery`]): packets were dropped before decoding.
pub fn group(kind: DefectKind) -> Group {
    match kind {
        DefectKind::Black
        | DefectKind::Freeze
        | DefectKind::Corruption
        | DefectKind::Uniform
        | DefectKind::LowFps
        | DefectKind::TestPattern => Group::Picture,
        DefectKind::Silence
        | DefectKind::Clipping
        | DefectKind::ChannelLoss
        | DefectKind::Loudness
        | DefectKind::AvDesync => Group::Sound,
        DefectKind::UnsupportedCodec
        | DefectKind::Stall
        | DefectKind::SourceDown
        | DefectKind::PacketLoss
        | DefectKind::PlaylistStale
        | DefectKind::SegmentError
        | DefectKind::SlowDownload
        | DefectKind::TsError
        | DefectKind::ProbeOverload => Group::Delivery,
        DefectKind::Blur => Group::Picture,
    }
}

/// An id as Home Assistant accepts it in discovery topics and unique ids
/// (`[a-zA-Z0-9_-]`): every other character (only `.` in a valid probe or stream id)
/// becomes `_`. The agent's configuration refuses two streams that sanitise alike.
pub fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The two measurement sensors of a stream, read from its stats message.
const SENSORS: [(&str, &str, &str, &str, Option<&str>); 2] = [
    // (what, name, unit, value template, device class)
    ("fps", "Frame rate", "fps", "{{ value_json.fps }}", None),
    (
        "bitrate",
        "Bitrate",
        "bit/s",
        "{{ value_json.media_bitrate_bps }}",
        Some("data_rate"),
    ),
];

/// Everything a discovery payload is made from.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// `[homeassistant] prefix` (Home Assistant's discovery prefix).
    pub prefix: String,
    /// The agent's topic names (`{topic_prefix}/{probe_id}/…`).
    pub topics: MqttSettings,
    /// Seconds after which Home Assistant marks the measurement sensors unavailable
    /// without a new stats message (`expire_after`: 3 stats intervals).
    pub expire_after_s: u64,
}

impl Discovery {
    /// `vqprobe_{probe}`: the node id in every config topic of this probe and the
    /// probe device's identifier.
    pub fn node_id(&self) -> String {
        format!("vqprobe_{}", sanitize(&self.topics.probe_id))
    }

    /// `{prefix}/status`: Home Assistant's birth and last-will topic (`online` when it
    /// starts: every config is then sent again).
    pub fn birth_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// `{prefix}/+/vqprobe_{probe}/+/config`: every config this probe announces (the
    /// agent subscribes to it to find, after a restart, the retained configs of streams
    /// no longer configured).
    pub fn config_filter(&self) -> String {
        format!("{}/+/{}/+/config", self.prefix, self.node_id())
    }

    fn config_topic(&self, component: &str, object_id: &str) -> String {
        format!(
            "{}/{component}/{}/{object_id}/config",
            self.prefix,
            self.node_id()
        )
    }

    /// The availability of every entity: the probe's retained status (`online` /
    /// `offline`, also the Last Will).
    fn availability(&self) -> Value {
        json!([{
            "topic": self.topics.status_topic(),
            "value_template": "{{ value_json.status }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }])
    }

    fn origin() -> Value {
        json!({"name": "vqprobe", "sw_version": env!("CARGO_PKG_VERSION")})
    }

    /// The probe's own config: a connectivity `binary_sensor` on its status topic, so
    /// that the probe exists as a device and every stream device sits under it
    /// (`via_device`).
    pub fn probe_config(&self) -> (String, Value) {
        let node = self.node_id();
        let payload = json!({
            "name": "Status",
            "unique_id": format!("{node}_status"),
            "device_class": "connectivity",
            "state_topic": self.topics.status_topic(),
            "value_template": "{{ 'ON' if value_json.status == 'online' else 'OFF' }}",
            "payload_on": ON,
            "payload_off": OFF,
            "qos": 1,
            "device": {
                "identifiers": [node],
                "name": format!("vqprobe {}", self.topics.probe_id),
                "manufacturer": "vqprobe",
                "model": "vqprobe probe",
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
            "origin": Self::origin(),
        });
        (self.config_topic("binary_sensor", "status"), payload)
    }

    /// The device of a stream, under the probe's.
    fn stream_device(&self, stream: &str) -> Value {
        json!({
            "identifiers": [format!("{}_{}", self.node_id(), sanitize(stream))],
            "name": format!("{stream} ({})", self.topics.probe_id),
            "manufacturer": "vqprobe",
            "model": "vqprobe stream",
            "sw_version": env!("CARGO_PKG_VERSION"),
            "via_device": self.node_id(),
        })
    }

    /// `vqprobe_{probe}_{stream}_{what}`.
    fn unique_id(&self, stream: &str, what: &str) -> String {
        format!("{}_{}_{what}", self.node_id(), sanitize(stream))
    }

    /// The configs of one stream, (topic, payload): the three problem binary sensors
    /// (state on [`MqttSettings::problem_topic`]) and the frame rate and bitrate sensors
    /// (state: the stream's stats message, through a `value_template`).
    pub fn stream_configs(&self, stream: &str) -> Vec<(String, Value)> {
        let s = sanitize(stream);
        let mut out = Vec::with_capacity(Group::ALL.len() + SENSORS.len());
        for g in Group::ALL {
            let payload = json!({
                "name": g.title(),
                "unique_id": self.unique_id(stream, g.as_str()),
                "device_class": "problem",
                "state_topic": self.topics.problem_topic(stream, g.as_str()),
                "payload_on": ON,
                "payload_off": OFF,
                "qos": 1,
                "availability": self.availability(),
                "device": self.stream_device(stream),
                "origin": Self::origin(),
            });
            out.push((
                self.config_topic("binary_sensor", &format!("{s}_{}", g.as_str())),
                payload,
            ));
        }
        for (what, name, unit, template, class) in SENSORS {
            let mut payload = json!({
                "name": name,
                "unique_id": self.unique_id(stream, what),
                "state_topic": self.topics.stats_topic(stream),
                "value_template": template,
                "unit_of_measurement": unit,
                "state_class": "measurement",
                "expire_after": self.expire_after_s,
                "qos": 0,
                "availability": self.availability(),
                "device": self.stream_device(stream),
                "origin": Self::origin(),
            });
            if let (Some(c), Some(o)) = (class, payload.as_object_mut()) {
                o.insert("device_class".into(), json!(c));
            }
            out.push((self.config_topic("sensor", &format!("{s}_{what}")), payload));
        }
        out
    }

    /// The retained state topics of a stream (the problem binary sensors').
    pub fn stream_state_topics(&self, stream: &str) -> Vec<String> {
        Group::ALL
            .iter()
            .map(|g| self.topics.problem_topic(stream, g.as_str()))
            .collect()
    }

    /// The `state_topic` of a config this probe announced (found retained on the
    /// broker), when it is one of this probe's problem topics: the topic to clear with
    /// the config. Anything else (not JSON, another probe's topic, a wildcard) is None:
    /// a config of unknown origin never makes the agent clear an arbitrary topic.
    pub fn owned_state_topic(&self, config: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(config).ok()?;
        let t = v.get("state_topic")?.as_str()?;
        let base = format!("{}/{}/", self.topics.prefix, self.topics.probe_id);
        let rest = t.strip_prefix(&base)?;
        let (stream, group) = rest.split_once("/problem/")?;
        let ok = !stream.is_empty()
            && !stream.contains(['/', '+', '#'])
            && Group::ALL.iter().any(|g| g.as_str() == group);
        ok.then(|| t.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    fn d() -> Discovery {
        Discovery {
            prefix: "homeassistant".into(),
            topics: MqttSettings {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: None,
                client_id: "c".into(),
                username: None,
                password: None,
                keepalive: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(10),
                backoff_initial: 0.5,
                backoff_max: 30.0,
                prefix: "vqprobe".into(),
                probe_id: "edge.fra-01".into(),
            },
            expire_after_s: 30,
        }
    }

    /// Every kind has a group, and the groups are the documented ones.
    #[test]
    fn every_kind_has_its_group() {
        for k in DefectKind::ALL {
            let want = match k.as_str() {
                "black" | "freeze" | "corruption" | "uniform" | "low_fps" | "test_pattern"
                | "blur" => Group::Picture,
                "silence" | "clipping" | "channel_loss" | "loudness" | "av_desync" => Group::Sound,
                _ => Group::Delivery,
            };
            assert_eq!(group(k), want, "{}", k.as_str());
            // Every delivery kind is a delivery problem.
            if k.is_delivery() {
                assert_eq!(group(k), Group::Delivery, "{}", k.as_str());
            }
        }
        assert_eq!(group(DefectKind::UnsupportedCodec), Group::Delivery);
        for (i, g) in Group::ALL.iter().enumerate() {
            assert_eq!(g.index(), i);
        }
    }

    #[test]
    fn ids_are_sanitised_to_what_home_assistant_accepts() {
        assert_eq!(sanitize("edge.fra-01_a"), "edge_fra-01_a");
        assert_eq!(d().node_id(), "vqprobe_edge_fra-01");
        assert_eq!(
            d().config_filter(),
            "homeassistant/+/vqprobe_edge_fra-01/+/config"
        );
        assert_eq!(d().birth_topic(), "homeassistant/status");
    }

    #[test]
    fn binary_sensors_follow_the_discovery_schema() {
        let c = d().stream_configs("cam.1");
        assert_eq!(c.len(), 5);
        let (topic, p) = &c[0];
        assert_eq!(
            topic,
            "homeassistant/binary_sensor/vqprobe_edge_fra-01/cam_1_picture/config"
        );
        assert_eq!(p["unique_id"], "vqprobe_edge_fra-01_cam_1_picture");
        assert_eq!(p["device_class"], "problem");
        assert_eq!(
            p["state_topic"],
            "vqprobe/edge.fra-01/cam.1/problem/picture"
        );
        assert_eq!(
            (&p["payload_on"], &p["payload_off"]),
            (&json!("ON"), &json!("OFF"))
        );
        let a = &p["availability"][0];
        assert_eq!(a["topic"], "vqprobe/edge.fra-01/status");
        assert_eq!(a["value_template"], "{{ value_json.status }}");
        assert_eq!(a["payload_available"], "online");
        assert_eq!(a["payload_not_available"], "offline");
        let dev = &p["device"];
        assert_eq!(dev["identifiers"], json!(["vqprobe_edge_fra-01_cam_1"]));
        assert_eq!(dev["via_device"], "vqprobe_edge_fra-01");
        assert_eq!(dev["manufacturer"], "vqprobe");
        assert_eq!(dev["sw_version"], env!("CARGO_PKG_VERSION"));
        assert!(dev["name"].as_str().is_some_and(|n| n.contains("cam.1")));
        for (g, (t, p)) in Group::ALL.iter().zip(&c) {
            assert!(t.ends_with(&format!("_{}/config", g.as_str())), "{t}");
            assert_eq!(p["name"], g.title());
        }
    }

    #[test]
    fn sensors_read_the_stats_message() {
        let c = d().stream_configs("cam1");
        let (topic, fps) = &c[3];
        assert_eq!(
            topic,
            "homeassistant/sensor/vqprobe_edge_fra-01/cam1_fps/config"
        );
        assert_eq!(fps["state_topic"], "vqprobe/edge.fra-01/cam1/stats");
        assert_eq!(fps["value_template"], "{{ value_json.fps }}");
        assert_eq!(fps["unit_of_measurement"], "fps");
        assert_eq!(fps["state_class"], "measurement");
        assert_eq!(fps["expire_after"], 30);
        assert!(fps.get("device_class").is_none());
        let (_, br) = &c[4];
        assert_eq!(br["unit_of_measurement"], "bit/s");
        assert_eq!(br["device_class"], "data_rate");
        assert_eq!(br["value_template"], "{{ value_json.media_bitrate_bps }}");
    }

    #[test]
    fn unique_ids_differ_within_a_probe() {
        let d = d();
        let mut ids = HashSet::new();
        let mut topics = HashSet::new();
        let (t, p) = d.probe_config();
        ids.insert(p["unique_id"].as_str().unwrap().to_string());
        topics.insert(t);
        // Stream ids that end like a `what` must not collide either.
        for s in ["cam", "cam_fps", "cam_picture", "status", "a-b"] {
            for (t, p) in d.stream_configs(s) {
                assert!(
                    ids.insert(p["unique_id"].as_str().unwrap().to_string()),
                    "{p}"
                );
                assert!(topics.insert(t.clone()), "{t}");
            }
        }
        assert_eq!(ids.len(), 1 + 5 * 5);
    }

    #[test]
    fn no_payload_names_a_url() {
        let d = d();
        let (_, p) = d.probe_config();
        let mut all = vec![p];
        all.extend(d.stream_configs("cam1").into_iter().map(|(_, p)| p));
        for p in all {
            let s = p.to_string();
            assert!(!s.contains("://"), "{s}");
            assert!(!s.contains("127.0.0.1"), "{s}");
        }
    }

    #[test]
    fn only_this_probes_problem_topics_are_owned() {
        let d = d();
        let (_, p) = &d.stream_configs("gone")[1];
        assert_eq!(
            d.owned_state_topic(p.to_string().as_bytes()).as_deref(),
            Some("vqprobe/edge.fra-01/gone/problem/sound")
        );
        for bad in [
            r#"{"state_topic":"vqprobe/other/gone/problem/sound"}"#,
            r#"{"state_topic":"vqprobe/edge.fra-01/gone/events"}"#,
            r#"{"state_topic":"vqprobe/edge.fra-01/+/problem/sound"}"#,
            r#"{"state_topic":"vqprobe/edge.fra-01/a/b/problem/sound"}"#,
            r#"{"state_topic":"vqprobe/edge.fra-01/gone/problem/x"}"#,
            r#"{"state_topic":3}"#,
            "not json",
            "",
        ] {
            assert_eq!(d.owned_state_topic(bad.as_bytes()), None, "{bad}");
        }
        // The sensors' state is the stats topic: never cleared.
        let (_, p) = &d.stream_configs("gone")[3];
        assert_eq!(d.owned_state_topic(p.to_string().as_bytes()), None);
    }
}
