//! Monocular depth head: per-patch metric depth -> bilinear upsampling to camera pixels -> clamp
//! to the manifest's range.

use std::path::Path;

use super::manifest::DepthParams;
use super::onnx::HeadGraph;
use super::upsample::UpsamplerCache;
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
    upsampler: UpsamplerCache,
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
            upsampler: UpsamplerCache::default(),
        })
    }

    /// The depth range outputs are clamped to.
    pub fn params(&self) -> &DepthParams {
        &self.params
    }

    /// Patch-resolution depth `[h, w]` in metres, before clamping (for parity tests).
    pub fn patch_depth(&mut self, input: &HeadInput) -> Result<Vec<f32>, HeadError> {
        let (h, w) = self.grid;
        self.graph.run_single(input, &self.name, &[1, 1, h, w])
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
        let up = self.upsampler.get(input.letterbox, self.grid, self.patch);
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
