//! The box layer of the fMP4 demuxer: a bounds-checked byte reader ([`Rd`]), box
//! iteration over a byte slice ([`boxes`], [`child`], 32/64-bit and to-the-end sizes),
//! and the structural error type [`Mp4Error`].
//!
//! Owns: how bytes become boxes and fields, and the refusal of any box or read that
//! claims more bytes than are present.
//!
//! May not touch: what any box means (tracks, samples, codecs: `moov.rs` and `mod.rs`),
//! I/O, clocks, decoding. Nothing here allocates from a claimed size or panics on input.

/// A structural error: the bytes are not the fMP4 we can read. The text names the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mp4Error(pub String);

impl std::fmt::Display for Mp4Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mp4Error {}

pub(super) fn err<T>(msg: impl Into<String>) -> Result<T, Mp4Error> {
    Err(Mp4Error(msg.into()))
}

/// A byte reader over a slice; every read is bounds-checked.
pub(super) struct Rd<'a> {
    b: &'a [u8],
    p: usize,
    what: &'static str,
}

impl<'a> Rd<'a> {
    pub(super) fn new(b: &'a [u8], what: &'static str) -> Self {
        Rd { b, p: 0, what }
    }
    pub(super) fn left(&self) -> usize {
        self.b.len() - self.p
    }
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Mp4Error> {
        if n > self.left() {
            return err(format!("'{}' box too short", self.what));
        }
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }
    pub(super) fn skip(&mut self, n: usize) -> Result<(), Mp4Error> {
        self.take(n).map(|_| ())
    }
    pub(super) fn u8(&mut self) -> Result<u8, Mp4Error> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, Mp4Error> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    pub(super) fn u32(&mut self) -> Result<u32, Mp4Error> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub(super) fn u64(&mut self) -> Result<u64, Mp4Error> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    /// Version and flags of a full box.
    pub(super) fn full(&mut self) -> Result<(u8, u32), Mp4Error> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00FF_FFFF))
    }
}

/// One box: its type, where it starts in the slice iterated, and its body.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bx<'a> {
    pub(super) kind: [u8; 4],
    pub(super) start: usize,
    pub(super) body: &'a [u8],
}

/// Iterates the boxes of `data` (a box body or a whole segment).
pub(super) struct Boxes<'a> {
    data: &'a [u8],
    pos: usize,
    failed: bool,
}

pub(super) fn boxes(data: &[u8]) -> Boxes<'_> {
    Boxes {
        data,
        pos: 0,
        failed: false,
    }
}

fn fourcc(k: &[u8; 4]) -> String {
    k.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<Bx<'a>, Mp4Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.data.len() {
            return None;
        }
        let rest = &self.data[self.pos..];
        if rest.len() < 8 {
            self.failed = true;
            return Some(err(format!("{} trailing bytes, not a box", rest.len())));
        }
        let size32 = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        let kind = [rest[4], rest[5], rest[6], rest[7]];
        let (size, header) = match size32 {
            0 => (rest.len() as u64, 8u64),
            1 => {
                if rest.len() < 16 {
                    self.failed = true;
                    return Some(err("box with a cut 64-bit size"));
                }
                let mut a = [0u8; 8];
                a.copy_from_slice(&rest[8..16]);
                (u64::from_be_bytes(a), 16)
            }
            s => (s, 8),
        };
        if size < header {
            self.failed = true;
            return Some(err(format!(
                "box '{}' claims {size} bytes, less than its header",
                fourcc(&kind)
            )));
        }
        if size > rest.len() as u64 {
            self.failed = true;
            return Some(err(format!(
                "box '{}' claims {size} bytes, only {} left",
                fourcc(&kind),
                rest.len()
            )));
        }
        let (size, header) = (size as usize, header as usize);
        let b = Bx {
            kind,
            start: self.pos,
            body: &rest[header..size],
        };
        self.pos += size;
        Some(Ok(b))
    }
}

/// The first child box of `kind` in `data`, if any (errors in the list are errors).
pub(super) fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<Bx<'a>>, Mp4Error> {
    for b in boxes(data) {
        let b = b?;
        if &b.kind == kind {
            return Ok(Some(b));
        }
    }
    Ok(None)
}
