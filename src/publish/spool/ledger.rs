//! The spool's ledger file (head and next data file id): the atomic write (temporary
//! file, fsync, rename, fsync of the directory) and the read, including the `head` file
//! of earlier versions.
//!
//! Owns: `dir/ledger`, `dir/ledger.tmp`, the legacy `dir/head`.
//! May not touch: data files, the lock file, the spool's state.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use super::{check, no_space, FaultHook, FaultOp};

const LEDGER: &str = "ledger";
pub(super) const LEDGER_TMP: &str = "ledger.tmp";

pub(super) fn sync_dir(dir: &Path, fault: &Option<Arc<dyn FaultHook>>) -> io::Result<()> {
    check(fault, FaultOp::Sync)?;
    File::open(dir)?.sync_all()
}

/// Writes the ledger atomically: temporary file, fsync, rename, fsync of the directory.
pub(super) fn write_ledger(
    dir: &Path,
    fault: &Option<Arc<dyn FaultHook>>,
    head: u64,
    next_id: u64,
) -> io::Result<()> {
    let tmp = dir.join(LEDGER_TMP);
    let text = format!("vqprobe-spool 1\nhead {head}\nnext_file {next_id}\n");
    let r = (|| {
        check(fault, FaultOp::Create)?;
        let mut f = File::create(&tmp)?;
        if let Some(n) = fault
            .as_ref()
            .and_then(|f| f.fault(FaultOp::Write, text.len()))
        {
            let _ = f.write_all(&text.as_bytes()[..n.min(text.len() - 1)]);
            return Err(no_space());
        }
        f.write_all(text.as_bytes())?;
        check(fault, FaultOp::Sync)?;
        f.sync_all()?;
        check(fault, FaultOp::Rename)?;
        fs::rename(&tmp, dir.join(LEDGER))?;
        sync_dir(dir, fault)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    } else {
        // The head file of earlier versions is superseded by the ledger.
        let _ = fs::remove_file(dir.join("head"));
    }
    r
}

/// (head, next data file id) from the ledger (or the `head` file of earlier versions).
/// An unreadable ledger means head 0: everything on disk is sent again.
pub(super) fn read_ledger(dir: &Path) -> io::Result<(u64, u64)> {
    let text = match fs::read_to_string(dir.join(LEDGER)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match fs::read_to_string(dir.join("head")) {
                Ok(s) => Ok((s.trim().parse::<u64>().unwrap_or(0), 0)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((0, 0)),
                Err(e) => Err(e),
            };
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => String::new(),
        Err(e) => return Err(e),
    };
    let mut head = None;
    let mut next = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("head"), Some(v)) => head = Some(v),
            (Some("next_file"), Some(v)) => next = Some(v),
            _ => {}
        }
    }
    if head.is_none() {
        tracing::warn!(dir = %dir.display(), "spool: the ledger is unreadable; every record on disk is sent again");
    }
    Ok((head.unwrap_or(0), next.unwrap_or(0)))
}
