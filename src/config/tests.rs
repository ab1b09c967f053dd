//! Flags -> parameters -> files -> overrides -> NodeConfig.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::*;
use crate::heads::HeadControl;
use crate::sink::outputs::LiveSettings;
use crate::source::SourceSettings;

fn resolve_with(flags: &RunFlags, overrides: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
    let ros = RosArgs {
        params: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..RosArgs::default()
    };
    resolve(
        flags,
        &ros,
        &NodeEnv {
            vars: BTreeMap::new(),
        },
    )
}

#[test]
fn defaults_are_the_synthetic_scene_and_the_bundled_model() {
    let cfg = resolve_with(&RunFlags::default(), &[]).unwrap();
    match &cfg.source {
        SourceSettings::Synthetic(s) => {
            assert_eq!(
                (s.width, s.height),
                (crate::frame::DEFAULT_WIDTH, crate::frame::DEFAULT_HEIGHT)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(cfg.backbone.bundled);
    assert_eq!(cfg.backbone.model, share::bundled_model());
    let load = cfg.heads.load.as_ref().unwrap();
    assert_eq!(load.dir.as_deref(), Some(share::bundled_heads().as_path()));
    assert_eq!(load.pca_fit_frames, params::DEFAULT_PCA_FIT_FRAMES);
    assert!(cfg.heads.settings.is_empty());
    assert!(cfg.heads.enabled.values().all(|on| *on));
    assert_eq!(cfg.heads.enabled.len(), Task::ALL.len());
    assert_eq!(cfg.pipeline.max_frames, None);
    assert!(cfg.ros.enabled);
}

#[test]
fn flags_are_defaults_that_parameters_override() {
    let flags = RunFlags {
        width: Some(320),
        height: Some(240),
        max_frames: Some(7),
        disable_heads: vec!["depth".into()],
        head_rates: vec![("segmentation".into(), 2.0)],
        ..RunFlags::default()
    };
    let cfg = resolve_with(&flags, &[("width", "800"), ("heads.depth.enabled", "true")]).unwrap();
    match &cfg.source {
        SourceSettings::Synthetic(s) => assert_eq!((s.width, s.height), (800, 240)),
        other => panic!("{other:?}"),
    }
    assert_eq!(cfg.pipeline.max_frames, Some(7));
    assert!(cfg.heads.enabled[&Task::Depth]);
    assert_eq!(cfg.heads.rate_hz[&Task::Segmentation], 2.0);
}

#[test]
fn overrides_configure_every_section() {
    let cfg = resolve_with(
        &RunFlags::default(),
        &[
            ("source", "ros:/camera/image_raw"),
            ("heads.depth.enabled", "false"),
            ("detection.score_threshold", "0.6"),
            ("qos.reliable_topics", "dinov3/detections, dinov3/depth"),
            ("max_frames", "5"),
            ("model", "/models/vits16.onnx"),
            ("resize", "letterbox"),
        ],
    )
    .unwrap();
    assert!(
        matches!(&cfg.source, SourceSettings::Ros { topic } if topic == "/camera/image_raw"),
        "{:?}",
        cfg.source
    );
    assert!(!cfg.heads.enabled[&Task::Depth]);
    assert_eq!(
        cfg.heads.settings,
        vec![HeadSetting {
            task: Task::Detection,
            name: "score_threshold",
            value: 0.6
        }]
    );
    assert_eq!(
        cfg.ros
            .node
            .reliable_topics
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["dinov3/depth", "dinov3/detections"]
    );
    assert_eq!(cfg.pipeline.max_frames, Some(5));
    // A model of one's own: no demo heads unless a heads directory is given.
    assert!(!cfg.backbone.bundled);
    assert_eq!(cfg.heads.load.as_ref().unwrap().dir, None);
    assert_eq!(
        cfg.backbone.resize,
        crate::preprocess::ResizeMode::Letterbox
    );
}

#[test]
fn unparsable_values_name_the_parameter() {
    for (k, v) in [
        ("source", "usb:0"),
        ("resize", "crop"),
        ("pixel_format", "nv12"),
        ("input_size", "big"),
    ] {
        let e = resolve_with(&RunFlags::default(), &[(k, v)]).unwrap_err();
        assert!(e.to_string().contains(k), "{e}");
    }
}

#[test]
fn bad_flags_name_the_flag() {
    let cases = [
        RunFlags {
            disable_heads: vec!["lidar".into()],
            ..RunFlags::default()
        },
        RunFlags {
            head_rates: vec![("depth".into(), -1.0)],
            ..RunFlags::default()
        },
        RunFlags {
            status_interval: Some(0.0),
            ..RunFlags::default()
        },
    ];
    for (flags, flag) in cases.iter().zip([
        "--disable-head lidar",
        "--head-rate depth=-1",
        "--status-interval",
    ]) {
        let e = resolve_with(flags, &[]).unwrap_err();
        assert!(e.to_string().starts_with(flag), "{e}");
    }
}

#[test]
fn ros_source_needs_ros() {
    let flags = RunFlags {
        no_ros: true,
        ..RunFlags::default()
    };
    let e = resolve_with(&flags, &[("source", "ros:/cam")]).unwrap_err();
    assert!(e.to_string().contains("--no-ros"), "{e}");
}

#[test]
fn live_changes_reach_heads_and_publishing() {
    let det = Arc::new(HeadControl::new());
    let live = Arc::new(LiveSettings::default());
    let act = live::set_action(
        BTreeMap::from([(Task::Detection, det.clone())]),
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

#[test]
fn the_live_view_is_off_unless_asked_for_and_listens_on_loopback_by_default() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunFlags,
    }
    let parse = |args: &[&str]| Cli::try_parse_from([&["run"], args].concat()).unwrap().run;
    let cfg = resolve_with(&parse(&[]), &[]).unwrap();
    assert_eq!(cfg.sinks.foxglove, None);
    let bare = parse(&["--foxglove", "--no-ros"]);
    assert!(
        bare.no_ros,
        "a flag after a bare --foxglove is not its value"
    );
    let cfg = resolve_with(&bare, &[]).unwrap();
    assert_eq!(
        cfg.sinks.foxglove,
        Some(crate::sink::foxglove::DEFAULT_ADDRESS.parse().unwrap())
    );
    assert!(cfg.sinks.foxglove.unwrap().ip().is_loopback());
    let cfg = resolve_with(&parse(&["--foxglove", "0.0.0.0:9000"]), &[]).unwrap();
    assert_eq!(cfg.sinks.foxglove, Some("0.0.0.0:9000".parse().unwrap()));
    // The parameter beats the flag, as for every other flag.
    let cfg = resolve_with(
        &parse(&["--foxglove"]),
        &[("foxglove.address", "[::1]:8766")],
    )
    .unwrap();
    assert_eq!(cfg.sinks.foxglove, Some("[::1]:8766".parse().unwrap()));
    for bad in ["localhost:8765", "127.0.0.1", "8765"] {
        let e = resolve_with(&parse(&["--foxglove", bad]), &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("foxglove.address") && text.contains(bad),
            "{text}"
        );
        assert!(text.contains("127.0.0.1:8765"), "{text}");
    }
}
