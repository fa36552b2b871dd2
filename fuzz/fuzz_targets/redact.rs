//! URL redaction: nothing of a URL's user info, query or fragment is ever printed.
//!
//! Input: six fields separated by 0x00 bytes: user info, host, port, path, query,
//! fragment (missing fields are absent; a field that is present but empty still counts
//! as present for the user info, query and fragment). The user info, query and fragment
//! are taken as they are (any UTF-8 after lossy decoding: unencoded `/ ? # @ :`, spaces,
//! anything); the host is made valid (letters/digits/`-.`, or `[::1]`), the port digits,
//! the path gets no `?`/`#` (it may hold `@`). The URL is
//! `rtsp://[userinfo@]host[:port][path][?query][#fragment]`.
//!
//! Property, stated exactly (short secrets make "the secret does not appear" meaningless:
//! a one-byte password `a` "appears" in any host with an `a`): the output of `redact_url`
//! is `rtsp://` followed by pieces separated by the `***` marker, and every piece, without
//! a leading `@` and a trailing `?` or `#`, is a substring of `host[:port]path`. So no
//! byte of the user info (password included), query or fragment is shown except where the
//! same bytes are in the public host, port or path. Also: `redact_in_text` applied to the
//! URL inside a sentence gives the same as `redact_url` when the URL has no whitespace,
//! quote or `<>`; nothing panics on the raw input either (`redact_url`, `redact_in_text`,
//! `take_credentials`, `percent_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vqprobe::redact::{percent_decode, redact_in_text, redact_url, take_credentials};

fn host_of(b: &[u8]) -> String {
    if b.first() == Some(&b'[') {
        return "[::1]".into();
    }
    const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-.";
    let mut h = String::new();
    h.push(FIRST[b.first().map_or(0, |&c| c as usize) % FIRST.len()] as char);
    for &c in b.iter().skip(1).take(24) {
        h.push(REST[c as usize % REST.len()] as char);
    }
    h
}

fn shows_only(out: &str, public: &str) -> bool {
    let Some(rest) = out.strip_prefix("rtsp://") else {
        return false;
    };
    rest.split("***").all(|piece| {
        let p = piece.trim_start_matches('@').trim_end_matches(['?', '#']);
        public.contains(p)
    })
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let _ = redact_url(&raw);
    let _ = redact_in_text(&raw);
    let _ = take_credentials(&raw);
    let _ = percent_decode(&raw);

    let f: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let field = |i: usize| f.get(i).map(|b| String::from_utf8_lossy(b).into_owned());
    let userinfo = field(0).filter(|s| !s.is_empty());
    let host = host_of(f.get(1).copied().unwrap_or(b"h"));
    let port: Option<String> = f
        .get(2)
        .filter(|b| !b.is_empty())
        .map(|b| b.iter().take(5).map(|c| char::from(b'0' + c % 10)).collect());
    let path: String = field(3)
        .map(|p| {
            let p: String = p.chars().map(|c| if matches!(c, '?' | '#') { '/' } else { c }).collect();
            if p.is_empty() || p.starts_with('/') {
                p
            } else {
                format!("/{p}")
            }
        })
        .unwrap_or_default();
    let query = field(4);
    let fragment = field(5);

    let hp = match &port {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut url = String::from("rtsp://");
    if let Some(u) = &userinfo {
        url.push_str(u);
        url.push('@');
    }
    url.push_str(&hp);
    url.push_str(&path);
    if let Some(q) = &query {
        url.push('?');
        url.push_str(q);
    }
    if let Some(fr) = &fragment {
        url.push('#');
        url.push_str(fr);
    }
    let out = redact_url(&url);
    assert!(
        shows_only(&out, &format!("{hp}{path}")),
        "redact_url shows secret bytes:\n  url: {url:?}\n  out: {out:?}"
    );
    let plain = !url
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'));
    if plain {
        let t = redact_in_text(&format!("error: {url} failed"));
        assert_eq!(t, format!("error: {out} failed"), "url: {url:?}");
    }
});
