//! Local MPEG-TS file ingest: read → demux → the stream's [`Sink`] (overflow policy
//! [`Overflow::Block`](super::sink::Overflow::Block): a file is not live, so when decode
//! is slower than the disk the reader simply waits; nothing is dropped). Owns reading,
//! pacing and looping a file and its `ts_error` on the media clock; it may not touch the
//! queue except through the sink.

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use super::sink::Sink;
use super::ts::{DemuxOutput, TsDemuxer, TsLimits};
use crate::defect::EndReason;
use crate::detect::transport::TsErrorDetector;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// How much of a file is read before deciding it is not MPEG-TS.
const SNIFF_BYTES: u64 = 1 << 20;
/// Seconds of clean transport that end a `ts_error` interval in a file (media time).
const TS_ERROR_CLEAR_S: f64 = 2.0;
/// Read size: small enough that transport errors are timed to ~0.1 s of media.
const CHUNK: usize = 188 * 64;

/// Options of a file run.
#[derive(Debug, Clone, Default)]
pub struct FileOptions {
    /// Stop after this many media seconds.
    pub max_media_s: Option<f64>,
    /// Hand packets over at the pace of their timestamps (a file standing in for a
    /// live source: demos, soak tests, benchmarks) instead of as fast as decode allows.
    pub realtime: bool,
    /// At the end, start again from the beginning within the same session: timestamps
    /// are shifted to continue where the previous pass ended, so decoders, detectors and
    /// buffers are kept (memory does not churn) and media time keeps growing.
    pub looped: bool,
}

/// Gap inserted between two passes of a looped file (one 25 fps frame), 90 kHz.
const LOOP_GAP: i64 = 3600;

/// Most a timestamp may run ahead of the wall clock before pacing re-anchors (a PTS
/// discontinuity must not put the reader to sleep for hours).
const PACE_MAX_AHEAD_S: f64 = 5.0;

/// Real-time pacing of a file: maps media time onto the wall clock.
#[derive(Debug, Default)]
struct Pacer {
    anchor: Option<(std::time::Instant, i64)>,
}

impl Pacer {
    /// How long to wait before handing over a packet with this PTS.
    fn delay(&mut self, pts: i64) -> std::time::Duration {
        let now = std::time::Instant::now();
        let (t0, p0) = *self.anchor.get_or_insert((now, pts));
        let media = crate::timebase::secs(pts - p0);
        let wall = now.duration_since(t0).as_secs_f64();
        if media < -1.0 || media - wall > PACE_MAX_AHEAD_S {
            // Discontinuity (wrap, splice, loop): start again from here.
            self.anchor = Some((now, pts));
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_secs_f64((media - wall).max(0.0))
    }
}

/// Resolves `file://` URLs and plain paths. A `file://` URL's query and fragment are not
/// part of the path (RFC 8089): `file:///srv/a.ts?token=x` is `/srv/a.ts`. A plain path is
/// taken as it is (`?` and `#` are valid in file names).
pub fn path_of(input: &str) -> PathBuf {
    match input.strip_prefix("file://") {
        Some(rest) => PathBuf::from(rest.split(['?', '#']).next().unwrap_or("")),
        None => PathBuf::from(input),
    }
}

/// Reads `path` to the end (or the media-time limit), sending programs and packets into
/// `sink` (packet buffers from its pool, when it has one). Returns why it stopped; the
/// caller ends the sink with it ([`Sink::finish`]).
///
/// Errors: the file cannot be opened or read; it is not MPEG-TS; it has no program map;
/// its program has neither video nor audio.
pub async fn run(
    path: &Path,
    sink: &mut Sink,
    opts: &FileOptions,
    shutdown: &Shutdown,
) -> Result<EndReason> {
    let display = path.display().to_string();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let pool = sink.pool().cloned();
    let limits: TsLimits = pool
        .as_ref()
        .map(|p| p.budget().ts_limits())
        .unwrap_or_default();
    let mut demux = TsDemuxer::new(limits);
    if let Some(p) = &pool {
        demux = demux.with_pool(p.clone());
    }
    let mut buf = vec![0u8; CHUNK];
    let mut outs: Vec<DemuxOutput> = Vec::with_capacity(64);
    let mut origin: Option<i64> = None;
    let mut ts_errors = TsErrorDetector::new(TS_ERROR_CLEAR_S);
    let mut pacer = Pacer::default();
    let mut pace_shutdown = shutdown.clone();
    // Looping: PTS shift of this pass, and the first / last raw PTS seen in it.
    let mut shift: i64 = 0;
    let mut pass_pts: Option<(i64, i64)> = None;
    let mut passes: u64 = 0;
    loop {
        if shutdown.is_set() {
            return Ok(end(sink, &demux, &mut ts_errors, EndReason::Shutdown).await);
        }
        let n = file.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            demux.finish(&mut |o| outs.push(o));
        } else {
            demux.push(&buf[..n], &mut |o| outs.push(o));
        }
        for o in outs.drain(..) {
            let sent = match o {
                DemuxOutput::Program(p) => {
                    if p.video.is_none() && p.audio.is_none() {
                        return Err(Error::bad_input(
                            display,
                            format!(
                                "no video and no audio track (the program lists {} other streams)",
                                p.other_streams
                            ),
                        ));
                    }
                    sink.program(p).await
                }
                DemuxOutput::Packet(mut p) => {
                    if let Some(pts) = p.pts {
                        let (lo, hi) = pass_pts.get_or_insert((pts, pts));
                        *lo = (*lo).min(pts);
                        *hi = (*hi).max(pts);
                    }
                    if shift != 0 {
                        p.pts = p.pts.map(|v| v + shift);
                        p.dts = p.dts.map(|v| v + shift);
                    }
                    if let (Some(limit), Some(pts)) = (opts.max_media_s, p.pts) {
                        let o = *origin.get_or_insert(pts);
                        if crate::timebase::secs(pts - o) >= limit {
                            return Ok(
                                end(sink, &demux, &mut ts_errors, EndReason::EndOfInput).await
                            );
                        }
                    }
                    if let (true, Some(pts)) = (opts.realtime, p.pts) {
                        let d = pacer.delay(pts);
                        if !d.is_zero() && !pace_shutdown.sleep(d).await {
                            return Ok(end(sink, &demux, &mut ts_errors, EndReason::Shutdown).await);
                        }
                    }
                    // Waits for room in the queue (count and bytes): a PES never exceeds
                    // an access unit, which always fits.
                    sink.send(p).await
                }
            };
            if !sent {
                // The decode thread is gone (shutdown): stop reading.
                return Ok(EndReason::Shutdown);
            }
        }
        let st = *demux.stats();
        let shift_s = crate::timebase::secs(shift);
        if let Some(tr) = demux
            .media_time()
            .and_then(|t| ts_errors.observe(t + shift_s, &st))
        {
            sink.delivery(tr, None).await;
        }
        if st.packets == 0 && (st.bytes >= SNIFF_BYTES || n == 0) {
            return Err(Error::bad_input(
                display,
                if st.bytes == 0 {
                    "empty file".to_string()
                } else {
                    format!(
                        "not an MPEG-TS (no 188-byte packet sync in the first {} bytes)",
                        st.bytes
                    )
                },
            ));
        }
        if n == 0 {
            if demux.program().is_none() {
                return Err(Error::bad_input(
                    display,
                    "no program map (PAT/PMT) found in the transport stream",
                ));
            }
            if opts.looped && st.packets > 0 {
                if let Some((lo, hi)) = pass_pts.take() {
                    // The transport counters start over with a new demuxer: close an
                    // open `ts_error` at the end of this pass first.
                    if let Some(tr) = demux
                        .media_time()
                        .and_then(|t| ts_errors.finish(t + shift_s))
                    {
                        sink.delivery(tr, None).await;
                    }
                    ts_errors = TsErrorDetector::new(TS_ERROR_CLEAR_S);
                    shift += hi - lo + LOOP_GAP;
                    passes += 1;
                    tracing::debug!(passes, path = %path.display(), "looping the file");
                    demux = TsDemuxer::new(limits);
                    if let Some(p) = &pool {
                        demux = demux.with_pool(p.clone());
                    }
                    use tokio::io::AsyncSeekExt;
                    file.seek(std::io::SeekFrom::Start(0)).await.map_err(io)?;
                    continue;
                }
            }
            return Ok(end(sink, &demux, &mut ts_errors, EndReason::EndOfInput).await);
        }
    }
}

/// Closes an open `ts_error` at the transport's clock; returns `reason` (the sink's
/// [`Sink::finish`] sends the end of input).
async fn end(
    sink: &mut Sink,
    demux: &TsDemuxer,
    ts_errors: &mut TsErrorDetector,
    reason: EndReason,
) -> EndReason {
    if let Some(tr) = demux.media_time().and_then(|t| ts_errors.finish(t)) {
        sink.delivery(tr, Some(reason)).await;
    }
    reason
}
