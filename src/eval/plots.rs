//! PNG plots of a report, drawn with plotters into an RGB buffer and encoded with `image`:
//! a precision-recall curve per class, the segmentation confusion matrix (rows normalised),
//! the depth error histogram and depth error against true distance.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::backend::{BitMapBackend, RGBPixel};
use plotters::prelude::*;

use super::error::EvalError;
use super::report::{DepthReport, DetectionReport, Report, SegmentationReport};

/// Plot size in pixels.
const SIZE: (u32, u32) = (800, 600);
const FONT: &str = "sans-serif";

static FONT_ONCE: Once = Once::new();

fn register_font() {
    FONT_ONCE.call_once(|| {
        // A font that fails to load makes every text draw fail, which is reported per plot.
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Draw with `f` into a fresh buffer and write it as a PNG.
fn render(
    path: &Path,
    f: impl FnOnce(&DrawingArea<BitMapBackend<RGBPixel>, plotters::coord::Shift>) -> DrawResult,
) -> Result<(), EvalError> {
    register_font();
    let write_err = |reason: String| EvalError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let (w, h) = SIZE;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let backend = BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut buf, (w, h))
            .map_err(|e| write_err(e.to_string()))?;
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(|e| write_err(e.to_string()))?;
        f(&root).map_err(write_err)?;
        root.present().map_err(|e| write_err(e.to_string()))?;
    }
    image::save_buffer(path, &buf, w, h, image::ColorType::Rgb8)
        .map_err(|e| write_err(e.to_string()))
}

/// A file name made of a class name (letters, digits, `-` and `_`).
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Write every plot the report has data for into `dir`; returns the files written.
pub fn write_plots(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    std::fs::create_dir_all(dir).map_err(|e| EvalError::Write {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut written = Vec::new();
    if let Some(d) = &report.detection {
        for (i, c) in d.per_class.iter().enumerate() {
            if let (Some(p50), Some(pm)) = (&c.pr_iou50, &c.pr_iou50_95) {
                let path = dir.join(format!("pr_{}_{}.png", c.id, file_safe(&c.name)));
                render(&path, |root| pr_curve(root, d, i, p50, pm))?;
                written.push(path);
            }
        }
    }
    if let Some(s) = &report.segmentation {
        if !s.per_class.is_empty() {
            let path = dir.join("confusion_matrix.png");
            render(&path, |root| confusion(root, s))?;
            written.push(path);
        }
    }
    if let Some(d) = &report.depth {
        if d.pixels > 0 {
            let path = dir.join("depth_error_histogram.png");
            render(&path, |root| depth_histogram(root, d))?;
            written.push(path);
            let path = dir.join("depth_error_vs_distance.png");
            render(&path, |root| depth_by_distance(root, d))?;
            written.push(path);
        }
    }
    Ok(written)
}

type Area<'a, 'b> = DrawingArea<BitMapBackend<'a, RGBPixel>, plotters::coord::Shift>;

fn pr_curve(root: &Area, d: &DetectionReport, i: usize, p50: &[f64], pm: &[f64]) -> DrawResult {
    let c = &d.per_class[i];
    let caption = format!(
        "{}: AP {:.3}, AP50 {:.3}",
        c.name,
        c.ap.unwrap_or(0.0),
        c.ap50.unwrap_or(0.0)
    );
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("recall")
        .y_desc("precision")
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    for (values, colour, label) in [(p50, BLUE, "IoU 0.50"), (pm, RED, "IoU 0.50:0.95")] {
        let points = d
            .recall_thresholds
            .iter()
            .copied()
            .zip(values.iter().copied());
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

fn confusion(root: &Area, s: &SegmentationReport) -> DrawResult {
    let n = s.per_class.len();
    let names: Vec<String> = s.per_class.iter().map(|c| c.name.clone()).collect();
    let label = move |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "confusion (rows: truth, normalised); mIoU {:.3}",
                s.miou.unwrap_or(0.0)
            ),
            (FONT, 22),
        )
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, n as f64 - 0.5..-0.5f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n + 1)
        .y_labels(n + 1)
        .x_label_formatter(&label)
        .y_label_formatter(&label)
        .x_desc("predicted")
        .y_desc("truth")
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    for (t, row) in s.confusion.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (p, &count) in row.iter().enumerate() {
            let frac = if total > 0 {
                count as f64 / total as f64
            } else {
                0.0
            };
            let shade = (255.0 * (1.0 - frac)) as u8;
            let (x, y) = (p as f64, t as f64);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    RGBColor(shade, shade, 255).filled(),
                )))
                .map_err(err)?;
            if n <= 20 {
                let colour = if frac > 0.5 { WHITE } else { BLACK };
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{frac:.2}"),
                        (x - 0.2, y),
                        (FONT, 14).into_font().color(&colour),
                    )))
                    .map_err(err)?;
            }
        }
    }
    Ok(())
}

fn depth_histogram(root: &Area, d: &DepthReport) -> DrawResult {
    let max = d.error_counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "depth relative error (p - t) / t; AbsRel {:.3}, {} beyond +1",
                d.abs_rel.unwrap_or(0.0),
                d.error_overflow
            ),
            (FONT, 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-1f64..1f64, 0f64..max * 1.05)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("(p - t) / t")
        .y_desc("pixels")
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let width = 2.0 / d.error_counts.len().max(1) as f64;
    chart
        .draw_series(d.error_bins.iter().zip(&d.error_counts).map(|(&x, &n)| {
            Rectangle::new([(x, 0.0), (x + width, n as f64)], BLUE.mix(0.7).filled())
        }))
        .map_err(err)?;
    Ok(())
}

fn depth_by_distance(root: &Area, d: &DepthReport) -> DrawResult {
    let points: Vec<(f64, f64)> = d
        .by_distance
        .iter()
        .filter_map(|b| Some((b.distance, b.abs_rel?)))
        .collect();
    let x_max = d
        .by_distance
        .last()
        .map_or(1.0, |b| b.distance * 1.02)
        .max(1e-3);
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;
    let mut chart = ChartBuilder::on(root)
        .caption("depth AbsRel by true distance", (FONT, 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("true distance (m)")
        .y_desc("AbsRel")
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
        .map_err(err)?;
    Ok(())
}
