//! The parameters of the dinov3_perception node: their declarations (defaults come from the
//! command line, so a flag and a parameter mean the same thing; a parameter file or `-p` wins),
//! the typed configuration they resolve to, and what a change does while the node runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::params::{
    value_text, ApplyChange, ParamError, ParamSpec, ParamTable, ParameterValue, Range, SetAction,
};
use super::publish::LiveSettings;
use crate::commands::{parse_input_size, RunOptions};
use crate::heads::HeadControl;
use crate::preprocess::ResizeMode;
use crate::source::convert::PixelFormat;
use crate::source::SourceSpec;

/// Head names that have `heads.<name>.*` parameters.
pub const HEAD_NAMES: [&str; 6] = [
    "detection",
    "segmentation",
    "depth",
    "classification",
    "anomaly",
    "pca",
];

/// Run-time settings of heads exposed as `<head>.<setting>` parameters (range 0..1).
pub const HEAD_SETTINGS: [(&str, &str, &str); 2] = [
    (
        "detection",
        "score_threshold",
        "minimum class score of a detection (default: the head manifest's)",
    ),
    (
        "detection",
        "nms_iou_threshold",
        "IoU above which non-maximum suppression removes the weaker box of a class (default: the head manifest's)",
    ),
];

/// Everything the parameters configure.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Source, model, heads, backend, rates (what `run` without ROS takes).
    pub run: RunOptions,
    /// camera_info YAML, if any.
    pub calibration_file: Option<PathBuf>,
    /// Undistort frames before the backbone.
    pub undistort: bool,
    /// frame_id parameter ("" = from the calibration).
    pub frame_id: String,
    /// Initial publishing switches.
    pub points_enabled: bool,
    /// Point cloud stride.
    pub points_stride: usize,
    /// Colour the points.
    pub points_rgb: bool,
    /// Publish the debug image.
    pub debug_image: bool,
    /// Topics published reliable.
    pub reliable_topics: Vec<String>,
    /// Load heads at all.
    pub heads_enabled: bool,
    /// `heads.<name>.enabled`.
    pub head_enabled: BTreeMap<String, bool>,
    /// `heads.<name>.rate_hz`.
    pub head_rate_hz: BTreeMap<String, f64>,
    /// `<head>.<setting>` values given by the user (not NaN).
    pub head_settings: Vec<(String, String, f64)>,
}

fn s(v: &str) -> ParameterValue {
    ParameterValue::String(v.to_string())
}

/// The node's declared parameters, defaults taken from the command-line options.
pub fn declare(run: &RunOptions) -> ParamTable {
    use ParameterValue::*;
    let path = |p: &Option<PathBuf>| {
        s(&p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default())
    };
    let mut specs = vec![
        ParamSpec::new("source", s(&run.source.to_string()), "frame source: synthetic | v4l2:/dev/videoN | dir:PATH | ros:TOPIC (a topic ending in /compressed is sensor_msgs/CompressedImage)").read_only(),
        ParamSpec::new("model", path(&run.model), "backbone .onnx (empty = the bundled tiny demo model)").read_only(),
        ParamSpec::new("heads_dir", path(&run.heads), "task heads directory (empty = the demo heads with the bundled model)").read_only(),
        ParamSpec::new("heads_enabled", Boolean(!run.no_heads), "load the task heads at all (false = backbone only)").read_only(),
        ParamSpec::new("max_frames", Integer(run.max_frames.unwrap_or(0) as i64), "stop after this many processed frames (0 = run until stopped)").read_only().range(Range::Integer { from: 0, to: i64::MAX }),
        ParamSpec::new("fps", Double(run.fps.unwrap_or(0.0)), "source frame rate (0 = the source's default)").read_only().range(Range::Double { from: 0.0, to: 1000.0 }),
        ParamSpec::new("width", Integer(run.width.unwrap_or(640) as i64), "requested image width (synthetic, v4l2)").read_only().range(Range::Integer { from: 16, to: 16384 }),
        ParamSpec::new("height", Integer(run.height.unwrap_or(480) as i64), "requested image height (synthetic, v4l2)").read_only().range(Range::Integer { from: 16, to: 16384 }),
        ParamSpec::new("pixel_format", s(&run.pixel_format.map(|f| f.to_string().to_ascii_lowercase()).unwrap_or_default()), "v4l2 pixel format: yuyv | mjpeg | rgb24 | grey (empty = pick automatically)").read_only(),
        ParamSpec::new("seed", Integer(run.seed as i64), "synthetic scene seed").read_only().range(Range::Integer { from: 0, to: i64::MAX }),
        ParamSpec::new("loop_files", Boolean(run.loop_files), "loop over the images of a dir: source").read_only(),
        ParamSpec::new("backend", s(&run.backend), "inference backend (tract)").read_only(),
        ParamSpec::new("threads", Integer(run.threads as i64), "threads for matrix products (0 = all cores)").read_only().range(Range::Integer { from: 0, to: 1024 }),
        ParamSpec::new("input_size", s(&run.input_size.map(|i| format!("{}x{}", i.height, i.width)).unwrap_or_default()), "HEIGHTxWIDTH model input for dynamic models (empty = the model's)").read_only(),
        ParamSpec::new("resize", s(match run.resize { ResizeMode::Stretch => "stretch", ResizeMode::Letterbox => "letterbox" }), "fit frames to the model input: stretch | letterbox").read_only(),
        ParamSpec::new("frame_id", s(&run.frame_id), "frame_id of published headers (empty = the calibration's camera_name, else the image messages' or camera_optical_frame)").read_only(),
        ParamSpec::new("calibration_file", s(""), "camera_info YAML (empty = the synthetic camera for the synthetic source, none otherwise)").read_only(),
        ParamSpec::new("undistort", Boolean(false), "undistort frames before the backbone with the calibration (maps computed once)").read_only(),
        ParamSpec::new("points.enabled", Boolean(true), "publish dinov3/points from depth and the calibration"),
        ParamSpec::new("points.stride", Integer(4), "pixel stride of the organised point cloud").range(Range::Integer { from: 1, to: 64 }),
        ParamSpec::new("points.rgb", Boolean(true), "colour the points from the frame"),
        ParamSpec::new("debug_image", Boolean(false), "publish dinov3/debug_image (the frame with detections drawn)"),
        ParamSpec::new("qos.reliable_topics", s(""), "comma-separated topics (as listed in the README) published reliable instead of best effort").read_only(),
        ParamSpec::new("status_interval", Double(run.status_interval.as_secs_f64()), "seconds between status lines and /diagnostics messages").read_only().range(Range::Double { from: 0.05, to: 3600.0 }),
        ParamSpec::new("pca_fit_frames", Integer(run.pca_fit_frames as i64), "frames the PCA feature image fits its basis on").read_only().range(Range::Integer { from: 1, to: 100_000 }),
    ];
    for head in HEAD_NAMES {
        let on = !run.disabled_heads.iter().any(|h| h == head);
        let rate = run
            .head_rates
            .iter()
            .rev()
            .find(|(h, _)| h == head)
            .map_or(0.0, |(_, r)| *r);
        specs.push(ParamSpec::new(
            format!("heads.{head}.enabled"),
            Boolean(on),
            &format!("run the {head} head"),
        ));
        specs.push(
            ParamSpec::new(
                format!("heads.{head}.rate_hz"),
                Double(rate),
                &format!("most {head} runs per second (0 = every frame)"),
            )
            .range(Range::Double {
                from: 0.0,
                to: 1000.0,
            }),
        );
    }
    for (head, setting, text) in HEAD_SETTINGS {
        // NaN = not given: the head manifest's value is filled in once the heads are loaded.
        specs.push(
            ParamSpec::new(format!("{head}.{setting}"), Double(f64::NAN), text)
                .range(Range::Double { from: 0.0, to: 1.0 }),
        );
    }
    ParamTable::new(specs)
}

fn invalid(name: &str, value: &ParameterValue, reason: impl Into<String>) -> ParamError {
    ParamError::Invalid {
        name: name.to_string(),
        origin: format!("value {}", value_text(value)),
        reason: reason.into(),
    }
}

/// Turn the resolved values into the node's configuration; values that need parsing (source,
/// pixel format, input size, resize) are checked here.
pub fn configure(
    values: &BTreeMap<String, ParameterValue>,
    base: &RunOptions,
) -> Result<NodeConfig, ParamError> {
    let get = |n: &str| values.get(n).cloned().unwrap_or(ParameterValue::NotSet);
    let string = |n: &str| match get(n) {
        ParameterValue::String(v) => v,
        _ => String::new(),
    };
    let int = |n: &str| match get(n) {
        ParameterValue::Integer(v) => v,
        _ => 0,
    };
    let double = |n: &str| match get(n) {
        ParameterValue::Double(v) => v,
        _ => f64::NAN,
    };
    let boolean = |n: &str| matches!(get(n), ParameterValue::Boolean(true));
    let mut run = base.clone();
    run.source = string("source")
        .parse::<SourceSpec>()
        .map_err(|e| invalid("source", &get("source"), e.to_string()))?;
    let path = |n: &str| {
        let v = string(n);
        (!v.is_empty()).then(|| PathBuf::from(v))
    };
    run.model = path("model");
    run.heads = path("heads_dir");
    run.no_heads = !boolean("heads_enabled");
    run.max_frames = match int("max_frames") {
        0 => None,
        n => Some(n as u64),
    };
    run.fps = match double("fps") {
        f if f > 0.0 => Some(f),
        _ => None,
    };
    run.width = Some(int("width") as usize);
    run.height = Some(int("height") as usize);
    run.pixel_format = match string("pixel_format").as_str() {
        "" => None,
        other => Some(
            other
                .parse::<PixelFormat>()
                .map_err(|e| invalid("pixel_format", &get("pixel_format"), e.to_string()))?,
        ),
    };
    run.seed = int("seed") as u64;
    run.loop_files = boolean("loop_files");
    run.backend = string("backend");
    run.threads = int("threads") as usize;
    run.input_size = match string("input_size").as_str() {
        "" => None,
        text => Some(
            parse_input_size(text)
                .map_err(|e| invalid("input_size", &get("input_size"), e.to_string()))?,
        ),
    };
    run.resize = match string("resize").as_str() {
        "stretch" => ResizeMode::Stretch,
        "letterbox" => ResizeMode::Letterbox,
        _ => {
            return Err(invalid(
                "resize",
                &get("resize"),
                "give stretch or letterbox",
            ))
        }
    };
    run.status_interval = Duration::from_secs_f64(double("status_interval"));
    run.pca_fit_frames = int("pca_fit_frames") as usize;
    let mut head_enabled = BTreeMap::new();
    let mut head_rate_hz = BTreeMap::new();
    for head in HEAD_NAMES {
        head_enabled.insert(head.to_string(), boolean(&format!("heads.{head}.enabled")));
        head_rate_hz.insert(head.to_string(), double(&format!("heads.{head}.rate_hz")));
    }
    // The per-head switches replace the command-line ones (their defaults came from them).
    run.disabled_heads = head_enabled
        .iter()
        .filter(|(_, on)| !**on)
        .map(|(h, _)| h.clone())
        .collect();
    run.head_rates = Vec::new();
    let head_settings = HEAD_SETTINGS
        .iter()
        .filter_map(|(head, setting, _)| {
            let v = double(&format!("{head}.{setting}"));
            (!v.is_nan()).then(|| (head.to_string(), setting.to_string(), v))
        })
        .collect();
    let reliable_topics = string("qos.reliable_topics")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    Ok(NodeConfig {
        run,
        calibration_file: path("calibration_file"),
        undistort: boolean("undistort"),
        frame_id: string("frame_id"),
        points_enabled: boolean("points.enabled"),
        points_stride: int("points.stride").max(1) as usize,
        points_rgb: boolean("points.rgb"),
        debug_image: boolean("debug_image"),
        reliable_topics,
        heads_enabled: boolean("heads_enabled"),
        head_enabled,
        head_rate_hz,
        head_settings,
    })
}

/// What a parameter change does while the node runs (read-only parameters never get here).
/// The action only checks (is the head loaded? is the rate valid?) and returns the change;
/// the parameter store applies it once every parameter of the request was accepted.
pub fn set_action(
    controls: BTreeMap<String, Arc<HeadControl>>,
    live: Arc<LiveSettings>,
) -> SetAction {
    Box::new(move |name: &str, value: &ParameterValue| {
        let control = |head: &str| {
            controls.get(head).cloned().ok_or_else(|| {
                format!(
                    "head {head} is not loaded (loaded: {}); nothing to change",
                    controls.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })
        };
        let live = live.clone();
        let apply: ApplyChange = match (name.split('.').collect::<Vec<_>>().as_slice(), value) {
            (["heads", head, "enabled"], &ParameterValue::Boolean(on)) => {
                let control = control(head)?;
                Box::new(move || control.set_enabled(on))
            }
            (["heads", head, "rate_hz"], &ParameterValue::Double(hz)) => {
                let control = control(head)?;
                // The same check as the real control's, on a throwaway one: nothing changes yet.
                HeadControl::new().set_rate_hz(hz)?;
                // Cannot fail: `hz` passed that very check just above.
                Box::new(move || drop(control.set_rate_hz(hz)))
            }
            ([head, setting], &ParameterValue::Double(v))
                if HEAD_SETTINGS
                    .iter()
                    .any(|(h, s, _)| h == head && s == setting) =>
            {
                let (control, setting) = (control(head)?, setting.to_string());
                Box::new(move || control.request_setting(&setting, v))
            }
            (["debug_image"], &ParameterValue::Boolean(on)) => {
                Box::new(move || live.debug_image.store(on, Ordering::Relaxed))
            }
            (["points", "enabled"], &ParameterValue::Boolean(on)) => {
                Box::new(move || live.points_enabled.store(on, Ordering::Relaxed))
            }
            (["points", "rgb"], &ParameterValue::Boolean(on)) => {
                Box::new(move || live.points_rgb.store(on, Ordering::Relaxed))
            }
            (["points", "stride"], &ParameterValue::Integer(n)) => Box::new(move || {
                live.points_stride
                    .store(n.max(1) as usize, Ordering::Relaxed)
            }),
            _ => {
                return Err(format!(
                    "parameter {name} cannot change while the node runs"
                ))
            }
        };
        Ok(apply)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_defaults_round_trip_through_parameters() {
        let run = RunOptions::default();
        let table = declare(&run);
        let values = table.resolve(&[], &[], "dinov3_perception", "/").unwrap();
        let cfg = configure(&values, &run).unwrap();
        assert_eq!(cfg.run.source, run.source);
        assert_eq!(cfg.run.model, run.model);
        assert!(cfg.heads_enabled && cfg.head_settings.is_empty());
        assert!(cfg.head_enabled.values().all(|on| *on));
    }

    #[test]
    fn overrides_configure_the_node() {
        let run = RunOptions::default();
        let table = declare(&run);
        let o = |k: &str, v: &str| (k.to_string(), v.to_string());
        let values = table
            .resolve(
                &[],
                &[
                    o("source", "ros:/camera/image_raw"),
                    o("heads.depth.enabled", "false"),
                    o("detection.score_threshold", "0.6"),
                    o("qos.reliable_topics", "dinov3/detections, dinov3/depth"),
                    o("max_frames", "5"),
                ],
                "dinov3_perception",
                "/",
            )
            .unwrap();
        let cfg = configure(&values, &run).unwrap();
        assert_eq!(cfg.run.source, SourceSpec::Ros("/camera/image_raw".into()));
        assert_eq!(cfg.run.disabled_heads, vec!["depth".to_string()]);
        assert_eq!(
            cfg.head_settings,
            vec![("detection".into(), "score_threshold".into(), 0.6)]
        );
        assert_eq!(
            cfg.reliable_topics,
            vec!["dinov3/detections", "dinov3/depth"]
        );
        assert_eq!(cfg.run.max_frames, Some(5));
    }

    #[test]
    fn unparsable_values_name_the_parameter() {
        let run = RunOptions::default();
        let table = declare(&run);
        for (k, v) in [
            ("source", "usb:0"),
            ("resize", "crop"),
            ("pixel_format", "nv12"),
            ("input_size", "big"),
        ] {
            let values = table
                .resolve(&[], &[(k.to_string(), v.to_string())], "n", "/")
                .unwrap();
            let e = configure(&values, &run).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn live_changes_reach_heads_and_publishing() {
        let det = Arc::new(HeadControl::new());
        let live = Arc::new(LiveSettings::default());
        let act = set_action(
            BTreeMap::from([("detection".to_string(), det.clone())]),
            live.clone(),
        );
        let apply = act("heads.detection.enabled", &ParameterValue::Boolean(false)).unwrap();
        assert!(det.enabled(), "the action applied before it was told to");
        apply();
        assert!(!det.enabled());
        act("heads.detection.rate_hz", &ParameterValue::Double(2.0)).unwrap()();
        assert!((det.rate_hz() - 2.0).abs() < 1e-9);
        act("points.stride", &ParameterValue::Integer(8)).unwrap()();
        assert_eq!(live.points_stride.load(Ordering::Relaxed), 8);
        let e = act("heads.depth.enabled", &ParameterValue::Boolean(false))
            .err()
            .unwrap();
        assert!(e.contains("not loaded"), "{e}");
    }
}
