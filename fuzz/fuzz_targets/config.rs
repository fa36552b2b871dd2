//! Agent configuration (TOML) → validated configuration, under arbitrary text.
//!
//! Input: the text of a config file (invalid UTF-8 is replaced, as a reader of the file
//! would refuse it anyway). Parsed with `app::agent::config::parse` as
//! `/nonexistent/vqprobe-fuzz/config.toml`.
//!
//! Invariants: never a panic; the same text gives the same result twice; an error names
//! the file; an accepted config keeps what validation promises: a valid probe id, at
//! most `limits.max_streams` streams with valid, unique ids, one plan per stream whose
//! detector settings validate, `queue_packets` in 2..=100000, `spool.max_bytes` ≥ 64 KiB,
//! `stats_interval` ≥ 1 s; and every duration it will turn into a timer is in range:
//! the `[live]` seconds are finite, non-negative and at most a day (so
//! `Duration::from_secs_f64` neither panics nor saturates, and converts back to the same
//! number within a nanosecond), `stale_factor` is finite and positive, and the agent's
//! own durations are at most a day (stats, shutdown, MQTT connect and backoff) and the
//! MQTT keepalive fits the protocol's 16-bit seconds.
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vqprobe::app::agent::config::parse;

const DAY: Duration = Duration::from_secs(86_400);

fn secs_in_range(name: &str, v: f64, max: f64) {
    assert!(
        v.is_finite() && (0.0..=max).contains(&v),
        "{name} = {v} accepted"
    );
    let d = Duration::try_from_secs_f64(v).expect("a duration");
    assert!((d.as_secs_f64() - v).abs() <= 1e-9, "{name} = {v} -> {d:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/nonexistent/vqprobe-fuzz/config.toml");
    let r = parse(path, &text);
    let again = parse(path, &text);
    match (&r, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a.streams, b.streams),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("parse is not deterministic"),
    }
    let l = match r {
        Ok(l) => l,
        Err(e) => {
            assert!(
                e.to_string()
                    .contains("/nonexistent/vqprobe-fuzz/config.toml"),
                "{e}"
            );
            return;
        }
    };
    let c = &l.cfg;
    let id_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    assert!(id_ok(&c.probe_id), "{:?}", c.probe_id);
    assert!(c.streams.len() <= c.limits.max_streams);
    assert_eq!(l.streams.len(), c.streams.len());
    let mut ids = std::collections::HashSet::new();
    for (p, s) in l.streams.iter().zip(&c.streams) {
        assert_eq!(&p.cfg, s.get_ref());
        assert!(id_ok(&p.cfg.id));
        assert!(ids.insert(p.cfg.id.clone()), "duplicate id {}", p.cfg.id);
        p.detect
            .validate()
            .expect("a plan's detector settings validate");
        assert_eq!(p.queue_packets, c.limits.queue_packets);
        assert_eq!(p.live, c.live);
    }
    assert!((2..=100_000).contains(&c.limits.queue_packets));
    assert!(c.spool.max_bytes >= 64 * 1024);
    assert!(c.stats_interval >= Duration::from_secs(1));

    let lv = &c.live;
    for (name, v) in [
        ("live.stall_after", lv.stall_after),
        ("live.backoff_initial", lv.backoff_initial),
        ("live.backoff_max", lv.backoff_max),
        ("live.connect_timeout", lv.connect_timeout),
        ("live.read_timeout", lv.read_timeout),
        ("live.clear_after", lv.clear_after),
    ] {
        secs_in_range(name, v, 86_400.0);
    }
    let sf = c.hls.stale_factor;
    assert!(
        sf.is_finite() && sf > 0.0,
        "hls.stale_factor = {sf} accepted"
    );
    for (name, d) in [
        ("stats_interval", c.stats_interval),
        ("shutdown_timeout", c.shutdown_timeout),
        ("mqtt.connect_timeout", c.mqtt.connect_timeout),
        ("mqtt.backoff_max", c.mqtt.backoff_max),
    ] {
        assert!(d <= DAY, "{name} = {d:?} accepted");
    }
    assert!(
        c.mqtt.keepalive <= Duration::from_secs(u64::from(u16::MAX)),
        "mqtt.keepalive = {:?} accepted",
        c.mqtt.keepalive
    );
});
