//! Prometheus metrics: `GET /metrics` in the text exposition format (0.0.4).
//!
//! The agent renders the whole page at each stats tick ([`render`], from the same
//! counters as the MQTT stats) and stores it in a [`Page`]; the server ([`serve`])
//! hands out the last page. So a scrape costs no lock on any stream, the values are as
//! of the last tick (`stats_interval`, 10 s by default; `vqprobe_stats_age_seconds`
//! says how old), and the metrics go on while the broker is down, which is when they
//! matter most.
//!
//! The HTTP server is hyper (already in the tree through reqwest), HTTP/1.1 only, on
//! the agent's tokio runtime. Bounded: at most [`MAX_CONNECTIONS`] connections at once
//! (more are closed at once, counted in `vqprobe_metrics_refused_total`), each closed
//! after [`CONNECTION_TIMEOUT`].
//!
//! Boundaries: knows the stats as JSON values and the outbox counters; never touches a
//! stream or the broker.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use crate::defect::DefectKind;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection is closed after this long, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The last rendered page, shared by the agent (writer) and the server (readers).
#[derive(Clone, Default)]
pub struct Page {
    inner: Arc<Mutex<(Arc<str>, Option<Instant>)>>,
    refused: Arc<AtomicU64>,
}

impl Page {
    /// Replaces the page.
    pub fn set(&self, text: String) {
        if let Ok(mut p) = self.inner.lock() {
            *p = (text.into(), Some(Instant::now()));
        }
    }

    /// The page, with the age of its values appended.
    fn get(&self) -> String {
        let (text, at) = self
            .inner
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let mut out = String::with_capacity(text.len() + 512);
        out.push_str(&text);
        let age = at.map_or(-1.0, |a| a.elapsed().as_secs_f64());
        family(
            &mut out,
            "vqprobe_stats_age_seconds",
            "gauge",
            "Seconds since the values on this page were taken (-1: not yet)",
        );
        let _ = writeln!(out, "vqprobe_stats_age_seconds {age:.3}");
        family(
            &mut out,
            "vqprobe_metrics_refused_total",
            "counter",
            "Scrape connections closed unserved (too many at once)",
        );
        let _ = writeln!(
            out,
            "vqprobe_metrics_refused_total {}",
            self.refused.load(Ordering::Relaxed)
        );
        out
    }
}

/// One stream's values for [`render`].
#[derive(Debug, Clone)]
pub struct StreamSample<'a> {
    pub id: &'a str,
    /// The stream's MQTT stats payload (docs/mqtt.md, "Stream stats").
    pub stats: &'a Value,
    /// Events emitted per kind ([`DefectKind::ALL`] order).
    pub events: [u64; DefectKind::COUNT],
}

/// Renders the page: every stream's metrics and the agent's (`agent` is the agent stats
/// payload of docs/mqtt.md, "Agent stats").
pub fn render(streams: &[StreamSample<'_>], agent: &Value) -> String {
    let mut out = String::with_capacity(1024 + streams.len() * 4096);
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let gauge = |out: &mut String, name: &str, help: &str, f: &dyn Fn(&Value) -> f64| {
        family(out, name, "gauge", help);
        for s in streams {
            sample(out, name, &[("stream", s.id)], f(s.stats));
        }
    };
    gauge(
        &mut out,
        "vqprobe_stream_fps",
        "Pictures received per second",
        &|s| num(&s["fps"]),
    );
    gauge(
        &mut out,
        "vqprobe_stream_bitrate_bps",
        "Elementary-stream bits per second",
        &|s| num(&s["media_bitrate_bps"]),
    );
    gauge(
        &mut out,
        "vqprobe_stream_decoded_share",
        "Share of the pictures given to the decoder (0-1; NaN before any picture)",
        &|s| s["decode"]["decoded_share"].as_f64().unwrap_or(f64::NAN),
    );
    family(
        &mut out,
        "vqprobe_stream_decode_level_seconds_total",
        "counter",
        "Media seconds of video decoded at each level",
    );
    for s in streams {
        for level in ["full", "reference", "key"] {
            sample(
                &mut out,
                "vqprobe_stream_decode_level_seconds_total",
                &[("stream", s.id), ("level", level)],
                num(&s.stats["decode"]["seconds"][level]),
            );
        }
    }
    family(
        &mut out,
        "vqprobe_stream_decode_errors_total",
        "counter",
        "Pictures or audio frames the decoders rejected",
    );
    for s in streams {
        for track in ["video", "audio"] {
            sample(
                &mut out,
                "vqprobe_stream_decode_errors_total",
                &[("stream", s.id), ("track", track)],
                num(&s.stats["decode_errors"][track]),
            );
        }
    }
    family(
        &mut out,
        "vqprobe_stream_dropped_total",
        "counter",
        "Packets or pictures not analysed, by reason",
    );
    for s in streams {
        if let Some(d) = s.stats["dropped"].as_object() {
            for (reason, v) in d {
                sample(
                    &mut out,
                    "vqprobe_stream_dropped_total",
                    &[("stream", s.id), ("reason", reason)],
                    num(v),
                );
            }
        }
    }
    let counter = |out: &mut String, name: &str, help: &str, key: &str| {
        family(out, name, "counter", help);
        for s in streams {
            sample(out, name, &[("stream", s.id)], num(&s.stats[key]));
        }
    };
    counter(
        &mut out,
        "vqprobe_stream_reconnects_total",
        "Live source connection attempts that failed and sessions that ended",
        "reconnects",
    );
    counter(
        &mut out,
        "vqprobe_stream_restarts_total",
        "Stream sessions that failed and were restarted",
        "restarts",
    );
    family(
        &mut out,
        "vqprobe_stream_open_defects",
        "gauge",
        "Defects started and not yet ended, by kind",
    );
    for s in streams {
        let open = s.stats["open_defects"].as_array();
        for kind in DefectKind::ALL {
            let n = open.map_or(0, |o| {
                o.iter().filter(|d| d["kind"] == kind.as_str()).count()
            });
            sample(
                &mut out,
                "vqprobe_stream_open_defects",
                &[("stream", s.id), ("kind", kind.as_str())],
                n as f64,
            );
        }
    }
    family(
        &mut out,
        "vqprobe_stream_events_total",
        "counter",
        "Events emitted since the agent started, by kind (starts and ends)",
    );
    for s in streams {
        for (kind, n) in DefectKind::ALL.iter().zip(s.events) {
            sample(
                &mut out,
                "vqprobe_stream_events_total",
                &[("stream", s.id), ("kind", kind.as_str())],
                n as f64,
            );
        }
    }
    let ob = &agent["outbox"];
    let one = |out: &mut String, name: &str, kind: &str, help: &str, v: f64| {
        family(out, name, kind, help);
        sample(out, name, &[], v);
    };
    one(
        &mut out,
        "vqprobe_streams",
        "gauge",
        "Streams configured",
        num(&agent["streams"]),
    );
    one(
        &mut out,
        "vqprobe_outbox_pending_events",
        "gauge",
        "Events spooled and not yet acknowledged by the broker",
        num(&ob["pending"]),
    );
    one(
        &mut out,
        "vqprobe_outbox_pending_bytes",
        "gauge",
        "Bytes of the events waiting",
        num(&ob["pending_bytes"]),
    );
    one(
        &mut out,
        "vqprobe_outbox_delivered_total",
        "counter",
        "Events acknowledged by the broker",
        num(&ob["spool"]["acked"]),
    );
    one(
        &mut out,
        "vqprobe_outbox_dropped_total",
        "counter",
        "Events dropped because the spool was full (drop-oldest)",
        num(&ob["spool"]["dropped_full"]),
    );
    one(
        &mut out,
        "vqprobe_outbox_rejected_total",
        "counter",
        "Events set aside because the broker refused them",
        num(&ob["link"]["rejected"]),
    );
    one(
        &mut out,
        "vqprobe_broker_connected",
        "gauge",
        "1 while connected to the broker",
        if ob["link"]["connected"] == true {
            1.0
        } else {
            0.0
        },
    );
    one(
        &mut out,
        "vqprobe_broker_connection_errors_total",
        "counter",
        "Broker connection attempts or sessions that failed",
        num(&ob["link"]["connection_errors"]),
    );
    one(
        &mut out,
        "vqprobe_thumbs_delivered_total",
        "counter",
        "Thumbnails acknowledged by the broker",
        num(&ob["thumbs"]["delivered"]),
    );
    one(
        &mut out,
        "vqprobe_thumbs_dropped_total",
        "counter",
        "Thumbnails dropped to stay within their byte budget",
        num(&ob["thumbs"]["dropped"]),
    );
    if ob.get("retained").is_some() {
        one(
            &mut out,
            "vqprobe_retained_topics",
            "gauge",
            "Retained topics kept in memory (Home Assistant configs and problem states)",
            num(&ob["retained"]["topics"]),
        );
        one(
            &mut out,
            "vqprobe_retained_dropped_total",
            "counter",
            "Retained topics refused beyond their bound, or received messages dropped",
            num(&ob["retained"]["dropped"]),
        );
    }
    out
}

/// Writes a family's HELP and TYPE lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line; label values escaped as the format requires.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], v: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            for c in val.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    if v.is_nan() {
        out.push_str(" NaN\n");
    } else {
        let _ = writeln!(out, " {v}");
    }
}

/// Serves `page` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: tokio::net::TcpListener, page: Page) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            page.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let page = page.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = respond(&req, &page);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

fn respond(req: &Request<Incoming>, page: &Page) -> Response<Full<Bytes>> {
    let (status, body, ctype) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => (
            StatusCode::OK,
            page.get(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET\n".to_string(),
            "text/plain",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "vqprobe serves /metrics only\n".to_string(),
            "text/plain",
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_has_every_family_once_with_help_type_and_escaped_labels() {
        let stats = json!({
            "fps": 25.0, "media_bitrate_bps": 2_000_000.0,
            "decode": {"decoded_share": 0.02, "seconds": {"full": 1.5, "reference": 0.0, "key": 58.5}},
            "decode_errors": {"video": 3, "audio": 0},
            "dropped": {"queue_full": 7, "until_key_frame": 2},
            "reconnects": 1, "restarts": 0,
            "open_defects": [{"kind": "black", "defect_id": "x", "start_s": 1.0}],
        });
        let mut events = [0u64; DefectKind::COUNT];
        events[0] = 3;
        let streams = [StreamSample {
            id: "cam \"7\"\\a",
            stats: &stats,
            events,
        }];
        let agent = json!({"streams": 1, "outbox": {"pending": 2, "pending_bytes": 900,
            "spool": {"acked": 40, "dropped_full": 0},
            "link": {"connected": true, "connection_errors": 1, "rejected": 0},
            "thumbs": {"delivered": 5, "dropped": 1},
            "retained": {"topics": 9, "pending": 0, "delivered": 9, "dropped": 2}}});
        let page = render(&streams, &agent);
        let label = r#"stream="cam \"7\"\\a""#;
        for line in [
            format!("vqprobe_stream_fps{{{label}}} 25"),
            format!("vqprobe_stream_decode_level_seconds_total{{{label},level=\"key\"}} 58.5"),
            format!("vqprobe_stream_decode_errors_total{{{label},track=\"video\"}} 3"),
            format!("vqprobe_stream_dropped_total{{{label},reason=\"queue_full\"}} 7"),
            format!("vqprobe_stream_open_defects{{{label},kind=\"black\"}} 1"),
            format!("vqprobe_stream_open_defects{{{label},kind=\"freeze\"}} 0"),
            format!("vqprobe_stream_events_total{{{label},kind=\"black\"}} 3"),
            "vqprobe_outbox_pending_events 2".to_string(),
            "vqprobe_outbox_delivered_total 40".to_string(),
            "vqprobe_broker_connected 1".to_string(),
            "vqprobe_thumbs_dropped_total 1".to_string(),
            "vqprobe_retained_topics 9".to_string(),
            "vqprobe_retained_dropped_total 2".to_string(),
        ] {
            assert!(page.lines().any(|l| l == line), "{line} not in\n{page}");
        }
        // Each family: HELP then TYPE, once, before its samples.
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for l in page.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                current = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(current.clone()), "{current} twice");
            } else if !l.starts_with("# TYPE ") {
                assert!(l.starts_with(&current), "{l} outside its family {current}");
            }
        }
        // Before any picture the share is NaN, written as the format wants it.
        let empty = json!({});
        let page = render(
            &[StreamSample {
                id: "s",
                stats: &empty,
                events: [0; DefectKind::COUNT],
            }],
            &json!({}),
        );
        assert!(page.contains("vqprobe_stream_decoded_share{stream=\"s\"} NaN\n"));
        assert!(page.contains("vqprobe_broker_connected 0\n"));
    }
}
