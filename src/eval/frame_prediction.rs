//! [`FramePrediction`]: what one frame's heads said, the unit [`super::Evaluator`] consumes,
//! and how to make one from the heads' outputs of a pipeline run.

use super::truth::FrameKey;
use crate::heads::{Detection, HeadOutput, NamedOutput};

/// One frame's head outputs, in frame pixels (row-major, `width * height` per map).
#[derive(Debug, Clone, PartialEq)]
pub struct FramePrediction {
    /// Which ground truth it matches.
    pub key: FrameKey,
    /// Frame width.
    pub width: usize,
    /// Frame height.
    pub height: usize,
    /// Boxes (`Some(empty)`: the head ran and found nothing).
    pub detections: Option<Vec<Detection>>,
    /// Class id per pixel.
    pub segmentation: Option<Vec<u8>>,
    /// Metres per pixel.
    pub depth: Option<Vec<f32>>,
    /// Image anomaly score.
    pub anomaly_score: Option<f32>,
    /// Anomaly score per pixel.
    pub anomaly_map: Option<Vec<f32>>,
}

impl FramePrediction {
    /// A frame of `width` x `height` pixels from its heads' outputs (detections, segmentation,
    /// depth, anomaly; other outputs are not scored). Maps of another size are kept as they
    /// are: the evaluator reports the difference.
    pub fn from_outputs(
        key: FrameKey,
        width: usize,
        height: usize,
        outputs: &[NamedOutput],
    ) -> Self {
        let mut f = Self {
            key,
            width,
            height,
            detections: None,
            segmentation: None,
            depth: None,
            anomaly_score: None,
            anomaly_map: None,
        };
        for o in outputs {
            match &o.output {
                HeadOutput::Detections(d) => f.detections = Some(d.clone()),
                HeadOutput::Segmentation(m) => f.segmentation = Some(m.class_ids.clone()),
                HeadOutput::Depth(d) => f.depth = Some(d.data.clone()),
                HeadOutput::Anomaly(a) => {
                    f.anomaly_score = Some(a.score);
                    f.anomaly_map = Some(a.map.data.clone());
                }
                HeadOutput::Classification(_) | HeadOutput::Pca(_) => {}
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::FloatImage;

    #[test]
    fn outputs_fill_their_fields() {
        let outputs = [NamedOutput {
            head: "depth".into(),
            output: HeadOutput::Depth(FloatImage {
                width: 2,
                height: 1,
                data: vec![1.0, 2.0],
            }),
            elapsed: std::time::Duration::ZERO,
        }];
        let f = FramePrediction::from_outputs(FrameKey::Name("a".into()), 2, 1, &outputs);
        assert_eq!(f.depth, Some(vec![1.0, 2.0]));
        assert_eq!(f.detections, None);
        assert_eq!(f.segmentation, None);
    }
}
