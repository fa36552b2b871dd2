//! MPEG-TS demuxer: 188-byte packets → PAT/PMT → PES → timestamped elementary packets.
//!
//! Boundaries: bytes in, packets and transport counters out; no I/O, no clocks, no
//! decoding.
//!
//! Written by hand on purpose. The TS crates on crates.io either hide the per-packet
//! transport facts we must report (sync loss, continuity-counter errors, PAT/PMT
//! presence: the TR 101 290 priority-1 checks) or wrap them in generic callback
//! machinery larger than this whole module. The format is small and fully specified
//! (ISO/IEC 13818-1), so a ~400-line push parser with fixed caps is easier to audit and
//! to fuzz (`fuzz/fuzz_targets/ts_demux.rs`).
//!
//! Calling contract: feed bytes in any chunking with [`TsDemuxer::push`]; outputs arrive
//! through the callback in stream order. Call [`TsDemuxer::finish`] at end of input to
//! flush the last PES of each track. Nothing here panics on any input, and memory is
//! bounded by [`TsLimits`].
//!
//! ```
//! use vqprobe::ingest::ts::{TsDemuxer, TsLimits, DemuxOutput};
//! let mut demux = TsDemuxer::new(TsLimits::default());
//! let mut n = 0;
//! demux.push(&[0u8; 1000], &mut |_out: DemuxOutput| n += 1);
//! demux.finish(&mut |_out: DemuxOutput| n += 1);
//! assert_eq!(n, 0);
//! assert_eq!(demux.stats().packets, 0);
//! ```

use super::{Codec, Elementary, Packet, ProgramInfo, Track};

/// Size of one transport packet.
pub const TS_PACKET_LEN: usize = 188;
const SYNC: u8 = 0x47;
const PTS_WRAP: i64 = 1 << 33;

/// Size caps: the only allocations here are the PES buffers, the partial packet and
/// the PSI section buffer, and each is bounded.
#[derive(Debug, Clone, Copy)]
pub struct TsLimits {
    /// Largest video PES (one access unit) kept; a larger one is dropped and counted
    /// (`pes_overflows`, reported as `ts_error`). Default: an eighth of the default
    /// stream budget (1.5 MiB, several times a 4K intra frame at a high bitrate).
    pub max_video_pes: usize,
    /// Largest audio PES kept.
    pub max_audio_pes: usize,
}

impl Default for TsLimits {
    fn default() -> Self {
        super::pool::StreamBudget::default().ts_limits()
    }
}

/// Transport counters, cumulative since the demuxer was created (defined beside the
/// TR 101 290 checks that judge them, so `detect` never imports `ingest`).
pub use crate::detect::transport::TsStats;

/// TR 101 290: PAT and PMT must recur at least every 0.5 s (90 kHz ticks).
const PSI_MAX_GAP: i64 = 45_000;

/// What the demuxer reports.
#[derive(Debug)]
pub enum DemuxOutput {
    /// A new or changed program map (first PMT, or a PMT whose streams changed).
    Program(ProgramInfo),
    /// A complete elementary-stream packet of the selected video or audio track.
    Packet(Packet),
}

/// Per-PID state of a PES being reassembled.
#[derive(Debug, Default)]
struct PesAssembler {
    buf: Vec<u8>,
    /// A PES start was seen and `buf` holds its bytes.
    active: bool,
    /// The PES outgrew its cap: its bytes are being discarded until the next start.
    overflowed: bool,
    /// Bytes of this PES were lost (continuity error, TEI) while it was assembled.
    damaged: bool,
    /// The adaptation field's random_access_indicator was set on its first packet.
    random_access: bool,
}

#[derive(Debug, Default)]
struct Psi {
    buf: Vec<u8>,
    active: bool,
}

/// The push-mode demuxer. See the module docs for the calling contract.
#[derive(Debug)]
pub struct TsDemuxer {
    limits: TsLimits,
    stats: TsStats,
    /// Bytes of an incomplete packet carried to the next `push`.
    carry: Vec<u8>,
    /// Whether we are locked to the 188-byte sync pattern.
    locked: bool,
    /// Last continuity counter per PID (None = unseen). 8192 PIDs, 1 byte each.
    last_cc: Box<[u8; 8192]>,
    pat: Psi,
    pmt: Psi,
    pmt_pid: Option<u16>,
    program: Option<ProgramInfo>,
    video: PesAssembler,
    audio: PesAssembler,
    /// Last raw and unwrapped timestamp, for 33-bit wrap handling.
    last_ts: Option<(i64, i64)>,
    /// The transport's clock: the latest PTS seen (unwrapped), and the first.
    clock: Option<i64>,
    first_pts: Option<i64>,
    /// Clock at the last PAT / PMT, and whether the current gap was counted.
    last_pat_at: Option<i64>,
    last_pmt_at: Option<i64>,
    pat_late: bool,
    pmt_late: bool,
    /// Where PES buffers come from (and, via the decode thread, go back to).
    pool: Option<super::pool::BufPool>,
}

const CC_UNSEEN: u8 = 0xFF;

impl TsDemuxer {
    /// A demuxer with the given caps.
    pub fn new(limits: TsLimits) -> Self {
        TsDemuxer {
            limits,
            stats: TsStats::default(),
            carry: Vec::with_capacity(TS_PACKET_LEN * 3),
            locked: false,
            last_cc: Box::new([CC_UNSEEN; 8192]),
            pat: Psi::default(),
            pmt: Psi::default(),
            pmt_pid: None,
            program: None,
            video: PesAssembler::default(),
            audio: PesAssembler::default(),
            last_ts: None,
            clock: None,
            first_pts: None,
            last_pat_at: None,
            last_pmt_at: None,
            pat_late: false,
            pmt_late: false,
            pool: None,
        }
    }

    /// Takes PES buffers from `pool` (the decode thread gives them back), so that steady
    /// state does not allocate per packet.
    pub fn with_pool(mut self, pool: super::pool::BufPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Media seconds of the transport clock (latest PTS) since the first PTS.
    pub fn media_time(&self) -> Option<f64> {
        Some(crate::timebase::secs(self.clock? - self.first_pts?))
    }

    /// Advances the transport clock and counts PAT/PMT gaps longer than 0.5 s.
    fn advance_clock(&mut self, pts: i64) {
        if self.first_pts.is_none() {
            self.first_pts = Some(pts);
        }
        let c = self.clock.map_or(pts, |c| c.max(pts));
        self.clock = Some(c);
        // PSI seen before the first timestamp counts as seen at it.
        if self.stats.pat_count > 0 && self.last_pat_at.is_none() {
            self.last_pat_at = Some(c);
        }
        if self.stats.pmt_count > 0 && self.last_pmt_at.is_none() {
            self.last_pmt_at = Some(c);
        }
        if self.last_pat_at.is_some_and(|l| c - l > PSI_MAX_GAP) && !self.pat_late {
            self.pat_late = true;
            self.stats.pat_missing += 1;
        }
        if self.last_pmt_at.is_some_and(|l| c - l > PSI_MAX_GAP) && !self.pmt_late {
            self.pmt_late = true;
            self.stats.pmt_missing += 1;
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &TsStats {
        &self.stats
    }

    /// The current program, once a PMT was parsed.
    pub fn program(&self) -> Option<&ProgramInfo> {
        self.program.as_ref()
    }

    /// Feeds bytes. `out` receives programs and complete packets.
    pub fn push(&mut self, mut data: &[u8], out: &mut dyn FnMut(DemuxOutput)) {
        self.stats.bytes += data.len() as u64;
        // A partial packet (or an undecided sync window) from the last call: top it up
        // to one sync window at most and scan it, until it is used up or `data` is.
        let mut carry = std::mem::take(&mut self.carry);
        while !carry.is_empty() && !data.is_empty() {
            let want = (TS_PACKET_LEN * 3).saturating_sub(carry.len()).max(1);
            let take = want.min(data.len());
            carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            let used = self.scan(&carry, out);
            carry.drain(..used);
        }
        if carry.is_empty() {
            let used = self.scan(data, out);
            carry.extend_from_slice(&data[used..]);
        }
        self.carry = carry;
    }

    /// Parses whole packets from `data`; returns how many bytes were consumed. Stops
    /// when fewer than one packet (or, unlocked, fewer than the 3-packet sync window)
    /// remain; the caller carries the rest.
    fn scan(&mut self, data: &[u8], out: &mut dyn FnMut(DemuxOutput)) -> usize {
        let mut pos = 0;
        loop {
            if !self.locked {
                // Find three sync bytes at 188-byte spacing (or two, then the end).
                let mut found = None;
                let mut p = pos;
                while p + TS_PACKET_LEN * 2 < data.len() {
                    if data[p] == SYNC
                        && data[p + TS_PACKET_LEN] == SYNC
                        && data[p + 2 * TS_PACKET_LEN] == SYNC
                    {
                        found = Some(p);
                        break;
                    }
                    p += 1;
                }
                match found {
                    Some(p) => {
                        self.stats.skipped_bytes += (p - pos) as u64;
                        pos = p;
                        self.locked = true;
                    }
                    None => {
                        // Keep the tail that could still start a sync window.
                        let keep_from = data.len().saturating_sub(TS_PACKET_LEN * 2 + 1).max(pos);
                        self.stats.skipped_bytes += (keep_from - pos) as u64;
                        return keep_from;
                    }
                }
            }
            if pos + TS_PACKET_LEN > data.len() {
                return pos;
            }
            if data[pos] != SYNC {
                self.locked = false;
                self.stats.sync_losses += 1;
                continue;
            }
            let mut pkt = [0u8; TS_PACKET_LEN];
            pkt.copy_from_slice(&data[pos..pos + TS_PACKET_LEN]);
            self.packet(&pkt, out);
            pos += TS_PACKET_LEN;
        }
    }

    /// Flushes the PES packets still being assembled. Call once at end of input.
    pub fn finish(&mut self, out: &mut dyn FnMut(DemuxOutput)) {
        // A tail too short for the 3-packet sync window (a tiny file, or the last
        // packets after a resync): accept whole packets that start with a sync byte and
        // are followed by another sync byte or by the end.
        let carry = std::mem::take(&mut self.carry);
        let mut p = 0;
        while p + TS_PACKET_LEN <= carry.len() {
            let next_ok = p + TS_PACKET_LEN == carry.len() || carry[p + TS_PACKET_LEN] == SYNC;
            if carry[p] == SYNC && next_ok {
                let mut pkt = [0u8; TS_PACKET_LEN];
                pkt.copy_from_slice(&carry[p..p + TS_PACKET_LEN]);
                self.packet(&pkt, out);
                p += TS_PACKET_LEN;
            } else {
                p += 1;
            }
        }
        if p < carry.len() {
            // The input ended inside a packet: it was cut. The picture being assembled
            // is incomplete; decoding it would report the cut as corruption.
            self.stats.truncated_bytes += (carry.len() - p) as u64;
            if self.video.active {
                self.video = PesAssembler::default();
                self.stats.truncated_pes += 1;
            }
        }
        self.flush_pes(Track::Video, out);
        self.flush_pes(Track::Audio, out);
        self.carry.clear();
    }

    fn packet(&mut self, p: &[u8; TS_PACKET_LEN], out: &mut dyn FnMut(DemuxOutput)) {
        self.stats.packets += 1;
        let tei = p[1] & 0x80 != 0;
        let pusi = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
        let afc = (p[3] >> 4) & 0x3;
        let cc = p[3] & 0x0F;
        if tei {
            self.stats.tei_packets += 1;
        }
        if pid == 0x1FFF {
            return; // null packet
        }
        let mut off = 4;
        let mut discontinuity = false;
        let mut random_access = false;
        if afc & 0x2 != 0 {
            let af_len = p[4] as usize;
            if af_len > 0 && 5 + af_len <= TS_PACKET_LEN {
                discontinuity = p[5] & 0x80 != 0;
                random_access = p[5] & 0x40 != 0;
            }
            off = 5 + af_len;
        }
        let has_payload = afc & 0x1 != 0;
        // Continuity counter (ISO 13818-1 2.4.3.3): increments on packets with payload;
        // one duplicate is allowed; the discontinuity indicator resets it.
        let mut lost = false;
        if has_payload {
            let last = self.last_cc[pid as usize];
            if last != CC_UNSEEN && !discontinuity && cc != (last + 1) & 0xF && cc != last {
                self.stats.cc_errors += 1;
                lost = true;
            }
            let duplicate = last == cc && !discontinuity;
            self.last_cc[pid as usize] = cc;
            if duplicate {
                return;
            }
        }
        if !has_payload || off >= TS_PACKET_LEN {
            return;
        }
        let payload = &p[off..];
        if pid == 0 {
            self.psi_packet(true, pusi, payload, out);
        } else if Some(pid) == self.pmt_pid {
            self.psi_packet(false, pusi, payload, out);
        } else if let Some(track) = self.track_of(pid) {
            self.pes_packet(track, pusi, random_access, lost || tei, payload, out);
        }
    }

    fn track_of(&self, pid: u16) -> Option<Track> {
        let prog = self.program.as_ref()?;
        if prog.video.as_ref().is_some_and(|e| e.pid == pid) {
            Some(Track::Video)
        } else if prog.audio.as_ref().is_some_and(|e| e.pid == pid) {
            Some(Track::Audio)
        } else {
            None
        }
    }

    fn psi_packet(
        &mut self,
        is_pat: bool,
        pusi: bool,
        payload: &[u8],
        out: &mut dyn FnMut(DemuxOutput),
    ) {
        // Sections are at most 1024 bytes (PAT/PMT): cap the buffer there.
        const MAX_SECTION: usize = 1024 + 3;
        let psi = if is_pat { &mut self.pat } else { &mut self.pmt };
        if pusi {
            let pointer = payload[0] as usize;
            if 1 + pointer >= payload.len() {
                self.stats.psi_errors += 1;
                psi.active = false;
                return;
            }
            psi.buf.clear();
            psi.buf.extend_from_slice(&payload[1 + pointer..]);
            psi.active = true;
        } else if psi.active {
            if psi.buf.len() + payload.len() > MAX_SECTION + TS_PACKET_LEN {
                self.stats.psi_errors += 1;
                psi.active = false;
                return;
            }
            psi.buf.extend_from_slice(payload);
        } else {
            return;
        }
        if psi.buf.len() < 3 {
            return;
        }
        let section_len = ((usize::from(psi.buf[1]) & 0x0F) << 8) | usize::from(psi.buf[2]);
        if section_len > 1021 {
            self.stats.psi_errors += 1;
            psi.active = false;
            return;
        }
        if psi.buf.len() < 3 + section_len {
            return; // wait for more packets
        }
        psi.active = false;
        let section = std::mem::take(&mut psi.buf);
        let sec = &section[..3 + section_len];
        if sec.len() < 12 || crc32_mpeg(sec) != 0 {
            self.stats.psi_errors += 1;
        } else if is_pat {
            self.parse_pat(sec);
        } else {
            self.parse_pmt(sec, out);
        }
        // Give the buffer back so steady state does not allocate.
        let psi = if is_pat { &mut self.pat } else { &mut self.pmt };
        psi.buf = section;
        psi.buf.clear();
    }

    fn parse_pat(&mut self, sec: &[u8]) {
        if sec[0] != 0x00 {
            self.stats.psi_errors += 1;
            return;
        }
        self.stats.pat_count += 1;
        if self.clock.is_some() {
            self.last_pat_at = self.clock;
        }
        self.pat_late = false;
        // Program loop: from byte 8 to before the CRC.
        let body = &sec[8..sec.len() - 4];
        for entry in body.chunks_exact(4) {
            let program_number = u16::from_be_bytes([entry[0], entry[1]]);
            let pid = (u16::from(entry[2] & 0x1F) << 8) | u16::from(entry[3]);
            if program_number != 0 {
                // First program wins (single-program transport streams are the norm
                // for live feeds and HLS).
                if self.pmt_pid != Some(pid) {
                    self.pmt_pid = Some(pid);
                    self.pmt = Psi::default();
                }
                return;
            }
        }
    }

    fn parse_pmt(&mut self, sec: &[u8], out: &mut dyn FnMut(DemuxOutput)) {
        if sec[0] != 0x02 || sec.len() < 16 {
            self.stats.psi_errors += 1;
            return;
        }
        self.stats.pmt_count += 1;
        if self.clock.is_some() {
            self.last_pmt_at = self.clock;
        }
        self.pmt_late = false;
        let program_info_len = ((usize::from(sec[10]) & 0x0F) << 8) | usize::from(sec[11]);
        let end = sec.len() - 4;
        let mut i = 12 + program_info_len;
        let mut video: Option<Elementary> = None;
        let mut audio: Option<Elementary> = None;
        let mut others: u32 = 0;
        while i + 5 <= end {
            let stream_type = sec[i];
            let pid = (u16::from(sec[i + 1] & 0x1F) << 8) | u16::from(sec[i + 2]);
            let es_info_len = ((usize::from(sec[i + 3]) & 0x0F) << 8) | usize::from(sec[i + 4]);
            let es = Elementary {
                pid,
                stream_type,
                codec: Codec::from_stream_type(stream_type),
            };
            i += 5 + es_info_len;
            if es.codec.is_video() {
                // Prefer H.264 over other video codecs; otherwise first listed.
                let better = match &video {
                    None => true,
                    Some(v) => v.codec != Codec::H264 && es.codec == Codec::H264,
                };
                if better {
                    video = Some(es);
                    continue;
                }
            } else if es.codec.is_audio() {
                let better = match &audio {
                    None => true,
                    Some(a) => a.codec != Codec::Aac && es.codec == Codec::Aac,
                };
                if better {
                    audio = Some(es);
                    continue;
                }
            }
            others = others.saturating_add(1);
        }
        let prog = ProgramInfo {
            video,
            audio,
            other_streams: others,
        };
        if self.program.as_ref() != Some(&prog) {
            // Tracks changed: drop half-assembled PES of the old PIDs.
            self.video = PesAssembler::default();
            self.audio = PesAssembler::default();
            self.program = Some(prog.clone());
            out(DemuxOutput::Program(prog));
        }
    }

    fn assembler(&mut self, track: Track) -> (&mut PesAssembler, usize) {
        match track {
            Track::Video => (&mut self.video, self.limits.max_video_pes),
            Track::Audio => (&mut self.audio, self.limits.max_audio_pes),
        }
    }

    fn pes_packet(
        &mut self,
        track: Track,
        pusi: bool,
        random_access: bool,
        lost: bool,
        payload: &[u8],
        out: &mut dyn FnMut(DemuxOutput),
    ) {
        if pusi {
            self.flush_pes(track, out);
            // The flushed PES took its buffer along: get a recycled one.
            let fresh = match self.assembler(track).0.buf.capacity() {
                0 => self.pool.as_ref().map(super::pool::BufPool::take),
                _ => None,
            };
            let (asm, _) = self.assembler(track);
            asm.active = true;
            asm.overflowed = false;
            asm.damaged = lost;
            asm.random_access = random_access;
            asm.buf.clear();
            if let Some(b) = fresh {
                asm.buf = b;
            }
        }
        let (asm, cap) = self.assembler(track);
        if !asm.active {
            return; // joined mid-PES: wait for the next start
        }
        if lost {
            asm.damaged = true;
        }
        if asm.overflowed {
            return;
        }
        if asm.buf.len() + payload.len() > cap {
            asm.overflowed = true;
            asm.buf.clear();
            self.stats.pes_overflows += 1;
            return;
        }
        asm.buf.extend_from_slice(payload);
        // Audio PES usually carry their length: emit as soon as complete (lower latency).
        if asm.buf.len() >= 6 {
            let declared = usize::from(u16::from_be_bytes([asm.buf[4], asm.buf[5]]));
            if declared != 0 && asm.buf.len() >= 6 + declared {
                self.flush_pes(track, out);
            }
        }
    }

    fn flush_pes(&mut self, track: Track, out: &mut dyn FnMut(DemuxOutput)) {
        let (asm, _) = self.assembler(track);
        if !asm.active || asm.overflowed {
            asm.active = false;
            return;
        }
        asm.active = false;
        let damaged = asm.damaged;
        let random_access = asm.random_access;
        let buf = std::mem::take(&mut asm.buf);
        match parse_pes_header(&buf) {
            Some(h) => {
                let end = if h.declared_len != 0 {
                    (6 + h.declared_len).min(buf.len())
                } else {
                    buf.len()
                };
                if h.payload_start > end {
                    self.stats.pes_header_errors += 1;
                    let (asm, _) = self.assembler(track);
                    asm.buf = buf;
                    return;
                }
                let pts = h.pts.map(|raw| self.unwrap_ts(raw));
                let dts = h.dts.map(|raw| self.unwrap_ts(raw));
                if let Some(p) = dts.or(pts) {
                    self.advance_clock(p);
                }
                let mut data = buf;
                data.truncate(end);
                data.drain(..h.payload_start);
                let key = match track {
                    Track::Video => random_access || crate::codec::h264::has_idr(&data),
                    Track::Audio => true,
                };
                out(DemuxOutput::Packet(Packet {
                    track,
                    pts,
                    dts,
                    key,
                    damaged,
                    data,
                }));
            }
            None => {
                self.stats.pes_header_errors += 1;
                let (asm, _) = self.assembler(track);
                asm.buf = buf;
            }
        }
    }

    /// Unwraps a 33-bit timestamp against the last one seen (any track: audio and video
    /// timestamps of one program are close), so a stream can run past 26.5 hours.
    fn unwrap_ts(&mut self, raw: i64) -> i64 {
        match self.last_ts {
            None => {
                self.last_ts = Some((raw, raw));
                raw
            }
            Some((last_raw, last_unwrapped)) => {
                let mut diff = (raw - last_raw).rem_euclid(PTS_WRAP);
                if diff >= PTS_WRAP / 2 {
                    diff -= PTS_WRAP;
                }
                let unwrapped = last_unwrapped + diff;
                self.last_ts = Some((raw, unwrapped));
                unwrapped
            }
        }
    }
}

struct PesHeader {
    declared_len: usize,
    payload_start: usize,
    pts: Option<i64>,
    dts: Option<i64>,
}

fn parse_pes_header(b: &[u8]) -> Option<PesHeader> {
    if b.len() < 9 || b[0] != 0 || b[1] != 0 || b[2] != 1 {
        return None;
    }
    let stream_id = b[3];
    let declared_len = usize::from(u16::from_be_bytes([b[4], b[5]]));
    // Streams without the optional PES header (padding, private_stream_2, ...).
    if matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xFF | 0xF2 | 0xF8
    ) {
        return Some(PesHeader {
            declared_len,
            payload_start: 6,
            pts: None,
            dts: None,
        });
    }
    if b[6] & 0xC0 != 0x80 {
        return None;
    }
    let flags = b[7] >> 6;
    let header_len = usize::from(b[8]);
    let payload_start = 9 + header_len;
    if payload_start > b.len() {
        return None;
    }
    let mut pts = None;
    let mut dts = None;
    if flags & 0x2 != 0 {
        if header_len < 5 {
            return None;
        }
        pts = Some(read_ts(&b[9..14]));
    }
    if flags == 0x3 {
        if header_len < 10 {
            return None;
        }
        dts = Some(read_ts(&b[14..19]));
    }
    Some(PesHeader {
        declared_len,
        payload_start,
        pts,
        dts,
    })
}

fn read_ts(b: &[u8]) -> i64 {
    (i64::from(b[0] >> 1 & 0x07) << 30)
        | (i64::from(b[1]) << 22)
        | (i64::from(b[2] >> 1) << 15)
        | (i64::from(b[3]) << 7)
        | i64::from(b[4] >> 1)
}

/// CRC-32/MPEG-2 over a PSI section including its CRC: 0 when intact.
fn crc32_mpeg(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xFFFF_FFFF;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a PSI section with a valid CRC.
    pub(crate) fn section(table_id: u8, ext: u16, body: &[u8]) -> Vec<u8> {
        let len = 5 + body.len() + 4;
        let mut s = vec![
            table_id,
            0xB0 | ((len >> 8) as u8 & 0x0F),
            len as u8,
            (ext >> 8) as u8,
            ext as u8,
            0xC1,
            0,
            0,
        ];
        s.extend_from_slice(body);
        let crc = {
            let mut crc: u32 = 0xFFFF_FFFF;
            for &byte in &s {
                crc ^= u32::from(byte) << 24;
                for _ in 0..8 {
                    crc = if crc & 0x8000_0000 != 0 {
                        (crc << 1) ^ 0x04C1_1DB7
                    } else {
                        crc << 1
                    };
                }
            }
            crc
        };
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    pub(crate) fn ts_packet(pid: u16, pusi: bool, cc: u8, payload: &[u8]) -> [u8; 188] {
        let mut p = [0xFFu8; 188];
        p[0] = SYNC;
        p[1] = if pusi { 0x40 } else { 0 } | (pid >> 8) as u8;
        p[2] = pid as u8;
        let room = 184;
        if payload.len() >= room {
            p[3] = 0x10 | (cc & 0xF);
            p[4..].copy_from_slice(&payload[..room]);
        } else {
            // Stuff with an adaptation field.
            let af_len = room - payload.len() - 1;
            p[3] = 0x30 | (cc & 0xF);
            p[4] = af_len as u8;
            if af_len > 0 {
                p[5] = 0;
            }
            p[5 + af_len..].copy_from_slice(payload);
        }
        p
    }

    pub(crate) fn pes(stream_id: u8, pts: i64, es: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 1, stream_id, 0, 0, 0x80, 0x80, 5];
        let t = pts & (PTS_WRAP - 1);
        v.push(0x21 | ((t >> 29) as u8 & 0x0E));
        v.push((t >> 22) as u8);
        v.push(((t >> 14) as u8 & 0xFE) | 1);
        v.push((t >> 7) as u8);
        v.push(((t << 1) as u8 & 0xFE) | 1);
        v.extend_from_slice(es);
        v
    }

    /// A tiny TS: PAT, PMT (H.264 on 0x100, AAC on 0x101), then the given PES per track.
    pub(crate) fn build_ts(frames: &[(Track, i64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let pat = section(0x00, 1, &[0, 1, 0xF0, 0x00]);
        let mut pat_payload = vec![0];
        pat_payload.extend_from_slice(&pat);
        out.extend_from_slice(&ts_packet(0, true, 0, &pat_payload));
        let pmt_body = [
            0xE1, 0x00, 0xF0, 0x00, 0x1B, 0xE1, 0x00, 0xF0, 0x00, 0x0F, 0xE1, 0x01, 0xF0, 0x00,
        ];
        let pmt = section(0x02, 1, &pmt_body);
        let mut pmt_payload = vec![0];
        pmt_payload.extend_from_slice(&pmt);
        out.extend_from_slice(&ts_packet(0x1000, true, 0, &pmt_payload));
        let mut cc = [0u8; 2];
        for (track, pts, es) in frames {
            let (pid, sid, i) = match track {
                Track::Video => (0x100, 0xE0, 0),
                Track::Audio => (0x101, 0xC0, 1),
            };
            let p = pes(sid, *pts, es);
            for (n, chunk) in p.chunks(184).enumerate() {
                out.extend_from_slice(&ts_packet(pid, n == 0, cc[i], chunk));
                cc[i] = (cc[i] + 1) & 0xF;
            }
        }
        out
    }

    fn collect(demux: &mut TsDemuxer, data: &[u8], chunk: usize) -> Vec<DemuxOutput> {
        let mut v = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            demux.push(c, &mut |o| v.push(o));
        }
        demux.finish(&mut |o| v.push(o));
        v
    }

    fn idr(n: u8) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1, 0x65];
        v.extend(std::iter::repeat_n(n, 400));
        v
    }

    #[test]
    fn demuxes_program_and_packets_in_any_chunking() {
        let ts = build_ts(&[
            (Track::Video, 900_000, idr(1)),
            (Track::Audio, 900_000, vec![0xFF, 0xF1, 1, 2, 3]),
            (Track::Video, 903_600, vec![0, 0, 1, 0x41, 9, 9, 9]),
        ]);
        for chunk in [1, 7, 188, 500, 100_000] {
            let mut d = TsDemuxer::new(TsLimits::default());
            let out = collect(&mut d, &ts, chunk);
            assert_eq!(out.len(), 4, "chunk {chunk}");
            match &out[0] {
                DemuxOutput::Program(p) => {
                    assert_eq!(
                        p.video.as_ref().map(|v| (v.pid, v.codec)),
                        Some((0x100, Codec::H264))
                    );
                    assert_eq!(
                        p.audio.as_ref().map(|a| (a.pid, a.codec)),
                        Some((0x101, Codec::Aac))
                    );
                }
                o => panic!("expected program, got {o:?}"),
            }
            let pk: Vec<&Packet> = out
                .iter()
                .filter_map(|o| match o {
                    DemuxOutput::Packet(p) => Some(p),
                    _ => None,
                })
                .collect();
            let video: Vec<&&Packet> = pk.iter().filter(|p| p.track == Track::Video).collect();
            let audio: Vec<&&Packet> = pk.iter().filter(|p| p.track == Track::Audio).collect();
            assert_eq!(video.len(), 2);
            assert_eq!(video[0].pts, Some(900_000));
            assert!(video[0].key);
            assert_eq!(video[0].data, idr(1));
            assert_eq!(video[1].pts, Some(903_600));
            assert!(!video[1].key);
            assert_eq!(audio.len(), 1);
            assert_eq!(audio[0].data, vec![0xFF, 0xF1, 1, 2, 3]);
            assert_eq!(d.stats().cc_errors, 0);
            assert_eq!(d.stats().sync_losses, 0);
        }
    }

    #[test]
    fn unwraps_33_bit_pts() {
        let near = PTS_WRAP - 1800;
        let ts = build_ts(&[
            (Track::Video, near, idr(1)),
            (Track::Video, near + 3600, idr(2)),
        ]);
        let mut d = TsDemuxer::new(TsLimits::default());
        let out = collect(&mut d, &ts, 188);
        let pts: Vec<i64> = out
            .iter()
            .filter_map(|o| match o {
                DemuxOutput::Packet(p) => p.pts,
                _ => None,
            })
            .collect();
        assert_eq!(pts, vec![near, near + 3600]);
    }

    #[test]
    fn counts_cc_errors_and_marks_damage() {
        let mut ts = build_ts(&[(Track::Video, 0, idr(1)), (Track::Video, 3600, idr(2))]);
        // idr(1) PES spans 3 packets (2 PSI packets before): remove packet index 3.
        ts.drain(3 * 188..4 * 188);
        let mut d = TsDemuxer::new(TsLimits::default());
        let out = collect(&mut d, &ts, 1000);
        assert_eq!(d.stats().cc_errors, 1);
        let damaged: Vec<bool> = out
            .iter()
            .filter_map(|o| match o {
                DemuxOutput::Packet(p) => Some(p.damaged),
                _ => None,
            })
            .collect();
        assert_eq!(damaged, vec![true, false]);
    }

    #[test]
    fn resyncs_after_garbage_and_counts_it() {
        let ts = build_ts(&[(Track::Video, 0, idr(1)), (Track::Video, 3600, idr(2))]);
        let mut bad = ts[..188 * 3].to_vec();
        bad.extend_from_slice(&[0x11; 50]);
        bad.extend_from_slice(&ts[188 * 3..]);
        let mut d = TsDemuxer::new(TsLimits::default());
        let out = collect(&mut d, &bad, 64);
        assert_eq!(d.stats().sync_losses, 1);
        assert_eq!(d.stats().skipped_bytes, 50);
        let n = out
            .iter()
            .filter(|o| matches!(o, DemuxOutput::Packet(_)))
            .count();
        assert_eq!(n, 2);
    }

    #[test]
    fn input_cut_mid_packet_drops_the_incomplete_picture() {
        let ts = build_ts(&[(Track::Video, 0, idr(1)), (Track::Video, 3600, idr(2))]);
        let cut = &ts[..ts.len() - 100];
        let mut d = TsDemuxer::new(TsLimits::default());
        let out = collect(&mut d, cut, 188);
        let pts: Vec<Option<i64>> = out
            .iter()
            .filter_map(|o| match o {
                DemuxOutput::Packet(p) => Some(p.pts),
                _ => None,
            })
            .collect();
        assert_eq!(pts, vec![Some(0)]);
        assert_eq!(d.stats().truncated_pes, 1);
        assert_eq!(d.stats().truncated_bytes, 88);
    }

    #[test]
    fn psi_gaps_over_half_a_second_are_counted() {
        // PAT/PMT once at the start, then 2 s of video every 40 ms: one gap each.
        let frames: Vec<(Track, i64, Vec<u8>)> = (0..50)
            .map(|i| (Track::Video, i * 3600, idr(i as u8)))
            .collect();
        let ts = build_ts(&frames);
        let mut d = TsDemuxer::new(TsLimits::default());
        collect(&mut d, &ts, 188 * 7);
        assert_eq!(d.stats().pat_missing, 1);
        assert_eq!(d.stats().pmt_missing, 1);
        assert!((d.media_time().unwrap() - 49.0 * 0.04).abs() < 1e-9);
        // A short input is fine.
        let ts = build_ts(&frames[..10]);
        let mut d = TsDemuxer::new(TsLimits::default());
        collect(&mut d, &ts, 188);
        assert_eq!((d.stats().pat_missing, d.stats().pmt_missing), (0, 0));
    }

    #[test]
    fn random_bytes_yield_nothing() {
        let mut x: u32 = 12345;
        let data: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        let mut d = TsDemuxer::new(TsLimits::default());
        let out = collect(&mut d, &data, 4096);
        assert!(out.is_empty());
        assert_eq!(d.stats().pat_count, 0);
    }

    #[test]
    fn oversize_pes_is_dropped_and_counted() {
        let ts = build_ts(&[
            (Track::Video, 0, idr(1)),
            (Track::Video, 3600, vec![0, 0, 1, 0x41, 1]),
        ]);
        let mut d = TsDemuxer::new(TsLimits {
            max_video_pes: 200,
            max_audio_pes: 200,
        });
        let out = collect(&mut d, &ts, 188);
        assert_eq!(d.stats().pes_overflows, 1);
        let n = out
            .iter()
            .filter(|o| matches!(o, DemuxOutput::Packet(_)))
            .count();
        assert_eq!(n, 1);
    }

    #[test]
    fn hevc_program_is_reported_with_its_codec() {
        let mut ts = Vec::new();
        let pat = section(0x00, 1, &[0, 1, 0xF0, 0x00]);
        let mut pl = vec![0];
        pl.extend_from_slice(&pat);
        ts.extend_from_slice(&ts_packet(0, true, 0, &pl));
        let pmt = section(
            0x02,
            1,
            &[0xE1, 0x00, 0xF0, 0x00, 0x24, 0xE1, 0x00, 0xF0, 0x00],
        );
        let mut pl = vec![0];
        pl.extend_from_slice(&pmt);
        ts.extend_from_slice(&ts_packet(0x1000, true, 0, &pl));
        let mut d = TsDemuxer::new(TsLimits::default());
        let out = collect(&mut d, &ts, 188);
        match &out[..] {
            [DemuxOutput::Program(p)] => {
                assert_eq!(p.video.as_ref().map(|v| v.codec), Some(Codec::Hevc));
                assert!(p.audio.is_none());
            }
            o => panic!("{o:?}"),
        }
    }
}
