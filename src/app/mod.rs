//! Commands: `check` (analyse one input and print its events) and `demo` (the built-in
//! synthetic stream) print events; `run` (the agent) watches many streams and publishes
//! over MQTT. A [`session`] is one input analysed once, shared by all of them.

pub mod agent;
pub mod check;
pub mod demo;
pub mod session;

/// This machine's name, used as the default probe id.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "vqprobe".to_string())
}
