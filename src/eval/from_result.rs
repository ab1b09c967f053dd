//! The head outputs of one pipeline pass as a predicted frame (`eval --source ...` runs the
//! backbone and heads over a recording or an image folder and scores them as they come).

use super::evaluator::FramePrediction;
use super::truth::FrameKey;
use crate::heads::HeadOutput;
use crate::result::FrameResult;

/// `result`'s detections, segmentation, depth and anomaly outputs, keyed by `key`.
pub fn frame_prediction(result: &FrameResult, key: FrameKey) -> FramePrediction {
    let mut p = FramePrediction {
        key,
        width: result.frame.width,
        height: result.frame.height,
        detections: None,
        segmentation: None,
        depth: None,
        anomaly_score: None,
        anomaly_map: None,
    };
    for named in &result.heads {
        match &named.output {
            HeadOutput::Detections(d) => p.detections = Some(d.clone()),
            HeadOutput::Segmentation(m) => p.segmentation = Some(m.class_ids.clone()),
            HeadOutput::Depth(d) => p.depth = Some(d.data.clone()),
            HeadOutput::Anomaly(a) => {
                p.anomaly_score = Some(a.score);
                p.anomaly_map = Some(a.map.data.clone());
            }
            HeadOutput::Classification(_) | HeadOutput::Pca(_) => {}
        }
    }
    p
}
