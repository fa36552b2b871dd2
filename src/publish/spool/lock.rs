//! The spool's lock file: one agent per spool directory (`flock`, holds the owner's pid).
//!
//! Owns: `dir/lock`.
//! May not touch: data files, the ledger, the spool's state.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

const LOCK: &str = "lock";

/// Creates and locks `dir/lock` (`flock`, exclusive, non-blocking) and writes our pid.
pub(super) fn take_lock(dir: &Path) -> io::Result<File> {
    let path = dir.join(LOCK);
    let mut oo = OpenOptions::new();
    oo.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        oo.mode(0o600);
    }
    let mut f = oo.open(&path)?;
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut owner = String::new();
            let _ = f.read_to_string(&mut owner);
            let owner = owner.trim();
            let who = if owner.is_empty() {
                String::new()
            } else {
                format!(" (pid {owner})")
            };
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the spool directory is in use by another vqprobe process{who}; \
                     only one agent may use a spool directory"
                ),
            ));
        }
        return Err(e);
    }
    // Best effort (a full disk must not stop the start).
    if f.set_len(0).is_ok() {
        let _ = write!(f, "{}", std::process::id());
    }
    Ok(f)
}
