//! RTSP ingest with `retina`: H.264 video as Annex B and AAC audio as ADTS
//! (`FrameFormat::SIMPLE`) or G.711 (PCMU/PCMA), over TCP interleaved (default) or UDP.
//! RTCP sender reports become A/V offset measurements for `av_desync`.
//!
//! The source runs `run_once` (DESCRIBE → SETUP → PLAY → frames) inside a reconnect loop
//! with capped exponential backoff and jitter until shutdown. A session that fails or
//! ends opens `source_down` (a live stream that ends is a defect); media flowing again
//! closes it. Credentials come from the URL (or config) and are handed to retina
//! separately: the URL retina sees, and every URL we print, has none.

use std::time::{Duration, Instant};

use futures::StreamExt;
use retina::client::{
    Credentials, PlayOptions, SessionGroup, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat};
use url::Url;

use super::sink::Sink;
use super::{Codec, Elementary, Packet, ProgramInfo, Track};
use crate::backoff::Backoff;
use crate::defect::EndReason;
use crate::defect::{put, DefectKind, MediaSpan, Metric, Metrics};
use crate::detect::avsync::{ntp_seconds, SrMapping};
use crate::error::{Error, InvalidChoice, Result};
use crate::redact::{redact_in_text, redact_url, take_credentials};
use crate::shutdown::Shutdown;

/// RTP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection (robust through NAT and firewalls).
    #[default]
    Tcp,
    /// RTP over UDP (retina: experimental, no reordering).
    Udp,
}

impl std::str::FromStr for RtspTransport {
    type Err = InvalidChoice;

    /// `tcp` or `udp` (`--rtsp-transport`; the values of the config's `rtsp_transport`).
    fn from_str(s: &str) -> std::result::Result<Self, InvalidChoice> {
        match s {
            "tcp" => Ok(RtspTransport::Tcp),
            "udp" => Ok(RtspTransport::Udp),
            _ => Err(InvalidChoice::new(s, &["tcp", "udp"])),
        }
    }
}

/// A parsed RTSP source: the URL without credentials, and the credentials.
#[derive(Clone)]
pub struct RtspSource {
    url: Url,
    /// `url` as it may be printed.
    display: String,
    creds: Option<Credentials>,
    pub transport: RtspTransport,
}

impl std::fmt::Debug for RtspSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspSource")
            .field("url", &self.display)
            .field("creds", &self.creds.as_ref().map(|_| "***"))
            .finish()
    }
}

impl RtspSource {
    /// Parses `rtsp://[user[:password]@]host[:port]/path`; `creds` from config win over
    /// the URL's. The user info is split off with [`crate::redact::take_credentials`]
    /// (a password may hold unencoded `/`, `?`, `#`, `@`; only `%XX` is decoded, `+`
    /// stays `+`).
    pub fn parse(
        input: &str,
        creds: Option<(String, String)>,
        transport: RtspTransport,
    ) -> Result<Self> {
        let (bare, _, from_url) = take_credentials(input.trim());
        let url = Url::parse(&bare)
            .map_err(|e| Error::bad_input(redact_url(input), format!("bad RTSP URL: {e}")))?;
        if url.scheme() != "rtsp" {
            return Err(Error::bad_input(redact_url(input), "not an rtsp:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::bad_input(
                redact_url(input),
                "RTSP URL without a host",
            ));
        }
        let from_url = from_url.map(|c| {
            let pass = c
                .password
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            (c.user, pass)
        });
        let creds = creds
            .or(from_url)
            .map(|(username, password)| Credentials { username, password });
        Ok(RtspSource {
            display: crate::redact::display_url(&url),
            url,
            creds,
            transport,
        })
    }

    /// The URL as it may be printed ([`crate::redact::display_url`]: no credentials, no
    /// query).
    pub fn display_url(&self) -> &str {
        &self.display
    }
}

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Deadline,
    /// The server ended the stream (EOS, TEARDOWN, connection closed).
    Ended(String),
}

/// Runs the source until shutdown or `deadline`, reconnecting as needed.
pub async fn run(
    src: &RtspSource,
    sink: &mut Sink,
    mut shutdown: Shutdown,
    deadline: Option<Instant>,
) -> EndReason {
    let cfg = sink.config().clone();
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    // PTS continue across reconnects: each session's timestamps start at 0.
    let mut clock = PtsClock::default();
    let group = std::sync::Arc::new(SessionGroup::default());
    loop {
        let result = tokio::select! {
            biased;
            _ = shutdown.wait() => return EndReason::Shutdown,
            r = run_once(src, sink, &mut backoff, &mut clock, group.clone(), deadline) => r,
        };
        let reason = match result {
            Ok(SessionEnd::Shutdown) => return EndReason::Shutdown,
            Ok(SessionEnd::Deadline) => return EndReason::EndOfInput,
            Ok(SessionEnd::Ended(why)) => why,
            Err(e) => redact(&e.to_string(), src),
        };
        let attempt = backoff.attempt() + 1;
        tracing::warn!(url = src.display_url(), attempt, reason = %reason, "RTSP source down");
        sink.source_down(&reason, attempt).await;
        let delay = backoff.next_delay();
        let delay = match deadline {
            Some(d) => delay.min(d.saturating_duration_since(Instant::now())),
            None => delay,
        };
        if !sleep_ticking(sink, &mut shutdown, delay).await {
            return EndReason::Shutdown;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return EndReason::EndOfInput;
        }
    }
}

/// Sleeps `d`, returning false on shutdown.
async fn sleep_ticking(_sink: &mut Sink, shutdown: &mut Shutdown, d: Duration) -> bool {
    shutdown.sleep(d).await
}

/// First line of an error message (retina appends connection context on further
/// lines), with anything that looks like the credentials removed.
fn redact(msg: &str, src: &RtspSource) -> String {
    let m = redact_in_text(msg.lines().next().unwrap_or("").trim());
    match &src.creds {
        Some(c) => crate::redact::redact_secrets(&m, &[&c.password, &c.username]),
        None => m,
    }
}

/// Maps session-relative timestamps onto one continuous 90 kHz timeline.
#[derive(Debug, Default)]
struct PtsClock {
    /// Added to this session's elapsed time.
    base: i64,
    /// Largest PTS handed out, and when (for the gap across a reconnect).
    last: Option<(i64, Instant)>,
}

impl PtsClock {
    fn new_session(&mut self) {
        if let Some((last, at)) = self.last {
            // `as` saturates a float; the sum must too.
            self.base = last.saturating_add(crate::timebase::ticks(at.elapsed().as_secs_f64()));
        }
    }

    fn pts(&mut self, elapsed: i64, clock_rate: u32) -> i64 {
        let p = self.base.saturating_add(
            elapsed.saturating_mul(crate::timebase::HZ) / i64::from(clock_rate.max(1)),
        );
        if self.last.is_none_or(|(l, _)| p > l) {
            self.last = Some((p, Instant::now()));
        }
        p
    }
}

async fn run_once(
    src: &RtspSource,
    sink: &mut Sink,
    backoff: &mut Backoff,
    clock: &mut PtsClock,
    group: std::sync::Arc<SessionGroup>,
    deadline: Option<Instant>,
) -> Result<SessionEnd> {
    let cfg = sink.config().clone();
    let connect = Duration::from_secs_f64(cfg.connect_timeout.max(0.1));
    let rtsp_err = |what: &str, e: retina::Error| {
        Error::Other(format!("RTSP {what}: {}", redact(&e.to_string(), src)))
    };
    let options = SessionOptions::default()
        .creds(src.creds.clone())
        .user_agent(format!("vqprobe/{}", env!("CARGO_PKG_VERSION")))
        .session_group(group);
    let mut session = tokio::time::timeout(
        connect,
        retina::client::Session::describe(src.url.clone(), options),
    )
    .await
    .map_err(|_| {
        Error::Other(format!(
            "RTSP DESCRIBE: no answer within {:.0} s",
            connect.as_secs_f64()
        ))
    })?
    .map_err(|e| rtsp_err("DESCRIBE", e))?;
    let video_i = session
        .streams()
        .iter()
        .position(|s| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264"));
    // AAC preferred, then G.711 (μ-law, A-law).
    let audio_rank = |enc: &str| match enc.to_ascii_lowercase().as_str() {
        "mpeg4-generic" => Some(0),
        "pcmu" => Some(1),
        "pcma" => Some(2),
        _ => None,
    };
    let audio_i = session
        .streams()
        .iter()
        .enumerate()
        .filter(|(_, s)| s.media() == "audio")
        .filter_map(|(i, s)| audio_rank(s.encoding_name()).map(|r| (r, i)))
        .min()
        .map(|(_, i)| i);
    let audio_codec = audio_i.map(|i| {
        let s = &session.streams()[i];
        match audio_rank(s.encoding_name()) {
            Some(0) => (0x0F, Codec::Aac),
            rank => (
                0,
                Codec::G711 {
                    alaw: rank == Some(2),
                    sample_rate: s.clock_rate_hz(),
                    channels: s.channels().map_or(1, |c| c.get()),
                },
            ),
        }
    });
    let other_video = session
        .streams()
        .iter()
        .find(|s| s.media() == "video")
        .map(|s| s.encoding_name().to_string());
    let transport = match src.transport {
        RtspTransport::Tcp => Transport::Tcp(Default::default()),
        RtspTransport::Udp => Transport::Udp(Default::default()),
    };
    for i in [video_i, audio_i].into_iter().flatten() {
        let setup = SetupOptions::default()
            .transport(transport.clone())
            .frame_format(FrameFormat::SIMPLE);
        tokio::time::timeout(connect, session.setup(i, setup))
            .await
            .map_err(|_| Error::Other("RTSP SETUP: no answer".into()))?
            .map_err(|e| rtsp_err("SETUP", e))?;
    }
    if video_i.is_none() && audio_i.is_none() {
        return Err(Error::Other(match other_video {
            Some(enc) => {
                format!("RTSP: unsupported video encoding {enc} and no AAC or G.711 audio")
            }
            None => "RTSP: the server offers no H.264 video and no AAC or G.711 audio".into(),
        }));
    }
    let playing = tokio::time::timeout(connect, session.play(PlayOptions::default()))
        .await
        .map_err(|_| Error::Other("RTSP PLAY: no answer".into()))?
        .map_err(|e| rtsp_err("PLAY", e))?;
    let mut demuxed = playing.demuxed().map_err(|e| rtsp_err("demux", e))?;
    clock.new_session();
    let program = ProgramInfo {
        video: video_i.map(|_| Elementary {
            pid: 0,
            stream_type: 0x1B,
            codec: Codec::H264,
        }),
        audio: audio_codec.map(|(stream_type, codec)| Elementary {
            pid: 1,
            stream_type,
            codec,
        }),
        other_streams: 0,
    };
    if !sink.program(program).await {
        return Ok(SessionEnd::Shutdown);
    }
    // A new session starts decoding at a key frame.
    let mut need_key = true;
    // Sender reports of this session's streams, and the last video PTS handed out
    // (where an A/V offset measurement is placed on the media timeline).
    let mut sr = SrMapping::default();
    let mut last_video_pts: Option<i64> = None;
    let mut loss_total: u64 = 0;
    let mut last_loss: Option<Instant> = None;
    let read_timeout = Duration::from_secs_f64(cfg.read_timeout.max(0.5));
    let mut last_item = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = demuxed.next() => {
                let item = match item {
                    None => return Ok(SessionEnd::Ended("the server ended the stream".into())),
                    Some(Err(e)) => return Err(rtsp_err("stream", e)),
                    Some(Ok(i)) => i,
                };
                last_item = Instant::now();
                let (loss, packet) = match item {
                    CodecItem::VideoFrame(f) => {
                        let key = f.is_random_access_point();
                        let ts = f.timestamp();
                        let loss = f.loss();
                        if need_key && !key {
                            continue;
                        }
                        need_key = false;
                        let pts = clock.pts(ts.elapsed(), ts.clock_rate().get());
                        last_video_pts = Some(pts);
                        (loss, Packet { track: Track::Video, pts: Some(pts), dts: None, key, damaged: loss > 0, data: f.into_data() })
                    }
                    CodecItem::AudioFrame(f) => {
                        let ts = f.timestamp();
                        let pts = clock.pts(ts.elapsed(), ts.clock_rate().get());
                        (f.loss(), Packet { track: Track::Audio, pts: Some(pts), dts: None, key: true, damaged: f.loss() > 0, data: f.data().to_vec() })
                    }
                    CodecItem::Rtcp(rtcp) => {
                        let audio = match rtcp.stream_id() {
                            i if Some(i) == video_i => false,
                            i if Some(i) == audio_i => true,
                            _ => continue,
                        };
                        // The SR's RTP time, placed by retina on the stream's timeline.
                        let Some(ts) = rtcp.rtp_timestamp() else { continue };
                        let ntp = match rtcp.pkts().next().map(|p| p.as_sender_report()) {
                            Some(Ok(Some(report))) => report.ntp_timestamp().0,
                            _ => continue,
                        };
                        let offset = sr.report(audio, ntp_seconds(ntp), ts.elapsed_secs());
                        if let (Some(offset_s), Some(pts)) = (offset, last_video_pts) {
                            tracing::debug!(offset_ms = offset_s * 1000.0, "RTCP A/V offset");
                            sink.av_sync(pts, offset_s);
                        }
                        continue;
                    }
                    _ => continue,
                };
                backoff.reset();
                if loss > 0 {
                    loss_total += u64::from(loss);
                    last_loss = Some(Instant::now());
                    // Media time: from the first frame a loss damaged to the last.
                    let pts = packet.pts.unwrap_or_default();
                    if sink.is_open(DefectKind::PacketLoss) {
                        sink.update(DefectKind::PacketLoss, |m| set_int(m, "lost_packets", loss_total as i64));
                        sink.extend_media(DefectKind::PacketLoss, pts);
                    } else {
                        let mut m = Metrics::new();
                        put(&mut m, "lost_packets", Metric::Int(loss_total as i64));
                        let span = MediaSpan { start_pts: pts, end_pts: Some(pts) };
                        sink.open_media(DefectKind::PacketLoss, m, span).await;
                    }
                }
                sink.send(packet).await;
            }
            _ = tick.tick() => {
                sink.tick().await;
                if sink.is_closed() {
                    return Ok(SessionEnd::Shutdown);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(SessionEnd::Deadline);
                }
                if last_item.elapsed() >= read_timeout {
                    return Ok(SessionEnd::Ended(format!("no data from the server for {:.0} s", read_timeout.as_secs_f64())));
                }
                if let Some(l) = last_loss {
                    if l.elapsed().as_secs_f64() >= cfg.clear_after && sink.is_open(DefectKind::PacketLoss) {
                        sink.close(DefectKind::PacketLoss, Metrics::new()).await;
                        loss_total = 0;
                        last_loss = None;
                    }
                }
            }
        }
    }
}

fn set_int(m: &mut Metrics, name: &'static str, v: i64) {
    match m.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = Metric::Int(v),
        None => put(m, name, Metric::Int(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_from_the_url() {
        let s = RtspSource::parse(
            "rtsp://admin:p%40ss@127.0.0.1:8554/cam",
            None,
            RtspTransport::Tcp,
        )
        .unwrap();
        assert_eq!(s.display_url(), "rtsp://127.0.0.1:8554/cam");
        let c = s.creds.as_ref().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("admin", "p@ss")
        );
        assert!(!format!("{s:?}").contains("p@ss"));
        let s = RtspSource::parse(
            "rtsp://h/x",
            Some(("u".into(), "pw".into())),
            RtspTransport::Udp,
        )
        .unwrap();
        assert_eq!(s.creds.as_ref().unwrap().username, "u");
        let e = RtspSource::parse("http://user:secret@h/x", None, RtspTransport::Tcp).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    /// Defect 12: unencoded `/`, `?`, `#`, `@` in the password, and `+` kept as is.
    #[test]
    fn passwords_with_unencoded_delimiters_and_plus() {
        for (url, pass) in [
            ("rtsp://admin:p/ss@cam.local/x", "p/ss"),
            ("rtsp://admin:p?ss@cam.local:554/x", "p?ss"),
            ("rtsp://admin:p#ss@cam.local/x", "p#ss"),
            ("rtsp://admin:p@ss@cam.local/x", "p@ss"),
            ("rtsp://admin:a+b@cam.local/x", "a+b"),
            ("rtsp://admin:a%2Bb%20c@cam.local/x", "a+b c"),
        ] {
            let s = RtspSource::parse(url, None, RtspTransport::Tcp)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let c = s.creds.as_ref().unwrap();
            assert_eq!(
                (c.username.as_str(), c.password.as_str()),
                ("admin", pass),
                "{url}"
            );
            assert_eq!(s.url.host_str(), Some("cam.local"), "{url}");
            assert!(!s.display_url().contains("ss") && !s.display_url().contains("a+b"));
        }
        // A URL that does not parse: the error names it without the password.
        let e = RtspSource::parse("rtsp://admin:p/ss@ca m/x", None, RtspTransport::Tcp)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("p/ss") && !e.contains("ss@"), "{e}");
    }

    /// Defect 11: the query (signed-URL tokens) never reaches the printed URL.
    #[test]
    fn display_url_hides_the_query() {
        let s = RtspSource::parse(
            "rtsp://127.0.0.1:8554/cam?token=SECRETTOKEN#frag",
            None,
            RtspTransport::Tcp,
        )
        .unwrap();
        assert_eq!(s.display_url(), "rtsp://127.0.0.1:8554/cam?***#***");
    }

    #[test]
    fn pts_clock_continues_across_sessions() {
        let mut c = PtsClock::default();
        c.new_session();
        assert_eq!(c.pts(0, 90_000), 0);
        assert_eq!(c.pts(90_000, 90_000), 90_000);
        assert_eq!(c.pts(48_000, 48_000), 90_000);
        c.new_session();
        let p = c.pts(0, 90_000);
        assert!(p >= 90_000, "{p}");
    }

    #[test]
    fn pts_clock_saturates_instead_of_overflowing() {
        // A server whose RTP timestamps run for ~3000 years at 90 kHz, after a reconnect
        // that left the base near the end of the range: no overflow panic, no wrap.
        let mut c = PtsClock {
            base: i64::MAX - 10,
            last: None,
        };
        assert_eq!(c.pts(i64::MAX / 2, 90_000), i64::MAX);
        assert_eq!(c.pts(i64::MAX, 1), i64::MAX);
        let mut c = PtsClock {
            base: 0,
            last: Some((i64::MAX - 1, Instant::now())),
        };
        std::thread::sleep(Duration::from_millis(2));
        c.new_session();
        assert_eq!(c.base, i64::MAX);
        assert_eq!(c.pts(0, 90_000), i64::MAX);
    }
}
