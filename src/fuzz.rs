//! Fuzz targets: one function per target, each feeding arbitrary bytes to the parser the node
//! itself runs on that input. Whatever the bytes, none may panic: an error is the right answer
//! to garbage and is ignored here; a panic is a bug in the parser, fixed there, with the input
//! kept in `fuzz/regressions/<target>/`.
//!
//! `fuzz/` runs these under libFuzzer (`scripts/fuzz.sh`); `tests/fuzz_corpus.rs` replays the
//! seed corpora and the regressions on every `cargo test`. Sizes are bounded here so that one
//! input cannot allocate more than a few MB: limits of the harness (fuzzing speed and memory),
//! not of the parsers, whose own limits are larger and tested with the parsers.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::bag::reader::{topics_of_bytes, Messages};
use crate::calibration::{CameraCalibration, RayTable, Undistorter};
use crate::config::{NodeEnv, RunFlags};
use crate::heads::anomaly::{BankManifest, MemoryBank};
use crate::heads::HeadManifest;
use crate::model::Manifest;
use crate::ros::args::{split_ros_args, RosArgs};
use crate::ros::cdr;
use crate::ros::msg::{CompressedImage, Image, RosMessage};
use crate::ros::node::DEFAULT_NODE_NAME;
use crate::ros::params::{parse_params_file, ParamTable};
use crate::source::convert::{
    Converter, FrameLayout, PixelFormat, YuvEncoding, YuvMatrix, YuvRange,
};
use crate::source::mcap::{choose_topic, decode_recorded};
use crate::source::ros_image::{decode_compressed, decode_image};

/// Most pixels an image may have for the harness to decode it (3 MB as RGB8).
pub const MAX_PIXELS: u64 = 1 << 20;
/// Most pixels for which a calibration's undistortion map and ray table are built.
pub const MAX_CALIBRATION_PIXELS: u64 = 1 << 12;
/// Most float32 values a memory bank may claim (4 MB).
pub const MAX_BANK_VALUES: u64 = 1 << 20;
/// Most bytes of a bank `.npz` (deflated entries inflate up to ~1000x).
pub const MAX_NPZ_BYTES: usize = 16 << 10;
/// Most messages read from one MCAP input.
pub const MAX_MESSAGES: usize = 256;

/// The node's declared parameters with every flag at its default.
fn declared_params() -> Option<ParamTable> {
    crate::config::params::declare(&RunFlags::default()).ok()
}

/// Camera buffers through [`Converter`] (YUYV, MJPEG, RGB24, GREY), as V4L2 capture does.
/// Bytes 0..7 are the negotiated layout: byte 0 picks the format (bits 0-1), the YUV matrix
/// (bit 2) and range (bit 3); then width, height and bytes per line as little-endian u16
/// (layouts over [`MAX_PIXELS`] are skipped); the rest is the buffer, converted twice with
/// the same converter and output (scratch space reused).
pub fn frame_conversion(data: &[u8]) {
    let Some((head, buffer)) = data.split_first_chunk::<7>() else {
        return;
    };
    let u16_at = |i: usize| u32::from(u16::from_le_bytes([head[i], head[i + 1]]));
    let format = PixelFormat::ALL[usize::from(head[0] & 3)];
    let yuv = YuvEncoding {
        matrix: if head[0] & 4 == 0 {
            YuvMatrix::Bt601
        } else {
            YuvMatrix::Bt709
        },
        range: if head[0] & 8 == 0 {
            YuvRange::Limited
        } else {
            YuvRange::Full
        },
    };
    let layout = FrameLayout {
        format,
        width: u16_at(1),
        height: u16_at(3),
        bytes_per_line: u16_at(5),
    };
    if u64::from(layout.width) * u64::from(layout.height) > MAX_PIXELS {
        return;
    }
    let Ok(converter) = Converter::new(layout) else {
        return;
    };
    let mut converter = converter.with_yuv_encoding(yuv);
    let mut rgb = Vec::new();
    for _ in 0..2 {
        let _ = converter.convert(buffer, &mut rgb);
    }
}

/// camera_info YAML (camera_calibration's format) through [`CameraCalibration::from_yaml_str`],
/// which parses and validates, as `--calibration` files are read (input that is not UTF-8 is
/// refused by the loader before parsing, so it is skipped). A calibration that validates is then
/// used: projection, undistortion of a pixel, and (up to [`MAX_CALIBRATION_PIXELS`]) the
/// undistortion map and ray table.
pub fn camera_info_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cal) = CameraCalibration::from_yaml_str(text, Path::new("fuzz/camera_info.yaml")) else {
        return;
    };
    let (w, h) = (cal.width(), cal.height());
    let _ = cal.project([0.25, -0.5, 1.0]);
    let _ = cal.undistort_pixel(0.0, 0.0);
    let _ = cal.undistort_pixel(w as f64 / 2.0, h as f64 / 2.0);
    let _ = cal.rectified_intrinsics();
    if (w as u64) * (h as u64) <= MAX_CALIBRATION_PIXELS {
        let undistorter = Undistorter::new(&cal);
        let src = vec![128u8; w * h * 3];
        let mut dst = vec![0u8; w * h * 3];
        let _ = undistorter.apply(&src, &mut dst);
        let rays = RayTable::new(&cal, true);
        let _ = rays.ray(w / 2, h / 2);
    }
}

/// A ROS 2 parameter file (`--params-file`, `ros__parameters` YAML) through
/// [`parse_params_file`], for the node's default name in the root namespace; each parameter it
/// yields that the node declares is then checked against its declaration (type, range,
/// read-only), as start-up does.
pub fn params_yaml(data: &[u8]) {
    let origin = Path::new("fuzz/params.yaml");
    let Ok(values) = parse_params_file(data, origin, DEFAULT_NODE_NAME, "/") else {
        return;
    };
    let Some(table) = declared_params() else {
        return;
    };
    for (name, value) in values {
        if table.spec(&name).is_some() {
            let _ = table.check(&name, value);
        }
    }
}

/// A command line through [`split_ros_args`] and [`RosArgs::parse`] (tokens: the input as
/// lossy UTF-8 split at NUL bytes and newlines, after the program name), then the whole
/// configuration resolved from them ([`crate::config::resolve`]: node name and namespace,
/// remaps, `-p` values parsed as YAML and checked, `validate()`), with the default flags and an
/// empty environment. `--params-file` names are dropped: files are not fuzz input (their
/// parser is the `params_yaml` target).
pub fn ros_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let argv = std::iter::once(DEFAULT_NODE_NAME.to_string())
        .chain(text.split(['\0', '\n']).map(str::to_string));
    let (_plain, tokens) = split_ros_args(argv);
    let Ok(mut ros) = RosArgs::parse(&tokens, DEFAULT_NODE_NAME) else {
        return;
    };
    ros.params_files.clear();
    let env = NodeEnv {
        vars: BTreeMap::new(),
    };
    let _ = crate::config::resolve(&RunFlags::default(), &ros, &env);
}

/// An incoming sensor_msgs/Image payload (4-byte encapsulation header + CDR, as the `ros:`
/// source receives it) decoded with [`cdr::decode`] then converted by [`decode_image`]. The
/// output is bounded by the input (the data must hold `step * height` bytes).
pub fn image_cdr(data: &[u8]) {
    if let Ok(msg) = cdr::decode::<Image>(data) {
        let _ = decode_image(&msg);
    }
}

/// An incoming sensor_msgs/CompressedImage payload (encapsulation header + CDR) decoded with
/// [`cdr::decode`] then [`decode_compressed`] (jpeg / png). Images whose header claims more
/// than [`MAX_PIXELS`] are skipped before decoding.
pub fn compressed_image_cdr(data: &[u8]) {
    if let Ok(msg) = cdr::decode::<CompressedImage>(data) {
        if compressed_fits(&msg) {
            let _ = decode_compressed(&msg);
        }
    }
}

/// Whether the size a compressed image's header claims is within [`MAX_PIXELS`] (also when it
/// has no readable header: the decoder then fails without allocating for the image). Looks at
/// `format` the way [`decode_compressed`] does.
fn compressed_fits(msg: &CompressedImage) -> bool {
    use image::ImageDecoder;
    let f = msg.format.to_ascii_lowercase();
    let dims = if f.contains("png") {
        image::codecs::png::PngDecoder::new(Cursor::new(msg.data.as_slice()))
            .ok()
            .map(|d| {
                let (w, h) = d.dimensions();
                (u64::from(w), u64::from(h))
            })
    } else if f.contains("jpeg") || f.contains("jpg") {
        let side = u32::from(u16::MAX);
        let mut d = crate::source::convert::limited_jpeg_decoder(&msg.data, side, side);
        d.decode_headers()
            .ok()
            .and_then(|()| d.dimensions())
            .map(|(w, h)| (w as u64, h as u64))
    } else {
        None
    };
    dims.is_none_or(|(w, h)| w * h <= MAX_PIXELS)
}

/// A parameter-service request payload (the sample's bytes after the encapsulation header)
/// through [`crate::ros::services::decode_request_payload`], which tells the Enhanced (bare
/// request) and Cyclone (16-byte header + request) layouts apart as the services do. Byte 0:
/// bit 0 = CDR big-endian, bit 1 = the sample carried a `related_sample_identity`; the rest is
/// the payload, decoded as each of the five request types. Parameters of a set request are then
/// converted and checked against the node's declarations, as `set_parameters` does.
pub fn parameter_request(data: &[u8]) {
    use crate::ros::services::decode_request_payload;
    use ros2_client::rcl_interfaces::{
        DescribeParametersRequest, GetParameterTypesRequest, GetParametersRequest,
        ListParametersRequest, SetParametersRequest,
    };
    let Some((&flags, payload)) = data.split_first() else {
        return;
    };
    let (be, related) = (flags & 1 != 0, flags & 2 != 0);
    let _ = decode_request_payload::<ListParametersRequest>(payload, be, related);
    let _ = decode_request_payload::<GetParametersRequest>(payload, be, related);
    let _ = decode_request_payload::<GetParameterTypesRequest>(payload, be, related);
    let _ = decode_request_payload::<DescribeParametersRequest>(payload, be, related);
    if let Ok((_, req)) = decode_request_payload::<SetParametersRequest>(payload, be, related) {
        let Some(table) = declared_params() else {
            return;
        };
        for p in req.parameter {
            let value = ros2_client::ParameterValue::from(p.value);
            if table.spec(&p.name).is_some() {
                let _ = table.check(&p.name, value);
            }
        }
    }
}

/// The JSON manifests, with the parsers their loaders use. Byte 0 picks (mod 3): 0 the
/// backbone manifest ([`Manifest::parse`]), 1 a head manifest ([`HeadManifest::parse`], with
/// its validation), 2 a memory bank: `<bank.json>` NUL `<bank.npz bytes>` through
/// [`BankManifest::parse`] then [`MemoryBank::from_npz_bytes`] (shape, dtype, finite unit
/// rows). For the bank the harness writes the npz's real sha256 into the manifest (the
/// checksum guards against damage; fuzzing it only stops the fuzzer there) and skips banks
/// claiming more than [`MAX_BANK_VALUES`] values or npz parts over [`MAX_NPZ_BYTES`]. Text that
/// is not UTF-8 is refused by the loaders before parsing, so it is skipped.
pub fn manifests(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(m) = Manifest::parse(text, Path::new("fuzz/backbone.json")) {
                    let _ = m.is_identity(m.identity_sha256());
                }
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(m) = HeadManifest::parse(text, Path::new("fuzz/head.json")) {
                    let _ = m.needed_layers();
                }
            }
        }
        _ => {
            let (json, npz) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let Ok(text) = std::str::from_utf8(json) else {
                return;
            };
            let (json_path, npz_path) = (Path::new("fuzz.bank.json"), Path::new("fuzz.bank.npz"));
            let Ok(mut manifest) = BankManifest::parse(text, json_path) else {
                return;
            };
            let values =
                (manifest.patches as u64).checked_mul(manifest.backbone.hidden_size as u64);
            // An overflowing claim cannot be allocated for: let it through to the checks.
            if values.is_some_and(|v| v > MAX_BANK_VALUES) || npz.len() > MAX_NPZ_BYTES {
                return;
            }
            manifest.npz_sha256 = Sha256::digest(npz)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let _ = MemoryBank::from_npz_bytes(manifest, json_path, npz_path, npz.to_vec());
        }
    }
}

/// The bytes as one `.mcap` file replayed (`--source mcap:FILE`): its summary read
/// ([`topics_of_bytes`]), the image topic chosen as replay chooses it ([`choose_topic`]), then
/// every message read strictly ([`Messages::from_bytes`]) and those of that topic decoded as
/// replay decodes them ([`decode_recorded`]; compressed images over [`MAX_PIXELS`] skipped).
/// A file without a summary or an image topic, which replay refuses, is read as `reindex`
/// reads it ([`Messages::lenient_from_bytes`]). At most [`MAX_MESSAGES`] messages.
pub fn mcap_replay(data: &[u8]) {
    let origin = Path::new("fuzz.mcap");
    let topic = topics_of_bytes(data, origin)
        .ok()
        .and_then(|all| choose_topic(origin, &all, None).ok());
    let Some(topic) = topic else {
        for m in Messages::lenient_from_bytes(origin.into(), data.to_vec()).take(MAX_MESSAGES) {
            if m.is_err() {
                break;
            }
        }
        return;
    };
    for m in Messages::from_bytes(origin.into(), data.to_vec()).take(MAX_MESSAGES) {
        let Ok(m) = m else {
            break;
        };
        if *m.topic != *topic.name {
            continue;
        }
        if topic.ros_type == CompressedImage::ROS_NAME {
            match cdr::decode::<CompressedImage>(&m.data) {
                Ok(msg) if compressed_fits(&msg) => {}
                Ok(_) => continue,
                // Undecodable: decode_recorded says so without allocating for an image.
                Err(_) => {}
            }
        }
        let _ = decode_recorded(&topic.ros_type, &m.data);
    }
}
