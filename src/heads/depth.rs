//! Monocular depth head: per-patch metric depth -> bilinear upsampling to camera pixels -> clamp
//! to the manifest's range.

use super::manifest::DepthParams;
use super::onnx::{HeadGraph, OnnxHead, OutputShape};
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

impl OnnxHead for DepthHead {
    const OUTPUTS: &'static [(&'static str, OutputShape)] = &[("depth", OutputShape::Grid(1))];

    fn from_graph(
        name: &str,
        graph: HeadGraph,
        backbone: &Manifest,
        grid: (usize, usize),
    ) -> Result<Self, HeadError> {
        let params = graph.manifest.depth.clone().ok_or_else(|| {
            HeadError::invalid(&graph.path, "no depth section", "see models/HEADS.md")
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
}

impl DepthHead {
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
