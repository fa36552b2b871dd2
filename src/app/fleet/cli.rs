//! `vqprobe fleet add|remove|list --config FILE`: manages a fleet's catalog with the
//! broker settings of a configuration file (docs/fleet.md), so that no operator needs
//! `mosquitto_pub`. Each command is one short MQTT session (clean, its own client id):
//! `add` and `remove` publish retained messages and wait for the broker's
//! acknowledgements; `list` reads the retained catalog, errors and statuses.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Packet, QoS};
use serde_json::{json, Value};

use super::view::{catalog_prefix, parse_entry};
use crate::app::agent::config::{Loaded, StreamConfig};
use crate::error::{Error, Result};
use crate::publish::mqtt::{client_options, MqttSettings};
use crate::publish::status::{Presence, Status};
use crate::redact::{redact_in_text, redact_url};

/// How long `list` waits for more retained messages after the last one.
const LIST_QUIET: Duration = Duration::from_millis(700);
/// Most messages `list` reads (a bound on a hostile or huge broker state).
const LIST_MAX: usize = 1_000_000;

/// `fleet add`: the entry, from options or a JSON file.
#[derive(Debug, Clone, Default)]
pub struct AddArgs {
    pub id: Option<String>,
    pub url: Option<String>,
    pub credentials: Option<String>,
    pub looped: bool,
    pub pace: Option<String>,
    pub rtsp_transport: Option<String>,
    pub max_bandwidth: Option<u64>,
    /// A JSON file holding the whole entry (`-`: standard input).
    pub entry: Option<std::path::PathBuf>,
}

/// The fleet `name` or the configuration's `[fleet] name`.
fn fleet_name<'a>(loaded: &'a Loaded, name: Option<&'a str>) -> Result<&'a str> {
    name.or(loaded.cfg.fleet.as_ref().map(|f| f.name.as_str()))
        .ok_or_else(|| {
            Error::Config(format!(
                "{}: no [fleet] name: give --fleet NAME",
                loaded.path.display()
            ))
        })
}

/// The entry of `args` as the JSON that goes into the catalog.
fn entry_json(args: &AddArgs) -> Result<Value> {
    if let Some(path) = &args.entry {
        if args.id.is_some() || args.url.is_some() {
            return Err(Error::Config(
                "fleet add: give either --entry FILE or ID and URL, not both".into(),
            ));
        }
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        }
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        return serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: not JSON: {e}", path.display())));
    }
    let (Some(id), Some(url)) = (&args.id, &args.url) else {
        return Err(Error::Config(
            "fleet add: give the stream's ID and URL (or --entry FILE)".into(),
        ));
    };
    let mut e = json!({"id": id, "url": url});
    let o = e
        .as_object_mut()
        .ok_or_else(|| Error::Other("entry".into()))?;
    if let Some(c) = &args.credentials {
        o.insert("credentials".into(), json!(c));
    }
    if args.looped {
        o.insert("loop".into(), json!(true));
    }
    if let Some(p) = &args.pace {
        o.insert("pace".into(), json!(p));
    }
    if let Some(t) = &args.rtsp_transport {
        o.insert("rtsp_transport".into(), json!(t));
    }
    if let Some(b) = args.max_bandwidth {
        o.insert("max_bandwidth".into(), json!(b));
    }
    Ok(e)
}

/// Validates an entry as every member will: its structure, then its settings against
/// this configuration. A credential name this file does not define is only a warning
/// (the operator's file need not hold the probes' secrets).
fn validate(loaded: &Loaded, id: &str, payload: &[u8]) -> Result<StreamConfig> {
    let entry =
        parse_entry(id, payload).map_err(|m| Error::Config(format!("stream `{id}`: {m}")))?;
    let mut check = entry.clone();
    if let Some(c) = &entry.credentials {
        if !loaded.has_credentials(c) {
            tracing::warn!(
                config = %loaded.path.display(),
                "[credentials.{c}] is not in this file: every member of the fleet must define it"
            );
            check.credentials = None;
        }
    }
    loaded
        .plan_entry(&check)
        .map_err(|m| Error::Config(format!("stream `{id}`: {m}")))?;
    Ok(entry)
}

/// `fleet add`: validates the entry and publishes it (retained); the line to print.
pub async fn add(config: &Path, fleet: Option<&str>, args: &AddArgs) -> Result<String> {
    let loaded = crate::app::agent::config::load(config)?;
    let name = fleet_name(&loaded, fleet)?;
    let value = entry_json(args)?;
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Config("fleet add: the entry has no string `id`".into()))?
        .to_string();
    let payload = value.to_string().into_bytes();
    let entry = validate(&loaded, &id, &payload)?;
    let settings = loaded.mqtt_settings()?;
    let topic = format!("{}{id}", catalog_prefix(&settings.prefix, name));
    let mut c = Conn::open(&settings).await?;
    c.publish_retained(vec![(topic.clone(), payload)]).await?;
    c.close().await;
    Ok(format!(
        "fleet {name}: added stream `{id}` ({}) on {topic}",
        redact_url(&entry.url)
    ))
}

/// `fleet remove`: clears the entry and its error topic; the line to print.
pub async fn remove(config: &Path, fleet: Option<&str>, id: &str) -> Result<String> {
    let loaded = crate::app::agent::config::load(config)?;
    let name = fleet_name(&loaded, fleet)?;
    if !crate::app::agent::config::valid_id(id) {
        return Err(Error::Config(format!(
            "fleet remove: `{id}` is not a stream id (letters, digits, '-', '_', '.')"
        )));
    }
    let settings = loaded.mqtt_settings()?;
    let topic = format!("{}{id}", catalog_prefix(&settings.prefix, name));
    let mut c = Conn::open(&settings).await?;
    c.publish_retained(vec![
        (topic.clone(), Vec::new()),
        (format!("{topic}/error"), Vec::new()),
    ])
    .await?;
    c.close().await;
    Ok(format!("fleet {name}: removed stream `{id}` ({topic})"))
}

/// `fleet list`: the catalog with who watches each stream and its error, and the
/// members; text or one JSON document.
pub async fn list(config: &Path, fleet: Option<&str>, as_json: bool) -> Result<String> {
    let loaded = crate::app::agent::config::load(config)?;
    let name = fleet_name(&loaded, fleet)?;
    let settings = loaded.mqtt_settings()?;
    let cat = catalog_prefix(&settings.prefix, name);
    let mut c = Conn::open(&settings).await?;
    let msgs = c
        .read_retained(vec![
            format!("{cat}#"),
            format!("{}/+/status", settings.prefix),
        ])
        .await?;
    c.close().await;
    let mut entries: BTreeMap<String, Value> = BTreeMap::new();
    let mut errors: BTreeMap<String, Value> = BTreeMap::new();
    let mut members: BTreeMap<String, Status> = BTreeMap::new();
    for (topic, payload) in msgs {
        if payload.is_empty() {
            continue;
        }
        if let Some(rest) = topic.strip_prefix(&cat) {
            match rest.split_once('/') {
                None => {
                    let v = match parse_entry(rest, &payload) {
                        Ok(e) => json!({
                            "url": redact_url(&e.url),
                            "credentials": e.credentials,
                        }),
                        Err(m) => json!({"invalid": m}),
                    };
                    entries.insert(rest.to_string(), v);
                }
                Some((id, "error")) => {
                    let v = serde_json::from_slice::<Value>(&payload)
                        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&payload)));
                    errors.insert(id.to_string(), v);
                }
                Some(_) => {}
            }
        } else if let Ok(s) = serde_json::from_slice::<Status>(&payload) {
            if s.status == Presence::Online && s.fleet.as_deref() == Some(name) {
                members.insert(s.probe.clone(), s);
            }
        }
    }
    let watched_by = |id: &str| -> Vec<&str> {
        members
            .values()
            .filter(|m| m.streams.iter().any(|s| s == id))
            .map(|m| m.probe.as_str())
            .collect()
    };
    if as_json {
        let streams: Vec<Value> = entries
            .iter()
            .map(|(id, e)| {
                let mut v = e.clone();
                if let Some(o) = v.as_object_mut() {
                    o.insert("id".into(), json!(id));
                    o.insert("watched_by".into(), json!(watched_by(id)));
                    o.insert(
                        "error".into(),
                        errors.get(id).cloned().unwrap_or(Value::Null),
                    );
                }
                v
            })
            .collect();
        let ms: Vec<Value> = members
            .values()
            .map(|m| json!({"probe": m.probe, "capacity": m.capacity, "streams": m.streams}))
            .collect();
        return Ok(json!({"fleet": name, "members": ms, "streams": streams}).to_string());
    }
    let mut out = format!(
        "fleet {name}: {} members online, {} streams\n",
        members.len(),
        entries.len()
    );
    for m in members.values() {
        out.push_str(&format!(
            "  member {} capacity {} watching {}\n",
            m.probe,
            m.capacity.unwrap_or(0),
            m.streams.len()
        ));
    }
    for (id, e) in &entries {
        let by = watched_by(id);
        let what = match e.get("invalid").and_then(Value::as_str) {
            Some(m) => format!("INVALID ({m})"),
            None => e
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        };
        out.push_str(&format!(
            "  stream {id}: {what}; watched by {}",
            if by.is_empty() {
                "nobody".to_string()
            } else {
                by.join(", ")
            }
        ));
        if let Some(err) = errors.get(id) {
            let msg = err.get("error").and_then(Value::as_str).unwrap_or("");
            let probe = err.get("probe").and_then(Value::as_str).unwrap_or("?");
            out.push_str(&format!("; error from {probe}: {msg}"));
        }
        out.push('\n');
    }
    Ok(out.trim_end().to_string())
}

/// One short MQTT session.
struct Conn {
    client: AsyncClient,
    el: EventLoop,
    timeout: Duration,
    endpoint: String,
}

impl Conn {
    async fn open(settings: &MqttSettings) -> Result<Conn> {
        let id = format!("{}-fleet-{}", settings.client_id, std::process::id());
        let mut opts = client_options(settings, &id);
        opts.set_clean_session(true);
        let (client, mut el) = AsyncClient::new(opts, 64);
        el.network_options
            .set_connection_timeout(settings.connect_timeout.as_secs().max(1));
        let mut c = Conn {
            client,
            el,
            timeout: settings.connect_timeout.max(Duration::from_secs(1)),
            endpoint: format!("{}:{}", settings.host, settings.port),
        };
        c.until(|p| matches!(p, Packet::ConnAck(_)).then_some(()))
            .await?;
        Ok(c)
    }

    /// Polls until `f` returns something, within the timeout.
    async fn until<T>(&mut self, mut f: impl FnMut(&Packet) -> Option<T>) -> Result<T> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.el.poll())
                .await
                .map_err(|_| {
                    Error::Other(format!(
                        "MQTT broker {}: no answer within {:?}",
                        self.endpoint, self.timeout
                    ))
                })?
                .map_err(|e| {
                    Error::Other(format!(
                        "MQTT broker {}: {}",
                        self.endpoint,
                        redact_in_text(&e.to_string())
                    ))
                })?;
            if let MqttEvent::Incoming(p) = ev {
                if let Some(t) = f(&p) {
                    return Ok(t);
                }
            }
        }
    }

    /// Publishes retained QoS 1 messages and waits for every acknowledgement.
    async fn publish_retained(&mut self, msgs: Vec<(String, Vec<u8>)>) -> Result<()> {
        let n = msgs.len();
        for (topic, payload) in msgs {
            self.client
                .publish(topic, QoS::AtLeastOnce, true, payload)
                .await
                .map_err(|e| Error::Other(format!("MQTT publish: {e}")))?;
        }
        let mut acked = 0;
        self.until(|p| {
            if matches!(p, Packet::PubAck(_)) {
                acked += 1;
            }
            (acked == n).then_some(())
        })
        .await
    }

    /// Subscribes to `filters` and returns what arrives until the broker is quiet.
    async fn read_retained(&mut self, filters: Vec<String>) -> Result<Vec<(String, Vec<u8>)>> {
        let filters = filters
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtMostOnce));
        self.client
            .subscribe_many(filters)
            .await
            .map_err(|e| Error::Other(format!("MQTT subscribe: {e}")))?;
        self.until(|p| matches!(p, Packet::SubAck(_)).then_some(()))
            .await?;
        let mut out = Vec::new();
        while out.len() < LIST_MAX {
            match tokio::time::timeout(LIST_QUIET, self.el.poll()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    return Err(Error::Other(format!(
                        "MQTT broker {}: {}",
                        self.endpoint,
                        redact_in_text(&e.to_string())
                    )))
                }
                Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => {
                    out.push((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(Ok(_)) => {}
            }
        }
        Ok(out)
    }

    async fn close(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.el.poll()).await;
    }
}
