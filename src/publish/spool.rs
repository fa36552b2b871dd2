//! The agent's outbox: events waiting for the broker's PUBACK, bounded in bytes and
//! spooled to disk so that neither a broker outage nor a crash of the probe loses them.
//!
//! Hand-written: no crate offers a small, append-only, checksummed queue with
//! "remove on acknowledgement" and a byte bound that fits an edge box (sled and friends
//! are databases; file-backed channel crates have no acknowledgements).
//!
//! # On disk
//!
//! `dir/seg-{first_seq:020}.log` are append-only segments of records:
//!
//! ```text
//! u32 le  body length      (≤ MAX_RECORD)
//! u32 le  crc32 of body
//! body:   u64 le seq | u16 le topic length | topic (UTF-8) | payload
//! ```
//!
//! `dir/head` holds the lowest sequence number that may still be unacknowledged
//! (written to a temporary file and renamed). Records below it are done. A segment is
//! deleted once all its records are below the head.
//!
//! On open, every segment is read; at the first record that is truncated or fails its
//! checksum the segment is cut there (a crash mid-write leaves such a tail) and the loss
//! is counted in [`SpoolStats::corrupt_bytes`].
//!
//! # Durability
//!
//! Records are written to the file as they are pushed (so a crash of the process loses
//! nothing); [`Spool::sync`] fsyncs in batches (the agent calls it every 200 ms and at
//! shutdown), which bounds what a power cut can lose. The head is written at sync time:
//! after a crash, events acknowledged since the last sync are sent again. That is
//! at-least-once delivery, and event ids let subscribers drop the duplicates.
//!
//! # Bound and overflow policy
//!
//! Unacknowledged records are held in memory too (they are what the publisher sends),
//! so `max_bytes` bounds both memory and disk. Overflow policy: **drop-oldest**: the
//! oldest pending records are discarded to make room, counted in
//! [`SpoolStats::dropped_full`], and reported in the agent's stats as soon as the broker
//! is reachable. The newest state of a stream is what an operator needs most.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Largest record accepted (larger bodies on disk are corruption).
pub const MAX_RECORD: usize = 1 << 20;
/// Record header: length + crc.
const HEADER: usize = 8;

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    pub dir: PathBuf,
    /// Bound on pending record bytes (headers included).
    pub max_bytes: u64,
    /// A new segment file is started past this size.
    pub segment_bytes: u64,
}

/// One pending record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Record {
    fn size(&self) -> u64 {
        (HEADER + 8 + 2 + self.topic.len() + self.payload.len()) as u64
    }

    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.size() as usize);
        body.extend_from_slice(&[0u8; HEADER]);
        body.extend_from_slice(&self.seq.to_le_bytes());
        body.extend_from_slice(&(self.topic.len() as u16).to_le_bytes());
        body.extend_from_slice(self.topic.as_bytes());
        body.extend_from_slice(&self.payload);
        let len = (body.len() - HEADER) as u32;
        let crc = crc32fast::hash(&body[HEADER..]);
        body[0..4].copy_from_slice(&len.to_le_bytes());
        body[4..8].copy_from_slice(&crc.to_le_bytes());
        body
    }

    fn decode(body: &[u8]) -> Option<Record> {
        if body.len() < 10 {
            return None;
        }
        let seq = u64::from_le_bytes(body[0..8].try_into().ok()?);
        let tlen = u16::from_le_bytes(body[8..10].try_into().ok()?) as usize;
        let topic = std::str::from_utf8(body.get(10..10 + tlen)?).ok()?;
        Some(Record {
            seq,
            topic: topic.to_string(),
            payload: body[10 + tlen..].to_vec(),
        })
    }
}

/// Counters of the spool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    /// Records pushed since start.
    pub pushed: u64,
    /// Records acknowledged by the broker since start.
    pub acked: u64,
    /// Records discarded because the spool was full (policy drop-oldest).
    pub dropped_full: u64,
    /// Records found on disk at start (from a previous run).
    pub recovered: u64,
    /// Bytes cut from segment tails that were truncated or failed their checksum.
    pub corrupt_bytes: u64,
    /// Writes or syncs that failed (the record stays in memory).
    pub write_errors: u64,
}

#[derive(Debug)]
struct Segment {
    last_seq: u64,
    path: PathBuf,
}

#[derive(Debug)]
struct Pending {
    rec: Record,
    acked: bool,
}

/// The outbox. Not thread-safe by itself: the publisher wraps it in a mutex.
#[derive(Debug)]
pub struct Spool {
    opts: SpoolOptions,
    pending: VecDeque<Pending>,
    bytes: u64,
    next_seq: u64,
    head: u64,
    head_dirty: bool,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    writer_size: u64,
    dirty: bool,
    stats: SpoolStats,
}

impl Spool {
    /// Opens (creating) the spool in `opts.dir` and recovers what a previous run left.
    pub fn open(opts: SpoolOptions) -> io::Result<Spool> {
        fs::create_dir_all(&opts.dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&opts.dir, fs::Permissions::from_mode(0o700));
        }
        let head = match fs::read_to_string(opts.dir.join("head")) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&opts.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(n) = name
                .strip_prefix("seg-")
                .and_then(|r| r.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                names.push((n, path));
            }
        }
        names.sort();
        let mut spool = Spool {
            opts,
            pending: VecDeque::new(),
            bytes: 0,
            next_seq: head.max(1),
            head: head.max(1),
            head_dirty: false,
            segments: VecDeque::new(),
            writer: None,
            writer_size: 0,
            dirty: false,
            stats: SpoolStats::default(),
        };
        for (first, path) in names {
            let (records, good_len, file_len) = read_segment(&path)?;
            if good_len < file_len {
                tracing::warn!(
                    segment = %path.display(),
                    cut_bytes = file_len - good_len,
                    "spool: truncated or corrupt record at the end of a segment; cut it"
                );
                spool.stats.corrupt_bytes += file_len - good_len;
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(good_len)?;
                f.sync_all()?;
            }
            let mut last = first;
            for rec in records {
                // Sequence numbers only grow; a record that does not (hand-edited or
                // resurrected files) would be delivered twice or out of order: skip it.
                if spool.pending.back().is_some_and(|p| rec.seq <= p.rec.seq) || rec.seq == u64::MAX
                {
                    tracing::warn!(seq = rec.seq, segment = %path.display(), "spool: record out of sequence; skipped");
                    continue;
                }
                last = last.max(rec.seq);
                spool.next_seq = spool.next_seq.max(rec.seq + 1);
                if rec.seq >= spool.head {
                    spool.stats.recovered += 1;
                    spool.bytes += rec.size();
                    spool.pending.push_back(Pending { rec, acked: false });
                }
            }
            spool.segments.push_back(Segment {
                last_seq: last,
                path,
            });
        }
        spool.enforce_bound();
        spool.collect_segments();
        Ok(spool)
    }

    /// Appends a record; returns its sequence number. Never fails: a write error is
    /// counted and logged and the record is kept in memory.
    pub fn push(&mut self, topic: &str, payload: &[u8]) -> u64 {
        let rec = Record {
            seq: self.next_seq,
            topic: topic.to_string(),
            payload: payload.to_vec(),
        };
        self.next_seq += 1;
        if let Err(e) = self.write(&rec) {
            self.stats.write_errors += 1;
            self.writer = None;
            tracing::error!(error = %e, dir = %self.opts.dir.display(), "spool: cannot write record (kept in memory only)");
        }
        self.stats.pushed += 1;
        self.bytes += rec.size();
        let seq = rec.seq;
        self.pending.push_back(Pending { rec, acked: false });
        self.enforce_bound();
        seq
    }

    fn write(&mut self, rec: &Record) -> io::Result<()> {
        if self.writer.is_none() || self.writer_size >= self.opts.segment_bytes {
            let path = self.opts.dir.join(format!("seg-{:020}.log", rec.seq));
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            if let Some(old) = self.writer.take() {
                old.sync_data()?;
            }
            self.writer = Some(f);
            self.writer_size = 0;
            self.segments.push_back(Segment {
                last_seq: rec.seq,
                path,
            });
        }
        let bytes = rec.encode();
        if let Some(w) = self.writer.as_mut() {
            w.write_all(&bytes)?;
        }
        self.writer_size += bytes.len() as u64;
        if let Some(s) = self.segments.back_mut() {
            s.last_seq = rec.seq;
        }
        self.dirty = true;
        Ok(())
    }

    /// Drop-oldest until within the bound.
    fn enforce_bound(&mut self) {
        while self.bytes > self.opts.max_bytes && self.pending.len() > 1 {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.bytes -= p.rec.size();
            if !p.acked {
                self.stats.dropped_full += 1;
                if self.stats.dropped_full.is_power_of_two() {
                    tracing::warn!(
                        dropped = self.stats.dropped_full,
                        max_bytes = self.opts.max_bytes,
                        "spool full: dropping the oldest undelivered events (policy drop-oldest)"
                    );
                }
            }
        }
        self.advance_head();
    }

    /// The broker acknowledged `seq`. Unknown sequence numbers (already dropped) are
    /// ignored.
    pub fn ack(&mut self, seq: u64) {
        let i = self.pending.partition_point(|p| p.rec.seq < seq);
        if let Some(p) = self.pending.get_mut(i) {
            if p.rec.seq == seq && !p.acked {
                p.acked = true;
                self.stats.acked += 1;
            }
        }
        self.advance_head();
    }

    fn advance_head(&mut self) {
        while self.pending.front().is_some_and(|p| p.acked) {
            if let Some(p) = self.pending.pop_front() {
                self.bytes -= p.rec.size();
            }
        }
        let head = self
            .pending
            .front()
            .map(|p| p.rec.seq)
            .unwrap_or(self.next_seq);
        if head != self.head {
            self.head = head;
            self.head_dirty = true;
        }
    }

    /// The first pending (unacknowledged) record with `seq >= from`.
    pub fn next_from(&self, from: u64) -> Option<&Record> {
        let i = self.pending.partition_point(|p| p.rec.seq < from);
        self.pending.range(i..).find(|p| !p.acked).map(|p| &p.rec)
    }

    /// Lowest pending sequence number (or the next one when empty).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Number of pending records.
    pub fn len(&self) -> usize {
        self.pending.iter().filter(|p| !p.acked).count()
    }

    /// True when every record was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.pending.iter().all(|p| p.acked)
    }

    /// Pending bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    /// Makes pushed records and the head durable (fsync), and deletes finished
    /// segments. Cheap when nothing changed.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            if let Some(w) = &self.writer {
                if let Err(e) = w.sync_data() {
                    self.stats.write_errors += 1;
                    return Err(e);
                }
            }
            self.dirty = false;
        }
        if self.head_dirty {
            let tmp = self.opts.dir.join("head.tmp");
            let mut f = File::create(&tmp)?;
            writeln!(f, "{}", self.head)?;
            f.sync_all()?;
            fs::rename(&tmp, self.opts.dir.join("head"))?;
            self.head_dirty = false;
            self.collect_segments();
        }
        Ok(())
    }

    /// Deletes segments all of whose records are below the head (never the one being
    /// written).
    fn collect_segments(&mut self) {
        while self.segments.len() > 1 || (self.writer.is_none() && !self.segments.is_empty()) {
            let Some(s) = self.segments.front() else {
                break;
            };
            if s.last_seq >= self.head {
                break;
            }
            if let Err(e) = fs::remove_file(&s.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, segment = %s.path.display(), "spool: cannot delete finished segment");
                    break;
                }
            }
            self.segments.pop_front();
        }
    }

    /// Segment files currently on disk (for tests and stats).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }
}

/// Reads a segment: its valid records, the length of the valid prefix, the file length.
fn read_segment(path: &Path) -> io::Result<(Vec<Record>, u64, u64)> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut records = Vec::new();
    let mut off = 0usize;
    while off + HEADER <= data.len() {
        let len =
            u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        let crc = u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
        if len > MAX_RECORD || off + HEADER + len > data.len() {
            break;
        }
        let body = &data[off + HEADER..off + HEADER + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let Some(rec) = Record::decode(body) else {
            break;
        };
        records.push(rec);
        off += HEADER + len;
    }
    Ok((records, off as u64, data.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path, max: u64) -> SpoolOptions {
        SpoolOptions {
            dir: dir.to_path_buf(),
            max_bytes: max,
            segment_bytes: 256,
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vqprobe-spool-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn survives_reopen_and_forgets_acked() {
        let d = tmp("reopen");
        let mut s = Spool::open(opts(&d, 1 << 20)).unwrap();
        let a = s.push("t/a", b"one");
        let b = s.push("t/b", b"two");
        let c = s.push("t/c", b"three");
        s.ack(a);
        s.sync().unwrap();
        drop(s);
        let mut s = Spool::open(opts(&d, 1 << 20)).unwrap();
        assert_eq!(s.stats().recovered, 2);
        assert_eq!(s.next_from(0).unwrap().seq, b);
        assert_eq!(s.next_from(b + 1).unwrap().payload, b"three");
        // New records continue the sequence.
        let d2 = s.push("t/d", b"four");
        assert!(d2 > c);
        // Out-of-order ack: head stays at b until b is acked.
        s.ack(c);
        assert_eq!(s.head(), b);
        s.ack(b);
        assert_eq!(s.head(), d2);
        s.ack(d2);
        assert!(s.is_empty());
        s.sync().unwrap();
        drop(s);
        let s = Spool::open(opts(&d, 1 << 20)).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.stats().recovered, 0);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn corrupt_tail_is_cut_and_the_rest_kept() {
        let d = tmp("corrupt");
        let mut s = Spool::open(opts(&d, 1 << 20)).unwrap();
        for i in 0..3 {
            s.push("t", format!("event-{i}").as_bytes());
        }
        s.sync().unwrap();
        let seg = s.segments.back().unwrap().path.clone();
        drop(s);
        // A half-written record, then garbage.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
        drop(f);
        let s = Spool::open(opts(&d, 1 << 20)).unwrap();
        assert_eq!(s.stats().recovered, 3);
        assert_eq!(s.stats().corrupt_bytes, 10);
        // A flipped byte inside the second record: only the first survives.
        drop(s);
        let mut data = fs::read(&seg).unwrap();
        let first_len = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize + HEADER;
        data[first_len + HEADER + 3] ^= 0xff;
        fs::write(&seg, &data).unwrap();
        let s = Spool::open(opts(&d, 1 << 20)).unwrap();
        assert_eq!(s.stats().recovered, 1);
        assert_eq!(s.next_from(0).unwrap().payload, b"event-0");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn full_spool_drops_oldest_and_counts() {
        let d = tmp("full");
        let one = Record {
            seq: 1,
            topic: "t".into(),
            payload: vec![0; 100],
        }
        .size();
        let mut s = Spool::open(opts(&d, one * 5)).unwrap();
        for _ in 0..8 {
            s.push("t", &[0; 100]);
        }
        assert_eq!(s.len(), 5);
        assert_eq!(s.stats().dropped_full, 3);
        assert_eq!(s.next_from(0).unwrap().seq, 4);
        assert!(s.bytes() <= one * 5);
        s.sync().unwrap();
        drop(s);
        // The bound holds on disk too: the dropped ones do not come back.
        let s = Spool::open(opts(&d, one * 5)).unwrap();
        assert_eq!(s.stats().recovered, 5);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn finished_segments_are_deleted() {
        let d = tmp("segments");
        let mut s = Spool::open(opts(&d, 1 << 20)).unwrap();
        let seqs: Vec<u64> = (0..40).map(|_| s.push("t", &[7; 50])).collect();
        assert!(s.segment_count() > 3);
        for q in &seqs[..39] {
            s.ack(*q);
        }
        s.sync().unwrap();
        let files = fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("seg-")
            })
            .count();
        assert_eq!(
            files, 1,
            "only the segment with the last pending record remains"
        );
        let _ = fs::remove_dir_all(&d);
    }

    proptest::proptest! {
        /// Whatever bytes follow a valid prefix, recovery never panics and keeps the prefix.
        #[test]
        fn recovery_never_panics(garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let d = tmp(&format!("prop-{}", garbage.len()));
            let mut s = Spool::open(opts(&d, 1 << 20)).unwrap();
            s.push("t", b"keep");
            s.sync().unwrap();
            let seg = s.segments.back().unwrap().path.clone();
            drop(s);
            let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
            f.write_all(&garbage).unwrap();
            drop(f);
            let s = Spool::open(opts(&d, 1 << 20)).unwrap();
            proptest::prop_assert!(s.stats().recovered >= 1);
            proptest::prop_assert_eq!(&s.next_from(0).unwrap().payload, b"keep");
            let _ = fs::remove_dir_all(&d);
        }
    }
}
