//! Commands: `check` (analyse one input and print its events) and `demo` (the built-in
//! synthetic stream). The agent (`run`) arrives with the MQTT work.

pub mod check;
pub mod demo;

/// This machine's name, used as the default probe id.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "vqprobe".to_string())
}
