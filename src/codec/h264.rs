//! H.264 byte-stream walking: Annex B start codes and AVCC length prefixes, written once.
//!
//! Hand-written on purpose: it is a few lines over byte slices, on the hot path of every
//! access unit (SPS checks, key-frame flags), and no maintained crate offers a
//! zero-allocation walker for both framings without pulling in a full parser.

use std::ops::Range;

/// NAL unit type of a NAL unit's first byte.
pub fn nal_type(header: u8) -> u8 {
    header & 0x1F
}

/// NAL unit types we look at.
pub mod nal {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
    /// Coded slice of an IDR picture.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
}

/// What the decode levels need to know of an access unit, read from NAL headers only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuInfo {
    /// Some slice has `nal_ref_idc != 0`: later pictures may predict from this one.
    pub reference: bool,
    /// Some slice is an IDR slice.
    pub idr: bool,
    /// Coded slices (NAL types 1–5).
    pub slices: u16,
    /// The access unit carries an SPS or a PPS (the decoder needs them even when the
    /// picture is not decoded).
    pub parameter_sets: bool,
}

/// Reads [`AuInfo`] from an Annex B access unit: one pass over its NAL headers.
pub fn au_info(data: &[u8]) -> AuInfo {
    let mut info = AuInfo::default();
    for r in annexb_nal_ranges(data) {
        let Some(&header) = data.get(r.start) else {
            continue;
        };
        match nal_type(header) {
            t @ 1..=5 => {
                info.slices = info.slices.saturating_add(1);
                info.reference |= header & 0x60 != 0;
                info.idr |= t == nal::IDR;
            }
            nal::SPS | nal::PPS => info.parameter_sets = true,
            _ => {}
        }
    }
    info
}

/// The SPS and PPS NAL units of an Annex B access unit, each behind a 4-byte start
/// code, appended to `out` (for a decoder that must learn them from a picture it does
/// not decode).
pub fn parameter_sets_into(data: &[u8], out: &mut Vec<u8>) {
    for nal in annexb_nals(data) {
        if matches!(nal.first().map(|&h| nal_type(h)), Some(nal::SPS | nal::PPS)) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
    }
}

/// Byte ranges of the NAL units of an Annex B buffer, without their start codes, up to
/// (not including) the next `00 00 01`: a zero byte that begins a 4-byte start code is
/// still inside the range (see [`annexb_nals`] for trimmed units).
pub fn annexb_nal_ranges(data: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut pos = find_start(data, 0);
    std::iter::from_fn(move || {
        let (start_code_end, _) = pos?;
        let next = find_start(data, start_code_end);
        let end = match next {
            Some((_, sc_begin)) => sc_begin,
            None => data.len(),
        };
        pos = next;
        Some(start_code_end..end)
    })
}

/// The NAL units (without start codes or trailing zero bytes) of an Annex B buffer.
pub fn annexb_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    annexb_nal_ranges(data).map(move |r| {
        let mut nal = &data[r];
        while let [rest @ .., 0] = nal {
            nal = rest; // trailing zero bytes belong to the next start code
        }
        nal
    })
}

/// Finds the next 00 00 01 at or after `from`: (index after it, index of its start).
/// Every access unit is scanned (for SPS), so this skips ahead: a byte above 1 at
/// `i + 2` rules out a start code at `i`, `i + 1` and `i + 2`.
fn find_start(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 2 < data.len() {
        let c = data[i + 2];
        if c > 1 {
            i += 3;
            continue;
        }
        if c == 1 && data[i] == 0 && data[i + 1] == 0 {
            return Some((i + 3, i));
        }
        i += 1;
    }
    None
}

/// True when an Annex B access unit contains an IDR slice (NAL type 5). Stops at the
/// first slice NAL, so it reads only the first few bytes of a frame.
pub fn has_idr(data: &[u8]) -> bool {
    for r in annexb_nal_ranges(data) {
        let Some(&header) = data.get(r.start) else {
            continue;
        };
        match nal_type(header) {
            nal::IDR => return true,
            1..=4 => return false,
            _ => {}
        }
    }
    false
}

/// The NAL units of an AVCC buffer (each behind a `len_size`-byte big-endian length).
/// Zero-length units are skipped. Yields `Err(())` once, then stops, when a length
/// prefix or a unit runs past the end of the buffer.
pub fn avcc_nals(data: &[u8], len_size: u8) -> impl Iterator<Item = Result<&[u8], ()>> {
    let n = usize::from(len_size);
    let mut i = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || loop {
        if failed || i >= data.len() {
            return None;
        }
        if n == 0 || data.len() - i < n {
            failed = true;
            return Some(Err(()));
        }
        let len = data[i..i + n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | usize::from(x));
        i += n;
        if len == 0 {
            continue;
        }
        if len > data.len() - i {
            failed = true;
            return Some(Err(()));
        }
        let nal = &data[i..i + len];
        i += len;
        return Some(Ok(nal));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn au_info_reads_reference_idr_and_parameter_sets() {
        // SPS, PPS, IDR slice (nal_ref_idc 3).
        let key = [0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 0x88];
        let i = au_info(&key);
        assert_eq!(
            i,
            AuInfo {
                reference: true,
                idr: true,
                slices: 1,
                parameter_sets: true
            }
        );
        let mut ps = vec![];
        parameter_sets_into(&key, &mut ps);
        assert_eq!(ps, [0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2]);
        // A B-frame: two slices with nal_ref_idc 0 behind an access unit delimiter.
        let b = [
            0, 0, 0, 1, 0x09, 0x10, 0, 0, 1, 0x01, 0x9e, 0, 0, 1, 0x01, 0x9f,
        ];
        let i = au_info(&b);
        assert_eq!(
            (i.reference, i.idr, i.slices, i.parameter_sets),
            (false, false, 2, false)
        );
        // A reference P slice.
        assert!(au_info(&[0, 0, 1, 0x41, 0x9a]).reference);
        // Garbage: nothing.
        assert_eq!(au_info(&[1, 2, 3]), AuInfo::default());
    }

    #[test]
    fn splits_annexb() {
        let d = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals: Vec<&[u8]> = annexb_nals(&d).collect();
        assert_eq!(nals, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
        let ranges: Vec<_> = annexb_nal_ranges(&d).collect();
        assert_eq!(ranges, [4..7, 10..13, 16..19]);
        assert_eq!(annexb_nals(&[1, 2, 3]).count(), 0);
    }

    #[test]
    fn idr_detection_stops_at_first_slice() {
        assert!(has_idr(&[
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 9
        ]));
        assert!(!has_idr(&[0, 0, 0, 1, 0x41, 1, 0, 0, 1, 0x65]));
        assert!(!has_idr(&[]));
        assert!(!has_idr(&[0, 0, 1]));
    }

    #[test]
    fn walks_avcc_and_stops_at_a_bad_length() {
        let ok: Vec<_> =
            avcc_nals(&[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x41], 4).collect();
        assert_eq!(ok, [Ok(&[0x65, 1][..]), Ok(&[0x41][..])]);
        let bad: Vec<_> = avcc_nals(&[0, 0, 0, 9, 0x65, 1], 4).collect();
        assert_eq!(bad, [Err(())]);
        let short: Vec<_> = avcc_nals(&[0, 2, 0x65, 1, 0], 2).collect();
        assert_eq!(short, [Ok(&[0x65, 1][..]), Err(())]);
        assert_eq!(avcc_nals(&[], 4).count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn walkers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64), n in 0u8..5) {
            let _ = has_idr(&data);
            let _ = annexb_nals(&data).count();
            let _ = avcc_nals(&data, n).count();
        }
    }
}
