//! The recorder and the replay source end to end, through the binary: what is recorded, that
//! a replay is deterministic, splitting and compression, SIGTERM and SIGKILL, `reindex`, and
//! bad input. (The independent readers — Python `mcap`, `rosbags`, `@mcap/core` — read the
//! same bags in tests/python/test_recording.py.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_bad_input, bin, stderr};
use dinov3_perception::bag::metadata::MetadataFile;
use dinov3_perception::bag::reader::{bag_files, topics, BagMessage, Messages};
use dinov3_perception::ros::cdr;
use dinov3_perception::ros::msg::{Header, Image};

const SMALL: &[&str] = &["--width", "160", "--height", "120", "--fps", "0"];

/// `run --no-ros` on the synthetic scene for `frames` frames, recording to `dir`.
fn record(dir: &Path, frames: u32, extra: &[&str]) -> std::process::Output {
    let n = frames.to_string();
    let d = dir.display().to_string();
    let mut args = vec![
        "run",
        "--no-ros",
        "--max-frames",
        &n,
        "--record",
        &d,
        "--status-interval",
        "0.2",
    ];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    bin(&args)
}

/// `run --no-ros --source SRC --rate 0` (every frame, as fast as processed) and `extra`.
fn replay(src: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", "--no-ros", "--source", src, "--rate", "0"];
    args.extend_from_slice(extra);
    bin(&args)
}

/// Every message of the bag, strictly read.
fn read_all(path: &Path) -> Vec<BagMessage> {
    Messages::new(bag_files(path).unwrap())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Messages per topic, diagnostics left out (they carry measured latencies).
fn by_topic(msgs: &[BagMessage]) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for m in msgs.iter().filter(|m| &*m.topic != "/diagnostics") {
        out.entry(m.topic.to_string())
            .or_default()
            .push(m.data.clone());
    }
    out
}

/// The header of a message that starts with one (every per-frame topic but the score).
fn header(data: &[u8]) -> Header {
    cdr::decode::<Header>(data).unwrap()
}

#[test]
fn records_every_topic_of_every_frame_and_replays_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let bag = tmp.path().join("live");
    let o = record(&bag, 6, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = MetadataFile::read(&bag)
        .unwrap()
        .rosbag2_bagfile_information;
    assert_eq!(meta.version, 9);
    assert_eq!(meta.storage_identifier, "mcap");
    assert_eq!(meta.relative_file_paths, vec!["live_0.mcap".to_string()]);
    let msgs = read_all(&bag);
    assert_eq!(meta.message_count, msgs.len() as u64);
    let topics_seen = by_topic(&msgs);
    let inputs = &topics_seen["/dinov3/input/image"];
    assert_eq!(inputs.len(), 6);
    let stamps: Vec<_> = inputs.iter().map(|d| header(d).stamp).collect();
    let per_frame = [
        "/dinov3/detections",
        "/dinov3/segmentation",
        "/dinov3/segmentation/color",
        "/dinov3/depth",
        "/dinov3/points",
        "/dinov3/camera_info",
        "/dinov3/classification",
        "/dinov3/anomaly/map",
        "/dinov3/features/pca",
    ];
    for t in per_frame {
        let got: Vec<_> = topics_seen[t].iter().map(|d| header(d).stamp).collect();
        assert_eq!(
            got, stamps,
            "{t}: one message per frame, stamped as the frame"
        );
    }
    assert_eq!(topics_seen["/dinov3/anomaly/score"].len(), 6);
    assert_eq!(topics_seen["/dinov3/vision_info"].len(), 1);
    let first: Image = cdr::decode(&inputs[0]).unwrap();
    assert_eq!(
        (first.width, first.height, first.encoding.as_str()),
        (160, 120, "rgb8")
    );
    assert!(msgs.iter().any(|m| &*m.topic == "/diagnostics"));
    // Metadata counts agree with what is in the file.
    for t in &meta.topics_with_message_count {
        let n = msgs
            .iter()
            .filter(|m| *m.topic == *t.topic_metadata.name)
            .count();
        assert_eq!(t.message_count, n as u64, "{}", t.topic_metadata.name);
    }
    // Ground truth of the synthetic frames beside the bag, named by stamp.
    let gt = bag.join("ground_truth");
    let coco: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gt.join("annotations.json")).unwrap())
            .unwrap();
    assert_eq!(coco["images"].as_array().unwrap().len(), 6);
    let ns = stamps[0].sec as u64 * 1_000_000_000 + stamps[0].nanosec as u64;
    assert!(gt.join("masks").join(format!("{ns}.png")).is_file());
    assert!(gt.join("depth").join(format!("{ns}.npy")).is_file());

    // Two replays, as fast as processed: every frame, byte-identical outputs.
    let mut replays = Vec::new();
    for name in ["replay1", "replay2"] {
        let out = tmp.path().join(name);
        let src = format!("mcap:{}", bag.display());
        let o = replay(&src, &["--record", &out.display().to_string()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("6 processed"), "{}", stderr(&o));
        replays.push(by_topic(&read_all(&out)));
    }
    assert_eq!(
        replays[0].keys().collect::<Vec<_>>(),
        replays[1].keys().collect::<Vec<_>>()
    );
    for (t, a) in &replays[0] {
        assert_eq!(a, &replays[1][t], "{t} differs between two replays");
    }
    // The replay saw the recorded frames with their stamps.
    assert_eq!(&replays[0]["/dinov3/input/image"], inputs);
    assert_eq!(
        replays[0]["/dinov3/detections"],
        topics_seen["/dinov3/detections"]
    );
}

/// Record 8 frames with `params`; the bag's metadata after checking that every file reads
/// and the per-file counts add up.
fn split_bag(dir: &Path, params: &[&str]) -> dinov3_perception::bag::metadata::BagInfo {
    let mut extra = vec![
        "--ros-args",
        "-p",
        "record.chunk_size_kb:=64",
        "-p",
        "record.topics:=dinov3/input/image,/dinov3/detections",
        "-p",
        "width:=480",
        "-p",
        "height:=360",
    ];
    for p in params {
        extra.extend(["-p", p]);
    }
    let o = record(dir, 8, &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = MetadataFile::read(dir).unwrap().rosbag2_bagfile_information;
    assert_eq!(meta.files.len(), meta.relative_file_paths.len());
    let names: Vec<_> = meta
        .topics_with_message_count
        .iter()
        .map(|t| t.topic_metadata.name.as_str())
        .collect();
    assert_eq!(names, ["/dinov3/input/image", "/dinov3/detections"]);
    assert_eq!(read_all(dir).len(), 16);
    let per_file: u64 = meta.files.iter().map(|f| f.message_count).sum();
    assert_eq!(per_file, 16);
    meta
}

#[test]
fn splits_by_size_and_by_duration_and_every_file_reads() {
    let tmp = tempfile::tempdir().unwrap();
    // 8 raw 480x360 frames are 4.1 MB: split at 1 MB.
    let by_size = split_bag(
        &tmp.path().join("size"),
        &["record.split_size_mb:=1", "record.compression:=none"],
    );
    assert!(
        by_size.files.len() >= 3,
        "{:?}",
        by_size.relative_file_paths
    );
    // lz4 chunks, a new file every 0.2 s of a 10 fps recording.
    let by_time = split_bag(
        &tmp.path().join("time"),
        &[
            "record.split_duration:=0.2",
            "record.compression:=lz4",
            "fps:=10",
        ],
    );
    assert!(
        by_time.files.len() >= 3,
        "{:?}",
        by_time.relative_file_paths
    );
    for f in &by_time.files {
        assert!(f.duration.nanoseconds < 400_000_000, "{f:?}");
    }
}

fn spawn_recorder(bag: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_dinov3_perception"))
        .args([
            "run",
            "--no-ros",
            "--record",
            &bag.display().to_string(),
            "--width",
            "160",
            "--height",
            "120",
            "--fps",
            "20",
            "--ros-args",
            "-p",
            "record.flush_interval:=0.1",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until the recorder has written `bytes` to its first file.
fn wait_for_bytes(bag: &Path, bytes: u64) {
    let file = bag.join(format!(
        "{}_0.mcap",
        bag.file_name().unwrap().to_string_lossy()
    ));
    let start = Instant::now();
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < bytes {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "recorder wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_finishes_the_bag() {
    let tmp = tempfile::tempdir().unwrap();
    let bag = tmp.path().join("term");
    let child = spawn_recorder(&bag);
    wait_for_bytes(&bag, 200_000);
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = MetadataFile::read(&bag)
        .unwrap()
        .rosbag2_bagfile_information;
    let msgs = read_all(&bag);
    assert!(!msgs.is_empty());
    assert_eq!(meta.message_count, msgs.len() as u64);
}

#[test]
fn sigkill_leaves_every_complete_chunk_and_reindex_completes_the_bag() {
    let tmp = tempfile::tempdir().unwrap();
    let bag = tmp.path().join("killed");
    let mut child = spawn_recorder(&bag);
    wait_for_bytes(&bag, 400_000);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!bag.join("metadata.yaml").exists());
    let files = bag_files(&bag).unwrap();
    // Strict readers refuse it and name the fix ...
    let err = topics(&files).unwrap_err().to_string();
    assert!(err.contains("reindex"), "{err}");
    let src = format!("mcap:{}", bag.display());
    assert_bad_input(
        &bin(&["run", "--no-ros", "--source", &src]),
        &["killed_0.mcap", "reindex"],
    );
    // ... a lenient read gets every message of the complete chunks ...
    let mut lenient = Messages::lenient(files.clone());
    let recovered = lenient.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    assert!(recovered.len() > 10, "{} messages", recovered.len());
    assert!(lenient.stopped_early.is_some());
    // ... and reindex keeps exactly those, with a summary and metadata.yaml.
    let o = bin(&["reindex", &bag.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = read_all(&bag);
    assert_eq!(after, recovered);
    let meta = MetadataFile::read(&bag)
        .unwrap()
        .rosbag2_bagfile_information;
    assert_eq!(meta.message_count, after.len() as u64);
    assert!(topics(&bag_files(&bag).unwrap()).unwrap().len() > 5);
    // A replay of the reindexed bag works.
    let o = replay(&src, &["--no-heads"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn small_bag(tmp: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let bag = tmp.join(name);
    let o = record(&bag, 2, extra);
    assert!(o.status.success(), "{}", stderr(&o));
    bag
}

#[test]
fn bad_input_is_an_error_naming_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let good = small_bag(tmp.path(), "good", &[]);
    // A record directory that exists.
    assert_bad_input(
        &record(&good, 1, &[]),
        &["good", "already exists", "--record"],
    );
    // A record directory that cannot be made (its parent is a file).
    let file = tmp.path().join("plain_file");
    std::fs::write(&file, b"x").unwrap();
    assert_bad_input(&record(&file.join("bag"), 1, &[]), &["plain_file"]);
    // record.topics naming a topic the node does not publish.
    assert_bad_input(
        &record(
            &tmp.path().join("t"),
            1,
            &["--ros-args", "-p", "record.topics:=/nope"],
        ),
        &["record.topics", "/nope", "/dinov3/detections"],
    );
    // A bag that is not there.
    let missing = format!("mcap:{}", tmp.path().join("none").display());
    assert_bad_input(&replay(&missing, &[]), &["none", "does not exist"]);
    // A file that is not MCAP.
    let junk = tmp.path().join("junk.mcap");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    assert_bad_input(
        &replay(&format!("mcap:{}", junk.display()), &[]),
        &["junk.mcap"],
    );
    // A truncated MCAP.
    let whole = std::fs::read(good.join("good_0.mcap")).unwrap();
    let cut = tmp.path().join("cut.mcap");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    assert_bad_input(
        &replay(&format!("mcap:{}", cut.display()), &[]),
        &["cut.mcap", "reindex"],
    );
    // A bag without an image topic.
    let no_images = small_bag(
        tmp.path(),
        "no_images",
        &[
            "--ros-args",
            "-p",
            "record.images:=none",
            "-p",
            "record.topics:=/dinov3/detections",
        ],
    );
    assert_bad_input(
        &replay(&format!("mcap:{}", no_images.display()), &[]),
        &[
            "no_images",
            "no sensor_msgs/msg/Image",
            "/dinov3/detections",
        ],
    );
    // An unknown topic, and a topic that is not an image.
    let src = format!("mcap:{}", good.display());
    assert_bad_input(
        &replay(&src, &["--replay-topic", "/nope"]),
        &["no topic /nope", "/dinov3/input/image"],
    );
    assert_bad_input(
        &replay(&src, &["--replay-topic", "/dinov3/detections"]),
        &["Detection2DArray, not an image topic"],
    );
    // Ground truth that does not match the recording: another scene's dataset.
    let other = tmp.path().join("other_truth");
    let o = bin(&[
        "dataset",
        "synthetic",
        "--out",
        &other.display().to_string(),
        "--scenes",
        "1",
        "--frames-per-scene",
        "2",
        "--width",
        "160",
        "--height",
        "120",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_bad_input(
        &bin(&[
            "eval",
            "--recording",
            &good.display().to_string(),
            "--truth",
            &other.display().to_string(),
        ]),
        &["other_truth", "do not match", "have no ground truth"],
    );
    // reindex of something that is not a bag.
    assert_bad_input(
        &bin(&["reindex", &file.display().to_string()]),
        &["plain_file", "not a directory"],
    );
}
