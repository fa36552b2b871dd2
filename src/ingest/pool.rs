//! A small pool of packet buffers shared by a stream's ingest (which fills them) and its
//! decode thread (which hands them back after decoding), so that steady state allocates
//! nothing per frame.
//!
//! Bounded: at most `max_buffers` buffers of at most `max_capacity` bytes are kept.
//! Overflow policy: *free*: a buffer returned to a full pool, or one grown larger than
//! `max_capacity` (a huge intra frame), is simply dropped, and the next `take` allocates.
//!
//! ```
//! use vqprobe::ingest::pool::BufPool;
//! let pool = BufPool::new(4, 1 << 20);
//! let mut b = pool.take();
//! b.extend_from_slice(b"frame");
//! pool.give(b);
//! assert!(pool.take().capacity() >= 5); // the same allocation, cleared
//! ```

use std::sync::{Arc, Mutex};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct BufPool {
    inner: Arc<Mutex<Vec<Vec<u8>>>>,
    max_buffers: usize,
    max_capacity: usize,
}

impl BufPool {
    pub fn new(max_buffers: usize, max_capacity: usize) -> Self {
        BufPool {
            inner: Arc::new(Mutex::new(Vec::with_capacity(max_buffers))),
            max_buffers,
            max_capacity,
        }
    }

    /// An empty buffer, recycled when one is available.
    pub fn take(&self) -> Vec<u8> {
        self.inner
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }

    /// Returns a buffer for reuse (see the overflow policy).
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.max_capacity {
            return;
        }
        buf.clear();
        if let Ok(mut v) = self.inner.lock() {
            if v.len() < self.max_buffers {
                v.push(buf);
            }
        }
    }

    /// Buffers currently pooled.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// True when no buffer is pooled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_count_and_size() {
        let p = BufPool::new(2, 100);
        p.give(Vec::with_capacity(10));
        p.give(Vec::with_capacity(10));
        p.give(Vec::with_capacity(10)); // full: freed
        assert_eq!(p.len(), 2);
        p.take();
        p.give(Vec::with_capacity(1000)); // too large: freed
        assert_eq!(p.len(), 1);
        p.give(Vec::new()); // nothing to keep
        assert_eq!(p.len(), 1);
    }
}
