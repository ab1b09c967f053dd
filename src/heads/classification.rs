//! Classification head: a linear probe on CLS (optionally with the mean patch token, which the
//! graph computes) -> softmax -> top-k labels.

use super::onnx::{HeadGraph, OnnxHead, OutputShape};
use super::{ClassScore, HeadError, HeadInput, HeadOutput, Task, TaskHead};
use crate::model::Manifest;

/// The classification head.
#[derive(Debug)]
pub struct ClassificationHead {
    name: String,
    graph: HeadGraph,
    top_k: usize,
}

/// Softmax of `logits` (max-subtracted, so large logits do not overflow).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

impl OnnxHead for ClassificationHead {
    const OUTPUTS: &'static [(&'static str, OutputShape)] = &[("logits", OutputShape::Classes)];

    fn from_graph(
        name: &str,
        graph: HeadGraph,
        _backbone: &Manifest,
        _grid: (usize, usize),
    ) -> Result<Self, HeadError> {
        let top_k = graph
            .manifest
            .classification
            .as_ref()
            .map_or(1, |c| c.top_k)
            .min(graph.manifest.class_names.len());
        Ok(Self {
            name: name.to_string(),
            graph,
            top_k,
        })
    }
}

impl ClassificationHead {
    /// Raw logits `[K]` of one frame (for parity tests).
    pub fn logits(&mut self, input: &HeadInput) -> Result<Vec<f32>, HeadError> {
        let k = self.graph.manifest.class_names.len();
        self.graph.run_single(input, &self.name, &[1, k])
    }
}

impl TaskHead for ClassificationHead {
    fn name(&self) -> &str {
        &self.name
    }

    fn task(&self) -> Task {
        Task::Classification
    }

    fn run(&mut self, input: &HeadInput) -> Result<HeadOutput, HeadError> {
        let probs = softmax(&self.logits(input)?);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let names = &self.graph.manifest.class_names;
        Ok(HeadOutput::Classification(
            order
                .into_iter()
                .take(self.top_k)
                .map(|i| ClassScore {
                    class_id: i,
                    class_name: names[i].clone(),
                    score: probs[i],
                })
                .collect(),
        ))
    }
}
