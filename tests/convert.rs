//! Camera buffer conversions (src/source/convert.rs) against independent references.
//!
//! Fixtures come from tests/fixtures/camera/make_fixtures.py: a 320x240 crop of scikit-image's
//! `chelsea` photograph (the RGB reference), a YUYV buffer made from it with the BT.601
//! limited-range formulas in NumPy, and a 4:2:2 baseline JPEG made by Pillow (libjpeg-turbo),
//! with and without its DHT segments.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

use std::path::PathBuf;

use dinov3_perception::source::convert::{
    ConvertError, Converter, FrameLayout, PixelFormat, YuvEncoding, YuvMatrix, YuvRange,
};
use proptest::prelude::*;

const W: u32 = 320;
const H: u32 = 240;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/camera")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn read_png(name: &str) -> Vec<u8> {
    let path = fixture(name);
    let img = image::open(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    assert_eq!((img.width(), img.height()), (W, H), "{name}");
    img.to_rgb8().into_raw()
}

fn convert(layout: FrameLayout, data: &[u8]) -> Result<Vec<u8>, ConvertError> {
    let mut out = Vec::new();
    Converter::new(layout)
        .expect("valid layout")
        .convert(data, &mut out)?;
    Ok(out)
}

/// Per-channel absolute differences: mean, max, and the first sample over `tolerance`.
struct Diff {
    mean: f64,
    /// Mean of `got - want` (a systematic rounding bias shows here).
    bias: f64,
    max: u8,
    first_outlier: Option<(usize, usize, usize, u8, u8)>,
    psnr: f64,
}

fn diff(got: &[u8], want: &[u8], tolerance: u8) -> Diff {
    assert_eq!(got.len(), want.len());
    let mut sum = 0u64;
    let mut signed = 0i64;
    let mut sq = 0u64;
    let mut max = 0u8;
    let mut first_outlier = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = g.abs_diff(w);
        sum += d as u64;
        signed += g as i64 - w as i64;
        sq += (d as u64) * (d as u64);
        max = max.max(d);
        if d > tolerance && first_outlier.is_none() {
            let px = i / 3;
            first_outlier = Some((px % W as usize, px / W as usize, i % 3, g, w));
        }
    }
    let n = got.len() as f64;
    let mse = sq as f64 / n;
    Diff {
        mean: sum as f64 / n,
        bias: signed as f64 / n,
        max,
        first_outlier,
        psnr: 10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10(),
    }
}

fn describe(d: &Diff) -> String {
    let outlier = match d.first_outlier {
        Some((x, y, c, g, w)) => format!("first outlier at x={x} y={y} channel {c}: {g} vs {w}"),
        None => "no outlier".into(),
    };
    format!(
        "mean abs {:.3}, bias {:+.3}, max {}, PSNR {:.2} dB, {outlier}",
        d.mean, d.bias, d.max, d.psnr
    )
}

// ---------------------------------------------------------------------------------------------
// YUYV

/// yuvutils-rs vs the float NumPy decode of the same YUYV bytes. Both give each pixel pair the
/// same U/V, so the only difference is yuvutils' fixed-point arithmetic (6 fractional bits in
/// its 8-bit YUYV path: coefficients such as 1.164 and 1.596 are rounded to multiples of 1/64,
/// an error of at most 1/128 per coefficient; applied to |Y-16| <= 219 and |Cb|, |Cr| <= 112
/// that is at most ~1.7 + 0.9 + 0.9 levels, plus 0.5 rounding of each side): 3 levels.
/// Measured: mean 0.75, max 2, and the mean is a bias (yuvutils comes out +0.75 level brighter
/// on average; the NumPy round trip itself is unbiased to 0.01), so the bias is bounded too.
const YUYV_DECODER_TOLERANCE: u8 = 3;
const YUYV_DECODER_MAX_BIAS: f64 = 1.0;

/// Against the original RGB, chroma subsampling adds error where colour changes between the
/// two pixels of a pair (fur edges): unbounded in principle (a red/blue pair becomes two
/// purples), measured at max 10 for the float NumPy round trip on this image; plus the 8-bit
/// quantisation of Y, Cb, Cr (0.5 code each: 0.58 levels of R/G/B per Y code, up to 1.0 per
/// chroma code) and the decoder's error above. Measured: mean 1.03, max 10. The mean is what
/// flat regions dominate; the max has headroom of two levels for the decoder's rounding.
const YUYV_REFERENCE_MEAN: f64 = 1.25;
const YUYV_REFERENCE_MAX: u8 = 12;

#[test]
fn yuyv_matches_numpy_decode_within_fixed_point_error() {
    let yuyv = read("chelsea_320x240.yuyv");
    let got = convert(FrameLayout::packed(PixelFormat::Yuyv, W, H), &yuyv).unwrap();
    let want = read_png("chelsea_320x240.yuyv_decoded.png");
    let d = diff(&got, &want, YUYV_DECODER_TOLERANCE);
    println!("YUYV vs NumPy float decode: {}", describe(&d));
    assert!(d.first_outlier.is_none(), "{}", describe(&d));
    assert!(d.bias.abs() <= YUYV_DECODER_MAX_BIAS, "{}", describe(&d));
}

#[test]
fn yuyv_matches_rgb_reference() {
    let yuyv = read("chelsea_320x240.yuyv");
    let got = convert(FrameLayout::packed(PixelFormat::Yuyv, W, H), &yuyv).unwrap();
    let want = read_png("chelsea_320x240.rgb.png");
    let d = diff(&got, &want, YUYV_REFERENCE_MAX);
    println!("YUYV vs RGB reference: {}", describe(&d));
    assert!(d.mean <= YUYV_REFERENCE_MEAN, "{}", describe(&d));
    assert!(d.first_outlier.is_none(), "{}", describe(&d));
}

#[test]
fn yuyv_honours_stride() {
    let yuyv = read("chelsea_320x240.yuyv");
    let packed = convert(FrameLayout::packed(PixelFormat::Yuyv, W, H), &yuyv).unwrap();
    let stride = 2 * W as usize + 64;
    let mut padded = Vec::new();
    for row in yuyv.chunks(2 * W as usize) {
        padded.extend_from_slice(row);
        padded.extend(std::iter::repeat_n(0xAB, 64));
    }
    let layout = FrameLayout {
        bytes_per_line: stride as u32,
        ..FrameLayout::packed(PixelFormat::Yuyv, W, H)
    };
    assert_eq!(convert(layout, &padded).unwrap(), packed);
    // The padding of the last row may be missing.
    padded.truncate(padded.len() - 64);
    assert_eq!(convert(layout, &padded).unwrap(), packed);
}

#[test]
fn yuyv_encoding_is_a_parameter() {
    // Mid grey with full chroma: limited vs full range and BT.601 vs BT.709 must differ.
    let px = [128u8, 200, 128, 60].repeat(2);
    let layout = FrameLayout::packed(PixelFormat::Yuyv, 4, 1);
    let mut results = Vec::new();
    for matrix in [YuvMatrix::Bt601, YuvMatrix::Bt709] {
        for range in [YuvRange::Limited, YuvRange::Full] {
            let mut out = Vec::new();
            Converter::new(layout)
                .unwrap()
                .with_yuv_encoding(YuvEncoding { matrix, range })
                .convert(&px, &mut out)
                .unwrap();
            results.push(out);
        }
    }
    for i in 0..results.len() {
        for j in i + 1..results.len() {
            assert_ne!(results[i], results[j], "encodings {i} and {j}");
        }
    }
    // The default is BT.601 limited range.
    assert_eq!(convert(layout, &px).unwrap(), results[0]);
}

#[test]
fn truncated_yuyv_is_an_error() {
    let yuyv = read("chelsea_320x240.yuyv");
    let layout = FrameLayout::packed(PixelFormat::Yuyv, W, H);
    for len in [0, 1, 2 * W as usize, yuyv.len() - 1] {
        let e = convert(layout, &yuyv[..len]).unwrap_err();
        assert_eq!(
            e,
            ConvertError::Truncated {
                format: PixelFormat::Yuyv,
                width: W,
                height: H,
                stride: 2 * W as usize,
                got: len,
                need: yuyv.len(),
            }
        );
        assert!(e.is_frame_error());
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("got {len} bytes, need {}", yuyv.len())),
            "{msg}"
        );
        assert!(msg.contains("320x240"), "{msg}");
    }
    // Longer than needed (driver padding at the end) is fine.
    let mut long = yuyv.clone();
    long.extend_from_slice(&[0; 100]);
    assert!(convert(layout, &long).is_ok());
}

// ---------------------------------------------------------------------------------------------
// MJPEG

/// Pillow's own decode of the JPEG is 38.9 dB from the reference (quality 90, 4:2:2); zune-jpeg
/// must be as good within 1 dB.
const MJPEG_MIN_PSNR_DB: f64 = 37.9;

/// zune-jpeg vs libjpeg-turbo (Pillow) on the same file. Both are exact baseline decoders but
/// they round the IDCT and upsample chroma differently, so they are not bit-identical: measured
/// mean 0.10, max 3 levels. Bound: one IDCT rounding step (1) plus the chroma upsampling filter
/// at edges, with a level of headroom.
const MJPEG_VS_PILLOW_MEAN: f64 = 0.25;
const MJPEG_VS_PILLOW_MAX: u8 = 4;

#[test]
fn mjpeg_matches_reference_and_pillow() {
    let jpeg = read("chelsea_320x240.mjpg");
    let got = convert(FrameLayout::packed(PixelFormat::Mjpeg, W, H), &jpeg).unwrap();
    let d = diff(&got, &read_png("chelsea_320x240.rgb.png"), 255);
    println!("MJPEG vs RGB reference: {}", describe(&d));
    assert!(d.psnr >= MJPEG_MIN_PSNR_DB, "{}", describe(&d));

    let d = diff(
        &got,
        &read_png("chelsea_320x240.mjpg.pillow.png"),
        MJPEG_VS_PILLOW_MAX,
    );
    println!("MJPEG vs Pillow decode: {}", describe(&d));
    assert!(d.mean <= MJPEG_VS_PILLOW_MEAN, "{}", describe(&d));
    assert!(d.first_outlier.is_none(), "{}", describe(&d));
}

#[test]
fn mjpeg_without_huffman_tables_decodes_like_with_them() {
    let layout = FrameLayout::packed(PixelFormat::Mjpeg, W, H);
    let with = convert(layout, &read("chelsea_320x240.mjpg")).unwrap();
    let without = convert(layout, &read("chelsea_320x240_nodht.mjpg")).unwrap();
    assert!(with == without, "DHT-less frame decodes differently");
}

#[test]
fn converter_reuses_output_and_scratch() {
    let mut c = Converter::new(FrameLayout::packed(PixelFormat::Mjpeg, W, H)).unwrap();
    let nodht = read("chelsea_320x240_nodht.mjpg");
    let mut out = Vec::new();
    c.convert(&nodht, &mut out).unwrap();
    let ptr = out.as_ptr();
    let first = out.clone();
    for _ in 0..3 {
        c.convert(&nodht, &mut out).unwrap();
    }
    assert_eq!(out.as_ptr(), ptr, "output buffer was reallocated");
    assert_eq!(out, first);
}

#[test]
fn mjpeg_of_another_size_is_an_error() {
    let jpeg = read("chelsea_320x240.mjpg");
    let e = convert(FrameLayout::packed(PixelFormat::Mjpeg, 640, 480), &jpeg).unwrap_err();
    assert_eq!(
        e,
        ConvertError::JpegSizeMismatch {
            got_width: 320,
            got_height: 240,
            width: 640,
            height: 480
        }
    );
    assert!(e.to_string().contains("320x240"), "{e}");
}

#[test]
fn corrupt_mjpeg_is_an_error_not_a_panic() {
    let layout = FrameLayout::packed(PixelFormat::Mjpeg, W, H);
    let jpeg = read("chelsea_320x240.mjpg");
    let sos = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .expect("SOS in fixture");

    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("garbage".into(), garbage),
        ("SOI only".into(), vec![0xFF, 0xD8]),
    ];
    // Cut short anywhere: in the headers, at the start of the scan, halfway through the image.
    for cut in [3, 100, sos, sos + 20, jpeg.len() / 2, jpeg.len() - 200] {
        cases.push((format!("truncated at {cut}"), jpeg[..cut].to_vec()));
    }
    // A broken SOF: zero height.
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let mut zero_height = jpeg.clone();
    zero_height[sof + 5] = 0;
    zero_height[sof + 6] = 0;
    cases.push(("zero height".into(), zero_height));
    // Garbage in the middle of the scan.
    let mut scrambled = jpeg.clone();
    for b in &mut scrambled[sos + 200..sos + 2200] {
        *b = 0xFF;
    }
    cases.push(("scan overwritten with 0xFF".into(), scrambled));

    for (what, data) in &cases {
        match convert(layout, data) {
            Err(ConvertError::CorruptJpeg { len, reason }) => {
                assert_eq!(len, data.len());
                println!("{what}: {reason}");
            }
            other => panic!("{what}: expected CorruptJpeg, got {other:?}"),
        }
    }
}

#[test]
fn flipped_mjpeg_bytes_never_panic() {
    // JPEG has no checksum: a flipped bit in the entropy-coded data can decode to a wrong but
    // well-formed image. What must hold: no panic, and a success has the right size.
    let layout = FrameLayout::packed(PixelFormat::Mjpeg, W, H);
    let jpeg = read("chelsea_320x240.mjpg");
    let mut c = Converter::new(layout).unwrap();
    let mut out = Vec::new();
    let (mut ok, mut err) = (0, 0);
    for i in (0..jpeg.len()).step_by(7) {
        let mut bad = jpeg.clone();
        bad[i] ^= 0x5A;
        match c.convert(&bad, &mut out) {
            Ok(()) => {
                ok += 1;
                assert_eq!(out.len(), (W * H * 3) as usize);
            }
            Err(e) => {
                err += 1;
                assert!(e.is_frame_error(), "{e}");
            }
        }
    }
    println!(
        "flipped one byte in {} places: {ok} decoded, {err} errors",
        ok + err
    );
    assert!(err > 0);
}

// ---------------------------------------------------------------------------------------------
// RGB24 and GREY

#[test]
fn rgb24_is_copied_honouring_stride() {
    let reference = read_png("chelsea_320x240.rgb.png");
    let packed = FrameLayout::packed(PixelFormat::Rgb24, W, H);
    assert_eq!(convert(packed, &reference).unwrap(), reference);

    let pad = 13;
    let mut strided = Vec::new();
    for row in reference.chunks(3 * W as usize) {
        strided.extend_from_slice(row);
        strided.extend(std::iter::repeat_n(7u8, pad));
    }
    let layout = FrameLayout {
        bytes_per_line: 3 * W + pad as u32,
        ..packed
    };
    assert_eq!(convert(layout, &strided).unwrap(), reference);
    let e = convert(layout, &strided[..strided.len() - pad - 1]).unwrap_err();
    assert!(matches!(e, ConvertError::Truncated { .. }), "{e}");
}

#[test]
fn grey_is_replicated_to_rgb() {
    // The luma plane of the YUYV fixture as a GREY buffer.
    let yuyv = read("chelsea_320x240.yuyv");
    let grey: Vec<u8> = yuyv.iter().step_by(2).copied().collect();
    let got = convert(FrameLayout::packed(PixelFormat::Grey, W, H), &grey).unwrap();
    assert_eq!(got.len(), grey.len() * 3);
    for (px, &g) in got.chunks_exact(3).zip(&grey) {
        assert_eq!(px, [g, g, g]);
    }
    let e = convert(FrameLayout::packed(PixelFormat::Grey, W, H), &grey[1..]).unwrap_err();
    assert!(matches!(e, ConvertError::Truncated { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Fuzz-style properties: any bytes, any layout, every decoder.

fn any_format() -> impl Strategy<Value = PixelFormat> {
    prop::sample::select(PixelFormat::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(
        format in any_format(),
        width in 1u32..64,
        height in 1u32..64,
        extra_stride in 0u32..8,
        data in prop::collection::vec(any::<u8>(), 0..20_000),
    ) {
        let width = if format == PixelFormat::Yuyv { width * 2 } else { width };
        let bpp = format.bytes_per_pixel().unwrap_or(0) as u32;
        let layout = FrameLayout {
            format,
            width,
            height,
            bytes_per_line: if bpp == 0 { 0 } else { width * bpp + extra_stride },
        };
        let mut c = Converter::new(layout).unwrap();
        let mut out = Vec::new();
        match c.convert(&data, &mut out) {
            Ok(()) => prop_assert_eq!(out.len(), (width * height * 3) as usize),
            Err(e) => prop_assert!(e.is_frame_error(), "{}", e),
        }
    }

    #[test]
    fn random_bytes_after_a_jpeg_header_never_panic(
        cut in 0usize..700,
        tail in prop::collection::vec(any::<u8>(), 0..4_000),
    ) {
        // The real headers (tables, SOF, SOS) followed by random entropy data: reaches the
        // Huffman decoder and IDCT, which pure noise rarely does.
        let jpeg = read("chelsea_320x240_nodht.mjpg");
        let mut data = jpeg[..cut.min(jpeg.len())].to_vec();
        data.extend_from_slice(&tail);
        let mut c = Converter::new(FrameLayout::packed(PixelFormat::Mjpeg, W, H)).unwrap();
        let mut out = Vec::new();
        if c.convert(&data, &mut out).is_ok() {
            prop_assert_eq!(out.len(), (W * H * 3) as usize);
        }
    }

    #[test]
    fn mutated_jpeg_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let mut jpeg = read("chelsea_320x240.mjpg");
        for (at, byte) in edits {
            let i = at.index(jpeg.len());
            jpeg[i] = byte;
        }
        let mut c = Converter::new(FrameLayout::packed(PixelFormat::Mjpeg, W, H)).unwrap();
        let mut out = Vec::new();
        if c.convert(&jpeg, &mut out).is_ok() {
            prop_assert_eq!(out.len(), (W * H * 3) as usize);
        }
    }
}
