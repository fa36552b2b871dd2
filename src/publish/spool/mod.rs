//! The agent's outbox: events waiting for the broker's PUBACK, bounded in bytes and
//! spooled to disk so that neither a broker outage, a crash of the probe nor a full disk
//! loses them.
//!
//! Boundaries: bytes on disk only; knows nothing of MQTT or of the event schema beyond
//! opaque records.
//!
//! Hand-written: no crate offers a small, append-only, checksummed queue with
//! "remove on acknowledgement" and a byte bound that fits an edge box (sled and friends
//! are databases; file-backed channel crates have no acknowledgements). The design
//! follows Vector's disk buffer v2: unique data files, a ledger, a lock file.
//!
//! # On disk
//!
//! * `dir/lock`: held with `flock` while the spool is open (a second agent on the same
//!   directory fails at start with a clear error); holds the owner's pid.
//! * `dir/ledger`: the lowest sequence number that may still be unacknowledged (the
//!   *head*) and the next data file id. Written atomically: `ledger.tmp`, fsync,
//!   rename, fsync of the directory.
//! * `dir/data-{id:020}.log`: append-only data files. Every file gets a new id that is
//!   larger than every id on disk and in the ledger, and is created with `O_EXCL`: a
//!   file is **never reopened by name**, so an empty or half-written file left by a
//!   crash or a full disk can never be mistaken for the live one. A data file is
//!   deleted once all its records are below the head; on open, a file without a record
//!   at or above the head (empty, garbage, all acknowledged) is deleted.
//!
//! A record:
//!
//! ```text
//! u32 le  body length      (≤ MAX_RECORD)
//! u32 le  crc32 of body
//! body:   u64 le seq | u16 le topic length | topic (UTF-8) | payload
//! ```
//!
//! On open, every data file is scanned. A record that is truncated or fails its
//! checksum starts a corrupt region: the scan resynchronises at the next offset where a
//! valid record starts, so one bad record (bit rot, a torn write in the middle of a
//! file) loses only itself. Skipped regions and bytes are counted in
//! [`SpoolStats::corrupt_skipped`] and [`SpoolStats::corrupt_bytes`]. The records of all
//! files are merged by sequence number (a record written twice, see below, is kept
//! once). Files from earlier versions (`seg-*.log`, `head`) are read the same way.
//!
//! # Durability and disk errors
//!
//! Records are written to the current data file as they are pushed (a crash of the
//! process loses nothing; `push` never fsyncs and never blocks on a slow disk for
//! longer than a `write`). [`Spool::sync`] fsyncs the data files, the directory and
//! writes the ledger; the agent runs it every 200 ms on a blocking thread, without
//! holding the publisher's lock during the fsyncs ([`Spool::sync_begin`],
//! [`SyncJob::run`], [`Spool::sync_end`]). After a crash, events acknowledged since the
//! last sync are sent again: delivery is at least once, event ids let subscribers drop
//! duplicates.
//!
//! A write that fails (full disk, I/O error) does not lose the record: the partial
//! bytes are cut off (`ftruncate` on the open handle; if even that fails the file is
//! abandoned and a new one started), and the record, with every later one, waits in
//! memory in the pending-write queue (bounded by `max_bytes` like everything else).
//! The queue is written again, in order, after a backoff (`retry_initial` doubling up
//! to 1 s) by the next push or sync. Errors are counted in
//! [`SpoolStats::write_errors`] and logged at most every 30 s. A failed fsync abandons
//! the file and writes every record not known to be durable again into a new one.
//! Acknowledged data files are deleted even when the ledger cannot be written (the
//! spool frees its own space on a full disk).
//!
//! # Bound and overflow policy
//!
//! Unacknowledged records are held in memory too (they are what the publisher sends),
//! so `max_bytes` bounds both memory and disk. Overflow policy: **drop-oldest**: the
//! oldest pending records are discarded to make room, counted in
//! [`SpoolStats::dropped_full`], and reported in the agent's stats as soon as the broker
//! is reachable. The newest state of a stream is what an operator needs most.
//!
//! # Modules
//!
//! * this file: [`Spool`] (open and recovery, push, ack, the pending-write queue, the
//!   byte bound, the sync protocol's locked parts), its options, stats and fault hook;
//! * `record`: the record framing (encode, decode, checksum) and the resynchronising
//!   scan of a data file;
//! * `ledger`: the ledger file (atomic write, read) and the directory fsync;
//! * `lock`: the lock file;
//! * `sync`: [`SyncJob`] and [`SyncDone`], the part of a sync that runs without the
//!   spool's lock;
//! * `model`: the model-based test harness (tests and the `spool` fuzz target).

mod ledger;
mod lock;
mod record;
mod sync;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::{read_ledger, LEDGER_TMP};
use lock::take_lock;
use record::{read_data_file, HEADER};
pub use record::{Record, MAX_RECORD};
pub use sync::{SyncDone, SyncJob};

/// Longest wait between two attempts to write the pending-write queue.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Shortest interval between two error log lines of the same kind.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// A file operation a [`FaultHook`] may make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// Creating a data file or the ledger's temporary file.
    Create,
    /// Writing bytes to a data file or the ledger.
    Write,
    /// fsync of a file or of the directory.
    Sync,
    /// Renaming the ledger into place.
    Rename,
}

/// Injects disk errors (the model test and the fuzz target; `None` in production).
pub trait FaultHook: Send + Sync + std::fmt::Debug {
    /// Asked before every operation. `None`: it proceeds. `Some(n)`: it fails with
    /// "no space left on device", a `Write` of `len` bytes after writing the first
    /// `min(n, len - 1)` bytes.
    fn fault(&self, op: FaultOp, len: usize) -> Option<usize>;
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn check(fault: &Option<Arc<dyn FaultHook>>, op: FaultOp) -> io::Result<()> {
    match fault.as_ref().and_then(|f| f.fault(op, 0)) {
        Some(_) => Err(no_space()),
        None => Ok(()),
    }
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    pub dir: PathBuf,
    /// Bound on pending record bytes (headers included).
    pub max_bytes: u64,
    /// A new data file is started past this size.
    pub segment_bytes: u64,
    /// First wait before writing again after a write error (doubles up to 1 s).
    pub retry_initial: Duration,
    /// Disk error injection (tests, fuzzing).
    pub fault: Option<Arc<dyn FaultHook>>,
}

impl SpoolOptions {
    /// Options with the default retry (200 ms) and no fault injection.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64, segment_bytes: u64) -> SpoolOptions {
        SpoolOptions {
            dir: dir.into(),
            max_bytes,
            segment_bytes,
            retry_initial: Duration::from_millis(200),
            fault: None,
        }
    }
}

/// Counters of the spool (published in the agent's stats under `outbox.spool`).
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
    /// Bytes skipped at start: truncated, failing their checksum, or past the largest
    /// size a data file can have.
    pub corrupt_bytes: u64,
    /// Corrupt regions skipped at start (each is at least one lost record), and records
    /// out of sequence.
    pub corrupt_skipped: u64,
    /// Writes, creates, fsyncs or ledger updates that failed (nothing is lost by one:
    /// the records wait in memory and are written again).
    pub write_errors: u64,
    /// Records waiting in memory for the disk now (the pending-write queue).
    pub unwritten: u64,
}

/// A data file on disk.
#[derive(Debug)]
struct DataFile {
    id: u64,
    path: PathBuf,
    /// Highest sequence number written into it.
    max_seq: Option<u64>,
}

/// The data file being appended to.
#[derive(Debug)]
struct Writer {
    id: u64,
    file: File,
    /// Bytes known to be in it (complete records only).
    size: u64,
}

#[derive(Debug)]
struct Pending {
    rec: Record,
    acked: bool,
}

/// Rate limit of one kind of log line.
#[derive(Debug, Default)]
struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// Some(number of suppressed lines since the last one) when a line may be logged.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The outbox. Not thread-safe by itself: the publisher wraps it in a mutex.
#[derive(Debug)]
pub struct Spool {
    opts: SpoolOptions,
    /// Held (flock) while open.
    _lock: File,
    pending: VecDeque<Pending>,
    bytes: u64,
    next_seq: u64,
    head: u64,
    /// The head the ledger on disk holds.
    durable_head: u64,
    files: VecDeque<DataFile>,
    writer: Option<Writer>,
    next_id: u64,
    /// Every pending record below this is in a data file; the ones from here on wait in
    /// memory (the pending-write queue).
    write_seq: u64,
    /// Every record below this was fsynced.
    synced_seq: u64,
    /// Handles of files written since their last fsync that are no longer the writer.
    unsynced: Vec<(u64, File)>,
    dir_dirty: bool,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// Unlinks that failed (tried again at the next sync).
    to_delete: Vec<PathBuf>,
    write_log: LogLimit,
    sync_log: LogLimit,
    stats: SpoolStats,
}

impl Spool {
    /// Opens (creating) the spool in `opts.dir`, takes its lock and recovers what a
    /// previous run left. Fails when the directory cannot be created or written, or
    /// when another process holds the lock. A full disk is not an error here (records
    /// then wait in memory until it has room).
    pub fn open(opts: SpoolOptions) -> io::Result<Spool> {
        fs::create_dir_all(&opts.dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&opts.dir, fs::Permissions::from_mode(0o700));
        }
        let lock = take_lock(&opts.dir)?;
        let (head, ledger_next_id) = read_ledger(&opts.dir)?;
        let _ = fs::remove_file(opts.dir.join(LEDGER_TMP));

        // Every data file, legacy ones first (sorted by name = by first sequence).
        let mut found: Vec<(bool, u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&opts.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let parse = |prefix: &str| {
                name.strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix(".log"))
                    .and_then(|n| n.parse::<u64>().ok())
            };
            if let Some(id) = parse("data-") {
                found.push((true, id, path));
            } else if let Some(n) = parse("seg-") {
                found.push((false, n, path));
            }
        }
        found.sort();
        let max_id = found
            .iter()
            .filter(|(new, _, _)| *new)
            .map(|(_, id, _)| *id)
            .max()
            .unwrap_or(0);

        let mut stats = SpoolStats::default();
        // A data file is at most a segment plus one record (twice: rewrites after a
        // failed fsync go to new files too).
        let cap = opts.segment_bytes.max(1 << 20) + 2 * (MAX_RECORD + HEADER) as u64;
        let mut all: Vec<Record> = Vec::new();
        let mut files: VecDeque<DataFile> = VecDeque::new();
        for (new, id, path) in found {
            let scan = read_data_file(&path, cap)?;
            if scan.corrupt_bytes > 0 {
                tracing::warn!(
                    file = %path.display(),
                    skipped_bytes = scan.corrupt_bytes,
                    regions = scan.corrupt_regions,
                    kept_records = scan.records.len(),
                    "spool: corrupt or truncated records skipped"
                );
            }
            stats.corrupt_bytes += scan.corrupt_bytes;
            stats.corrupt_skipped += scan.corrupt_regions;
            let max_seq = scan.records.iter().map(|r| r.seq).max();
            if max_seq.is_none_or(|m| m < head) {
                // Nothing at or above the head: empty, garbage, or all acknowledged.
                // Never appended to again (files are not reopened by name): delete.
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(error = %e, file = %path.display(), "spool: cannot delete a finished data file");
                }
                continue;
            }
            all.extend(scan.records.into_iter().filter(|r| r.seq >= head));
            files.push_back(DataFile {
                // Legacy files sort first and never collide with new ids.
                id: if new { id } else { 0 },
                path,
                max_seq,
            });
        }
        // Merge by sequence number: a record written twice (rewritten after a failed
        // fsync) is kept once.
        all.sort_by_key(|r| r.seq);
        let before = all.len();
        all.dedup_by_key(|r| r.seq);
        let duplicates = before - all.len();
        if duplicates > 0 {
            tracing::debug!(duplicates, "spool: records written twice kept once");
        }
        let next_seq = all
            .last()
            .map(|r| r.seq.saturating_add(1))
            .unwrap_or(0)
            .max(head)
            .max(1);
        let mut spool = Spool {
            _lock: lock,
            pending: VecDeque::new(),
            bytes: 0,
            next_seq,
            head: head.max(1),
            durable_head: head,
            files,
            writer: None,
            next_id: ledger_next_id.max(max_id.saturating_add(1)).max(1),
            write_seq: next_seq,
            synced_seq: next_seq,
            unsynced: Vec::new(),
            dir_dirty: true,
            retry_at: None,
            retry_delay: Duration::ZERO,
            to_delete: Vec::new(),
            write_log: LogLimit::default(),
            sync_log: LogLimit::default(),
            stats,
            opts,
        };
        for rec in all {
            if rec.seq == u64::MAX {
                spool.stats.corrupt_skipped += 1;
                continue;
            }
            spool.stats.recovered += 1;
            spool.bytes += rec.size();
            spool.pending.push_back(Pending { rec, acked: false });
        }
        spool.enforce_bound();
        spool.advance_head();
        // Make the recovered files durable and write the ledger now: this also proves
        // the directory writable before the agent reports READY. A full disk is
        // tolerated (the records are on disk already; the ledger is written later).
        for f in &spool.files {
            if let Ok(h) = File::open(&f.path) {
                let _ = h.sync_all();
            }
        }
        if let Err(e) = spool.sync() {
            if !is_no_space(&e) {
                return Err(e);
            }
            tracing::warn!(error = %e, dir = %spool.opts.dir.display(), "spool: disk full at start; events wait in memory until it has room");
        }
        Ok(spool)
    }

    /// Appends a record; returns its sequence number. Never fails and never fsyncs: a
    /// write error is counted and logged (rate-limited) and the record waits in memory
    /// to be written again.
    pub fn push(&mut self, topic: &str, payload: &[u8]) -> u64 {
        let rec = Record {
            seq: self.next_seq,
            topic: topic.to_string(),
            payload: payload.to_vec(),
        };
        self.next_seq += 1;
        self.stats.pushed += 1;
        self.bytes += rec.size();
        let seq = rec.seq;
        self.pending.push_back(Pending { rec, acked: false });
        self.enforce_bound();
        if self.retry_at.is_none_or(|t| Instant::now() >= t) {
            let _ = self.flush();
        }
        seq
    }

    /// Writes the pending-write queue (every pending record from `write_seq` on).
    fn flush(&mut self) -> io::Result<()> {
        let had_errors = self.retry_at.is_some();
        let start = self.pending.partition_point(|p| p.rec.seq < self.write_seq);
        let mut written = 0u64;
        for i in start..self.pending.len() {
            let p = &self.pending[i];
            if p.acked {
                continue;
            }
            let rec = p.rec.clone();
            if let Err(e) = self.write(&rec) {
                self.stats.write_errors += 1;
                self.retry_delay = if had_errors {
                    (self.retry_delay * 2)
                        .max(self.opts.retry_initial)
                        .min(RETRY_MAX)
                } else {
                    self.opts.retry_initial
                };
                self.retry_at = Some(Instant::now() + self.retry_delay);
                if let Some(suppressed) = self.write_log.allow() {
                    tracing::error!(
                        error = %e,
                        dir = %self.opts.dir.display(),
                        waiting = self.unwritten(),
                        suppressed_since_last = suppressed,
                        retry_in_ms = self.retry_delay.as_millis() as u64,
                        "spool: cannot write; events wait in memory and are written again when the disk allows"
                    );
                }
                return Err(e);
            }
            self.write_seq = rec.seq + 1;
            written += 1;
        }
        self.write_seq = self.next_seq;
        if had_errors {
            self.retry_at = None;
            self.retry_delay = Duration::ZERO;
            tracing::info!(
                written,
                "spool: the disk takes writes again; the events that waited in memory are written"
            );
        }
        Ok(())
    }

    fn unwritten(&self) -> u64 {
        let start = self.pending.partition_point(|p| p.rec.seq < self.write_seq);
        self.pending.range(start..).filter(|p| !p.acked).count() as u64
    }

    /// Starts a new data file with a never-used id (`O_EXCL`: never an existing file).
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(w) = self.writer.take() {
            self.unsynced.push((w.id, w.file));
        }
        check(&self.opts.fault, FaultOp::Create)?;
        loop {
            let id = self.next_id;
            self.next_id += 1;
            let path = self.opts.dir.join(format!("data-{id:020}.log"));
            let mut oo = OpenOptions::new();
            oo.create_new(true).append(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                oo.mode(0o600);
            }
            match oo.open(&path) {
                Ok(file) => {
                    self.files.push_back(DataFile {
                        id,
                        path,
                        max_seq: None,
                    });
                    self.writer = Some(Writer { id, file, size: 0 });
                    self.dir_dirty = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn write(&mut self, rec: &Record) -> io::Result<()> {
        if self
            .writer
            .as_ref()
            .is_none_or(|w| w.size >= self.opts.segment_bytes)
        {
            self.rotate()?;
        }
        let bytes = rec.encode();
        let fault = self
            .opts
            .fault
            .as_ref()
            .and_then(|f| f.fault(FaultOp::Write, bytes.len()));
        let Some(w) = self.writer.as_mut() else {
            return Err(io::Error::other("no data file"));
        };
        let r = match fault {
            Some(n) => {
                let _ = w.file.write_all(&bytes[..n.min(bytes.len() - 1)]);
                Err(no_space())
            }
            None => w.file.write_all(&bytes),
        };
        match r {
            Ok(()) => {
                w.size += bytes.len() as u64;
                let id = w.id;
                if let Some(f) = self.files.iter_mut().rev().find(|f| f.id == id) {
                    f.max_seq = Some(f.max_seq.map_or(rec.seq, |m| m.max(rec.seq)));
                }
                Ok(())
            }
            Err(e) => {
                // Cut what was written of the record; if that fails, never write to
                // this file again (its tail is skipped as corrupt at the next start).
                let cut = w.file.set_len(w.size).is_ok();
                if !cut {
                    self.abandon_writer();
                }
                Err(e)
            }
        }
    }

    /// Stops writing to the current data file.
    fn abandon_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            self.unsynced.push((w.id, w.file));
        }
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
        self.head = self
            .pending
            .front()
            .map(|p| p.rec.seq)
            .unwrap_or(self.next_seq);
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
        SpoolStats {
            unwritten: self.unwritten(),
            ..self.stats
        }
    }

    /// Makes pushed records and the head durable: writes the pending-write queue,
    /// fsyncs data files and the directory, deletes finished data files and writes the
    /// ledger. Cheap when nothing changed. `Ok` means every pushed record is on disk
    /// and fsynced and the ledger holds the current head.
    pub fn sync(&mut self) -> io::Result<()> {
        let job = self.sync_begin();
        let done = job.run();
        self.sync_end(done)
    }

    /// First part of [`Spool::sync`], with the spool locked: writes the pending-write
    /// queue (no fsync) and collects what to fsync, delete and record.
    pub fn sync_begin(&mut self) -> SyncJob {
        let pending_error = if self.write_seq < self.next_seq
            && self.retry_at.is_none_or(|t| Instant::now() >= t)
        {
            self.flush().err()
        } else if self.unwritten() > 0 {
            Some(io::Error::other(
                "records wait in memory for the disk (retrying after a write error)",
            ))
        } else {
            None
        };
        let mut files = std::mem::take(&mut self.unsynced);
        if let Some(w) = &self.writer {
            if let Ok(f) = w.file.try_clone() {
                files.push((w.id, f));
            }
        }
        // Data files all of whose records are below the head (never the writer): they
        // are deleted even if the ledger cannot be written (acknowledged is
        // acknowledged; at worst records above the old head are sent again).
        let writer_id = self.writer.as_ref().map(|w| w.id);
        let mut delete = std::mem::take(&mut self.to_delete);
        let head = self.head;
        self.files.retain(|f| {
            let done = Some(f.id) != writer_id && f.max_seq.is_none_or(|m| m < head);
            if done {
                delete.push(f.path.clone());
            }
            !done
        });
        if !delete.is_empty() {
            self.dir_dirty = true;
        }
        let sync_dir = std::mem::take(&mut self.dir_dirty);
        let ledger =
            (self.head != self.durable_head || sync_dir).then_some((self.head, self.next_id));
        SyncJob {
            dir: self.opts.dir.clone(),
            fault: self.opts.fault.clone(),
            files,
            sync_dir,
            delete,
            ledger,
            upto: self.write_seq,
            pending_error,
        }
    }

    /// Last part of [`Spool::sync`], with the spool locked again.
    pub fn sync_end(&mut self, done: SyncDone) -> io::Result<()> {
        self.to_delete.extend(done.failed_deletes);
        if !done.dir_ok {
            self.dir_dirty = true;
        }
        if done.files_ok {
            self.synced_seq = self.synced_seq.max(done.upto);
        } else {
            // What an fsync failed for may not be on disk: write every record that is
            // not known to be durable again, into a new file.
            self.abandon_writer();
            self.write_seq = self.write_seq.min(self.synced_seq);
            self.retry_at = Some(Instant::now() + self.opts.retry_initial);
        }
        if let Some((head, r)) = done.ledger {
            match r {
                Ok(()) => self.durable_head = head,
                Err(_) => self.dir_dirty = true,
            }
        }
        match done.error {
            None => done.pending_error.map_or(Ok(()), Err),
            Some(e) => {
                self.stats.write_errors += 1;
                if let Some(suppressed) = self.sync_log.allow() {
                    tracing::error!(
                        error = %e,
                        dir = %self.opts.dir.display(),
                        suppressed_since_last = suppressed,
                        "spool: sync failed; events stay in memory and are written again"
                    );
                }
                Err(e)
            }
        }
    }

    /// Data files currently on disk (for tests and stats).
    pub fn segment_count(&self) -> usize {
        self.files.len()
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }
}

#[cfg(test)]
mod tests {
    use super::record::scan;
    use super::*;

    fn opts(dir: &Path, max: u64) -> SpoolOptions {
        SpoolOptions::new(dir, max, 256)
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
    fn corrupt_records_are_skipped_and_every_valid_one_kept() {
        let d = tmp("corrupt");
        let mut s = Spool::open(opts(&d, 1 << 20)).unwrap();
        for i in 0..3 {
            s.push("t", format!("event-{i}").as_bytes());
        }
        s.sync().unwrap();
        let seg = s.files.back().unwrap().path.clone();
        drop(s);
        // A half-written record, then garbage.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
        drop(f);
        let s = Spool::open(opts(&d, 1 << 20)).unwrap();
        assert_eq!(s.stats().recovered, 3);
        assert_eq!(s.stats().corrupt_bytes, 10);
        assert_eq!(s.stats().corrupt_skipped, 1);
        // A flipped byte inside the second record (bit rot, a torn write in the middle):
        // the scan resynchronises at the third. Before the fix every record after the
        // bad one was lost (only event-0 came back).
        drop(s);
        let mut data = fs::read(&seg).unwrap();
        let first_len = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize + HEADER;
        let second_len = u32::from_le_bytes(data[first_len..first_len + 4].try_into().unwrap())
            as usize
            + HEADER;
        data[first_len + HEADER + 3] ^= 0xff;
        fs::write(&seg, &data).unwrap();
        let s = Spool::open(opts(&d, 1 << 20)).unwrap();
        assert_eq!(s.stats().recovered, 2);
        assert_eq!(s.stats().corrupt_skipped, 2);
        assert_eq!(s.stats().corrupt_bytes, second_len as u64 + 10);
        let first = s.next_from(0).unwrap();
        assert_eq!(first.payload, b"event-0");
        assert_eq!(s.next_from(first.seq + 1).unwrap().payload, b"event-2");
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
                    .starts_with("data-")
            })
            .count();
        assert_eq!(
            files, 1,
            "only the segment with the last pending record remains"
        );
        let _ = fs::remove_dir_all(&d);
    }

    /// The issue's scenario: 3 pending records, an empty data file named like the next
    /// one (what a failed write on a full disk or a power cut right after a file switch
    /// leaves), push 3, ack 1-4, push 3, crash, reopen: the 5 unacknowledged records
    /// come back. Before the fix the spool reopened the empty file by name, listed it
    /// twice, deleted it when record 4 was acknowledged and recovered 0 of the 5.
    #[test]
    fn an_empty_file_named_like_the_next_one_is_never_reused() {
        let d = tmp("empty-next");
        let mut s = Spool::open(opts(&d, 1 << 20)).unwrap();
        for i in 1..=3 {
            s.push("t", format!("old-{i}").as_bytes());
        }
        s.sync().unwrap();
        drop(s);
        // Both namings (seg-{first seq} before the fix, data-{id} after it).
        File::create(d.join(format!("seg-{:020}.log", 4))).unwrap();
        File::create(d.join(format!("data-{:020}.log", 2))).unwrap();
        let mut s = Spool::open(opts(&d, 1 << 20)).unwrap();
        assert_eq!(s.stats().recovered, 3);
        for i in 1..=3 {
            s.push("t", format!("new-{i}").as_bytes());
        }
        for q in 1..=4 {
            s.ack(q);
        }
        s.sync().unwrap();
        for i in 4..=6 {
            s.push("t", format!("new-{i}").as_bytes());
        }
        drop(s);
        let s = Spool::open(opts(&d, 1 << 20)).unwrap();
        let mut got = Vec::new();
        let mut from = 0;
        while let Some(r) = s.next_from(from) {
            got.push(String::from_utf8(r.payload.clone()).unwrap());
            from = r.seq + 1;
        }
        assert_eq!(got, ["new-2", "new-3", "new-4", "new-5", "new-6"]);
        let _ = fs::remove_dir_all(&d);
    }

    /// Counts fsyncs; fails everything while `full`.
    #[derive(Debug, Default)]
    struct Disk {
        full: std::sync::atomic::AtomicBool,
        syncs: std::sync::atomic::AtomicU64,
    }

    impl FaultHook for Disk {
        fn fault(&self, op: FaultOp, len: usize) -> Option<usize> {
            use std::sync::atomic::Ordering::Relaxed;
            if op == FaultOp::Sync {
                self.syncs.fetch_add(1, Relaxed);
            }
            self.full.load(Relaxed).then_some(len / 2)
        }
    }

    fn faulty(dir: &Path, disk: &Arc<Disk>) -> SpoolOptions {
        SpoolOptions {
            retry_initial: Duration::ZERO,
            fault: Some(disk.clone() as Arc<dyn FaultHook>),
            ..opts(dir, 1 << 20)
        }
    }

    fn data_file_count(d: &Path) -> usize {
        fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with("data-") || n.starts_with("seg-")
            })
            .count()
    }

    /// Defect 2: on a full disk the records wait in memory (no new file per push, the
    /// partial bytes cut), and are written when the disk has room again; a crash after
    /// that loses none of them.
    #[test]
    fn records_that_failed_to_write_are_written_when_the_disk_has_room() {
        use std::sync::atomic::Ordering::Relaxed;
        let d = tmp("diskfull");
        let disk = Arc::new(Disk::default());
        let mut s = Spool::open(faulty(&d, &disk)).unwrap();
        s.push("t", b"before");
        s.sync().unwrap();
        disk.full.store(true, Relaxed);
        for i in 0..20 {
            s.push("t", format!("while-full-{i}").as_bytes());
        }
        assert!(s.sync().is_err());
        assert!(s.stats().write_errors > 0);
        assert_eq!(s.stats().unwritten, 20);
        assert!(data_file_count(&d) <= 2, "a new file per push");
        disk.full.store(false, Relaxed);
        s.push("t", b"after");
        s.sync().unwrap();
        assert_eq!(s.stats().unwritten, 0);
        drop(s);
        let s = Spool::open(faulty(&d, &disk)).unwrap();
        assert_eq!(s.stats().recovered, 22);
        assert_eq!(s.stats().corrupt_bytes, 0, "partial writes were cut");
        let _ = fs::remove_dir_all(&d);
    }

    /// Defect 2: acknowledged data files are deleted even when the ledger cannot be
    /// written, so the spool frees its own space on a full disk.
    #[test]
    fn acked_files_are_deleted_on_a_full_disk() {
        use std::sync::atomic::Ordering::Relaxed;
        let d = tmp("free");
        let disk = Arc::new(Disk::default());
        let mut s = Spool::open(faulty(&d, &disk)).unwrap();
        let seqs: Vec<u64> = (0..40).map(|_| s.push("t", &[7; 50])).collect();
        s.sync().unwrap();
        assert!(data_file_count(&d) > 3);
        disk.full.store(true, Relaxed);
        for q in &seqs[..39] {
            s.ack(*q);
        }
        assert!(s.sync().is_err(), "the ledger cannot be written");
        assert_eq!(data_file_count(&d), 1);
        let _ = fs::remove_dir_all(&d);
    }

    /// Defect 6: push never fsyncs (not even when it starts a new file); sync does.
    #[test]
    fn push_never_fsyncs() {
        use std::sync::atomic::Ordering::Relaxed;
        let d = tmp("nofsync");
        let disk = Arc::new(Disk::default());
        let mut s = Spool::open(faulty(&d, &disk)).unwrap();
        let before = disk.syncs.load(Relaxed);
        for _ in 0..40 {
            s.push("t", &[1; 50]);
        }
        assert!(s.segment_count() > 3);
        assert_eq!(disk.syncs.load(Relaxed), before);
        s.sync().unwrap();
        assert!(disk.syncs.load(Relaxed) > before);
        let _ = fs::remove_dir_all(&d);
    }

    /// Defect 6: a second spool on the same directory (a second agent, `sudo vqprobe
    /// run`) is refused with a clear error naming the owner.
    #[test]
    fn a_second_spool_on_the_same_directory_is_refused() {
        let d = tmp("lock");
        let s = Spool::open(opts(&d, 1 << 20)).unwrap();
        let e = Spool::open(opts(&d, 1 << 20)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let msg = e.to_string();
        assert!(msg.contains("in use by another vqprobe process"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(s);
        Spool::open(opts(&d, 1 << 20)).unwrap();
        let _ = fs::remove_dir_all(&d);
    }

    /// Garbage where every offset claims a long record: the scan stays bounded and
    /// keeps the valid record after it.
    #[test]
    fn resync_work_is_bounded() {
        let good = Record {
            seq: 7,
            topic: "t".into(),
            payload: b"after".to_vec(),
        }
        .encode();
        let mut data = Vec::new();
        for _ in 0..4096 {
            data.extend_from_slice(&[0xff, 0xff, 0x0f, 0x00]);
        }
        data.extend_from_slice(&good);
        let t0 = std::time::Instant::now();
        let s = scan(&data);
        assert!(t0.elapsed() < Duration::from_secs(20));
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.corrupt_bytes, 4096 * 4);
        // 1 MiB where every 4th offset claims a 512 KiB record that fits: 32 GiB of
        // checksums without the budget; with it the scan ends quickly, the rest is
        // counted corrupt.
        let mut big = Vec::new();
        for _ in 0..(1 << 18) {
            big.extend_from_slice(&[0x00, 0x00, 0x08, 0x00]);
        }
        let t0 = std::time::Instant::now();
        let s = scan(&big);
        assert!(t0.elapsed() < Duration::from_secs(20));
        assert_eq!(s.corrupt_bytes, big.len() as u64);
    }

    proptest::proptest! {
        /// Whatever bytes follow a valid prefix, recovery never panics and keeps the prefix.
        #[test]
        fn recovery_never_panics(garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let d = tmp(&format!("prop-{}", garbage.len()));
            let mut s = Spool::open(opts(&d, 1 << 20)).unwrap();
            s.push("t", b"keep");
            s.sync().unwrap();
            let seg = s.files.back().unwrap().path.clone();
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

/// The model-based test's harness (the unit tests and the fuzz target use it).
#[cfg(any(test, feature = "spool-model"))]
#[doc(hidden)]
pub mod model;
