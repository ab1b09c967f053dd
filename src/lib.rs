//! dinov3_perception: onboard perception from one DINOv3 backbone pass per camera frame.
//!
//! The chain this crate implements so far:
//!
//! ```text
//! RGB image -> preprocess (resize, normalise, NCHW f32 + mapping back to image pixels)
//!           -> backend (tract on CPU; TensorRT behind a feature later) -> Features
//!           -> task heads (detection, segmentation, depth, classification, anomaly, PCA)
//! ```
//!
//! * [`model`]: the backbone model file and its manifest, checked against each other.
//! * [`backend`]: the `check` / `prepare` / `session.run` split; [`backend::tract`] is the CPU backend.
//! * [`bag`]: rosbag2 directories with MCAP storage: writing, reading, reindexing.
//! * [`preprocess`]: image -> input tensor, with the [`preprocess::Letterbox`] inverse mapping.
//! * [`features`]: zero-copy views (CLS, registers, patch grid, intermediate layers) over the outputs.
//! * [`frame`]: RGB8 frames with capture stamp, sequence number and frame_id; the injected clock.
//! * [`synthetic`]: the seeded ray-cast scene (camera, objects, renderer) and its exact ground truth.
//! * [`source`]: frame sources (synthetic scene, image files, V4L2 cameras).
//! * [`pipeline`]: capture -> newest-wins queue -> inference (backbone + heads) -> bounded fan-out to sinks.
//! * [`heads`]: the `TaskHead` trait, the head set with run-time switches, one module per head.
//! * [`bank`]: building AnomalyDINO memory banks from normal images (`bank build`).
//! * [`dataset`]: the synthetic scene written as COCO / PNG masks / depth / ImageFolder data.
//! * [`eval`]: offline evaluation (COCO mAP as pycocotools, mIoU, depth errors, AUROC), reports, plots.
//! * [`result`]: what inference computed for one frame ([`result::FrameResult`]).
//! * [`sink`]: consumers of results: head log lines, ROS topics, the recorder, the live view.
//! * [`telemetry`]: logging, rate-limited warnings, fixed-size stage latency histograms.
//! * [`image_io`]: reading images from files with errors that name the file.
//! * [`npz`]: writing float32 arrays as NumPy `.npz`.
//! * [`truth_writer`]: synthetic ground truth as COCO JSON, PNG masks and depth `.npy`.
//! * [`tolerance`]: named numeric tolerances used to compare against PyTorch references.
//! * [`cli`]: one file per subcommand; `CommandError` and the exit codes.
//! * [`config`]: flags -> parameters -> files -> overrides -> `validate()` -> `NodeConfig`.
//! * [`calibration`]: camera_info YAML, undistortion maps, depth -> point cloud geometry.
//! * [`ros`]: the ROS 2 node (ros2-client): messages, topics, QoS, parameters, services.
//! * [`fuzz`]: fuzz targets: arbitrary bytes into each parser of outside input (`fuzz/`, `scripts/fuzz.sh`).

pub mod backend;
pub mod bag;
pub mod bank;
pub mod calibration;
pub mod cli;
pub mod config;
pub mod dataset;
pub mod eval;
pub mod features;
pub mod frame;
pub mod fuzz;
pub mod heads;
pub mod image_io;
pub mod model;
pub mod npz;
pub mod pipeline;
pub mod preprocess;
pub mod result;
pub mod ros;
pub mod sink;
pub mod source;
pub mod synthetic;
pub mod telemetry;
pub mod tolerance;
pub mod truth_writer;

pub use backend::{BackboneOutputs, Backend, BackendError, PreparedModel, Session};
pub use features::{Features, FeaturesError, PatchGrid};
pub use model::{BackboneModel, InputSize, Manifest, ModelError};
pub use preprocess::{Letterbox, PreprocessError, Preprocessor, ResizeMode, RgbImageView};
