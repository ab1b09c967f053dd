//! The node's ROS command line: the exact argv `ros2 launch` produces, parameter files and
//! `-p` overrides, names and environment, and the start-up errors for bad parameters and
//! calibrations (exit 2, naming the parameter or file).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use common::{assert_bad_input, bin, stderr};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn accepts_the_argv_ros2_launch_produces() {
    // launch_ros (node.py): executable, `arguments`, then --ros-args -r __node:= -r __ns:=
    // and one --params-file per `parameters` entry; a dict becomes a temporary file keyed by
    // the node's full name.
    let dir = tempfile::tempdir().unwrap();
    let tmp = write(
        &dir,
        "launch_params_x1y2",
        "/robot1/dinov3_perception:\n  ros__parameters:\n    heads_enabled: true\n    max_frames: 3\n    source: synthetic\n",
    );
    let o = bin(&[
        "run",
        "--ros-args",
        "-r",
        "__node:=dinov3_perception",
        "-r",
        "__ns:=/robot1",
        "--params-file",
        "launch/dinov3_perception.params.yaml",
        "--params-file",
        &tmp,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("ROS 2 node /robot1/dinov3_perception"),
        "{err}"
    );
    assert!(
        err.contains("3 processed"),
        "max_frames from the launch file: {err}"
    );
}

#[test]
fn cli_params_file_and_overrides_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        &dir,
        "a.yaml",
        "dinov3_perception:\n  ros__parameters:\n    max_frames: 50\n    heads:\n      depth:\n        enabled: false\n",
    );
    // -p beats the file.
    let o = bin(&[
        "run",
        "--params-file",
        &a,
        "--ros-args",
        "-p",
        "max_frames:=2",
        "--log-level",
        "info",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 processed"), "{}", stderr(&o));
}

#[test]
fn unknown_parameter_names_it() {
    let o = bin(&["run", "--ros-args", "-p", "points.strid:=2"]);
    assert_bad_input(&o, &["points.strid", "points.stride", "-p points.strid:=2"]);
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "p.yaml",
        "/**:\n  ros__parameters:\n    bogus_param: 1\n",
    );
    let o = bin(&["run", "--params-file", &f]);
    assert_bad_input(&o, &["bogus_param", "p.yaml"]);
}

#[test]
fn wrong_type_and_out_of_range_name_the_parameter() {
    let o = bin(&["run", "--ros-args", "-p", "points.stride:=fast"]);
    assert_bad_input(&o, &["points.stride", "wrong type", "integer expected"]);
    let o = bin(&["run", "--ros-args", "-p", "detection.score_threshold:=1.5"]);
    assert_bad_input(&o, &["detection.score_threshold", "out of range [0, 1]"]);
    let o = bin(&["run", "--ros-args", "-p", "source:=usb:0"]);
    assert_bad_input(&o, &["source", "usb:0"]);
}

#[test]
fn malformed_parameter_files_and_ros_args() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "flat.yaml", "max_frames: 3\n");
    let o = bin(&["run", "--params-file", &f]);
    assert_bad_input(&o, &["flat.yaml", "ros__parameters"]);
    let f = write(&dir, "broken.yaml", "dinov3_perception: [\n");
    let o = bin(&["run", "--params-file", &f]);
    assert_bad_input(&o, &["broken.yaml", "not valid YAML"]);
    let o = bin(&["run", "--params-file", "/nonexistent/p.yaml"]);
    assert_bad_input(&o, &["/nonexistent/p.yaml", "cannot read"]);
    let o = bin(&["run", "--ros-args", "-p", "max_frames"]);
    assert_bad_input(&o, &["NAME:=VALUE"]);
    let o = bin(&["run", "--ros-args", "--frobnicate"]);
    assert_bad_input(&o, &["--frobnicate"]);
}

#[test]
fn bad_names_and_environment() {
    let o = bin(&["run", "--ros-args", "-r", "__node:=9lives"]);
    assert_bad_input(&o, &["node name", "9lives"]);
    let o = bin(&["run", "--ros-args", "-r", "__ns:=/robot-1"]);
    assert_bad_input(&o, &["namespace", "/robot-1"]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_dinov3_perception"))
        .args(["run", "--max-frames", "1"])
        .env("ROS_DOMAIN_ID", "banana")
        .output()
        .unwrap();
    assert_bad_input(&o, &["ROS_DOMAIN_ID", "banana"]);
}

#[test]
fn calibration_errors_at_start_up() {
    // The synthetic camera is 320x240 here; the file is for 640x480.
    let o = bin(&[
        "run",
        "--width",
        "320",
        "--height",
        "240",
        "--ros-args",
        "-p",
        "calibration_file:=calibration/synthetic_640x480.yaml",
    ]);
    assert_bad_input(&o, &["synthetic_640x480.yaml", "640x480", "320x240"]);
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "zero_f.yaml",
        &std::fs::read_to_string("calibration/synthetic_640x480.yaml")
            .unwrap()
            .replacen("data: [500.0", "data: [0.0", 1),
    );
    let o = bin(&["run", "--ros-args", "-p", &format!("calibration_file:={f}")]);
    assert_bad_input(&o, &["zero_f.yaml", "focal"]);
    let o = bin(&[
        "run",
        "--source",
        "dir:tests",
        "--ros-args",
        "-p",
        "undistort:=true",
    ]);
    assert_bad_input(&o, &["undistort", "calibration_file"]);
}

#[test]
fn a_source_failure_mid_run_keeps_its_cause_and_exit_code() {
    // dir: frames are 320x240; the calibration is for 640x480. The mismatch shows on the first
    // frame, after start-up: still bad input (exit 2), with the cause named.
    let o = bin(&[
        "run",
        "--no-ros",
        "--source",
        "dir:tests/fixtures/camera",
        "--ros-args",
        "-p",
        "calibration_file:=calibration/synthetic_640x480.yaml",
    ]);
    assert_bad_input(&o, &["the source failed", "calibration_file", "320x240"]);
    // Reported once: not also logged by the capture thread.
    assert_eq!(stderr(&o).matches("320x240").count(), 1, "{}", stderr(&o));
}

#[test]
fn undistorts_with_a_real_calibration() {
    let o = bin(&[
        "run",
        "--max-frames",
        "3",
        "--ros-args",
        "-p",
        "calibration_file:=calibration/example_plumb_bob.yaml",
        "-p",
        "undistort:=true",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("undistorted") && err.contains("3 processed"),
        "{err}"
    );
}

/// `bin` with extra environment variables.
fn bin_with_env(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dinov3_perception"))
        .args(args)
        .env("RUST_LOG", "info,rustdds=error")
        .env("ROS_LOCALHOST_ONLY", "1")
        .env("ROS_DOMAIN_ID", common::test_domain().to_string())
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn enforced_dds_security_refuses_to_start_unsecured() {
    let args = ["run", "--max-frames", "1", "--no-heads", "--fps", "0"];
    let enforce = [
        ("ROS_SECURITY_ENABLE", "true"),
        ("ROS_SECURITY_STRATEGY", "Enforce"),
    ];
    let o = bin_with_env(&args, &enforce);
    assert_bad_input(
        &o,
        &[
            "ROS_SECURITY_STRATEGY=Enforce",
            "no DDS security",
            "--no-ros",
        ],
    );
    // Offline there is no DDS to secure.
    let mut offline = args.to_vec();
    offline.push("--no-ros");
    let o = bin_with_env(&offline, &enforce);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Permissive: runs, unsecured, and says so.
    let o = bin_with_env(
        &args,
        &[
            ("ROS_SECURITY_ENABLE", "true"),
            ("ROS_SECURITY_STRATEGY", "Permissive"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("runs unsecured"), "{}", stderr(&o));
}
