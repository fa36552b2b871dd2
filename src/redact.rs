//! Credential redaction for anything that may print a URL, and the one URL splitter that
//! finds the credentials in a URL.
//!
//! Boundaries: a leaf; pure string functions, no logging.
//!
//! Every URL that is printed anywhere (logs, events, stats, status, errors) goes through
//! [`redact_url`]; error text from other crates that may embed a URL goes through
//! [`redact_in_text`]. What is kept: scheme, host, port and path. What is hidden: the
//! user info (`user:password@` → `***@`), the query (`?***`) and the fragment (`#***`):
//! signed-URL tokens live in the query. The path is shown: it is what tells an operator
//! which stream is meant (a token embedded in the *path* is not recognised).
//!
//! # Splitting `scheme://userinfo@host:port/path?query#fragment`
//!
//! Passwords are often pasted into URLs without percent-encoding, and may then contain
//! `/`, `?`, `#`, `:` or `@`. [`split_url`] agrees with the standard split (the authority
//! ends at the first `/`, `?` or `#`; the user info at the last `@` in it) whenever that
//! split gives a valid authority: user info with an `@`, or a valid `host[:port]`. When the
//! standard authority is not valid (`admin:p` of `rtsp://admin:p/ss@cam/x`: port `p`), the
//! user info ends at the **first `@` that is followed by a valid `host[:port]` and then `/`,
//! `?`, `#` or the end** (host: letters, digits, `-._~%`, non-ASCII, or an `[IP literal]`;
//! port: digits). So no URL a standard parser accepts is read differently, and a password
//! with unencoded delimiters is still split off. Only `%XX` is decoded ([`percent_decode`]);
//! `+` is a plus.
//!
//! Some passwords stay ambiguous for parsing (`u:12/34@cam` reads as host `u`, port 12:
//! percent-encode such passwords). Redaction never depends on guessing right: what
//! `redact_url` shows is always a piece of the host\[:port\] and path that follow the real
//! user info, whatever bytes the user info, query and fragment hold (see its docs).

/// The parts of `scheme://[userinfo@]host[:port][/path][?query][#fragment]`, as raw
/// (still percent-encoded) slices of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// Without `://`.
    pub scheme: &'a str,
    /// Without the `@`.
    pub userinfo: Option<&'a str>,
    /// `host[:port]` (may be empty, as in `file:///path`).
    pub host_port: &'a str,
    /// Empty or starting with `/`.
    pub path: &'a str,
    /// Without the `?`.
    pub query: Option<&'a str>,
    /// Without the `#`.
    pub fragment: Option<&'a str>,
}

/// Splits a URL with an authority (`scheme://…`); None for anything else (local paths,
/// `mailto:`-style URLs). Never fails on odd input: see the module docs for the rule.
pub fn split_url(s: &str) -> Option<UrlParts<'_>> {
    let sep = s.find("://")?;
    let scheme = &s[..sep];
    if !is_scheme(scheme) {
        return None;
    }
    let rest = &s[sep + 3..];
    let (userinfo, after) = match userinfo_end(rest) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let host_port = &after[..host_end];
    let after = &after[host_end..];
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    let path = &after[..path_end];
    let after = &after[path_end..];
    let (query, fragment) = match after.strip_prefix('?') {
        Some(q) => match q.find('#') {
            Some(h) => (Some(&q[..h]), Some(&q[h + 1..])),
            None => (Some(q), None),
        },
        None => (None, after.strip_prefix('#')),
    };
    Some(UrlParts {
        scheme,
        userinfo,
        host_port,
        path,
        query,
        fragment,
    })
}

fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// Byte offset (in `rest`, the text after `://`) of the `@` that ends the user info.
fn userinfo_end(rest: &str) -> Option<usize> {
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if let Some(at) = authority.rfind('@') {
        return Some(at);
    }
    if authority.is_empty() || is_host_port(authority) {
        return None;
    }
    let b = rest.as_bytes();
    (0..b.len()).find(|&i| b[i] == b'@' && is_userinfo_end(rest, i))
}

/// True for a valid, complete `host[:port]`.
pub fn is_host_port(s: &str) -> bool {
    host_port_len(s.as_bytes()) == Some(s.len())
}

/// True when the `@` at byte `at` of `rest` (the text after `scheme://`) is followed by a
/// valid `host[:port]` and then `/`, `?`, `#` or the end: the rule that ends the user info.
pub fn is_userinfo_end(rest: &str, at: usize) -> bool {
    if rest.as_bytes().get(at) != Some(&b'@') {
        return false;
    }
    let t = &rest.as_bytes()[at + 1..];
    match host_port_len(t) {
        Some(n) => t.get(n).is_none_or(|c| matches!(c, b'/' | b'?' | b'#')),
        None => false,
    }
}

/// Length of a valid non-empty `host[:port]` at the start of `t`.
fn host_port_len(t: &[u8]) -> Option<usize> {
    let mut i = if t.first() == Some(&b'[') {
        let close = t.iter().position(|&c| c == b']')?;
        let inner = &t[1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b':' | b'.' | b'%' | b'-'))
        {
            return None;
        }
        close + 1
    } else {
        let n = t
            .iter()
            .take_while(|&&c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, b'-' | b'.' | b'_' | b'~' | b'%')
                    || c >= 0x80
            })
            .count();
        if n == 0 {
            return None;
        }
        n
    };
    if t.get(i) == Some(&b':') {
        // A port has at least one digit (`host:` is not taken for a host).
        let digits = t[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            i += 1 + digits;
        }
    }
    Some(i)
}

/// The URL as it may be printed: `scheme://***@host:port/path?***#***` (each part only
/// when present). Anything that is not a `scheme://` URL (a local path) is returned as
/// is. One function for every URL that is printed, anywhere.
///
/// Property (tested with proptest and fuzzed): for a URL `scheme://U@H/P?Q#F` with a valid
/// host\[:port\] `H`, any bytes in the user info `U`, the query `Q` and the fragment `F`, and
/// a path `P`, every piece of the output between the `***` markers is a substring of `H`
/// and `P`: nothing of `U`, `Q` or `F` is ever shown. To keep that when the split is
/// ambiguous, the output hides more: an `@` in the path shows only what follows the last
/// one (`***@cam/x`), an `@` in the query or fragment, or an invalid host, shows nothing
/// after the scheme (`***`).
///
/// ```
/// use vqprobe::redact::redact_url;
/// assert_eq!(redact_url("rtsp://admin:s3cret@10.0.0.1/live"), "rtsp://***@10.0.0.1/live");
/// assert_eq!(redact_url("https://cdn/x.m3u8?sig=abc#t"), "https://cdn/x.m3u8?***#***");
/// assert_eq!(redact_url("rtsp://admin:p/ss@cam:554/x"), "rtsp://***@cam:554/x");
/// assert_eq!(redact_url("/srv/clip.ts"), "/srv/clip.ts");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(u) = split_url(url) else {
        return url.to_string();
    };
    let mut out = String::with_capacity(url.len().min(256));
    out.push_str(u.scheme);
    out.push_str("://");
    let at_in_tail =
        u.query.is_some_and(|q| q.contains('@')) || u.fragment.is_some_and(|f| f.contains('@'));
    if at_in_tail || !(u.host_port.is_empty() || is_host_port(u.host_port)) {
        // The query may hold the end of a password (`u:12?34@cam`), or the URL is not
        // one: show nothing but the scheme.
        out.push_str("***");
    } else if let Some(i) = u.path.rfind('@') {
        // `u:12/34@cam/x` read as host `u:12`: what follows the last `@` may be the real
        // host and path, what precedes it a password.
        out.push_str("***@");
        out.push_str(&u.path[i + 1..]);
    } else {
        if u.userinfo.is_some() {
            out.push_str("***@");
        }
        out.push_str(u.host_port);
        out.push_str(u.path);
    }
    if u.query.is_some() {
        out.push_str("?***");
    }
    if u.fragment.is_some() {
        out.push_str("#***");
    }
    out
}

/// A parsed URL as it may be printed: [`redact_url`] (`scheme://***@host:port/path?***`);
/// a local `file://` URL without query or fragment as its path (sources show local
/// inputs the way they were given).
///
/// ```
/// use vqprobe::redact::display_url;
/// let u = url::Url::parse("https://u:p@cdn/x.m3u8?sig=1").unwrap();
/// assert_eq!(display_url(&u), "https://***@cdn/x.m3u8?***");
/// let f = url::Url::parse("file:///srv/live/index.m3u8").unwrap();
/// assert_eq!(display_url(&f), "/srv/live/index.m3u8");
/// ```
pub fn display_url(u: &url::Url) -> String {
    if u.scheme() == "file" && u.query().is_none() && u.fragment().is_none() {
        if let Ok(p) = u.to_file_path() {
            return p.display().to_string();
        }
    }
    redact_url(u.as_str())
}

/// Redacts every `scheme://…` URL inside free text (error messages of other crates,
/// which embed URLs): each runs from its scheme to the next whitespace, quote or `<>`
/// and is replaced by [`redact_url`] of it. Text without `://` is returned unchanged.
pub fn redact_in_text(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut done = 0; // bytes of `text` already copied or replaced
    let mut search = 0;
    while let Some(rel) = text[search..].find("://") {
        let sep = search + rel;
        // Back up over the scheme.
        let mut start = sep;
        while start > done
            && (b[start - 1].is_ascii_alphanumeric() || matches!(b[start - 1], b'+' | b'-' | b'.'))
        {
            start -= 1;
        }
        while start < sep && !b[start].is_ascii_alphabetic() {
            start += 1;
        }
        let end = text[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(text.len(), |e| sep + e);
        if start == sep {
            search = sep + 3;
            continue;
        }
        out.push_str(&text[done..start]);
        out.push_str(&redact_url(&text[start..end]));
        done = end;
        search = end.max(sep + 3);
        if search >= text.len() {
            break;
        }
    }
    out.push_str(&text[done..]);
    out
}

/// Replaces every occurrence of the given secrets (2 bytes or longer) in `text` by `***`:
/// a last line of defence for messages that may quote a known password.
pub fn redact_secrets(text: &str, secrets: &[&str]) -> String {
    let mut t = text.to_string();
    for s in secrets {
        if s.len() >= 2 {
            t = t.replace(s, "***");
        }
    }
    t
}

/// Percent-decoding of URL user info: `%XX` becomes the byte XX; everything else,
/// including `+` and a `%` not followed by two hex digits, is kept as it is. Bytes that
/// are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes every byte outside `A-Z a-z 0-9 - . _ ~`.
/// `url` (`scheme://rest`, without user info) with `user` and `password` put in as
/// percent-encoded user info; `None` when `url` is not `scheme://…` or already has user
/// info. The result is a secret like any URL with a password: log it through
/// [`redact_url`].
pub fn with_credentials(url: &str, user: &str, password: &str) -> Option<String> {
    let u = split_url(url)?;
    if u.userinfo.is_some() {
        return None;
    }
    let (_, rest) = url.split_once("://")?;
    Some(format!(
        "{}://{}:{}@{rest}",
        u.scheme,
        percent_encode(user),
        percent_encode(password)
    ))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Credentials found in a URL's user info (percent-decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct UrlCredentials {
    pub user: String,
    pub password: Option<Secret>,
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlCredentials(***)")
    }
}

/// Splits the credentials off a URL with [`split_url`]'s rule. Returns the URL without
/// user info (for a standard parser such as `url::Url`), the same URL with the user info
/// percent-encoded so that standard parsers split it as [`split_url`] does (for clients
/// that take credentials from the URL), and the decoded credentials. Input that is not a
/// `scheme://` URL comes back unchanged, without credentials.
pub fn take_credentials(input: &str) -> (String, String, Option<UrlCredentials>) {
    let Some(u) = split_url(input) else {
        return (input.to_string(), input.to_string(), None);
    };
    let mut tail = String::new();
    tail.push_str(u.host_port);
    tail.push_str(u.path);
    if let Some(q) = u.query {
        tail.push('?');
        tail.push_str(q);
    }
    if let Some(f) = u.fragment {
        tail.push('#');
        tail.push_str(f);
    }
    let bare = format!("{}://{tail}", u.scheme);
    let Some(ui) = u.userinfo else {
        return (bare.clone(), bare, None);
    };
    let (user, password) = match ui.split_once(':') {
        Some((u, p)) => (percent_decode(u), Some(percent_decode(p))),
        None => (percent_decode(ui), None),
    };
    let encoded = match &password {
        Some(p) => format!(
            "{}://{}:{}@{tail}",
            u.scheme,
            percent_encode(&user),
            percent_encode(p)
        ),
        None => format!("{}://{}@{tail}", u.scheme, percent_encode(&user)),
    };
    (
        bare,
        encoded,
        Some(UrlCredentials {
            user,
            password: password.map(Secret::new),
        }),
    )
}

/// A secret (password) that never prints: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hides_userinfo_query_and_fragment_keeps_host_and_path() {
        for (i, o) in [
            (
                "rtsp://admin:s3cret@10.0.0.1/live",
                "rtsp://***@10.0.0.1/live",
            ),
            ("rtsp://admin@cam:554/x", "rtsp://***@cam:554/x"),
            (
                "https://cdn.example/a/b.m3u8?sig=abc&exp=1",
                "https://cdn.example/a/b.m3u8?***",
            ),
            (
                "https://cdn.example/a.m3u8#frag",
                "https://cdn.example/a.m3u8#***",
            ),
            ("https://u:p@h:8443/a?q#f", "https://***@h:8443/a?***#***"),
            ("http://h?tok", "http://h?***"),
            ("mqtt://bob:pw@[::1]:1883", "mqtt://***@[::1]:1883"),
            ("file:///srv/x.ts?token=abc", "file:///srv/x.ts?***"),
            ("/srv/clip.ts", "/srv/clip.ts"),
            ("rtsp://cam/x", "rtsp://cam/x"),
            ("", ""),
        ] {
            assert_eq!(redact_url(i), o, "{i}");
        }
    }

    #[test]
    fn unencoded_delimiters_in_passwords() {
        for (i, o) in [
            ("rtsp://admin:p/ss@cam/x", "rtsp://***@cam/x"),
            ("rtsp://admin:p/ss@cam", "rtsp://***@cam"),
            (
                "rtsp://admin:p@ss@cam:554/x?t=1",
                "rtsp://***@cam:554/x?***",
            ),
            ("rtsp://admin:p#ss@cam/x", "rtsp://***@cam/x"),
            ("rtsp://admin:p?ss@cam/x", "rtsp://***@cam/x"),
            ("rtsp://admin:a:b/c@cam/x", "rtsp://***@cam/x"),
            // Ambiguous: host `admin`, port 12, or a password `12/34`: hidden either way.
            ("rtsp://admin:12/34@cam/x", "rtsp://***@cam/x"),
            ("rtsp://admin:12?34@cam/x", "rtsp://***?***"),
            // Not a valid host: nothing shown.
            ("rtsp://u:pw@ca m/x", "rtsp://***"),
            ("rtsp://u:p/ss@ca m/x", "rtsp://***"),
            // An e-mail address in the query: over-hidden, never leaked.
            ("https://h/x.m3u8?mail=a@b.com", "https://***?***"),
            // An `@` in a path.
            ("https://h/@user/x.m3u8", "https://***@user/x.m3u8"),
        ] {
            assert_eq!(redact_url(i), o, "{i}");
        }
    }

    #[test]
    fn standard_urls_split_as_the_url_crate_does() {
        for s in [
            "https://h/x.m3u8?mail=a@b.com",
            "https://h:8443/@user/x",
            "rtsp://admin:12/34@cam/x",
            "rtsp://u:p@cam:554/x?a=b#c",
            "mqtt://[::1]:1883",
        ] {
            let u = url::Url::parse(s).unwrap();
            let p = split_url(s).unwrap();
            let ui = p.userinfo.unwrap_or("");
            let (user, pass) = ui.split_once(':').unwrap_or((ui, ""));
            assert_eq!(
                (user, pass),
                (u.username(), u.password().unwrap_or("")),
                "{s}"
            );
            assert_eq!(p.path, u.path(), "{s}");
            assert_eq!(p.query, u.query(), "{s}");
        }
    }

    #[test]
    fn take_credentials_splits_and_decodes() {
        let (bare, enc, c) = take_credentials("rtsp://admin:p/ss+%41%zz@cam:554/x?t=1");
        let c = c.unwrap();
        assert_eq!(bare, "rtsp://cam:554/x?t=1");
        assert_eq!(c.user, "admin");
        assert_eq!(c.password.as_ref().unwrap().expose(), "p/ss+A%zz");
        assert_eq!(enc, "rtsp://admin:p%2Fss%2BA%25zz@cam:554/x?t=1");
        let u = url::Url::parse(&enc).unwrap();
        assert_eq!(u.host_str(), Some("cam"));
        assert_eq!(percent_decode(u.password().unwrap()), "p/ss+A%zz");
        let (bare, _, c) = take_credentials("rtsp://cam/x");
        assert_eq!((bare.as_str(), c), ("rtsp://cam/x", None));
        let (_, _, c) = take_credentials("mqtt://bob@h");
        let c = c.unwrap();
        assert_eq!((c.user.as_str(), c.password.is_none()), ("bob", true));
        assert!(!format!("{c:?}").contains("bob"));
    }

    #[test]
    fn percent_decode_keeps_plus_and_bad_escapes() {
        assert_eq!(percent_decode("a+b%20c%2"), "a+b c%2");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }

    #[test]
    fn redacts_urls_inside_text() {
        let t = "error sending request for url (https://u:pw@h/x.m3u8?sig=SECRET): timed out; \
                 also 'rtsp://a:b@c/d?e' and mqtt://x:y@z";
        let r = redact_in_text(t);
        for s in ["pw", "SECRET", "a:b", "?e", "x:y"] {
            assert!(!r.contains(s), "{s} in {r}");
        }
        assert!(r.contains("https://***@h/x.m3u8?***"), "{r}");
        assert!(r.contains("'rtsp://***@c/d?***'"), "{r}");
        assert_eq!(redact_in_text("no url: a://"), "no url: a://");
        assert_eq!(redact_in_text("://x"), "://x");
        assert_eq!(redact_in_text("plain"), "plain");
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9-]{0,8}(\\.[a-z][a-z0-9-]{0,5}){0,2}",
            Just("127.0.0.1".to_string()),
            Just("[::1]".to_string()),
        ]
    }

    /// What the output shows outside the markers must be pieces of `public`.
    fn shows_only(out: &str, prefix: &str, public: &str) -> bool {
        let Some(rest) = out.strip_prefix(prefix) else {
            return false;
        };
        rest.split("***").all(|piece| {
            let p = piece.trim_start_matches('@').trim_end_matches(['?', '#']);
            public.contains(p)
        })
    }

    proptest! {
        /// The redaction property: whatever bytes the user info, query and fragment hold
        /// (unencoded delimiters, `@`, anything), the output shows only pieces of the
        /// host[:port] and path.
        #[test]
        fn redaction_shows_only_host_and_path(
            ui in proptest::option::of("\\PC{0,14}"),
            h in host(),
            port in proptest::option::of(0u16..),
            path in "(/[a-z@.]{0,6}){0,3}",
            query in proptest::option::of("\\PC{0,12}"),
            frag in proptest::option::of("\\PC{0,8}"),
        ) {
            let hp = match port { Some(p) => format!("{h}:{p}"), None => h.clone() };
            let url = format!(
                "rtsp://{}{hp}{path}{}{}",
                ui.as_ref().map(|u| format!("{u}@")).unwrap_or_default(),
                query.as_ref().map(|q| format!("?{q}")).unwrap_or_default(),
                frag.as_ref().map(|f| format!("#{f}")).unwrap_or_default(),
            );
            let out = redact_url(&url);
            prop_assert!(shows_only(&out, "rtsp://", &format!("{hp}{path}")), "{} -> {}", url, out);
        }

        /// Passwords without `@`: the split finds exactly the user info the URL was
        /// built from, whatever delimiters the password holds (unless it starts like a
        /// port: `12/…`), and `take_credentials` gives them back decoded.
        #[test]
        fn passwords_with_delimiters_split_right(
            user in "[a-zA-Z][a-zA-Z0-9._-]{0,7}",
            pass in "[a-zA-Z/?#+:%!$ ][^@]{0,11}",
            h in host(),
            path in "(/[a-z]{1,5}){0,2}",
        ) {
            let url = format!("rtsp://{user}:{pass}@{h}{path}");
            let p = split_url(&url).unwrap();
            let ui = format!("{user}:{pass}");
            prop_assert_eq!(p.userinfo, Some(ui.as_str()));
            prop_assert_eq!(p.host_port, h.as_str());
            let (_, enc, c) = take_credentials(&url);
            let c = c.unwrap();
            let got = c.password.unwrap().expose().to_string();
            prop_assert_eq!(got, percent_decode(&pass));
            let u = url::Url::parse(&enc).unwrap();
            prop_assert_eq!(u.host_str().map(|s| s.trim_matches(['[', ']'])), Some(h.trim_matches(['[', ']'])));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = redact_url(&s);
            let _ = redact_in_text(&s);
            let _ = take_credentials(&s);
            let _ = percent_decode(&s);
        }
    }
}
