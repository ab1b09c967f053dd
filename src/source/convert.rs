//! Camera buffers to packed RGB8: YUYV, MJPEG, RGB24 and GREY.
//!
//! The conversions themselves come from maintained crates: YUYV through `yuvutils-rs` (BT.601
//! limited range by default, which is what UVC webcams send), MJPEG through `zune-jpeg`. What
//! this module adds is the checking around them, so that no buffer a camera (or a broken USB
//! cable) can produce makes us panic or read out of bounds:
//!
//! * every buffer is checked against the negotiated [`FrameLayout`] (width, height, stride)
//!   before it is touched, and a short one is a [`ConvertError::Truncated`];
//! * MJPEG frames are decoded in strict mode, so a truncated or corrupt frame is an error rather
//!   than a half-grey image, and a frame whose header disagrees with the negotiated size is a
//!   [`ConvertError::JpegSizeMismatch`];
//! * MJPEG frames without Huffman tables (many UVC cameras omit the DHT segment and rely on the
//!   standard tables of JPEG Annex K.3) get those tables inserted before decoding.
//!
//! A [`Converter`] is made once per negotiated layout and reused for every frame; it keeps its
//! scratch space, and the caller's output `Vec` is resized in place (no reallocation once it has
//! the capacity).

use std::fmt;
use std::str::FromStr;

use yuvutils_rs::{YuvPackedImage, YuvRange as UtilsRange, YuvStandardMatrix};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Largest width or height accepted (V4L2 drivers and `zune-jpeg` stop at 16384 too).
pub const MAX_DIMENSION: u32 = 16_384;

/// A camera pixel format we can convert to RGB8, with its V4L2 FourCC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PixelFormat {
    /// YUV 4:2:2 packed, `Y0 U Y1 V` (V4L2 `YUYV`), two bytes per pixel.
    Yuyv,
    /// Motion-JPEG: one baseline JPEG per frame (V4L2 `MJPG`).
    Mjpeg,
    /// Packed RGB, three bytes per pixel (V4L2 `RGB3`).
    Rgb24,
    /// 8-bit luminance (V4L2 `GREY`).
    Grey,
}

impl PixelFormat {
    /// Every format, in the order they are listed to users.
    pub const ALL: [PixelFormat; 4] = [
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
        PixelFormat::Rgb24,
        PixelFormat::Grey,
    ];

    /// The V4L2 FourCC (`YUYV`, `MJPG`, `RGB3`, `GREY`).
    pub const fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Rgb24 => *b"RGB3",
            PixelFormat::Grey => *b"GREY",
        }
    }

    /// The format with this V4L2 FourCC, if we can convert it.
    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| f.fourcc() == fourcc)
    }

    /// Bytes per pixel for uncompressed formats; `None` for MJPEG.
    pub const fn bytes_per_pixel(self) -> Option<usize> {
        match self {
            PixelFormat::Yuyv => Some(2),
            PixelFormat::Mjpeg => None,
            PixelFormat::Rgb24 => Some(3),
            PixelFormat::Grey => Some(1),
        }
    }

    /// The name accepted by [`FromStr`] (`yuyv`, `mjpeg`, `rgb24`, `grey`).
    pub const fn name(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Mjpeg => "mjpeg",
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Grey => "grey",
        }
    }
}

/// Shows the FourCC (`YUYV`), as `v4l2-ctl --list-formats` does.
impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fourcc_string(self.fourcc()))
    }
}

/// Parses a name or FourCC, case-insensitively: `yuyv`, `mjpeg`/`mjpg`, `rgb24`/`rgb3`,
/// `grey`/`gray`.
impl FromStr for PixelFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "yuyv" | "yuy2" => Ok(PixelFormat::Yuyv),
            "mjpeg" | "mjpg" => Ok(PixelFormat::Mjpeg),
            "rgb24" | "rgb3" => Ok(PixelFormat::Rgb24),
            "grey" | "gray" => Ok(PixelFormat::Grey),
            _ => Err(format!(
                "unknown pixel format {s:?}; use one of yuyv, mjpeg, rgb24, grey"
            )),
        }
    }
}

/// A FourCC as text, with non-printable bytes escaped (`YUYV`, `\x00ABC`).
pub fn fourcc_string(fourcc: [u8; 4]) -> String {
    fourcc
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// The YUV to RGB matrix of a YUYV camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvMatrix {
    /// ITU-R BT.601 (standard definition; what UVC webcams use whatever their resolution).
    #[default]
    Bt601,
    /// ITU-R BT.709 (HD video).
    Bt709,
}

/// The YUV value range of a YUYV camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvRange {
    /// "Studio" range: Y in 16..=235, Cb/Cr in 16..=240 (UVC webcams).
    #[default]
    Limited,
    /// Full range: Y, Cb, Cr in 0..=255.
    Full,
}

/// How a YUYV camera encodes colour. The default, BT.601 limited range, is what UVC webcams
/// send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct YuvEncoding {
    /// Matrix.
    pub matrix: YuvMatrix,
    /// Value range.
    pub range: YuvRange,
}

impl YuvEncoding {
    fn utils(self) -> (UtilsRange, YuvStandardMatrix) {
        let range = match self.range {
            YuvRange::Limited => UtilsRange::Limited,
            YuvRange::Full => UtilsRange::Full,
        };
        let matrix = match self.matrix {
            YuvMatrix::Bt601 => YuvStandardMatrix::Bt601,
            YuvMatrix::Bt709 => YuvStandardMatrix::Bt709,
        };
        (range, matrix)
    }
}

/// The layout of the buffers a camera delivers, as negotiated with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from the start of one row to the next (V4L2 `bytesperline`); 0 means packed rows.
    /// Ignored for MJPEG.
    pub bytes_per_line: u32,
}

impl FrameLayout {
    /// A layout with packed rows.
    pub const fn packed(format: PixelFormat, width: u32, height: u32) -> Self {
        FrameLayout {
            format,
            width,
            height,
            bytes_per_line: 0,
        }
    }
}

impl fmt::Display for FrameLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}x{}", self.format, self.width, self.height)?;
        if self.bytes_per_line != 0 && self.format != PixelFormat::Mjpeg {
            write!(f, " stride {}", self.bytes_per_line)?;
        }
        Ok(())
    }
}

/// Why a buffer could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The buffer is shorter than the layout needs (a frame cut short on the USB bus).
    #[error(
        "{format} buffer truncated: got {got} bytes, need {need} for {width}x{height} \
         stride {stride}"
    )]
    Truncated {
        /// Pixel format.
        format: PixelFormat,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes per line used.
        stride: usize,
        /// Bytes received.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The negotiated layout itself cannot be converted (zero size, stride too small, odd YUYV
    /// width, ...).
    #[error("cannot convert {layout}: {reason}")]
    BadLayout {
        /// The layout.
        layout: FrameLayout,
        /// Why, and what would work.
        reason: String,
    },
    /// The MJPEG frame is not a decodable JPEG (garbage, cut short, corrupt entropy data).
    #[error("corrupt JPEG frame ({len} bytes): {reason}")]
    CorruptJpeg {
        /// Size of the frame.
        len: usize,
        /// What the decoder said.
        reason: String,
    },
    /// The MJPEG frame decodes, but not to the negotiated size.
    #[error("JPEG frame is {got_width}x{got_height} but the negotiated size is {width}x{height}")]
    JpegSizeMismatch {
        /// Width in the JPEG header.
        got_width: usize,
        /// Height in the JPEG header.
        got_height: usize,
        /// Negotiated width.
        width: u32,
        /// Negotiated height.
        height: u32,
    },
    /// The YUV conversion library refused the buffer (a bug in our checks if it happens).
    #[error("YUV to RGB conversion failed: {reason}")]
    Yuv {
        /// What `yuvutils-rs` said.
        reason: String,
    },
}

impl ConvertError {
    /// Whether this is about one frame's content (skip the frame) rather than the layout
    /// (nothing will ever convert).
    pub fn is_frame_error(&self) -> bool {
        !matches!(self, ConvertError::BadLayout { .. })
    }
}

/// Converts a camera's buffers to packed RGB8, reusing its scratch space between frames.
#[derive(Debug, Clone)]
pub struct Converter {
    layout: FrameLayout,
    /// Effective bytes per line for uncompressed formats (the packed width when the layout
    /// says 0).
    stride: usize,
    /// Bytes of pixel data in one row (`width * bytes per pixel`).
    row_bytes: usize,
    yuv: YuvEncoding,
    /// MJPEG frames with the standard Huffman tables inserted.
    jpeg_scratch: Vec<u8>,
}

impl Converter {
    /// A converter for buffers of this layout, with BT.601 limited-range YUV.
    pub fn new(layout: FrameLayout) -> Result<Self, ConvertError> {
        let bad = |reason: String| ConvertError::BadLayout { layout, reason };
        if layout.width == 0 || layout.height == 0 {
            return Err(bad("width and height must be at least 1".into()));
        }
        if layout.width > MAX_DIMENSION || layout.height > MAX_DIMENSION {
            return Err(bad(format!(
                "width and height must be at most {MAX_DIMENSION}"
            )));
        }
        let (stride, row_bytes) = match layout.format.bytes_per_pixel() {
            None => (0, 0),
            Some(bpp) => {
                if layout.format == PixelFormat::Yuyv && !layout.width.is_multiple_of(2) {
                    return Err(bad(
                        "YUYV carries one U/V pair per two pixels, so the width must be even"
                            .into(),
                    ));
                }
                // Cannot overflow: width <= 16384 and bpp <= 3.
                let row_bytes = layout.width as usize * bpp;
                let stride = match layout.bytes_per_line as usize {
                    0 => row_bytes,
                    s if s < row_bytes => {
                        return Err(bad(format!(
                            "bytes per line {s} is less than width x {bpp} = {row_bytes}"
                        )))
                    }
                    s => s,
                };
                (stride, row_bytes)
            }
        };
        Ok(Converter {
            layout,
            stride,
            row_bytes,
            yuv: YuvEncoding::default(),
            jpeg_scratch: Vec::new(),
        })
    }

    /// Use this YUV matrix and range for YUYV buffers instead of BT.601 limited range.
    pub fn with_yuv_encoding(mut self, yuv: YuvEncoding) -> Self {
        self.yuv = yuv;
        self
    }

    /// The layout this converter expects.
    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    /// Size of the RGB8 output: `width * height * 3`.
    pub fn output_len(&self) -> usize {
        // Cannot overflow: both dimensions are at most 16384.
        self.layout.width as usize * self.layout.height as usize * 3
    }

    /// Bytes an uncompressed buffer needs: every row at the stride, except that the last row
    /// may stop after its pixels (drivers do not always pad the end of the buffer).
    pub fn min_buffer_len(&self) -> usize {
        if self.layout.format == PixelFormat::Mjpeg {
            return 0;
        }
        self.stride * (self.layout.height as usize - 1) + self.row_bytes
    }

    /// Converts one buffer to packed RGB8 in `rgb`, which is resized to
    /// [`output_len`](Self::output_len) (keeping its allocation). Extra bytes after the image
    /// (a driver's padding) are ignored. On error `rgb` holds unspecified pixels.
    pub fn convert(&mut self, data: &[u8], rgb: &mut Vec<u8>) -> Result<(), ConvertError> {
        rgb.resize(self.output_len(), 0);
        match self.layout.format {
            PixelFormat::Mjpeg => self.convert_mjpeg(data, rgb),
            PixelFormat::Yuyv => {
                let data = self.check_len(data)?;
                self.convert_yuyv(data, rgb)
            }
            PixelFormat::Rgb24 => {
                let data = self.check_len(data)?;
                for (src, dst) in rows(data, self.stride, self.row_bytes)
                    .zip(rgb.chunks_exact_mut(self.row_bytes))
                {
                    dst.copy_from_slice(src);
                }
                Ok(())
            }
            PixelFormat::Grey => {
                let data = self.check_len(data)?;
                let out_row = self.row_bytes * 3;
                for (src, dst) in
                    rows(data, self.stride, self.row_bytes).zip(rgb.chunks_exact_mut(out_row))
                {
                    for (&g, px) in src.iter().zip(dst.chunks_exact_mut(3)) {
                        px.fill(g);
                    }
                }
                Ok(())
            }
        }
    }

    /// The image part of an uncompressed buffer, or `Truncated`.
    fn check_len<'d>(&self, data: &'d [u8]) -> Result<&'d [u8], ConvertError> {
        let need = self.min_buffer_len();
        data.get(..need).ok_or(ConvertError::Truncated {
            format: self.layout.format,
            width: self.layout.width,
            height: self.layout.height,
            stride: self.stride,
            got: data.len(),
            need,
        })
    }

    fn convert_yuyv(&self, data: &[u8], rgb: &mut [u8]) -> Result<(), ConvertError> {
        let (range, matrix) = self.yuv.utils();
        let (width, height) = (self.layout.width, self.layout.height);
        let out_stride = width * 3;
        let yuv_err = |e: yuvutils_rs::YuvError| ConvertError::Yuv {
            reason: e.to_string(),
        };
        if self.stride == self.row_bytes {
            // yuvutils-rs wants exactly `2 * width * height` bytes for a packed image.
            let image = YuvPackedImage {
                yuy: data,
                yuy_stride: self.row_bytes as u32,
                width,
                height,
            };
            return yuvutils_rs::yuyv422_to_rgb(&image, rgb, out_stride, range, matrix)
                .map_err(yuv_err);
        }
        // Padded rows: yuvutils-rs 0.8 checks the buffer length against the packed size whatever
        // the stride, so convert row by row.
        for (src, dst) in
            rows(data, self.stride, self.row_bytes).zip(rgb.chunks_exact_mut(out_stride as usize))
        {
            let image = YuvPackedImage {
                yuy: src,
                yuy_stride: self.row_bytes as u32,
                width,
                height: 1,
            };
            yuvutils_rs::yuyv422_to_rgb(&image, dst, out_stride, range, matrix).map_err(yuv_err)?;
        }
        Ok(())
    }

    fn convert_mjpeg(&mut self, data: &[u8], rgb: &mut [u8]) -> Result<(), ConvertError> {
        let jpeg: &[u8] = match sos_without_dht(data) {
            Some(sos) => {
                // Cannot panic: `sos` is an index into `data` found by scanning it.
                let (head, scan) = data.split_at(sos);
                self.jpeg_scratch.clear();
                self.jpeg_scratch.extend_from_slice(head);
                self.jpeg_scratch.extend_from_slice(&STANDARD_DHT);
                self.jpeg_scratch.extend_from_slice(scan);
                &self.jpeg_scratch
            }
            None => data,
        };
        let corrupt = |e: zune_jpeg::errors::DecodeErrors| ConvertError::CorruptJpeg {
            len: data.len(),
            reason: e.to_string(),
        };
        let (width, height) = (self.layout.width, self.layout.height);
        let mut decoder = limited_jpeg_decoder(jpeg, width, height);
        decoder.decode_headers().map_err(corrupt)?;
        let (got_width, got_height) = decoder.dimensions().unwrap_or((0, 0));
        if (got_width, got_height) != (width as usize, height as usize) {
            return Err(ConvertError::JpegSizeMismatch {
                got_width,
                got_height,
                width,
                height,
            });
        }
        decoder.decode_into(rgb).map_err(corrupt)
    }
}

/// A strict RGB JPEG decoder that refuses, while reading the header and so before allocating
/// anything for the image, a width above `max_width` or a height above `max_height`: a corrupt
/// or hostile header can claim up to 65535 x 65535. Strict: a JPEG cut short is an error, not
/// an image whose bottom is grey.
pub(crate) fn limited_jpeg_decoder(
    jpeg: &[u8],
    max_width: u32,
    max_height: u32,
) -> JpegDecoder<ZCursor<&[u8]>> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true)
        .set_max_width(max_width as usize)
        .set_max_height(max_height as usize);
    JpegDecoder::new_with_options(ZCursor::new(jpeg), options)
}

/// The rows of an uncompressed image: `row_bytes` bytes every `stride` bytes. `data` must hold
/// the whole image (checked by `check_len`).
fn rows(data: &[u8], stride: usize, row_bytes: usize) -> impl Iterator<Item = &[u8]> {
    data.chunks(stride)
        .map(move |r| &r[..row_bytes.min(r.len())])
}

/// If the JPEG in `data` has no DHT segment before its first SOS, the offset of that SOS (where
/// the standard tables go). `None` when it has tables, or when it is too broken to tell (the
/// decoder then says what is wrong).
fn sos_without_dht(data: &[u8]) -> Option<usize> {
    if data.get(..2) != Some(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    loop {
        if *data.get(i)? != 0xFF {
            return None;
        }
        // Any number of 0xFF fill bytes may precede a marker.
        while data.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        match *data.get(i + 1)? {
            0xC4 => return None,    // DHT
            0xDA => return Some(i), // SOS without a DHT before it
            0xD9 => return None,    // EOI before any scan
            // Markers without a length: TEM, RSTn, SOI.
            0x01 | 0xD0..=0xD8 => i += 2,
            _ => {
                let len = u16::from_be_bytes([*data.get(i + 2)?, *data.get(i + 3)?]) as usize;
                if len < 2 {
                    return None;
                }
                i += 2 + len;
            }
        }
    }
}

/// The Huffman tables of JPEG (ITU-T T.81) Annex K.3 as one DHT segment: what MJPEG cameras
/// that omit DHT encode with (AVI1 / OpenDML convention). Checked in tests against the tables
/// libjpeg writes.
const STANDARD_DHT: [u8; 420] = [
    0xFF, 0xC4, 0x01, 0xA2, // DHT marker, length 418
    // Table K.3: luminance DC (class 0, id 0)
    0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
    // Table K.5: luminance AC (class 1, id 0)
    0x10, 0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01,
    0x7D, 0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
    0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1,
    0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27,
    0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
    0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6,
    0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4,
    0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7,
    0xF8, 0xF9, 0xFA, // Table K.4: chrominance DC (class 0, id 1)
    0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
    // Table K.6: chrominance AC (class 1, id 1)
    0x11, 0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02,
    0x77, 0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
    0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52,
    0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A,
    0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47,
    0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67,
    0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4,
    0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2,
    0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9,
    0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7,
    0xF8, 0xF9, 0xFA,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_round_trips() {
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
            assert_eq!(f.name().parse::<PixelFormat>(), Ok(f));
            assert_eq!(f.to_string().parse::<PixelFormat>(), Ok(f));
        }
        assert_eq!(PixelFormat::from_fourcc(*b"NV12"), None);
        assert!("h264".parse::<PixelFormat>().is_err());
        assert_eq!(fourcc_string([0, b'A', b'B', b'C']), "\\x00ABC");
    }

    #[test]
    fn standard_dht_segment_is_well_formed() {
        assert_eq!(&STANDARD_DHT[..2], &[0xFF, 0xC4]);
        let len = u16::from_be_bytes([STANDARD_DHT[2], STANDARD_DHT[3]]) as usize;
        assert_eq!(len + 2, STANDARD_DHT.len());
        // Four tables, each: class/id byte, 16 counts, then that many symbols.
        let mut i = 4;
        let mut ids = Vec::new();
        while i < STANDARD_DHT.len() {
            ids.push(STANDARD_DHT[i]);
            let n: usize = STANDARD_DHT[i + 1..i + 17]
                .iter()
                .map(|&c| c as usize)
                .sum();
            i += 17 + n;
        }
        assert_eq!(i, STANDARD_DHT.len());
        assert_eq!(ids, [0x00, 0x10, 0x01, 0x11]);
    }

    #[test]
    fn finds_missing_dht() {
        // SOI, APP0 (length 4), SOS.
        let no_dht = [0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2, 0xFF, 0xFF, 0xDA, 0, 2];
        assert_eq!(sos_without_dht(&no_dht), Some(9));
        let with_dht = [0xFF, 0xD8, 0xFF, 0xC4, 0, 2, 0xFF, 0xDA, 0, 2];
        assert_eq!(sos_without_dht(&with_dht), None);
        for broken in [
            &[][..],
            &[0xFF],
            &[0xFF, 0xD8],
            &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0],
        ] {
            assert_eq!(sos_without_dht(broken), None);
        }
    }

    #[test]
    fn rejects_bad_layouts() {
        let layout = |format, w, h, s| FrameLayout {
            format,
            width: w,
            height: h,
            bytes_per_line: s,
        };
        for l in [
            layout(PixelFormat::Yuyv, 0, 10, 0),
            layout(PixelFormat::Yuyv, 3, 10, 0),
            layout(PixelFormat::Yuyv, 4, 10, 7),
            layout(PixelFormat::Rgb24, 4, 10, 11),
            layout(PixelFormat::Grey, 20_000, 10, 0),
        ] {
            let e = Converter::new(l).unwrap_err();
            assert!(!e.is_frame_error(), "{e}");
        }
        assert!(Converter::new(layout(PixelFormat::Mjpeg, 4, 10, 0)).is_ok());
    }

    #[test]
    fn grey_and_strided_rgb() {
        let mut c = Converter::new(FrameLayout {
            format: PixelFormat::Grey,
            width: 2,
            height: 2,
            bytes_per_line: 3,
        })
        .unwrap();
        let mut out = Vec::new();
        // Last row without its padding byte is enough.
        c.convert(&[1, 2, 99, 3, 4], &mut out).unwrap();
        assert_eq!(out, [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);
        let e = c.convert(&[1, 2, 99, 3], &mut out).unwrap_err();
        assert!(
            matches!(
                e,
                ConvertError::Truncated {
                    got: 4,
                    need: 5,
                    ..
                }
            ),
            "{e}"
        );
    }
}
