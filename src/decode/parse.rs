//! Syntax check of H.264 pictures without decoding them: openh264 in parse-only mode
//! (`bParseOnly`) reads every slice down to its macroblocks (CAVLC/CABAC entropy
//! decoding) but reconstructs and deblocks nothing. A slice whose macroblock syntax is
//! broken (bit errors, lost bytes) fails here as it would in a full decode.
//!
//! Boundaries: owns one parse-only openh264 instance; knows nothing of detectors or
//! levels. Used by the `auto` decode level to watch the pictures it does not decode.
//!
//! Why the raw API: the `openh264` crate only wraps the full decoder. The unsafe code
//! is confined to [`SyntaxChecker::new`], [`SyntaxChecker::check`] and `Drop`.

use std::ptr::null_mut;

use openh264::OpenH264API;
use openh264_sys2::{ISVCDecoder, SDecodingParam, SParserBsInfo, API as _, VIDEO_BITSTREAM_AVC};

use crate::error::{Error, Result};

/// openh264's `dsFramePending`: not an error.
const DS_FRAME_PENDING: i64 = 0x01;
/// openh264's `dsRefLost` and `dsRefListNullPtrs`: pictures before this one were not
/// parsed (the caller skips nothing, but the first picture after a start may lack
/// references); not a syntax error.
const DS_REF_BITS: i64 = 0x02 | 0x40;
/// openh264's `dsNoParamSets`: no SPS/PPS seen yet.
const DS_NO_PARAM_SETS: i64 = 0x10;

/// What [`SyntaxChecker::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Every slice parsed.
    Clean,
    /// A slice's syntax is broken.
    Broken,
    /// Not checked: openh264 lacked parameter sets or references (it parses again
    /// from the next IDR). Counted, never taken for a defect.
    Unchecked,
}

/// A parse-only openh264 decoder.
pub struct SyntaxChecker {
    api: OpenH264API,
    dec: *mut ISVCDecoder,
    info: Box<SParserBsInfo>,
}

// SAFETY: the decoder pointer is owned by this value alone and openh264 decoders have
// no thread affinity; it is used from one thread at a time (`&mut self`).
unsafe impl Send for SyntaxChecker {}

impl std::fmt::Debug for SyntaxChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntaxChecker").finish_non_exhaustive()
    }
}

impl SyntaxChecker {
    pub fn new() -> Result<Self> {
        let api = OpenH264API::from_source();
        let mut dec: *mut ISVCDecoder = null_mut();
        // SAFETY: WelsCreateDecoder writes a decoder pointer; Initialize reads a
        // valid parameter struct; both are called once on a fresh decoder.
        unsafe {
            if api.WelsCreateDecoder(&raw mut dec) != 0 || dec.is_null() {
                return Err(Error::Decoder("openh264 parse-only: create failed".into()));
            }
            let mut p = SDecodingParam {
                bParseOnly: true,
                ..SDecodingParam::default()
            };
            p.sVideoProperty.eVideoBsType = VIDEO_BITSTREAM_AVC;
            let init = (**dec).Initialize.map(|f| f(dec, &raw const p));
            if init != Some(0) {
                api.WelsDestroyDecoder(dec);
                return Err(Error::Decoder("openh264 parse-only: init failed".into()));
            }
        }
        Ok(SyntaxChecker {
            api,
            dec,
            info: Box::default(),
        })
    }

    /// Parses one Annex B access unit.
    pub fn check(&mut self, data: &[u8]) -> Parsed {
        if data.is_empty() || data.len() > i32::MAX as usize {
            return Parsed::Clean;
        }
        if crate::fault::fault("slow_parse") {
            std::thread::sleep(crate::fault::SLOW_OPENH264);
        }
        // SAFETY: `data` is a live slice of `len` bytes; `info` is a valid out-param
        // owned by self; the decoder was initialised in parse-only mode.
        let state = unsafe {
            match (**self.dec).DecodeParser {
                Some(f) => i64::from(f(
                    self.dec,
                    data.as_ptr(),
                    data.len() as i32,
                    &raw mut *self.info,
                )),
                None => 0,
            }
        };
        if state & !(DS_FRAME_PENDING | DS_REF_BITS | DS_NO_PARAM_SETS) != 0 {
            Parsed::Broken
        } else if state & (DS_REF_BITS | DS_NO_PARAM_SETS) != 0 {
            Parsed::Unchecked
        } else {
            Parsed::Clean
        }
    }
}

impl Drop for SyntaxChecker {
    fn drop(&mut self) {
        // SAFETY: `dec` came from WelsCreateDecoder and is released exactly once.
        unsafe {
            if let Some(f) = (**self.dec).Uninitialize {
                f(self.dec);
            }
            self.api.WelsDestroyDecoder(self.dec);
        }
    }
}
