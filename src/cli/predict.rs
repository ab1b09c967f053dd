//! `predict`: the backbone and every head on a directory of images; COCO detections, class-id
//! masks, depth .npy, labels and anomaly scores written in the formats `models/eval_heads.py`
//! reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::CommandError;
use crate::backend::LoadedBackbone;
use crate::config::{BackboneConfig, BackboneFlags};
use crate::frame::{Frame, Stamp, SystemClock};
use crate::heads::loader::{load_heads_for, HeadsConfig};
use crate::heads::HeadOutput;
use crate::image_io::list_images;
use crate::image_io::load_rgb;
use crate::npz::write_npy_f32;
use crate::pipeline::InferenceStage;

/// Arguments of `predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// Backbone .onnx file.
    #[arg(long)]
    pub model: PathBuf,
    /// Heads directory.
    #[arg(long)]
    pub heads: PathBuf,
    /// Directory of PNG/JPEG images.
    #[arg(long)]
    pub images: PathBuf,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// How the backbone runs.
    #[command(flatten)]
    pub backbone: BackboneFlags,
}

#[derive(serde::Serialize)]
struct CocoResult {
    image_id: u64,
    category_id: usize,
    bbox: [f32; 4],
    score: f32,
}

/// COCO image id of an image file: its stem as a number (`000012.png` -> 12), else its 1-based
/// position.
fn image_id(path: &Path, index: usize) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(index as u64 + 1)
}

/// `predict`: every head on every image; writes `detections.json` (COCO results, category ids
/// from 1), `masks/<stem>.png`, `depth/<stem>.npy`, `classification.json`, `anomaly.json`.
pub fn run(args: &PredictArgs) -> Result<(), CommandError> {
    let b = BackboneConfig::from_flags(args.model.clone(), &args.backbone)?;
    let opts = args;
    let backbone = LoadedBackbone::load(&b.model, b.input_size, &b.backend)?;
    let config = HeadsConfig {
        dir: Some(opts.heads.clone()),
        pca: false,
        ..HeadsConfig::default()
    };
    let heads = load_heads_for(&config, &backbone, &b.backend)?;
    let names = heads.names();
    let mut stage = InferenceStage::new(
        backbone.prepared.as_ref(),
        Arc::new(backbone.model.manifest.clone()),
        b.resize,
    )?
    .with_heads(heads);
    let files = list_images(&opts.images)?;
    let write = |path: &Path, e: &dyn std::fmt::Display| CommandError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    for sub in ["masks", "depth"] {
        let d = opts.out.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| write(&d, &e))?;
    }
    let clock = SystemClock;
    let mut coco = Vec::new();
    let mut classes = serde_json::Map::new();
    let mut anomaly = serde_json::Map::new();
    let (mut backbone_s, mut heads_s) = (0.0, 0.0);
    for (i, path) in files.iter().enumerate() {
        let img = load_rgb(path)?;
        let id = image_id(path, i);
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("image")
            .to_string();
        let frame = Frame {
            width: img.width,
            height: img.height,
            rgb: img.data,
            stamp: Stamp(0),
            seq: i as u64,
            frame_id: "camera".into(),
            ground_truth: None,
        };
        let mut result =
            stage
                .run_frame(frame, &clock)
                .map_err(|error| CommandError::Inference {
                    image: path.clone(),
                    error: Box::new(error),
                })?;
        if !result.head_errors.is_empty() {
            let (head, error) = result.head_errors.swap_remove(0);
            return Err(CommandError::HeadFailed {
                image: path.clone(),
                head,
                error: Box::new(error),
            });
        }
        backbone_s += result.timings.backbone.as_secs_f64();
        heads_s += result.timings.heads.as_secs_f64();
        for h in &result.heads {
            match &h.output {
                HeadOutput::Detections(dets) => coco.extend(dets.iter().map(|d| CocoResult {
                    image_id: id,
                    category_id: d.class_id + 1,
                    bbox: [d.x0, d.y0, d.x1 - d.x0, d.y1 - d.y0],
                    score: d.score,
                })),
                HeadOutput::Segmentation(m) => {
                    let f = opts.out.join("masks").join(format!("{stem}.png"));
                    image::save_buffer(
                        &f,
                        &m.class_ids,
                        m.width as u32,
                        m.height as u32,
                        image::ColorType::L8,
                    )
                    .map_err(|e| write(&f, &e))?;
                }
                HeadOutput::Depth(d) => {
                    let f = opts.out.join("depth").join(format!("{stem}.npy"));
                    write_npy_f32(&f, &[d.height, d.width], &d.data)?;
                }
                HeadOutput::Classification(c) => {
                    let labels: Vec<serde_json::Value> = c
                        .iter()
                        .map(|l| serde_json::json!([l.class_name, l.score]))
                        .collect();
                    classes.insert(stem.clone(), labels.into());
                }
                HeadOutput::Anomaly(a) => {
                    anomaly.insert(stem.clone(), serde_json::json!(a.score));
                }
                HeadOutput::Pca(_) => {}
            }
        }
    }
    let files_out = [
        (
            "detections.json",
            serde_json::to_value(&coco).unwrap_or_default(),
        ),
        ("classification.json", classes.into()),
        ("anomaly.json", anomaly.into()),
    ];
    for (name, value) in files_out {
        let f = opts.out.join(name);
        std::fs::write(&f, value.to_string()).map_err(|e| write(&f, &e))?;
    }
    let n = files.len() as f64;
    log::info!(
        "wrote predictions of {} images to {} (heads: {}); mean backbone {:.1} ms, heads {:.1} ms",
        files.len(),
        opts.out.display(),
        names.join(", "),
        backbone_s / n * 1e3,
        heads_s / n * 1e3
    );
    Ok(())
}
