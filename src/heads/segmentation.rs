//! Semantic segmentation head: per-patch logits -> bilinear upsampling of the logits to camera
//! pixels -> argmax, plus a colour image from the manifest's palette.

use std::path::Path;
use std::sync::Arc;

use super::onnx::{expect_shape, HeadGraph};
use super::upsample::Upsampler;
use super::{ClassMap, HeadError, HeadInput, HeadOutput, Task, TaskHead};
use crate::model::Manifest;

/// The segmentation head.
#[derive(Debug)]
pub struct SegmentationHead {
    name: String,
    graph: HeadGraph,
    grid: (usize, usize),
    patch: usize,
    palette: Vec<[u8; 3]>,
    class_names: Arc<Vec<String>>,
    upsampler: Option<Upsampler>,
}

impl SegmentationHead {
    /// Load the head ONNX at `onnx` for `backbone` running at `grid`.
    pub fn load(
        name: &str,
        onnx: &Path,
        backbone: &Manifest,
        grid: (usize, usize),
    ) -> Result<Self, HeadError> {
        let graph = HeadGraph::load(onnx, backbone, grid, &["logits"])?;
        let k = graph.manifest.class_names.len();
        graph.check_output(0, &[1, k, grid.0, grid.1])?;
        let palette = graph
            .manifest
            .segmentation
            .as_ref()
            .map(|s| s.palette.clone())
            .unwrap_or_default();
        let class_names = Arc::new(graph.manifest.class_names.clone());
        Ok(Self {
            name: name.to_string(),
            graph,
            grid,
            patch: backbone.patch_size,
            palette,
            class_names,
            upsampler: None,
        })
    }

    /// Class names, background first.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Patch-resolution logits `[K, h, w]` of one frame (for parity tests).
    pub fn logits(&mut self, input: &HeadInput) -> Result<Vec<f32>, HeadError> {
        let (h, w) = self.grid;
        let k = self.class_names.len();
        let out = self.graph.run(input, &self.name)?;
        expect_shape(&out[0], &[1, k, h, w], &self.name)?;
        Ok(out.into_iter().next().map(|t| t.data).unwrap_or_default())
    }

    /// The upsampling plan for this frame's geometry (cached across frames).
    pub fn upsampler(&mut self, input: &HeadInput) -> &Upsampler {
        let lb = input.letterbox;
        let fits = self
            .upsampler
            .as_ref()
            .is_some_and(|u| u.fits(lb, self.grid, self.patch));
        if !fits {
            self.upsampler = Some(Upsampler::new(lb, self.grid, self.patch));
        }
        self.upsampler
            .get_or_insert_with(|| Upsampler::new(lb, self.grid, self.patch))
    }
}

impl TaskHead for SegmentationHead {
    fn name(&self) -> &str {
        &self.name
    }

    fn task(&self) -> Task {
        Task::Segmentation
    }

    fn run(&mut self, input: &HeadInput) -> Result<HeadOutput, HeadError> {
        let logits = self.logits(input)?;
        let k = self.class_names.len();
        let up = self.upsampler(input).clone();
        let class_ids = up.argmax(&logits, k);
        let mut color = Vec::with_capacity(class_ids.len() * 3);
        for &id in &class_ids {
            color.extend_from_slice(&self.palette[id as usize]);
        }
        Ok(HeadOutput::Segmentation(ClassMap {
            width: up.width,
            height: up.height,
            class_ids,
            color,
            class_names: self.class_names.clone(),
        }))
    }
}
