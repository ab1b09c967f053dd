//! `ros:TOPIC`: frames from a ROS 2 image topic. sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8,
//! mono8, yuv422_yuy2 / yuyv, yuv422 / uyvy) or, for a topic ending in `/compressed`,
//! sensor_msgs/CompressedImage (jpeg, png). The message's header stamp is the frame's capture
//! time; its frame_id is kept unless one is configured. A malformed message (step or size that
//! does not match, unknown encoding, undecodable data, a compressed image whose header claims
//! more than [`MAX_COMPRESSED_PIXELS`]) is counted as skipped and dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ros2_client::Subscription;

use super::convert::{Converter, FrameLayout, PixelFormat};
use super::{FrameSource, SourceError, SourceStats};
use crate::frame::{Frame, Stamp};
use crate::ros::msg::{CompressedImage, Image};
use crate::ros::node::{RosError, RosNode};
use crate::telemetry::RateLimit;

/// Largest image side accepted from a message.
const MAX_SIDE: u32 = super::convert::MAX_DIMENSION;

/// A decoded message: packed RGB8.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedImage {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Packed RGB8.
    pub rgb: Vec<u8>,
}

impl DecodedImage {
    /// The frame these pixels make (no ground truth).
    pub fn into_frame(self, stamp: Stamp, seq: u64, frame_id: String) -> Frame {
        Frame {
            width: self.width,
            height: self.height,
            rgb: self.rgb,
            stamp,
            seq,
            frame_id,
            ground_truth: None,
        }
    }
}

fn check_size(width: u32, height: u32) -> Result<(), String> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!(
            "size {width}x{height} is outside 1..{MAX_SIDE} pixels per side"
        ));
    }
    Ok(())
}

/// Convert a sensor_msgs/Image to RGB8, or say what is wrong with it.
pub fn decode_image(msg: &Image) -> Result<DecodedImage, String> {
    check_size(msg.width, msg.height)?;
    let (w, h) = (msg.width as usize, msg.height as usize);
    let step = msg.step as usize;
    let bpp = match msg.encoding.as_str() {
        "rgb8" | "bgr8" => 3,
        "rgba8" | "bgra8" => 4,
        "mono8" | "8UC1" => 1,
        "yuv422_yuy2" | "yuyv" | "yuv422" | "uyvy" => 2,
        other => {
            return Err(format!(
                "encoding {other:?} is not supported; publish rgb8, bgr8, rgba8, bgra8, mono8, yuv422_yuy2 (yuyv) or yuv422 (uyvy)"
            ))
        }
    };
    if step < w * bpp {
        return Err(format!(
            "step {step} is smaller than width {w} x {bpp} bytes per pixel for {}",
            msg.encoding
        ));
    }
    if msg.data.len() < step * (h - 1) + w * bpp {
        return Err(format!(
            "data has {} bytes, {}x{} {} with step {step} needs {}",
            msg.data.len(),
            w,
            h,
            msg.encoding,
            step * h
        ));
    }
    let row = |y: usize| &msg.data[y * step..y * step + w * bpp];
    let mut rgb = Vec::with_capacity(w * h * 3);
    match msg.encoding.as_str() {
        "rgb8" => (0..h).for_each(|y| rgb.extend_from_slice(row(y))),
        "bgr8" => (0..h).for_each(|y| {
            for p in row(y).chunks_exact(3) {
                rgb.extend_from_slice(&[p[2], p[1], p[0]]);
            }
        }),
        "rgba8" => (0..h).for_each(|y| {
            for p in row(y).chunks_exact(4) {
                rgb.extend_from_slice(&p[..3]);
            }
        }),
        "bgra8" => (0..h).for_each(|y| {
            for p in row(y).chunks_exact(4) {
                rgb.extend_from_slice(&[p[2], p[1], p[0]]);
            }
        }),
        _ => {
            // mono and YUV 4:2:2 go through the camera converter (same colour maths as V4L2).
            let (format, data): (PixelFormat, std::borrow::Cow<[u8]>) = match msg.encoding.as_str()
            {
                "mono8" | "8UC1" => (PixelFormat::Grey, msg.data.as_slice().into()),
                "yuv422" | "uyvy" => {
                    // UYVY -> YUYV: swap the bytes of each pair.
                    let mut swapped = msg.data.clone();
                    for pair in swapped.chunks_exact_mut(2) {
                        pair.swap(0, 1);
                    }
                    (PixelFormat::Yuyv, swapped.into())
                }
                _ => (PixelFormat::Yuyv, msg.data.as_slice().into()),
            };
            if format == PixelFormat::Yuyv && w % 2 == 1 {
                return Err(format!("YUV 4:2:2 needs an even width, got {w}"));
            }
            let layout = FrameLayout {
                format,
                width: msg.width,
                height: msg.height,
                bytes_per_line: msg.step,
            };
            let mut conv = Converter::new(layout).map_err(|e| e.to_string())?;
            conv.convert(&data, &mut rgb).map_err(|e| e.to_string())?;
        }
    }
    Ok(DecodedImage {
        width: w,
        height: h,
        rgb,
    })
}

/// Most pixels accepted from a compressed message (8K UHD, about 100 MB as RGB8): checked on
/// the header's size, before anything is allocated for the image.
pub const MAX_COMPRESSED_PIXELS: u64 = 7680 * 4320;

/// Refuse a header size beyond [`MAX_SIDE`] per side or [`MAX_COMPRESSED_PIXELS`] in all.
fn check_claimed_size(format: &str, width: u64, height: u64) -> Result<(), String> {
    if width == 0
        || height == 0
        || width > MAX_SIDE as u64
        || height > MAX_SIDE as u64
        || width * height > MAX_COMPRESSED_PIXELS
    {
        return Err(format!(
            "{format} header claims {width}x{height} pixels; at most {MAX_SIDE} per side and \
             {MAX_COMPRESSED_PIXELS} pixels in all are accepted"
        ));
    }
    Ok(())
}

/// Decode a sensor_msgs/CompressedImage (jpeg or png) to RGB8. The size in the image header is
/// checked before decoding (a few hundred bytes can claim gigabytes), see
/// [`MAX_COMPRESSED_PIXELS`].
pub fn decode_compressed(msg: &CompressedImage) -> Result<DecodedImage, String> {
    let f = msg.format.to_ascii_lowercase();
    let undecodable =
        |e: &dyn std::fmt::Display| format!("{} data does not decode: {e}", msg.format);
    if f.contains("png") {
        decode_png(&msg.data, &msg.format)
    } else if f.contains("jpeg") || f.contains("jpg") {
        // As for MJPEG frames: zune-jpeg refuses a header beyond the limits before allocating.
        let mut decoder = super::convert::limited_jpeg_decoder(&msg.data, MAX_SIDE, MAX_SIDE);
        // A side beyond MAX_SIDE is refused here ("... greater than width limit ...").
        decoder.decode_headers().map_err(|e| undecodable(&e))?;
        let (w, h) = decoder
            .dimensions()
            .ok_or_else(|| undecodable(&"no frame header"))?;
        check_claimed_size("jpeg", w as u64, h as u64)?;
        let rgb = decoder.decode().map_err(|e| undecodable(&e))?;
        if rgb.len() != w * h * 3 {
            return Err(undecodable(&format!(
                "{} bytes decoded for {w}x{h} RGB",
                rgb.len()
            )));
        }
        Ok(DecodedImage {
            width: w,
            height: h,
            rgb,
        })
    } else {
        Err(format!(
            "format {:?} is not supported; publish jpeg or png (image_transport compressed)",
            msg.format
        ))
    }
}

/// PNG through the image crate: the header is read first, its size checked, then the image
/// decoded (with the image crate's limits as a second line).
fn decode_png(data: &[u8], format: &str) -> Result<DecodedImage, String> {
    use image::ImageDecoder;
    let undecodable = |e: &dyn std::fmt::Display| format!("{format} data does not decode: {e}");
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // 16-bit RGBA (8 bytes a pixel) is the largest PNG pixel.
    limits.max_alloc = Some(MAX_COMPRESSED_PIXELS * 8);
    let mut decoder = image::codecs::png::PngDecoder::new(std::io::Cursor::new(data))
        .map_err(|e| undecodable(&e))?;
    let (w, h) = decoder.dimensions();
    check_claimed_size("png", w as u64, h as u64)?;
    decoder.set_limits(limits).map_err(|e| undecodable(&e))?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| undecodable(&e))?;
    let rgb = img.to_rgb8();
    Ok(DecodedImage {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        rgb: rgb.into_raw(),
    })
}

enum Sub {
    Raw(Subscription<Image>),
    Compressed(Subscription<CompressedImage>),
}

/// Frames from a ROS image topic.
pub struct RosImageSource {
    topic: String,
    sub: Sub,
    frame_id: Option<String>,
    stats: SourceStats,
    seq: u64,
    stop: Arc<AtomicBool>,
    warn: RateLimit,
    waiting_since: Option<Instant>,
}

impl std::fmt::Debug for RosImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RosImageSource")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl RosImageSource {
    /// Subscribe (sensor-data QoS: matches reliable and best-effort publishers). A topic ending
    /// in `/compressed` carries sensor_msgs/CompressedImage. `frame_id`: replaces the
    /// messages' frame_id when set.
    pub fn new(
        node: &mut RosNode,
        topic: &str,
        frame_id: Option<String>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, RosError> {
        let sub = if topic.ends_with("/compressed") {
            Sub::Compressed(node.subscription(topic, "sensor_msgs", "CompressedImage")?)
        } else {
            Sub::Raw(node.subscription(topic, "sensor_msgs", "Image")?)
        };
        Ok(RosImageSource {
            topic: topic.to_string(),
            sub,
            frame_id,
            stats: SourceStats::default(),
            seq: 0,
            stop,
            warn: RateLimit::new(Duration::from_secs(5)),
            waiting_since: None,
        })
    }

    fn take(&mut self) -> Option<Result<(DecodedImage, Stamp, String), String>> {
        let taken = match &self.sub {
            Sub::Raw(s) => s.take().map(|m| {
                m.map(|(msg, _)| {
                    (
                        decode_image(&msg),
                        Stamp::from(msg.header.stamp),
                        msg.header.frame_id,
                    )
                })
            }),
            Sub::Compressed(s) => s.take().map(|m| {
                m.map(|(msg, _)| {
                    (
                        decode_compressed(&msg),
                        Stamp::from(msg.header.stamp),
                        msg.header.frame_id,
                    )
                })
            }),
        };
        match taken {
            Ok(None) => None,
            Ok(Some((Ok(img), stamp, frame_id))) => Some(Ok((img, stamp, frame_id))),
            Ok(Some((Err(e), _, _))) => Some(Err(e)),
            Err(e) => Some(Err(format!("message does not deserialize: {e:?}"))),
        }
    }
}

impl FrameSource for RosImageSource {
    fn describe(&self) -> String {
        format!("ros:{}", self.topic)
    }

    fn start(&mut self) -> Result<(), SourceError> {
        self.waiting_since = Some(Instant::now());
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            match self.take() {
                None => {
                    if let Some(t) = self.waiting_since {
                        if t.elapsed() > Duration::from_secs(5) {
                            log::warn!("no image on ros:{} for 5 s yet; is the publisher up (ros2 topic info {})?", self.topic, self.topic);
                            self.waiting_since = None;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Some(Err(reason)) => {
                    self.stats.skipped += 1;
                    if let Some(n) = self.warn.allow() {
                        log::warn!(
                            "ros:{}: malformed image message skipped: {reason} ({n} more suppressed)",
                            self.topic
                        );
                    }
                }
                Some(Ok((img, stamp, frame_id))) => {
                    self.waiting_since = None;
                    self.stats.frames += 1;
                    self.seq += 1;
                    let frame_id = self.frame_id.clone().unwrap_or(frame_id);
                    return Ok(Some(img.into_frame(stamp, self.seq, frame_id)));
                }
            }
        }
    }

    fn stop(&mut self) {}

    fn stats(&self) -> SourceStats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ros::msg::Header;

    fn img(encoding: &str, w: u32, h: u32, step: u32, data: Vec<u8>) -> Image {
        Image {
            header: Header::default(),
            height: h,
            width: w,
            encoding: encoding.into(),
            is_bigendian: 0,
            step,
            data,
        }
    }

    #[test]
    fn colour_orders_and_padding() {
        // 2x1 with a 2-byte row padding.
        let rgb = decode_image(&img("rgb8", 2, 1, 8, vec![1, 2, 3, 4, 5, 6, 0, 0])).unwrap();
        assert_eq!(rgb.rgb, vec![1, 2, 3, 4, 5, 6]);
        let bgr = decode_image(&img("bgr8", 2, 1, 6, vec![3, 2, 1, 6, 5, 4])).unwrap();
        assert_eq!(bgr.rgb, vec![1, 2, 3, 4, 5, 6]);
        let mono = decode_image(&img("mono8", 2, 1, 2, vec![7, 9])).unwrap();
        assert_eq!(mono.rgb, vec![7, 7, 7, 9, 9, 9]);
        // Grey YUYV (Y=128, U=V=128) and the same as UYVY give the same mid grey.
        let yuyv = decode_image(&img("yuv422_yuy2", 2, 1, 4, vec![128, 128, 128, 128])).unwrap();
        let uyvy = decode_image(&img("yuv422", 2, 1, 4, vec![128, 128, 128, 128])).unwrap();
        assert_eq!(yuyv.rgb, uyvy.rgb);
        assert!(
            yuyv.rgb.iter().all(|&v| (120..=140).contains(&v)),
            "{:?}",
            yuyv.rgb
        );
    }

    #[test]
    fn malformed_messages_say_why() {
        let e = decode_image(&img("rgb8", 4, 2, 6, vec![0; 24])).unwrap_err();
        assert!(e.contains("step 6"), "{e}");
        let e = decode_image(&img("rgb8", 4, 2, 12, vec![0; 20])).unwrap_err();
        assert!(e.contains("data has 20 bytes"), "{e}");
        let e = decode_image(&img("bayer_rggb8", 4, 2, 4, vec![0; 8])).unwrap_err();
        assert!(e.contains("bayer_rggb8"), "{e}");
        let e = decode_image(&img("rgb8", 0, 2, 0, vec![])).unwrap_err();
        assert!(e.contains("size"), "{e}");
        let e = decode_compressed(&CompressedImage {
            header: Header::default(),
            format: "jpeg".into(),
            data: vec![1, 2, 3],
        })
        .unwrap_err();
        assert!(e.contains("does not decode"), "{e}");
    }

    /// Counts, for the threads that ask, the largest single allocation requested.
    #[allow(unsafe_code, reason = "a counting global allocator (test only)")]
    mod peak {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        pub struct Peak;

        thread_local! {
            static TRACK: Cell<bool> = const { Cell::new(false) };
            static LARGEST: Cell<usize> = const { Cell::new(0) };
        }

        fn note(size: usize) {
            // `try_with`: allocations during thread teardown are not tracked.
            let _ = TRACK.try_with(|t| {
                if t.get() {
                    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
                }
            });
        }

        // SAFETY: forwards to the system allocator; only records sizes.
        unsafe impl GlobalAlloc for Peak {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                // SAFETY: same contract as the caller's.
                unsafe { System.alloc(layout) }
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                // SAFETY: same contract as the caller's.
                unsafe { System.alloc_zeroed(layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                note(new_size);
                // SAFETY: same contract as the caller's.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: same contract as the caller's.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        /// Run `f` and return its result with the largest allocation it asked for.
        pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
            LARGEST.with(|l| l.set(0));
            TRACK.with(|t| t.set(true));
            let out = f();
            TRACK.with(|t| t.set(false));
            (out, LARGEST.with(|l| l.get()))
        }
    }

    #[global_allocator]
    static PEAK: peak::Peak = peak::Peak;

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A PNG whose header claims `w x h` RGB8 and whose data is a few bytes.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            let crc = crc32(&c[4..]);
            c.extend_from_slice(&crc.to_be_bytes());
            c
        };
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &ihdr));
        // zlib stream of one empty stored block.
        png.extend(chunk(
            b"IDAT",
            &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1],
        ));
        png.extend(chunk(b"IEND", &[]));
        png
    }

    /// A real 16x16 JPEG whose frame header (SOF0) is patched to claim `w x h`.
    fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::write_buffer_with_format(
            &mut std::io::Cursor::new(&mut jpeg),
            &vec![128u8; 16 * 16 * 3],
            16,
            16,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        let sof = jpeg
            .windows(2)
            .position(|m| m == [0xFF, 0xC0])
            .expect("a baseline JPEG has SOF0");
        // FFC0, length (2), precision (1), height (2), width (2).
        jpeg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        jpeg
    }

    #[test]
    fn huge_claimed_sizes_are_refused_before_allocating() {
        // No single allocation may come near what the headers claim (12000 x 12000 RGB is
        // 432 MB); the messages themselves are a few hundred bytes.
        const MAX_ALLOCATION: usize = 16 << 20;
        let cases = [
            ("png", png_claiming(12_000, 12_000)),
            ("png", png_claiming(20_000, 8)),
            ("jpeg", jpeg_claiming(12_000, 12_000)),
            ("jpeg", jpeg_claiming(20_000, 8)),
        ];
        for (format, data) in cases {
            let msg = CompressedImage {
                header: Header::default(),
                format: format.into(),
                data,
            };
            let (result, largest) = peak::largest_allocation(|| decode_compressed(&msg));
            let e = result
                .err()
                .unwrap_or_else(|| panic!("{format}: a huge image decoded"));
            assert!(
                largest <= MAX_ALLOCATION,
                "{format}: refused ({e}) only after allocating {largest} bytes"
            );
            // Refused on the pixel count, or by the decoder's per-side limit.
            assert!(e.contains("pixels") || e.contains("limit"), "{format}: {e}");
        }
        // A sane image still decodes (and the probe measures what it should).
        let (ok, largest) = peak::largest_allocation(|| {
            decode_compressed(&CompressedImage {
                header: Header::default(),
                format: "jpeg".into(),
                data: jpeg_claiming(16, 16),
            })
        });
        assert_eq!(ok.map(|d| (d.width, d.height)), Ok((16, 16)));
        assert!(largest >= 16 * 16 * 3, "the probe saw no allocation");
    }

    #[test]
    fn grey_jpeg_decodes_to_rgb() {
        let mut jpeg = Vec::new();
        image::write_buffer_with_format(
            &mut std::io::Cursor::new(&mut jpeg),
            &[90u8; 16 * 8],
            16,
            8,
            image::ExtendedColorType::L8,
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        let d = decode_compressed(&CompressedImage {
            header: Header::default(),
            format: "mono8; jpeg compressed mono8".into(),
            data: jpeg,
        })
        .unwrap();
        assert_eq!((d.width, d.height, d.rgb.len()), (16, 8, 16 * 8 * 3));
        assert!(
            d.rgb
                .chunks(3)
                .all(|p| p[0] == p[1] && p[1] == p[2] && p[0].abs_diff(90) <= 2),
            "{:?}",
            &d.rgb[..6]
        );
    }

    #[test]
    fn png_round_trips() {
        let mut png = Vec::new();
        let pixels = vec![10u8, 20, 30, 40, 50, 60];
        image::write_buffer_with_format(
            &mut std::io::Cursor::new(&mut png),
            &pixels,
            2,
            1,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .unwrap();
        let d = decode_compressed(&CompressedImage {
            header: Header::default(),
            format: "png".into(),
            data: png,
        })
        .unwrap();
        assert_eq!(d.rgb, pixels);
    }
}
