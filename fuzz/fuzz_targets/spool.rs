//! Spool recovery under arbitrary bytes: what a crash, a full disk or bit rot can leave in
//! a segment file.
//!
//! Input: the bytes of one segment file, written after one valid record. The spool is
//! opened on it (a fresh directory per input, under the system temp dir).
//!
//! Invariants: no panic; the valid record before the garbage is always recovered; the
//! recovered records come out in sequence order, each at most `MAX_RECORD` bytes; the
//! cut tail plus what was kept equals the file's size; after the cut, a second open
//! finds no corruption and the same records; pushing and acknowledging still works.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use vqprobe::publish::spool::{Spool, SpoolOptions, MAX_RECORD};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("vqprobe-fuzz-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = SpoolOptions {
        dir: dir.clone(),
        max_bytes: 8 << 20,
        segment_bytes: 1 << 20,
    };
    let mut s = Spool::open(opts.clone()).unwrap();
    let first = s.push("t/a", b"kept");
    drop(s);
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(data)
        .unwrap();
    let size = std::fs::metadata(&seg).unwrap().len();
    let mut s = Spool::open(opts.clone()).unwrap();
    let st = s.stats();
    assert!(st.recovered >= 1);
    assert_eq!(s.next_from(0).unwrap().seq, first);
    assert_eq!(s.next_from(0).unwrap().payload, b"kept");
    let kept = std::fs::metadata(&seg).unwrap().len();
    assert_eq!(kept + st.corrupt_bytes, size);
    let mut seqs = Vec::new();
    let mut from = 0;
    while let Some(r) = s.next_from(from) {
        assert!(r.payload.len() + r.topic.len() <= MAX_RECORD);
        seqs.push(r.seq);
        from = r.seq + 1;
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let n = s.push("t/b", b"new");
    assert!(n > *seqs.last().unwrap());
    for q in &seqs {
        s.ack(*q);
    }
    s.sync().unwrap();
    drop(s);
    let s = Spool::open(opts).unwrap();
    assert_eq!(s.stats().corrupt_bytes, 0);
    assert_eq!(s.len(), 1);
    assert_eq!(s.next_from(0).unwrap().payload, b"new");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
});
