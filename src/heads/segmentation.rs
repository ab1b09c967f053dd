//! Semantic segmentation head: per-patch logits -> bilinear upsampling of the logits to camera
//! pixels -> argmax, plus a colour image from the manifest's palette.

use std::sync::Arc;

use super::onnx::{HeadGraph, OnnxHead, OutputShape};
use super::upsample::UpsamplerCache;
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
    upsampler: UpsamplerCache,
}

impl OnnxHead for SegmentationHead {
    const OUTPUTS: &'static [(&'static str, OutputShape)] = &[("logits", OutputShape::ClassGrid)];

    fn from_graph(
        name: &str,
        graph: HeadGraph,
        backbone: &Manifest,
        grid: (usize, usize),
    ) -> Result<Self, HeadError> {
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
            upsampler: UpsamplerCache::default(),
        })
    }
}

impl SegmentationHead {
    /// Class names, background first.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Patch-resolution logits `[K, h, w]` of one frame (for parity tests).
    pub fn logits(&mut self, input: &HeadInput) -> Result<Vec<f32>, HeadError> {
        let (h, w) = self.grid;
        let k = self.class_names.len();
        self.graph.run_single(input, &self.name, &[1, k, h, w])
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
        let up = self.upsampler.get(input.letterbox, self.grid, self.patch);
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
