//! A fake V4L2 camera for the tests: replays recorded buffers through the public
//! [`CaptureDevice`] trait and fails on demand (unplugged, refused, stalled, corrupt buffers).
//! Linux-only, as the V4L2 source is (the condition of `src/source/mod.rs`).
#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dinov3_perception::frame::Stamp;
use dinov3_perception::source::convert::FrameLayout;
use dinov3_perception::source::v4l2::{
    request_is_offered, CaptureDevice, CaptureRequest, CapturedBuffer, DeviceError, OfferedFormat,
    OpenedDevice,
};

use super::clock::ManualClock;

/// How the fake refuses to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeRefusal {
    /// ENOENT.
    NotFound,
    /// EACCES.
    PermissionDenied,
}

#[derive(Debug)]
struct FakeState {
    layout: FrameLayout,
    resolved_path: PathBuf,
    offered: Vec<OfferedFormat>,
    frames: Vec<Vec<u8>>,
    replacements: BTreeMap<u64, Vec<u8>>,
    flagged: Vec<u64>,
    refusal: Option<FakeRefusal>,
    disappear: Option<(u64, u32)>,
    vanished: bool,
    failing_opens: u32,
    stall_after: Option<u32>,
    is_open: bool,
    open_attempts: u32,
    opens: u32,
    delivered: u64,
    session_sequence: u32,
    first_timestamp: Duration,
    period: Duration,
    clock: Option<(Arc<ManualClock>, Stamp, Vec<Duration>)>,
}

/// A camera that replays recorded buffers and fails on demand. Clones share their state,
/// so a test keeps one to look at after giving the other to the source.
#[derive(Debug, Clone)]
pub struct FakeDevice {
    state: Arc<Mutex<FakeState>>,
    current: Vec<u8>,
}

impl FakeDevice {
    /// A camera delivering `frames` (cycled) in `layout`, offering just that layout at
    /// 30 fps, resolving to `/dev/video7`. Buffer timestamps start at 1000 s on the
    /// monotonic clock, 1/30 s apart.
    pub fn new(layout: FrameLayout, frames: Vec<Vec<u8>>) -> Self {
        FakeDevice {
            state: Arc::new(Mutex::new(FakeState {
                offered: vec![OfferedFormat::discrete(
                    layout.format,
                    &[(layout.width, layout.height)],
                    &[30],
                )],
                layout,
                resolved_path: PathBuf::from("/dev/video7"),
                frames,
                replacements: BTreeMap::new(),
                flagged: Vec::new(),
                refusal: None,
                disappear: None,
                vanished: false,
                failing_opens: 0,
                stall_after: None,
                is_open: false,
                open_attempts: 0,
                opens: 0,
                delivered: 0,
                session_sequence: 0,
                first_timestamp: Duration::from_secs(1000),
                period: Duration::from_nanos(33_333_333),
                clock: None,
            })),
            current: Vec::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offer these formats instead.
    pub fn offering(self, offered: Vec<OfferedFormat>) -> Self {
        self.state().offered = offered;
        self
    }

    /// Refuse every open.
    pub fn refusing(self, refusal: FakeRefusal) -> Self {
        self.state().refusal = Some(refusal);
        self
    }

    /// After delivering `frames` buffers (in all), vanish: the read fails with ENODEV and
    /// the next `failed_opens` opens fail with ENOENT.
    pub fn disappearing_after(self, frames: u64, failed_opens: u32) -> Self {
        self.state().disappear = Some((frames, failed_opens));
        self
    }

    /// Deliver `bytes` as buffer number `index` (counting all delivered buffers).
    pub fn replacing_frame(self, index: u64, bytes: Vec<u8>) -> Self {
        self.state().replacements.insert(index, bytes);
        self
    }

    /// Set V4L2_BUF_FLAG_ERROR on buffer number `index`.
    pub fn flagging_frame(self, index: u64) -> Self {
        self.state().flagged.push(index);
        self
    }

    /// After `frames` buffers from each open, deliver nothing more until reopened.
    pub fn stalling_after(self, frames: u32) -> Self {
        self.state().stall_after = Some(frames);
        self
    }

    /// When buffer k is dequeued, set `clock` to `epoch + buffer time + latencies[k % n]`,
    /// as if the node clock ran `epoch` ahead of the monotonic one and the source
    /// dequeued each buffer that late.
    pub fn driving_clock(
        self,
        clock: Arc<ManualClock>,
        epoch: Stamp,
        latencies: Vec<Duration>,
    ) -> Self {
        self.state().clock = Some((clock, epoch, latencies));
        self
    }

    /// The monotonic timestamp of buffer number `index`.
    pub fn buffer_time(&self, index: u64) -> Duration {
        let s = self.state();
        s.first_timestamp + s.period * index as u32
    }

    /// Open attempts so far (successful or not).
    pub fn open_attempts(&self) -> u32 {
        self.state().open_attempts
    }

    /// Successful opens so far.
    pub fn opens(&self) -> u32 {
        self.state().opens
    }

    /// Buffers delivered so far.
    pub fn delivered(&self) -> u64 {
        self.state().delivered
    }

    /// Whether it is open now.
    pub fn is_open(&self) -> bool {
        self.state().is_open
    }
}

impl CaptureDevice for FakeDevice {
    fn open(
        &mut self,
        _path: &Path,
        request: &CaptureRequest,
    ) -> Result<OpenedDevice, DeviceError> {
        let mut s = self.state();
        s.open_attempts += 1;
        s.is_open = false;
        match s.refusal {
            Some(FakeRefusal::NotFound) => return Err(DeviceError::NotFound),
            Some(FakeRefusal::PermissionDenied) => return Err(DeviceError::PermissionDenied),
            None => {}
        }
        if s.failing_opens > 0 {
            s.failing_opens -= 1;
            return Err(DeviceError::NotFound);
        }
        if !request_is_offered(&s.offered, request) {
            return Err(DeviceError::FormatNotOffered {
                offered: s.offered.clone(),
            });
        }
        s.is_open = true;
        s.opens += 1;
        s.session_sequence = 0;
        Ok(OpenedDevice {
            resolved_path: s.resolved_path.clone(),
            layout: s.layout,
            fps: Some(request.fps as f64),
        })
    }

    fn next_buffer(&mut self, wait: Duration) -> Result<Option<CapturedBuffer<'_>>, DeviceError> {
        let mut s = self.state();
        if !s.is_open {
            return Err(DeviceError::Lost {
                reason: "not open".into(),
            });
        }
        if let Some((after, failed_opens)) = s.disappear {
            if s.delivered == after && !s.vanished {
                s.vanished = true;
                s.is_open = false;
                s.failing_opens = failed_opens;
                return Err(DeviceError::Lost {
                    reason: "No such device (os error 19)".into(),
                });
            }
        }
        if s.stall_after.is_some_and(|n| s.session_sequence >= n) {
            drop(s);
            std::thread::sleep(wait.min(Duration::from_millis(5)));
            return Ok(None);
        }
        let k = s.delivered;
        let data = match s.replacements.get(&k) {
            Some(d) => d.clone(),
            None if s.frames.is_empty() => Vec::new(),
            None => s.frames[(k % s.frames.len() as u64) as usize].clone(),
        };
        let timestamp = s.first_timestamp + s.period * k as u32;
        if let Some((clock, epoch, latencies)) = &s.clock {
            let latency = match latencies.len() {
                0 => Duration::ZERO,
                n => latencies[(k % n as u64) as usize],
            };
            clock.set(Stamp(epoch.0 + (timestamp + latency).as_nanos() as u64));
        }
        let error_flag = s.flagged.contains(&k);
        let sequence = s.session_sequence;
        s.session_sequence += 1;
        s.delivered += 1;
        drop(s);
        self.current = data;
        Ok(Some(CapturedBuffer {
            data: &self.current,
            timestamp: Some(timestamp),
            sequence,
            error_flag,
        }))
    }

    fn close(&mut self) {
        self.state().is_open = false;
    }
}
