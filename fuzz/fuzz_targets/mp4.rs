//! Fragmented MP4 (CMAF / HLS fMP4) demuxer under arbitrary bytes.
//!
//! Input: `byte 0` (bits 0-1: `Mp4Limits` profile — default / 64 samples, 4 KiB video
//! samples, 256 B parameter sets / 1 sample / 100 000 samples, 1 MiB video samples), then
//! a little-endian u16 n and n bytes of init section, then up to four media segments,
//! each a little-endian u16 length and that many bytes (the last one takes what is left
//! when the length runs past the end). A real `init.mp4` + `seg.m4s` pair behind those
//! headers is a valid input.
//!
//! Invariants: no panic (arithmetic overflow included); a segment before any init is an
//! error and lists nothing; a successful init describes video or audio and is what
//! `program()` returns; for every segment: `stats.segments` counts the calls,
//! `stats.samples` grows by at least the samples listed, at most `max_samples` are
//! listed, every sample's `offset + size` lies within the segment (no overflow), every
//! sample belongs to a track of the program, samples are listed in decode order (DTS
//! non-decreasing); `packet()` of each sample keeps its track and times, is the sample's
//! bytes behind an ADTS header with the right length (AAC), Annex B starting with a
//! start code and key on sync samples (H.264), or the raw bytes (other codecs); a sample
//! `packet()` refuses is counted in `bad_samples` (unless it is empty).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vqprobe::ingest::mp4::{Fmp4Demuxer, Mp4Limits};
use vqprobe::ingest::{Codec, Track};

fn take_u16<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    if b.len() < 2 {
        return None;
    }
    let n = usize::from(u16::from_le_bytes([b[0], b[1]]));
    let rest = &b[2..];
    let n = n.min(rest.len());
    let (part, tail) = rest.split_at(n);
    *b = tail;
    Some(part)
}

fuzz_target!(|data: &[u8]| {
    let Some((&p, mut rest)) = data.split_first() else {
        return;
    };
    let limits = match p & 3 {
        0 => Mp4Limits::default(),
        1 => Mp4Limits {
            max_samples: 64,
            max_video_sample: 4096,
            max_param_sets: 256,
        },
        2 => Mp4Limits {
            max_samples: 1,
            ..Mp4Limits::default()
        },
        _ => Mp4Limits {
            max_samples: 100_000,
            max_video_sample: 1 << 20,
            max_param_sets: 64 << 10,
        },
    };
    let Some(init) = take_u16(&mut rest) else {
        return;
    };
    let mut segs = Vec::new();
    while segs.len() < 4 {
        match take_u16(&mut rest) {
            Some(s) => segs.push(s),
            None => break,
        }
    }

    let mut d = Fmp4Demuxer::new(limits);
    let mut out = Vec::new();
    assert!(d
        .segment(segs.first().copied().unwrap_or(&[]), &mut out)
        .is_err());
    assert!(out.is_empty());
    let prog = match d.init(init) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.0.is_empty());
            assert!(d.program().is_none());
            return;
        }
    };
    assert!(prog.video.is_some() || prog.audio.is_some());
    assert_eq!(d.program(), Some(&prog));

    for seg in segs {
        let before = *d.stats();
        let r = d.segment(seg, &mut out);
        let after = *d.stats();
        if let Err(e) = &r {
            assert!(!e.0.is_empty());
        }
        assert_eq!(after.segments, before.segments + 1);
        assert!(after.samples - before.samples >= out.len() as u64);
        assert!(
            out.len() <= limits.max_samples,
            "{} samples listed",
            out.len()
        );
        for s in &out {
            let end = s.offset.checked_add(s.size);
            assert!(
                end.is_some_and(|e| e <= seg.len()),
                "sample {s:?} beyond the {}-byte segment",
                seg.len()
            );
            match s.track {
                Track::Video => assert!(prog.video.is_some()),
                Track::Audio => assert!(prog.audio.is_some()),
            }
        }
        assert!(
            out.windows(2).all(|w| w[0].dts <= w[1].dts),
            "samples not in decode order"
        );
        for s in &out {
            let bad = d.stats().bad_samples;
            let bytes = &seg[s.offset..s.offset + s.size];
            let codec = match s.track {
                Track::Video => prog.video.as_ref().map(|e| e.codec),
                Track::Audio => prog.audio.as_ref().map(|e| e.codec),
            };
            match d.packet(seg, s) {
                None => {
                    let counted = d.stats().bad_samples - bad;
                    if bytes.is_empty() {
                        assert_eq!(counted, 0);
                    } else {
                        assert_eq!(counted, 1, "refused sample not counted: {s:?}");
                    }
                }
                Some(pk) => {
                    assert_eq!(d.stats().bad_samples, bad);
                    assert!(!bytes.is_empty());
                    assert_eq!(pk.track, s.track);
                    assert_eq!(pk.pts, Some(s.pts));
                    assert_eq!(pk.dts, Some(s.dts));
                    assert!(!pk.damaged);
                    match codec {
                        Some(Codec::Aac) => {
                            let b = &pk.data;
                            assert_eq!(b.len(), bytes.len() + 7);
                            assert_eq!(&b[..2], &[0xFF, 0xF1]);
                            let len = (usize::from(b[3] & 3) << 11)
                                | (usize::from(b[4]) << 3)
                                | usize::from(b[5] >> 5);
                            assert_eq!(len, b.len(), "ADTS length field");
                            assert_eq!(&b[7..], bytes);
                            assert!(pk.key);
                        }
                        Some(Codec::H264) => {
                            assert!(pk.data.starts_with(&[0, 0, 0, 1]), "not Annex B");
                            // Start codes replace length prefixes (one byte at least, per NAL
                            // unit of one byte at least); parameter sets in front.
                            assert!(pk.data.len() <= 3 * bytes.len() + limits.max_param_sets);
                            assert!(bytes.len() <= limits.max_video_sample);
                            if s.sync {
                                assert!(pk.key);
                            }
                        }
                        _ => {
                            assert_eq!(pk.data, bytes);
                            assert_eq!(pk.key, s.sync);
                        }
                    }
                }
            }
        }
    }
});
