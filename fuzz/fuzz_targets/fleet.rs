//! A fleet member's view of the broker (`app::fleet::view`) and the assignment over it
//! (`app::fleet::assign`) under arbitrary broker messages.
//!
//! Input: records of `[op, len, payload (len bytes)]`. `op % 8` picks the topic: a catalog
//! entry, its error topic, a probe's status, a bad deep topic, or a resubscription /
//! sweep / clock step; `op / 8` picks the stream or probe (one of 32) and the retain
//! flag. Payloads are raw bytes (hostile JSON included); op 6 turns its payload into a
//! well-formed status (online or not, this fleet or not, capacity from the bytes) so
//! that members come and go.
//!
//! Invariants: no panic; the catalog never exceeds `max_catalog`; every catalog id is a
//! valid stream id; members are distinct, sorted, and settled ones only; the assignment
//! over the view places every stream on distinct counted members, none above its
//! capacity, and reports as short exactly the replicas it could not place.
#![no_main]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vqprobe::app::fleet::assign::assign;
use vqprobe::app::fleet::view::View;
use vqprobe::publish::mqtt::Incoming;
use vqprobe::publish::status::{Presence, Status};

const MAX_CATALOG: usize = 16;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut v = View::new("vq", "f", "me", 3, Duration::from_secs(5), MAX_CATALOG, t0);
    v.resubscribed(now);
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        let who = op / 8 % 32;
        let retained = op & 0x80 != 0;
        let topic = match op % 8 {
            0 | 1 => format!("vq/fleet/f/streams/s{who}"),
            2 => format!("vq/fleet/f/streams/s{who}/error"),
            3 | 6 => format!("vq/p{who}/status"),
            4 => format!("vq/fleet/f/streams/{}", String::from_utf8_lossy(payload)),
            5 => {
                v.resubscribed(now);
                continue;
            }
            _ => {
                now += Duration::from_millis(u64::from(*len) * 50);
                v.sweep(now);
                continue;
            }
        };
        let payload = if op % 8 == 6 {
            let mut s = Status::new(&format!("p{who}"), std::time::SystemTime::UNIX_EPOCH, vec![]);
            let presence = if payload.first().is_some_and(|b| b & 1 == 0) {
                Presence::Online
            } else {
                Presence::Offline
            };
            s.fleet = payload.get(1).map(|b| if b & 1 == 0 { "f" } else { "g" }.to_string());
            s.capacity = payload.get(2).map(|b| u32::from(b % 6));
            s.payload(presence)
        } else {
            payload.to_vec()
        };
        v.on_message(&Incoming { topic, payload, retained }, now);
    }
    let ids = v.stream_ids();
    assert!(ids.len() <= MAX_CATALOG);
    for id in &ids {
        assert!(!id.is_empty() && id.len() <= 64);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
    }
    let members = v.members(now);
    assert!(members.windows(2).all(|w| w[0].id < w[1].id), "members not sorted/distinct");
    for replicas in 1..=3u32 {
        let a = assign(&ids, &members, replicas);
        let cap: BTreeMap<&str, u32> = members.iter().map(|m| (m.id.as_str(), m.capacity)).collect();
        let mut load: BTreeMap<&str, u32> = BTreeMap::new();
        for id in &ids {
            let got = a.placed.get(id).map(Vec::as_slice).unwrap_or(&[]);
            let mut seen = got.to_vec();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), got.len(), "a stream twice on one member");
            for p in got {
                assert!(cap.contains_key(p.as_str()), "placed on a non-member");
                *load.entry(p.as_str()).or_default() += 1;
            }
            let short = a.short.iter().find(|(s, _)| s == id).map_or(0, |(_, k)| *k);
            assert_eq!(got.len() as u32 + short, replicas, "short count wrong for {id}");
        }
        for (p, l) in load {
            assert!(l <= cap[p], "{p} above its capacity");
        }
    }
});
