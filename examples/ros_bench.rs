//! Cost of publishing every head output of a frame as ROS 2 messages (CDR serialisation and
//! the DDS write, through the node's own sink), as a ratio of the backbone pass of the same
//! frames, measured in one process:
//!
//!     cargo run --release --example ros_bench -- [BACKBONE.onnx HEADS_DIR] [THREADS] [FRAMES]
//!
//! Default: the bundled demo model and heads. Frames: the synthetic scene at 640x480 with the
//! synthetic calibration (camera_info and the stride-4 point cloud are published too) and the
//! debug image on. The node runs on loopback in DDS domain 231 with a reliable and a
//! best-effort subscriber of its own on detections, depth and points, so the writes reach a
//! matched reader. Prints a Markdown table of medians.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dinov3_perception::calibration::CameraCalibration;
use dinov3_perception::config::share::{bundled_heads, bundled_model};
use dinov3_perception::frame::SystemClock;
use dinov3_perception::ros::msg::{Detection2DArray, Image, PointCloud2};
use dinov3_perception::ros::node::NodeSettings;
use dinov3_perception::ros::RosNode;
use dinov3_perception::sink::outputs::{topics, LiveSettings, PublishPlan};
use dinov3_perception::sink::ros::RosSink;
use dinov3_perception::sink::Sink;
use dinov3_perception::BackboneModel;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (model_path, heads_dir, rest) = if args.len() >= 3 && args[1].ends_with(".onnx") {
        (PathBuf::from(&args[1]), PathBuf::from(&args[2]), &args[3..])
    } else {
        (bundled_model(), bundled_heads(), &args[1..])
    };
    let threads: usize = rest.first().map_or(Ok(2), |s| s.parse())?;
    let frames: usize = rest.get(1).map_or(Ok(30), |s| s.parse())?;

    let model = BackboneModel::load(&model_path)?;
    let size = model.resolve_size(None)?;
    let m = &model.manifest;
    let (mut stage, names) = common::stage_with_heads(&model, &heads_dir, threads)?;

    let env = |k: &str| match k {
        "ROS_DOMAIN_ID" => Some("231".to_string()),
        "ROS_LOCALHOST_ONLY" => Some("1".to_string()),
        _ => None,
    };
    let settings = NodeSettings::from_args(Some("ros_bench"), None, &[], &env)?;
    let mut node = RosNode::start(settings)?;
    let live = Arc::new(LiveSettings::new(true, true, 4, true));
    let plan = PublishPlan {
        heads: names.iter().filter_map(|n| n.parse().ok()).collect(),
        calibration: Some(CameraCalibration::synthetic(640, 480)),
        rectified: false,
        vision_method: "bench".into(),
        vision_database: String::new(),
    };
    let mut sink = RosSink::new(&mut node, &plan, live)?;
    // Readers of our own, so writes go to a matched reader.
    let _d = node.subscription::<Detection2DArray>(
        topics::DETECTIONS,
        "vision_msgs",
        "Detection2DArray",
    )?;
    let _p = node.subscription::<PointCloud2>(topics::POINTS, "sensor_msgs", "PointCloud2")?;
    let _i = node.subscription::<Image>(topics::DEPTH, "sensor_msgs", "Image")?;
    std::thread::sleep(std::time::Duration::from_millis(500));

    let scene = common::scene()?;
    let clock = SystemClock;
    let (mut backbone, mut all_heads, mut publish) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=frames {
        let frame = common::frame(&scene, i, "synthetic_camera");
        let r = stage.run_frame(frame, &clock).map_err(anyhow::Error::msg)?;
        let t = Instant::now();
        sink.consume(&r).map_err(|e| anyhow::anyhow!("{e}"))?;
        let p = t.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            continue; // warm-up (fits the PCA basis)
        }
        backbone.push(r.timings.backbone.as_secs_f64() * 1e3);
        all_heads.push(r.timings.heads.as_secs_f64() * 1e3);
        publish.push(p);
    }
    let b = common::median(&mut backbone);
    let h = common::median(&mut all_heads);
    let p = common::median(&mut publish);
    println!(
        "{} {}x{} ({threads} threads, {frames} frames of 640x480; heads: {})\n",
        m.variant,
        size.height,
        size.width,
        names.join(", ")
    );
    println!("| stage | median ms | ratio to backbone |\n|---|---|---|");
    println!("| backbone | {b:.2} | 1.000 |");
    println!("| all heads | {h:.2} | {:.3} |", h / b);
    println!(
        "| ROS publishing (all topics, camera_info, points, debug image) | {p:.2} | {:.3} |",
        p / b
    );
    Ok(())
}
