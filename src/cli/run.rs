//! `run`: the node, and the composition root. The configuration is resolved once
//! ([`crate::config::resolve`]); then the calibration, the backbone and heads, the ROS node with
//! its topics and parameter services, the frame source and the sinks are built, each from its
//! own section, and the pipeline runs until the source ends, `max_frames` are processed or
//! SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{exit, CommandError};
use crate::backend::{LoadedBackbone, Notify};
use crate::calibration::{CameraCalibration, Undistorter};
use crate::config::{self, live, NodeConfig, NodeEnv, RunFlags};
use crate::frame::DEFAULT_FRAME_ID;
use crate::frame::{Clock, Frame, SystemClock};
use crate::heads::loader::load_heads_for;
use crate::heads::manifest::Task;
use crate::heads::{HeadControl, HeadSet};
use crate::pipeline::{self, InferenceStage, PipelineReport};
use crate::ros::args::RosArgs;
use crate::ros::node::DEFAULT_NODE_NAME;
use crate::ros::params::{ParamStore, ParameterValue};
use crate::ros::services::ParameterServices;
use crate::ros::RosNode;
use crate::sink::diagnostics::Diagnostics;
use crate::sink::foxglove::{LiveView, LiveViewSettings};
use crate::sink::log::HeadLogSink;
use crate::sink::outputs::{topics, LiveSettings, Message, Outgoing, OutputBuilder, PublishPlan};
use crate::sink::record;
use crate::sink::ros::{RosDiagnostics, RosSink};
use crate::sink::{MessageTap, Sink};
use crate::source::ros_image::RosImageSource;
use crate::source::{FrameSource, SourceError, SourceSettings, SourceStats};

/// A ROS log level (`debug`, `info`, `warn`, `error`, `fatal`, any case).
fn parse_log_level(text: &str) -> Result<log::LevelFilter, CommandError> {
    match text.to_ascii_lowercase().as_str() {
        "debug" => Ok(log::LevelFilter::Debug),
        "info" => Ok(log::LevelFilter::Info),
        "warn" => Ok(log::LevelFilter::Warn),
        "error" | "fatal" => Ok(log::LevelFilter::Error),
        _ => Err(CommandError::Usage(format!(
            "--log-level {text}: give debug, info, warn, error or fatal"
        ))),
    }
}

/// `run` from the command line: `flags`, and the `--ros-args` tokens `ros2 launch` appends.
pub fn run(flags: &RunFlags, ros_tokens: &[String]) -> Result<(), CommandError> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // SIGINT and SIGTERM (the `termination` feature): stop, drain, close, exit 0.
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                // A second signal while draining: leave at once.
                std::process::exit(exit::FAILURE);
            }
        })
        .map_err(|e| {
            CommandError::Startup(format!("cannot install the SIGINT/SIGTERM handler: {e}"))
        })?;
    }
    let ros = RosArgs::parse(ros_tokens, DEFAULT_NODE_NAME).map_err(crate::ros::RosError::from)?;
    if let Some(level) = &ros.log_level {
        log::set_max_level(parse_log_level(level)?);
    }
    let config = config::resolve(flags, &ros, &NodeEnv::from_process())?;
    let report = run_node(config, stop)?;
    let sink_drops: u64 = report.sink_drops.values().sum();
    // Before the last line, which scripts read for the counts.
    log::info!(
        "latency over the run, p50/p99 ms:{}",
        report.timings.summary(crate::pipeline::STAGES)
    );
    log::info!(
        "stopped after {:.1} s: {} frames captured, {} processed ({:.1} fps), {} dropped (newest wins), {} failed, {} sink drops; source: {} skipped, {} reconnects",
        report.elapsed.as_secs_f64(),
        report.captured,
        report.processed,
        report.processed as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.dropped,
        report.failed,
        sink_drops,
        report.source.skipped,
        report.source.reconnects
    );
    match report.source_error {
        Some(e) => Err(CommandError::SourceFailed(Box::new(e))),
        None => Ok(()),
    }
}

/// Frames checked against the calibration (size) and optionally undistorted.
struct CalibratedSource {
    inner: Box<dyn FrameSource>,
    calibration: CameraCalibration,
    undistorter: Option<Undistorter>,
}

impl FrameSource for CalibratedSource {
    fn describe(&self) -> String {
        let u = if self.undistorter.is_some() {
            ", undistorted"
        } else {
            ""
        };
        format!(
            "{} (calibration {}{u})",
            self.inner.describe(),
            self.calibration.camera_name
        )
    }

    fn start(&mut self) -> Result<(), SourceError> {
        self.inner.start()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(mut frame) = self.inner.next_frame()? else {
            return Ok(None);
        };
        let bad = |reason: String| SourceError::BadParameter {
            name: "calibration_file",
            value: self.calibration.camera_name.clone(),
            reason,
        };
        self.calibration
            .check_image_size(frame.width, frame.height)
            .map_err(|e| bad(e.to_string()))?;
        if let Some(u) = &self.undistorter {
            let mut out = vec![0u8; frame.rgb.len()];
            u.apply(&frame.rgb, &mut out)
                .map_err(|e| bad(e.to_string()))?;
            frame.rgb = out;
        }
        Ok(Some(frame))
    }

    fn stop(&mut self) {
        self.inner.stop()
    }

    fn stats(&self) -> SourceStats {
        self.inner.stats()
    }
}

/// The heads the configuration asks for, with their start-up switches, rates and settings.
fn build_heads(config: &NodeConfig, backbone: &LoadedBackbone) -> Result<HeadSet, CommandError> {
    let section = &config.heads;
    let Some(load) = &section.load else {
        return Ok(HeadSet::new());
    };
    let heads = load_heads_for(load, backbone, &config.backbone.backend)?;
    for task in Task::ALL {
        let Some(control) = heads.control(task.as_str()) else {
            continue;
        };
        if section.enabled.get(&task) == Some(&false) {
            control.set_enabled(false);
        }
        if let Some(hz) = section.rate_hz.get(&task) {
            control.set_rate_hz(*hz).map_err(|e| {
                CommandError::Usage(format!("heads.{}.rate_hz: {e}", task.as_str()))
            })?;
        }
    }
    for s in &section.settings {
        match heads.control(s.task.as_str()) {
            Some(c) => c.request_setting(s.name, s.value),
            None => log::warn!(
                "{0}.{1} is set but the {0} head is not loaded",
                s.task.as_str(),
                s.name
            ),
        }
    }
    Ok(heads)
}

/// Run the node configured by `config` until its source ends, `max_frames` are processed or
/// `stop` is set.
pub fn run_node(config: NodeConfig, stop: Arc<AtomicBool>) -> Result<PipelineReport, CommandError> {
    // Calibration: the given file, the synthetic camera for the synthetic scene, else none.
    let calibration = match (&config.calibration.file, &config.source) {
        (Some(path), _) => Some(CameraCalibration::load(path)?),
        (None, SourceSettings::Synthetic(s)) => Some(CameraCalibration::synthetic(
            s.width as u32,
            s.height as u32,
        )),
        _ => None,
    };
    if let (Some(cal), SourceSettings::Synthetic(s)) = (&calibration, &config.source) {
        // The synthetic image size is known now: a mismatch is a start-up error.
        cal.check_image_size(s.width, s.height)?;
    }
    let calibrated_frame_id = config
        .calibration
        .file
        .as_ref()
        .and(calibration.as_ref())
        .map(|c| c.camera_name.clone());
    let frame_id = config
        .frame_id
        .clone()
        .or_else(|| calibration.as_ref().map(|c| c.camera_name.clone()))
        .unwrap_or_else(|| DEFAULT_FRAME_ID.into());

    // The ROS node first, so `/diagnostics` can say what a slow start (the first TensorRT
    // engine build) is doing.
    let r = &config.ros;
    let mut node = if r.enabled {
        Some(RosNode::start(r.node.clone())?)
    } else {
        None
    };
    let startup_diagnostics = node
        .as_mut()
        .map(|n| RosDiagnostics::new(n).map(Arc::new))
        .transpose()?;
    let node_name = r.node.node_name.clone();
    let notify: Notify = Arc::new(move |line: &str| {
        log::warn!("{line}");
        if let Some(tap) = &startup_diagnostics {
            let now = SystemClock.now();
            tap.offer(&Outgoing {
                topic: topics::DIAGNOSTICS.to_string(),
                stamp: now,
                message: Message::Diagnostics(Diagnostics::starting(&node_name, line, now)),
            });
        }
    });

    // Backbone and heads.
    let b = &config.backbone;
    let start = Instant::now();
    let backbone = LoadedBackbone::load_notified(&b.model, b.input_size, &b.backend, notify)?;
    log::info!(
        "model {} ({}, input {}) loaded and prepared on {} in {:.2} s",
        backbone.model.onnx_path.display(),
        backbone.model.manifest.variant,
        backbone.size,
        backbone.backend,
        start.elapsed().as_secs_f64()
    );
    let heads = build_heads(&config, &backbone)?;
    // Threshold parameters the user left unset show the head manifest's values.
    let mut params = config.params.clone();
    for (head, setting, v) in heads.settings() {
        let key = format!("{head}.{setting}");
        params.table.set_default(&key, ParameterValue::Double(v));
        if matches!(params.values.get(&key), Some(ParameterValue::Double(x)) if x.is_nan()) {
            params.values.insert(key, ParameterValue::Double(v));
        }
    }
    let controls: BTreeMap<Task, Arc<HeadControl>> = heads
        .controls()
        .into_iter()
        .map(|(_, task, c)| (task, c))
        .collect();
    let live = Arc::new(LiveSettings::new(
        r.debug_image,
        r.points_enabled,
        r.points_stride,
        r.points_rgb,
    ));
    // A replay runs on the recording's clock (the stamps of the frames read).
    let clock: Arc<dyn Clock> = match &config.source {
        SourceSettings::Mcap(c) => c.clock.clone(),
        _ => Arc::new(SystemClock),
    };

    // The node's parameter services and publishers.
    let store = Arc::new(ParamStore::new(
        params.table,
        params.values,
        live::set_action(controls, live.clone()),
    ));
    let services = node
        .as_mut()
        .map(|n| ParameterServices::start(n, store.clone()))
        .transpose()?;

    let source: Box<dyn FrameSource> = match (config.source, node.as_mut()) {
        (SourceSettings::Ros { topic }, Some(node)) => Box::new(RosImageSource::new(
            node,
            &topic,
            config.frame_id.clone().or(calibrated_frame_id),
            stop.clone(),
        )?),
        (SourceSettings::Mcap(mut c), _) => {
            c.frame_id = config.frame_id.clone().or(calibrated_frame_id);
            SourceSettings::Mcap(c).open(frame_id, clock.clone(), stop.clone())?
        }
        (other, _) => other.open(frame_id, clock.clone(), stop.clone())?,
    };
    let source: Box<dyn FrameSource> = match &calibration {
        Some(cal) => Box::new(CalibratedSource {
            inner: source,
            undistorter: config.calibration.undistort.then(|| Undistorter::new(cal)),
            calibration: cal.clone(),
        }),
        None => source,
    };

    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if !heads.is_empty() {
        log::info!("heads: {}", heads.names().join(", "));
        sinks.push(Box::new(HeadLogSink::new(
            config.sinks.status_interval,
            (0.0, f32::MAX),
        )));
    }
    let heads_dir = config.heads.load.as_ref().and_then(|l| l.dir.clone());
    let plan = PublishPlan {
        heads: heads
            .controls()
            .into_iter()
            .map(|(_, task, _)| task)
            .collect(),
        calibration: calibration.clone(),
        rectified: config.calibration.undistort,
        vision_method: format!(
            "DINOv3 {} backbone ({}) + linear detection head",
            backbone.model.manifest.variant,
            backbone.model.onnx_path.display()
        ),
        vision_database: heads_dir
            .as_deref()
            .map(|d| d.join("detection.json").display().to_string())
            .unwrap_or_default(),
    };
    // Where `/diagnostics` goes besides the log line.
    let mut taps: Vec<Box<dyn MessageTap>> = Vec::new();
    if let Some(node) = node.as_mut() {
        sinks.push(Box::new(RosSink::new(node, &plan, live.clone())?));
        taps.push(Box::new(RosDiagnostics::new(node)?));
    }
    // The Foxglove live view (works without ROS): frame results, and /diagnostics as a tap.
    let live_view = match config.sinks.foxglove {
        Some(address) => {
            let settings = LiveViewSettings::new(address);
            let view = LiveView::start(&settings, &config.ros.node, &plan, live.clone(), &*clock)?;
            taps.push(Box::new(view.tap()));
            let stats = view.stats();
            sinks.push(Box::new(view));
            Some(stats)
        }
        None => None,
    };
    let mut statics = BTreeMap::from([
        (
            "model".to_string(),
            backbone.model.onnx_path.display().to_string(),
        ),
        (
            "model_variant".to_string(),
            backbone.model.manifest.variant.clone(),
        ),
        ("input_size".to_string(), backbone.size.to_string()),
        ("source".to_string(), config.source_spec.to_string()),
        ("heads".to_string(), heads.names().join(",")),
    ]);
    statics.extend(backbone.status.diagnostics());
    let diagnostics = Diagnostics::new(&config.ros.node.node_name, statics).with_warning(
        backbone.status.fallback.as_ref().map(|_| {
            format!(
                "running on tract: {} could not be used",
                backbone.status.requested
            )
        }),
    );
    let mut record_stats = None;
    if let Some(settings) = &config.sinks.record {
        let builder = OutputBuilder::new(&plan, live.clone());
        let (sink, tap, stats) = record::start(settings, builder, &config.ros.node)?;
        log::info!("recording to {}", settings.dir.display());
        sinks.push(Box::new(sink));
        taps.push(Box::new(tap));
        record_stats = Some(stats);
    }

    let stage = InferenceStage::new(
        backbone.prepared.as_ref(),
        Arc::new(backbone.model.manifest.clone()),
        b.resize,
    )?
    .with_heads(heads);
    let status_clock = clock.clone();
    let report = pipeline::run(
        source,
        stage,
        sinks,
        &config.pipeline,
        clock,
        stop,
        &mut |status| {
            log::info!("{}", status.line());
            if taps.is_empty() {
                return;
            }
            let mut counters = Vec::new();
            let mut errors = Vec::new();
            if let Some(r) = &record_stats {
                counters.push(("record_written", r.written.load(Ordering::Relaxed)));
                counters.push(("record_dropped", r.dropped.load(Ordering::Relaxed)));
                errors.extend(r.error());
            }
            if let Some(node) = &node {
                let malformed = services.as_ref().map_or(0, |s| s.malformed_requests());
                counters.push(("rosout_dropped", node.rosout_dropped()));
                counters.push(("parameter_requests_malformed", malformed));
            }
            if let Some(view) = &live_view {
                counters.push(("live_view_dropped", view.dropped()));
            }
            let now = status_clock.now();
            let message = Outgoing {
                topic: topics::DIAGNOSTICS.into(),
                stamp: now,
                message: Message::Diagnostics(diagnostics.message(status, now, &counters, &errors)),
            };
            for tap in &taps {
                tap.offer(&message);
            }
        },
    )?;
    // Publishers and services go before the node and its participant.
    drop(taps);
    drop(services);
    drop(node);
    Ok(report)
}
