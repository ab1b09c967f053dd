//! A clock the tests set by hand; sleeping on it (through [`ManualClock::sleeper`]) advances it
//! instead of waiting, and is recorded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dinov3_perception::frame::{Clock, Stamp};

/// A clock that reads what it was set to.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
    slept: Mutex<Vec<Duration>>,
}

impl ManualClock {
    /// A clock reading `at`.
    pub fn new(at: Stamp) -> Self {
        ManualClock {
            now: AtomicU64::new(at.0),
            slept: Mutex::default(),
        }
    }

    /// A shared clock reading `ns` nanoseconds.
    pub fn at(ns: u64) -> Arc<Self> {
        Arc::new(ManualClock::new(Stamp(ns)))
    }

    /// Sets the time.
    pub fn set(&self, at: Stamp) {
        self.now.store(at.0, Ordering::SeqCst);
    }

    /// Moves the time on by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }

    /// A sleep function for sources that pace themselves: records the duration and advances
    /// the clock by it.
    pub fn sleeper(self: &Arc<Self>) -> Arc<dyn Fn(Duration) + Send + Sync> {
        let me = Arc::clone(self);
        Arc::new(move |d| {
            me.slept.lock().unwrap().push(d);
            me.advance(d);
        })
    }

    /// What [`sleeper`](Self::sleeper) was asked to sleep, in order.
    pub fn slept(&self) -> Vec<Duration> {
        self.slept.lock().unwrap().clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Stamp {
        Stamp(self.now.load(Ordering::SeqCst))
    }
}
