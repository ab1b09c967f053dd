//! What the inference stage computed for one frame, shared read-only with every sink.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::BackboneOutputs;
use crate::features::{Features, FeaturesError};
use crate::frame::{Frame, Stamp};
use crate::heads::{HeadError, NamedOutput};
use crate::model::{InputSize, Manifest};
use crate::preprocess::Letterbox;

/// Per-frame stage times measured by the inference thread.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameTimings {
    /// Waiting in the frame queue.
    pub queue: Duration,
    /// Preprocessing.
    pub preprocess: Duration,
    /// Backbone pass.
    pub backbone: Duration,
    /// All heads.
    pub heads: Duration,
}

/// Everything computed for one frame, shared read-only with every sink.
#[derive(Debug)]
pub struct FrameResult {
    /// The frame.
    pub frame: Frame,
    /// Model input size.
    pub input_size: InputSize,
    /// Mapping between model-input and frame pixels.
    pub letterbox: Letterbox,
    /// Backbone outputs.
    pub outputs: BackboneOutputs,
    /// The backbone's manifest.
    pub manifest: Arc<Manifest>,
    /// Outputs of the heads that ran on this frame (enabled and due), in head order.
    pub heads: Vec<NamedOutput>,
    /// Heads that failed on this frame, with the error.
    pub head_errors: Vec<(String, HeadError)>,
    /// Stage times.
    pub timings: FrameTimings,
    /// When the results were ready, on the node clock.
    pub ready: Stamp,
}

impl FrameResult {
    /// Views over the backbone outputs.
    pub fn features(&self) -> Result<Features<'_>, FeaturesError> {
        Features::new(&self.outputs, &self.manifest, self.input_size)
    }

    /// The output of head `name`, if it ran on this frame.
    pub fn head(&self, name: &str) -> Option<&NamedOutput> {
        self.heads.iter().find(|h| h.head == name)
    }
}
