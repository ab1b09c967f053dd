//! Depth evaluation over frames: the error sums of [`DepthErrors`] plus two fixed-size
//! histograms for the plots (signed relative error, and errors by true distance).

use super::metrics::DepthErrors;

/// Bins of the signed relative error (p - t) / t over [-1, 1].
pub const ERROR_BINS: usize = 80;
/// Bins of true distance over [0, the distance range].
pub const DISTANCE_BINS: usize = 40;
/// Distance range of the by-distance curve when no `--max-depth` is given, metres.
pub const DEFAULT_DISTANCE_RANGE: f64 = 100.0;

/// Errors of the pixels whose truth falls in one distance bin.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DistanceBin {
    /// Pixels.
    pub pixels: u64,
    /// Sum of |p - t| / t.
    pub abs_rel_sum: f64,
    /// Sum of (p - t)^2.
    pub sq_sum: f64,
}

/// Depth errors with histograms, accumulated over frames.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthAnalysis {
    /// The metric sums.
    pub errors: DepthErrors,
    /// Score only truth at most this many metres (`None`: all positive finite truth).
    pub max_depth: Option<f64>,
    /// Counts of (p - t) / t in [`ERROR_BINS`] bins over [-1, 1]; below -1 cannot happen (p > 0),
    /// above 1 goes to `error_overflow`.
    pub error_histogram: Vec<u64>,
    /// Pixels with (p - t) / t > 1.
    pub error_overflow: u64,
    /// Distance bins over [0, `distance_range`]; truth beyond goes to the last bin.
    pub by_distance: Vec<DistanceBin>,
    /// Upper end of the distance bins, metres.
    pub distance_range: f64,
}

impl DepthAnalysis {
    /// Empty, scoring truth up to `max_depth` metres when given.
    pub fn new(max_depth: Option<f64>) -> Self {
        Self {
            errors: DepthErrors::default(),
            max_depth,
            error_histogram: vec![0; ERROR_BINS],
            error_overflow: 0,
            by_distance: vec![DistanceBin::default(); DISTANCE_BINS],
            distance_range: max_depth
                .filter(|m| m.is_finite() && *m > 0.0)
                .unwrap_or(DEFAULT_DISTANCE_RANGE),
        }
    }

    /// Add one frame (same-size slices, metres).
    pub fn add(&mut self, truth: &[f32], predicted: &[f32]) {
        let hi = self.max_depth.unwrap_or(f64::INFINITY);
        let (hist, over, bins, range) = (
            &mut self.error_histogram,
            &mut self.error_overflow,
            &mut self.by_distance,
            self.distance_range,
        );
        self.errors.add_each(truth, predicted, (0.0, hi), |t, p| {
            let rel = (p - t) / t;
            if rel > 1.0 {
                *over += 1;
            } else {
                let i = (((rel + 1.0) / 2.0) * ERROR_BINS as f64) as usize;
                if let Some(n) = hist.get_mut(i.min(ERROR_BINS - 1)) {
                    *n += 1;
                }
            }
            let j = ((t / range) * DISTANCE_BINS as f64) as usize;
            if let Some(b) = bins.get_mut(j.min(DISTANCE_BINS - 1)) {
                b.pixels += 1;
                b.abs_rel_sum += (p - t).abs() / t;
                b.sq_sum += (p - t) * (p - t);
            }
        });
    }

    /// Lower edge of error bin `i`.
    pub fn error_bin_start(i: usize) -> f64 {
        -1.0 + 2.0 * i as f64 / ERROR_BINS as f64
    }

    /// Centre of distance bin `j`, metres.
    pub fn distance_bin_centre(&self, j: usize) -> f64 {
        (j as f64 + 0.5) * self.distance_range / DISTANCE_BINS as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_scored_pixels() {
        let mut d = DepthAnalysis::new(Some(80.0));
        d.add(&[2.0, 4.0, 90.0, 10.0], &[3.0, 4.0, 1.0, 30.0]);
        assert_eq!(d.errors.pixels(), 3, "90 m is beyond --max-depth");
        assert_eq!(d.error_overflow, 1, "30 m for 10 m is +200%");
        assert_eq!(d.error_histogram.iter().sum::<u64>(), 2);
        // +50% falls in bin 60 of 80 ([0.5, 0.525)); 0% in bin 40.
        assert_eq!(d.error_histogram[60], 1);
        assert_eq!(d.error_histogram[40], 1);
        // Bins of 2 m (80 m / 40): 2 m in bin 1, 4 m in bin 2, 10 m in bin 5.
        assert_eq!(d.by_distance[1].pixels, 1);
        assert_eq!(d.by_distance[2].pixels, 1);
        assert_eq!(d.by_distance[5].pixels, 1);
    }
}
