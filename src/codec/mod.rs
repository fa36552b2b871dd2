//! Bitstream syntax shared by ingest, decode and the demo: where NAL units begin and end.
//! A leaf module (imports nothing from the crate); no decoding happens here.

pub mod h264;
