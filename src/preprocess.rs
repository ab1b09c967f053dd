//! Image -> backbone input tensor, and the mapping back to image pixels.
//!
//! RGB8 pixels are scaled to 0..1, resized to the model input size (stretched, as transformers'
//! DINOv3 image processor does, or letterboxed to keep the aspect ratio), normalised with the
//! manifest's mean/std and laid out as NCHW float32: the processor's rescale -> resize ->
//! normalise order. Resizing uses `fast_image_resize`'s antialiased bilinear convolution on f32
//! pixels, the filter torchvision's `resize(antialias=True)` applies (tests/fixtures/preprocess).
//! The returned [`Letterbox`] maps model-input pixels back to image pixels so heads report in
//! camera coordinates.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use serde::{Deserialize, Serialize};

use crate::backend::InputTensor;
pub use crate::frame::RgbImageView;
use crate::model::{InputSize, Manifest};

/// Errors from preprocessing. They name the offending image size or buffer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PreprocessError {
    /// The image has zero width or height.
    #[error("image is empty ({width}x{height}); the source delivered no pixels")]
    Empty {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
    },
    /// The buffer is shorter than its dimensions say.
    #[error("RGB8 buffer of {len} bytes is too short for {width}x{height} with row stride {stride} (needs {needed})")]
    ShortBuffer {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
        /// Row stride in bytes.
        stride: usize,
        /// Actual length.
        len: usize,
        /// Needed length.
        needed: usize,
    },
    /// The target size is unusable.
    #[error("model input size {0} is invalid: height and width must be positive multiples of the patch size")]
    BadTarget(InputSize),
}

/// How the image is fitted to the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Scale x and y independently to fill the input (what transformers' processor does).
    #[default]
    Stretch,
    /// Keep the aspect ratio, centre, pad with the mean colour (zero after normalisation).
    Letterbox,
}

// A view's checks belong to preprocessing, which is what needs whole, non-empty images.
impl RgbImageView<'_> {
    fn validate(&self) -> Result<(), PreprocessError> {
        if self.width == 0 || self.height == 0 {
            return Err(PreprocessError::Empty {
                width: self.width,
                height: self.height,
            });
        }
        let needed = self.stride * (self.height - 1) + self.width * 3;
        if self.stride < self.width * 3 || self.data.len() < needed {
            return Err(PreprocessError::ShortBuffer {
                width: self.width,
                height: self.height,
                stride: self.stride,
                len: self.data.len(),
                needed,
            });
        }
        Ok(())
    }
}

/// Affine map between image pixels and model-input pixels:
/// `model = image * scale + pad` on each axis (continuous coordinates, pixel edges at integers).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Letterbox {
    /// Source image width.
    pub image_width: usize,
    /// Source image height.
    pub image_height: usize,
    /// Model input width.
    pub input_width: usize,
    /// Model input height.
    pub input_height: usize,
    /// Horizontal scale (model pixels per image pixel).
    pub scale_x: f64,
    /// Vertical scale.
    pub scale_y: f64,
    /// Left padding in model pixels.
    pub pad_x: f64,
    /// Top padding in model pixels.
    pub pad_y: f64,
}

impl Letterbox {
    /// Plan the mapping for an image of `width` x `height` into `input`.
    pub fn plan(width: usize, height: usize, input: InputSize, mode: ResizeMode) -> Self {
        let (iw, ih) = (input.width, input.height);
        match mode {
            ResizeMode::Stretch => Self {
                image_width: width,
                image_height: height,
                input_width: iw,
                input_height: ih,
                scale_x: iw as f64 / width as f64,
                scale_y: ih as f64 / height as f64,
                pad_x: 0.0,
                pad_y: 0.0,
            },
            ResizeMode::Letterbox => {
                let s = (iw as f64 / width as f64).min(ih as f64 / height as f64);
                let (rw, rh) = Self::resized(width, height, s, iw, ih);
                Self {
                    image_width: width,
                    image_height: height,
                    input_width: iw,
                    input_height: ih,
                    scale_x: rw as f64 / width as f64,
                    scale_y: rh as f64 / height as f64,
                    pad_x: ((iw - rw) / 2) as f64,
                    pad_y: ((ih - rh) / 2) as f64,
                }
            }
        }
    }

    fn resized(width: usize, height: usize, s: f64, iw: usize, ih: usize) -> (usize, usize) {
        let rw = ((width as f64 * s).round() as usize).clamp(1, iw);
        let rh = ((height as f64 * s).round() as usize).clamp(1, ih);
        (rw, rh)
    }

    /// The region of the model input that holds image pixels: (x, y, width, height).
    pub fn content_rect(&self) -> (usize, usize, usize, usize) {
        (
            self.pad_x as usize,
            self.pad_y as usize,
            (self.image_width as f64 * self.scale_x).round() as usize,
            (self.image_height as f64 * self.scale_y).round() as usize,
        )
    }

    /// Model-input coordinates -> image coordinates.
    pub fn to_image(&self, x: f64, y: f64) -> (f64, f64) {
        (
            (x - self.pad_x) / self.scale_x,
            (y - self.pad_y) / self.scale_y,
        )
    }

    /// Image coordinates -> model-input coordinates.
    pub fn to_input(&self, x: f64, y: f64) -> (f64, f64) {
        (x * self.scale_x + self.pad_x, y * self.scale_y + self.pad_y)
    }
}

/// Turns RGB8 images into backbone input tensors. Holds scratch buffers; one per thread.
pub struct Preprocessor {
    size: InputSize,
    mode: ResizeMode,
    mean: [f32; 3],
    std: [f32; 3],
    resizer: Resizer,
    scaled: Vec<f32>,
    resized: Vec<f32>,
}

impl std::fmt::Debug for Preprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocessor")
            .field("size", &self.size)
            .field("mode", &self.mode)
            .field("mean", &self.mean)
            .field("std", &self.std)
            .finish_non_exhaustive()
    }
}

impl Preprocessor {
    /// A preprocessor for `size` with the manifest's normalisation.
    pub fn new(
        manifest: &Manifest,
        size: InputSize,
        mode: ResizeMode,
    ) -> Result<Self, PreprocessError> {
        Self::with_normalisation(size, mode, manifest.image_mean, manifest.image_std)
    }

    /// A preprocessor with explicit mean/std (0..1 pixel units).
    pub fn with_normalisation(
        size: InputSize,
        mode: ResizeMode,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Result<Self, PreprocessError> {
        if size.width == 0 || size.height == 0 {
            return Err(PreprocessError::BadTarget(size));
        }
        Ok(Self {
            size,
            mode,
            mean,
            std,
            resizer: Resizer::new(),
            scaled: Vec::new(),
            resized: Vec::new(),
        })
    }

    /// The model input size.
    pub fn input_size(&self) -> InputSize {
        self.size
    }

    /// Preprocess into a new tensor.
    pub fn run(
        &mut self,
        image: &RgbImageView,
    ) -> Result<(InputTensor, Letterbox), PreprocessError> {
        let mut tensor = InputTensor::zeros(self.size);
        let letterbox = self.run_into(image, &mut tensor)?;
        Ok((tensor, letterbox))
    }

    /// Preprocess into `out` (reused between frames).
    pub fn run_into(
        &mut self,
        image: &RgbImageView,
        out: &mut InputTensor,
    ) -> Result<Letterbox, PreprocessError> {
        image.validate()?;
        let letterbox = Letterbox::plan(image.width, image.height, self.size, self.mode);
        let (x0, y0, rw, rh) = letterbox.content_rect();

        // Rescale to 0..1 in f32 *before* resizing, as transformers' DINOv3 processor does
        // (rescale -> resize -> normalise); resizing 8-bit values would round to grey levels.
        self.scaled.clear();
        self.scaled.reserve(image.width * image.height * 3);
        for row in image.data.chunks(image.stride).take(image.height) {
            self.scaled.extend(
                row[..image.width * 3]
                    .iter()
                    .map(|&v| v as f32 * (1.0 / 255.0)),
            );
        }
        self.resized.resize(rw * rh * 3, 0.0);
        if rw == image.width && rh == image.height {
            self.resized.copy_from_slice(&self.scaled);
        } else {
            let bad_target = |_| PreprocessError::BadTarget(self.size);
            let src_image = ImageRef::new(
                image.width as u32,
                image.height as u32,
                bytemuck_f32(&self.scaled),
                PixelType::F32x3,
            )
            .map_err(|_| PreprocessError::Empty {
                width: image.width,
                height: image.height,
            })?;
            let mut dst_image = Image::from_slice_u8(
                rw as u32,
                rh as u32,
                bytemuck_f32_mut(&mut self.resized),
                PixelType::F32x3,
            )
            .map_err(bad_target)?;
            // Antialiased bilinear (PIL's triangle filter widened by the scale when shrinking),
            // the filter torchvision's `resize(..., antialias=True)` applies.
            let options =
                ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
            self.resizer
                .resize(&src_image, &mut dst_image, &options)
                .map_err(|_| PreprocessError::BadTarget(self.size))?;
        }

        // Normalise into NCHW. Padding is the mean colour, i.e. 0 after normalisation.
        let (w, h) = (self.size.width, self.size.height);
        out.shape = [1, 3, h, w];
        out.data.clear();
        out.data.resize(3 * h * w, 0.0);
        let inv_std: [f32; 3] = std::array::from_fn(|c| 1.0 / self.std[c]);
        let mean = self.mean;
        let (planes_r, rest) = out.data.split_at_mut(h * w);
        let (planes_g, planes_b) = rest.split_at_mut(h * w);
        for (ry, row) in self.resized.chunks_exact(rw * 3).enumerate() {
            let base = (y0 + ry) * w + x0;
            for (rx, px) in row.chunks_exact(3).enumerate() {
                let i = base + rx;
                planes_r[i] = (px[0] - mean[0]) * inv_std[0];
                planes_g[i] = (px[1] - mean[1]) * inv_std[1];
                planes_b[i] = (px[2] - mean[2]) * inv_std[2];
            }
        }
        Ok(letterbox)
    }
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

fn bytemuck_f32_mut(v: &mut [f32]) -> &mut [u8] {
    bytemuck::cast_slice_mut(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn size(h: usize, w: usize) -> InputSize {
        InputSize {
            height: h,
            width: w,
        }
    }

    proptest! {
        #[test]
        fn letterbox_round_trips(
            w in 1usize..4000, h in 1usize..4000,
            ih in 1usize..64, iw in 1usize..64,
            letterbox in any::<bool>(),
            fx in 0.0f64..1.0, fy in 0.0f64..1.0,
        ) {
            let mode = if letterbox { ResizeMode::Letterbox } else { ResizeMode::Stretch };
            let lb = Letterbox::plan(w, h, size(ih * 16, iw * 16), mode);
            let (x, y) = (fx * w as f64, fy * h as f64);
            let (mx, my) = lb.to_input(x, y);
            let (bx, by) = lb.to_image(mx, my);
            prop_assert!((bx - x).abs() < 1e-6 * w as f64 + 1e-9);
            prop_assert!((by - y).abs() < 1e-6 * h as f64 + 1e-9);
            // The image's corners land inside the model input.
            let (x1, y1) = lb.to_input(w as f64, h as f64);
            prop_assert!(lb.pad_x >= 0.0 && lb.pad_y >= 0.0);
            prop_assert!(x1 <= (iw * 16) as f64 + 1e-9 && y1 <= (ih * 16) as f64 + 1e-9);
            let (cx, cy, cw, ch) = lb.content_rect();
            prop_assert!(cx + cw <= iw * 16 && cy + ch <= ih * 16);
        }
    }

    #[test]
    fn letterbox_keeps_aspect_and_centres() {
        let lb = Letterbox::plan(640, 480, size(224, 224), ResizeMode::Letterbox);
        assert_eq!(lb.content_rect(), (0, 28, 224, 168));
        assert!((lb.scale_x - lb.scale_y).abs() < 1e-12);
        assert_eq!(lb.to_image(0.0, 28.0), (0.0, 0.0));
    }

    #[test]
    fn constant_image_normalises_exactly_and_pads_with_zero() {
        let mean = [0.485, 0.456, 0.406];
        let std = [0.229, 0.224, 0.225];
        let data = vec![200u8; 40 * 20 * 3];
        let mut p =
            Preprocessor::with_normalisation(size(32, 32), ResizeMode::Letterbox, mean, std)
                .unwrap();
        let (t, lb) = p.run(&RgbImageView::packed(40, 20, &data)).unwrap();
        let (_, y0, _, ch) = lb.content_rect();
        assert_eq!((y0, ch), (8, 16));
        for c in 0..3 {
            let want = (200.0 / 255.0 - mean[c]) / std[c];
            let plane = &t.data[c * 32 * 32..(c + 1) * 32 * 32];
            assert!((plane[10 * 32 + 5] - want).abs() < 1e-6);
            assert_eq!(plane[0], 0.0, "padding is the mean colour");
        }
    }

    #[test]
    fn strided_rows_equal_packed_rows() {
        let (w, h) = (7, 5);
        let packed: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let mut strided = vec![0u8; (w * 3 + 5) * h];
        for y in 0..h {
            strided[y * (w * 3 + 5)..y * (w * 3 + 5) + w * 3]
                .copy_from_slice(&packed[y * w * 3..(y + 1) * w * 3]);
        }
        let mean = [0.5; 3];
        let std = [0.25; 3];
        let mut p =
            Preprocessor::with_normalisation(size(16, 16), ResizeMode::Stretch, mean, std).unwrap();
        let a = p.run(&RgbImageView::packed(w, h, &packed)).unwrap();
        let b = p
            .run(&RgbImageView {
                width: w,
                height: h,
                stride: w * 3 + 5,
                data: &strided,
            })
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn short_and_empty_buffers_are_errors_not_panics() {
        let mut p =
            Preprocessor::with_normalisation(size(16, 16), ResizeMode::Stretch, [0.0; 3], [1.0; 3])
                .unwrap();
        let data = vec![0u8; 10];
        assert!(matches!(
            p.run(&RgbImageView::packed(4, 4, &data)),
            Err(PreprocessError::ShortBuffer { .. })
        ));
        assert!(matches!(
            p.run(&RgbImageView::packed(0, 4, &data)),
            Err(PreprocessError::Empty { .. })
        ));
    }
}
