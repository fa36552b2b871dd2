//! The spool's record framing: encoding, decoding and checksumming one record, and the
//! scan of a data file that resynchronises past corrupt regions.
//!
//! Owns: the byte layout of a record (see the parent module) and the bounded resync.
//! May not touch: files other than reading one data file; the ledger, the lock, the
//! spool's state.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Largest record accepted (larger bodies on disk are corruption).
pub const MAX_RECORD: usize = 1 << 20;
/// Record header: length + crc.
pub(super) const HEADER: usize = 8;
/// Smallest body: seq + topic length.
const MIN_BODY: usize = 10;

/// One pending record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Record {
    pub(super) fn size(&self) -> u64 {
        (HEADER + MIN_BODY + self.topic.len() + self.payload.len()) as u64
    }

    pub(super) fn encode(&self) -> Vec<u8> {
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
        if body.len() < MIN_BODY {
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

/// What a scan of a data file found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) records: Vec<Record>,
    pub(super) corrupt_bytes: u64,
    pub(super) corrupt_regions: u64,
}

/// The record starting at `off`, and its encoded length.
fn record_at(data: &[u8], off: usize) -> Option<(Record, usize)> {
    let head = data.get(off..off.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(MIN_BODY..=MAX_RECORD).contains(&len) {
        return None;
    }
    let body = data.get(off + HEADER..off + HEADER + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Record::decode(body).map(|r| (r, HEADER + len))
}

/// Scans a data file: every valid record; a corrupt region is skipped up to the next
/// offset where a valid record starts. At most `cap` bytes are read (a data file is
/// never much larger than a segment); the rest counts as corrupt.
pub(super) fn read_data_file(path: &Path, cap: u64) -> io::Result<Scan> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut data = Vec::new();
    f.take(cap).read_to_end(&mut data)?;
    let mut s = scan(&data);
    let rest = len.saturating_sub(data.len() as u64);
    if rest > 0 {
        s.corrupt_bytes += rest;
        s.corrupt_regions += 1;
    }
    Ok(s)
}

pub(super) fn scan(data: &[u8]) -> Scan {
    let mut s = Scan::default();
    // Checksum work allowed while resynchronising (garbage can make every offset look
    // like the start of a long record): bounded, so a hostile file cannot hang the
    // start; once spent, the rest of the file counts as corrupt.
    let mut budget = (data.len() as u64).saturating_mul(256) + (16 << 20);
    let mut off = 0usize;
    while off < data.len() {
        if let Some((rec, n)) = record_at(data, off) {
            s.records.push(rec);
            off += n;
            continue;
        }
        let start = off;
        off += 1;
        while off < data.len() {
            // What record_at will hash here: the claimed body if it fits.
            let claimed = data
                .get(off..off + 4)
                .map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize)
                .filter(|&n| (MIN_BODY..=MAX_RECORD).contains(&n) && off + HEADER + n <= data.len())
                .unwrap_or(0);
            budget = budget.saturating_sub(claimed as u64 + 1);
            if budget == 0 {
                off = data.len();
                break;
            }
            if record_at(data, off).is_some() {
                break;
            }
            off += 1;
        }
        s.corrupt_bytes += (off - start) as u64;
        s.corrupt_regions += 1;
    }
    s
}
