//! The look-back ring of `auto`: the compressed access units since the key picture
//! before the last clean one, so that a suspicion can be decoded again from a key
//! picture and its onset found as precisely as a full decode would.
//!
//! Owns copies of the access units (the packet buffers go back to the stream's pool at
//! once) and a byte bound. Overflow policy: the caller first [trims](GopRing::trim) to
//! the newest key picture (the older GOP's look-back is lost, counted); an access unit
//! that still does not fit is refused, and the caller decodes what it holds instead of
//! dropping it. It decodes nothing.

use std::collections::VecDeque;

use crate::codec::h264::AuInfo;

/// One access unit kept for a possible second decode.
#[derive(Debug)]
pub struct RingAu {
    pub pts: i64,
    pub key: bool,
    pub info: AuInfo,
    pub data: Vec<u8>,
}

/// See the module docs.
#[derive(Debug)]
pub struct GopRing {
    aus: VecDeque<RingAu>,
    bytes: usize,
    cap: usize,
    /// Buffers of dropped access units, reused (at most [`SPARE`]).
    spare: Vec<Vec<u8>>,
}

/// Buffers kept for reuse.
const SPARE: usize = 16;
/// Access units held at most (a bound on the index too, whatever their size).
pub const MAX_AUS: usize = 2048;

impl GopRing {
    /// A ring holding at most `cap` bytes of access units.
    pub fn new(cap: usize) -> Self {
        GopRing {
            aus: VecDeque::new(),
            bytes: 0,
            cap,
            spare: Vec::new(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Access units held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.aus.len()
    }

    pub fn is_empty(&self) -> bool {
        self.aus.is_empty()
    }

    /// Keeps a copy of an access unit. Returns false (and keeps nothing) when it does
    /// not fit the byte or count bound.
    pub fn push(&mut self, pts: i64, key: bool, info: AuInfo, data: &[u8]) -> bool {
        if self.bytes + data.len() > self.cap || self.aus.len() >= MAX_AUS {
            return false;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        self.bytes += data.len();
        self.aus.push_back(RingAu {
            pts,
            key,
            info,
            data: buf,
        });
        true
    }

    /// Drops everything before the `n`-th newest key picture (`n` = 1: the newest).
    /// Returns true when something was dropped.
    pub fn keep_from_key(&mut self, n: usize) -> bool {
        let Some(pos) = self
            .aus
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, a)| a.key)
            .nth(n.saturating_sub(1))
            .map(|(i, _)| i)
        else {
            return false;
        };
        for _ in 0..pos {
            self.drop_front();
        }
        pos > 0
    }

    /// Makes room by keeping only the newest GOP. Returns true when it dropped
    /// something.
    pub fn trim(&mut self) -> bool {
        self.keep_from_key(1)
    }

    /// Empties the ring.
    pub fn clear(&mut self) {
        while !self.aus.is_empty() {
            self.drop_front();
        }
    }

    /// Takes every access unit out, oldest first; hand the buffers back with
    /// [`GopRing::recycle`].
    pub fn take_all(&mut self) -> VecDeque<RingAu> {
        self.bytes = 0;
        std::mem::take(&mut self.aus)
    }

    /// Returns a buffer for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE && buf.capacity() <= self.cap / 4 {
            self.spare.push(buf);
        }
    }

    fn drop_front(&mut self) {
        if let Some(a) = self.aus.pop_front() {
            self.bytes -= a.data.len();
            self.recycle(a.data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_bound_holds_and_trimming_keeps_the_newest_gop() {
        let mut r = GopRing::new(1000);
        // GOP 1: key 300 + 3 × 100; GOP 2: key 300.
        assert!(r.push(0, true, AuInfo::default(), &[1; 300]));
        for i in 1..4 {
            assert!(r.push(i, false, AuInfo::default(), &[2; 100]));
        }
        assert!(r.push(4, true, AuInfo::default(), &[3; 300]));
        assert_eq!((r.len(), r.bytes()), (5, 900));
        // 200 more would make 1100 > 1000: refused, nothing kept.
        assert!(!r.push(5, false, AuInfo::default(), &[4; 200]));
        assert_eq!((r.len(), r.bytes()), (5, 900));
        assert!(r.trim());
        assert_eq!((r.len(), r.bytes()), (1, 300));
        assert!(r.push(5, false, AuInfo::default(), &[4; 200]));
        assert!(!r.trim(), "already starts at its only key");
        // A single access unit above the bound never fits.
        assert!(!r.push(6, false, AuInfo::default(), &[5; 1001]));
        let all = r.take_all();
        assert_eq!(all.iter().map(|a| a.pts).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn keeps_from_the_second_newest_key() {
        let mut r = GopRing::new(1 << 20);
        for (pts, key) in [(0, true), (1, false), (2, true), (3, false), (4, true)] {
            r.push(pts, key, AuInfo::default(), &[0; 10]);
        }
        assert!(r.keep_from_key(2));
        assert_eq!(
            r.take_all().iter().map(|a| a.pts).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        // Fewer keys than asked: nothing dropped.
        r.push(9, false, AuInfo::default(), &[0; 10]);
        assert!(!r.keep_from_key(2));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn the_count_bound_holds() {
        let mut r = GopRing::new(usize::MAX);
        for i in 0..MAX_AUS as i64 {
            assert!(r.push(i, i == 0, AuInfo::default(), &[]));
        }
        assert!(!r.push(0, false, AuInfo::default(), &[]));
    }
}
