//! MQTT delivery: events leave the [`Spool`] only when the broker's PUBACK arrives.
//!
//! Two tasks share one `State` behind a mutex:
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
//! A record the broker refuses by dropping the connection (MQTT 3.1.1 has no other way
//! to say no: a packet over its size limit, some ACL setups) would otherwise be resent
//! first after every reconnect and block every stream behind it. When the connection was
//! closed by the broker [`REJECT_AFTER`] times in a row with the same record as the
//! oldest one sent and not acknowledged (and nothing after it acknowledged), that record
//! is set aside: taken out of the spool, counted in `link.rejected`, logged once with
//! its topic and size (never its payload). A record too large for the client's own
//! packet limit is set aside at once, unsent.
//!
//! The session is persistent (`clean_session = false`, fixed client id); after a
//! reconnect every unacknowledged record is sent again, so delivery is at least once
//! and the event `id` lets subscribers drop duplicates.
//!
//! Owns: the broker connection (rumqttc's client and event loop), the shared state that
//! maps packet ids to spool records, the window, the rejection of refused records and the
//! link's counters. Where and how to connect ([`MqttSettings`], [`tls_config`]) lives in
//! `settings`.
//! May not touch: the spool's files (only the [`Spool`] API), the event schema (events are
//! serialised by [`Event`]).

mod settings;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
};

use super::spool::{Spool, SpoolStats};
use crate::backoff::Backoff;
use crate::error::Result;
use crate::event::Event;
pub use settings::{tls_config, MqttSettings};

/// Unacknowledged QoS 1 publishes allowed at once.
pub const WINDOW: usize = 32;
/// rumqttc's in-flight limit (packet ids cycle over it; far above `WINDOW`).
const INFLIGHT: u16 = 512;
/// Consecutive connections the broker closed with the same record oldest in flight
/// before that record is set aside as rejected.
pub const REJECT_AFTER: u32 = 3;
/// Largest MQTT packet sent or accepted.
const MAX_PACKET: usize = 1 << 20;
/// Bytes of a QoS 1 PUBLISH besides topic and payload (fixed header with a 4-byte
/// remaining length, topic length, packet id), rounded up.
const PUBLISH_OVERHEAD: usize = 16;
/// Best-effort (QoS 0) messages, such as stats, queued while waiting for a connection.
/// Policy: drop-oldest, counted.
const QOS0_QUEUE: usize = 64;
/// Default bound on thumbnails waiting for the broker, bytes (see
/// [`Publisher::set_thumb_budget`]).
pub const THUMB_BUDGET: usize = 1 << 20;
/// Most retained messages kept (see [`Publisher::retain`]); a new topic beyond it is
/// dropped, counted and logged.
pub const RETAINED_MAX: usize = 4096;
/// Retained messages in flight at once: at most half of the window, so that events
/// always have the other half.
const RETAINED_WINDOW: usize = WINDOW / 2;
/// Messages received on a subscription of [`Publisher::subscribe`] waiting for their
/// reader, by default. Policy: drop-newest, counted, and the subscription is sent again
/// (the broker then re-sends every retained message it matches, so a reader of retained
/// state catches up).
pub const INCOMING_QUEUE: usize = 256;
/// Most subscriptions ([`Publisher::subscribe`] calls) at once.
const MAX_SUBSCRIPTIONS: usize = 8;

/// A message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The broker's retain flag: set for retained messages sent because of a
    /// (re)subscription, clear for messages published while subscribed.
    pub retained: bool,
}

/// One [`Publisher::subscribe`] call: its filters, the connection it was last sent on,
/// and where matching messages go.
struct Sub {
    filters: Vec<String>,
    epoch: u64,
    tx: tokio::sync::mpsc::Sender<Incoming>,
    /// Told each time the filters are sent to the broker (retained messages follow).
    sent: tokio::sync::watch::Sender<u64>,
}

/// The client options of `settings` (broker, TLS, credentials, keepalive) for a
/// connection with `client_id`: the agent's publisher and `vqprobe fleet` use the same.
pub fn client_options(settings: &MqttSettings, client_id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, &settings.host, settings.port);
    opts.set_keep_alive(settings.keepalive.max(Duration::from_secs(1)));
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
    opts
}

/// What a sent QoS 1 publish was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Record(u64),
    /// A thumbnail, by its number in [`State::thumbs`].
    Thumb(u64),
    /// A retained message, by its generation (see [`State::retained`]).
    Retained(u64),
    Online,
    Offline,
}

/// A thumbnail waiting for its PUBACK (memory only: thumbnails are not spooled).
struct ThumbMsg {
    n: u64,
    topic: String,
    jpeg: std::sync::Arc<[u8]>,
    /// The connection it was last sent on (resent on a new one until acknowledged).
    sent_epoch: Option<u64>,
}

/// Counters of the thumbnails (`outbox.thumbs` in the agent's stats).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ThumbStats {
    /// Waiting for the broker now, and their bytes.
    pub pending: usize,
    pub pending_bytes: usize,
    /// Acknowledged by the broker.
    pub delivered: u64,
    /// Dropped to stay within the byte budget (the oldest first), or larger than it.
    /// Events are never dropped for a thumbnail: they have their own spool.
    pub dropped: u64,
}

/// A retained message (memory only; see [`Publisher::retain`]).
struct RetainedMsg {
    payload: Vec<u8>,
    /// Changes with every new payload (unique across topics).
    generation: u64,
    /// In [`State::retained_queue`] (to be sent on this connection).
    queued: bool,
}

/// Counters of the retained messages (`outbox.retained` in the agent's stats).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RetainedStats {
    /// Topics kept now (sent again after every reconnection), and those waiting to be
    /// sent on this connection.
    pub topics: usize,
    pub pending: usize,
    /// Acknowledged by the broker.
    pub delivered: u64,
    /// New topics refused beyond [`RETAINED_MAX`], and messages received on the
    /// agent's subscriptions dropped because their reader was behind.
    pub dropped: u64,
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
    /// Events set aside because the broker refused them (it closed the connection each
    /// time it received one) or they exceed the largest packet (1 MiB).
    pub rejected: u64,
}

/// A snapshot for the agent's stats.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxStats {
    pub pending: usize,
    pub pending_bytes: u64,
    pub spool: SpoolStats,
    pub link: LinkStats,
    pub thumbs: ThumbStats,
    pub retained: RetainedStats,
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
    /// Thumbnails to send (oldest first), their bytes, the byte budget, the next number.
    thumbs: VecDeque<ThumbMsg>,
    thumb_bytes: usize,
    thumb_budget: usize,
    thumb_n: u64,
    thumb_stats: ThumbStats,
    /// Retained messages by topic (latest payload only), the topics to send on this
    /// connection (in order), the generation counter, and the generations in flight.
    retained: HashMap<String, RetainedMsg>,
    retained_queue: VecDeque<String>,
    retained_gen: u64,
    retained_inflight: HashMap<u64, String>,
    retained_stats: RetainedStats,
    /// Subscriptions (QoS 0) sent again on every connection.
    subs: Vec<Sub>,
    link: LinkStats,
    /// Highest record acknowledged in the current connection.
    acked_max: Option<u64>,
    /// The record oldest in flight when the broker closed the connection, and in how
    /// many consecutive such closings.
    suspect: Option<(u64, u32)>,
}

impl State {
    /// Sets the retained message of `topic` (see [`Publisher::retain`]).
    fn set_retained(&mut self, topic: String, payload: Vec<u8>) {
        if self
            .retained
            .get(&topic)
            .is_some_and(|m| m.payload == payload)
        {
            return;
        }
        if !self.retained.contains_key(&topic) && self.retained.len() >= RETAINED_MAX {
            self.retained_stats.dropped += 1;
            tracing::warn!(
                %topic,
                max = RETAINED_MAX,
                "MQTT: too many retained messages; this one is dropped (counted in outbox.retained.dropped)"
            );
            return;
        }
        self.retained_gen += 1;
        let generation = self.retained_gen;
        let m = self
            .retained
            .entry(topic.clone())
            .or_insert_with(|| RetainedMsg {
                payload: Vec::new(),
                generation,
                queued: false,
            });
        m.payload = payload;
        m.generation = generation;
        if !m.queued {
            m.queued = true;
            self.retained_queue.push_back(topic);
        }
    }

    /// Queues every retained message to be sent again (a new connection, or a
    /// subscriber that asked for them). Sorted: the same order every time.
    fn requeue_retained(&mut self) {
        let mut topics: Vec<String> = self.retained.keys().cloned().collect();
        topics.sort();
        for m in self.retained.values_mut() {
            m.queued = true;
        }
        self.retained_queue = topics.into();
    }

    /// Queues a thumbnail within the byte budget (see [`Publisher::thumb`]).
    fn queue_thumb(&mut self, topic: String, jpeg: std::sync::Arc<[u8]>) {
        if jpeg.len() + topic.len() + PUBLISH_OVERHEAD > MAX_PACKET.min(self.thumb_budget) {
            self.thumb_stats.dropped += 1;
            return;
        }
        while self.thumb_bytes + jpeg.len() > self.thumb_budget {
            let Some(old) = self.thumbs.pop_front() else {
                break;
            };
            self.thumb_bytes -= old.jpeg.len();
            self.thumb_stats.dropped += 1;
        }
        self.thumb_n += 1;
        self.thumb_bytes += jpeg.len();
        self.thumbs.push_back(ThumbMsg {
            n: self.thumb_n,
            topic,
            jpeg,
            sent_epoch: None,
        });
    }

    fn new(spool: Spool, online: Vec<u8>) -> State {
        let cursor = spool.head();
        State {
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
            thumbs: VecDeque::new(),
            thumb_bytes: 0,
            thumb_budget: THUMB_BUDGET,
            thumb_n: 0,
            thumb_stats: ThumbStats::default(),
            retained: HashMap::new(),
            retained_queue: VecDeque::new(),
            retained_gen: 0,
            retained_inflight: HashMap::new(),
            retained_stats: RetainedStats::default(),
            subs: Vec::new(),
            link: LinkStats::default(),
            acked_max: None,
            suspect: None,
        }
    }
}

struct Shared {
    st: Mutex<State>,
    /// Wakes the feeder (new record, new connection, an ack freed the window).
    wake: tokio::sync::Notify,
    /// Wakes whoever waits for acknowledgements (shutdown flush).
    progress: tokio::sync::Notify,
    /// Successful connections so far.
    connects: tokio::sync::watch::Sender<u64>,
    /// One spool sync at a time (its fsyncs run without `st` held).
    sync_gate: Mutex<()>,
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
    /// Set when the driver or the feeder ended while no stop was requested.
    dead: tokio::sync::watch::Receiver<Option<String>>,
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
        let mut opts = client_options(&settings, &settings.client_id);
        opts.set_clean_session(false)
            .set_inflight(INFLIGHT)
            .set_request_channel_capacity(WINDOW + QOS0_QUEUE + 8)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_last_will(LastWill::new(
                settings.status_topic(),
                offline.clone(),
                QoS::AtLeastOnce,
                true,
            ));
        let (client, mut eventloop) = AsyncClient::new(opts, WINDOW + QOS0_QUEUE + 8);
        eventloop
            .network_options
            .set_connection_timeout(settings.connect_timeout.as_secs().max(1));
        let shared = Arc::new(Shared {
            st: Mutex::new(State::new(spool, online)),
            wake: tokio::sync::Notify::new(),
            progress: tokio::sync::Notify::new(),
            connects: tokio::sync::watch::Sender::new(0),
            sync_gate: Mutex::new(()),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let settings = Arc::new(settings);
        let driver = tokio::spawn(drive(
            eventloop,
            shared.clone(),
            stop_rx.clone(),
            settings.clone(),
        ));
        let feeder = tokio::spawn(feed(
            client.clone(),
            shared.clone(),
            stop_rx.clone(),
            settings.clone(),
        ));
        // Supervision: without the driver or the feeder nothing is delivered any more
        // while the rest of the agent looks healthy. Whoever holds the publisher learns
        // of it through `failed()` (the agent then exits with failure: systemd restarts
        // it, and the spool still holds every undelivered event).
        let (dead_tx, dead) = tokio::sync::watch::channel(None);
        let sup_shared = shared.clone();
        tokio::spawn(async move {
            let (task, r) = tokio::select! {
                r = driver => ("driver", r),
                r = feeder => ("feeder", r),
            };
            if *stop_rx.borrow() || sup_shared.lock().closing {
                return;
            }
            let why = match r {
                Err(e) if e.is_panic() => format!("the MQTT {task} task panicked (a bug)"),
                Err(_) => format!("the MQTT {task} task was cancelled"),
                Ok(()) => format!("the MQTT {task} task returned"),
            };
            tracing::error!(reason = %why, "MQTT publisher task ended unexpectedly");
            let _ = dead_tx.send(Some(why));
        });
        Ok(Publisher {
            shared,
            client,
            settings,
            stop,
            dead,
        })
    }

    /// Resolves (with the reason) when the driver or the feeder task ended although no
    /// shutdown was requested; never resolves otherwise.
    pub async fn failed(&self) -> String {
        let mut rx = self.dead.clone();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                // The supervisor ended without a failure: an orderly stop.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The number of successful connections so far; changes on every (re)connection.
    pub fn connects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.connects.subscribe()
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

    /// Queues a thumbnail (QoS 1, not retained, not spooled: kept in memory within the
    /// byte budget, oldest dropped first and counted; resent after a reconnection
    /// until the broker acknowledges it). Sent after the events waiting with it.
    pub fn thumb(&self, topic: String, jpeg: std::sync::Arc<[u8]>) {
        self.shared.lock().queue_thumb(topic, jpeg);
        self.shared.wake.notify_one();
    }

    /// The byte budget of thumbnails waiting for the broker (default
    /// [`THUMB_BUDGET`]).
    pub fn set_thumb_budget(&self, bytes: usize) {
        self.shared.lock().thumb_budget = bytes;
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

    /// Sets the retained message of `topic` (QoS 1): sent now if connected, sent again
    /// after every reconnection, and kept in memory only (never spooled: it is state,
    /// not an event). A new payload for a topic replaces one not yet sent (only the
    /// latest counts); an empty payload clears the topic on the broker and is forgotten
    /// once acknowledged. Sent before the events waiting, within half of the window. At
    /// most [`RETAINED_MAX`] topics.
    pub fn retain(&self, topic: String, payload: Vec<u8>) {
        self.shared.lock().set_retained(topic, payload);
        self.shared.wake.notify_one();
    }

    /// Sends every retained message again (e.g. a subscriber that lost them asked).
    pub fn resend_retained(&self) {
        self.shared.lock().requeue_retained();
        self.shared.wake.notify_one();
    }

    /// Subscribes to `filters` (QoS 0) on every connection from now on; messages that
    /// match arrive on the returned channel, which holds `queue` messages. When its
    /// reader is behind, new messages are dropped, counted in
    /// `outbox.retained.dropped`, and the filters are sent again, so that the broker
    /// re-sends the retained messages they match. The watch counts the times the filters
    /// were sent (retained messages follow each). Each call adds a subscription (at most
    /// 8; beyond, the oldest is replaced); a message goes to every subscription it
    /// matches.
    pub fn subscribe(
        &self,
        filters: Vec<String>,
        queue: usize,
    ) -> (
        tokio::sync::mpsc::Receiver<Incoming>,
        tokio::sync::watch::Receiver<u64>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(queue.max(1));
        let (sent, sent_rx) = tokio::sync::watch::channel(0);
        let mut st = self.shared.lock();
        if st.subs.len() >= MAX_SUBSCRIPTIONS {
            st.subs.remove(0);
        }
        st.subs.push(Sub {
            filters,
            epoch: 0,
            tx,
            sent,
        });
        drop(st);
        self.shared.wake.notify_one();
        (rx, sent_rx)
    }

    /// Counters now.
    pub fn stats(&self) -> OutboxStats {
        let st = self.shared.lock();
        OutboxStats {
            pending: st.spool.len(),
            pending_bytes: st.spool.bytes(),
            spool: st.spool.stats(),
            link: st.link.clone(),
            thumbs: ThumbStats {
                pending: st.thumbs.len(),
                pending_bytes: st.thumb_bytes,
                ..st.thumb_stats.clone()
            },
            retained: RetainedStats {
                topics: st.retained.len(),
                pending: st.retained_queue.len(),
                ..st.retained_stats.clone()
            },
        }
    }

    /// Makes spooled records durable (fsync). Called periodically by the agent. The
    /// fsyncs run on a blocking thread without the state lock (publishing and pushing
    /// go on meanwhile); the spool logs its errors itself, rate-limited.
    pub async fn sync(&self) -> bool {
        let shared = self.shared.clone();
        let r = tokio::task::spawn_blocking(move || {
            let _gate = shared.sync_gate.lock().unwrap_or_else(|e| e.into_inner());
            let job = shared.lock().spool.sync_begin();
            let done = job.run();
            shared.lock().spool.sync_end(done)
        })
        .await;
        matches!(r, Ok(Ok(())))
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
        if !self.sync().await {
            tracing::error!("spool: final sync failed");
        }
        let (pending, offline_published) = {
            let st = self.shared.lock();
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
                    on_connack(&mut el, &mut st);
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
                shared.connects.send_modify(|n| *n += 1);
                shared.wake.notify_one();
            }
            Ok(ev) => {
                if on_event(&mut shared.lock(), &ev) {
                    shared.wake.notify_one();
                    shared.progress.notify_waiters();
                }
            }
            Err(e) => {
                let msg = describe(&e);
                {
                    let mut st = shared.lock();
                    on_connection_error(&mut el, &mut st, closed_by_peer(&e));
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

/// A new connection: nothing sent before it is in flight any more.
fn on_connack(el: &mut EventLoop, st: &mut State) {
    // Nothing of an earlier connection may pair with this one's packet ids.
    el.state.events.clear();
    el.state.collision = None;
    st.connected = true;
    st.epoch += 1;
    st.fifo.clear();
    st.inflight.clear();
    st.outstanding = 0;
    st.cursor = 0;
    st.link.connected = true;
    st.link.connects += 1;
    st.acked_max = None;
    st.retained_inflight.clear();
    st.requeue_retained();
}

/// One event of the current connection. Returns whether an acknowledgement arrived.
fn on_event(st: &mut State, ev: &MqttEvent) -> bool {
    match ev {
        MqttEvent::Outgoing(Outgoing::Publish(pkid)) if *pkid != 0 => {
            if let Some(slot) = st.fifo.pop_front() {
                st.inflight.insert(*pkid, slot);
            }
            false
        }
        MqttEvent::Incoming(Packet::PubAck(ack)) => {
            if let Some(slot) = st.inflight.remove(&ack.pkid) {
                st.outstanding = st.outstanding.saturating_sub(1);
                st.link.acked += 1;
                match slot {
                    Slot::Record(seq) => {
                        st.spool.ack(seq);
                        st.acked_max = st.acked_max.max(Some(seq));
                        if st.suspect.is_some_and(|(s, _)| s == seq) {
                            st.suspect = None;
                        }
                    }
                    Slot::Thumb(n) => {
                        if let Some(i) = st.thumbs.iter().position(|t| t.n == n) {
                            if let Some(t) = st.thumbs.remove(i) {
                                st.thumb_bytes -= t.jpeg.len();
                                st.thumb_stats.delivered += 1;
                            }
                        }
                    }
                    Slot::Retained(generation) => {
                        st.retained_stats.delivered += 1;
                        if let Some(topic) = st.retained_inflight.remove(&generation) {
                            // A clearing (empty payload) acknowledged and not replaced
                            // since: the broker holds nothing for it; forget it.
                            if st.retained.get(&topic).is_some_and(|m| {
                                m.generation == generation && m.payload.is_empty() && !m.queued
                            }) {
                                st.retained.remove(&topic);
                            }
                        }
                    }
                    Slot::Offline => st.offline_acked = true,
                    Slot::Online => {}
                }
            }
            true
        }
        MqttEvent::Incoming(Packet::Publish(p)) => {
            on_incoming(st, p);
            false
        }
        _ => false,
    }
}

/// A message on one of the subscriptions: to its reader when it matches a filter of
/// [`Publisher::subscribe`] (the persistent session may hold older subscriptions).
fn on_incoming(st: &mut State, p: &rumqttc::Publish) {
    for sub in &mut st.subs {
        if !sub.filters.iter().any(|f| rumqttc::matches(&p.topic, f)) {
            continue;
        }
        let m = Incoming {
            topic: p.topic.clone(),
            payload: p.payload.to_vec(),
            retained: p.retain,
        };
        if sub.tx.try_send(m).is_err() {
            st.retained_stats.dropped += 1;
            // Sent again: the broker re-sends the retained state the reader missed.
            sub.epoch = 0;
        }
    }
}

/// Whether the broker ended the connection (rather than a timeout or a refusal).
fn closed_by_peer(e: &rumqttc::ConnectionError) -> bool {
    use rumqttc::{ConnectionError as C, StateError as S};
    use std::io::ErrorKind as K;
    match e {
        C::MqttState(S::ConnectionAborted) => true,
        C::Io(io)
        | C::MqttState(S::Io(io))
        | C::MqttState(S::Deserialization(rumqttc::mqttbytes::Error::Io(io))) => matches!(
            io.kind(),
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
        ),
        _ => false,
    }
}

/// Sets a record aside: out of the spool, counted, logged once (topic and size only).
fn reject(st: &mut State, seq: u64, why: &str) {
    if let Some(r) = st.spool.next_from(seq).filter(|r| r.seq == seq) {
        tracing::warn!(
            topic = %r.topic,
            bytes = r.payload.len(),
            reason = why,
            "MQTT: the broker does not accept this event; set aside (counted in outbox.link.rejected) so that the others get through"
        );
    }
    st.spool.ack(seq);
    st.link.rejected += 1;
    st.suspect = None;
}

/// Called with the state of the connection that just ended: counts the closing against
/// the record oldest in flight, and sets that record aside after [`REJECT_AFTER`].
fn blame(st: &mut State, by_peer: bool) {
    if !st.connected {
        return; // no session: a failed connection attempt says nothing about records
    }
    let oldest = st
        .fifo
        .iter()
        .chain(st.inflight.values())
        .filter_map(|s| match s {
            Slot::Record(q) => Some(*q),
            _ => None,
        })
        .min();
    match oldest {
        Some(seq) if by_peer && st.acked_max.is_none_or(|m| m < seq) => {
            let n = match st.suspect {
                Some((s, n)) if s == seq => n + 1,
                _ => 1,
            };
            if n >= REJECT_AFTER {
                reject(
                    st,
                    seq,
                    "the broker closed the connection each time it received it",
                );
            } else {
                st.suspect = Some((seq, n));
            }
        }
        _ => st.suspect = None,
    }
}

/// The connection failed (or never came up).
fn on_connection_error(el: &mut EventLoop, st: &mut State, by_peer: bool) {
    // rumqttc's `clean()` keeps `state.events` and `state.collision`. Whatever is still
    // buffered belongs to the connection that just ended: PUBACKs read in the same batch
    // as the end of the connection are genuine, so they count now, with this
    // connection's packet-id mapping; an `Outgoing::Publish` whose write failed must not
    // survive into the next connection, where it would pair its stale packet id with the
    // next record sent and shift every acknowledgement by one (a record marked delivered
    // that the broker never acknowledged).
    while let Some(ev) = el.state.events.pop_front() {
        on_event(st, &ev);
    }
    el.state.collision = None;
    el.state.collision_ping_count = 0;
    blame(st, by_peer);
    // Throw away rumqttc's retransmission queue and any request still in its
    // channel: everything unacknowledged is resent from the spool after the next
    // CONNACK.
    el.clean();
    el.pending.clear();
    st.connected = false;
    st.fifo.clear();
    st.inflight.clear();
    st.outstanding = 0;
    st.link.connected = false;
    st.link.connection_errors += 1;
    st.retained_inflight.clear();
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
                if crate::fault::fault("feeder_panic") {
                    panic!("VQPROBE_FAULT=feeder_panic: injected panic in the MQTT feeder");
                }
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
    let epoch = st.epoch;
    for sub in &mut st.subs {
        if sub.epoch == epoch || sub.filters.is_empty() {
            continue;
        }
        let filters = sub
            .filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtMostOnce));
        if client.try_subscribe_many(filters).is_ok() {
            sub.epoch = epoch;
            sub.sent.send_modify(|n| *n += 1);
        }
    }
    // Retained state (small, bounded) before the events, within half of the window.
    while st.outstanding < RETAINED_WINDOW {
        let Some(topic) = st.retained_queue.pop_front() else {
            break;
        };
        let Some(m) = st.retained.get_mut(&topic) else {
            continue;
        };
        if client
            .try_publish(topic.clone(), QoS::AtLeastOnce, true, m.payload.clone())
            .is_err()
        {
            st.retained_queue.push_front(topic);
            break;
        }
        m.queued = false;
        let generation = m.generation;
        st.fifo.push_back(Slot::Retained(generation));
        st.retained_inflight.insert(generation, topic);
        st.outstanding += 1;
        st.link.published += 1;
    }
    // Probation: a record suspected of being refused is the last one sent until it is
    // acknowledged, so that a closing by the broker points at it alone (and not, say,
    // at a connection taken over by another client with the same id).
    let hold = st
        .suspect
        .map(|(s, _)| s)
        .filter(|s| st.spool.next_from(*s).is_some_and(|r| r.seq == *s));
    while st.outstanding < WINDOW {
        let Some(rec) = st.spool.next_from(st.cursor) else {
            break;
        };
        if hold.is_some_and(|h| rec.seq > h) {
            break;
        }
        if rec.topic.len() + rec.payload.len() + PUBLISH_OVERHEAD > MAX_PACKET {
            let seq = rec.seq;
            reject(st, seq, "larger than the largest MQTT packet (1 MiB)");
            st.cursor = seq + 1;
            continue;
        }
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
    // Thumbnails after the events waiting now, in the same window.
    let epoch = st.epoch;
    let mut sent = 0;
    for t in st.thumbs.iter_mut() {
        if st.outstanding + sent >= WINDOW {
            break;
        }
        if t.sent_epoch == Some(epoch) {
            continue;
        }
        if client
            .try_publish(t.topic.clone(), QoS::AtLeastOnce, false, t.jpeg.to_vec())
            .is_err()
        {
            break;
        }
        t.sent_epoch = Some(epoch);
        st.fifo.push_back(Slot::Thumb(t.n));
        sent += 1;
    }
    st.outstanding += sent;
    st.link.published += sent as u64;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::spool::SpoolOptions;
    use rumqttc::{PubAck, Publish};

    fn spool(tag: &str) -> Spool {
        let dir =
            std::env::temp_dir().join(format!("vqprobe-mqtt-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Spool::open(SpoolOptions::new(dir, 1 << 20, 1 << 16)).unwrap()
    }

    fn client() -> EventLoop {
        AsyncClient::new(MqttOptions::new("unit", "127.0.0.1", 1), 8).1
    }

    /// What `EventLoop::poll` yields next: the events rumqttc still buffers, then `new`.
    fn poll_order(el: &mut EventLoop, new: &[MqttEvent]) -> Vec<MqttEvent> {
        let mut evs: Vec<MqttEvent> = el.state.events.drain(..).collect();
        evs.extend_from_slice(new);
        evs
    }

    fn oldest(st: &State) -> Option<u64> {
        st.spool.next_from(0).map(|r| r.seq)
    }

    /// Defect 3: a write that failed leaves its `Outgoing::Publish` in rumqttc's event
    /// buffer (`state.clean()` keeps it). It must not map a packet id of the next
    /// connection to the wrong record.
    #[test]
    fn a_publish_event_left_by_a_failed_write_does_not_shift_the_next_connection() {
        let mut sp = spool("shift");
        let a = sp.push("t/a", b"a");
        let b = sp.push("t/b", b"b");
        let mut el = client();
        let mut st = State::new(sp, b"online".to_vec());
        // Connection 1: `online` got pkid 1; the write of A (pkid 2) failed after
        // rumqttc queued its event; the connection ends.
        on_connack(&mut el, &mut st);
        st.fifo.extend([Slot::Online, Slot::Record(a)]);
        on_event(&mut st, &MqttEvent::Outgoing(Outgoing::Publish(1)));
        el.state
            .events
            .push_back(MqttEvent::Outgoing(Outgoing::Publish(2)));
        el.state.collision = Some(Publish::new("t/x", QoS::AtLeastOnce, "x"));
        on_connection_error(&mut el, &mut st, false);
        // Connection 2: online (3), A (4), B (5) sent; the broker acknowledges only A.
        on_connack(&mut el, &mut st);
        st.fifo
            .extend([Slot::Online, Slot::Record(a), Slot::Record(b)]);
        let evs = poll_order(
            &mut el,
            &[
                MqttEvent::Outgoing(Outgoing::Publish(3)),
                MqttEvent::Outgoing(Outgoing::Publish(4)),
                MqttEvent::Outgoing(Outgoing::Publish(5)),
                MqttEvent::Incoming(Packet::PubAck(PubAck::new(4))),
            ],
        );
        for ev in &evs {
            on_event(&mut st, ev);
        }
        assert_eq!(
            oldest(&st),
            Some(b),
            "the PUBACK of A must acknowledge A, and B (never acknowledged) must stay pending"
        );
        assert_eq!(st.spool.len(), 1);
        assert!(el.state.collision.is_none(), "stale collision kept");
    }

    /// Defect 3: PUBACKs rumqttc read in the same batch as the end of the connection are
    /// genuine: they count (no needless resend) and never leak into the next connection.
    #[test]
    fn pubacks_read_just_before_the_connection_ended_are_applied_once() {
        let mut sp = spool("lastacks");
        let a = sp.push("t/a", b"a");
        let b = sp.push("t/b", b"b");
        let mut el = client();
        let mut st = State::new(sp, b"online".to_vec());
        on_connack(&mut el, &mut st);
        st.fifo
            .extend([Slot::Online, Slot::Record(a), Slot::Record(b)]);
        for pk in 1..=3 {
            on_event(&mut st, &MqttEvent::Outgoing(Outgoing::Publish(pk)));
        }
        on_event(
            &mut st,
            &MqttEvent::Incoming(Packet::PubAck(PubAck::new(1))),
        );
        // The broker acknowledged A, then closed: rumqttc returned the error with the
        // PUBACK still buffered.
        el.state
            .events
            .push_back(MqttEvent::Incoming(Packet::PubAck(PubAck::new(2))));
        on_connection_error(&mut el, &mut st, false);
        assert!(el.state.events.is_empty(), "stale events kept");
        assert_eq!(oldest(&st), Some(b), "A's PUBACK was dropped");
        on_connack(&mut el, &mut st);
        assert_eq!(st.spool.len(), 1);
    }
    /// Defect 4: only the broker closing the connection, again and again with the same
    /// record oldest in flight and nothing after it acknowledged, sets a record aside;
    /// timeouts and failed connection attempts never do.
    #[test]
    fn a_record_is_set_aside_only_after_repeated_closings_by_the_broker() {
        let mut sp = spool("blame");
        let a = sp.push("t/a", b"a");
        let b = sp.push("t/b", b"b");
        let mut el = client();
        let mut st = State::new(sp, b"online".to_vec());
        let session = |el: &mut EventLoop, st: &mut State, by_peer: bool| {
            on_connack(el, st);
            st.fifo
                .extend([Slot::Online, Slot::Record(a), Slot::Record(b)]);
            on_connection_error(el, st, by_peer);
            // A failed attempt in between changes nothing.
            on_connection_error(el, st, true);
        };
        // Timeouts (a frozen broker) never count.
        for _ in 0..5 {
            session(&mut el, &mut st, false);
        }
        assert_eq!(st.link.rejected, 0);
        session(&mut el, &mut st, true);
        session(&mut el, &mut st, true);
        // A timeout breaks the series.
        session(&mut el, &mut st, false);
        session(&mut el, &mut st, true);
        session(&mut el, &mut st, true);
        assert_eq!(st.link.rejected, 0);
        assert_eq!(oldest(&st), Some(a));
        session(&mut el, &mut st, true);
        assert_eq!(st.link.rejected, 1);
        assert_eq!(oldest(&st), Some(b), "A set aside, B kept");
        // B gets through: no suspicion left.
        on_connack(&mut el, &mut st);
        st.fifo.extend([Slot::Online, Slot::Record(b)]);
        on_event(&mut st, &MqttEvent::Outgoing(Outgoing::Publish(100)));
        on_event(&mut st, &MqttEvent::Outgoing(Outgoing::Publish(101)));
        on_event(
            &mut st,
            &MqttEvent::Incoming(Packet::PubAck(PubAck::new(101))),
        );
        on_connection_error(&mut el, &mut st, true);
        assert!(st.spool.is_empty());
        assert_eq!(st.link.rejected, 1);
    }

    /// Defect 4: after one closing by the broker, the suspected record is the last one
    /// sent until it is acknowledged; its acknowledgement ends the probation.
    #[test]
    fn a_suspected_record_is_sent_last_until_acknowledged() {
        let mut sp = spool("probation");
        let a = sp.push("t/a", b"a");
        let b = sp.push("t/b", b"b");
        let c = sp.push("t/c", b"c");
        let (client, mut el) = AsyncClient::new(MqttOptions::new("unit", "127.0.0.1", 1), 64);
        let mut st = State::new(sp, b"online".to_vec());
        on_connack(&mut el, &mut st);
        on_event(&mut st, &MqttEvent::Outgoing(Outgoing::Publish(1)));
        st.fifo
            .extend([Slot::Record(a), Slot::Record(b), Slot::Record(c)]);
        on_event(
            &mut st,
            &MqttEvent::Incoming(Packet::PubAck(PubAck::new(1))),
        );
        on_connection_error(&mut el, &mut st, true);
        assert_eq!(st.suspect, Some((a, 1)));
        on_connack(&mut el, &mut st);
        pump(&client, &mut st, "status");
        assert_eq!(
            st.fifo.iter().copied().collect::<Vec<_>>(),
            [Slot::Online, Slot::Record(a)],
            "nothing after the suspect"
        );
        for (pk, _) in (10u16..).zip(0..2) {
            on_event(&mut st, &MqttEvent::Outgoing(Outgoing::Publish(pk)));
        }
        on_event(
            &mut st,
            &MqttEvent::Incoming(Packet::PubAck(PubAck::new(11))),
        );
        assert_eq!(st.suspect, None);
        pump(&client, &mut st, "status");
        assert_eq!(
            st.fifo.iter().copied().collect::<Vec<_>>(),
            [Slot::Record(b), Slot::Record(c)]
        );
    }

    /// Retained state: only the latest payload of a topic is sent, everything again on
    /// a new connection, within half of the window before the events; an acknowledged
    /// clearing is forgotten.
    #[test]
    fn retained_messages_are_latest_only_resent_on_reconnect_and_clearings_forgotten() {
        let mut sp = spool("retained");
        let ev = sp.push("t/ev", b"e");
        let (client, mut el) = AsyncClient::new(MqttOptions::new("unit", "127.0.0.1", 1), 128);
        let mut st = State::new(sp, b"online".to_vec());
        st.set_retained("ha/a".into(), b"ON".to_vec());
        st.set_retained("ha/a".into(), b"OFF".to_vec());
        st.set_retained("ha/b".into(), b"cfg".to_vec());
        assert_eq!(st.retained_queue.len(), 2, "one entry per topic");
        on_connack(&mut el, &mut st);
        pump(&client, &mut st, "status");
        let sent: Vec<Slot> = st.fifo.iter().copied().collect();
        let ga = st.retained["ha/a"].generation;
        let gb = st.retained["ha/b"].generation;
        assert_eq!(
            sent,
            [
                Slot::Online,
                Slot::Retained(ga),
                Slot::Retained(gb),
                Slot::Record(ev)
            ]
        );
        assert_eq!(st.retained["ha/a"].payload, b"OFF");
        // The same payload again changes nothing; a new one is queued.
        st.set_retained("ha/b".into(), b"cfg".to_vec());
        assert!(st.retained_queue.is_empty());
        st.set_retained("ha/b".into(), Vec::new());
        assert_eq!(st.retained_queue.len(), 1);
        let gb2 = st.retained["ha/b"].generation;
        pump(&client, &mut st, "status");
        for (pk, _) in (1u16..).zip(0..5) {
            on_event(&mut st, &MqttEvent::Outgoing(Outgoing::Publish(pk)));
        }
        // The clearing acknowledged: forgotten; the older publish of b acknowledged
        // before it changes nothing.
        for pk in [3u16, 5] {
            on_event(
                &mut st,
                &MqttEvent::Incoming(Packet::PubAck(PubAck::new(pk))),
            );
        }
        assert!(
            !st.retained.contains_key("ha/b"),
            "the acknowledged clearing stays"
        );
        assert_eq!(st.retained_stats.delivered, 2);
        let _ = gb2;
        // A new connection: what is kept is sent again.
        on_connection_error(&mut el, &mut st, false);
        on_connack(&mut el, &mut st);
        pump(&client, &mut st, "status");
        assert!(st.fifo.contains(&Slot::Retained(ga)));
        // Never more than half of the window for retained messages.
        for i in 0..2 * WINDOW {
            st.set_retained(format!("ha/many/{i}"), b"x".to_vec());
        }
        on_connection_error(&mut el, &mut st, false);
        on_connack(&mut el, &mut st);
        pump(&client, &mut st, "status");
        let retained = st
            .fifo
            .iter()
            .filter(|s| matches!(s, Slot::Retained(_)))
            .count();
        assert_eq!(
            retained,
            RETAINED_WINDOW - 1,
            "online + retained fill half the window"
        );
    }

    #[test]
    fn retained_topics_are_bounded() {
        let mut st = State::new(spool("retained-max"), b"online".to_vec());
        for i in 0..RETAINED_MAX + 3 {
            st.set_retained(format!("t/{i}"), b"x".to_vec());
        }
        assert_eq!(st.retained.len(), RETAINED_MAX);
        assert_eq!(st.retained_stats.dropped, 3);
        // A known topic still takes a new payload.
        st.set_retained("t/0".into(), b"y".to_vec());
        assert_eq!(st.retained["t/0"].payload, b"y");
    }

    #[test]
    fn only_messages_matching_the_subscriptions_reach_their_reader() {
        let mut st = State::new(spool("subs"), b"online".to_vec());
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let (tx2, mut rx2) = tokio::sync::mpsc::channel(4);
        let sub = |filters: &[&str], tx| Sub {
            filters: filters.iter().map(|f| f.to_string()).collect(),
            epoch: 1,
            tx,
            sent: tokio::sync::watch::channel(0).0,
        };
        st.epoch = 1;
        st.subs = vec![
            sub(&["ha/status", "ha/+/node/+/config"], tx),
            sub(&["ha/#"], tx2),
        ];
        let publish = |t: &str, p: &str, retain: bool| {
            let mut m = Publish::new(t, QoS::AtMostOnce, p);
            m.retain = retain;
            MqttEvent::Incoming(Packet::Publish(m))
        };
        on_event(&mut st, &publish("other/status", "online", false));
        on_event(&mut st, &publish("ha/sensor/node/x/config", "{}", true));
        // The first channel is full: dropped, counted, and its filters are sent again
        // (the broker re-sends the retained state); the second still gets it.
        on_event(&mut st, &publish("ha/status", "online", false));
        let got = |topic: &str, payload: &[u8], retained| Incoming {
            topic: topic.into(),
            payload: payload.to_vec(),
            retained,
        };
        assert_eq!(
            rx.try_recv().ok(),
            Some(got("ha/sensor/node/x/config", b"{}", true))
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(st.retained_stats.dropped, 1);
        assert_eq!((st.subs[0].epoch, st.subs[1].epoch), (0, 1));
        assert_eq!(
            rx2.try_recv().ok(),
            Some(got("ha/sensor/node/x/config", b"{}", true))
        );
        assert_eq!(
            rx2.try_recv().ok(),
            Some(got("ha/status", b"online", false))
        );
    }

    #[test]
    fn thumbnails_stay_within_their_budget_oldest_first_and_leave_on_their_puback() {
        let mut el = client();
        let mut st = State::new(spool("thumbs"), b"online".to_vec());
        st.thumb_budget = 100 * 1024;
        let jpeg = |kib: usize| -> std::sync::Arc<[u8]> { vec![0xff; kib * 1024].into() };
        for i in 0..4 {
            st.queue_thumb(format!("t/thumbs/{i}"), jpeg(30));
        }
        // 4 × 30 KiB > 100 KiB: the oldest went.
        let topics: Vec<&str> = st.thumbs.iter().map(|t| t.topic.as_str()).collect();
        assert_eq!(topics, ["t/thumbs/1", "t/thumbs/2", "t/thumbs/3"]);
        assert_eq!((st.thumb_bytes, st.thumb_stats.dropped), (90 * 1024, 1));
        // Larger than the whole budget: dropped, nothing else touched.
        st.queue_thumb("t/thumbs/big".into(), jpeg(101));
        assert_eq!((st.thumbs.len(), st.thumb_stats.dropped), (3, 2));
        // Sent on a connection: its PUBACK takes it out and counts it delivered.
        on_connack(&mut el, &mut st);
        let n = st.thumbs[0].n;
        st.fifo.extend([Slot::Online, Slot::Thumb(n)]);
        for ev in [
            MqttEvent::Outgoing(Outgoing::Publish(1)),
            MqttEvent::Outgoing(Outgoing::Publish(2)),
            MqttEvent::Incoming(Packet::PubAck(PubAck::new(2))),
        ] {
            on_event(&mut st, &ev);
        }
        assert_eq!(st.thumbs.len(), 2);
        assert_eq!(st.thumb_bytes, 60 * 1024);
        assert_eq!(st.thumb_stats.delivered, 1);
        // Events were never touched.
        assert_eq!(st.spool.len(), 0);
    }
}
