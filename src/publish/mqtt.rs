//! MQTT delivery: events leave the [`Spool`] only when the broker's PUBACK arrives.
//!
//! Two tasks share one [`State`] behind a mutex:
//!
//! * the **driver** owns rumqttc's `EventLoop` and only polls it: it learns which packet
//!   id each publish got (`Outgoing::Publish`), acknowledges spool records on `PubAck`,
//!   and on a connection error throws away rumqttc's own retransmission queue (we resend
//!   from the spool instead) and sleeps a capped, jittered backoff (rumqttc itself would
//!   reconnect at once, in a loop);
//! * the **feeder** publishes: on every new connection the retained `online` status
//!   first, then spooled records in order, at most [`WINDOW`] unacknowledged at a time.
//!   It never publishes from the driver task (rumqttc's request channel is drained only
//!   by the driver, so that would deadlock).
//!
//! Publishes go through `try_publish` *while the state lock is held*, and the driver
//! drains rumqttc's request channel under the same lock on disconnect, so the FIFO of
//! "which record was sent next" always matches the order in which rumqttc assigns
//! packet ids. With `WINDOW` far below rumqttc's in-flight limit, packet ids never
//! collide.
//!
//! The session is persistent (`clean_session = false`, fixed client id); after a
//! reconnect every unacknowledged record is sent again, so delivery is at least once
//! and the event `id` lets subscribers drop duplicates.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
};

use super::spool::{Spool, SpoolStats};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ingest::live::Backoff;
use crate::redact::Secret;

/// Unacknowledged QoS 1 publishes allowed at once.
pub const WINDOW: usize = 32;
/// rumqttc's in-flight limit (packet ids cycle over it; far above `WINDOW`).
const INFLIGHT: u16 = 512;
/// Best-effort (QoS 0) messages, such as stats, queued while waiting for a connection.
/// Policy: drop-oldest, counted.
const QOS0_QUEUE: usize = 64;

/// Where and how to connect.
#[derive(Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// TLS client configuration for `mqtts://` (certificates always verified).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub keepalive: Duration,
    pub connect_timeout: Duration,
    /// Reconnect backoff: first delay and cap, seconds.
    pub backoff_initial: f64,
    pub backoff_max: f64,
    /// `{prefix}/{probe_id}` of every topic.
    pub prefix: String,
    pub probe_id: String,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

impl MqttSettings {
    /// `{prefix}/{probe_id}/{stream}/events`.
    pub fn events_topic(&self, stream: &str) -> String {
        format!("{}/{}/{stream}/events", self.prefix, self.probe_id)
    }
    /// `{prefix}/{probe_id}/{stream}/stats`.
    pub fn stats_topic(&self, stream: &str) -> String {
        format!("{}/{}/{stream}/stats", self.prefix, self.probe_id)
    }
    /// `{prefix}/{probe_id}/stats` (the agent's own counters).
    pub fn agent_stats_topic(&self) -> String {
        format!("{}/{}/stats", self.prefix, self.probe_id)
    }
    /// `{prefix}/{probe_id}/status` (retained).
    pub fn status_topic(&self) -> String {
        format!("{}/{}/status", self.prefix, self.probe_id)
    }
}

/// What a sent QoS 1 publish was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Record(u64),
    Online,
    Offline,
}

/// Counters of the broker link.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LinkStats {
    pub connected: bool,
    /// Successful connections (CONNACK accepted).
    pub connects: u64,
    /// Connection attempts or sessions that failed.
    pub connection_errors: u64,
    /// The last connection error (never contains a secret).
    pub last_error: Option<String>,
    /// QoS 1 publishes handed to the client (resends included).
    pub published: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Best-effort messages (stats) dropped while the broker was unreachable.
    pub qos0_dropped: u64,
}

/// A snapshot for the agent's stats.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxStats {
    pub pending: usize,
    pub pending_bytes: u64,
    pub spool: SpoolStats,
    pub link: LinkStats,
}

struct State {
    spool: Spool,
    connected: bool,
    epoch: u64,
    /// Sent publishes whose packet id rumqttc has not reported yet, in send order.
    fifo: VecDeque<Slot>,
    inflight: HashMap<u16, Slot>,
    outstanding: usize,
    /// Next spool sequence number to send in this connection.
    cursor: u64,
    online: Vec<u8>,
    online_epoch: u64,
    offline: Option<Vec<u8>>,
    offline_sent_epoch: u64,
    offline_acked: bool,
    /// A clean DISCONNECT was requested: the connection closing is not an error.
    closing: bool,
    qos0: VecDeque<(String, Vec<u8>)>,
    link: LinkStats,
}

struct Shared {
    st: Mutex<State>,
    /// Wakes the feeder (new record, new connection, an ack freed the window).
    wake: tokio::sync::Notify,
    /// Wakes whoever waits for acknowledgements (shutdown flush).
    progress: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that matters more than stopping delivery would: keep going.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The publishing side of the agent. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    client: AsyncClient,
    settings: Arc<MqttSettings>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// What shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Events still unacknowledged (they stay in the spool for the next start).
    pub pending: usize,
    /// Whether the retained `offline` status was acknowledged.
    pub offline_published: bool,
}

impl Publisher {
    /// Starts the driver and feeder tasks. `online` and `offline` are the retained
    /// status payloads (`offline` is also the Last Will).
    pub fn start(
        settings: MqttSettings,
        spool: Spool,
        online: Vec<u8>,
        offline: Vec<u8>,
    ) -> Result<Publisher> {
        let mut opts = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
        opts.set_clean_session(false)
            .set_keep_alive(settings.keepalive.max(Duration::from_secs(1)))
            .set_inflight(INFLIGHT)
            .set_request_channel_capacity(WINDOW + QOS0_QUEUE + 8)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_last_will(LastWill::new(
                settings.status_topic(),
                offline.clone(),
                QoS::AtLeastOnce,
                true,
            ));
        if let (Some(u), Some(p)) = (&settings.username, &settings.password) {
            opts.set_credentials(u.clone(), p.expose().to_string());
        } else if let Some(u) = &settings.username {
            opts.set_credentials(u.clone(), String::new());
        }
        if let Some(tls) = &settings.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, WINDOW + QOS0_QUEUE + 8);
        eventloop
            .network_options
            .set_connection_timeout(settings.connect_timeout.as_secs().max(1));
        let cursor = spool.head();
        let shared = Arc::new(Shared {
            st: Mutex::new(State {
                spool,
                connected: false,
                epoch: 0,
                fifo: VecDeque::new(),
                inflight: HashMap::new(),
                outstanding: 0,
                cursor,
                online,
                online_epoch: 0,
                offline: None,
                offline_sent_epoch: 0,
                offline_acked: false,
                closing: false,
                qos0: VecDeque::new(),
                link: LinkStats::default(),
            }),
            wake: tokio::sync::Notify::new(),
            progress: tokio::sync::Notify::new(),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let settings = Arc::new(settings);
        tokio::spawn(drive(
            eventloop,
            shared.clone(),
            stop_rx.clone(),
            settings.clone(),
        ));
        tokio::spawn(feed(
            client.clone(),
            shared.clone(),
            stop_rx,
            settings.clone(),
        ));
        Ok(Publisher {
            shared,
            client,
            settings,
            stop,
        })
    }

    pub fn settings(&self) -> &MqttSettings {
        &self.settings
    }

    /// Queues an event for its stream's `events` topic (spooled; sent when connected).
    pub fn event(&self, ev: &Event) {
        let topic = self.settings.events_topic(&ev.stream);
        self.shared
            .lock()
            .spool
            .push(&topic, ev.to_json().as_bytes());
        self.shared.wake.notify_one();
    }

    /// Queues a best-effort (QoS 0, not spooled) message such as stats.
    pub fn best_effort(&self, topic: String, payload: Vec<u8>) {
        let mut st = self.shared.lock();
        if !st.connected {
            st.link.qos0_dropped += 1;
            return;
        }
        if st.qos0.len() >= QOS0_QUEUE {
            st.qos0.pop_front();
            st.link.qos0_dropped += 1;
        }
        st.qos0.push_back((topic, payload));
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Replaces the retained `online` payload (published again on the next connection
    /// and now if connected).
    pub fn set_online(&self, online: Vec<u8>) {
        let mut st = self.shared.lock();
        st.online = online;
        st.online_epoch = 0;
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Counters now.
    pub fn stats(&self) -> OutboxStats {
        let st = self.shared.lock();
        OutboxStats {
            pending: st.spool.len(),
            pending_bytes: st.spool.bytes(),
            spool: st.spool.stats(),
            link: st.link.clone(),
        }
    }

    /// Makes spooled records durable (fsync). Called periodically by the agent.
    pub async fn sync(&self) {
        let shared = self.shared.clone();
        let r = tokio::task::spawn_blocking(move || shared.lock().spool.sync()).await;
        if let Ok(Err(e)) = r {
            tracing::error!(error = %e, "spool: sync failed");
        }
    }

    /// Waits until every spooled event is acknowledged or `timeout` passes; then
    /// publishes the retained `offline` status, disconnects and stops the tasks.
    pub async fn shutdown(self, offline: Vec<u8>, timeout: Duration) -> ShutdownReport {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.progress.notified();
            if self.shared.lock().spool.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        {
            let mut st = self.shared.lock();
            st.offline = Some(offline);
        }
        self.shared.wake.notify_one();
        let offline_deadline = deadline.max(tokio::time::Instant::now() + Duration::from_secs(1));
        loop {
            let notified = self.shared.progress.notified();
            {
                let st = self.shared.lock();
                // Not connected: the broker publishes the Last Will (`offline`) itself
                // once it notices; there is nothing to wait for.
                if st.offline_acked || !st.connected {
                    break;
                }
            }
            if tokio::time::timeout_at(offline_deadline, notified)
                .await
                .is_err()
            {
                break;
            }
        }
        let (pending, offline_published) = {
            let mut st = self.shared.lock();
            if let Err(e) = st.spool.sync() {
                tracing::error!(error = %e, "spool: final sync failed");
            }
            (st.spool.len(), st.offline_acked)
        };
        if offline_published {
            self.shared.lock().closing = true;
            let _ = self.client.try_disconnect();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.stop.send(true);
        ShutdownReport {
            pending,
            offline_published,
        }
    }
}

/// Describes a connection error without secrets (rumqttc's errors carry none; the
/// refusal codes get words).
fn describe(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectReturnCode as C;
    match e {
        rumqttc::ConnectionError::ConnectionRefused(C::BadUserNamePassword) => {
            "broker refused the connection: bad user name or password".into()
        }
        rumqttc::ConnectionError::ConnectionRefused(C::NotAuthorized) => {
            "broker refused the connection: not authorized".into()
        }
        rumqttc::ConnectionError::ConnectionRefused(c) => {
            format!("broker refused the connection: {c:?}")
        }
        rumqttc::ConnectionError::NetworkTimeout => {
            "no answer from the broker within the connect timeout".into()
        }
        other => crate::redact::redact_in_text(&other.to_string()),
    }
}

async fn drive(
    mut el: EventLoop,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    settings: Arc<MqttSettings>,
) {
    let mut backoff = Backoff::new(settings.backoff_initial, settings.backoff_max);
    let endpoint = format!("{}:{}", settings.host, settings.port);
    loop {
        let ev = tokio::select! {
            biased;
            _ = stop.changed() => return,
            ev = el.poll() => ev,
        };
        match ev {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                {
                    let mut st = shared.lock();
                    st.connected = true;
                    st.epoch += 1;
                    st.fifo.clear();
                    st.inflight.clear();
                    st.outstanding = 0;
                    st.cursor = 0;
                    st.link.connected = true;
                    st.link.connects += 1;
                    tracing::info!(
                        broker = %endpoint,
                        session_present = ack.session_present,
                        pending = st.spool.len(),
                        "connected to the MQTT broker"
                    );
                    let dropped = st.spool.stats().dropped_full;
                    if dropped > 0 {
                        tracing::warn!(
                            dropped,
                            "events were dropped while the broker was unreachable (spool full, policy drop-oldest)"
                        );
                    }
                }
                backoff.reset();
                shared.wake.notify_one();
            }
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                let mut st = shared.lock();
                if let Some(slot) = st.fifo.pop_front() {
                    st.inflight.insert(pkid, slot);
                }
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                {
                    let mut st = shared.lock();
                    if let Some(slot) = st.inflight.remove(&ack.pkid) {
                        st.outstanding = st.outstanding.saturating_sub(1);
                        st.link.acked += 1;
                        match slot {
                            Slot::Record(seq) => st.spool.ack(seq),
                            Slot::Offline => st.offline_acked = true,
                            Slot::Online => {}
                        }
                    }
                }
                shared.wake.notify_one();
                shared.progress.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => {
                let msg = describe(&e);
                {
                    let mut st = shared.lock();
                    // Throw away rumqttc's retransmission queue and any request still
                    // in its channel: everything unacknowledged is resent from the
                    // spool after the next CONNACK.
                    el.clean();
                    el.pending.clear();
                    st.connected = false;
                    st.fifo.clear();
                    st.inflight.clear();
                    st.outstanding = 0;
                    st.link.connected = false;
                    st.link.connection_errors += 1;
                    st.link.last_error = Some(msg.clone());
                }
                if *stop.borrow() || shared.lock().closing {
                    return;
                }
                let delay = backoff.next_delay();
                tracing::warn!(
                    broker = %endpoint,
                    error = %msg,
                    attempt = backoff.attempt(),
                    retry_in_s = format!("{:.1}", delay.as_secs_f64()),
                    "MQTT broker unreachable; events stay in the spool"
                );
                tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn feed(
    client: AsyncClient,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    settings: Arc<MqttSettings>,
) {
    let status_topic = settings.status_topic();
    loop {
        {
            let mut st = shared.lock();
            if st.connected {
                pump(&client, &mut st, &status_topic);
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Publishes what the window allows. Called with the lock held.
fn pump(client: &AsyncClient, st: &mut State, status_topic: &str) {
    if st.online_epoch != st.epoch && st.offline.is_none() {
        if client
            .try_publish(status_topic, QoS::AtLeastOnce, true, st.online.clone())
            .is_err()
        {
            return;
        }
        st.fifo.push_back(Slot::Online);
        st.outstanding += 1;
        st.online_epoch = st.epoch;
    }
    while st.outstanding < WINDOW {
        let Some(rec) = st.spool.next_from(st.cursor) else {
            break;
        };
        let (seq, topic, payload) = (rec.seq, rec.topic.clone(), rec.payload.clone());
        if client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .is_err()
        {
            break;
        }
        st.fifo.push_back(Slot::Record(seq));
        st.cursor = seq + 1;
        st.outstanding += 1;
        st.link.published += 1;
    }
    while let Some((topic, payload)) = st.qos0.pop_front() {
        if client
            .try_publish(topic, QoS::AtMostOnce, false, payload)
            .is_err()
        {
            st.link.qos0_dropped += 1;
            break;
        }
    }
    if let Some(off) = &st.offline {
        // Only once everything else is out (or shutdown gave up waiting).
        if st.offline_sent_epoch != st.epoch
            && st.outstanding < WINDOW
            && client
                .try_publish(status_topic, QoS::AtLeastOnce, true, off.clone())
                .is_ok()
        {
            st.fifo.push_back(Slot::Offline);
            st.outstanding += 1;
            st.offline_sent_epoch = st.epoch;
        }
    }
}

/// Builds the rustls configuration for `mqtts://`: the CA file's certificates (or the
/// system's roots), an optional client certificate. Verification is always on.
pub fn tls_config(
    ca_file: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::Config(format!("mqtt.ca_file {}: {e}", path.display())))?;
            for c in certs {
                let c =
                    c.map_err(|e| Error::Config(format!("mqtt.ca_file {}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| Error::Config(format!("mqtt.ca_file {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(Error::Config(format!(
                    "mqtt.ca_file {}: no certificate in the file",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(Error::Config(
                    "mqtts://: no system CA certificates found; set mqtt.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| Error::Config(format!("mqtt.client_cert {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::Config(format!("mqtt.client_key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Config(format!("mqtt.client_cert/client_key: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}
