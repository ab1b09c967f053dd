//! What the heads found, as log lines: the default run's way of showing its outputs before a
//! ROS 2 subscriber or recorder is attached.
//!
//! [`HeadLogSink`] writes one line per head at most once per interval, and, when frames carry
//! ground truth (the synthetic scene), running quality figures against it: segmentation mIoU,
//! depth AbsRel and the share of ground-truth boxes found by a detection (IoU >= 0.5).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::eval::metrics::{BoxRecall, Confusion, DepthErrors};
use crate::heads::{HeadOutput, NamedOutput};
use crate::result::FrameResult;
use crate::sink::{Sink, SinkError};

/// One-line description of a head output.
pub fn describe(output: &HeadOutput) -> String {
    let mut s = String::new();
    match output {
        HeadOutput::Detections(d) => {
            let _ = write!(s, "{} boxes", d.len());
            for det in d.iter().take(4) {
                let _ = write!(
                    s,
                    " [{} {:.2} ({:.0},{:.0})-({:.0},{:.0})]",
                    det.class_name, det.score, det.x0, det.y0, det.x1, det.y1
                );
            }
            if d.len() > 4 {
                s.push_str(" ...");
            }
        }
        HeadOutput::Segmentation(m) => {
            let mut counts = vec![0usize; m.class_names.len()];
            for &id in &m.class_ids {
                if let Some(c) = counts.get_mut(id as usize) {
                    *c += 1;
                }
            }
            let total = m.class_ids.len().max(1) as f64;
            let parts: Vec<String> = counts
                .iter()
                .enumerate()
                .filter(|&(_, &n)| n > 0)
                .map(|(i, &n)| format!("{} {:.1}%", m.class_names[i], 100.0 * n as f64 / total))
                .collect();
            let _ = write!(s, "{}x{}: {}", m.width, m.height, parts.join(", "));
        }
        HeadOutput::Depth(d) => {
            let mut v: Vec<f32> = d.data.iter().copied().filter(|x| x.is_finite()).collect();
            if v.is_empty() {
                s.push_str("no valid depth");
            } else {
                v.sort_by(f32::total_cmp);
                let _ = write!(
                    s,
                    "{:.1}..{:.1} m, median {:.1} m",
                    v[0],
                    v[v.len() - 1],
                    v[v.len() / 2]
                );
            }
        }
        HeadOutput::Classification(c) => {
            let parts: Vec<String> = c
                .iter()
                .map(|l| format!("{} {:.2}", l.class_name, l.score))
                .collect();
            s.push_str(&parts.join(", "));
        }
        HeadOutput::Anomaly(a) => {
            let max = a.map.data.iter().copied().fold(0f32, f32::max);
            let _ = write!(s, "score {:.3}, max patch distance {:.3}", a.score, max);
        }
        HeadOutput::Pca(img) => {
            let _ = write!(s, "{}x{} RGB feature image", img.width, img.height);
        }
    }
    s
}

/// Logs head outputs and, for frames with ground truth, running quality figures.
#[derive(Debug)]
pub struct HeadLogSink {
    interval: Duration,
    last: Option<Instant>,
    confusion: Option<Confusion>,
    depth: DepthErrors,
    depth_range: (f32, f32),
    boxes: BoxRecall,
    frames_with_truth: u64,
}

impl HeadLogSink {
    /// Log at most once per `interval`; depth is scored on ground truth within `depth_range`.
    pub fn new(interval: Duration, depth_range: (f32, f32)) -> Self {
        Self {
            interval,
            last: None,
            confusion: None,
            depth: DepthErrors::default(),
            depth_range,
            boxes: BoxRecall::default(),
            frames_with_truth: 0,
        }
    }

    fn score(&mut self, result: &FrameResult) {
        let Some(gt) = &result.frame.ground_truth else {
            return;
        };
        self.frames_with_truth += 1;
        for NamedOutput { output, .. } in &result.heads {
            match output {
                HeadOutput::Segmentation(m) if m.class_ids.len() == gt.class_mask.len() => {
                    self.confusion
                        .get_or_insert_with(|| Confusion::new(m.class_names.len()))
                        .add(&gt.class_mask, &m.class_ids);
                }
                HeadOutput::Depth(d) if d.data.len() == gt.depth.len() => {
                    self.depth.add(&gt.depth, &d.data, self.depth_range);
                }
                HeadOutput::Detections(d) => self.boxes.add(&gt.boxes, d, 1, 0.5),
                _ => {}
            }
        }
    }

    /// The quality line (empty when nothing was scored).
    pub fn quality_line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.confusion.as_ref().and_then(Confusion::miou) {
            parts.push(format!("segmentation mIoU {m:.3}"));
        }
        if let (Some(a), Some(d1)) = (self.depth.abs_rel(), self.depth.delta1()) {
            parts.push(format!("depth AbsRel {a:.3} delta1 {d1:.3}"));
        }
        if let Some(r) = self.boxes.recall() {
            parts.push(format!("boxes found (IoU>=0.5) {:.0}%", 100.0 * r));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(
                "vs ground truth over {} frames: {}",
                self.frames_with_truth,
                parts.join(", ")
            )
        }
    }
}

impl Sink for HeadLogSink {
    fn name(&self) -> String {
        "head-log".into()
    }

    fn consume(&mut self, result: &FrameResult) -> Result<(), SinkError> {
        self.score(result);
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            return Ok(());
        }
        self.last = Some(now);
        for h in &result.heads {
            log::info!(
                "frame {} {}: {} ({:.1} ms)",
                result.frame.seq,
                h.head,
                describe(&h.output),
                h.elapsed.as_secs_f64() * 1e3
            );
        }
        let q = self.quality_line();
        if !q.is_empty() {
            log::info!("{q}");
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let q = self.quality_line();
        if !q.is_empty() {
            log::info!("final: {q}");
        }
        Ok(())
    }
}
