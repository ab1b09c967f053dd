//! Offline evaluation: metrics of head outputs against ground truth.
//!
//! So far the pixel metrics the default run reports against the synthetic scene's ground truth;
//! COCO mAP is computed by pycocotools in `models/eval_heads.py` from `predict` output.

pub mod metrics;
