//! Recorder throughput (issue #11): the node's `RecordSink` fed real frame results at 30 Hz and
//! as fast as it takes them, and the bag writer alone on the messages read back, in one process:
//!
//!     cargo run --release --example record_bench -- OUT_DIR [SECONDS] [BURST_FRAMES]
//!
//! Frame results: 8 synthetic 640x480 frames (with their ground truth) through the bundled demo
//! backbone and every demo head (detection, segmentation, depth, classification, anomaly, PCA),
//! the synthetic calibration (camera_info and the stride-4 point cloud are produced) and the
//! node's default publishing switches (no debug image). They are computed once, then cycled,
//! each restamped (`stamp` = start + k / 30 s, `seq` = k) before it is fed.
//!
//! Runs, each into a fresh bag under OUT_DIR (must not exist):
//! - paced: SECONDS (default 10) at 30 Hz, input frames raw, zstd / lz4 / none; zstd with the
//!   input frames as JPEG (quality 90); zstd without ground truth (what the truth files cost);
//! - burst: BURST_FRAMES (default 240, at most 300 so the recorder's 4096-message queue cannot
//!   overflow) fed back to back with a 4 GiB byte bound: frames/s until the bag is finished;
//! - writer only: every message of the paced zstd bag read back into memory, then written with
//!   `BagWriter` (the recorder's writer thread without the queue and the ground truth), zstd /
//!   lz4 / none. `benches/record_peer.py` writes the same messages with Python `mcap`. Then
//!   zstd with the `mcap` crate's writer directly, 0 / 1 / 2 / 2 / 1 / 0 compression threads
//!   (the crate's default, which `BagWriter` keeps, is one per physical core).
//!
//! CPU time: `getrusage(RUSAGE_SELF)` (user + system, every thread of the process) from just
//! before the first `consume` to the return of `close` (the bag finished), minus an idle
//! baseline measured over 0.5 s of sleep before each run, scaled to the run's wall time (the
//! inference threads are idle then). `consume` (the sink thread's part: building messages, CDR,
//! JPEG) is `getrusage(RUSAGE_THREAD)` of the feeding thread; the writer thread's part is the
//! rest. Bytes: file sizes after `close` (the page cache; nothing is fsynced, as in the node;
//! `sync` before each timed run so none pays for the writeback of the one before).
//! Prints one JSON object on stdout (progress on stderr); `benches/bench_record.py` makes the
//! table. A paced run with any drop fails the benchmark (exit status 1, after the JSON).

#![allow(unsafe_code, reason = "FFI: getrusage and sync")]

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "shared by the examples; this one renders its own frames"
)]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dinov3_perception::bag::reader::{bag_files, topics, Messages};
use dinov3_perception::bag::writer::{BagOptions, BagWriter, ChunkCompression, TopicSpec};
use dinov3_perception::calibration::CameraCalibration;
use dinov3_perception::config::share::{bundled_heads, bundled_model};
use dinov3_perception::frame::{Clock, Frame, Stamp, SystemClock};
use dinov3_perception::result::FrameResult;
use dinov3_perception::ros::definitions;
use dinov3_perception::ros::node::NodeSettings;
use dinov3_perception::sink::outputs::{
    InputImageFormat, LiveSettings, OutputBuilder, PublishPlan,
};
use dinov3_perception::sink::record::{self, RecordSettings};
use dinov3_perception::sink::Sink;
use dinov3_perception::BackboneModel;
use serde_json::{json, Value};

const RATE_HZ: f64 = 30.0;
const DISTINCT_FRAMES: usize = 8;
const CHUNK_SIZE: u64 = 1 << 20;
/// The recorder's message-count bound is 4096; about 12 items a frame.
const MAX_BURST_FRAMES: usize = 300;

/// CPU seconds (user + system) of the process (`RUSAGE_SELF`) or this thread (`RUSAGE_THREAD`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct we pass; an all-zero rusage is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage; `who` is RUSAGE_SELF or RUSAGE_THREAD.
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Write back every dirty page first, so each timed run starts from the same page-cache state
/// (otherwise a run pays for the writeback of the one before).
fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Process CPU seconds per wall second while this thread sleeps for `d`.
fn idle_cpu_rate(d: Duration) -> f64 {
    let c0 = cpu_seconds(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    std::thread::sleep(d);
    (cpu_seconds(libc::RUSAGE_SELF) - c0) / t0.elapsed().as_secs_f64()
}

/// Bytes of the files under `dir`, split into (`.mcap` + `metadata.yaml`, everything else).
fn dir_bytes(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut bag, mut other) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if d == dir {
                bag += meta.len();
            } else {
                other += meta.len();
            }
        }
    }
    Ok((bag, other))
}

struct RunSpec {
    name: String,
    compression: ChunkCompression,
    images: InputImageFormat,
    ground_truth: bool,
    /// `None`: back to back.
    rate_hz: Option<f64>,
    frames: usize,
}

/// Feed `spec.frames` results (cycled, restamped) to a fresh recorder writing `dir`.
fn record_run(
    spec: &RunSpec,
    results: &mut [FrameResult],
    truths: &[Option<Arc<dinov3_perception::frame::GroundTruth>>],
    plan: &PublishPlan,
    dir: &Path,
) -> anyhow::Result<Value> {
    let settings = RecordSettings {
        dir: dir.to_path_buf(),
        topics: Vec::new(),
        images: Some(spec.images),
        bag: BagOptions {
            compression: spec.compression,
            chunk_size: CHUNK_SIZE,
            ..BagOptions::default()
        },
        queue_bytes: if spec.rate_hz.is_some() {
            256 << 20 // the node's default record.queue_mb
        } else {
            4 << 30
        },
        flush_interval: Duration::from_secs(1),
    };
    let names = NodeSettings::from_args(None, None, &[], &|_| None)?;
    let builder = OutputBuilder::new(plan, Arc::new(LiveSettings::default()));
    let (mut sink, _tap, stats) = record::start(&settings, builder, &names)?;
    for (r, t) in results.iter_mut().zip(truths) {
        r.frame.ground_truth = if spec.ground_truth { t.clone() } else { None };
    }
    sync();
    let idle = idle_cpu_rate(Duration::from_millis(500));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let base = clock.now().0;
    let period = Duration::from_secs_f64(1.0 / spec.rate_hz.unwrap_or(RATE_HZ));
    let mut consume_ms = Vec::with_capacity(spec.frames);
    let cpu0 = cpu_seconds(libc::RUSAGE_SELF);
    let thread0 = cpu_seconds(libc::RUSAGE_THREAD);
    let t0 = Instant::now();
    sink.start(clock)?;
    for k in 0..spec.frames {
        if spec.rate_hz.is_some() {
            let due = t0 + period.mul_f64(k as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let n = results.len();
        let r = &mut results[k % n];
        r.frame.stamp = Stamp(base + period.as_nanos() as u64 * k as u64);
        r.frame.seq = k as u64;
        let t = Instant::now();
        sink.consume(r)?;
        consume_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let fed = t0.elapsed().as_secs_f64();
    let thread_cpu = cpu_seconds(libc::RUSAGE_THREAD) - thread0;
    sink.close()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu0 - idle * wall;
    let (bag_bytes, truth_bytes) = dir_bytes(dir)?;
    let payload = stats.bytes.load(Ordering::Relaxed);
    let dropped = stats.dropped.load(Ordering::Relaxed);
    let frames = spec.frames as f64;
    let consume_max = consume_ms.iter().copied().fold(0.0, f64::max);
    let consume_median = common::median(&mut consume_ms);
    let report = json!({
        "name": spec.name,
        "compression": format!("{:?}", spec.compression).to_lowercase(),
        "images": match spec.images { InputImageFormat::Raw => "raw".to_string(), InputImageFormat::Jpeg(q) => format!("jpeg{q}") },
        "ground_truth": spec.ground_truth,
        "rate_hz": spec.rate_hz,
        "frames": spec.frames,
        "feed_s": fed,
        "wall_s": wall,
        "fps": frames / wall,
        "written": stats.written.load(Ordering::Relaxed),
        "dropped": dropped,
        "error": stats.error(),
        "payload_bytes": payload,
        "bag_bytes": bag_bytes,
        "truth_bytes": truth_bytes,
        "payload_mb_s": payload as f64 / 1e6 / wall,
        "disk_mb_s": (bag_bytes + truth_bytes) as f64 / 1e6 / wall,
        "bag_mb_s": bag_bytes as f64 / 1e6 / wall,
        "ratio": payload as f64 / bag_bytes.max(1) as f64,
        "cpu_s": cpu,
        "idle_cpu_per_s": idle,
        "cpu_ms_per_frame": cpu * 1e3 / frames,
        "consume_cpu_ms_per_frame": thread_cpu * 1e3 / frames,
        "writer_cpu_ms_per_frame": (cpu - thread_cpu) * 1e3 / frames,
        "consume_wall_ms_median": consume_median,
        "consume_wall_ms_max": consume_max,
    });
    eprintln!("{report}");
    Ok(report)
}

/// Every message of the bag at `dir` in memory, with the topics as `BagWriter` takes them.
type Loaded = (Vec<TopicSpec>, Vec<(usize, u64, u64, Vec<u8>)>);

fn read_back(dir: &Path) -> anyhow::Result<Loaded> {
    let files = bag_files(dir)?;
    let mut specs = Vec::new();
    let mut index = BTreeMap::new();
    for t in topics(&files)? {
        let definition = definitions::schema(&t.ros_type.replace("/msg/", "/"))
            .ok_or_else(|| anyhow::anyhow!("no definition of {}", t.ros_type))?;
        index.insert(t.name.clone(), specs.len());
        specs.push(TopicSpec {
            name: t.name,
            ros_type: t.ros_type,
            definition,
            qos: Vec::new(),
        });
    }
    let mut messages = Vec::new();
    for m in Messages::new(files) {
        let m = m?;
        let i = *index
            .get(&*m.topic)
            .ok_or_else(|| anyhow::anyhow!("topic {} not in the summary", m.topic))?;
        messages.push((i, m.log_time, m.publish_time, m.data));
    }
    Ok((specs, messages))
}

/// `BagWriter` alone on `messages`, timed like the peer (wall and process CPU around the
/// writes and `finish`).
fn writer_run(compression: ChunkCompression, loaded: &Loaded, dir: &Path) -> anyhow::Result<Value> {
    let (specs, messages) = loaded;
    let options = BagOptions {
        compression,
        chunk_size: CHUNK_SIZE,
        ..BagOptions::default()
    };
    let payload: u64 = messages.iter().map(|m| m.3.len() as u64).sum();
    sync();
    let cpu0 = cpu_seconds(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let mut bag = BagWriter::create(dir, specs.clone(), options)?;
    for (topic, log_time, publish_time, data) in messages {
        bag.write(*topic, *log_time, *publish_time, data)?;
    }
    bag.finish()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu0;
    let (bag_bytes, _) = dir_bytes(dir)?;
    let report = json!({
        "compression": format!("{compression:?}").to_lowercase(),
        "messages": messages.len(),
        "payload_bytes": payload,
        "bag_bytes": bag_bytes,
        "wall_s": wall,
        "cpu_s": cpu,
        "payload_mb_s": payload as f64 / 1e6 / wall,
        "bag_mb_s": bag_bytes as f64 / 1e6 / wall,
        "ratio": payload as f64 / bag_bytes.max(1) as f64,
    });
    eprintln!("{report}");
    Ok(report)
}

/// The `mcap` crate's writer directly (chunk options as `BagWriter` sets them, no metadata) with
/// `compression_threads` zstd workers: whether the crate's default (one per physical core)
/// helps with 1 MiB chunks.
fn mcap_zstd_run(threads: u32, loaded: &Loaded, path: &Path) -> anyhow::Result<Value> {
    let (specs, messages) = loaded;
    let payload: u64 = messages.iter().map(|m| m.3.len() as u64).sum();
    sync();
    let cpu0 = cpu_seconds(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let mut w = mcap::WriteOptions::new()
        .profile("ros2")
        .compression(Some(mcap::Compression::Zstd))
        .chunk_size(Some(CHUNK_SIZE))
        .disable_seeking(true)
        .compression_threads(threads)
        .create(std::fs::File::create_new(path)?)?;
    let mut channels = Vec::new();
    for t in specs {
        let schema = w.add_schema(&t.ros_type, "ros2msg", t.definition.as_bytes())?;
        channels.push(w.add_channel(schema, &t.name, "cdr", &BTreeMap::new())?);
    }
    let mut sequences = vec![0u32; channels.len()];
    for (topic, log_time, publish_time, data) in messages {
        let header = mcap::records::MessageHeader {
            channel_id: channels[*topic],
            sequence: sequences[*topic],
            log_time: *log_time,
            publish_time: *publish_time,
        };
        sequences[*topic] += 1;
        w.write_to_known_channel(&header, data)?;
    }
    w.finish()?;
    drop(w);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu0;
    let bag_bytes = std::fs::metadata(path)?.len();
    let report = json!({
        "compression_threads": threads,
        "wall_s": wall,
        "cpu_s": cpu,
        "bag_bytes": bag_bytes,
        "payload_mb_s": payload as f64 / 1e6 / wall,
    });
    eprintln!("{report}");
    Ok(report)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(out) = args.get(1).map(PathBuf::from) else {
        anyhow::bail!("usage: record_bench OUT_DIR [SECONDS] [BURST_FRAMES]");
    };
    let seconds: f64 = args.get(2).map_or(Ok(10.0), |s| s.parse())?;
    let burst: usize = args.get(3).map_or(Ok(240), |s| s.parse())?;
    let burst = burst.min(MAX_BURST_FRAMES);
    let paced_frames = (seconds * RATE_HZ).round() as usize;
    if out.exists() {
        anyhow::bail!("{} exists: give a new directory", out.display());
    }
    std::fs::create_dir_all(&out)?;

    let model = BackboneModel::load(&bundled_model())?;
    let (mut stage, names) = common::stage_with_heads(&model, &bundled_heads(), 2)?;
    let calibration = CameraCalibration::synthetic(640, 480);
    let plan = PublishPlan {
        heads: names.iter().filter_map(|n| n.parse().ok()).collect(),
        calibration: Some(calibration.clone()),
        rectified: false,
        vision_method: "record_bench".into(),
        vision_database: String::new(),
    };
    eprintln!("heads: {}", names.join(", "));

    // The frame results, computed once (the first frame also fits the PCA basis).
    let scene = common::scene()?;
    let clock = SystemClock;
    let mut results = Vec::new();
    let mut truths = Vec::new();
    for i in 0..DISTINCT_FRAMES {
        let (rgb, truth) = scene.render(i as u64);
        let frame = Frame {
            width: 640,
            height: 480,
            rgb,
            stamp: Stamp(0),
            seq: i as u64,
            frame_id: calibration.camera_name.clone(),
            ground_truth: Some(Arc::new(truth)),
        };
        truths.push(frame.ground_truth.clone());
        let r = stage.run_frame(frame, &clock).map_err(anyhow::Error::msg)?;
        if let Some((h, e)) = r.head_errors.first() {
            anyhow::bail!("head {h}: {e}");
        }
        if r.heads.len() != names.len() {
            anyhow::bail!(
                "{} of {} heads ran on frame {i}",
                r.heads.len(),
                names.len()
            );
        }
        results.push(r);
    }
    drop(stage);

    let paced = |name: &str, compression, images, ground_truth| RunSpec {
        name: name.into(),
        compression,
        images,
        ground_truth,
        rate_hz: Some(RATE_HZ),
        frames: paced_frames,
    };
    let burst_run = |name: &str, compression| RunSpec {
        name: name.into(),
        compression,
        images: InputImageFormat::Raw,
        ground_truth: true,
        rate_hz: None,
        frames: burst,
    };
    use ChunkCompression::{Lz4, None as Plain, Zstd};
    let raw = InputImageFormat::Raw;
    let runs = [
        paced("paced_zstd", Zstd, raw, true),
        paced("paced_lz4", Lz4, raw, true),
        paced("paced_none", Plain, raw, true),
        paced("paced_zstd_jpeg", Zstd, InputImageFormat::Jpeg(90), true),
        paced("paced_zstd_no_truth", Zstd, raw, false),
        burst_run("burst_zstd", Zstd),
        burst_run("burst_lz4", Lz4),
        burst_run("burst_none", Plain),
    ];
    let mut reports = Vec::new();
    // Drops at 30 Hz fail the benchmark, after every run has been measured and reported.
    let mut failures = Vec::new();
    for spec in &runs {
        let dir = out.join(&spec.name);
        let report = record_run(spec, &mut results, &truths, &plan, &dir)?;
        let dropped = report["dropped"].as_u64().unwrap_or(u64::MAX);
        if spec.rate_hz.is_some() && dropped != 0 {
            failures.push(format!(
                "{}: {dropped} messages dropped at 30 Hz",
                spec.name
            ));
        }
        if let Some(e) = report["error"].as_str() {
            anyhow::bail!("{}: {e}", spec.name);
        }
        // Keep the bag the peer reads; the others are only measured.
        if spec.name != "paced_zstd" {
            std::fs::remove_dir_all(&dir)?;
        }
        reports.push(report);
    }
    drop(results);

    let loaded = read_back(&out.join("paced_zstd"))?;
    // What a frame's payload is made of.
    let mut per_topic = Vec::new();
    for (i, spec) in loaded.0.iter().enumerate() {
        let sizes: Vec<u64> = loaded
            .1
            .iter()
            .filter(|m| m.0 == i)
            .map(|m| m.3.len() as u64)
            .collect();
        per_topic.push(json!({
            "topic": spec.name,
            "messages": sizes.len(),
            "bytes": sizes.iter().sum::<u64>(),
        }));
    }
    let mut writer = Vec::new();
    for c in [Zstd, Lz4, Plain] {
        let dir = out.join(format!("writer_{c:?}").to_lowercase());
        writer.push(writer_run(c, &loaded, &dir)?);
        std::fs::remove_dir_all(&dir)?;
    }
    let mut threads = Vec::new();
    for n in [0, 1, 2, 2, 1, 0] {
        let path = out.join(format!("mcap_zstd_threads{n}.mcap"));
        threads.push(mcap_zstd_run(n, &loaded, &path)?);
        std::fs::remove_file(&path)?;
    }
    println!(
        "{}",
        json!({
            "mcap_zstd_threads": threads,
            "model": model.manifest.variant,
            "heads": names,
            "distinct_frames": DISTINCT_FRAMES,
            "chunk_size": CHUNK_SIZE,
            "peer_bag": out.join("paced_zstd"),
            "runs": reports,
            "writer": writer,
            "topics": per_topic,
            "failures": failures,
        })
    );
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    Ok(())
}
