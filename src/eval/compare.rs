//! `eval --compare A.json B.json`: the numbers of two reports side by side (metric, A, B, B - A).
//!
//! Every number of a report is a metric named by its path (`detection.stats.AP`,
//! `segmentation.per_class.box.iou`); lists of per-class objects are keyed by class name, plain
//! lists (curves, histograms, matrices) are left out.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::EvalError;
use super::files::read_json;

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, f64>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_string(), x);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                flatten(&join(k), v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                if let Some(name) = item.get("name").and_then(|n| n.as_str()) {
                    flatten(&join(name), item, out);
                }
            }
        }
        _ => {}
    }
}

/// The metrics of a report JSON by path.
pub fn metrics_of(report: &serde_json::Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    flatten("", report, &mut out);
    out
}

/// The comparison table of two report files (Markdown, one row per metric of either).
pub fn compare_files(a: &Path, b: &Path) -> Result<String, EvalError> {
    let expected = "a report.json written by `dinov3_perception eval --out`";
    let ja: serde_json::Value = read_json(a, expected)?;
    let jb: serde_json::Value = read_json(b, expected)?;
    for (path, j) in [(a, &ja), (b, &jb)] {
        if j.get("tool").is_none() {
            return Err(EvalError::Format {
                path: path.to_path_buf(),
                reason: format!("has no \"tool\" field; expected {expected}"),
            });
        }
    }
    Ok(table(&metrics_of(&ja), &metrics_of(&jb), a, b))
}

fn table(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, pa: &Path, pb: &Path) -> String {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut s = format!(
        "A = {}\nB = {}\n\n| metric | A | B | B - A |\n|---|---|---|---|\n",
        pa.display(),
        pb.display()
    );
    let cell = |v: Option<&f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.6}"));
    for k in keys {
        let (va, vb) = (a.get(k), b.get(k));
        let diff = match (va, vb) {
            (Some(x), Some(y)) => format!("{:+.6}", y - x),
            _ => "-".to_string(),
        };
        s.push_str(&format!("| {k} | {} | {} | {diff} |\n", cell(va), cell(vb)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_named_by_path_and_class() {
        let a = serde_json::json!({"tool": "t", "frames": 2,
            "detection": {"stats": {"AP": 0.5}, "per_class": [{"name": "box", "ap": 0.25}],
                          "recall_thresholds": [0.0, 0.01]}});
        let m = metrics_of(&a);
        assert_eq!(m.get("detection.stats.AP"), Some(&0.5));
        assert_eq!(m.get("detection.per_class.box.ap"), Some(&0.25));
        assert_eq!(m.len(), 3, "{m:?}");
        let mut b = m.clone();
        b.insert("detection.stats.AP".into(), 0.75);
        b.remove("frames");
        let t = table(&m, &b, Path::new("a.json"), Path::new("b.json"));
        assert!(
            t.contains("| detection.stats.AP | 0.500000 | 0.750000 | +0.250000 |"),
            "{t}"
        );
        assert!(t.contains("| frames | 2.000000 | - | - |"), "{t}");
    }
}
