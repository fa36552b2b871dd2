//! The HTML report (`publish::report`) and its bounded series (`pipeline::series`) under
//! arbitrary samples, times and text.
//!
//! Input: byte 0 picks how many of the following 9-byte records are series samples
//! (lane = byte % 10; t = f32 LE; v = f32 LE: any value, NaN, infinities and negative
//! times included); the rest of the records are events (kind = byte % the number of kinds, start = f32,
//! end = f32 or none); the bytes after the records are the stream id, probe id and input
//! name (lossy UTF-8, split at 0xFF), which also become the defect ids.
//!
//! Invariants: no panic; every lane stays within `MAX_BINS` bins and its bins hold
//! exactly the samples it accepted (finite value, time in 0..1e12, after the previous
//! one); the page is one document (`<!DOCTYPE html>` … `</html>`) with no script; and
//! the input's text is escaped: the page has as many `<`, `>` and `"` as the page made
//! from the same input with every text hex-encoded (which has none of them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vqprobe::config::DetectConfig;
use vqprobe::defect::{DefectKind, Metrics, Phase, Transition};
use vqprobe::event::EventFactory;
use vqprobe::pipeline::series::{Lane, Series, MAX_BINS};
use vqprobe::pipeline::AnalyzerStats;
use vqprobe::publish::report::{render, ReportInput};

fn f32_at(r: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]])
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let n_records = (rest.len() / 9).min(512);
    let (records, text) = rest.split_at(n_records * 9);
    let n_samples = usize::from(head).min(n_records);
    let mut series = Series::default();
    let mut accepted = [0u64; 10];
    let mut last = [f64::NEG_INFINITY; 10];
    for r in records.chunks_exact(9).take(n_samples) {
        let lane_no = usize::from(r[0] % 10);
        let t = f64::from(f32_at(r, 1));
        let v = f32_at(r, 5);
        let p = &mut series.pictures;
        let lane: &mut Lane = match lane_no {
            0 => &mut p.luma,
            1 => &mut p.motion_db,
            2 => &mut p.edge_ratio,
            3 => &mut p.edge_threshold,
            4 => &mut series.sound.level_dbfs,
            5 => &mut series.sound.short_term_lufs,
            6 => &mut series.sound.full_scale_pct,
            7 => &mut series.sound.quietest_channel_dbfs,
            8 => &mut p.sharpness,
            _ => &mut p.sharpness_threshold,
        };
        if v.is_finite() && (0.0..1e12).contains(&t) && t > last[lane_no] {
            accepted[lane_no] += 1;
            last[lane_no] = t;
        }
        lane.push(t, v);
    }
    let p = &series.pictures;
    for (i, lane) in [
        &p.luma,
        &p.motion_db,
        &p.edge_ratio,
        &p.edge_threshold,
        &series.sound.level_dbfs,
        &series.sound.short_term_lufs,
        &series.sound.full_scale_pct,
        &series.sound.quietest_channel_dbfs,
        &p.sharpness,
        &p.sharpness_threshold,
    ]
    .into_iter()
    .enumerate()
    {
        assert!(lane.bins().len() <= MAX_BINS);
        let held: u64 = lane.bins().iter().map(|b| u64::from(b.n)).sum();
        assert_eq!(held, accepted[i], "lane {i}");
    }
    let parts: Vec<String> = text
        .split(|&b| b == 0xFF)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let html = page(&series, &parts, records, n_samples, head);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert!(!html.contains("<script"));
    let hex: Vec<String> = parts
        .iter()
        .map(|s| s.bytes().map(|b| format!("{b:02x}")).collect())
        .collect();
    let plain = page(&series, &hex, records, n_samples, head);
    for c in ['<', '>', '"'] {
        assert_eq!(
            html.matches(c).count(),
            plain.matches(c).count(),
            "{c} unescaped"
        );
    }
});

/// The report of `series` and the events of `records` (after the samples), with the
/// stream, probe, input, defect ids and note taken from `parts`.
fn page(series: &Series, parts: &[String], records: &[u8], n_samples: usize, head: u8) -> String {
    let word = |i: usize| parts.get(i).cloned().unwrap_or_default();
    let (stream, probe, input) = (word(0), word(1), word(2));
    let mut f = EventFactory::new(&probe, &stream);
    let mut events = Vec::new();
    for r in records.chunks_exact(9).skip(n_samples) {
        let kind = DefectKind::ALL[usize::from(r[0]) % DefectKind::COUNT];
        let start = f64::from(f32_at(r, 1));
        let end = f64::from(f32_at(r, 5));
        let start = if start.is_finite() { start } else { 0.0 };
        let t = Transition {
            kind,
            phase: if r[0] & 0x80 != 0 {
                Phase::End
            } else {
                Phase::Start
            },
            start_s: start,
            end_s: (r[0] & 0x80 != 0).then_some(if end.is_finite() { end } else { start }),
            metrics: Metrics::new(),
            slot: 0,
            media: None,
        };
        let mut ev = f.make(&t, None);
        if r[0] & 0x40 != 0 {
            ev.defect_id = word(3 + events.len() % 4);
        }
        events.push(ev);
    }
    let mut stats = AnalyzerStats::default();
    stats.media_s = f64::from(head) * 7.5;
    let detect = DetectConfig::default();
    render(&ReportInput {
        input: &input,
        probe_id: &probe,
        stream_id: &stream,
        stats: &stats,
        series,
        events: &events,
        events_not_kept: 0,
        thumbs_not_kept: 0,
        detect: &detect,
        note: Some(&word(7)),
    })
}
