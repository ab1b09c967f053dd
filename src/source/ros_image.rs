//! `ros:TOPIC`: frames from a ROS 2 image topic. sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8,
//! mono8, yuv422_yuy2 / yuyv, yuv422 / uyvy) or, for a topic ending in `/compressed`,
//! sensor_msgs/CompressedImage (jpeg, png). The message's header stamp is the frame's capture
//! time; its frame_id is kept unless one is configured. A malformed message (step or size that
//! does not match, unknown encoding, undecodable data) is counted as skipped and dropped.

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

/// Decode a sensor_msgs/CompressedImage (jpeg or png) to RGB8.
pub fn decode_compressed(msg: &CompressedImage) -> Result<DecodedImage, String> {
    let f = msg.format.to_ascii_lowercase();
    let format = if f.contains("png") {
        image::ImageFormat::Png
    } else if f.contains("jpeg") || f.contains("jpg") {
        image::ImageFormat::Jpeg
    } else {
        return Err(format!(
            "format {:?} is not supported; publish jpeg or png (image_transport compressed)",
            msg.format
        ));
    };
    let img = image::load_from_memory_with_format(&msg.data, format)
        .map_err(|e| format!("{} data does not decode: {e}", msg.format))?;
    check_size(img.width(), img.height())?;
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
                    return Ok(Some(Frame {
                        width: img.width,
                        height: img.height,
                        rgb: img.rgb,
                        stamp,
                        seq: self.seq,
                        frame_id: self.frame_id.clone().unwrap_or(frame_id),
                        ground_truth: None,
                    }));
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
