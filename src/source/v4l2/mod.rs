//! V4L2 cameras (`v4l2:/dev/videoN` or a stable `/dev/v4l/by-id/...` link).
//!
//! [`V4l2Source`] negotiates a format with the camera, streams through memory-mapped buffers,
//! converts every buffer to RGB8 ([`super::convert`]) and stamps it with its capture time on the
//! node's clock. It is written to keep a robot's camera running:
//!
//! * a corrupt MJPEG frame or a truncated YUYV buffer is skipped, counted in
//!   [`SourceStats::skipped`] and warned about at most every few seconds;
//! * when the camera disappears mid-stream (unplugged, USB reset, a stalled stream) the source
//!   reopens it with exponential backoff ([`Backoff`]), logs the outage once when it starts and
//!   once when it ends, counts it in [`SourceStats::reconnects`] / [`SourceStats::outage`], and
//!   carries on with the frame sequence where it left off;
//! * a stop flag ([`V4l2Source::stop_flag`]) ends a blocked [`FrameSource::next_frame`] within
//!   about 100 ms, also while waiting for the camera to come back.
//!
//! The device sits behind the small [`CaptureDevice`] trait: [`V4l2Device`] is the real one
//! (`linuxvideo` for the device, our own memory-mapped stream for buffer timestamps and sequence
//! numbers) and the integration tests' fake camera replays recorded buffers and fails on demand,
//! so all of the above is tested without a camera.
//!
//! The code is split by concern: `format.rs` (what a device offers and what we ask for),
//! `capture.rs` (the device trait and its types), `device.rs` (the real device), `stamping.rs`
//! (capture stamps on the node's clock, over the last [`STAMP_WINDOW`] buffers) and, here, the
//! source's state machine: reopening with backoff, outages, skipping corrupt buffers, frame
//! numbering. Everything public is re-exported here.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};

use super::convert::{Converter, PixelFormat, YuvEncoding};
use super::{FrameSource, SourceError, SourceStats};
use crate::frame::{Clock, Frame};
use crate::telemetry::RateLimit;

mod capture;
#[allow(unsafe_code, reason = "the V4L2 streaming ioctls, mmap and poll")]
mod device;
mod format;
mod stamping;

pub use capture::{CaptureDevice, CapturedBuffer, DeviceError, OpenedDevice};
pub use device::V4l2Device;
use format::format_fps;
pub use format::{
    describe_offers, request_is_offered, CaptureRequest, FrameRates, FrameSizes, Interval,
    OfferedFormat, OfferedSize,
};
use stamping::StampMapper;
pub use stamping::STAMP_WINDOW;

/// How long one wait for a buffer lasts before the stop flag is checked again.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// How long one backoff sleep lasts before the stop flag is checked again.
const SLEEP_SLICE: Duration = Duration::from_millis(10);
/// Repeated warnings (skipped frames, failed reconnects) at most this often.
const WARN_INTERVAL: Duration = Duration::from_secs(5);

const FIX_MISSING: &str = "is the camera plugged in? `ls /dev/v4l/by-id` lists cameras by name \
                           and `v4l2-ctl --list-devices` lists their /dev/video nodes";
const FIX_PERMISSION: &str = "add the user to the `video` group (`sudo usermod -aG video $USER`, \
                              then log in again); in a container pass the device with \
                              `--device` and `--group-add video`";

// ---------------------------------------------------------------------------------------------
// The source

/// Exponential backoff between reopen attempts: `initial`, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 0.1 s doubling to 2 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

/// Settings of a [`V4l2Source`].
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Config {
    /// `/dev/videoN` or a `/dev/v4l/by-id/...` link (stable across reboots and replugging).
    pub path: PathBuf,
    /// Pixel format to ask for. Default YUYV.
    pub format: PixelFormat,
    /// Width. Default 640.
    pub width: u32,
    /// Height. Default 480.
    pub height: u32,
    /// Frames per second. Default 30.
    pub fps: u32,
    /// Memory-mapped buffers, 2 to 32. Default 4.
    pub buffers: u32,
    /// YUV matrix and range of YUYV cameras. Default BT.601 limited range.
    pub yuv: YuvEncoding,
    /// frame_id of the frames. Default `camera_optical_frame`.
    pub frame_id: String,
    /// Delays between reopen attempts after the camera is lost.
    pub reconnect: Backoff,
    /// No frame for this long counts as losing the camera (and reopens it). Default 5 s.
    pub stall_timeout: Duration,
}

impl V4l2Config {
    /// Defaults for the camera at `path`: YUYV 640x480 at 30 fps, 4 buffers.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        V4l2Config {
            path: path.into(),
            format: PixelFormat::Yuyv,
            width: crate::frame::DEFAULT_WIDTH as u32,
            height: crate::frame::DEFAULT_HEIGHT as u32,
            fps: 30,
            buffers: 4,
            yuv: YuvEncoding::default(),
            frame_id: crate::frame::DEFAULT_FRAME_ID.into(),
            reconnect: Backoff::default(),
            stall_timeout: Duration::from_secs(5),
        }
    }

    /// What is asked of the device.
    pub fn request(&self) -> CaptureRequest {
        CaptureRequest {
            format: self.format,
            width: self.width,
            height: self.height,
            fps: self.fps,
            buffers: self.buffers,
            stall_timeout: self.stall_timeout,
        }
    }

    /// Checks the settings; the error names the parameter and what is accepted.
    pub fn validate(&self) -> Result<(), SourceError> {
        let bad = |name: &'static str, value: String, reason: &str| SourceError::BadParameter {
            name,
            value,
            reason: reason.to_string(),
        };
        if self.path.as_os_str().is_empty() {
            return Err(bad(
                "path",
                String::new(),
                "give a device such as /dev/video0",
            ));
        }
        if self.width == 0 || self.height == 0 || self.width > 16_384 || self.height > 16_384 {
            return Err(bad(
                "size",
                format!("{}x{}", self.width, self.height),
                "width and height must be 1 to 16384",
            ));
        }
        if self.format == PixelFormat::Yuyv && !self.width.is_multiple_of(2) {
            return Err(bad(
                "width",
                self.width.to_string(),
                "YUYV needs an even width",
            ));
        }
        if self.fps == 0 || self.fps > 1000 {
            return Err(bad("fps", self.fps.to_string(), "must be 1 to 1000"));
        }
        if !(2..=32).contains(&self.buffers) {
            return Err(bad(
                "buffers",
                self.buffers.to_string(),
                "must be 2 to 32 (one is held while the others fill)",
            ));
        }
        if self.reconnect.initial.is_zero() || self.reconnect.max < self.reconnect.initial {
            return Err(bad(
                "reconnect",
                format!("{:?}", self.reconnect),
                "initial must be > 0 and max >= initial",
            ));
        }
        if self.stall_timeout < POLL_SLICE || self.stall_timeout > Duration::from_secs(3600) {
            return Err(bad(
                "stall_timeout",
                format!("{:?}", self.stall_timeout),
                "must be 0.1 s to 1 h",
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Outage {
    started: Instant,
    attempts: u32,
    delay: Duration,
    retry_warning: RateLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Streaming,
    Stopped,
}

/// A V4L2 camera as a [`FrameSource`]: RGB8 frames stamped with their capture time, skipping
/// corrupt buffers and riding out unplugs. See the module docs.
pub struct V4l2Source<D: CaptureDevice = V4l2Device> {
    config: V4l2Config,
    request: CaptureRequest,
    device: D,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    state: State,
    opened: Option<OpenedDevice>,
    converter: Option<Converter>,
    stats: SourceStats,
    outage: Option<Outage>,
    /// Driver sequence and our seq of the first frame since the last open.
    seq_origin: Option<(u32, u64)>,
    next_seq: u64,
    stamps: StampMapper,
    last_frame: Instant,
    skip_warning: RateLimit,
}

impl V4l2Source<V4l2Device> {
    /// A source for the camera in `config`, stamped on `clock`. Nothing is opened until
    /// [`FrameSource::start`].
    pub fn new(config: V4l2Config, clock: Arc<dyn Clock>) -> Result<Self, SourceError> {
        V4l2Source::with_device(config, V4l2Device::new(), clock)
    }
}

impl<D: CaptureDevice> V4l2Source<D> {
    /// A source reading from `device` (a fake one in tests).
    pub fn with_device(
        config: V4l2Config,
        device: D,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SourceError> {
        config.validate()?;
        Ok(V4l2Source {
            request: config.request(),
            config,
            device,
            clock,
            stop: Arc::new(AtomicBool::new(false)),
            state: State::Idle,
            opened: None,
            converter: None,
            stats: SourceStats::default(),
            outage: None,
            seq_origin: None,
            next_seq: 0,
            stamps: StampMapper::new(),
            last_frame: Instant::now(),
            skip_warning: RateLimit::new(WARN_INTERVAL),
        })
    }

    /// Share the pipeline's stop flag: once it is set, a blocked
    /// [`next_frame`](FrameSource::next_frame) returns `Ok(None)` within about 100 ms, also
    /// while waiting for a lost camera.
    pub fn with_stop_flag(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// The stop flag (set it from another thread to end a blocked `next_frame`).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// The settings.
    pub fn config(&self) -> &V4l2Config {
        &self.config
    }

    /// What the device reported when it was last opened.
    pub fn opened(&self) -> Option<&OpenedDevice> {
        self.opened.as_ref()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn path_display(&self) -> String {
        let path = self.config.path.display().to_string();
        match &self.opened {
            Some(o) if o.resolved_path != self.config.path => {
                format!("{path} ({})", o.resolved_path.display())
            }
            _ => path,
        }
    }

    fn source_error(&self, e: DeviceError) -> SourceError {
        let path = self.config.path.clone();
        match e {
            DeviceError::NotFound => SourceError::Missing {
                path,
                fix: FIX_MISSING.into(),
            },
            DeviceError::PermissionDenied => SourceError::PermissionDenied {
                path,
                fix: FIX_PERMISSION.into(),
            },
            DeviceError::FormatNotOffered { offered } => SourceError::FormatNotOffered {
                path,
                requested: self.request.to_string(),
                offered: describe_offers(&offered),
            },
            DeviceError::Lost { reason } => SourceError::Io {
                path,
                source: io::Error::other(reason),
            },
            DeviceError::Io(source) => SourceError::Io { path, source },
        }
    }

    fn opened_ok(&mut self, opened: OpenedDevice) -> Result<(), SourceError> {
        let converter = Converter::new(opened.layout)
            .map_err(|e| SourceError::FormatNotOffered {
                path: self.config.path.clone(),
                requested: self.request.to_string(),
                offered: e.to_string(),
            })?
            .with_yuv_encoding(self.config.yuv);
        if let Some(fps) = opened.fps {
            if (fps - self.config.fps as f64).abs() > 0.01 * self.config.fps as f64 {
                warn!(
                    "{}: asked for {} fps, the driver set {}",
                    self.config.path.display(),
                    self.config.fps,
                    format_fps(fps)
                );
            }
        }
        self.converter = Some(converter);
        self.opened = Some(opened);
        self.seq_origin = None;
        self.last_frame = Instant::now();
        Ok(())
    }

    /// The camera stopped working: close it and start an outage.
    fn lose(&mut self, reason: &str) {
        self.device.close();
        let at = self.clock.now();
        warn!(
            "{}: camera lost at {}.{:09} ({reason}); reopening every {:?} to {:?}",
            self.path_display(),
            at.sec(),
            at.nanosec(),
            self.config.reconnect.initial,
            self.config.reconnect.max,
        );
        self.outage = Some(Outage {
            started: Instant::now(),
            attempts: 0,
            delay: self.config.reconnect.initial,
            retry_warning: RateLimit::new(WARN_INTERVAL),
        });
    }

    /// Sleeps `d` in short slices; false if the stop flag was set meanwhile.
    fn sleep_unless_stopped(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            std::thread::sleep(SLEEP_SLICE.min(deadline - now));
        }
    }

    /// Reopens with backoff until the camera is back (`Ok(true)`) or the stop flag is set
    /// (`Ok(false)`).
    fn reconnect(&mut self) -> Result<bool, SourceError> {
        loop {
            let Some(delay) = self.outage.as_ref().map(|o| o.delay) else {
                return Ok(true);
            };
            if !self.sleep_unless_stopped(delay) {
                return Ok(false);
            }
            match self.device.open(&self.config.path, &self.request) {
                Ok(opened) => {
                    let Some(outage) = self.outage.take() else {
                        return Ok(true);
                    };
                    let length = outage.started.elapsed();
                    self.stats.outage += length;
                    self.stats.reconnects += 1;
                    self.opened_ok(opened)?;
                    info!(
                        "{}: camera back after {:.2} s ({} attempts)",
                        self.path_display(),
                        length.as_secs_f64(),
                        outage.attempts + 1
                    );
                    return Ok(true);
                }
                Err(e) => {
                    let max = self.config.reconnect.max;
                    let error = self.source_error(e);
                    let path = self.path_display();
                    if let Some(outage) = self.outage.as_mut() {
                        outage.attempts += 1;
                        outage.delay = (outage.delay * 2).min(max);
                        debug!("{path}: reopen attempt {} failed: {error}", outage.attempts);
                        // Unplugged is expected; anything else (permissions, another format
                        // now) the user should hear about, though not at every attempt.
                        if !matches!(error, SourceError::Missing { .. }) {
                            if let Some(held) = outage.retry_warning.allow() {
                                warn!("{path}: still cannot reopen ({held} more): {error}");
                            }
                        }
                    }
                }
            }
        }
    }
}

impl<D: CaptureDevice> FrameSource for V4l2Source<D> {
    fn describe(&self) -> String {
        format!("v4l2:{} {}", self.path_display(), self.request)
    }

    fn start(&mut self) -> Result<(), SourceError> {
        self.device.close();
        self.outage = None;
        match self.device.open(&self.config.path, &self.request) {
            Ok(opened) => self.opened_ok(opened)?,
            Err(e) => {
                self.state = State::Idle;
                return Err(self.source_error(e));
            }
        }
        info!("{}: streaming", self.describe());
        self.state = State::Streaming;
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        match self.state {
            State::Stopped => return Ok(None),
            State::Idle => self.start()?,
            State::Streaming => {}
        }
        loop {
            if self.stopping() {
                return Ok(None);
            }
            if self.outage.is_some() {
                if !self.reconnect()? {
                    return Ok(None);
                }
                continue;
            }
            let buffer = match self.device.next_buffer(POLL_SLICE) {
                Ok(Some(b)) => b,
                Ok(None) => {
                    if self.last_frame.elapsed() >= self.config.stall_timeout {
                        let reason = format!(
                            "no frame for {:.1} s",
                            self.last_frame.elapsed().as_secs_f64()
                        );
                        self.lose(&reason);
                    }
                    continue;
                }
                Err(e) => {
                    self.lose(&e.to_string());
                    continue;
                }
            };
            // The node-clock reading closest to the dequeue.
            let now = self.clock.now();
            self.last_frame = Instant::now();
            let (timestamp, sequence) = (buffer.timestamp, buffer.sequence);
            let Some(converter) = self.converter.as_mut() else {
                // Cannot happen: streaming implies an opened device with a converter.
                continue;
            };
            let mut rgb = Vec::with_capacity(converter.output_len());
            let converted = if buffer.error_flag {
                Err("the driver flagged the buffer as corrupt".to_string())
            } else {
                converter
                    .convert(buffer.data, &mut rgb)
                    .map_err(|e| e.to_string())
            };
            let layout = converter.layout();
            let mut origin = *self.seq_origin.get_or_insert((sequence, self.next_seq));
            if sequence.wrapping_sub(origin.0) > u32::MAX / 2 {
                // The driver's counter went backwards: count on from here.
                origin = (sequence, self.next_seq);
                self.seq_origin = Some(origin);
            }
            // Gaps in the driver's counter (frames it dropped, buffers we skipped) stay gaps.
            let seq = origin.1 + sequence.wrapping_sub(origin.0) as u64;
            // Keep our numbering increasing even if the driver's counter misbehaves.
            let seq = seq.max(self.next_seq);
            self.next_seq = seq + 1;
            if let Err(reason) = converted {
                self.stats.skipped += 1;
                if let Some(held) = self.skip_warning.allow() {
                    warn!(
                        "{}: skipped frame {seq} ({} skipped in all, {held} since the last \
                         warning): {reason}",
                        self.path_display(),
                        self.stats.skipped
                    );
                }
                continue;
            }
            let stamp = self.stamps.stamp(now, timestamp);
            trace!("frame {seq}: stamp {stamp:?}, buffer time {timestamp:?}");
            self.stats.frames += 1;
            return Ok(Some(Frame {
                width: layout.width as usize,
                height: layout.height as usize,
                rgb,
                stamp,
                seq,
                frame_id: self.config.frame_id.clone(),
                ground_truth: None,
            }));
        }
    }

    fn stop(&mut self) {
        self.device.close();
        if let Some(outage) = self.outage.take() {
            self.stats.outage += outage.started.elapsed();
        }
        self.state = State::Stopped;
    }

    fn stats(&self) -> SourceStats {
        let mut stats = self.stats.clone();
        if let Some(outage) = &self.outage {
            stats.outage += outage.started.elapsed();
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::format::tests::request;
    use super::*;
    #[test]
    fn rejects_bad_configs() {
        let good = V4l2Config::new("/dev/video0");
        assert!(good.validate().is_ok());
        type Edit = Box<dyn Fn(&mut V4l2Config)>;
        let cases: Vec<Edit> = vec![
            Box::new(|c| c.width = 0),
            Box::new(|c| c.width = 641),
            Box::new(|c| c.fps = 0),
            Box::new(|c| c.buffers = 1),
            Box::new(|c| c.buffers = 64),
            Box::new(|c| c.reconnect.initial = Duration::ZERO),
            Box::new(|c| c.reconnect.max = Duration::from_millis(1)),
            Box::new(|c| c.stall_timeout = Duration::from_millis(1)),
            Box::new(|c| c.path = PathBuf::new()),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut c = good.clone();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(
                matches!(e, SourceError::BadParameter { .. }),
                "case {i}: {e}"
            );
        }
    }

    #[test]
    fn real_device_errors_without_a_camera() {
        let clock: Arc<dyn Clock> = Arc::new(crate::frame::SystemClock);
        let mut src = V4l2Source::new(V4l2Config::new("/nonexistent/video0"), clock.clone())
            .expect("valid config");
        let e = src.start().unwrap_err();
        assert!(matches!(e, SourceError::Missing { .. }), "{e:?}");
        // /dev/null opens but is no capture device: it lists no formats.
        let mut src = V4l2Source::new(V4l2Config::new("/dev/null"), clock).expect("valid config");
        match src.start().unwrap_err() {
            SourceError::FormatNotOffered { offered, .. } => {
                assert!(offered.contains("no video capture formats"), "{offered}")
            }
            e => panic!("expected FormatNotOffered, got {e:?}"),
        }
    }

    #[test]
    fn nul_in_path_is_missing_not_a_panic() {
        let mut d = V4l2Device::new();
        let r = d.open(
            Path::new("/dev/vid\0eo0"),
            &request(PixelFormat::Yuyv, 640, 480, 30),
        );
        assert!(matches!(r, Err(DeviceError::NotFound)));
    }
}
