//! Capture stamps: a buffer's monotonic capture time on the node's clock.
//!
//! The kernel stamps each buffer with `CLOCK_MONOTONIC` when the frame was captured. The node's
//! clock is a different one (ROS time), and we do not read `CLOCK_MONOTONIC`
//! ourselves to relate the two at the moment of dequeueing. Instead the offset between the two
//! clocks is estimated from the stream: for every buffer, `clock.now() - buffer_time` right after
//! dequeueing is the offset plus how late we dequeued it, so the minimum over the last
//! [`STAMP_WINDOW`] buffers is the offset plus the smallest dequeue latency (well under a
//! millisecond when the capture thread waits on the device, which it does whenever it keeps up).
//! A buffer's stamp is `buffer_time + offset`: frames that waited in the queue keep their true,
//! earlier capture time, and a jump of the node clock is followed within one window. Drivers
//! that do not give monotonic timestamps get `clock.now()` at dequeue.

use std::time::Duration;

use crate::frame::Stamp;

/// Buffers over which the monotonic-to-node clock offset is estimated (about 2 s at 30 fps).
pub const STAMP_WINDOW: usize = 64;

/// Monotonic buffer time to node time; see the module docs.
#[derive(Debug, Clone)]
pub(super) struct StampMapper {
    /// `now - buffer_time` in nanoseconds for the last buffers (a ring).
    offsets: [i128; STAMP_WINDOW],
    len: usize,
    next: usize,
}

impl StampMapper {
    /// No buffers seen yet.
    pub(super) fn new() -> Self {
        StampMapper {
            offsets: [0; STAMP_WINDOW],
            len: 0,
            next: 0,
        }
    }

    /// The stamp of a buffer dequeued at `now` (node clock) with `buffer_time` (monotonic).
    pub(super) fn stamp(&mut self, now: Stamp, buffer_time: Option<Duration>) -> Stamp {
        let Some(t) = buffer_time else {
            return now;
        };
        let t = t.as_nanos() as i128;
        self.offsets[self.next] = now.0 as i128 - t;
        self.next = (self.next + 1) % STAMP_WINDOW;
        self.len = (self.len + 1).min(STAMP_WINDOW);
        let offset = self.offsets[..self.len].iter().copied().min().unwrap_or(0);
        Stamp((t + offset).clamp(0, u64::MAX as i128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_use_the_smallest_observed_latency() {
        let mut m = StampMapper::new();
        let s = |x: u64| Stamp(x);
        let ms = Duration::from_millis;
        // Node clock = monotonic + 1_000_000 ns; dequeue latencies 5, 2, 9 ms.
        assert_eq!(
            m.stamp(s(1_000_000 + 10_000_000 + 5_000_000), Some(ms(10)))
                .0,
            16_000_000
        );
        assert_eq!(
            m.stamp(s(1_000_000 + 20_000_000 + 2_000_000), Some(ms(20)))
                .0,
            23_000_000
        );
        assert_eq!(
            m.stamp(s(1_000_000 + 30_000_000 + 9_000_000), Some(ms(30)))
                .0,
            33_000_000
        );
        // No monotonic timestamp: the node clock.
        assert_eq!(m.stamp(s(77), None), s(77));
    }
}
