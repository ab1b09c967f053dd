//! The real V4L2 camera behind [`CaptureDevice`].
//!
//! `linuxvideo` (pure Rust, no build script: no bindgen, libclang or kernel headers) opens the
//! device node, lists its formats, sizes and rates, negotiates the format and sets the frame
//! rate. Streaming is a small memory-mapped buffer queue of our own on the same file descriptor,
//! because linuxvideo's `ReadStream` does not hand out what the source needs from each buffer
//! (its capture timestamp, the clock that stamped it, its sequence number) and fixes the buffer
//! count. The two ioctl structs involved (`v4l2_requestbuffers`, `v4l2_buffer`) follow
//! `<linux/videodev2.h>` (the pointer-sized and `timeval` members make the layout follow the
//! target); their sizes are checked at compile time against the kernel's for 64- and 32-bit.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr::NonNull;
use std::time::Duration;

use linuxvideo::format::{FrameIntervals, FrameSizes as DriverSizes, PixFormat, PixelFormat};
use linuxvideo::{BufType, Device, Fract, VideoCaptureDevice};
use log::{debug, warn};

use super::{
    request_is_offered, CaptureDevice, CaptureRequest, CapturedBuffer, DeviceError, FrameRates,
    FrameSizes, Interval, OfferedFormat, OfferedSize, OpenedDevice,
};
use crate::source::convert::FrameLayout;

/// A V4L2 camera streaming through memory-mapped buffers.
#[derive(Default)]
pub struct V4l2Device {
    // Field order is drop order: the stream (mappings, STREAMOFF) before the file it uses.
    stream: Option<MmapStream>,
    device: Option<VideoCaptureDevice>,
}

impl V4l2Device {
    /// A closed device; [`CaptureDevice::open`] opens it.
    pub fn new() -> Self {
        V4l2Device::default()
    }
}

impl Drop for V4l2Device {
    fn drop(&mut self) {
        self.close();
    }
}

fn open_error(e: io::Error) -> DeviceError {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) | (_, Some(libc::ENODEV | libc::ENXIO)) => {
            DeviceError::NotFound
        }
        (io::ErrorKind::PermissionDenied, _) => DeviceError::PermissionDenied,
        (_, Some(libc::EBUSY)) => DeviceError::Io(io::Error::new(
            e.kind(),
            format!(
                "{e}: another program (a browser, cheese, another node) is streaming from this \
                 camera; close it"
            ),
        )),
        _ => DeviceError::Io(e),
    }
}

fn interval(f: Fract) -> Interval {
    Interval {
        numerator: f.numerator(),
        denominator: f.denominator(),
    }
}

fn rates_at(device: &Device, format: PixelFormat, width: u32, height: u32) -> FrameRates {
    match device.frame_intervals(format, width, height) {
        Ok(FrameIntervals::Discrete(list)) => {
            FrameRates::Discrete(list.iter().map(|i| interval(*i.fract())).collect())
        }
        Ok(FrameIntervals::Stepwise(s) | FrameIntervals::Continuous(s)) => FrameRates::Stepwise {
            min: interval(*s.min()),
            max: interval(*s.max()),
        },
        Err(_) => FrameRates::Unknown,
    }
}

/// Everything the device lists, as `v4l2-ctl --list-formats-ext` would. Enumeration failures
/// leave lists empty (meaning "try it") rather than failing the open.
fn enumerate(device: &Device) -> Vec<OfferedFormat> {
    let mut offered = Vec::new();
    for desc in device.formats(BufType::VIDEO_CAPTURE) {
        let Ok(desc) = desc else { break };
        let format = desc.pixel_format();
        let mut sizes = Vec::new();
        match device.frame_sizes(format) {
            Ok(DriverSizes::Discrete(list)) => {
                for d in list {
                    sizes.push(OfferedSize {
                        size: FrameSizes::Discrete {
                            width: d.width(),
                            height: d.height(),
                        },
                        rates: rates_at(device, format, d.width(), d.height()),
                    });
                }
            }
            Ok(DriverSizes::Stepwise(s) | DriverSizes::Continuous(s)) => sizes.push(OfferedSize {
                size: FrameSizes::Stepwise {
                    min_width: s.min_width(),
                    max_width: s.max_width(),
                    step_width: s.step_width(),
                    min_height: s.min_height(),
                    max_height: s.max_height(),
                    step_height: s.step_height(),
                },
                rates: FrameRates::Unknown,
            }),
            Err(_) => {}
        }
        offered.push(OfferedFormat {
            fourcc: format.as_fourcc(),
            description: desc.description().to_string(),
            sizes,
        });
    }
    offered
}

impl CaptureDevice for V4l2Device {
    fn open(&mut self, path: &Path, request: &CaptureRequest) -> Result<OpenedDevice, DeviceError> {
        self.close();
        if path.as_os_str().as_encoded_bytes().contains(&0) {
            // No device node has a NUL byte in its path.
            return Err(DeviceError::NotFound);
        }
        let resolved_path = std::fs::canonicalize(path).map_err(open_error)?;
        let device = Device::open(path).map_err(|e| match e.raw_os_error() {
            // VIDIOC_QUERYCAP refused: the node opens but is no V4L2 device (e.g. /dev/null,
            // a UVC metadata node on old kernels). It offers no capture formats.
            Some(libc::ENOTTY) => DeviceError::FormatNotOffered {
                offered: Vec::new(),
            },
            _ => open_error(e),
        })?;
        // linuxvideo panics on what a buggy driver may report (a format description that is not
        // UTF-8, an unknown frame size type): such a device lists nothing rather than taking the
        // capture thread down.
        let offered = catch_unwind(AssertUnwindSafe(|| enumerate(&device))).unwrap_or_else(|_| {
            warn!(
                "{}: the driver's format list is malformed; trying the request anyway",
                path.display()
            );
            Vec::new()
        });
        if !request_is_offered(&offered, request) {
            return Err(DeviceError::FormatNotOffered { offered });
        }
        let fourcc = PixelFormat::from_fourcc(request.format.fourcc());
        let capture = device
            .video_capture(PixFormat::new(request.width, request.height, fourcc))
            .map_err(DeviceError::Io)?;
        let format = capture.format();
        let (width, height, bytes_per_line) =
            (format.width(), format.height(), format.bytes_per_line());
        if (format.pixel_format(), width, height) != (fourcc, request.width, request.height) {
            // The driver adjusted the request to something else.
            return Err(DeviceError::FormatNotOffered { offered });
        }
        let fps = match capture.set_frame_interval(Fract::new(1, request.fps.max(1))) {
            Ok(f) => interval(f).fps(),
            Err(e) => {
                // Some drivers (v4l2loopback, some capture cards) have no frame rate control.
                debug!("{}: cannot set the frame rate: {e}", path.display());
                None
            }
        };
        let stream = MmapStream::start(capture.as_raw_fd(), request.buffers).map_err(open_error)?;
        self.stream = Some(stream);
        self.device = Some(capture);
        Ok(OpenedDevice {
            resolved_path,
            layout: FrameLayout {
                format: request.format,
                width,
                height,
                bytes_per_line,
            },
            fps,
        })
    }

    fn next_buffer(&mut self, wait: Duration) -> Result<Option<CapturedBuffer<'_>>, DeviceError> {
        let lost = |e: io::Error| DeviceError::Lost {
            reason: e.to_string(),
        };
        let Some(stream) = self.stream.as_mut() else {
            return Err(DeviceError::Lost {
                reason: "not open".into(),
            });
        };
        // The buffer lent out last time is done with (its borrow ended): give it back first.
        stream.requeue_held().map_err(lost)?;
        if !stream.wait_readable(wait).map_err(lost)? {
            return Ok(None);
        }
        let buffer = stream.dequeue().map_err(lost)?;
        let monotonic = buffer.flags & BUF_FLAG_TIMESTAMP_MASK == BUF_FLAG_TIMESTAMP_MONOTONIC;
        let timestamp = monotonic
            .then(|| timeval_duration(buffer.timestamp))
            .flatten();
        Ok(Some(CapturedBuffer {
            data: stream.data(&buffer),
            timestamp,
            sequence: buffer.sequence,
            error_flag: buffer.flags & BUF_FLAG_ERROR != 0,
        }))
    }

    fn close(&mut self) {
        // STREAMOFF and unmapping happen in the stream's drop, before the file closes.
        self.stream = None;
        self.device = None;
    }
}

/// `Some(duration)` for a valid `timeval`.
fn timeval_duration(ts: libc::timeval) -> Option<Duration> {
    let sec = u64::try_from(ts.tv_sec).ok()?;
    let usec = u32::try_from(ts.tv_usec).ok().filter(|&u| u < 1_000_000)?;
    Some(Duration::new(sec, usec * 1000))
}

// ---------------------------------------------------------------------------------------------
// Memory-mapped streaming (<linux/videodev2.h>)

const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const MEMORY_MMAP: u32 = 1;
const BUF_FLAG_ERROR: u32 = 0x0000_0040;
const BUF_FLAG_TIMESTAMP_MASK: u32 = 0x0000_e000;
const BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;

/// `struct v4l2_requestbuffers`.
#[repr(C)]
#[derive(Default)]
struct RequestBuffers {
    count: u32,
    type_: u32,
    memory: u32,
    capabilities: u32,
    flags: u8,
    reserved: [u8; 3],
}

/// `struct v4l2_timecode`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Timecode {
    type_: u32,
    flags: u32,
    frames: u8,
    seconds: u8,
    minutes: u8,
    hours: u8,
    userbits: [u8; 4],
}

/// The `m` union of `struct v4l2_buffer` (`offset` for MMAP; the pointer-sized members set its
/// size).
#[repr(C)]
#[derive(Clone, Copy)]
union BufferLocation {
    offset: u32,
    userptr: libc::c_ulong,
}

/// `struct v4l2_buffer`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Buffer {
    index: u32,
    type_: u32,
    bytesused: u32,
    flags: u32,
    field: u32,
    timestamp: libc::timeval,
    timecode: Timecode,
    sequence: u32,
    memory: u32,
    m: BufferLocation,
    length: u32,
    reserved2: u32,
    request_fd: u32,
}

impl Buffer {
    fn mmap(index: u32) -> Self {
        Buffer {
            index,
            type_: BUF_TYPE_VIDEO_CAPTURE,
            bytesused: 0,
            flags: 0,
            field: 0,
            timestamp: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            timecode: Timecode::default(),
            sequence: 0,
            memory: MEMORY_MMAP,
            m: BufferLocation { userptr: 0 },
            length: 0,
            reserved2: 0,
            request_fd: 0,
        }
    }
}

// The kernel's sizes: a layout mistake fails the build, not the camera.
const _: () = assert!(std::mem::size_of::<RequestBuffers>() == 20);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Buffer>() == 88);
#[cfg(target_pointer_width = "32")]
const _: () = assert!(std::mem::size_of::<Buffer>() == 68);

/// `_IOC(dir, 'V', nr, size)`: direction in the top bits, then the size, type and number.
const fn ioc(dir: u64, nr: u64, size: usize) -> libc::Ioctl {
    ((dir << IOC_DIR_SHIFT) | ((size as u64) << 16) | ((b'V' as u64) << 8) | nr) as libc::Ioctl
}
/// powerpc, mips and sparc encode the direction in 3 bits (write = 4); the others, in the
/// generic encoding (x86, arm, aarch64, riscv, ...), in 2 (write = 1). Read is 2 in both.
const IOC_THREE_DIRECTION_BITS: bool = cfg!(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6",
    target_arch = "sparc",
    target_arch = "sparc64"
));
const IOC_DIR_SHIFT: u64 = if IOC_THREE_DIRECTION_BITS { 29 } else { 30 };
const IOC_WRITE: u64 = if IOC_THREE_DIRECTION_BITS { 4 } else { 1 };
const IOC_READ_WRITE: u64 = IOC_WRITE | 2;
const VIDIOC_REQBUFS: libc::Ioctl = ioc(IOC_READ_WRITE, 8, std::mem::size_of::<RequestBuffers>());
const VIDIOC_QUERYBUF: libc::Ioctl = ioc(IOC_READ_WRITE, 9, std::mem::size_of::<Buffer>());
const VIDIOC_QBUF: libc::Ioctl = ioc(IOC_READ_WRITE, 15, std::mem::size_of::<Buffer>());
const VIDIOC_DQBUF: libc::Ioctl = ioc(IOC_READ_WRITE, 17, std::mem::size_of::<Buffer>());
const VIDIOC_STREAMON: libc::Ioctl = ioc(IOC_WRITE, 18, std::mem::size_of::<libc::c_int>());
const VIDIOC_STREAMOFF: libc::Ioctl = ioc(IOC_WRITE, 19, std::mem::size_of::<libc::c_int>());

/// `ioctl(fd, request, arg)`, retried on `EINTR`.
///
/// # Safety
/// `arg` must be the struct `request` expects.
unsafe fn ioctl<T>(fd: RawFd, request: libc::Ioctl, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: the caller pairs the request with its struct; `arg` is a live &mut.
        if unsafe { libc::ioctl(fd, request, arg as *mut T) } != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One driver buffer mapped into our memory.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

/// The driver's capture buffers, mapped, queued and streaming.
struct MmapStream {
    fd: RawFd,
    mappings: Vec<Mapping>,
    /// The buffer lent out by the last [`MmapStream::dequeue`], re-queued on the next call.
    held: Option<u32>,
}

// SAFETY: the mappings are plain shared memory owned by this stream; nothing else refers to
// them, and the file descriptor is owned by the `VideoCaptureDevice` beside it.
unsafe impl Send for MmapStream {}

impl MmapStream {
    /// REQBUFS + QUERYBUF/mmap + QBUF each + STREAMON on `fd`.
    fn start(fd: RawFd, count: u32) -> io::Result<Self> {
        let mut req = RequestBuffers {
            count,
            type_: BUF_TYPE_VIDEO_CAPTURE,
            memory: MEMORY_MMAP,
            ..RequestBuffers::default()
        };
        // SAFETY: VIDIOC_REQBUFS takes a v4l2_requestbuffers.
        unsafe { ioctl(fd, VIDIOC_REQBUFS, &mut req)? };
        if req.count == 0 {
            return Err(io::Error::other(
                "the driver granted no capture buffers (out of memory?)",
            ));
        }
        let mut stream = MmapStream {
            fd,
            mappings: Vec::with_capacity(req.count as usize),
            held: None,
        };
        for index in 0..req.count {
            let mut buf = Buffer::mmap(index);
            // SAFETY: VIDIOC_QUERYBUF takes a v4l2_buffer.
            unsafe { ioctl(fd, VIDIOC_QUERYBUF, &mut buf)? };
            let len = buf.length as usize;
            // SAFETY: for MMAP buffers the driver set `m.offset`.
            let offset = unsafe { buf.m.offset };
            // SAFETY: maps `len` bytes of the driver's buffer at the offset it gave; checked below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    offset as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let ptr = NonNull::new(ptr.cast::<u8>())
                .ok_or_else(|| io::Error::other("mmap returned a null buffer"))?;
            // Pushed at once so that drop unmaps it should a later step fail.
            stream.mappings.push(Mapping { ptr, len });
        }
        for index in 0..req.count {
            stream.queue(index)?;
        }
        let mut kind = BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        // SAFETY: VIDIOC_STREAMON takes the buffer type as an int.
        unsafe { ioctl(fd, VIDIOC_STREAMON, &mut kind)? };
        Ok(stream)
    }

    fn queue(&mut self, index: u32) -> io::Result<()> {
        let mut buf = Buffer::mmap(index);
        // SAFETY: VIDIOC_QBUF takes a v4l2_buffer.
        unsafe { ioctl(self.fd, VIDIOC_QBUF, &mut buf) }
    }

    fn requeue_held(&mut self) -> io::Result<()> {
        match self.held.take() {
            Some(index) => self.queue(index),
            None => Ok(()),
        }
    }

    /// Waits up to `wait` for a filled buffer (or an error, which DQBUF then reports).
    fn wait_readable(&self, wait: Duration) -> io::Result<bool> {
        let mut fds = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut fds, 1, ms) } {
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
            0 => Ok(false),
            _ => Ok(true),
        }
    }

    /// Takes the next filled buffer from the driver; it stays ours until the next call.
    fn dequeue(&mut self) -> io::Result<Buffer> {
        let mut buf = Buffer::mmap(0);
        // SAFETY: VIDIOC_DQBUF takes a v4l2_buffer.
        unsafe { ioctl(self.fd, VIDIOC_DQBUF, &mut buf)? };
        if buf.index as usize >= self.mappings.len() {
            return Err(io::Error::other(format!(
                "the driver returned buffer {} of {}",
                buf.index,
                self.mappings.len()
            )));
        }
        self.held = Some(buf.index);
        Ok(buf)
    }

    /// The bytes the driver filled in `buf` (`bytesused`, within the mapping).
    fn data(&self, buf: &Buffer) -> &[u8] {
        let Some(m) = self.mappings.get(buf.index as usize) else {
            return &[];
        };
        let used = (buf.bytesused as usize).min(m.len);
        // SAFETY: the mapping is `m.len` bytes, alive while `self` is, and dequeued (the driver
        // does not write it until it is queued again, which needs `&mut self`).
        unsafe { std::slice::from_raw_parts(m.ptr.as_ptr(), used) }
    }
}

impl Drop for MmapStream {
    fn drop(&mut self) {
        let mut kind = BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        // SAFETY: VIDIOC_STREAMOFF takes the buffer type as an int. It dequeues every buffer;
        // failure (an unplugged camera) leaves nothing for us to do but unmap.
        if let Err(e) = unsafe { ioctl(self.fd, VIDIOC_STREAMOFF, &mut kind) } {
            if e.raw_os_error() != Some(libc::ENODEV) {
                debug!("VIDIOC_STREAMOFF failed: {e}");
            }
        }
        for m in self.mappings.drain(..) {
            // SAFETY: unmaps exactly what `start` mapped, once.
            unsafe { libc::munmap(m.ptr.as_ptr().cast(), m.len) };
        }
        let mut req = RequestBuffers {
            count: 0,
            type_: BUF_TYPE_VIDEO_CAPTURE,
            memory: MEMORY_MMAP,
            ..RequestBuffers::default()
        };
        // SAFETY: VIDIOC_REQBUFS takes a v4l2_requestbuffers; count 0 frees the buffers.
        let _ = unsafe { ioctl(self.fd, VIDIOC_REQBUFS, &mut req) };
    }
}
