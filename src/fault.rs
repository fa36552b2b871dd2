//! Fault injection for tests, compiled in but inert in release builds.
//!
//! Debug builds only: `VQPROBE_FAULT=<name>[,<name>…]` makes the named places misbehave
//! on purpose, so the integration tests can prove what the product does when they do
//! (a dead publisher task; a decoder slower than its live source) on any machine,
//! however fast. Release builds never read the variable.
//!
//! Names in use:
//! * `feeder_panic` — the MQTT feeder task panics (`publish/mqtt/`).
//! * `slow_decode` — the decode thread spends [`SLOW_DECODE`] more on every video
//!   access unit, so a live source outruns it whatever the CPU.
//! * `slow_openh264` — every access unit actually given to openh264 costs
//!   [`SLOW_OPENH264`] more, so decoding every picture of a 25 fps source falls behind
//!   while decoding key pictures only does not (the decode levels' overload steps).
//! * `slow_parse` — every picture `auto`'s syntax check parses costs
//!   [`SLOW_OPENH264`] more, so watching a 25 fps source falls behind until the check
//!   is shed.
//! * `box_busy` — the box-wide gate (`pipeline::gate`) refuses every syntax check, as
//!   on a box whose CPUs are busy, so live `auto` streams watch without the check.

use std::time::Duration;

/// Extra time per video access unit under `slow_decode`.
pub const SLOW_DECODE: Duration = Duration::from_millis(40);

/// Extra time per access unit decoded by openh264 under `slow_openh264`.
pub const SLOW_OPENH264: Duration = Duration::from_millis(60);

/// True when `name` is in `VQPROBE_FAULT` and this is a debug build.
#[doc(hidden)]
pub fn fault(name: &str) -> bool {
    // Read once: callers ask on every turn of their loops.
    static FAULTS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    cfg!(debug_assertions)
        && FAULTS
            .get_or_init(|| std::env::var("VQPROBE_FAULT").unwrap_or_default())
            .split(',')
            .any(|f| f == name)
}
