//! Offline evaluation: head outputs scored against ground truth (`dinov3_perception eval`).
//!
//! * [`coco`]: box detection, a step-for-step port of pycocotools' `COCOeval` (bbox): the 12
//!   stats, per-class AP and PR curves.
//! * [`auroc`]: ROC AUC as `sklearn.metrics.roc_auc_score` (image and pixel anomaly scores).
//! * [`metrics`]: segmentation confusion (mIoU, pixel accuracy), depth errors (AbsRel, SqRel,
//!   RMSE, log RMSE, delta1..3), box recall; shared with the default run's quality line.
//! * [`depth`]: depth errors with the histograms the plots show.
//! * [`truth`]: ground truth on disk, [`FrameKey`] and how frames find their truth.
//! * [`frame_prediction`]: [`FramePrediction`], one frame's head outputs (also made from a
//!   pipeline run's outputs).
//! * [`evaluator`]: [`FramePrediction`]s streamed into an [`Evaluator`], out comes a [`Report`].
//! * [`predictions`]: `predict`'s output folder read as frames; [`recording`]: a node recording read
//!   as frames.
//! * [`report`]: the JSON report; [`markdown`]: the same as Markdown; [`plots`]: PNG plots;
//!   [`compare`]: the differences of two reports.
//! * [`files`]: reading masks, depth and maps; [`error`]: [`EvalError`].

pub mod auroc;
pub mod coco;
pub mod compare;
pub mod depth;
pub mod error;
pub mod evaluator;
pub mod files;
pub mod frame_prediction;
pub mod markdown;
pub mod metrics;
pub mod plots;
pub mod predictions;
pub mod recording;
pub mod report;
pub mod truth;

pub use error::EvalError;
pub use evaluator::{evaluate, EvalOptions, Evaluator};
pub use frame_prediction::FramePrediction;
pub use report::Report;
pub use truth::{FrameKey, GroundTruth};
