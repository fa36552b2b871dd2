//! Playlist logic, as pure functions: parsing (never panicking), variant choice, URI
//! resolution and its scheme rules, the live window and where to start, reload timing and
//! staleness, per-segment tags and byte ranges, and where a segment lies on the media
//! timeline ([`SegmentClock`]).
//!
//! Owns no I/O, no clock and no state beyond the values passed in: everything here is
//! unit-tested (and fuzzed, `fuzz/fuzz_targets/hls.rs`) without a network. It may not
//! fetch, sleep, or talk to the sink; the scheduler (`super`) does that with its answers.

use std::time::Duration;

use m3u8_rs::{MediaPlaylist, Playlist, VariantStream};
use serde::{Deserialize, Serialize};
use url::Url;

/// Which variant of a master playlist to monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantChoice {
    /// The one with the highest `BANDWIDTH` (what viewers on a good line get).
    #[default]
    HighestBandwidth,
    /// The highest `BANDWIDTH` not above this many bits/s (the lowest if none fits).
    MaxBandwidth(u64),
    /// The n-th variant (0-based, in playlist order, I-frame playlists not counted).
    Index(usize),
}

/// Picks a variant; Err when none fits. I-frame-only variants are never chosen.
pub fn choose_variant(
    variants: &[VariantStream],
    choice: VariantChoice,
) -> std::result::Result<usize, String> {
    let usable: Vec<usize> = variants
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_i_frame && !v.uri.trim().is_empty())
        .map(|(i, _)| i)
        .collect();
    if usable.is_empty() {
        return Err("the master playlist lists no variants".into());
    }
    // Highest bandwidth among `c`, the first of equals.
    let highest = |c: &mut dyn Iterator<Item = usize>| {
        c.fold(None::<usize>, |best, i| match best {
            Some(b) if variants[b].bandwidth >= variants[i].bandwidth => Some(b),
            _ => Some(i),
        })
    };
    match choice {
        VariantChoice::HighestBandwidth => Ok(highest(&mut usable.iter().copied()).unwrap_or(0)),
        VariantChoice::MaxBandwidth(max) => {
            let fit = highest(
                &mut usable
                    .iter()
                    .copied()
                    .filter(|&i| variants[i].bandwidth <= max),
            );
            Ok(fit.unwrap_or_else(|| {
                let lowest = usable
                    .iter()
                    .copied()
                    .min_by_key(|&i| variants[i].bandwidth)
                    .unwrap_or(0);
                tracing::warn!(
                    max,
                    lowest = variants[lowest].bandwidth,
                    "no HLS variant within the bandwidth limit: taking the lowest"
                );
                lowest
            }))
        }
        VariantChoice::Index(n) => usable.get(n).copied().ok_or_else(|| {
            format!(
                "variant {n} requested, the master playlist lists {}",
                usable.len()
            )
        }),
    }
}

/// How long to wait before reloading a live playlist, from the start of the last load
/// (RFC 8216 §6.3.4): the target duration after a change, half of it otherwise; bounded
/// to [0.5 s, 30 s] whatever the playlist says.
pub fn reload_delay(target_s: f64, changed: bool) -> Duration {
    let t = if target_s.is_finite() && target_s > 0.0 {
        target_s
    } else {
        0.0
    };
    let d = if changed { t } else { t / 2.0 };
    Duration::from_secs_f64(d.clamp(0.5, 30.0))
}

/// Whether a live playlist unchanged for `unchanged_s` is stale.
pub fn is_stale(unchanged_s: f64, target_s: f64, factor: f64) -> bool {
    unchanged_s > factor * target_s
}

/// The target duration used for timing: the playlist's, within [1 s, 60 s].
pub(super) fn sane_target(t: u64) -> f64 {
    (t as f64).clamp(1.0, 60.0)
}

/// A segment's EXTINF duration if it is usable (finite, positive, under an hour).
pub(super) fn sane_duration(d: f32, seq: u64) -> Option<f64> {
    let d = f64::from(d);
    if d.is_finite() && d > 0.0 && d <= 3600.0 {
        Some(d)
    } else {
        tracing::warn!(
            seq,
            duration = d,
            "HLS segment with an unusable EXTINF duration: ignored"
        );
        None
    }
}

/// Parses a playlist; never panics (the parser runs under `catch_unwind`).
pub fn parse_playlist(bytes: &[u8]) -> std::result::Result<Playlist, String> {
    let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    if !b[start..].starts_with(b"#EXTM3U") {
        return Err("not an M3U8 playlist (no #EXTM3U)".into());
    }
    match std::panic::catch_unwind(|| m3u8_rs::parse_playlist_res(&b[start..]).map_err(|_| ())) {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(())) => Err("unreadable M3U8 playlist".into()),
        Err(_) => Err("unreadable M3U8 playlist (parser failure)".into()),
    }
}

/// Resolves a playlist URI against the playlist's URL, refusing schemes the playlist may
/// not use (a remote playlist may only name http(s) URIs).
pub fn resolve_uri(base: &Url, uri: &str) -> std::result::Result<Url, String> {
    let u = base
        .join(uri.trim())
        .map_err(|e| format!("bad URI in the playlist: {e}"))?;
    let ok = match base.scheme() {
        "file" => matches!(u.scheme(), "file" | "http" | "https"),
        _ => matches!(u.scheme(), "http" | "https"),
    };
    if ok {
        Ok(u)
    } else {
        Err(format!(
            "URI scheme '{}' not allowed in a {} playlist",
            u.scheme(),
            base.scheme()
        ))
    }
}

/// Segment-level facts of a media playlist: for each segment, the index of the segment
/// carrying its effective EXT-X-MAP and EXT-X-KEY (m3u8-rs attaches them to the next
/// segment only; they apply until the next such tag).
pub fn effective_tags(pl: &MediaPlaylist) -> Vec<(Option<usize>, Option<usize>)> {
    let (mut map, mut key) = (None, None);
    pl.segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.map.is_some() {
                map = Some(i);
            }
            if s.key.is_some() {
                key = Some(i);
            }
            (map, key)
        })
        .collect()
}

/// The (offset, length) of an EXT-X-BYTERANGE (or of an EXT-X-MAP's BYTERANGE): without
/// an offset it starts where the previous range of the same resource ended, `prev_end`
/// (RFC 8216 §4.3.2.2), else at 0.
/// None when the range ends beyond 2^64 − 1: it cannot be asked for (a `Range` header
/// would silently ask for less) nor continued by the next range.
pub fn byte_range(length: u64, offset: Option<u64>, prev_end: Option<u64>) -> Option<(u64, u64)> {
    let off = offset.or(prev_end).unwrap_or(0);
    off.checked_add(length)?;
    Some((off, length))
}

/// Why [`byte_range`] refused a range.
pub(super) fn range_error(length: u64, offset: Option<u64>) -> String {
    match offset {
        Some(o) => format!("byte range {length}@{o} ends beyond 2^64 bytes"),
        None => format!("byte range {length} (continued) ends beyond 2^64 bytes"),
    }
}

/// What to fetch of a live playlist after a load (RFC 8216 §6.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveWindow {
    /// The media sequence number expected next (remembered across loads; may lie past
    /// the playlist's end while the origin catches up).
    pub next: u64,
    /// The segments to fetch now, by media sequence number: `from..end`, always within
    /// the playlist (`first <= from`, `end <= first + n`).
    pub from: u64,
    pub end: u64,
    /// Segments that left the window before they were fetched.
    pub skipped: u64,
    /// The media sequence went back (origin restarted): started again near the end.
    pub restarted: bool,
}

/// The live window of a playlist whose first segment is `first` and which lists `n`
/// segments, `next_seq` being the segment expected next (None on the first load: start
/// three segments from the end).
pub fn live_window(first: u64, n: usize, next_seq: Option<u64>) -> LiveWindow {
    let n = n as u64;
    let end = first.saturating_add(n);
    let start = first.saturating_add(n.saturating_sub(3));
    let (next, skipped, restarted) = match next_seq {
        None => (start, 0, false),
        Some(s) if s < first => (first, first - s, false),
        Some(s) if s > end.saturating_add(3) => (start, 0, true),
        Some(s) => (s, 0, false),
    };
    LiveWindow {
        next,
        from: next.max(first),
        end,
        skipped,
        restarted,
    }
}

/// What identifies a playlist's content for "has it changed" (RFC 8216 §6.3.4).
pub(super) fn playlist_key(pl: &MediaPlaylist) -> (u64, usize, Option<&str>, bool) {
    (
        pl.media_sequence,
        pl.segments.len(),
        pl.segments.last().map(|s| s.uri.as_str()),
        pl.end_list,
    )
}

/// Where segments lie on the stream's media timeline (90 kHz PTS, the timeline of
/// [`crate::ingest::Packet::pts`]), so that a delivery defect about a segment is timed
/// like the pictures in it.
///
/// The rule: a segment **starts** at its own first timestamp when one can be read from
/// it; otherwise where the segment before it ended, i.e. the last readable start plus
/// the EXTINF durations of the segments since (a damaged, unreadable or unfetchable
/// segment is placed right after its predecessor). It **ends** its EXTINF duration (the
/// target duration when EXTINF is unusable) after its start. Before the first timestamp,
/// and after segments left a live window unfetched (their durations are unknown), there
/// is no position until the next readable timestamp: such defects keep the session clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentClock {
    /// Where the next segment is expected to start.
    next: Option<i64>,
}

impl SegmentClock {
    /// Places the next segment in playlist order: `first_pts` is its first timestamp
    /// when one could be read, `dur_s` its duration. Returns its span (start, end) and
    /// moves past it.
    pub fn place(&mut self, first_pts: Option<i64>, dur_s: f64) -> Option<(i64, i64)> {
        let start = first_pts.or(self.next)?;
        let dur = if dur_s.is_finite() {
            dur_s.clamp(0.0, 3600.0)
        } else {
            0.0
        };
        let end = start.saturating_add(crate::timebase::ticks(dur));
        self.next = Some(end);
        Some((start, end))
    }

    /// Where the next segment is expected to start (None: unknown).
    pub fn next(&self) -> Option<i64> {
        self.next
    }

    /// Segments went by unseen (left a live window): positions are unknown until the
    /// next readable timestamp.
    pub fn lose(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(uri: &str, bandwidth: u64, iframe: bool) -> VariantStream {
        VariantStream {
            uri: uri.into(),
            bandwidth,
            is_i_frame: iframe,
            ..Default::default()
        }
    }

    #[test]
    fn variant_choice() {
        let v = vec![
            variant("lo.m3u8", 300_000, false),
            variant("iframes.m3u8", 9_000_000, true),
            variant("hi.m3u8", 3_000_000, false),
            variant("mid.m3u8", 1_000_000, false),
            variant("hi2.m3u8", 3_000_000, false),
        ];
        assert_eq!(choose_variant(&v, VariantChoice::HighestBandwidth), Ok(2));
        assert_eq!(
            choose_variant(&v, VariantChoice::MaxBandwidth(1_500_000)),
            Ok(3)
        );
        assert_eq!(
            choose_variant(&v, VariantChoice::MaxBandwidth(1)),
            Ok(0),
            "lowest"
        );
        assert_eq!(choose_variant(&v, VariantChoice::Index(0)), Ok(0));
        assert_eq!(
            choose_variant(&v, VariantChoice::Index(1)),
            Ok(2),
            "I-frame skipped"
        );
        assert!(choose_variant(&v, VariantChoice::Index(4)).is_err());
        let e = choose_variant(&[], VariantChoice::HighestBandwidth).unwrap_err();
        assert!(e.contains("no variants"), "{e}");
        let only_iframes = vec![variant("i.m3u8", 1, true)];
        assert!(choose_variant(&only_iframes, VariantChoice::HighestBandwidth).is_err());
    }

    /// Found by the `hls` fuzz target: a byte range ending beyond 2^64 was accepted and
    /// saturated: `Range: bytes=18446744073709551600-18446744073709551615` asked for 16
    /// bytes instead of 100, and the next range without an offset started at u64::MAX.
    /// (The `Range` header and the cut of a whole body: `fetch` tests.)
    #[test]
    fn byte_ranges_beyond_2_64_are_refused() {
        assert_eq!(byte_range(100, Some(400), None), Some((400, 100)));
        assert_eq!(byte_range(100, None, Some(500)), Some((500, 100)));
        assert_eq!(byte_range(100, None, None), Some((0, 100)));
        assert_eq!(
            byte_range(16, Some(u64::MAX - 16), None),
            Some((u64::MAX - 16, 16))
        );
        assert_eq!(byte_range(100, Some(u64::MAX - 99 + 1), None), None);
        assert_eq!(byte_range(100, None, Some(u64::MAX)), None);
        assert_eq!(byte_range(u64::MAX, Some(1), None), None);
    }

    #[test]
    fn reload_timing_follows_rfc8216_and_is_bounded() {
        assert_eq!(reload_delay(6.0, true), Duration::from_secs(6));
        assert_eq!(reload_delay(6.0, false), Duration::from_secs(3));
        assert_eq!(reload_delay(0.0, true), Duration::from_millis(500));
        assert_eq!(reload_delay(f64::NAN, false), Duration::from_millis(500));
        assert_eq!(reload_delay(1e12, true), Duration::from_secs(30));
        assert_eq!(reload_delay(-5.0, true), Duration::from_millis(500));
        assert_eq!(sane_target(0), 1.0);
        assert_eq!(sane_target(u64::MAX), 60.0);
        assert!(!is_stale(2.9, 2.0, 1.5));
        assert!(is_stale(3.1, 2.0, 1.5));
    }

    #[test]
    fn live_window_starts_three_from_the_end_and_fetches_each_segment_once() {
        let w = live_window(100, 10, None);
        assert_eq!((w.next, w.from, w.end), (107, 107, 110));
        // Next load: the window slid by two; 110 is next.
        let w = live_window(102, 10, Some(110));
        assert_eq!(
            (w.from, w.end, w.skipped, w.restarted),
            (110, 112, 0, false)
        );
        // Fell behind: 3 segments left the window unfetched.
        let w = live_window(113, 10, Some(110));
        assert_eq!((w.from, w.skipped), (113, 3));
        // The sequence went back: origin restarted, start near the end again.
        let w = live_window(0, 5, Some(500));
        assert_eq!((w.from, w.restarted), (2, true));
    }

    #[test]
    fn hostile_playlists_parse_or_fail_without_panicking() {
        let bad_extinf = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:-5,\na.ts\n\
            #EXTINF:99999999999999999999999999999999999999999999,\nb.ts\n#EXTINF:nan,\nc.ts\n";
        if let Ok(Playlist::MediaPlaylist(m)) = parse_playlist(bad_extinf) {
            for (i, s) in m.segments.iter().enumerate() {
                // Unusable durations are ignored, never slept on.
                let _ = sane_duration(s.duration, i as u64);
            }
        }
        assert_eq!(sane_duration(-5.0, 0), None);
        assert_eq!(sane_duration(f32::INFINITY, 0), None);
        assert_eq!(sane_duration(2.0, 0), Some(2.0));
        assert!(parse_playlist(b"<html>nope</html>").is_err());
        assert!(parse_playlist(b"").is_err());
        let no_variants = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n";
        if let Ok(Playlist::MasterPlaylist(m)) = parse_playlist(no_variants) {
            assert!(choose_variant(&m.variants, VariantChoice::HighestBandwidth).is_err());
        }
        let mut x: u32 = 7;
        let base = b"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"i.mp4\",BYTERANGE=\"10@0\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXTINF:2.0,\n#EXT-X-BYTERANGE:100@5\ns.m4s\n#EXT-X-STREAM-INF:BANDWIDTH=5,RESOLUTION=1x1\nv.m3u8\n";
        for _ in 0..2000 {
            let mut b = base.to_vec();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = 7 + x as usize % (b.len() - 7);
                b[i] = (x >> 24) as u8;
            }
            let _ = parse_playlist(&b);
        }
    }

    #[test]
    fn remote_playlists_cannot_name_local_files() {
        let remote = Url::parse("http://h/a/index.m3u8").unwrap();
        assert!(resolve_uri(&remote, "file:///etc/passwd").is_err());
        assert!(resolve_uri(&remote, "data:text/plain,x").is_err());
        assert_eq!(
            resolve_uri(&remote, "../b/seg1.ts").unwrap().as_str(),
            "http://h/b/seg1.ts"
        );
        let local = Url::parse("file:///tmp/x/index.m3u8").unwrap();
        assert_eq!(
            resolve_uri(&local, "seg0.ts").unwrap().as_str(),
            "file:///tmp/x/seg0.ts"
        );
    }

    /// The position rule of [`SegmentClock`]: own timestamp first, else right after the
    /// segment before (its start plus its EXTINF), nothing before the first timestamp or
    /// after segments went by unseen.
    #[test]
    fn segments_are_placed_by_their_timestamp_else_after_the_one_before() {
        const S: i64 = crate::timebase::HZ;
        let mut c = SegmentClock::default();
        // A damaged first segment: no timestamp to go by, no position.
        assert_eq!(c.place(None, 2.0), None);
        // Readable: its own first timestamp (1.4 s), two seconds long.
        assert_eq!(
            c.place(Some(126_000), 2.0),
            Some((126_000, 126_000 + 2 * S))
        );
        // Two unreadable ones in a row: each right after the one before, by EXTINF.
        let s2 = 126_000 + 2 * S;
        assert_eq!(c.place(None, 2.0), Some((s2, s2 + 2 * S)));
        assert_eq!(
            c.place(None, 1.5),
            Some((s2 + 2 * S, s2 + 2 * S + 3 * S / 2))
        );
        // A readable one re-anchors on its own timestamp (EXTINF drift is not carried).
        assert_eq!(c.place(Some(10 * S), 2.0), Some((10 * S, 12 * S)));
        assert_eq!(c.next(), Some(12 * S));
        // Unusable durations never move the clock backwards or by hours.
        assert_eq!(c.place(None, f64::NAN), Some((12 * S, 12 * S)));
        assert_eq!(c.place(None, -3.0), Some((12 * S, 12 * S)));
        // Segments left the live window unfetched: unknown until the next timestamp.
        c.lose();
        assert_eq!(c.place(None, 2.0), None);
        assert_eq!(c.place(Some(50 * S), 2.0), Some((50 * S, 52 * S)));
    }
}
