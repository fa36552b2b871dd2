//! HLS ingest (RFC 8216): master playlist → one variant → media playlist → segments
//! (MPEG-TS through [`crate::ingest::ts`], fMP4/CMAF through [`crate::ingest::mp4`]) →
//! the stream's [`Sink`], with the delivery defects only HLS can show.
//!
//! This module is the scheduler: the session loop (resolve the playlist, play a VOD or
//! follow a live window, reconnect with backoff) and [`run`]. It ties together, and
//! leaves their work to: `input` ([`HlsSource`], [`HlsOptions`]: what an input is),
//! [`playlist`] (pure playlist logic: variant, live window, reload timing, segment
//! positions), `fetch` (HTTP and files with limits), `segments` (segment bytes →
//! packets) and `defects` (the HLS delivery defects). It may not parse bytes, build
//! HTTP requests or shape defect evidence itself.
//!
//! Inputs: `http://` and `https://` URLs, and local `.m3u8` paths (or `file://` URLs),
//! whose segment URIs may be local files. A remote playlist may only point at `http(s)`
//! URIs: it can never make the probe read local files.
//!
//! * **VOD** (`#EXT-X-ENDLIST` or `PLAYLIST-TYPE:VOD`): every segment in order, as fast as
//!   the decode thread takes them. Nothing is dropped (overflow policy *block*,
//!   [`Sink::packet_wait`]); the run ends with [`EndReason::EndOfInput`] — unless
//!   [`HlsOptions::ended_is_down`] (the agent): then the end is `source_down` and the
//!   playlist is reloaded with backoff (new segments are played, a live playlist is
//!   followed again).
//! * **Live** (sliding window or EVENT): start three segments from the end (§6.3.3),
//!   reload after the target duration when the playlist changed and after half of it
//!   when it did not (§6.3.4), bounded to [0.5 s, 30 s], and fetch each media sequence
//!   number once. Live segments also block rather than drop: HLS is pulled, a segment
//!   arrives as one burst larger than the packet queue, and a probe that falls behind
//!   skips whole segments that left the window (logged) instead of half pictures.
//!
//! Delivery defects (see docs/events.md for their clocks): `playlist_stale`,
//! `slow_download` (session clock), `segment_error` and `ts_error` (the damaged media's
//! place on the media timeline, session times in their metrics; see `defects`),
//! `stall` (no media for `stall_after` plus, live, one target duration: media arrives in
//! per-segment bursts) and `source_down` (the playlist cannot be had at all: refused,
//! 404, no answer, not a playlist, no variants, a loop; then reconnect with capped
//! backoff).
//!
//! Bounds: playlists and segments are read chunk by chunk up to a size cap, redirects are
//! limited, every wait has a timeout and races shutdown and the deadline. URLs in
//! messages and metrics carry no credentials and no query string (tokens).

mod defects;
mod fetch;
mod input;
pub mod playlist;
mod segments;

use std::future::Future;
use std::time::{Duration, Instant};

use m3u8_rs::{KeyMethod, MediaPlaylist, MediaPlaylistType, Playlist};
use url::Url;

use self::defects::{Defects, Span};
pub use self::fetch::{range_header, range_in};
use self::fetch::{Body, FetchError, Fetcher};
pub use self::input::{display_url, HlsOptions, HlsSource};
pub use self::playlist::{
    byte_range, choose_variant, effective_tags, is_stale, live_window, parse_playlist,
    reload_delay, resolve_uri, LiveWindow, VariantChoice,
};
use self::playlist::{playlist_key, range_error, sane_duration, sane_target, SegmentClock};
use self::segments::Segments;
use super::live::LiveConfig;
use super::sink::Sink;
use crate::backoff::Backoff;
use crate::defect::EndReason;
use crate::shutdown::Shutdown;

/// Master playlists nested deeper than this are refused (a loop, or a hostile origin).
const MAX_PLAYLIST_CHAIN: usize = 3;
/// How often waits call [`Sink::tick`] and check for the decode side going away.
const TICK: Duration = Duration::from_millis(200);
/// Consecutive failed playlist reloads (live) or segments (VOD) that make the source down.
const MAX_FAILURES: u32 = 3;
/// Init sections are small; this caps them below the segment cap.
const MAX_INIT_BYTES: u64 = 16 << 20;

/// Why a session stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Shutdown,
    Deadline,
    EndOfInput,
}

/// How a session ends: stopped, or the source is down (with the reason).
#[derive(Debug)]
pub(super) enum Flow {
    Stop(Stop),
    Down(String),
}

impl From<Stop> for Flow {
    fn from(s: Stop) -> Flow {
        Flow::Stop(s)
    }
}

/// Runs `fut` while ticking the sink every [`TICK`], unless shutdown or the deadline
/// comes first. `stall_after`: the silence after which [`Sink::tick`] may report a
/// stall (HLS delivers media in per-segment bursts).
async fn guarded<T>(
    shutdown: &mut Shutdown,
    deadline: Option<Instant>,
    stall_after: f64,
    sink: &mut Sink,
    fut: impl Future<Output = T>,
) -> std::result::Result<T, Stop> {
    tokio::pin!(fut);
    let dl = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(dl);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return Err(Stop::Shutdown),
            _ = &mut dl => return Err(Stop::Deadline),
            r = &mut fut => return Ok(r),
            _ = tick.tick() => {
                if sink.is_closed() {
                    return Err(Stop::Shutdown);
                }
                if sink.since_media().is_some_and(|s| s >= stall_after) {
                    sink.tick().await;
                }
            }
        }
    }
}

/// Segment-level facts of a media playlist: for each segment, the index of the segment
/// The state of one HLS source across reconnects: where it is in the playlist, and the
/// parts it schedules.
struct Runner<'a> {
    src: &'a HlsSource,
    cfg: LiveConfig,
    fetch: Fetcher,
    shutdown: Shutdown,
    deadline: Option<Instant>,
    backoff: Backoff,
    segs: Segments,
    defects: Defects,
    /// Where the segments lie on the media timeline (for defects about a segment).
    clock: SegmentClock,
    /// The init section in force: URL and byte range.
    init: Option<(Url, Option<(u64, u64)>)>,
    // Position.
    vod_next: usize,
    next_seq: Option<u64>,
    seen_live: bool,
    live: bool,
    /// End of the last byte range, per URL, for EXT-X-BYTERANGE without an offset.
    range_end: Option<(Url, u64)>,
    /// Current target duration (sane), seconds.
    target: f64,
}

impl<'a> Runner<'a> {
    fn new(
        src: &'a HlsSource,
        cfg: LiveConfig,
        shutdown: Shutdown,
        deadline: Option<Instant>,
        pool: Option<super::pool::BufPool>,
    ) -> Self {
        Runner {
            src,
            fetch: Fetcher::new(src.ca_pem.clone(), src.opts.max_redirects, &cfg),
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            segs: Segments::new(pool, shutdown.clone(), deadline),
            defects: Defects::new(cfg.clear_after),
            clock: SegmentClock::default(),
            init: None,
            vod_next: 0,
            next_seq: None,
            seen_live: false,
            live: false,
            range_end: None,
            target: 1.0,
            cfg,
            shutdown,
            deadline,
        }
    }

    /// Largest segment read: `max_segment_bytes`, at most half the budget.
    fn segment_cap(&self) -> u64 {
        self.src
            .opts
            .max_segment_bytes
            .min(self.segs.memory().max_segment())
    }

    /// Silence after which a stall may be reported.
    fn stall_after(&self) -> f64 {
        if self.live {
            self.cfg.stall_after + self.target
        } else {
            self.cfg.stall_after
        }
    }

    /// Overall time allowed for one fetch of something that plays `dur` seconds.
    fn budget(&self, dur: f64) -> Duration {
        let read = self.fetch.read_timeout().as_secs_f64();
        Duration::from_secs_f64((3.0 * read).max(4.0 * dur).clamp(1.0, 300.0))
    }

    async fn fetch_guarded(
        &mut self,
        sink: &mut Sink,
        url: &Url,
        range: Option<(u64, u64)>,
        cap: u64,
        dur: f64,
    ) -> std::result::Result<std::result::Result<Body, FetchError>, Stop> {
        let total = self.budget(dur);
        let stall = self.stall_after();
        guarded(
            &mut self.shutdown,
            self.deadline,
            stall,
            sink,
            self.fetch.fetch(url, range, cap, total),
        )
        .await
    }

    async fn wait_until(&mut self, sink: &mut Sink, at: Instant) -> std::result::Result<(), Stop> {
        let stall = self.stall_after();
        guarded(
            &mut self.shutdown,
            self.deadline,
            stall,
            sink,
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)),
        )
        .await
    }

    /// Master → media playlist. Returns (URL asked, URL after redirects, playlist, when
    /// the load began).
    async fn resolve(
        &mut self,
        sink: &mut Sink,
    ) -> std::result::Result<(Url, Url, MediaPlaylist, Instant), Flow> {
        let mut url = self.src.url.clone();
        let mut seen: Vec<Url> = Vec::new();
        for _ in 0..MAX_PLAYLIST_CHAIN {
            if seen.contains(&url) {
                return Err(Flow::Down(format!(
                    "playlist loop: {} is its own variant",
                    display_url(&url)
                )));
            }
            seen.push(url.clone());
            let started = Instant::now();
            let cap = self.src.opts.max_playlist_bytes;
            let target = self.target;
            let body = self
                .fetch_guarded(sink, &url, None, cap, target)
                .await?
                .map_err(|e| {
                    Flow::Down(format!(
                        "playlist {}: {}",
                        display_url(&url),
                        e.message("playlist")
                    ))
                })?;
            if body.url != url && seen.contains(&body.url) {
                return Err(Flow::Down(format!(
                    "playlist loop: {} redirects to a playlist already read",
                    display_url(&url)
                )));
            }
            match parse_playlist(&body.bytes) {
                Err(m) => return Err(Flow::Down(format!("playlist {}: {m}", display_url(&url)))),
                Ok(Playlist::MediaPlaylist(m)) => return Ok((url, body.url, m, started)),
                Ok(Playlist::MasterPlaylist(m)) => {
                    let i = choose_variant(&m.variants, self.src.opts.variant)
                        .map_err(|e| Flow::Down(format!("playlist {}: {e}", display_url(&url))))?;
                    let v = &m.variants[i];
                    let next = resolve_uri(&body.url, &v.uri)
                        .map_err(|e| Flow::Down(format!("playlist {}: {e}", display_url(&url))))?;
                    tracing::info!(
                        bandwidth = v.bandwidth,
                        variant = %display_url(&next),
                        "HLS variant chosen"
                    );
                    url = next;
                }
            }
        }
        Err(Flow::Down(format!(
            "more than {MAX_PLAYLIST_CHAIN} playlists chained (master playlists nested too deep)"
        )))
    }

    /// One session: resolve, then VOD or live until stopped or down.
    async fn session(&mut self, sink: &mut Sink) -> Flow {
        match self.session_inner(sink).await {
            Ok(f) | Err(f) => f,
        }
    }

    async fn session_inner(&mut self, sink: &mut Sink) -> std::result::Result<Flow, Flow> {
        let (asked, base, pl, started) = self.resolve(sink).await?;
        let vod = pl.end_list || matches!(pl.playlist_type, Some(MediaPlaylistType::Vod));
        if vod && !self.seen_live {
            return self.vod(sink, &base, &pl).await;
        }
        self.live(sink, asked, base, pl, started).await
    }

    async fn vod(
        &mut self,
        sink: &mut Sink,
        base: &Url,
        pl: &MediaPlaylist,
    ) -> std::result::Result<Flow, Flow> {
        self.live = false;
        self.target = sane_target(pl.target_duration);
        if pl.segments.is_empty() {
            tracing::warn!(
                url = self.src.display_url(),
                "the VOD playlist lists no segments"
            );
            sink.source_down("the playlist lists no segments", 1).await;
            return Ok(Flow::Stop(Stop::EndOfInput));
        }
        let tags = effective_tags(pl);
        let mut failures = 0;
        while self.vod_next < pl.segments.len() {
            let i = self.vod_next;
            let seq = pl.media_sequence.saturating_add(i as u64);
            let ok = self.segment(sink, base, pl, &tags, i, seq).await?;
            self.vod_next += 1;
            if ok {
                failures = 0;
            } else {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Err(Flow::Down(format!("{failures} segments in a row failed")));
                }
            }
        }
        Ok(Flow::Stop(Stop::EndOfInput))
    }

    async fn live(
        &mut self,
        sink: &mut Sink,
        asked: Url,
        mut base: Url,
        mut pl: MediaPlaylist,
        mut loaded_at: Instant,
    ) -> std::result::Result<Flow, Flow> {
        self.live = true;
        self.seen_live = true;
        let mut changed = true;
        let mut failures = 0u32;
        self.observe_stale(sink, &pl).await;
        loop {
            self.target = sane_target(pl.target_duration);
            let first = pl.media_sequence;
            let w = live_window(first, pl.segments.len(), self.next_seq);
            if w.skipped > 0 {
                tracing::warn!(
                    skipped = w.skipped,
                    "HLS segments left the live window before they were fetched"
                );
            }
            if w.restarted {
                tracing::warn!(
                    expected = self.next_seq,
                    got = first,
                    "the live playlist's media sequence went back: origin restarted"
                );
            }
            if w.skipped > 0 || w.restarted {
                self.segs.discontinuity();
                // Segments went by unseen: their durations are unknown.
                self.clock.lose();
            }
            self.next_seq = Some(w.next);
            let tags = effective_tags(&pl);
            let mut seq = w.from;
            while seq < w.end {
                let i = (seq - first) as usize;
                self.segment(sink, &base, &pl, &tags, i, seq).await?;
                seq += 1;
                self.next_seq = Some(seq);
            }
            if pl.end_list {
                return Err(Flow::Down("the live playlist ended (EXT-X-ENDLIST)".into()));
            }
            let at = loaded_at + reload_delay(self.target, changed);
            self.wait_until(sink, at).await?;
            loaded_at = Instant::now();
            let cap = self.src.opts.max_playlist_bytes;
            let target = self.target;
            let r = self.fetch_guarded(sink, &asked, None, cap, target).await?;
            let parsed = match r {
                Err(e) => Err((e.message("playlist"), e.status())),
                Ok(body) => match parse_playlist(&body.bytes) {
                    Ok(Playlist::MediaPlaylist(m)) => Ok((m, body.url)),
                    Ok(Playlist::MasterPlaylist(_)) => Err((
                        "the media playlist turned into a master playlist".to_string(),
                        None,
                    )),
                    Err(m) => Err((m, None)),
                },
            };
            match parsed {
                Err((reason, status)) => {
                    failures += 1;
                    // A playlist is no piece of media: session time.
                    self.defects
                        .segment_failed(sink, &asked, &reason, status, None)
                        .await;
                    if failures >= MAX_FAILURES {
                        return Err(Flow::Down(format!(
                            "playlist {}: {reason}",
                            display_url(&asked)
                        )));
                    }
                    changed = false;
                }
                Ok((m, url)) => {
                    failures = 0;
                    changed = playlist_key(&m) != playlist_key(&pl);
                    pl = m;
                    base = url;
                    self.observe_stale(sink, &pl).await;
                }
            }
        }
    }

    async fn observe_stale(&mut self, sink: &mut Sink, pl: &MediaPlaylist) {
        let (target, factor) = (self.target, self.src.opts.stale_factor);
        self.defects
            .observe_stale(sink, pl, target, factor, self.src.display_url())
            .await;
    }

    /// Segment `i` could not be had (`url`, why): `segment_error` at its place on the
    /// media timeline, which it takes up (`dur_s`) whether readable or not.
    async fn failed(
        &mut self,
        sink: &mut Sink,
        url: &Url,
        reason: &str,
        status: Option<u16>,
        dur_s: f64,
    ) {
        let span = self.clock.place(None, dur_s);
        self.defects
            .segment_failed(sink, url, reason, status, span)
            .await;
    }

    /// Fetches and delivers segment `i` of `pl`. Ok(true) when its media was delivered.
    async fn segment(
        &mut self,
        sink: &mut Sink,
        base: &Url,
        pl: &MediaPlaylist,
        tags: &[(Option<usize>, Option<usize>)],
        i: usize,
        seq: u64,
    ) -> std::result::Result<bool, Flow> {
        let seg = &pl.segments[i];
        let (map_i, key_i) = tags.get(i).copied().unwrap_or((None, None));
        if let Some(k) = key_i.and_then(|k| pl.segments[k].key.as_ref()) {
            if k.method != KeyMethod::None {
                return Err(Flow::Down(format!(
                    "encrypted HLS segments (METHOD={}) are not supported",
                    k.method
                )));
            }
        }
        let dur = sane_duration(seg.duration, seq);
        // What the segment takes up on the media timeline.
        let dur_s = dur.unwrap_or(self.target);
        if seg.discontinuity {
            self.segs.discontinuity();
        }
        let url = match resolve_uri(base, &seg.uri) {
            Ok(u) => u,
            Err(e) => {
                self.failed(sink, base, &e, None, dur_s).await;
                self.segs.discontinuity();
                return Ok(false);
            }
        };
        // The init section in force (EXT-X-MAP), fetched when it changes.
        if let Some(map) = map_i.and_then(|m| pl.segments[m].map.as_ref()) {
            let murl = match resolve_uri(base, &map.uri) {
                Ok(u) => u,
                Err(e) => {
                    self.failed(sink, base, &e, None, dur_s).await;
                    return Ok(false);
                }
            };
            let range = match map.byte_range.as_ref() {
                None => None,
                Some(b) => match byte_range(b.length, b.offset, None) {
                    Some(r) => Some(r),
                    None => {
                        let msg = format!("init section: {}", range_error(b.length, b.offset));
                        self.failed(sink, &murl, &msg, None, dur_s).await;
                        return Ok(false);
                    }
                },
            };
            let key = Some((murl.clone(), range));
            if self.init != key {
                let cap = self.segment_cap().min(MAX_INIT_BYTES);
                let r = self
                    .fetch_guarded(sink, &murl, range, cap, self.target)
                    .await?;
                let body = match r {
                    Ok(b) => b,
                    Err(e) => {
                        let msg = format!("init section: {}", e.message("init section"));
                        self.failed(sink, &murl, &msg, e.status(), dur_s).await;
                        return Ok(false);
                    }
                };
                match self.segs.init_section(sink, body.bytes).await? {
                    Ok(()) => self.init = key,
                    Err(msg) => {
                        self.failed(sink, &murl, &msg, None, dur_s).await;
                        return Ok(false);
                    }
                }
            }
        }
        let range = match seg.byte_range.as_ref() {
            None => None,
            Some(b) => {
                let prev = match &self.range_end {
                    Some((u, end)) if *u == url => Some(*end),
                    _ => None,
                };
                match byte_range(b.length, b.offset, prev) {
                    Some(r) => Some(r),
                    None => {
                        let msg = range_error(b.length, b.offset);
                        self.failed(sink, &url, &msg, None, dur_s).await;
                        self.segs.discontinuity();
                        self.range_end = None;
                        return Ok(false);
                    }
                }
            }
        };
        if let Some((off, len)) = range {
            self.range_end = Some((url.clone(), off.saturating_add(len)));
        }
        let cap = self.segment_cap();
        let r = self.fetch_guarded(sink, &url, range, cap, dur_s).await?;
        let body = match r {
            Ok(b) => b,
            Err(e) => {
                let msg = e.message("segment");
                self.failed(sink, &url, &msg, e.status(), dur_s).await;
                self.segs.discontinuity();
                return Ok(false);
            }
        };
        self.backoff.reset();
        if let Some(d) = dur {
            self.defects.slow_check(sink, body.took, d, &url).await;
        }
        let out = self.segs.deliver(sink, &body.bytes, dur).await?;
        let span: Option<Span> = self.clock.place(out.first_pts, dur_s);
        if let Some(msg) = out.error {
            self.defects
                .segment_failed(sink, &url, &msg, None, span)
                .await;
            self.segs.discontinuity();
            return Ok(false);
        }
        if let Some(total) = out.transport {
            self.defects
                .transport(sink, &total, span, self.src.display_url())
                .await;
        }
        self.defects.segment_ok(sink).await;
        Ok(true)
    }
}

/// Runs the source until shutdown, `deadline` or the end of a VOD playlist (TS
/// segments demuxed into freshly allocated buffers; see [`run_with_pool`]).
pub async fn run(
    src: &HlsSource,
    sink: &mut Sink,
    shutdown: Shutdown,
    deadline: Option<Instant>,
) -> EndReason {
    run_with_pool(src, sink, shutdown, deadline, None).await
}

/// [`run`], with TS packet buffers taken from `pool` (give the same pool to the
/// stream's `Analyzer`, which hands them back after decoding), as the file path does.
/// Reconnects with backoff while the playlist cannot be had.
pub async fn run_with_pool(
    src: &HlsSource,
    sink: &mut Sink,
    shutdown: Shutdown,
    deadline: Option<Instant>,
    pool: Option<super::pool::BufPool>,
) -> EndReason {
    // reqwest is built without a default crypto provider: use ring (one stack, and it
    // cross-compiles). Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut r = Runner::new(src, sink.config().clone(), shutdown, deadline, pool);
    loop {
        let reason = match r.session(sink).await {
            Flow::Stop(Stop::Shutdown) => return EndReason::Shutdown,
            Flow::Stop(Stop::EndOfInput) if src.opts.ended_is_down => {
                // A monitored network stream does not end: its origin stopped serving
                // it. Reloading picks up new segments, or a live playlist again.
                r.segs.flush(sink).await;
                "the playlist ended (VOD or EXT-X-ENDLIST)".to_string()
            }
            Flow::Stop(Stop::Deadline | Stop::EndOfInput) => {
                r.segs.flush(sink).await;
                return EndReason::EndOfInput;
            }
            Flow::Down(reason) => reason,
        };
        let attempt = r.backoff.attempt() + 1;
        tracing::warn!(url = src.display_url(), attempt, reason = %reason, "HLS source down");
        sink.source_down(&reason, attempt).await;
        // Whatever comes next does not continue what came before.
        r.segs.discontinuity();
        let mut delay = r.backoff.next_delay();
        if let Some(d) = deadline {
            delay = delay.min(d.saturating_duration_since(Instant::now()));
        }
        match r.wait_until(sink, Instant::now() + delay).await {
            Ok(()) => {}
            Err(Stop::Shutdown) => return EndReason::Shutdown,
            Err(_) => return EndReason::EndOfInput,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return EndReason::EndOfInput;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defect::{Metric, Metrics, Phase};
    use crate::ingest::IngestMsg;
    use std::path::PathBuf;
    use tokio::sync::mpsc;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vqprobe-hls-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Runs `run` on `input` with a deadline; returns the messages.
    async fn run_local(input: &str, secs: f64) -> (EndReason, Vec<IngestMsg>) {
        let (tx, mut rx) = mpsc::channel(64);
        let src = HlsSource::parse(input, HlsOptions::default()).unwrap();
        let collector = tokio::spawn(async move {
            let mut v = vec![];
            while let Some(m) = rx.recv().await {
                v.push(m);
            }
            v
        });
        let cfg = LiveConfig {
            backoff_initial: 0.05,
            backoff_max: 0.2,
            ..LiveConfig::default()
        };
        let mut sink = Sink::new(tx, cfg);
        let (_stop, shutdown) = Shutdown::new();
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let reason = run(&src, &mut sink, shutdown, Some(deadline)).await;
        sink.finish(reason).await;
        (reason, collector.await.unwrap())
    }

    fn deliveries(msgs: &[IngestMsg]) -> Vec<(String, Phase, Metrics)> {
        msgs.iter()
            .filter_map(|m| match m {
                IngestMsg::Delivery(t, _) => {
                    Some((t.kind.as_str().to_string(), t.phase, t.metrics.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn text(m: &Metrics, name: &str) -> String {
        match m.iter().find(|(k, _)| *k == name).map(|(_, v)| v) {
            Some(Metric::Text(t)) => t.to_string(),
            other => panic!("{name}: {other:?} in {m:?}"),
        }
    }

    #[tokio::test]
    async fn local_fmp4_vod_plays_to_the_end() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fmp4/index.m3u8");
        let (reason, msgs) = run_local(dir.to_str().unwrap(), 20.0).await;
        assert_eq!(reason, EndReason::EndOfInput);
        let programs = msgs
            .iter()
            .filter(|m| matches!(m, IngestMsg::Program(_)))
            .count();
        assert_eq!(programs, 1);
        let video = msgs
            .iter()
            .filter(|m| matches!(m, IngestMsg::Packet(p) if p.track == super::super::Track::Video))
            .count();
        assert_eq!(video, 50, "2 s at 25 fps");
        assert!(deliveries(&msgs).is_empty(), "{:?}", deliveries(&msgs));
        assert!(matches!(
            msgs.last(),
            Some(IngestMsg::End(EndReason::EndOfInput))
        ));
    }

    #[tokio::test]
    async fn self_referencing_master_and_huge_playlists_are_source_down() {
        let d = tmpdir("loop");
        std::fs::write(
            d.join("master.m3u8"),
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nmaster.m3u8\n",
        )
        .unwrap();
        let (reason, msgs) = run_local(d.join("master.m3u8").to_str().unwrap(), 0.5).await;
        assert_eq!(reason, EndReason::EndOfInput);
        let dl = deliveries(&msgs);
        assert_eq!(dl[0].0, "source_down");
        assert!(text(&dl[0].2, "reason").contains("loop"), "{dl:?}");

        // Master → master → master → media: deeper than the limit.
        for (i, next) in ["m1.m3u8", "m2.m3u8", "m3.m3u8"].iter().enumerate() {
            std::fs::write(
                d.join(format!("m{i}.m3u8")),
                format!("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n{next}\n"),
            )
            .unwrap();
        }
        let (_, msgs) = run_local(d.join("m0.m3u8").to_str().unwrap(), 0.5).await;
        assert!(text(&deliveries(&msgs)[0].2, "reason").contains("nested"));

        let mut big = b"#EXTM3U\n".to_vec();
        big.resize(3 << 20, b'#');
        std::fs::write(d.join("big.m3u8"), big).unwrap();
        let (_, msgs) = run_local(d.join("big.m3u8").to_str().unwrap(), 0.5).await;
        let dl = deliveries(&msgs);
        assert!(
            text(&dl[0].2, "reason").contains("playlist larger than 1048576 bytes"),
            "{dl:?}"
        );

        std::fs::write(
            d.join("nov.m3u8"),
            "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=1\n",
        )
        .unwrap();
        let (_, msgs) = run_local(d.join("nov.m3u8").to_str().unwrap(), 0.3).await;
        assert_eq!(deliveries(&msgs)[0].0, "source_down");

        std::fs::write(
            d.join("empty.m3u8"),
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        let (reason, msgs) = run_local(d.join("empty.m3u8").to_str().unwrap(), 5.0).await;
        assert_eq!(reason, EndReason::EndOfInput);
        assert!(text(&deliveries(&msgs)[0].2, "reason").contains("no segments"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn missing_segment_is_one_segment_error_closed_by_the_next() {
        let d = tmpdir("missing");
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fmp4");
        for f in ["init.mp4", "seg0.m4s", "seg1.m4s"] {
            std::fs::copy(src.join(f), d.join(f)).unwrap();
        }
        std::fs::write(
            d.join("index.m3u8"),
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:1.0,\nseg0.m4s\n#EXTINF:-1,\ngone.m4s\n\
             #EXTINF:1.0,\nseg1.m4s\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        let (reason, msgs) = run_local(d.join("index.m3u8").to_str().unwrap(), 20.0).await;
        assert_eq!(reason, EndReason::EndOfInput);
        let dl = deliveries(&msgs);
        let kinds: Vec<(&str, Phase)> = dl.iter().map(|(k, p, _)| (k.as_str(), *p)).collect();
        assert_eq!(
            kinds,
            [
                ("segment_error", Phase::Start),
                ("segment_error", Phase::End)
            ]
        );
        assert!(text(&dl[0].2, "url").ends_with("gone.m4s"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
