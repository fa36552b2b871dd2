//! The shutdown signal every long wait races. A leaf module (used by ingest, the
//! agent and the publisher alike).

use std::time::Duration;

/// A shutdown signal every long wait races (a `watch` of "stop now").
#[derive(Debug, Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// A signal and its trigger.
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// True once triggered.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when triggered (or when the trigger is dropped).
    pub async fn wait(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                // The trigger is gone: nobody can stop us any more; never resolve.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.wait() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}
