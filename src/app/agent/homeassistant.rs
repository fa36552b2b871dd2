//! Home Assistant MQTT discovery in the agent (`[homeassistant] discovery = true`,
//! docs/mqtt.md "Home Assistant"): announces the probe and every configured stream,
//! keeps each stream's problem states (`ON` while a defect of the group is open), and
//! clears what it announced for streams that are no longer configured.
//!
//! Everything goes out as retained messages of the publisher ([`Publisher::retain`]:
//! memory only, never through the event spool, sent again after every reconnection).
//! The payloads come from [`crate::publish::homeassistant`].
//!
//! Streams removed while the agent runs (SIGHUP) are cleared at once. Streams removed
//! while it was stopped are found on the broker itself: the agent subscribes to
//! `{prefix}/+/vqprobe_{probe}/+/config`, and every retained config there that is not
//! one it announces now is cleared (with the problem topic it names, when that is one
//! of this probe's). Nothing is kept on disk. The same subscription, plus Home
//! Assistant's birth topic (`{prefix}/status`), makes every config go out again when
//! Home Assistant says `online`.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use super::config::Loaded;
use crate::publish::homeassistant::{Discovery, Group, OFF, ON};
use crate::publish::mqtt::{Incoming, MqttSettings, Publisher, INCOMING_QUEUE};

/// The agent's Home Assistant announcer. Shared by the agent and its streams.
pub(super) struct Ha {
    publisher: Publisher,
    inner: Mutex<Inner>,
}

struct Inner {
    names: Discovery,
    /// Streams announced now.
    streams: BTreeSet<String>,
    /// Config topics announced now (the probe's included).
    configs: HashSet<String>,
}

impl Ha {
    /// The announcer of `loaded` when `[homeassistant] discovery` is on: announces the
    /// probe and its streams now (retained, sent once connected).
    pub(super) fn start(
        publisher: &Publisher,
        settings: &MqttSettings,
        loaded: &Loaded,
    ) -> Option<Arc<Ha>> {
        let cfg = &loaded.cfg.homeassistant;
        if !cfg.discovery {
            return None;
        }
        let names = Discovery {
            prefix: cfg.prefix.clone(),
            topics: settings.clone(),
            expire_after_s: expire_after(loaded),
        };
        let ha = Arc::new(Ha {
            publisher: publisher.clone(),
            inner: Mutex::new(Inner {
                names,
                streams: BTreeSet::new(),
                configs: HashSet::new(),
            }),
        });
        ha.announce(loaded);
        Some(ha)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announces the probe and the streams of `loaded`; clears the configs and problem
    /// states of the streams announced before and not configured any more.
    pub(super) fn announce(&self, loaded: &Loaded) {
        let mut inner = self.lock();
        inner.names.expire_after_s = expire_after(loaded);
        let wanted: BTreeSet<String> = loaded.streams.iter().map(|p| p.cfg.id.clone()).collect();
        let removed: Vec<String> = inner.streams.difference(&wanted).cloned().collect();
        for id in &removed {
            tracing::info!(stream = %id, "Home Assistant: clearing the configs of a removed stream");
            for (topic, _) in inner.names.stream_configs(id) {
                self.publisher.retain(topic, Vec::new());
            }
            for topic in inner.names.stream_state_topics(id) {
                self.publisher.retain(topic, Vec::new());
            }
        }
        let mut configs = HashSet::new();
        let mut all = vec![inner.names.probe_config()];
        for id in &wanted {
            all.extend(inner.names.stream_configs(id));
        }
        for (topic, payload) in all {
            configs.insert(topic.clone());
            self.publisher
                .retain(topic, payload.to_string().into_bytes());
        }
        inner.configs = configs;
        inner.streams = wanted;
    }

    /// Sets a stream's problem state of group `g` (retained). Called by the stream's
    /// task, which may start before [`Ha::announce`] lists a stream added by SIGHUP; a
    /// removed stream's task has ended (or was aborted) before its topics are cleared,
    /// so nothing brings them back.
    pub(super) fn problem(&self, stream: &str, g: Group, on: bool) {
        let topic = self.lock().names.topics.problem_topic(stream, g.as_str());
        let payload = if on { ON } else { OFF };
        self.publisher.retain(topic, payload.as_bytes().to_vec());
    }

    /// Subscribes to Home Assistant's birth topic and to this probe's config topics,
    /// and handles what arrives until the publisher goes.
    pub(super) async fn listen(self: Arc<Self>) {
        let (birth, filter) = {
            let inner = self.lock();
            (inner.names.birth_topic(), inner.names.config_filter())
        };
        let (mut rx, _) = self
            .publisher
            .subscribe(vec![birth.clone(), filter], INCOMING_QUEUE);
        while let Some(Incoming { topic, payload, .. }) = rx.recv().await {
            if topic == birth {
                if payload == b"online" {
                    tracing::info!("Home Assistant is online: sending the discovery configs again");
                    self.publisher.resend_retained();
                }
                continue;
            }
            self.on_config(&topic, &payload);
        }
    }

    /// A retained config of this probe found on the broker: cleared unless announced
    /// now.
    fn on_config(&self, topic: &str, payload: &[u8]) {
        if payload.is_empty() {
            return; // cleared already (our own clearing coming back, too)
        }
        let inner = self.lock();
        if inner.configs.contains(topic) {
            return;
        }
        let state = inner.names.owned_state_topic(payload).filter(|t| {
            !inner
                .streams
                .iter()
                .any(|s| inner.names.stream_state_topics(s).contains(t))
        });
        drop(inner);
        tracing::info!(%topic, "Home Assistant: clearing a config of a stream no longer configured");
        self.publisher.retain(topic.to_string(), Vec::new());
        if let Some(t) = state {
            self.publisher.retain(t, Vec::new());
        }
    }
}

/// `expire_after` of the measurement sensors: three stats intervals (whole seconds).
fn expire_after(loaded: &Loaded) -> u64 {
    loaded.cfg.stats_interval.as_secs().max(1).saturating_mul(3)
}

/// The problem states of a stream's open defects, one per [`Group::ALL`].
pub(super) fn problems(open: impl Iterator<Item = crate::defect::DefectKind>) -> [bool; 3] {
    let mut on = [false; 3];
    for k in open {
        on[crate::publish::homeassistant::group(k).index()] = true;
    }
    on
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::DefectKind;

    #[test]
    fn problems_follow_the_open_defects_groups() {
        assert_eq!(problems(std::iter::empty()), [false; 3]);
        assert_eq!(
            problems([DefectKind::Black, DefectKind::Freeze].into_iter()),
            [true, false, false]
        );
        assert_eq!(
            problems([DefectKind::Silence, DefectKind::SourceDown].into_iter()),
            [false, true, true]
        );
        assert_eq!(
            problems([DefectKind::UnsupportedCodec].into_iter()),
            [false, false, true]
        );
        assert_eq!(problems(DefectKind::ALL.into_iter()), [true; 3]);
    }
}
