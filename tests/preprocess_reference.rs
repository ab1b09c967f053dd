//! Preprocessing vs transformers' DINOv3 image processor on a real photograph.
//!
//! `tests/fixtures/preprocess/` holds scikit-image's `chelsea` photograph and the `pixel_values`
//! the processor (transformers 5.23, torchvision backend) produced for it; its README says how
//! they were made. The processor rescales to 0..1 in float, resizes with antialiased bilinear
//! (PIL's triangle filter) and normalises. We do the same in f32 with `fast_image_resize`.
//!
//! Tolerance: PREPROCESS_MAX_ABS = 1e-4 in normalised units. An independent float64
//! implementation of the same filter differs from the reference by 1.5e-5 (224x224) and
//! 2.7e-5 (448x320), which is float32 accumulation error; 1e-4 leaves room for a different
//! summation order while staying 170x below the error of resizing in uint8 (1.7e-2, one
//! rounding step of a grey level / std) and 3000x below skipping the antialias (0.46), so
//! either mistake fails this test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use common::{fixture, npy};
use dinov3_perception::image_io::load_rgb;
use dinov3_perception::preprocess::{Preprocessor, ResizeMode};
use dinov3_perception::tolerance::compare;
use dinov3_perception::InputSize;

const PREPROCESS_MAX_ABS: f32 = 1e-4;
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

fn check(reference: &str, height: usize, width: usize) {
    let image = load_rgb(&fixture("preprocess/chelsea.png")).expect("photo decodes");
    assert_eq!((image.width, image.height), (451, 300));
    let (shape, expected) = npy(&fixture(reference));
    assert_eq!(shape, [1, 3, height, width]);
    let mut pre = Preprocessor::with_normalisation(
        InputSize { height, width },
        ResizeMode::Stretch,
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
    .unwrap();
    let (tensor, letterbox) = pre.run(&image.view()).unwrap();
    assert_eq!(tensor.shape, [1, 3, height, width]);
    let cmp = compare(&tensor.data, &expected).unwrap();
    eprintln!("{reference}: {cmp}");
    assert!(cmp.max_abs <= PREPROCESS_MAX_ABS, "{reference}: {cmp}");
    // The mapping back to image pixels covers the whole photo.
    let (x, y) = letterbox.to_image(width as f64, height as f64);
    assert!((x - 451.0).abs() < 1e-9 && (y - 300.0).abs() < 1e-9);
}

#[test]
fn matches_transformers_at_224() {
    check("preprocess/chelsea_hf_224.npy", 224, 224);
}

#[test]
fn matches_transformers_at_448x320_upsampling_one_axis() {
    check("preprocess/chelsea_hf_448x320.npy", 448, 320);
}
