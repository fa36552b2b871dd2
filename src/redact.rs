//! Credential redaction for anything that may print a URL.

/// Replaces the `user:password@` part of a URL with `***@`.
///
/// ```
/// use vqprobe::redact::redact_url;
/// assert_eq!(redact_url("rtsp://admin:s3cret@10.0.0.1/live"), "rtsp://***@10.0.0.1/live");
/// assert_eq!(redact_url("/srv/clip.ts"), "/srv/clip.ts");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end + 3], &rest[at..]),
        None => url.to_string(),
    }
}
