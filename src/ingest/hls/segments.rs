//! Segment bytes → programs and packets in the sink: MPEG-TS segments through
//! [`TsDemuxer`] (one demuxer continued across segments, replaced where the next segment
//! does not continue the last: discontinuity, gap, reconnect), fMP4/CMAF segments through
//! [`Fmp4Demuxer`] after their init section, TS init sections fed to every fresh
//! demuxer. Every demuxer output goes through one loop ([`Segments::drain`]): programs
//! are sent when they change, packets wait for room (overflow policy *block*).
//!
//! Also reads what the delivery defects need from a segment: its first timestamp (for
//! its place on the media timeline) and the transport counters across demuxers (with
//! PAT/PMT gaps counted per segment).
//!
//! Fetches nothing, knows no playlist and opens no defect itself (the scheduler, `super`,
//! and the tracker, `super::defects`, do), except what the sink reports on its own when
//! an access unit is too large.

use std::time::Instant;

use super::{Flow, Stop};
use crate::ingest::mp4::{Fmp4Demuxer, SampleRef};
use crate::ingest::pool::{BufPool, StreamBudget};
use crate::ingest::sink::Sink;
use crate::ingest::ts::{DemuxOutput, TsDemuxer, TsStats};
use crate::ingest::{Packet, ProgramInfo, Track};
use crate::shutdown::Shutdown;

/// Demuxer input chunk: outputs are handed over between chunks.
const CHUNK: usize = 64 << 10;
/// Transport packets scanned for a segment's first timestamp.
const MAX_PTS_SCAN: usize = 4096;

/// What came of one segment.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Its first timestamp (90 kHz, the packets' timeline), when one could be read.
    pub first_pts: Option<i64>,
    /// Why it is not readable media (its packets up to the damage were delivered).
    pub error: Option<String>,
    /// A readable TS segment: the transport counters after it (see [`Segments::ts_total`]).
    pub transport: Option<TsStats>,
}

/// Demuxers and their state across the segments of one source.
pub(super) struct Segments {
    ts: TsDemuxer,
    /// Packet buffers shared with the decode thread (as for files): every TS demuxer of
    /// this source takes its PES buffers from here.
    pool: Option<BufPool>,
    /// Counters of the demuxers replaced so far (a demuxer is replaced at gaps).
    ts_done: TsStats,
    /// Segments of more than 0.5 s without a PAT / PMT. HLS segments carry their PSI once,
    /// at the start (RFC 8216 §3.2), so the broadcast rule "every 0.5 s of media" would
    /// flag every healthy stream: here the unit is the segment.
    pat_missing: u64,
    pmt_missing: u64,
    /// The next TS segment does not continue the previous one (discontinuity, a skipped
    /// or failed segment, a reconnect): start a fresh demuxer.
    need_reset: bool,
    /// Latest timestamp the current TS demuxer delivered (unwraps segment timestamps as
    /// the demuxer does).
    last_pts: Option<i64>,
    outs: Vec<DemuxOutput>,
    mp4: Fmp4Demuxer,
    /// An MPEG-TS init section (PAT/PMT for segments without them), fed to every new
    /// demuxer.
    ts_init: Option<Vec<u8>>,
    samples: Vec<SampleRef>,
    last_program: Option<ProgramInfo>,
    shutdown: Shutdown,
    deadline: Option<Instant>,
}

impl Segments {
    pub(super) fn new(
        pool: Option<BufPool>,
        shutdown: Shutdown,
        deadline: Option<Instant>,
    ) -> Self {
        let mp4_limits = pool
            .as_ref()
            .map(|p| p.budget().mp4_limits())
            .unwrap_or_default();
        Segments {
            ts: new_ts(&pool),
            pool,
            ts_done: TsStats::default(),
            pat_missing: 0,
            pmt_missing: 0,
            need_reset: false,
            last_pts: None,
            outs: Vec::with_capacity(64),
            mp4: Fmp4Demuxer::new(mp4_limits),
            ts_init: None,
            samples: Vec::new(),
            last_program: None,
            shutdown,
            deadline,
        }
    }

    /// The stream's memory budget (the pool's; the default one without a pool).
    pub(super) fn memory(&self) -> StreamBudget {
        self.pool.as_ref().map(|p| p.budget()).unwrap_or_default()
    }

    /// The next TS segment does not continue the last one.
    pub(super) fn discontinuity(&mut self) {
        self.need_reset = true;
    }

    /// Takes an init section (EXT-X-MAP): MPEG-TS (PAT/PMT fed to every fresh demuxer)
    /// or fMP4 (its program is sent). Ok(Err(reason)) when it is not readable.
    pub(super) async fn init_section(
        &mut self,
        sink: &mut Sink,
        bytes: Vec<u8>,
    ) -> Result<Result<(), String>, Flow> {
        if bytes.first() == Some(&0x47) {
            self.ts_init = Some(bytes);
            self.need_reset = true;
            return Ok(Ok(()));
        }
        match self.mp4.init(&bytes) {
            Ok(p) => {
                self.ts_init = None;
                self.program(sink, p).await?;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(format!("bad init section: {e}"))),
        }
    }

    /// Demuxes one segment (`dur`: its EXTINF duration, when usable) into the sink.
    pub(super) async fn deliver(
        &mut self,
        sink: &mut Sink,
        bytes: &[u8],
        dur: Option<f64>,
    ) -> Result<Outcome, Flow> {
        let is_ts = bytes.first() == Some(&0x47);
        let is_mp4 = bytes.len() >= 8
            && matches!(
                &bytes[4..8],
                b"styp" | b"moof" | b"sidx" | b"ftyp" | b"emsg" | b"prft" | b"free" | b"moov"
            );
        if is_mp4 && !is_ts {
            if self.mp4.program().is_none() {
                return Ok(Outcome {
                    error: Some("fMP4 segment without an init section (EXT-X-MAP)".into()),
                    ..Outcome::default()
                });
            }
            return self.deliver_mp4(sink, bytes).await;
        }
        self.deliver_ts(sink, bytes, dur).await
    }

    async fn deliver_ts(
        &mut self,
        sink: &mut Sink,
        bytes: &[u8],
        dur: Option<f64>,
    ) -> Result<Outcome, Flow> {
        if self.need_reset {
            self.reset_ts(sink).await?;
        }
        let first_pts = first_pes_pts(bytes).map(|raw| unwrap_near(raw, self.last_pts));
        let before = *self.ts.stats();
        for chunk in bytes.chunks(CHUNK) {
            let outs = &mut self.outs;
            self.ts.push(chunk, &mut |o| outs.push(o));
            self.drain(sink).await?;
        }
        let after = *self.ts.stats();
        if after.packets == before.packets {
            self.need_reset = true;
            return Ok(Outcome {
                first_pts,
                error: Some(format!(
                    "not MPEG-TS: no 188-byte packet sync in {} bytes",
                    bytes.len()
                )),
                transport: None,
            });
        }
        // With a TS init section, segments need not carry PAT/PMT themselves.
        if dur.is_some_and(|d| d > 0.5) && self.ts_init.is_none() {
            if after.pat_count == before.pat_count {
                self.pat_missing += 1;
            }
            if after.pmt_count == before.pmt_count {
                self.pmt_missing += 1;
            }
        }
        Ok(Outcome {
            first_pts,
            error: None,
            transport: Some(self.ts_total()),
        })
    }

    /// Flushes the demuxer (its last PES is complete) and starts a fresh one, fed with
    /// the TS init section if there is one.
    async fn reset_ts(&mut self, sink: &mut Sink) -> Result<(), Flow> {
        self.need_reset = false;
        let outs = &mut self.outs;
        self.ts.finish(&mut |o| outs.push(o));
        let r = self.drain(sink).await;
        self.ts_done = self.ts_total();
        self.ts = new_ts(&self.pool);
        self.last_pts = None;
        r?;
        if let Some(init) = &self.ts_init {
            let outs = &mut self.outs;
            self.ts.push(init, &mut |o| outs.push(o));
            self.drain(sink).await?;
        }
        Ok(())
    }

    /// Transport counters across all demuxers of this source (the fields ts_error uses),
    /// with PAT/PMT gaps counted per segment (see `pat_missing`).
    fn ts_total(&self) -> TsStats {
        let (a, b) = (&self.ts_done, self.ts.stats());
        TsStats {
            sync_losses: a.sync_losses + b.sync_losses,
            cc_errors: a.cc_errors + b.cc_errors,
            tei_packets: a.tei_packets + b.tei_packets,
            psi_errors: a.psi_errors + b.psi_errors,
            pat_missing: self.pat_missing,
            pmt_missing: self.pmt_missing,
            pat_count: a.pat_count + b.pat_count,
            pmt_count: a.pmt_count + b.pmt_count,
            packets: a.packets + b.packets,
            bytes: a.bytes + b.bytes,
            ..TsStats::default()
        }
    }

    async fn deliver_mp4(&mut self, sink: &mut Sink, bytes: &[u8]) -> Result<Outcome, Flow> {
        self.need_reset = false;
        let mut samples = std::mem::take(&mut self.samples);
        let parsed = self.mp4.segment(bytes, &mut samples);
        let first_pts = samples.iter().map(|s| s.pts).min();
        let max_au = self.memory().max_access_unit();
        let mut r = Ok(());
        for s in &samples {
            if s.track == Track::Video && s.size > max_au {
                sink.oversized(s.size, Some(s.pts)).await;
                continue;
            }
            if let Some(p) = self.mp4.packet(bytes, s) {
                r = self.send(sink, p).await;
                if r.is_err() {
                    break;
                }
            }
        }
        samples.clear();
        self.samples = samples;
        r?;
        Ok(Outcome {
            first_pts,
            error: parsed.err().map(|e| format!("bad fMP4 segment: {e}")),
            transport: None,
        })
    }

    /// The one place demuxer outputs are handed over: programs (when they changed) and
    /// packets, in order. After a stop (shutdown, deadline) the rest is dropped.
    async fn drain(&mut self, sink: &mut Sink) -> Result<(), Flow> {
        let mut outs = std::mem::take(&mut self.outs);
        let mut r = Ok(());
        for o in outs.drain(..) {
            if r.is_err() {
                continue;
            }
            r = match o {
                DemuxOutput::Program(p) => self.program(sink, p).await,
                DemuxOutput::Packet(p) => {
                    if let Some(pts) = p.pts {
                        self.last_pts = Some(pts);
                    }
                    self.send(sink, p).await
                }
            };
        }
        self.outs = outs;
        r
    }

    /// Sends the program when it differs from the last one sent.
    async fn program(&mut self, sink: &mut Sink, p: ProgramInfo) -> Result<(), Flow> {
        if self.last_program.as_ref() == Some(&p) {
            return Ok(());
        }
        if !sink.program(p.clone()).await {
            return Err(Flow::Stop(Stop::Shutdown));
        }
        self.last_program = Some(p);
        Ok(())
    }

    /// Hands one packet over, waiting for room (see the module docs of `super`).
    async fn send(&mut self, sink: &mut Sink, p: Packet) -> Result<(), Flow> {
        sink.packet_wait(p).await;
        if self.shutdown.is_set() || sink.is_closed() {
            return Err(Flow::Stop(Stop::Shutdown));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Flow::Stop(Stop::Deadline));
        }
        Ok(())
    }

    /// End of input: the last PES still in the demuxer is complete.
    pub(super) async fn flush(&mut self, sink: &mut Sink) {
        let outs = &mut self.outs;
        self.ts.finish(&mut |o| outs.push(o));
        let _ = self.drain(sink).await;
    }
}

/// A TS demuxer taking its buffers from `pool` when there is one.
fn new_ts(pool: &Option<BufPool>) -> TsDemuxer {
    let limits = pool
        .as_ref()
        .map(|p| p.budget().ts_limits())
        .unwrap_or_default();
    let d = TsDemuxer::new(limits);
    match pool {
        Some(p) => d.with_pool(p.clone()),
        None => d,
    }
}

/// The PTS (33-bit, as sent) of the first PES header carrying one in a transport-stream
/// segment, read from its bytes: the segment's own start, even though the demuxer hands
/// over the previous segment's last PES while reading this one. Looks at whole 188-byte
/// packets only, resynchronising on the next 0x47 after damage, and at most
/// [`MAX_PTS_SCAN`] of them; packets flagged with a transport error are skipped.
pub(super) fn first_pes_pts(bytes: &[u8]) -> Option<i64> {
    let mut i = bytes.iter().position(|&b| b == 0x47)?;
    let mut scanned = 0;
    while scanned < MAX_PTS_SCAN {
        let p = bytes.get(i..i.checked_add(188)?)?;
        if p[0] != 0x47 {
            i += 1 + bytes.get(i + 1..)?.iter().position(|&b| b == 0x47)?;
            continue;
        }
        scanned += 1;
        i += 188;
        let (tei, pusi, afc) = (p[1] & 0x80 != 0, p[1] & 0x40 != 0, (p[3] >> 4) & 3);
        if tei || !pusi || afc & 1 == 0 {
            continue;
        }
        let off = if afc & 2 != 0 {
            5 + usize::from(p[4])
        } else {
            4
        };
        let Some(pes) = p.get(off..) else { continue };
        if pes.len() < 14 || pes[..3] != [0, 0, 1] {
            continue;
        }
        // Stream ids without the optional PES header (program stream map, padding,
        // private 2, ECM, EMM, DSM-CC, H.222.1 type E, directory).
        if matches!(
            pes[3],
            0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
        ) {
            continue;
        }
        if pes[6] & 0xC0 != 0x80 || pes[7] & 0x80 == 0 {
            continue;
        }
        let b = |k: usize| i64::from(pes[9 + k]);
        return Some(
            ((b(0) >> 1) & 7) << 30 | b(1) << 22 | (b(2) >> 1) << 15 | b(3) << 7 | b(4) >> 1,
        );
    }
    None
}

/// A 33-bit timestamp placed on the unwrapped timeline next to `reference` (the nearest
/// value `raw + k·2^33`); `raw` itself without a reference, as a fresh demuxer does.
pub(super) fn unwrap_near(raw: i64, reference: Option<i64>) -> i64 {
    const WRAP: i128 = 1 << 33;
    let Some(r) = reference else { return raw };
    let raw128 = i128::from(raw);
    let k = (i128::from(r) - raw128 + WRAP / 2).div_euclid(WRAP);
    (raw128 + k * WRAP).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 188-byte TS packet starting a PES with `pts` on `pid`.
    fn pes_packet(pid: u16, pts: i64, tei: bool) -> Vec<u8> {
        let mut p = vec![0xFFu8; 188];
        p[0] = 0x47;
        p[1] = 0x40 | ((pid >> 8) as u8 & 0x1F) | if tei { 0x80 } else { 0 };
        p[2] = pid as u8;
        p[3] = 0x10;
        let pes = [
            0,
            0,
            1,
            0xE0,
            0,
            0,
            0x80,
            0x80,
            5,
            0x21 | (((pts >> 30) & 7) << 1) as u8,
            (pts >> 22) as u8,
            (((pts >> 15) & 0x7F) << 1) as u8 | 1,
            (pts >> 7) as u8,
            ((pts & 0x7F) << 1) as u8 | 1,
        ];
        p[4..4 + pes.len()].copy_from_slice(&pes);
        p
    }

    fn plain_packet(pid: u16) -> Vec<u8> {
        let mut p = vec![0u8; 188];
        p[0] = 0x47;
        p[1] = (pid >> 8) as u8 & 0x1F;
        p[2] = pid as u8;
        p[3] = 0x10;
        p
    }

    #[test]
    fn a_segments_first_timestamp_is_read_from_its_bytes() {
        let pts = (1i64 << 32) + 123_456; // uses the 33rd bit
        let mut seg = plain_packet(0);
        seg.extend(plain_packet(0x100));
        seg.extend(pes_packet(0x100, pts, false));
        seg.extend(pes_packet(0x101, 5, false));
        assert_eq!(first_pes_pts(&seg), Some(pts));
        // Garbage before it: found after resynchronising.
        let mut damaged = vec![0x47, 1, 2, 3, 0x47, 9, 9];
        damaged.extend(std::iter::repeat_n(0xAB, 500));
        damaged.extend(pes_packet(0x100, 777, false));
        assert_eq!(first_pes_pts(&damaged), Some(777));
        // A packet flagged with a transport error is not believed.
        let mut flagged = pes_packet(0x100, 1, true);
        flagged.extend(pes_packet(0x100, 2, false));
        assert_eq!(first_pes_pts(&flagged), Some(2));
        // Nothing to read: no position from the bytes.
        assert_eq!(first_pes_pts(&[]), None);
        assert_eq!(first_pes_pts(&plain_packet(0x100)), None);
        assert_eq!(first_pes_pts(&vec![0x47; 1000]), None);
        assert_eq!(first_pes_pts(&pes_packet(0x100, 1, false)[..100]), None);
    }

    #[test]
    fn timestamps_unwrap_next_to_the_last_one() {
        const W: i64 = 1 << 33;
        assert_eq!(unwrap_near(500, None), 500);
        assert_eq!(unwrap_near(500, Some(400)), 500);
        // Past the wrap: the small raw value continues the timeline.
        assert_eq!(unwrap_near(100, Some(W - 1000)), W + 100);
        // Just before a wrap already taken.
        assert_eq!(unwrap_near(W - 100, Some(W + 50)), W - 100);
        assert_eq!(unwrap_near(5, Some(3 * W + 1)), 3 * W + 5);
        // Never overflows.
        let _ = unwrap_near(W - 1, Some(i64::MAX));
        let _ = unwrap_near(0, Some(i64::MIN));
    }
}
