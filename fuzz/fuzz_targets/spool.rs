//! The spool across several data files and restarts, against the same in-memory model
//! as the model-based test (`vqprobe::publish::spool::model`).
//!
//! Input: a program, one operation per byte (with an argument byte where needed):
//! push (0-119 payload bytes; 200-byte data files, a 1200-byte bound, so drop-oldest and
//! many files happen), ack (n-th pending or the oldest), sync, crash (drop without sync,
//! optionally cutting the newest data file at a byte past what the last sync made
//! durable), crash with garbage appended to the newest data file, disk full on/off (every
//! create, write, fsync and rename fails; writes after writing part of the record).
//!
//! Invariants (checked after every operation): no panic; the pending records are exactly
//! the model's, in order; the byte bound holds; after every reopen nothing whose
//! acknowledgement was synced comes back, the order is kept, and every record that a
//! successful sync made durable and that was not acknowledged is recovered unless
//! counted in `dropped_full`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vqprobe::publish::spool::model::{Harness, Op};

fn program(data: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut it = data.iter().copied();
    while let Some(b) = it.next() {
        let arg = it.clone().next().unwrap_or(0);
        let op = match b % 10 {
            0..=2 => Op::Push(arg % 120),
            3 => Op::Ack(arg),
            4 => Op::AckFront,
            5 => Op::Sync,
            6 => Op::Crash(None),
            7 => Op::Crash(Some(u16::from_le_bytes([arg, b]))),
            8 => Op::DiskFull(arg & 1 == 1),
            _ => {
                // Garbage: the next `arg % 32` bytes.
                let n = (arg % 32) as usize;
                it.next();
                let g: Vec<u8> = it.by_ref().take(n).collect();
                ops.push(Op::CrashAppend(g));
                continue;
            }
        };
        if !matches!(op, Op::AckFront | Op::Sync | Op::Crash(None)) {
            it.next();
        }
        ops.push(op);
        if ops.len() >= 400 {
            break;
        }
    }
    ops
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    for (i, op) in program(data).iter().enumerate() {
        if let Err(e) = h.step(op) {
            panic!("step {i} ({op:?}): {e}");
        }
    }
});
