//! The part of a spool sync that runs without the spool's lock: fsyncs of data files and
//! the directory, unlinks of finished data files, the ledger write.
//!
//! Owns: [`SyncJob`] (collected by `Spool::sync_begin`) and [`SyncDone`] (applied by
//! `Spool::sync_end`).
//! May not touch: the spool's state (it only reports what it achieved).

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::ledger::{sync_dir, write_ledger};
use super::{check, FaultHook, FaultOp};

/// What a sync has to do without the spool: fsyncs, unlinks, the ledger.
#[derive(Debug)]
pub struct SyncJob {
    pub(super) dir: PathBuf,
    pub(super) fault: Option<Arc<dyn FaultHook>>,
    pub(super) files: Vec<(u64, File)>,
    pub(super) sync_dir: bool,
    pub(super) delete: Vec<PathBuf>,
    pub(super) ledger: Option<(u64, u64)>,
    pub(super) upto: u64,
    /// An error that happened in `sync_begin` (the pending-write queue could not be
    /// written).
    pub(super) pending_error: Option<io::Error>,
}

/// What a [`SyncJob`] achieved, for [`Spool::sync_end`](super::Spool::sync_end).
#[derive(Debug)]
pub struct SyncDone {
    pub(super) files_ok: bool,
    pub(super) dir_ok: bool,
    pub(super) failed_deletes: Vec<PathBuf>,
    pub(super) ledger: Option<(u64, io::Result<()>)>,
    pub(super) upto: u64,
    /// The first error of the job itself.
    pub(super) error: Option<io::Error>,
    /// The pending-write queue could not be written (already counted and logged).
    pub(super) pending_error: Option<io::Error>,
}

impl SyncJob {
    /// The slow part of [`Spool::sync`](super::Spool::sync) (fsyncs, unlinks, the
    /// ledger), without the spool's lock: run it on a blocking thread.
    pub fn run(self) -> SyncDone {
        let mut error: Option<io::Error> = None;
        let mut files_ok = true;
        for (_, f) in &self.files {
            if let Err(e) = check(&self.fault, FaultOp::Sync).and_then(|()| f.sync_data()) {
                files_ok = false;
                error.get_or_insert(e);
            }
        }
        let mut failed_deletes = Vec::new();
        for p in self.delete {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, file = %p.display(), "spool: cannot delete a finished data file");
                    failed_deletes.push(p);
                }
            }
        }
        let mut dir_ok = true;
        if self.sync_dir {
            if let Err(e) = sync_dir(&self.dir, &self.fault) {
                dir_ok = false;
                error.get_or_insert(e);
            }
        }
        let ledger = self.ledger.map(|(head, next_id)| {
            let r = write_ledger(&self.dir, &self.fault, head, next_id);
            if let Err(e) = &r {
                error.get_or_insert(io::Error::new(e.kind(), format!("ledger: {e}")));
            }
            (head, r)
        });
        SyncDone {
            files_ok,
            dir_ok,
            failed_deletes,
            ledger,
            upto: self.upto,
            error,
            pending_error: self.pending_error,
        }
    }
}
