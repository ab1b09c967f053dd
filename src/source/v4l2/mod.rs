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
//! (`linuxvideo` for the device, our own memory-mapped stream for
//! buffer timestamps and sequence numbers) and `testing::FakeDevice` replays recorded buffers and fails on
//! demand, so all of the above is tested without a camera.
//!
//! # Capture stamps
//!
//! The kernel stamps each buffer with `CLOCK_MONOTONIC` when the frame was captured. The node's
//! clock is a different one (ROS time), and without `libc` we cannot read `CLOCK_MONOTONIC`
//! ourselves to relate the two at the moment of dequeueing. Instead the offset between the two
//! clocks is estimated from the stream: for every buffer, `clock.now() - buffer_time` right after
//! dequeueing is the offset plus how late we dequeued it, so the minimum over the last
//! [`STAMP_WINDOW`] buffers is the offset plus the smallest dequeue latency (well under a
//! millisecond when the capture thread waits on the device, which it does whenever it keeps up).
//! A buffer's stamp is `buffer_time + offset`: frames that waited in the queue keep their true,
//! earlier capture time, and a jump of the node clock is followed within one window. Drivers
//! that do not give monotonic timestamps get `clock.now()` at dequeue.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};

use super::convert::{fourcc_string, Converter, FrameLayout, PixelFormat, YuvEncoding};
use super::{FrameSource, SourceError, SourceStats};
use crate::frame::{Clock, Frame, Stamp};

/// How long one wait for a buffer lasts before the stop flag is checked again.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// How long one backoff sleep lasts before the stop flag is checked again.
const SLEEP_SLICE: Duration = Duration::from_millis(10);
/// Buffers over which the monotonic-to-node clock offset is estimated (about 2 s at 30 fps).
pub const STAMP_WINDOW: usize = 64;
/// Repeated warnings (skipped frames, failed reconnects) at most this often.
const WARN_INTERVAL: Duration = Duration::from_secs(5);

const FIX_MISSING: &str = "is the camera plugged in? `ls /dev/v4l/by-id` lists cameras by name \
                           and `v4l2-ctl --list-devices` lists their /dev/video nodes";
const FIX_PERMISSION: &str = "add the user to the `video` group (`sudo usermod -aG video $USER`, \
                              then log in again); in a container pass the device with \
                              `--device` and `--group-add video`";

// ---------------------------------------------------------------------------------------------
// What a device offers and what we ask for

/// What to ask the camera for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureRequest {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Number of memory-mapped buffers.
    pub buffers: u32,
    /// How long to wait for a frame before the stream counts as stalled.
    pub stall_timeout: Duration,
}

/// `YUYV 640x480 @ 30 fps`.
impl fmt::Display for CaptureRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}x{} @ {} fps",
            self.format, self.width, self.height, self.fps
        )
    }
}

/// A frame interval (seconds per frame) as V4L2 gives it: `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// Numerator.
    pub numerator: u32,
    /// Denominator.
    pub denominator: u32,
}

impl Interval {
    /// The interval of `fps` frames per second.
    pub const fn from_fps(fps: u32) -> Self {
        Interval {
            numerator: 1,
            denominator: fps,
        }
    }

    /// Frames per second; `None` for a zero interval.
    pub fn fps(self) -> Option<f64> {
        (self.numerator != 0).then(|| self.denominator as f64 / self.numerator as f64)
    }
}

/// Frame rates a device offers for one format and size.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameRates {
    /// A list of intervals.
    Discrete(Vec<Interval>),
    /// Any interval between `min` and `max` (shortest and longest).
    Stepwise {
        /// Shortest interval (highest rate).
        min: Interval,
        /// Longest interval (lowest rate).
        max: Interval,
    },
    /// The driver does not enumerate rates; any request is tried.
    Unknown,
}

/// Frame sizes a device offers for one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSizes {
    /// One size.
    Discrete {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// A range of sizes.
    Stepwise {
        /// Smallest width.
        min_width: u32,
        /// Largest width.
        max_width: u32,
        /// Width step.
        step_width: u32,
        /// Smallest height.
        min_height: u32,
        /// Largest height.
        max_height: u32,
        /// Height step.
        step_height: u32,
    },
}

impl FrameSizes {
    fn contains(&self, width: u32, height: u32) -> bool {
        fn in_steps(v: u32, min: u32, max: u32, step: u32) -> bool {
            v >= min && v <= max && (step <= 1 || (v - min).is_multiple_of(step))
        }
        match *self {
            FrameSizes::Discrete {
                width: w,
                height: h,
            } => (w, h) == (width, height),
            FrameSizes::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => {
                in_steps(width, min_width, max_width, step_width)
                    && in_steps(height, min_height, max_height, step_height)
            }
        }
    }
}

/// One size (or range of sizes) of a format, with its frame rates.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferedSize {
    /// The size.
    pub size: FrameSizes,
    /// The rates at that size.
    pub rates: FrameRates,
}

/// A pixel format a device offers, with its sizes and rates (what `v4l2-ctl --list-formats-ext`
/// shows).
#[derive(Debug, Clone, PartialEq)]
pub struct OfferedFormat {
    /// V4L2 FourCC (also formats we cannot convert, so the user sees everything).
    pub fourcc: [u8; 4],
    /// The driver's description, e.g. `YUYV 4:2:2`.
    pub description: String,
    /// Sizes; empty if the driver does not enumerate them (any size is tried).
    pub sizes: Vec<OfferedSize>,
}

impl OfferedFormat {
    /// An offer of one format at discrete sizes, each at the given frame rates.
    pub fn discrete(format: PixelFormat, sizes: &[(u32, u32)], fps: &[u32]) -> Self {
        OfferedFormat {
            fourcc: format.fourcc(),
            description: format.name().to_string(),
            sizes: sizes
                .iter()
                .map(|&(width, height)| OfferedSize {
                    size: FrameSizes::Discrete { width, height },
                    rates: FrameRates::Discrete(
                        fps.iter().map(|&f| Interval::from_fps(f)).collect(),
                    ),
                })
                .collect(),
        }
    }

    /// Whether this offer covers the request (format, size and rate).
    pub fn covers(&self, request: &CaptureRequest) -> bool {
        if self.fourcc != request.format.fourcc() {
            return false;
        }
        if self.sizes.is_empty() {
            return true;
        }
        self.sizes.iter().any(|s| {
            s.size.contains(request.width, request.height) && rate_offered(&s.rates, request.fps)
        })
    }
}

/// Whether `fps` is among `rates`, within 1 % (29.97 counts as 30).
fn rate_offered(rates: &FrameRates, fps: u32) -> bool {
    let fps = fps as f64;
    let close = |f: f64| (f - fps).abs() <= 0.01 * fps;
    match rates {
        FrameRates::Unknown => true,
        FrameRates::Discrete(list) => list.iter().filter_map(|i| i.fps()).any(close),
        FrameRates::Stepwise { min, max } => {
            let fastest = min.fps().unwrap_or(f64::INFINITY);
            let slowest = max.fps().unwrap_or(0.0);
            fps >= slowest * 0.99 && fps <= fastest * 1.01
        }
    }
}

/// Whether any of the offers covers the request.
pub fn request_is_offered(offered: &[OfferedFormat], request: &CaptureRequest) -> bool {
    offered.iter().any(|o| o.covers(request))
}

fn format_fps(fps: f64) -> String {
    if (fps - fps.round()).abs() < 0.005 {
        format!("{}", fps.round())
    } else {
        format!("{fps:.2}")
    }
}

/// One line per format: `YUYV (YUYV 4:2:2): 640x480 @ 30, 15 fps; 1280x720 @ 10 fps`.
pub fn describe_offers(offered: &[OfferedFormat]) -> String {
    if offered.is_empty() {
        return "no video capture formats (not a capture node? UVC cameras also create a \
                metadata node: try the camera's other /dev/videoN, see `v4l2-ctl --list-devices`)"
            .to_string();
    }
    let mut lines = Vec::new();
    for o in offered {
        let mut line = format!("{} ({})", fourcc_string(o.fourcc), o.description);
        if PixelFormat::from_fourcc(o.fourcc).is_none() {
            line.push_str(" [not supported here]");
        }
        let sizes: Vec<String> = o
            .sizes
            .iter()
            .map(|s| {
                let size = match s.size {
                    FrameSizes::Discrete { width, height } => format!("{width}x{height}"),
                    FrameSizes::Stepwise {
                        min_width,
                        max_width,
                        min_height,
                        max_height,
                        ..
                    } => format!("{min_width}x{min_height} to {max_width}x{max_height}"),
                };
                let rates = match &s.rates {
                    FrameRates::Unknown => String::new(),
                    FrameRates::Discrete(list) => {
                        let fps: Vec<String> = list
                            .iter()
                            .filter_map(|i| i.fps())
                            .map(format_fps)
                            .collect();
                        format!(" @ {} fps", fps.join(", "))
                    }
                    FrameRates::Stepwise { min, max } => format!(
                        " @ {} to {} fps",
                        format_fps(max.fps().unwrap_or(0.0)),
                        format_fps(min.fps().unwrap_or(0.0))
                    ),
                };
                format!("{size}{rates}")
            })
            .collect();
        if !sizes.is_empty() {
            line.push_str(": ");
            line.push_str(&sizes.join("; "));
        }
        lines.push(line);
    }
    lines.join(" | ")
}

// ---------------------------------------------------------------------------------------------
// The device trait

/// Why a device could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The device node does not exist (or its device is gone).
    #[error("no such device")]
    NotFound,
    /// We may not open it.
    #[error("permission denied")]
    PermissionDenied,
    /// It does not offer what was asked.
    #[error("format not offered")]
    FormatNotOffered {
        /// What it offers.
        offered: Vec<OfferedFormat>,
    },
    /// It was open and stopped working (unplugged, I/O error, stalled).
    #[error("device lost: {reason}")]
    Lost {
        /// What happened.
        reason: String,
    },
    /// Any other I/O failure while opening.
    #[error(transparent)]
    Io(io::Error),
}

/// What an opened device reports.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedDevice {
    /// The device node the path leads to (`/dev/video2` for a `/dev/v4l/by-id/...` link).
    pub resolved_path: PathBuf,
    /// The negotiated buffer layout.
    pub layout: FrameLayout,
    /// The frame rate the driver accepted, if it says.
    pub fps: Option<f64>,
}

/// One filled buffer.
#[derive(Debug, Clone, Copy)]
pub struct CapturedBuffer<'a> {
    /// The bytes the driver filled (`bytesused`).
    pub data: &'a [u8],
    /// Capture time on `CLOCK_MONOTONIC`, if the driver stamps buffers with it.
    pub timestamp: Option<Duration>,
    /// The driver's frame counter (restarts at each open; gaps are frames the driver dropped).
    pub sequence: u32,
    /// The driver flagged the buffer as corrupt (`V4L2_BUF_FLAG_ERROR`).
    pub error_flag: bool,
}

/// A capture device: the part of [`V4l2Source`] that talks to hardware.
pub trait CaptureDevice: Send {
    /// Opens `path` (closing whatever was open), negotiates `request` and starts streaming.
    fn open(&mut self, path: &Path, request: &CaptureRequest) -> Result<OpenedDevice, DeviceError>;

    /// Waits up to about `wait` for the next buffer; `Ok(None)` if none came (try again).
    /// After an error the device must be reopened.
    fn next_buffer(&mut self, wait: Duration) -> Result<Option<CapturedBuffer<'_>>, DeviceError>;

    /// Stops streaming and releases the device.
    fn close(&mut self);
}

mod device;
pub use device::V4l2Device;

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
            width: super::DEFAULT_WIDTH as u32,
            height: super::DEFAULT_HEIGHT as u32,
            fps: 30,
            buffers: 4,
            yuv: YuvEncoding::default(),
            frame_id: super::DEFAULT_FRAME_ID.into(),
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

/// Monotonic buffer time to node time; see the module docs.
#[derive(Debug, Clone)]
struct StampMapper {
    /// `now - buffer_time` in nanoseconds for the last buffers (a ring).
    offsets: [i128; STAMP_WINDOW],
    len: usize,
    next: usize,
}

impl StampMapper {
    fn new() -> Self {
        StampMapper {
            offsets: [0; STAMP_WINDOW],
            len: 0,
            next: 0,
        }
    }

    fn stamp(&mut self, now: Stamp, buffer_time: Option<Duration>) -> Stamp {
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

/// Logs at most once per interval, counting what it held back.
#[derive(Debug)]
struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    fn new() -> Self {
        RateLimit {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(held back since the last one)` when it is time to log again.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < WARN_INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
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
            skip_warning: RateLimit::new(),
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
            retry_warning: RateLimit::new(),
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
                            if let Some(held) = outage.retry_warning.ready() {
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
                if let Some(held) = self.skip_warning.ready() {
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

// ---------------------------------------------------------------------------------------------
// Test support

/// A fake camera and a manual clock for tests (here rather than under `tests/` so every
/// integration test and the pipeline's tests can use them).
#[doc(hidden)]
pub mod testing {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;

    use super::*;

    /// A clock that reads what it was set to.
    #[derive(Debug, Default)]
    pub struct ManualClock(AtomicU64);

    impl ManualClock {
        /// A clock reading `at`.
        pub fn new(at: Stamp) -> Self {
            ManualClock(AtomicU64::new(at.0))
        }

        /// Sets the time.
        pub fn set(&self, at: Stamp) {
            self.0.store(at.0, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Stamp {
            Stamp(self.0.load(Ordering::SeqCst))
        }
    }

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

        fn next_buffer(
            &mut self,
            wait: Duration,
        ) -> Result<Option<CapturedBuffer<'_>>, DeviceError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(format: PixelFormat, width: u32, height: u32, fps: u32) -> CaptureRequest {
        CaptureRequest {
            format,
            width,
            height,
            fps,
            buffers: 4,
            stall_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn matches_requests_against_offers() {
        let offers = vec![
            OfferedFormat::discrete(PixelFormat::Yuyv, &[(640, 480), (320, 240)], &[30, 15]),
            OfferedFormat {
                fourcc: *b"MJPG",
                description: "Motion-JPEG".into(),
                sizes: vec![OfferedSize {
                    size: FrameSizes::Stepwise {
                        min_width: 160,
                        max_width: 1920,
                        step_width: 16,
                        min_height: 120,
                        max_height: 1080,
                        step_height: 8,
                    },
                    rates: FrameRates::Stepwise {
                        min: Interval::from_fps(60),
                        max: Interval::from_fps(5),
                    },
                }],
            },
        ];
        let ok = [
            request(PixelFormat::Yuyv, 640, 480, 30),
            request(PixelFormat::Yuyv, 320, 240, 15),
            request(PixelFormat::Mjpeg, 1280, 720, 60),
            request(PixelFormat::Mjpeg, 160, 120, 5),
        ];
        for r in ok {
            assert!(request_is_offered(&offers, &r), "{r}");
        }
        let not = [
            request(PixelFormat::Yuyv, 640, 480, 60),
            request(PixelFormat::Yuyv, 1280, 720, 30),
            request(PixelFormat::Mjpeg, 1281, 720, 30),
            request(PixelFormat::Mjpeg, 1280, 720, 120),
            request(PixelFormat::Grey, 640, 480, 30),
        ];
        for r in not {
            assert!(!request_is_offered(&offers, &r), "{r}");
        }
        // 29.97 fps (1001/30000) counts as 30.
        let ntsc = OfferedFormat {
            sizes: vec![OfferedSize {
                size: FrameSizes::Discrete {
                    width: 640,
                    height: 480,
                },
                rates: FrameRates::Discrete(vec![Interval {
                    numerator: 1001,
                    denominator: 30000,
                }]),
            }],
            ..offers[0].clone()
        };
        assert!(ntsc.covers(&request(PixelFormat::Yuyv, 640, 480, 30)));
        let text = describe_offers(&offers);
        assert_eq!(
            text,
            "YUYV (yuyv): 640x480 @ 30, 15 fps; 320x240 @ 30, 15 fps | \
             MJPG (Motion-JPEG): 160x120 to 1920x1080 @ 5 to 60 fps"
        );
    }

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
