//! Monocular depth head: per-patch metric depth -> bilinear upsampling to camera pixels -> clamp
//! to the manifest's range.

use std::path::Path;

use super::manifest::DepthParams;
use super::onnx::{expect_shape, HeadGraph};
use super::upsample::Upsampler;
use super::{FloatImage, HeadError, HeadInput, HeadOutput, Task, TaskHead};
use crate::model::Manifest;

/// The depth head.
#[derive(Debug)]
pub struct DepthHead {
    name: String,
    graph: HeadGraph,
    grid: (usize, usize),
    patch: usize,
    params: DepthParams,
    upsampler: Option<Upsampler>,
}

impl DepthHead {
    /// Load the head ONNX at `onnx` for `backbone` running at `grid`.
    pub fn load(
        name: &str,
        onnx: &Path,
        backbone: &Manifest,
        grid: (usize, usize),
    ) -> Result<Self, HeadError> {
        let graph = HeadGraph::load(onnx, backbone, grid, &["depth"])?;
        graph.check_output(0, &[1, 1, grid.0, grid.1])?;
        let params =
            graph.manifest.depth.clone().ok_or_else(|| {
                HeadError::invalid(onnx, "no depth section", "see models/HEADS.md")
            })?;
        Ok(Self {
            name: name.to_string(),
            graph,
            grid,
            patch: backbone.patch_size,
            params,
            upsampler: None,
        })
    }

    /// The depth range outputs are clamped to.
    pub fn params(&self) -> &DepthParams {
        &self.params
    }

    /// Patch-resolution depth `[h, w]` in metres, before clamping (for parity tests).
    pub fn patch_depth(&mut self, input: &HeadInput) -> Result<Vec<f32>, HeadError> {
        let (h, w) = self.grid;
        let out = self.graph.run(input, &self.name)?;
        expect_shape(&out[0], &[1, 1, h, w], &self.name)?;
        Ok(out.into_iter().next().map(|t| t.data).unwrap_or_default())
    }
}

impl TaskHead for DepthHead {
    fn name(&self) -> &str {
        &self.name
    }

    fn task(&self) -> Task {
        Task::Depth
    }

    fn run(&mut self, input: &HeadInput) -> Result<HeadOutput, HeadError> {
        let depth = self.patch_depth(input)?;
        let lb = input.letterbox;
        if !self
            .upsampler
            .as_ref()
            .is_some_and(|u| u.fits(lb, self.grid, self.patch))
        {
            self.upsampler = Some(Upsampler::new(lb, self.grid, self.patch));
        }
        let up = self
            .upsampler
            .get_or_insert_with(|| Upsampler::new(lb, self.grid, self.patch));
        let mut data = up.planes(&depth, 1);
        let (lo, hi) = (self.params.min_depth_m, self.params.max_depth_m);
        for d in &mut data {
            *d = if d.is_finite() {
                d.clamp(lo, hi)
            } else {
                f32::NAN
            };
        }
        Ok(HeadOutput::Depth(FloatImage {
            width: up.width,
            height: up.height,
            data,
        }))
    }
}
