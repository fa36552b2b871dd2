//! HLS playlist logic under arbitrary playlists: variant choice, the live window, byte
//! ranges and EXT-X-MAP.
//!
//! Input: a 16-byte header, then the playlist text. Header: `byte 0` the variant choice
//! (bits 0-1: highest bandwidth / max bandwidth / index), bytes 1-8 its parameter (u64
//! LE; index taken modulo 16), bytes 9-12 four signed media-sequence moves of the
//! simulated live reloads, byte 13 how many segments each reload drops from the end,
//! bytes 14-15 the length of a body a server sends when it ignores a range (u16 LE).
//!
//! Invariants: no panic; a master playlist's chosen variant exists, is not I-frame-only,
//! has a URI, and is the best fit (highest bandwidth; highest within the limit, else the
//! lowest; the n-th usable one), and resolving its URI against an http base never gives a
//! non-http(s) URL. On a media playlist: `effective_tags` has one entry per segment, each
//! naming an earlier-or-same segment that carries the tag (and the segment itself when
//! it carries one); over a series of reloads whose media sequence moves, the live window
//! lies within the playlist (every index < n), each media sequence number is fetched at
//! most once unless the origin restarted, skipped segments are counted; every byte
//! range (segments, with implicit offsets continuing the previous range of the same URI,
//! and EXT-X-MAP) either is refused or ends at or below 2^64, its `Range` header says
//! exactly that range, and its cut of a too-long body is inside the body and as long as
//! asked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m3u8_rs::Playlist;
use url::Url;
use vqprobe::ingest::hls::{
    byte_range, choose_variant, effective_tags, live_window, parse_playlist, range_header,
    range_in, resolve_uri, VariantChoice,
};

fn check_range(r: Option<(u64, u64)>, length: u64, offset: Option<u64>, body_len: usize) {
    let Some((off, len)) = r else { return };
    assert_eq!(len, length);
    if let Some(o) = offset {
        assert_eq!(off, o);
    }
    let end = off.checked_add(len);
    assert!(end.is_some(), "byte range {off}+{len} beyond 2^64 accepted");
    if len > 0 {
        let h = range_header(off, len);
        let (a, b) = h
            .strip_prefix("bytes=")
            .and_then(|x| x.split_once('-'))
            .expect("range header shape");
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(a, off, "{h}");
        assert_eq!(b - a, len - 1, "{h} for {off}+{len}");
    }
    if let Some(rg) = range_in(body_len, off, len) {
        assert!(rg.end <= body_len);
        assert_eq!(rg.start as u64, off);
        assert_eq!((rg.end - rg.start) as u64, len);
    } else {
        assert!(off.saturating_add(len) > body_len as u64);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (h, text) = data.split_at(16);
    let param = u64::from_le_bytes(h[1..9].try_into().unwrap());
    let choice = match h[0] & 3 {
        0 | 3 => VariantChoice::HighestBandwidth,
        1 => VariantChoice::MaxBandwidth(param),
        _ => VariantChoice::Index((param % 16) as usize),
    };
    let moves = [h[9] as i8, h[10] as i8, h[11] as i8, h[12] as i8];
    let drop_end = usize::from(h[13] & 7);
    let body_len = usize::from(u16::from_le_bytes([h[14], h[15]]));
    let base = Url::parse("http://origin.test/live/index.m3u8").unwrap();

    let pl = match parse_playlist(text) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    match pl {
        Playlist::MasterPlaylist(m) => {
            let usable: Vec<usize> = (0..m.variants.len())
                .filter(|&i| !m.variants[i].is_i_frame && !m.variants[i].uri.trim().is_empty())
                .collect();
            match choose_variant(&m.variants, choice) {
                Err(e) => {
                    assert!(!e.is_empty());
                    match choice {
                        VariantChoice::Index(n) => assert!(n >= usable.len()),
                        _ => assert!(usable.is_empty()),
                    }
                }
                Ok(i) => {
                    assert!(usable.contains(&i), "variant {i} is not usable");
                    let bw = |i: usize| m.variants[i].bandwidth;
                    match choice {
                        VariantChoice::HighestBandwidth => {
                            assert!(usable.iter().all(|&j| bw(j) <= bw(i)));
                        }
                        VariantChoice::MaxBandwidth(max) => {
                            if bw(i) <= max {
                                assert!(usable.iter().all(|&j| bw(j) <= bw(i) || bw(j) > max));
                            } else {
                                assert!(usable.iter().all(|&j| bw(j) > max && bw(j) >= bw(i)));
                            }
                        }
                        VariantChoice::Index(n) => assert_eq!(usable[n], i),
                    }
                    if let Ok(u) = resolve_uri(&base, &m.variants[i].uri) {
                        assert!(matches!(u.scheme(), "http" | "https"), "{u}");
                    }
                }
            }
        }
        Playlist::MediaPlaylist(pl) => {
            // EXT-X-MAP / EXT-X-KEY in force per segment.
            let tags = effective_tags(&pl);
            assert_eq!(tags.len(), pl.segments.len());
            for (i, &(map, key)) in tags.iter().enumerate() {
                let prev = if i == 0 { (None, None) } else { tags[i - 1] };
                let seg = &pl.segments[i];
                assert_eq!(map, if seg.map.is_some() { Some(i) } else { prev.0 });
                assert_eq!(key, if seg.key.is_some() { Some(i) } else { prev.1 });
                if let Some(m) = map {
                    assert!(m <= i && pl.segments[m].map.is_some());
                }
            }

            // Byte ranges, as the runner resolves them in playlist order.
            let mut range_end: Option<(Url, u64)> = None;
            for seg in &pl.segments {
                if let Some(map) = &seg.map {
                    if let Some(b) = &map.byte_range {
                        check_range(
                            byte_range(b.length, b.offset, None),
                            b.length,
                            b.offset,
                            body_len,
                        );
                    }
                }
                let Some(b) = &seg.byte_range else { continue };
                let Ok(url) = resolve_uri(&base, &seg.uri) else {
                    continue;
                };
                assert!(matches!(url.scheme(), "http" | "https"));
                let prev = match &range_end {
                    Some((u, e)) if *u == url => Some(*e),
                    _ => None,
                };
                let r = byte_range(b.length, b.offset, prev);
                if b.offset.is_none() {
                    if let (Some(p), Some((off, _))) = (prev, r) {
                        assert_eq!(off, p, "implicit offset does not continue");
                    }
                }
                check_range(r, b.length, b.offset, body_len);
                if let Some((off, len)) = r {
                    range_end = Some((url, off + len));
                }
            }

            // Live reloads: the window moves by `moves`, the list loses `drop_end` segments.
            let mut first = pl.media_sequence;
            let mut next: Option<u64> = None;
            let mut fetched_up_to: Option<u64> = None;
            for (k, mv) in std::iter::once(0i8).chain(moves).enumerate() {
                first = if mv >= 0 {
                    first.saturating_add(mv as u64)
                } else {
                    first.saturating_sub(u64::from(mv.unsigned_abs()))
                };
                let n = if k == 0 {
                    pl.segments.len()
                } else {
                    pl.segments.len().saturating_sub(drop_end * (k % 2))
                };
                let w = live_window(first, n, next);
                assert!(w.from >= first, "{w:?} before the window ({first})");
                assert!(w.end <= first.saturating_add(n as u64));
                let fetch = w.end.saturating_sub(w.from);
                assert!(fetch <= n as u64, "{w:?}: more than {n} segments");
                for seq in w.from..w.end {
                    assert!(((seq - first) as usize) < n);
                }
                match next {
                    None => assert!(fetch <= 3),
                    Some(s) if w.restarted => assert!(s > first.saturating_add(n as u64)),
                    Some(s) => {
                        assert_eq!(w.skipped, first.saturating_sub(s));
                        assert_eq!(w.from, s.max(first));
                    }
                }
                if w.restarted {
                    // The origin started over: its numbers count again from anywhere.
                    fetched_up_to = None;
                }
                if fetch > 0 {
                    if let Some(last) = fetched_up_to {
                        assert!(w.from >= last, "segment {} fetched twice: {w:?}", w.from);
                    }
                }
                if fetch > 0 {
                    fetched_up_to = Some(w.end);
                }
                next = Some(if fetch > 0 { w.end } else { w.next });
            }
        }
    }
});
