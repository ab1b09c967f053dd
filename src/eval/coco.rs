//! COCO box detection evaluation: a port of pycocotools' `COCOeval` with `iouType="bbox"`
//! (version 2.0.x), step for step, so the 12 summary numbers agree with it.
//!
//! What pycocotools does, and so what this does:
//! * images are the ground truth's `images` (sorted ids), categories its `categories` (sorted ids);
//!   annotations of other images or categories, and results of other categories, are not scored;
//!   results naming an image the ground truth lacks are an error (pycocotools asserts);
//! * a ground-truth box is ignored when `iscrowd` is set or its `area` field is outside the area
//!   range (the area field, not the box: a missing `area` is taken as w*h). pycocotools reads an
//!   annotation's `ignore` field and then overwrites it with `iscrowd`, so `ignore` has no effect
//!   here either;
//! * a result's area is w*h of its box; results are sorted by score, highest first, with a stable
//!   sort (numpy `mergesort`) and cut to the largest maxDets (100) per image and category;
//! * IoU of boxes as `maskApi.c bbIou`: for a crowd box the union is the result's own area;
//! * matching per IoU threshold (np.linspace(.5, .95, 10)): each result, best first, takes the
//!   unmatched (or crowd) ground truth of highest IoU >= threshold, preferring non-ignored ones;
//!   a result matched to an ignored box is ignored, as is an unmatched result outside the area
//!   range. A match to a ground truth whose annotation id is 0 counts as no match (pycocotools
//!   stores the id and tests it for truth);
//! * accumulation per category, area range and maxDets: results of all images sorted by score
//!   (stable, images in id order), precision made monotone from the right, sampled at the recall
//!   thresholds np.linspace(0, 1, 101) with `searchsorted(side='left')`;
//! * summary: the 12 stats, each the mean of the defined (> -1) entries, -1 if none.
//!
//! Work is grouped by (image, category) once, so the cost grows with the number of boxes, not
//! with images times categories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{list_some, EvalError};

/// Number of IoU thresholds (0.50, 0.55, ..., 0.95).
pub const IOU_THRESHOLD_COUNT: usize = 10;
/// Number of recall thresholds (0.00, 0.01, ..., 1.00).
pub const RECALL_THRESHOLD_COUNT: usize = 101;
/// The maxDets settings, ascending.
pub const MAX_DETS: [usize; 3] = [1, 10, 100];
/// Area ranges: label, lower and upper bound (inclusive), in square pixels.
pub const AREA_RANGES: [(&str, f64, f64); 4] = [
    ("all", 0.0, 1e10),
    ("small", 0.0, 1024.0),
    ("medium", 1024.0, 9216.0),
    ("large", 9216.0, 1e10),
];
/// Names of the 12 summary stats, in pycocotools' order.
pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

const T: usize = IOU_THRESHOLD_COUNT;
const R: usize = RECALL_THRESHOLD_COUNT;
const A: usize = AREA_RANGES.len();
const M: usize = MAX_DETS.len();
/// numpy's `np.spacing(1)`.
const EPS: f64 = f64::EPSILON;

/// `np.linspace(start, stop, num)` computed as numpy does (i * step + start, last = stop).
pub fn linspace<const N: usize>(start: f64, stop: f64) -> [f64; N] {
    let step = (stop - start) / (N as f64 - 1.0);
    let mut out = [0.0; N];
    for (i, v) in out.iter_mut().enumerate() {
        *v = i as f64 * step + start;
    }
    if let Some(last) = out.last_mut() {
        *last = stop;
    }
    out
}

/// The IoU thresholds, `np.linspace(.5, .95, 10)`.
pub fn iou_thresholds() -> [f64; T] {
    linspace(0.5, 0.95)
}

/// The recall thresholds, `np.linspace(0, 1, 101)`.
pub fn recall_thresholds() -> [f64; R] {
    linspace(0.0, 1.0)
}

/// One image of the ground truth.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CocoImage {
    /// Image id.
    pub id: i64,
    /// File name (its stem matches prediction frames).
    #[serde(default)]
    pub file_name: String,
    /// Width in pixels, when given.
    #[serde(default)]
    pub width: Option<u64>,
    /// Height in pixels, when given.
    #[serde(default)]
    pub height: Option<u64>,
}

/// One category.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CocoCategory {
    /// Category id.
    pub id: i64,
    /// Name (detection class names map to it).
    pub name: String,
}

/// One ground-truth box.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoAnnotation {
    /// Annotation id.
    pub id: i64,
    /// Image id.
    pub image_id: i64,
    /// Category id.
    pub category_id: i64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// The `area` field (w*h when absent): decides the area range.
    pub area: f64,
    /// A crowd region: ignored, matches many results, IoU over the result's area.
    pub iscrowd: bool,
}

#[derive(Deserialize)]
struct RawAnnotation {
    id: i64,
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    #[serde(default)]
    area: Option<f64>,
    #[serde(default)]
    iscrowd: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawCoco {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<RawAnnotation>,
    categories: Vec<CocoCategory>,
}

/// A COCO instances file: images, categories and boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoGroundTruth {
    /// Where it was read from (named in errors).
    pub source: PathBuf,
    /// Images in file order.
    pub images: Vec<CocoImage>,
    /// Categories in file order.
    pub categories: Vec<CocoCategory>,
    /// Boxes in file order.
    pub annotations: Vec<CocoAnnotation>,
}

fn format_err(path: &Path, reason: impl std::fmt::Display) -> EvalError {
    EvalError::Format {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_text(path: &Path) -> Result<String, EvalError> {
    std::fs::read_to_string(path).map_err(|e| EvalError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl CocoGroundTruth {
    /// Read a COCO instances JSON file.
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        Self::from_json(&read_text(path)?, path)
    }

    /// Parse COCO instances JSON; `source` is named in errors.
    pub fn from_json(text: &str, source: &Path) -> Result<Self, EvalError> {
        let raw: RawCoco = serde_json::from_str(text).map_err(|e| {
            format_err(
                source,
                format!("not COCO instances JSON ({e}); it needs images, annotations, categories"),
            )
        })?;
        let mut annotations = Vec::with_capacity(raw.annotations.len());
        for a in raw.annotations {
            let iscrowd = match &a.iscrowd {
                None | Some(serde_json::Value::Null) => false,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(serde_json::Value::Number(n)) => n.as_f64().is_some_and(|v| v != 0.0),
                Some(other) => {
                    return Err(format_err(
                        source,
                        format!("annotation {}: iscrowd is {other}; use 0 or 1", a.id),
                    ))
                }
            };
            annotations.push(CocoAnnotation {
                id: a.id,
                image_id: a.image_id,
                category_id: a.category_id,
                area: a.area.unwrap_or(a.bbox[2] * a.bbox[3]),
                bbox: a.bbox,
                iscrowd,
            });
        }
        Ok(Self {
            source: source.to_path_buf(),
            images: raw.images,
            categories: raw.categories,
            annotations,
        })
    }

    /// The category id of a class name.
    pub fn category_id(&self, name: &str) -> Option<i64> {
        self.categories
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.id)
    }
}

/// One detection result, as in a COCO results file.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct CocoDetection {
    /// Image id.
    pub image_id: i64,
    /// Category id.
    pub category_id: i64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// Confidence.
    pub score: f64,
}

/// Read a COCO results file (a JSON list of {image_id, category_id, bbox, score}).
pub fn load_results(path: &Path) -> Result<Vec<CocoDetection>, EvalError> {
    serde_json::from_str(&read_text(path)?).map_err(|e| {
        format_err(
            path,
            format!(
                "not a COCO results list ({e}); it needs [{{\"image_id\", \"category_id\", \
                 \"bbox\": [x, y, w, h], \"score\"}}, ...]"
            ),
        )
    })
}

/// IoU of a result box and a ground-truth box (`[x, y, w, h]`), as `maskApi.c bbIou`.
pub fn box_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let da = d[2] * d[3];
    let u = if crowd { da } else { da + g[2] * g[3] - i };
    i / u
}

/// State of one result at one IoU threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DetState {
    TruePositive,
    FalsePositive,
    Ignored,
}

/// One (image, category) with its boxes and results.
struct Cell {
    image: usize,
    category: usize,
    gts: Vec<usize>,
    dts: Vec<usize>,
}

/// `evaluateImg` of one cell for every area range.
struct CellEval {
    category: usize,
    /// Result scores, highest first (at most 100).
    scores: Vec<f64>,
    /// Non-ignored ground truths per area range.
    npig: [usize; A],
    /// `states[a][d * T + t]`.
    states: [Vec<DetState>; A],
}

/// Everything `accumulate` and `summarize` produce.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoEvaluation {
    /// Category ids, sorted (the K axis).
    pub category_ids: Vec<i64>,
    /// Category names, in `category_ids` order.
    pub category_names: Vec<String>,
    /// `precision[t][r][k][a][m]` flattened; -1 where a category has no ground truth.
    precision: Vec<f64>,
    /// `recall[t][k][a][m]` flattened; -1 where undefined.
    recall: Vec<f64>,
    /// The 12 summary stats ([`STAT_NAMES`]); -1 where undefined.
    pub stats: [f64; 12],
    /// Images evaluated.
    pub images: usize,
    /// Ground-truth boxes of evaluated images and categories (crowd included).
    pub ground_truth_boxes: usize,
    /// Results scored (of known categories).
    pub results: usize,
    /// Results whose category is not in the ground truth (not scored, as in pycocotools).
    pub results_unknown_category: usize,
}

fn p_index(t: usize, r: usize, k: usize, kn: usize, a: usize, m: usize) -> usize {
    (((t * R + r) * kn + k) * A + a) * M + m
}

fn r_index(t: usize, k: usize, kn: usize, a: usize, m: usize) -> usize {
    ((t * kn + k) * A + a) * M + m
}

/// Stable order of indices by score, highest first (numpy `argsort(-s, kind='mergesort')`).
fn by_score_desc(scores: impl Fn(usize) -> f64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        scores(b)
            .partial_cmp(&scores(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order
}

/// Score `results` against `truth` (`results_source` is named in errors).
pub fn evaluate(
    truth: &CocoGroundTruth,
    results: &[CocoDetection],
    results_source: &Path,
) -> Result<CocoEvaluation, EvalError> {
    // p.imgIds and p.catIds: sorted, unique.
    let mut image_ids: Vec<i64> = truth.images.iter().map(|i| i.id).collect();
    image_ids.sort_unstable();
    image_ids.dedup();
    let mut categories: Vec<(i64, String)> = truth
        .categories
        .iter()
        .map(|c| (c.id, c.name.clone()))
        .collect();
    categories.sort_by_key(|c| c.0);
    categories.dedup_by_key(|c| c.0);
    let image_index: HashMap<i64, usize> = image_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    let cat_index: HashMap<i64, usize> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| (c.0, i))
        .collect();

    let mut unknown: Vec<i64> = results
        .iter()
        .filter(|d| !image_index.contains_key(&d.image_id))
        .map(|d| d.image_id)
        .collect();
    if !unknown.is_empty() {
        let count = unknown.len();
        unknown.sort_unstable();
        unknown.dedup();
        return Err(EvalError::UnknownImages {
            path: results_source.to_path_buf(),
            truth: truth.source.clone(),
            count,
            ids: list_some(&unknown),
        });
    }

    if truth.annotations.iter().any(|a| a.id == 0) {
        log::warn!(
            "{}: an annotation has id 0; as in pycocotools, a result matched to it counts as \
             unmatched (number annotations from 1)",
            truth.source.display()
        );
    }
    let mut cells: Vec<Cell> = Vec::new();
    let mut cell_of: HashMap<(usize, usize), usize> = HashMap::new();
    let mut cell = |image: usize, category: usize| -> usize {
        *cell_of.entry((image, category)).or_insert_with(|| {
            cells.push(Cell {
                image,
                category,
                gts: Vec::new(),
                dts: Vec::new(),
            });
            cells.len() - 1
        })
    };
    let mut ground_truth_boxes = 0;
    let mut owner = Vec::new();
    for (i, g) in truth.annotations.iter().enumerate() {
        if let (Some(&im), Some(&k)) = (image_index.get(&g.image_id), cat_index.get(&g.category_id))
        {
            owner.push((cell(im, k), i, true));
            ground_truth_boxes += 1;
        }
    }
    let mut results_unknown_category = 0;
    for (i, d) in results.iter().enumerate() {
        match (image_index.get(&d.image_id), cat_index.get(&d.category_id)) {
            (Some(&im), Some(&k)) => owner.push((cell(im, k), i, false)),
            _ => results_unknown_category += 1,
        }
    }
    for (c, i, is_gt) in owner {
        if let Some(cell) = cells.get_mut(c) {
            if is_gt {
                cell.gts.push(i);
            } else {
                cell.dts.push(i);
            }
        }
    }
    // Categories in id order, images in id order within each (the order of `evalImgs`).
    cells.sort_by_key(|c| (c.category, c.image));

    let iou_thrs = iou_thresholds();
    let evals: Vec<CellEval> = cells
        .iter()
        .map(|c| evaluate_cell(c, truth, results, &iou_thrs))
        .collect();
    let kn = categories.len();
    let (precision, recall) = accumulate(&evals, kn);
    let mut ev = CocoEvaluation {
        category_ids: categories.iter().map(|c| c.0).collect(),
        category_names: categories.into_iter().map(|c| c.1).collect(),
        precision,
        recall,
        stats: [-1.0; 12],
        images: image_ids.len(),
        ground_truth_boxes,
        results: results.len() - results_unknown_category,
        results_unknown_category,
    };
    ev.stats = ev.summarize();
    Ok(ev)
}

/// pycocotools `computeIoU` + `evaluateImg` of one cell, for every area range.
fn evaluate_cell(
    cell: &Cell,
    truth: &CocoGroundTruth,
    results: &[CocoDetection],
    iou_thrs: &[f64; T],
) -> CellEval {
    let max_det = MAX_DETS[M - 1];
    let gts: Vec<&CocoAnnotation> = cell
        .gts
        .iter()
        .filter_map(|&i| truth.annotations.get(i))
        .collect();
    let all_dts: Vec<&CocoDetection> = cell.dts.iter().filter_map(|&i| results.get(i)).collect();
    let order = by_score_desc(|i| all_dts.get(i).map_or(0.0, |d| d.score), all_dts.len());
    let dts: Vec<&CocoDetection> = order
        .iter()
        .take(max_det)
        .filter_map(|&i| all_dts.get(i).copied())
        .collect();
    let (nd, ng) = (dts.len(), gts.len());
    // ious[d * ng + g], ground truth in file order.
    let mut ious = vec![0.0; nd * ng];
    for (di, d) in dts.iter().enumerate() {
        for (gi, g) in gts.iter().enumerate() {
            ious[di * ng + gi] = box_iou(&d.bbox, &g.bbox, g.iscrowd);
        }
    }
    let mut npig = [0; A];
    let mut states: [Vec<DetState>; A] = Default::default();
    for (a, &(_, lo, hi)) in AREA_RANGES.iter().enumerate() {
        let ignore: Vec<bool> = gts
            .iter()
            .map(|g| g.iscrowd || g.area < lo || g.area > hi)
            .collect();
        // Stable: non-ignored first, file order within each group.
        let gind: Vec<usize> = (0..ng)
            .filter(|&g| !ignore[g])
            .chain((0..ng).filter(|&g| ignore[g]))
            .collect();
        npig[a] = ignore.iter().filter(|&&i| !i).count();
        let mut st = vec![DetState::FalsePositive; nd * T];
        let mut gt_matched = vec![false; ng];
        for (t, &thr) in iou_thrs.iter().enumerate() {
            gt_matched.iter_mut().for_each(|m| *m = false);
            for di in 0..nd {
                let mut best = thr.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for (pos, &g) in gind.iter().enumerate() {
                    let crowd = gts.get(g).is_some_and(|g| g.iscrowd);
                    if gt_matched[pos] && !crowd {
                        continue;
                    }
                    if let Some(mp) = m {
                        if !ignore[gind[mp]] && ignore[g] {
                            break;
                        }
                    }
                    let v = ious[di * ng + g];
                    if v < best {
                        continue;
                    }
                    best = v;
                    m = Some(pos);
                }
                // dtm holds the matched gt id: an id of 0 reads as "no match".
                let mut matched_id = 0;
                let mut ig = false;
                if let Some(mp) = m {
                    let g = gind[mp];
                    ig = ignore[g];
                    matched_id = gts.get(g).map_or(0, |g| g.id);
                    gt_matched[mp] = true;
                }
                let d_area = dts.get(di).map_or(0.0, |d| d.bbox[2] * d.bbox[3]);
                if matched_id == 0 && (d_area < lo || d_area > hi) {
                    ig = true;
                }
                st[di * T + t] = match (ig, matched_id != 0) {
                    (true, _) => DetState::Ignored,
                    (false, true) => DetState::TruePositive,
                    (false, false) => DetState::FalsePositive,
                };
            }
        }
        states[a] = st;
    }
    CellEval {
        category: cell.category,
        scores: dts.iter().map(|d| d.score).collect(),
        npig,
        states,
    }
}

/// pycocotools `accumulate`: (precision, recall) arrays.
fn accumulate(evals: &[CellEval], kn: usize) -> (Vec<f64>, Vec<f64>) {
    let rec_thrs = recall_thresholds();
    let mut precision = vec![-1.0; T * R * kn * A * M];
    let mut recall = vec![-1.0; T * kn * A * M];
    let mut start = 0;
    while start < evals.len() {
        let k = evals[start].category;
        let end = start
            + evals[start..]
                .iter()
                .take_while(|e| e.category == k)
                .count();
        let group = &evals[start..end];
        start = end;
        for a in 0..A {
            let npig: usize = group.iter().map(|e| e.npig[a]).sum();
            if npig == 0 {
                continue;
            }
            for (m, &max_det) in MAX_DETS.iter().enumerate() {
                // (score, states of this result) in concatenation order.
                let mut dets: Vec<(f64, &[DetState])> = Vec::new();
                for e in group {
                    for (d, &s) in e.scores.iter().enumerate().take(max_det) {
                        if let Some(st) = e.states[a].get(d * T..(d + 1) * T) {
                            dets.push((s, st));
                        }
                    }
                }
                dets.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(std::cmp::Ordering::Equal));
                let nd = dets.len();
                let mut rc = vec![0.0; nd];
                let mut pr = vec![0.0; nd];
                for t in 0..T {
                    let (mut tp, mut fp) = (0u64, 0u64);
                    for (i, (_, st)) in dets.iter().enumerate() {
                        match st.get(t) {
                            Some(DetState::TruePositive) => tp += 1,
                            Some(DetState::FalsePositive) => fp += 1,
                            _ => {}
                        }
                        let (tpf, fpf) = (tp as f64, fp as f64);
                        rc[i] = tpf / npig as f64;
                        pr[i] = tpf / (fpf + tpf + EPS);
                    }
                    recall[r_index(t, k, kn, a, m)] = rc.last().copied().unwrap_or(0.0);
                    for i in (1..nd).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (r, &thr) in rec_thrs.iter().enumerate() {
                        let i = rc.partition_point(|&x| x < thr);
                        precision[p_index(t, r, k, kn, a, m)] = pr.get(i).copied().unwrap_or(0.0);
                    }
                }
            }
        }
    }
    (precision, recall)
}

fn mean_defined(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values.filter(|&v| v > -1.0) {
        sum += v;
        n += 1;
    }
    if n == 0 {
        -1.0
    } else {
        sum / n as f64
    }
}

impl CocoEvaluation {
    fn kn(&self) -> usize {
        self.category_ids.len()
    }

    /// `precision[t][r][k][a][m]` (-1 where undefined or out of range).
    pub fn precision(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> f64 {
        if t >= T || r >= R || k >= self.kn() || a >= A || m >= M {
            return -1.0;
        }
        self.precision
            .get(p_index(t, r, k, self.kn(), a, m))
            .copied()
            .unwrap_or(-1.0)
    }

    /// `recall[t][k][a][m]` (-1 where undefined or out of range).
    pub fn recall(&self, t: usize, k: usize, a: usize, m: usize) -> f64 {
        if t >= T || k >= self.kn() || a >= A || m >= M {
            return -1.0;
        }
        self.recall
            .get(r_index(t, k, self.kn(), a, m))
            .copied()
            .unwrap_or(-1.0)
    }

    /// pycocotools `_summarize(ap, iouThr, areaRng, maxDets)` with indices: `t = None` is all
    /// thresholds, `ks = None` all categories.
    fn summarize_one(&self, ap: bool, t: Option<usize>, a: usize, m: usize, ks: &[usize]) -> f64 {
        let ts: Vec<usize> = t.map_or((0..T).collect(), |t| vec![t]);
        if ap {
            mean_defined(ts.iter().flat_map(|&t| {
                (0..R).flat_map(move |r| ks.iter().map(move |&k| self.precision(t, r, k, a, m)))
            }))
        } else {
            mean_defined(
                ts.iter()
                    .flat_map(|&t| ks.iter().map(move |&k| self.recall(t, k, a, m))),
            )
        }
    }

    fn summarize(&self) -> [f64; 12] {
        let ks: Vec<usize> = (0..self.kn()).collect();
        let ap = |t, a| self.summarize_one(true, t, a, 2, &ks);
        let ar = |a, m| self.summarize_one(false, None, a, m, &ks);
        [
            ap(None, 0),
            ap(Some(0), 0),
            ap(Some(5), 0),
            ap(None, 1),
            ap(None, 2),
            ap(None, 3),
            ar(0, 0),
            ar(0, 1),
            ar(0, 2),
            ar(1, 2),
            ar(2, 2),
            ar(3, 2),
        ]
    }

    /// AP@[.5:.95] of one category (area all, maxDets 100); `None` without ground truth.
    pub fn category_ap(&self, k: usize) -> Option<f64> {
        let v = self.summarize_one(true, None, 0, 2, &[k]);
        (v > -1.0).then_some(v)
    }

    /// AP@.5 of one category.
    pub fn category_ap50(&self, k: usize) -> Option<f64> {
        let v = self.summarize_one(true, Some(0), 0, 2, &[k]);
        (v > -1.0).then_some(v)
    }

    /// AR@100 of one category.
    pub fn category_ar100(&self, k: usize) -> Option<f64> {
        let v = self.summarize_one(false, None, 0, 2, &[k]);
        (v > -1.0).then_some(v)
    }

    /// Precision at the 101 recall thresholds of one category (area all, maxDets 100): at IoU
    /// 0.5, and averaged over IoU 0.5:0.95. `None` without ground truth.
    pub fn category_pr_curve(&self, k: usize) -> Option<(Vec<f64>, Vec<f64>)> {
        if self.precision(0, 0, k, 0, 2) <= -1.0 {
            return None;
        }
        let at50 = (0..R).map(|r| self.precision(0, r, k, 0, 2)).collect();
        let mean = (0..R)
            .map(|r| (0..T).map(|t| self.precision(t, r, k, 0, 2)).sum::<f64>() / T as f64)
            .collect();
        Some((at50, mean))
    }

    /// The 12 summary lines exactly as pycocotools prints them.
    pub fn summary_lines(&self) -> Vec<String> {
        let rows: [(bool, Option<&str>, &str, usize); 12] = [
            (true, None, "all", 100),
            (true, Some("0.50"), "all", 100),
            (true, Some("0.75"), "all", 100),
            (true, None, "small", 100),
            (true, None, "medium", 100),
            (true, None, "large", 100),
            (false, None, "all", 1),
            (false, None, "all", 10),
            (false, None, "all", 100),
            (false, None, "small", 100),
            (false, None, "medium", 100),
            (false, None, "large", 100),
        ];
        rows.iter()
            .zip(self.stats)
            .map(|(&(ap, iou, area, max_dets), v)| {
                let (title, kind) = if ap {
                    ("Average Precision", "(AP)")
                } else {
                    ("Average Recall", "(AR)")
                };
                format!(
                    " {title:<18} {kind} @[ IoU={:<9} | area={area:>6} | maxDets={max_dets:>3} ] = {v:.3}",
                    iou.unwrap_or("0.50:0.95")
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(json: &str) -> CocoGroundTruth {
        CocoGroundTruth::from_json(json, Path::new("gt.json")).unwrap()
    }

    fn det(image_id: i64, category_id: i64, bbox: [f64; 4], score: f64) -> CocoDetection {
        CocoDetection {
            image_id,
            category_id,
            bbox,
            score,
        }
    }

    const ONE_BOX: &str = r#"{"images": [{"id": 1}, {"id": 2}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "ball"}]}"#;

    #[test]
    fn thresholds_are_numpy_linspace() {
        let t = iou_thresholds();
        assert_eq!(t[0], 0.5);
        assert_eq!(t[5], 0.75);
        assert_eq!(t[9], 0.95);
        assert_eq!(recall_thresholds()[100], 1.0);
        assert_eq!(recall_thresholds()[1], 0.01);
    }

    #[test]
    fn crowd_union_is_the_result_area() {
        let d = [0.0, 0.0, 10.0, 10.0];
        let g = [5.0, 0.0, 100.0, 100.0];
        assert!((box_iou(&d, &g, false) - 50.0 / (100.0 + 10000.0 - 50.0)).abs() < 1e-15);
        assert_eq!(box_iou(&d, &g, true), 0.5);
        assert_eq!(box_iou(&d, &[20.0, 0.0, 5.0, 5.0], false), 0.0);
    }

    #[test]
    fn a_perfect_result_scores_one_and_undefined_is_minus_one() {
        let g = gt(ONE_BOX);
        let ev = evaluate(
            &g,
            &[det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.9)],
            Path::new("r"),
        )
        .unwrap();
        // Small area: AP, AP50, AP75, APs = 1 (less pycocotools' eps in tp / (tp + fp + eps));
        // no medium/large boxes: -1.
        let want = [
            1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0,
        ];
        for (got, want) in ev.stats.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{:?}", ev.stats);
        }
        assert!(ev.category_ap(0).is_some_and(|v| (v - 1.0).abs() < 1e-12));
        assert_eq!(ev.category_ap(1), None, "a category without ground truth");
        assert_eq!(
            ev.summary_lines()[0],
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000"
        );
        assert_eq!(
            ev.summary_lines()[10],
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ] = -1.000"
        );
    }

    #[test]
    fn a_false_positive_ranked_first_halves_precision() {
        let g = gt(ONE_BOX);
        // IoU 0.81 (9x9 inside 10x10) passes thresholds .50..=.80 (7 of 10).
        let results = [
            det(2, 1, [0.0, 0.0, 10.0, 10.0], 0.95),
            det(1, 1, [0.0, 0.0, 9.0, 9.0], 0.9),
        ];
        let ev = evaluate(&g, &results, Path::new("r")).unwrap();
        // Precision 0.5 at every recall threshold for the 7 passing IoUs, 0 for the 3 others.
        assert!(
            (ev.stats[0] - 0.5 * 7.0 / 10.0).abs() < 1e-12,
            "{:?}",
            ev.stats
        );
        assert!((ev.stats[1] - 0.5).abs() < 1e-12);
        assert!((ev.stats[8] - 0.7).abs() < 1e-12);
        // AR1: the best result of each image only; image 1's only result is the match.
        assert!((ev.stats[6] - 0.7).abs() < 1e-12);
    }

    #[test]
    fn crowd_boxes_are_ignored_and_absorb_results() {
        let g = gt(r#"{"images": [{"id": 1}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 1}],
            "categories": [{"id": 1, "name": "box"}]}"#);
        let results = [
            det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.5),
            det(1, 1, [60.0, 60.0, 10.0, 10.0], 0.9),
            det(1, 1, [70.0, 70.0, 10.0, 10.0], 0.8),
        ];
        let ev = evaluate(&g, &results, Path::new("r")).unwrap();
        // Both results inside the crowd region are ignored: AP 1.
        assert!((ev.stats[0] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn no_results_give_zero_and_unknown_images_are_an_error() {
        let g = gt(ONE_BOX);
        let ev = evaluate(&g, &[], Path::new("r")).unwrap();
        assert_eq!(ev.stats[0], 0.0);
        assert_eq!(ev.stats[8], 0.0);
        let e = evaluate(
            &g,
            &[det(7, 1, [0.0; 4], 1.0), det(9, 1, [0.0; 4], 1.0)],
            Path::new("res.json"),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("res.json") && msg.contains("7, 9"), "{msg}");
    }

    #[test]
    fn malformed_json_names_the_file() {
        let e = CocoGroundTruth::from_json("{", Path::new("ann.json")).unwrap_err();
        assert!(e.to_string().contains("ann.json"), "{e}");
    }
}
