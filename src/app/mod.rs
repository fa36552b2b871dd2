//! Commands: `check` (analyse one input and print its events) and `demo` (the built-in
//! synthetic stream) print events; `run` (the agent) watches many streams and publishes
//! over MQTT. A [`session`] is one input analysed once, shared by all of them.

pub mod agent;
pub mod check;
pub mod demo;
pub mod fleet;
pub mod session;

/// This machine's name, used as the default probe id.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "vqprobe".to_string())
}

/// Makes freed decoder memory go back to the system (call once, first thing).
///
/// glibc raises its mmap threshold each time a large mmapped block is freed, so after
/// a few openh264 instances come and go (re-decodes, the decoder pool, a shed syntax
/// check) their pictures would be carved from the heap and kept after free: RSS would
/// stay at its high-water mark. A fixed threshold (128 KiB, glibc's default start)
/// keeps large blocks mmapped and returned on free. musl (the static builds) always
/// returns large blocks; nothing to do there.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread is
    // spawned.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
