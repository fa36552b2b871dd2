//! MPEG-TS demuxer under arbitrary bytes, fed in input-chosen chunk sizes.
//!
//! Input layout (see fuzz/README.md):
//!   byte 0        bits 0-1: TsLimits profile (default / 4K+1K / 200+200 / 64K+2K)
//!                 bits 2-4: k, the number of chunk-size bytes that follow (0-7)
//!   bytes 1..=k   chunk sizes, used in turn: 0 = all that is left, 1-127 = that many
//!                 bytes, 128-255 = (b-127) whole 188-byte packets
//!   the rest      the transport stream
//!
//! Invariants, checked after every push and after finish:
//!   * no panic (including arithmetic overflow: run with --debug-assertions);
//!   * stats.bytes == bytes fed so far;
//!   * stats.packets*188 + stats.skipped_bytes (+ stats.truncated_bytes after finish)
//!     <= stats.bytes, and truncated_bytes < 188;
//!   * every Packet's data fits its track's configured cap; audio packets are key;
//!   * chunking does not matter: the outputs and final stats equal those of the
//!     same stream pushed in one call.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vqprobe::ingest::ts::{DemuxOutput, TsDemuxer, TsLimits, TsStats, TS_PACKET_LEN};
use vqprobe::ingest::{Packet, ProgramInfo, Track};

#[derive(Debug, PartialEq)]
enum Out {
    Program(ProgramInfo),
    Packet(Packet),
}

fn limits(profile: u8) -> TsLimits {
    match profile & 3 {
        0 => TsLimits::default(),
        1 => TsLimits {
            max_video_pes: 4096,
            max_audio_pes: 1024,
        },
        2 => TsLimits {
            max_video_pes: 200,
            max_audio_pes: 200,
        },
        _ => TsLimits {
            max_video_pes: 64 << 10,
            max_audio_pes: 2048,
        },
    }
}

fn check_out(o: DemuxOutput, lim: &TsLimits, sink: &mut Vec<Out>) {
    match o {
        DemuxOutput::Program(p) => sink.push(Out::Program(p)),
        DemuxOutput::Packet(p) => {
            let cap = match p.track {
                Track::Video => lim.max_video_pes,
                Track::Audio => lim.max_audio_pes,
            };
            assert!(
                p.data.len() <= cap,
                "{:?} packet of {} bytes > cap {cap}",
                p.track,
                p.data.len()
            );
            if p.track == Track::Audio {
                assert!(p.key, "audio packets are always key");
            }
            sink.push(Out::Packet(p));
        }
    }
}

fn check_stats(s: &TsStats, fed: u64, finished: bool) {
    assert_eq!(s.bytes, fed, "stats.bytes");
    let accounted = s.packets * TS_PACKET_LEN as u64
        + s.skipped_bytes
        + if finished { s.truncated_bytes } else { 0 };
    assert!(
        accounted <= s.bytes,
        "packets*188 + skipped (+ truncated) = {accounted} > bytes {}: {s:?}",
        s.bytes
    );
    assert!(s.truncated_bytes < TS_PACKET_LEN as u64, "{s:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from((flags >> 2) & 7).min(rest.len());
    let (sizes, ts) = rest.split_at(k);
    let lim = limits(flags);

    // Chunked run, checking after every step.
    let mut d = TsDemuxer::new(lim);
    let mut chunked = Vec::new();
    let mut pos = 0usize;
    let mut i = 0usize;
    while pos < ts.len() {
        let n = match sizes.get(i % sizes.len().max(1)).copied() {
            None | Some(0) => ts.len() - pos,
            Some(b @ 1..=127) => usize::from(b),
            Some(b) => usize::from(b - 127) * TS_PACKET_LEN,
        };
        let n = n.min(ts.len() - pos);
        d.push(&ts[pos..pos + n], &mut |o| check_out(o, &lim, &mut chunked));
        pos += n;
        i += 1;
        check_stats(d.stats(), pos as u64, false);
    }
    d.finish(&mut |o| check_out(o, &lim, &mut chunked));
    check_stats(d.stats(), ts.len() as u64, true);

    // Reference: the same bytes in one push.
    let mut r = TsDemuxer::new(lim);
    let mut whole = Vec::new();
    r.push(ts, &mut |o| check_out(o, &lim, &mut whole));
    r.finish(&mut |o| check_out(o, &lim, &mut whole));
    check_stats(r.stats(), ts.len() as u64, true);

    assert_eq!(d.stats(), r.stats(), "stats depend on chunking");
    assert!(
        chunked == whole,
        "outputs depend on chunking: {} vs {} outputs",
        chunked.len(),
        whole.len()
    );
    assert_eq!(d.program(), r.program());
});
