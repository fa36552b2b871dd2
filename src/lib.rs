//! vqprobe: an edge probe that watches live video the way a viewer would and reports,
//! within seconds, when a stream is broken.
//!
//! Data flow (one process, bounded pipes):
//!
//! ```text
//! ingest (tokio)  ──IngestMsg──►  [bounded]  ──►  decode (OS thread)  ──Thumb/AudioLevel──►  detect  ──Transition──►  event  ──Event──►  publish
//! file / RTSP / HLS                               openh264, AAC                            pure state machines      schema v1           stdout / MQTT
//! ```
//!
//! * [`ingest`] — sources → timestamped elementary packets; never decodes.
//! * [`decode`] — decoders → small fixed-size summaries, once per frame.
//! * [`detect`] — I/O-free detectors with hysteresis.
//! * [`event`] — the wire schema.
//! * [`publish`] — delivery.
//! * [`pipeline`] — decode + detect for one stream on its own thread.
//! * [`app`] — the commands.
//!
//! Only the binary prints: the library writes to the `Write` it is handed, or logs.

// `deny`, not `forbid`: test modules may allow printing their measurements (the fleet
// simulation does); library code may not print.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod app;
pub mod backoff;
pub mod cli;
pub mod codec;
pub mod config;
pub mod decode;
pub mod defect;
pub mod detect;
pub mod error;
pub mod event;
#[doc(hidden)]
pub mod fault;
pub mod ingest;
pub mod pipeline;
pub mod publish;
pub mod redact;
pub mod shutdown;
pub mod timebase;

pub use error::{Error, Result};

/// Version string: crate version, git commit (when built from a checkout) and target
/// triple, e.g. `0.1.0 (commit 1a2b3c4d5e6f, aarch64-unknown-linux-musl)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("VQPROBE_GIT_COMMIT"),
    ", ",
    env!("VQPROBE_TARGET"),
    ")"
);
