//! A stream's memory for media: one budget ([`StreamBudget`], `[limits] stream_memory_mb`)
//! from which every per-stream ceiling is derived, and the packet-buffer pool that also
//! bounds the ingest → decode queue in bytes.
//!
//! Boundaries: memory accounting only; sources and the pipeline call it, it calls
//! nothing.
//!
//! The split of a budget of B bytes (default 12 MiB):
//!
//! | what | ceiling | default |
//! | --- | --- | --- |
//! | one HLS segment (or init section) downloaded | B / 2 | 6 MiB |
//! | media queued between ingest and the decode thread | B / 4 | 3 MiB |
//! | one access unit (video PES, fMP4 sample, RTSP frame) | B / 8 | 1.5 MiB |
//! | idle packet buffers kept for reuse | B / 8 | 1.5 MiB |
//!
//! They add up to B: what the probe buffers for one stream, besides the decoder's own
//! pictures (openh264 reference frames + 2, refused from the SPS above `max_pixels` or
//! `max_decoder_mb`), the pictures of `auto`'s parse-only syntax checker (a second
//! openh264 instance, the same size), `auto`'s look-back ring (`[detect.decode]
//! ring_mb`, default 8 MiB, holding about two GOPs) and small detector state. An access unit above its ceiling is dropped and counted (`ts_error` for
//! MPEG-TS, see `detect::transport`; `oversized` in the live stats otherwise).
//!
//! The pool: buffers circulate between ingest (which fills them) and the decode thread
//! (which hands them back after decoding), so that steady state allocates nothing per
//! frame. Overflow policy: *free*: a buffer returned to a full pool (in bytes), or one
//! grown larger than an access unit, is simply dropped, and the next `take` allocates.
//! The queue: ingest [`admits`](BufPool::admit) a packet's bytes before queueing it (a
//! live source drops it when there is no room, a file or VOD waits), and the decode
//! thread [`releases`](BufPool::release) them once the packet is decoded.
//!
//! ```
//! use vqprobe::ingest::pool::{BufPool, StreamBudget};
//! let pool = BufPool::for_budget(StreamBudget::default());
//! let mut b = pool.take();
//! b.extend_from_slice(b"frame");
//! pool.give(b);
//! assert!(pool.take().capacity() >= 5); // the same allocation, cleared
//! ```

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// The memory one stream may use for media buffers. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBudget {
    bytes: usize,
}

impl StreamBudget {
    /// Default budget, MiB.
    pub const DEFAULT_MB: u64 = 12;
    /// Smallest budget accepted, MiB.
    pub const MIN_MB: u64 = 4;
    /// Largest budget accepted, MiB.
    pub const MAX_MB: u64 = 1024;

    /// A budget of `mb` MiB, within [`MIN_MB`](Self::MIN_MB)..=[`MAX_MB`](Self::MAX_MB).
    pub fn from_mb(mb: u64) -> Result<Self, String> {
        if !(Self::MIN_MB..=Self::MAX_MB).contains(&mb) {
            return Err(format!(
                "must be between {} and {} (MiB per stream), got {mb}",
                Self::MIN_MB,
                Self::MAX_MB
            ));
        }
        Ok(StreamBudget {
            bytes: (mb as usize) << 20,
        })
    }

    /// The whole budget, bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Largest HLS segment or init section downloaded: half the budget.
    pub fn max_segment(&self) -> u64 {
        (self.bytes / 2) as u64
    }

    /// Bytes of media queued between ingest and decode: a quarter.
    pub fn queue_bytes(&self) -> usize {
        self.bytes / 4
    }

    /// Largest access unit: an eighth.
    pub fn max_access_unit(&self) -> usize {
        self.bytes / 8
    }

    /// Bytes of idle buffers kept for reuse: an eighth.
    pub fn pool_bytes(&self) -> usize {
        self.bytes / 8
    }

    /// MPEG-TS demuxer caps.
    pub fn ts_limits(&self) -> super::ts::TsLimits {
        super::ts::TsLimits {
            max_video_pes: self.max_access_unit(),
            max_audio_pes: self.max_access_unit().min(256 << 10),
        }
    }

    /// fMP4 demuxer caps.
    pub fn mp4_limits(&self) -> super::mp4::Mp4Limits {
        super::mp4::Mp4Limits {
            max_video_sample: self.max_access_unit(),
            ..super::mp4::Mp4Limits::default()
        }
    }
}

impl Default for StreamBudget {
    fn default() -> Self {
        StreamBudget {
            bytes: (Self::DEFAULT_MB as usize) << 20,
        }
    }
}

#[derive(Debug, Default)]
struct Pooled {
    bufs: Vec<Vec<u8>>,
    /// Sum of the pooled buffers' capacities.
    bytes: usize,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct BufPool {
    inner: Arc<Mutex<Pooled>>,
    max_buffers: usize,
    max_bytes: usize,
    max_capacity: usize,
    /// Bytes of media that may still be queued (None: the queue is bounded by count only).
    queue: Option<Arc<Semaphore>>,
    budget: StreamBudget,
}

impl BufPool {
    /// A pool of at most `max_buffers` buffers of at most `max_capacity` bytes each, and
    /// no byte bound on the queue (tests, benches).
    pub fn new(max_buffers: usize, max_capacity: usize) -> Self {
        BufPool {
            inner: Arc::new(Mutex::new(Pooled::default())),
            max_buffers,
            max_bytes: max_buffers.saturating_mul(max_capacity),
            max_capacity,
            queue: None,
            budget: StreamBudget::default(),
        }
    }

    /// The pool and queue bound of a stream with `budget`.
    pub fn for_budget(budget: StreamBudget) -> Self {
        BufPool {
            inner: Arc::new(Mutex::new(Pooled::default())),
            max_buffers: usize::MAX,
            max_bytes: budget.pool_bytes(),
            max_capacity: budget.max_access_unit(),
            queue: Some(Arc::new(Semaphore::new(budget.queue_bytes()))),
            budget,
        }
    }

    /// The budget the pool was made for (the default one for [`BufPool::new`]).
    pub fn budget(&self) -> StreamBudget {
        self.budget
    }

    /// An empty buffer, recycled when one is available.
    pub fn take(&self) -> Vec<u8> {
        self.inner
            .lock()
            .ok()
            .and_then(|mut p| {
                let b = p.bufs.pop()?;
                p.bytes -= b.capacity();
                Some(b)
            })
            .unwrap_or_default()
    }

    /// Returns a buffer for reuse (see the overflow policy).
    pub fn give(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap == 0 || cap > self.max_capacity {
            return;
        }
        buf.clear();
        if let Ok(mut p) = self.inner.lock() {
            if p.bufs.len() < self.max_buffers && p.bytes + cap <= self.max_bytes {
                p.bytes += cap;
                p.bufs.push(buf);
            }
        }
    }

    /// Buffers currently pooled.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|p| p.bufs.len()).unwrap_or(0)
    }

    /// True when no buffer is pooled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Capacity of the pooled buffers, bytes.
    pub fn pooled_bytes(&self) -> usize {
        self.inner.lock().map(|p| p.bytes).unwrap_or(0)
    }

    /// Reserves room for `n` queued bytes if there is some now (live sources: a packet
    /// that finds no room is dropped). Always true without a byte bound.
    pub fn admit(&self, n: usize) -> bool {
        let Some(q) = &self.queue else { return true };
        let Ok(n) = u32::try_from(n) else {
            return false;
        };
        match q.try_acquire_many(n) {
            Ok(p) => {
                p.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Reserves room for `n` queued bytes, waiting for the decode thread to release
    /// some (files, VOD). False when `n` can never fit (larger than the queue bound).
    pub async fn admit_wait(&self, n: usize) -> bool {
        let Some(q) = &self.queue else { return true };
        if n > self.budget.queue_bytes() {
            return false;
        }
        match q.acquire_many(n as u32).await {
            Ok(p) => {
                p.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back `n` queued bytes (the decode thread, after decoding a packet).
    pub fn release(&self, n: usize) {
        if let Some(q) = &self.queue {
            q.add_permits(n);
        }
    }

    /// Bytes that may still be queued now (None: no byte bound).
    pub fn queue_room(&self) -> Option<usize> {
        self.queue.as_ref().map(|q| q.available_permits())
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

    #[test]
    fn budget_splits_and_range() {
        let b = StreamBudget::default();
        assert_eq!(b.bytes(), 12 << 20);
        assert_eq!(b.max_segment(), 6 << 20);
        assert_eq!(
            b.queue_bytes() + b.max_access_unit() + b.pool_bytes() + b.max_segment() as usize,
            b.bytes()
        );
        assert_eq!(b.ts_limits().max_video_pes, b.max_access_unit());
        assert!(StreamBudget::from_mb(3).is_err());
        assert!(StreamBudget::from_mb(1025).is_err());
        assert_eq!(StreamBudget::from_mb(64).unwrap().max_segment(), 32 << 20);
    }

    #[test]
    fn pool_and_queue_are_bounded_in_bytes() {
        let b = StreamBudget::from_mb(8).unwrap(); // queue 2 MiB, AU 1 MiB, pool 1 MiB
        let p = BufPool::for_budget(b);
        // Idle buffers: at most 1 MiB of capacity, whatever their count.
        for _ in 0..8 {
            p.give(Vec::with_capacity(300 << 10));
        }
        assert_eq!(p.len(), 3);
        assert!(p.pooled_bytes() <= b.pool_bytes());
        p.give(Vec::with_capacity((1 << 20) + 1)); // above an access unit: freed
        assert_eq!(p.len(), 3);
        // Queue: 2 MiB of packets, then no room until the decoder releases some.
        assert!(p.admit(1 << 20));
        assert!(p.admit(1 << 20));
        assert!(!p.admit(1));
        p.release(1 << 20);
        assert!(p.admit(512 << 10));
        assert_eq!(p.queue_room(), Some(512 << 10));
        // Never fits: refused at once rather than waited for.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!rt.block_on(p.admit_wait(3 << 20)));
        assert!(rt.block_on(p.admit_wait(512 << 10)));
    }
}
