//! `eval`: score predictions against ground truth offline; print the COCO summary and the other
//! metrics, optionally write `report.json`, `report.md` and `plots/*.png`; or compare two reports.
//!
//! Three steps, kept apart so new prediction sources plug in without touching the metrics:
//! [`EvalArgs`] -> ground truth ([`load_truth`]) and a prediction input ([`PredictionInput`]:
//! a COCO results file and/or a stream of [`FramePrediction`]s) -> [`score`] -> [`write_report`].
//! A recording or a live pipeline run is one more way to make the frame stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use super::CommandError;
use crate::eval::coco::{load_results, CocoDetection};
use crate::eval::compare::compare_files;
use crate::eval::evaluator::DEFAULT_IGNORE_INDEX;
use crate::eval::markdown::to_markdown;
use crate::eval::plots::write_plots;
use crate::eval::predictions::PredictionsDir;
use crate::eval::recording::RecordingFrames;
use crate::eval::FrameKey;
use crate::eval::{EvalError, EvalOptions, Evaluator, FramePrediction, GroundTruth, Report};
use crate::sink::record::GROUND_TRUTH_DIR;

/// Arguments of `eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Ground-truth directory (annotations.json, masks/, depth/, anomaly/; `dataset synthetic`
    /// writes it).
    #[arg(long, conflicts_with = "coco")]
    pub truth: Option<PathBuf>,
    /// COCO instances file, for detections only.
    #[arg(long)]
    pub coco: Option<PathBuf>,
    /// COCO results JSON ([{image_id, category_id, bbox, score}, ...]); replaces the
    /// predictions folder's detections.json.
    #[arg(long)]
    pub detections: Option<PathBuf>,
    /// Folder `predict --out` wrote (detections.json, masks/, depth/, anomaly.json).
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// A bag the node recorded (`run --record`): its detections, segmentation, depth and
    /// anomaly topics, matched to the ground truth by stamp (default truth: BAG/ground_truth).
    #[arg(long, value_name = "BAG", conflicts_with_all = ["predictions", "source"])]
    pub recording: Option<PathBuf>,
    /// Run the backbone and heads over a recording (mcap:PATH, every frame) or an image folder
    /// (dir:PATH, matched by file name) and score what they predict (default truth for mcap:
    /// the bag's ground_truth).
    #[arg(long, value_name = "SPEC", conflicts_with = "predictions")]
    pub source: Option<crate::source::SourceSpec>,
    /// Backbone .onnx for --source (default: the bundled tiny demo model).
    #[arg(long, requires = "source")]
    pub model: Option<PathBuf>,
    /// Heads directory for --source (default: the demo heads with the bundled model).
    #[arg(long, requires = "source")]
    pub heads: Option<PathBuf>,
    /// How the backbone runs (with --source).
    #[command(flatten)]
    pub backbone: crate::config::BackboneFlags,
    /// Write report.json, report.md and plots/*.png here (default: print the summary only).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Score depth only where the truth is at most this many metres.
    #[arg(long)]
    pub max_depth: Option<f64>,
    /// Truth class id that segmentation does not score.
    #[arg(long, default_value_t = DEFAULT_IGNORE_INDEX)]
    pub ignore_index: u8,
    /// Compare two report.json files: print metric, A, B, B - A.
    #[arg(long, num_args = 2, value_names = ["A", "B"],
          conflicts_with_all = ["truth", "coco", "detections", "predictions", "out"])]
    pub compare: Option<Vec<PathBuf>>,
}

/// A stream of predicted frames, e.g. read lazily from files or a recording.
pub type FrameStream<'a> = Box<dyn Iterator<Item = Result<FramePrediction, EvalError>> + 'a>;

/// What to score: a COCO results file and/or frames.
pub struct PredictionInput<'a> {
    /// A COCO results file and its contents.
    pub coco_results: Option<(PathBuf, Vec<CocoDetection>)>,
    /// Frames, with the number expected (for the progress bar) when known.
    pub frames: Option<(Option<usize>, FrameStream<'a>)>,
    /// Where the frames were read from (errors name its files).
    pub predictions_dir: Option<PathBuf>,
}

/// The ground truth the arguments name (a recording's own `ground_truth/` by default).
pub fn load_truth(args: &EvalArgs) -> Result<GroundTruth, CommandError> {
    let recorded = args.recording.clone().or_else(|| match &args.source {
        Some(crate::source::SourceSpec::Mcap(p)) => Some(p.clone()),
        _ => None,
    });
    let beside = recorded
        .map(|bag| bag.join(GROUND_TRUTH_DIR))
        .filter(|d| d.is_dir());
    match (&args.truth, &args.coco, beside) {
        (Some(dir), _, _) => Ok(GroundTruth::from_dir(dir)?),
        (None, Some(file), _) => Ok(GroundTruth::from_coco_file(file)?),
        (None, None, Some(dir)) => Ok(GroundTruth::from_dir(&dir)?),
        (None, None, None) => Err(CommandError::Usage(
            "eval needs ground truth: --truth DIR (a dataset directory) or --coco FILE \
             (COCO instances), or --compare A.json B.json"
                .into(),
        )),
    }
}

fn validate(args: &EvalArgs) -> Result<(), CommandError> {
    if let Some(m) = args.max_depth {
        if !(m.is_finite() && m > 0.0) {
            return Err(CommandError::Usage(format!(
                "--max-depth {m}: give a positive number of metres"
            )));
        }
    }
    if args.detections.is_none()
        && args.predictions.is_none()
        && args.recording.is_none()
        && args.source.is_none()
    {
        return Err(CommandError::Usage(
            "eval needs predictions: --detections FILE (COCO results), --predictions DIR \
             (what `predict --out` wrote), --recording BAG (what `run --record` wrote) or \
             --source mcap:BAG|dir:IMAGES (run the model over it)"
                .into(),
        ));
    }
    Ok(())
}

/// Score `input` against `truth`, driving a progress bar (hidden when stderr is not a terminal).
pub fn score(
    truth: &GroundTruth,
    input: PredictionInput<'_>,
    mut options: EvalOptions,
) -> Result<Report, CommandError> {
    options.predictions_dir = input.predictions_dir;
    let mut ev = Evaluator::new(truth, options);
    if let Some((path, results)) = input.coco_results {
        ev.add_coco_results(results, &path);
    }
    if let Some((len, frames)) = input.frames {
        let bar = match len {
            Some(n) => ProgressBar::new(n as u64),
            None => ProgressBar::no_length(),
        };
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} frames {msg}") {
            bar.set_style(style);
        }
        for frame in frames {
            ev.add(frame?)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    Ok(ev.finish()?)
}

/// The summary printed to stdout: the COCO 12 lines, then one line per other task.
pub fn summary(report: &Report) -> String {
    let mut lines = Vec::new();
    let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.4}"));
    if let Some(d) = &report.detection {
        lines.push(format!(
            "detection: {} images, {} ground-truth boxes, {} results",
            d.images, d.ground_truth_boxes, d.results
        ));
        lines.extend(d.summary.iter().cloned());
    }
    if let Some(s) = &report.segmentation {
        lines.push(format!(
            "segmentation: mIoU {}, pixel accuracy {}, {} classes, {} pixels",
            f(s.miou),
            f(s.pixel_accuracy),
            s.per_class.len(),
            s.pixels
        ));
    }
    if let Some(d) = &report.depth {
        lines.push(format!(
            "depth: AbsRel {}, SqRel {}, RMSE {}, log RMSE {}, delta1 {}, delta2 {}, delta3 {}, {} pixels",
            f(d.abs_rel),
            f(d.sq_rel),
            f(d.rmse),
            f(d.log_rmse),
            f(d.delta1),
            f(d.delta2),
            f(d.delta3),
            d.pixels
        ));
    }
    if let Some(a) = &report.anomaly {
        lines.push(format!(
            "anomaly: image AUROC {} ({} images, {} anomalous), pixel AUROC {} ({} pixels)",
            f(a.image_auroc),
            a.images,
            a.anomalous_images,
            f(a.pixel_auroc),
            a.pixels
        ));
    }
    if !report.not_scored.is_empty() {
        lines.push(format!("not scored: {}", report.not_scored.join("; ")));
    }
    lines.join("\n")
}

fn write_file(path: &Path, text: &str) -> Result<(), CommandError> {
    std::fs::write(path, text).map_err(|e| CommandError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Write `report.json`, `report.md` and `plots/*.png` into `out`.
pub fn write_report(report: &Report, out: &Path) -> Result<(), CommandError> {
    std::fs::create_dir_all(out).map_err(|e| CommandError::Write {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    let json_path = out.join("report.json");
    let json = serde_json::to_string_pretty(report).map_err(|e| CommandError::Write {
        path: json_path.clone(),
        reason: e.to_string(),
    })?;
    write_file(&json_path, &json)?;
    write_file(&out.join("report.md"), &to_markdown(report))?;
    let plots = write_plots(report, &out.join("plots"))?;
    log::info!(
        "wrote {}, report.md and {} plot(s) to {}",
        json_path.display(),
        plots.len(),
        out.display()
    );
    Ok(())
}

fn path_value(p: &Option<PathBuf>) -> Option<serde_json::Value> {
    p.as_ref().map(|p| p.display().to_string().into())
}

/// `eval`.
pub fn run(args: &EvalArgs) -> Result<(), CommandError> {
    if let Some(pair) = &args.compare {
        let [a, b] = pair.as_slice() else {
            return Err(CommandError::Usage(
                "--compare takes two report files".into(),
            ));
        };
        print!("{}", compare_files(a, b)?);
        return Ok(());
    }
    validate(args)?;
    let truth = load_truth(args)?;
    let dir = args
        .predictions
        .as_deref()
        .map(PredictionsDir::open)
        .transpose()?;
    // The folder's detections.json (predict always writes one) is scored only against COCO
    // annotations; an explicit --detections without them is an error (in the evaluator).
    let folder_results = dir.as_ref().and_then(|d| d.detections.clone());
    if let (None, Some(f), None) = (&args.detections, &folder_results, &truth.coco) {
        log::info!(
            "not scoring {}: the ground truth {} has no annotations.json",
            f.display(),
            truth.source.display()
        );
    }
    let results_file = args
        .detections
        .clone()
        .or(folder_results.filter(|_| truth.coco.is_some()));
    let coco_results = match results_file {
        Some(p) => {
            let r = load_results(&p)?;
            Some((p, r))
        }
        None => None,
    };
    let mut inputs: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (k, v) in [
        ("truth", path_value(&args.truth)),
        ("coco", path_value(&args.coco)),
        (
            "detections",
            coco_results
                .as_ref()
                .map(|r| r.0.display().to_string().into()),
        ),
        ("predictions", path_value(&args.predictions)),
        ("max_depth", args.max_depth.map(Into::into)),
        ("ignore_index", Some(args.ignore_index.into())),
    ] {
        if let Some(v) = v {
            inputs.insert(k.to_string(), v);
        }
    }
    for (k, v) in [
        ("recording", path_value(&args.recording)),
        ("source", args.source.as_ref().map(|s| s.to_string().into())),
        ("model", path_value(&args.model)),
    ] {
        if let Some(v) = v {
            inputs.insert(k.to_string(), v);
        }
    }
    let frames: Option<(Option<usize>, FrameStream)> = if let Some(bag) = &args.recording {
        Some((None, Box::new(RecordingFrames::open(bag)?)))
    } else if let Some(spec) = &args.source {
        Some(pipeline_frames(spec, args)?)
    } else {
        dir.as_ref().filter(|d| !d.is_empty()).map(|d| {
            let frames: FrameStream = Box::new(d.frames());
            (Some(d.len()), frames)
        })
    };
    let input = PredictionInput {
        coco_results,
        frames,
        predictions_dir: args.predictions.clone(),
    };
    let options = EvalOptions {
        max_depth: args.max_depth,
        ignore_index: Some(args.ignore_index),
        predictions_dir: None,
        inputs,
    };
    let report = score(&truth, input, options)?;
    println!("{}", summary(&report));
    if let Some(out) = &args.out {
        write_report(&report, out)?;
    }
    Ok(())
}

/// The backbone and heads run over `spec` (every frame), each pass scored as it comes.
fn pipeline_frames(
    spec: &crate::source::SourceSpec,
    args: &EvalArgs,
) -> Result<(Option<usize>, FrameStream<'static>), CommandError> {
    use crate::backend::LoadedBackbone;
    use crate::config::share::{bundled_heads, bundled_model};
    use crate::config::BackboneConfig;
    use crate::frame::{Frame, Stamp};
    use crate::heads::loader::{load_heads_for, HeadsConfig};
    use crate::pipeline::InferenceStage;
    use crate::source::mcap::{McapConfig, McapSource, ReplayClock};
    use crate::source::{FrameSource, SourceSpec};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let model = args.model.clone().unwrap_or_else(bundled_model);
    let heads_dir = args
        .heads
        .clone()
        .or_else(|| args.model.is_none().then(bundled_heads));
    let b = BackboneConfig::from_flags(model, &args.backbone)?;
    let backbone = LoadedBackbone::load(&b.model, b.input_size, &b.backend)?;
    let heads = load_heads_for(
        &HeadsConfig {
            dir: heads_dir,
            pca: false,
            ..HeadsConfig::default()
        },
        &backbone,
        &b.backend,
    )?;
    let stage = InferenceStage::new(
        backbone.prepared.as_ref(),
        Arc::new(backbone.model.manifest.clone()),
        b.resize,
    )?
    .with_heads(heads);
    // Frames with the key their ground truth is found by.
    let frames: Box<dyn Iterator<Item = Result<(Frame, FrameKey), CommandError>>> = match spec {
        SourceSpec::Dir(dir) => {
            let files = crate::image_io::list_images(dir)?;
            let n = files.len();
            return Ok((
                Some(n),
                score_frames(
                    files.into_iter().enumerate().map(|(i, path)| {
                        let img = crate::image_io::load_rgb(&path)?;
                        let stem = path
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        Ok((
                            Frame {
                                width: img.width,
                                height: img.height,
                                rgb: img.data,
                                stamp: Stamp(0),
                                seq: i as u64,
                                frame_id: crate::frame::DEFAULT_FRAME_ID.into(),
                                ground_truth: None,
                            },
                            FrameKey::Name(stem),
                        ))
                    }),
                    stage,
                    dir.clone(),
                ),
            ));
        }
        SourceSpec::Mcap(path) => {
            let mut source = McapSource::open(
                McapConfig {
                    path: path.clone(),
                    topic: None,
                    rate: 0.0,
                    frame_id: None,
                    clock: Arc::new(ReplayClock::new()),
                },
                Arc::new(AtomicBool::new(false)),
            )?;
            Box::new(std::iter::from_fn(move || match source.next_frame() {
                Ok(Some(f)) => {
                    let key = FrameKey::Stamp(f.stamp);
                    Some(Ok((f, key)))
                }
                Ok(None) => None,
                Err(e) => Some(Err(CommandError::from(e))),
            }))
        }
        other => {
            return Err(CommandError::Usage(format!(
                "eval --source {other}: give mcap:BAG or dir:IMAGES (recorded or stored frames)"
            )))
        }
    };
    Ok((None, score_frames(frames, stage, spec_path(spec))))
}

fn spec_path(spec: &crate::source::SourceSpec) -> PathBuf {
    match spec {
        crate::source::SourceSpec::Mcap(p) | crate::source::SourceSpec::Dir(p) => p.clone(),
        other => PathBuf::from(other.to_string()),
    }
}

/// Run `stage` on each frame and turn the result into a predicted frame; errors name `origin`.
fn score_frames(
    frames: impl Iterator<Item = Result<(crate::frame::Frame, FrameKey), CommandError>> + 'static,
    mut stage: crate::pipeline::InferenceStage,
    origin: PathBuf,
) -> FrameStream<'static> {
    let clock = crate::frame::SystemClock;
    Box::new(frames.map(move |item| {
        let failed = |reason: String| EvalError::Format {
            path: origin.clone(),
            reason,
        };
        let (frame, key) = item.map_err(|e| failed(e.to_string()))?;
        let result = stage
            .run_frame(frame, &clock)
            .map_err(|e| failed(format!("{key}: {e}")))?;
        if let Some((head, e)) = result.head_errors.first() {
            return Err(failed(format!("{key}: head {head}: {e}")));
        }
        Ok(FramePrediction::from_outputs(
            key,
            result.frame.width,
            result.frame.height,
            &result.heads,
        ))
    }))
}
