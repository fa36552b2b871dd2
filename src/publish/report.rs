//! The self-contained HTML report of one analysed input (`check --report`, `demo
//! --report`): the input's properties, a timeline with one lane per defect kind, the
//! per-second plots of what the detectors measured with their thresholds, and the
//! defects' thumbnails. One file, no script, no font, no network request: styles are
//! inline, plots are inline SVG, thumbnails are `data:` URIs.
//!
//! The SVG is written by hand (about 150 lines): the plots are four line charts with a
//! min–max band and a threshold line, which no plotting crate makes smaller than this,
//! and the edge binary's size budget has no room for one (plotters alone adds several
//! hundred KiB and a font stack).
//!
//! Bounded: the series are bounded by construction (`pipeline::series`); at most
//! [`MAX_INTERVALS`] defects are drawn and [`MAX_ROWS`] listed, and the caller keeps at
//! most [`MAX_THUMBS`] thumbnails; what is left out is counted in the report.

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::Engine as _;

use crate::config::DetectConfig;
use crate::defect::{DefectKind, Phase, Severity};
use crate::event::Event;
use crate::pipeline::series::{Lane, Series};
use crate::pipeline::AnalyzerStats;

/// Defects drawn on the timeline and plots at most.
pub const MAX_INTERVALS: usize = 5000;
/// Defects listed in the table at most.
pub const MAX_ROWS: usize = 500;
/// Thumbnails a report embeds at most (about 10 KiB each).
pub const MAX_THUMBS: usize = 64;

/// Everything a report shows.
#[derive(Debug)]
pub struct ReportInput<'a> {
    /// The input as the user named it, credentials already removed.
    pub input: &'a str,
    pub probe_id: &'a str,
    pub stream_id: &'a str,
    pub stats: &'a AnalyzerStats,
    pub series: &'a Series,
    /// The events in the order they were emitted; a `start` may carry its thumbnail.
    pub events: &'a [Event],
    /// Events emitted but not kept (beyond the caller's bound).
    pub events_not_kept: u64,
    /// Thumbnails not kept (beyond [`MAX_THUMBS`]).
    pub thumbs_not_kept: u64,
    pub detect: &'a DetectConfig,
    /// A line of text shown under the properties (the demo's verdict).
    pub note: Option<&'a str>,
}

/// One defect as drawn: from its events.
#[derive(Debug, Clone)]
struct Interval<'a> {
    kind: DefectKind,
    defect_id: &'a str,
    start: f64,
    /// `None`: still open when the input ended.
    end: Option<f64>,
    severity: &'static str,
    reason: Option<&'static str>,
    metrics: Option<&'a serde_json::Map<String, serde_json::Value>>,
    jpeg: Option<&'a [u8]>,
}

/// Pairs `start` and `end` events by defect id, in onset order.
fn intervals(events: &[Event]) -> Vec<Interval<'_>> {
    let mut out: Vec<Interval<'_>> = Vec::new();
    let mut open: HashMap<&str, usize> = HashMap::new();
    for ev in events {
        let i = match open.get(ev.defect_id.as_str()) {
            Some(&i) => i,
            None => {
                out.push(Interval {
                    kind: ev.kind,
                    defect_id: &ev.defect_id,
                    start: ev.start_s,
                    end: None,
                    severity: match ev.severity {
                        Severity::Critical => "critical",
                        Severity::Major => "major",
                        Severity::Warning => "warning",
                    },
                    reason: None,
                    metrics: None,
                    jpeg: None,
                });
                open.insert(&ev.defect_id, out.len() - 1);
                out.len() - 1
            }
        };
        let iv = &mut out[i];
        if ev.jpeg.is_some() {
            iv.jpeg = ev.jpeg.as_deref();
        }
        if ev.state == Phase::End {
            iv.end = ev.end_s.or(Some(ev.start_s));
            iv.reason = ev.reason.map(|r| r.as_str());
            iv.metrics = Some(&ev.metrics);
        } else if iv.metrics.is_none() {
            iv.metrics = Some(&ev.metrics);
        }
    }
    out.sort_by(|a, b| a.start.total_cmp(&b.start));
    out
}

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The colour of a kind on the timeline and in the plots.
fn colour(kind: DefectKind) -> &'static str {
    match kind {
        DefectKind::Black => "#333333",
        DefectKind::Freeze => "#1f77b4",
        DefectKind::Corruption => "#d62728",
        DefectKind::Uniform => "#17a2b8",
        DefectKind::LowFps => "#9467bd",
        DefectKind::Silence => "#2ca02c",
        DefectKind::Clipping => "#bcbd22",
        DefectKind::ChannelLoss => "#17becf",
        DefectKind::Loudness => "#e377c2",
        DefectKind::AvDesync => "#8c564b",
        DefectKind::UnsupportedCodec => "#7f7f7f",
        DefectKind::TestPattern => "#e6ab02",
        _ => "#ff7f0e",
    }
}

/// Seconds as `m:ss.s` (or `h:mm:ss` past an hour).
fn clock(t: f64) -> String {
    let t = t.max(0.0);
    if t >= 3600.0 {
        let s = t as u64;
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:04.1}", (t / 60.0) as u64, t % 60.0)
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1000px}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse}\
td,th{border-bottom:1px solid #ddd;padding:3px 10px 3px 0;text-align:left;vertical-align:top}\
th{font-weight:600}.props th{width:170px}svg{display:block;margin:6px 0;background:#fff}\
.note{padding:8px;background:#f3f3f3}#defects td{white-space:nowrap}#defects td.ev{white-space:normal;word-break:break-all;max-width:300px}img.thumb{width:240px;height:auto;display:block}.thumbs{display:flex;flex-wrap:wrap;gap:12px}\
figure{margin:0}figcaption{font-size:12px;color:#555}code{font-size:12px}";

/// Plot geometry: width, height, margins.
const W: f64 = 960.0;
const PL: f64 = 112.0;
const PR: f64 = 24.0;
const PH: f64 = 150.0;
const PT: f64 = 8.0;
const PB: f64 = 22.0;

/// Maps media seconds to the plot's x.
#[derive(Debug, Clone, Copy)]
struct XAxis {
    duration: f64,
}

impl XAxis {
    fn x(&self, t: f64) -> f64 {
        PL + (t / self.duration).clamp(0.0, 1.0) * (W - PL - PR)
    }

    /// Tick marks and labels along the bottom at `y`.
    fn ticks(&self, svg: &mut String, y: f64) {
        let steps = [
            1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
        ];
        let step = steps
            .iter()
            .copied()
            .find(|s| self.duration / s <= 12.0)
            .unwrap_or_else(|| (self.duration / 12.0 / 3600.0).ceil() * 3600.0);
        let mut t = 0.0;
        while t <= self.duration + 1e-9 {
            let x = self.x(t);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
                y + 4.0,
                y + 15.0,
                clock(t)
            );
            t += step;
        }
    }
}

/// One plot: a lane's per-bin mean as a line over its min–max band, a threshold
/// (constant or per bin), the defects of `kinds` shaded behind.
struct Plot<'a> {
    id: &'a str,
    title: &'a str,
    lane: &'a Lane,
    threshold: Threshold<'a>,
    /// Fixed y range, or `None` for the data's (and the threshold's) range.
    range: Option<(f32, f32)>,
    kinds: &'a [DefectKind],
}

enum Threshold<'a> {
    Fixed(f32, String),
    Lane(&'a Lane, &'static str),
}

fn plot(p: &Plot<'_>, ax: XAxis, ivs: &[Interval<'_>], out: &mut String) {
    let h = PT + PH + PB;
    let (lo, hi) = match p.range {
        Some(r) => r,
        None => {
            let mut r = p.lane.range().unwrap_or((0.0, 1.0));
            match &p.threshold {
                Threshold::Fixed(v, _) => r = (r.0.min(*v), r.1.max(*v)),
                Threshold::Lane(l, _) => {
                    if let Some((a, b)) = l.range() {
                        r = (r.0.min(a), r.1.max(b));
                    }
                }
            }
            let pad = ((r.1 - r.0) * 0.08).max(0.5);
            (r.0 - pad, r.1 + pad)
        }
    };
    let _ = write!(
        out,
        r##"<h3 style="font-size:14px;margin:14px 0 0">{}</h3><svg id="plot-{}" class="plot" data-duration="{}" data-y="{lo} {hi}" data-area="{PL} {PT} {} {PH}" width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img" aria-label="{}">"##,
        esc(p.title),
        p.id,
        ax.duration,
        W - PL - PR,
        esc(p.title)
    );
    let y = |v: f32| PT + PH * f64::from(1.0 - ((v - lo) / (hi - lo)).clamp(0.0, 1.0));
    // Defects behind.
    for iv in ivs.iter().filter(|iv| p.kinds.contains(&iv.kind)) {
        let (x0, x1) = (ax.x(iv.start), ax.x(iv.end.unwrap_or(ax.duration)));
        let _ = write!(
            out,
            r##"<rect x="{x0:.1}" y="{PT}" width="{:.1}" height="{PH}" fill="{}" opacity="0.12"/>"##,
            (x1 - x0).max(1.0),
            colour(iv.kind)
        );
    }
    // Frame and y labels.
    let _ = write!(
        out,
        r##"<rect x="{PL}" y="{PT}" width="{:.1}" height="{PH}" fill="none" stroke="#ccc"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{hi:.1}</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{lo:.1}</text>"##,
        W - PL - PR,
        PL - 4.0,
        PT + 9.0,
        PL - 4.0,
        PT + PH
    );
    ax.ticks(out, PT + PH);
    let bins = p.lane.bins();
    let wd = p.lane.width();
    // Runs of bins with samples: a band (min to max) and a line (mean) each.
    let mut i = 0;
    while i < bins.len() {
        if bins[i].n == 0 {
            i += 1;
            continue;
        }
        let j = (i..bins.len())
            .find(|&k| bins[k].n == 0)
            .unwrap_or(bins.len());
        let xs = |k: usize| ax.x((k as f64 + 0.5) * wd);
        let mut band = String::new();
        for (k, b) in bins.iter().enumerate().take(j).skip(i) {
            let _ = write!(band, "{:.1},{:.1} ", xs(k), y(b.max));
        }
        for (k, b) in bins.iter().enumerate().take(j).skip(i).rev() {
            let _ = write!(band, "{:.1},{:.1} ", xs(k), y(b.min));
        }
        let _ = write!(
            out,
            r##"<polygon class="band" points="{}" fill="#4a7bd0" opacity="0.25" stroke="#4a7bd0" stroke-opacity="0.4" stroke-width="0.5"/>"##,
            band.trim_end()
        );
        let mut line = String::new();
        for (k, b) in bins.iter().enumerate().take(j).skip(i) {
            let _ = write!(line, "{:.1},{:.1} ", xs(k), y(b.mean().unwrap_or(0.0)));
        }
        let _ = write!(
            out,
            r##"<polyline class="series" points="{}" fill="none" stroke="#1f4fa0" stroke-width="1.5"/>"##,
            line.trim_end()
        );
        i = j;
    }
    match &p.threshold {
        Threshold::Fixed(v, label) => {
            let yv = y(*v);
            let _ = write!(
                out,
                r##"<line class="threshold" x1="{PL}" y1="{yv:.1}" x2="{:.1}" y2="{yv:.1}" stroke="#d62728" stroke-dasharray="5,3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#d62728" text-anchor="end">{}</text>"##,
                W - PR,
                W - PR - 2.0,
                yv - 3.0,
                esc(label)
            );
        }
        Threshold::Lane(l, label) => {
            let mut pts = String::new();
            for (k, b) in l.bins().iter().enumerate() {
                if let Some(m) = b.mean() {
                    let _ = write!(
                        pts,
                        "{:.1},{:.1} ",
                        ax.x((k as f64 + 0.5) * l.width()),
                        y(m)
                    );
                }
            }
            if !pts.is_empty() {
                let _ = write!(
                    out,
                    r##"<polyline class="threshold" points="{}" fill="none" stroke="#d62728" stroke-dasharray="5,3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#d62728" text-anchor="end">{label}</text>"##,
                    pts.trim_end(),
                    W - PR - 2.0,
                    PT + 10.0
                );
            }
        }
    }
    if p.lane.is_empty() {
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" fill="#999" text-anchor="middle">no samples</text>"##,
            W / 2.0,
            PT + PH / 2.0
        );
    }
    out.push_str("</svg>");
}

/// The timeline: one lane per defect kind (the picture and sound kinds always, the
/// others when they occur).
fn timeline(ax: XAxis, ivs: &[Interval<'_>], out: &mut String) {
    let always = [
        DefectKind::Black,
        DefectKind::Freeze,
        DefectKind::Corruption,
        DefectKind::Silence,
    ];
    let kinds: Vec<DefectKind> = DefectKind::ALL
        .into_iter()
        .filter(|k| always.contains(k) || ivs.iter().any(|iv| iv.kind == *k))
        .collect();
    let lane_h = 22.0;
    let h = PT + lane_h * kinds.len() as f64 + PB;
    let _ = write!(
        out,
        r##"<svg id="timeline" data-duration="{}" data-area="{PL} {PT} {}" width="{W}" height="{h:.0}" viewBox="0 0 {W} {h:.0}" role="img" aria-label="timeline">"##,
        ax.duration,
        W - PL - PR
    );
    for (row, kind) in kinds.iter().enumerate() {
        let y0 = PT + lane_h * row as f64;
        let _ = write!(
            out,
            r##"<rect x="{PL}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            W - PL - PR,
            lane_h - 2.0,
            if row % 2 == 0 { "#f6f6f6" } else { "#eeeeee" },
            PL - 4.0,
            y0 + 15.0,
            kind.as_str()
        );
        for iv in ivs.iter().filter(|iv| iv.kind == *kind) {
            let (x0, x1) = (ax.x(iv.start), ax.x(iv.end.unwrap_or(ax.duration)));
            let end = iv.end.map_or("open".to_string(), |e| format!("{e:.2} s"));
            let _ = write!(
                out,
                r##"<a href="#defect-{id}"><rect class="defect" data-kind="{k}" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{k} {:.2} s to {end}</title></rect></a>"##,
                y0 + 2.0,
                (x1 - x0).max(2.0),
                lane_h - 6.0,
                colour(iv.kind),
                iv.start,
                id = esc(iv.defect_id),
                k = kind.as_str(),
            );
        }
    }
    ax.ticks(out, PT + lane_h * kinds.len() as f64);
    out.push_str("</svg>");
}

/// The report as one HTML document.
pub fn render(r: &ReportInput<'_>) -> String {
    let mut all = intervals(r.events);
    let not_drawn = all.len().saturating_sub(MAX_INTERVALS);
    all.truncate(MAX_INTERVALS);
    let ivs = all;
    let s = r.series;
    let st = r.stats;
    let duration = st.media_s.max(
        ivs.iter()
            .map(|iv| iv.end.unwrap_or(iv.start))
            .fold(0.0, f64::max),
    );
    let ax = XAxis {
        duration: duration.max(1.0),
    };
    let mut o = String::with_capacity(64 * 1024);
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>vqprobe report: {}</title><style>{STYLE}</style></head><body>",
        esc(r.stream_id)
    );
    let _ = write!(o, "<h1>vqprobe report: {}</h1>", esc(r.stream_id));
    // Properties.
    let mut props: Vec<(&str, String)> = vec![
        ("Input", esc(r.input)),
        ("Probe", esc(r.probe_id)),
        (
            "Generated",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        ),
        (
            "Duration",
            format!("{:.2} s ({})", st.media_s, clock(st.media_s)),
        ),
    ];
    let p = &s.pictures;
    let video = match s.video_codec {
        Some(c) => {
            let mut v = c.to_string();
            for (i, (w, h)) in p.sizes.iter().enumerate() {
                let _ = write!(v, "{} {w}×{h}", if i == 0 { "," } else { " then" });
            }
            if p.more_sizes > 0 {
                let _ = write!(v, " and {} more size changes", p.more_sizes);
            }
            v
        }
        None => "none".into(),
    };
    props.push(("Video", esc(&video)));
    let aus = st.video.packets.saturating_sub(st.video.refused);
    if aus > 0 && st.media_s > 0.0 {
        props.push((
            "Frame rate",
            format!("{:.2} pictures/s", aus as f64 / st.media_s),
        ));
    }
    let audio = match (s.audio_codec, s.audio_format) {
        (Some(c), Some((rate, ch))) => format!("{c}, {rate} Hz, {ch} channel(s)"),
        (Some(c), None) => c.to_string(),
        (None, _) => "none".into(),
    };
    props.push((
        "Audio",
        format!("{} ({} blocks decoded)", esc(&audio), st.audio.frames),
    ));
    props.push((
        "Decode coverage",
        format!(
            "{} — plots show the {} decoded pictures",
            esc(&st.coverage_line()),
            p.pictures
        ),
    ));
    props.push(("Defects", {
        let mut v = format!("{}", ivs.len() + not_drawn);
        if not_drawn > 0 {
            let _ = write!(v, " ({not_drawn} not drawn: at most {MAX_INTERVALS})");
        }
        if r.events_not_kept > 0 {
            let _ = write!(v, "; {} events not kept", r.events_not_kept);
        }
        v
    }));
    o.push_str("<table class=\"props\">");
    for (k, v) in &props {
        let _ = write!(o, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    o.push_str("</table>");
    if let Some(n) = r.note {
        let _ = write!(o, "<p class=\"note\">{}</p>", esc(n));
    }
    o.push_str("<h2>Timeline</h2>");
    timeline(ax, &ivs, &mut o);
    // Plots.
    o.push_str("<h2>Measures (per bin: mean line, min–max band)</h2>");
    let d = r.detect;
    let width = p.luma.width().max(s.sound.level_dbfs.width());
    if width > 1.0 {
        let _ = write!(
            o,
            "<p>Bins of {width:.0} s (the series were merged to stay bounded; peaks are kept).</p>"
        );
    }
    let black_level = 16.0 + d.black.pixel_threshold * 219.0;
    // One plot per measure, each with its detector's threshold and defects.
    let plots = [
        Plot {
            id: "luma",
            title: "Picture luma (mean, 0–255)",
            lane: &p.luma,
            threshold: Threshold::Fixed(
                black_level as f32,
                format!(
                    "black: {:.0}% of pixels below {black_level:.0}",
                    d.black.picture_ratio * 100.0
                ),
            ),
            range: Some((0.0, 255.0)),
            kinds: &[DefectKind::Black, DefectKind::Uniform],
        },
        Plot {
            id: "motion",
            title: "Motion: difference to the previous distinct picture (dB)",
            lane: &p.motion_db,
            threshold: Threshold::Fixed(
                d.freeze.noise_db as f32,
                format!("freeze below {:.0} dB", d.freeze.noise_db),
            ),
            // An identical picture is −120 dB here: drawn at the bottom.
            range: Some((-90.0, 0.0)),
            kinds: &[DefectKind::Freeze],
        },
        Plot {
            id: "edges",
            title: "Block-edge ratio (steps across 8×8 block edges / inside blocks)",
            lane: &p.edge_ratio,
            threshold: Threshold::Lane(&p.edge_threshold, "blocky above"),
            range: None,
            kinds: &[DefectKind::Corruption],
        },
        Plot {
            id: "sharpness",
            title: "Sharpness (fine detail / coarse contrast)",
            lane: &p.sharpness,
            threshold: Threshold::Lane(&p.sharpness_threshold, "blurred below"),
            range: None,
            kinds: &[DefectKind::Blur],
        },
        Plot {
            id: "audio",
            title: "Sound level (RMS, dBFS)",
            lane: &s.sound.level_dbfs,
            threshold: Threshold::Fixed(
                d.silence.threshold_dbfs as f32,
                format!("silence below {:.0} dBFS", d.silence.threshold_dbfs),
            ),
            range: Some((-100.0, 0.0)),
            kinds: &[DefectKind::Silence],
        },
        Plot {
            id: "loudness",
            title: "Short-term loudness (3 s, LUFS)",
            lane: &s.sound.short_term_lufs,
            threshold: Threshold::Fixed(
                d.loudness.ceiling_lufs as f32,
                format!(
                    "too loud above {:.0} LUFS (too quiet: {:.0} s integrated below {:.0} LUFS)",
                    d.loudness.ceiling_lufs, d.loudness.long_window, d.loudness.floor_lufs
                ),
            ),
            range: Some((-70.0, 5.0)),
            kinds: &[DefectKind::Loudness],
        },
        Plot {
            id: "clipping",
            title: "Samples at full scale (% of the samples)",
            lane: &s.sound.full_scale_pct,
            threshold: Threshold::Fixed(
                (d.clipping.ratio * 100.0) as f32,
                format!(
                    "clipping from {:.2}% over {:.0} s",
                    d.clipping.ratio * 100.0,
                    d.clipping.window
                ),
            ),
            range: None,
            kinds: &[DefectKind::Clipping],
        },
        Plot {
            id: "channels",
            title: "Quietest channel (RMS, dBFS; tracks of two or more channels)",
            lane: &s.sound.quietest_channel_dbfs,
            threshold: Threshold::Fixed(
                d.channel_loss.threshold_dbfs as f32,
                format!(
                    "a channel is lost below {:.0} dBFS",
                    d.channel_loss.threshold_dbfs
                ),
            ),
            range: Some((-100.0, 0.0)),
            kinds: &[DefectKind::ChannelLoss],
        },
    ];
    for p in &plots {
        plot(p, ax, &ivs, &mut o);
    }
    // Defects with their thumbnails.
    o.push_str("<h2>Defects</h2>");
    if ivs.is_empty() {
        o.push_str("<p id=\"no-defects\">No defect found.</p>");
    } else {
        o.push_str("<table id=\"defects\"><tr><th>Kind</th><th>Start</th><th>End</th><th>Duration</th><th>Severity</th><th>Evidence</th><th>Picture</th></tr>");
        for iv in ivs.iter().take(MAX_ROWS) {
            let end = match iv.end {
                Some(e) => format!(
                    "{e:.2} s{}",
                    iv.reason.map_or(String::new(), |r| format!(" ({r})"))
                ),
                None => "open".into(),
            };
            let dur = iv
                .end
                .map_or(String::new(), |e| format!("{:.2} s", e - iv.start));
            let metrics = iv
                .metrics
                .map(|m| serde_json::Value::Object(m.clone()).to_string())
                .unwrap_or_default();
            let img = match iv.jpeg {
                Some(j) => format!(
                    "<img class=\"thumb\" alt=\"{} at {:.2} s\" src=\"data:image/jpeg;base64,{}\">",
                    iv.kind.as_str(),
                    iv.start,
                    base64::engine::general_purpose::STANDARD.encode(j)
                ),
                None => String::new(),
            };
            let _ = write!(
                o,
                "<tr id=\"defect-{}\"><td style=\"color:{}\">{}</td><td>{:.2} s</td><td>{end}</td><td>{dur}</td><td>{}</td><td class=\"ev\"><code>{}</code></td><td>{img}</td></tr>",
                esc(iv.defect_id),
                colour(iv.kind),
                iv.kind.as_str(),
                iv.start,
                iv.severity,
                esc(&metrics),
            );
        }
        o.push_str("</table>");
        if ivs.len() > MAX_ROWS {
            let _ = write!(
                o,
                "<p>{} more defects not listed.</p>",
                ivs.len() - MAX_ROWS
            );
        }
        if r.thumbs_not_kept > 0 {
            let _ = write!(
                o,
                "<p>{} thumbnails not embedded (at most {MAX_THUMBS}).</p>",
                r.thumbs_not_kept
            );
        }
    }
    let _ = writeln!(
        o,
        "<p style=\"color:#888;font-size:12px\">vqprobe {}</p></body></html>",
        crate::VERSION
    );
    o
}

/// Writes `html` to `path` through a temporary file in the same folder, so a reader
/// never sees half a report.
pub fn write(path: &std::path::Path, html: &str) -> crate::error::Result<()> {
    let io = |source| crate::error::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, html).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventFactory;

    #[test]
    fn clock_formats_minutes_and_hours() {
        assert_eq!(clock(0.0), "0:00.0");
        assert_eq!(clock(75.25), "1:15.2");
        assert_eq!(clock(3725.0), "1:02:05");
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    fn ev(f: &mut EventFactory, kind: DefectKind, phase: Phase, at: f64) -> Event {
        let t = crate::defect::Transition {
            kind,
            phase,
            start_s: if phase == Phase::Start { at } else { 3.0 },
            end_s: (phase == Phase::End).then_some(at),
            metrics: crate::defect::Metrics::new(),
            slot: 0,
            media: None,
        };
        f.make(&t, None)
    }

    #[test]
    fn events_pair_into_intervals_and_an_unended_one_stays_open() {
        let mut f = EventFactory::new("p", "s");
        let mut evs = vec![
            ev(&mut f, DefectKind::Black, Phase::Start, 3.0),
            ev(&mut f, DefectKind::Silence, Phase::Start, 4.0),
            ev(&mut f, DefectKind::Black, Phase::End, 6.0),
        ];
        evs[0].jpeg = Some(std::sync::Arc::from(&b"jpeg"[..]));
        let ivs = intervals(&evs);
        assert_eq!(ivs.len(), 2);
        assert_eq!(
            (ivs[0].kind, ivs[0].start, ivs[0].end),
            (DefectKind::Black, 3.0, Some(6.0))
        );
        assert_eq!(ivs[0].jpeg, Some(&b"jpeg"[..]));
        assert_eq!((ivs[1].kind, ivs[1].end), (DefectKind::Silence, None));
    }
}
