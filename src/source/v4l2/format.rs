//! What a V4L2 device offers and what we ask of it.
//!
//! [`CaptureRequest`] is what the source asks for (format, size, rate, buffers); the
//! `Offered*`, [`FrameSizes`] and [`FrameRates`] types describe what a driver enumerates (what
//! `v4l2-ctl --list-formats-ext` shows). [`request_is_offered`] matches the two (29.97 fps counts
//! as 30) and [`describe_offers`] writes the offers for an error message.

use std::fmt;
use std::time::Duration;

use crate::source::convert::{fourcc_string, PixelFormat};

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

/// `30` for whole rates, `29.97` otherwise.
pub(super) fn format_fps(fps: f64) -> String {
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

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;

    /// A request with the default buffer count and stall timeout (shared with the source's
    /// tests).
    pub(crate) fn request(
        format: PixelFormat,
        width: u32,
        height: u32,
        fps: u32,
    ) -> CaptureRequest {
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
}
