//! Pacing and lifecycle state shared by the sources that make their own frames (synthetic
//! scene, image files): a drift-free schedule on the injected clock and a replaceable sleep.

use std::sync::Arc;
use std::time::Duration;

use crate::frame::Clock;

/// How a source waits: `std::thread::sleep` unless replaced (tests and simulated time advance a
/// mock clock instead).
pub type SleepFn = Arc<dyn Fn(Duration) + Send + Sync>;

/// The real sleep.
pub(crate) fn thread_sleep() -> SleepFn {
    Arc::new(std::thread::sleep)
}

/// Paces a source at a target rate on the injected clock, without drift: slot `n` is due
/// `n / fps` after the first. A consumer more than a period late restarts the schedule from now
/// rather than getting a burst of frames. Shared by the sources in this module tree.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    period_ns: Option<f64>,
    start: Option<u64>,
    slot: u64,
}

impl Pacer {
    /// A pacer for `fps` frames per second; 0 (or less) never waits.
    pub(crate) fn new(fps: f64) -> Self {
        Pacer {
            period_ns: (fps > 0.0).then(|| 1e9 / fps),
            start: None,
            slot: 0,
        }
    }

    /// Forget the schedule; the next wait starts a new one.
    pub(crate) fn restart(&mut self) {
        self.start = None;
        self.slot = 0;
    }

    /// Wait until the next slot is due.
    pub(crate) fn wait(&mut self, clock: &dyn Clock, sleep: &dyn Fn(Duration)) {
        let Some(period) = self.period_ns else {
            return;
        };
        let now = clock.now().0;
        let start = *self.start.get_or_insert(now);
        let due = start.saturating_add((self.slot as f64 * period).round() as u64);
        if now < due {
            sleep(Duration::from_nanos(due - now));
        } else if (now - due) as f64 > period {
            self.start = Some(now);
            self.slot = 0;
        }
        self.slot += 1;
    }
}

/// Lifecycle state shared by the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunState {
    /// Not started yet (`next_frame` starts it).
    Idle,
    /// Delivering frames.
    Running,
    /// Stopped: `next_frame` returns `Ok(None)` until `start` again.
    Stopped,
}
