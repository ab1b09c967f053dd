//! The report as Markdown (`report.md`): the headline figures and per-class tables.

use std::fmt::Write;

use super::coco::STAT_NAMES;
use super::report::Report;

fn fig(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
}

fn stat(v: f64) -> String {
    fig((v > -1.0).then_some(v))
}

/// Render a report.
pub fn to_markdown(r: &Report) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        s,
        "# Evaluation report\n\n{}, {} frame(s).\n",
        r.tool, r.frames
    );
    if !r.inputs.is_empty() {
        let _ = writeln!(s, "| input | value |\n|---|---|");
        for (k, v) in &r.inputs {
            let _ = writeln!(s, "| {k} | {} |", v.to_string().trim_matches('"'));
        }
        s.push('\n');
    }
    if let Some(d) = &r.detection {
        let _ = writeln!(
            s,
            "## Detection (COCO)\n\n{} images, {} ground-truth boxes, {} results.\n",
            d.images, d.ground_truth_boxes, d.results
        );
        let _ = writeln!(s, "| {} |", STAT_NAMES.join(" | "));
        let _ = writeln!(s, "|{}", "---|".repeat(STAT_NAMES.len()));
        let row: Vec<String> = STAT_NAMES.iter().map(|n| stat(d.stat(n))).collect();
        let _ = writeln!(s, "| {} |\n", row.join(" | "));
        let _ = writeln!(s, "| class | AP | AP50 | AR100 |\n|---|---|---|---|");
        for c in &d.per_class {
            let _ = writeln!(
                s,
                "| {} ({}) | {} | {} | {} |",
                c.name,
                c.id,
                fig(c.ap),
                fig(c.ap50),
                fig(c.ar100)
            );
        }
        let _ = writeln!(s, "\n```text\n{}\n```\n", d.summary.join("\n"));
    }
    if let Some(g) = &r.segmentation {
        let _ = writeln!(
            s,
            "## Segmentation\n\nmIoU {}, pixel accuracy {}, {} pixels (ignore index {}).\n",
            fig(g.miou),
            fig(g.pixel_accuracy),
            g.pixels,
            g.ignore_index.map_or("none".into(), |i| i.to_string())
        );
        let _ = writeln!(
            s,
            "| class | IoU | truth pixels | predicted pixels |\n|---|---|---|---|"
        );
        for c in &g.per_class {
            let _ = writeln!(
                s,
                "| {} ({}) | {:.4} | {} | {} |",
                c.name, c.id, c.iou, c.truth_pixels, c.predicted_pixels
            );
        }
        s.push('\n');
    }
    if let Some(d) = &r.depth {
        let _ = writeln!(
            s,
            "## Depth\n\n{} pixels{}; predictions clamped to >= {} m.\n",
            d.pixels,
            d.max_depth
                .map_or(String::new(), |m| format!(" with truth <= {m} m")),
            d.min_predicted_depth
        );
        let _ = writeln!(
            s,
            "| AbsRel | SqRel | RMSE | log RMSE | delta1 | delta2 | delta3 |\n|---|---|---|---|---|---|---|"
        );
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            fig(d.abs_rel),
            fig(d.sq_rel),
            fig(d.rmse),
            fig(d.log_rmse),
            fig(d.delta1),
            fig(d.delta2),
            fig(d.delta3)
        );
    }
    if let Some(a) = &r.anomaly {
        let _ = writeln!(
            s,
            "## Anomaly\n\n| image AUROC | images (anomalous) | pixel AUROC | pixels (anomalous) |\n|---|---|---|---|\n| {} | {} ({}) | {} | {} ({}) |\n",
            fig(a.image_auroc),
            a.images,
            a.anomalous_images,
            fig(a.pixel_auroc),
            a.pixels,
            a.anomalous_pixels
        );
    }
    if !r.not_scored.is_empty() {
        let _ = writeln!(s, "Not scored: {}.", r.not_scored.join("; "));
    }
    s
}
