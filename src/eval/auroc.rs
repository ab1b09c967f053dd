//! Area under the ROC curve, as `sklearn.metrics.roc_auc_score` computes it for binary labels:
//! the ROC is built from the distinct score values (tied scores form one step, a diagonal
//! segment when positives and negatives tie), and the area is the trapezoid rule over it.
//!
//! The area is summed in integers (twice the area times positives times negatives) and divided
//! once, so it is exact up to the final division; sorting makes it O(n log n), which is what
//! pixel AUROC over millions of pixels needs.

/// Scores and 0/1 labels, collected over frames.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AurocSamples {
    samples: Vec<(f32, bool)>,
}

/// Why an AUROC is undefined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AurocError {
    /// No samples at all.
    #[error("no samples")]
    Empty,
    /// All labels are equal (sklearn: "Only one class present in y_true").
    #[error(
        "only one class present (all {}); ROC AUC needs both normal and anomalous samples",
        if *positive { "anomalous" } else { "normal" }
    )]
    OneClass {
        /// Whether the one class is the positive one.
        positive: bool,
    },
    /// A score is NaN.
    #[error("a score is NaN")]
    NaN,
}

impl AurocSamples {
    /// Add one sample.
    pub fn push(&mut self, score: f32, positive: bool) {
        self.samples.push((score, positive));
    }

    /// Add scores with their labels (pairs by position; the shorter slice decides).
    pub fn extend(&mut self, scores: &[f32], positive: impl Iterator<Item = bool>) {
        self.samples.extend(scores.iter().copied().zip(positive));
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Number of positive samples.
    pub fn positives(&self) -> usize {
        self.samples.iter().filter(|s| s.1).count()
    }

    /// The area under the ROC curve.
    pub fn auroc(&self) -> Result<f64, AurocError> {
        roc_auc(&self.samples)
    }
}

/// `roc_auc_score(labels, scores)` of (score, label) pairs.
pub fn roc_auc(samples: &[(f32, bool)]) -> Result<f64, AurocError> {
    if samples.is_empty() {
        return Err(AurocError::Empty);
    }
    if samples.iter().any(|s| s.0.is_nan()) {
        return Err(AurocError::NaN);
    }
    let pos = samples.iter().filter(|s| s.1).count() as u128;
    let neg = samples.len() as u128 - pos;
    if pos == 0 || neg == 0 {
        return Err(AurocError::OneClass { positive: pos > 0 });
    }
    let mut sorted: Vec<(f32, bool)> = samples.to_vec();
    // Highest score first; -0.0 and 0.0 tie, as in numpy.
    sorted.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    // Walk the distinct thresholds: each group of equal scores moves (fp, tp) at once, and the
    // trapezoid of the step adds dfp * (tp_before + tp_after) (twice its area, unnormalised).
    let (mut tp, mut fp, mut twice_area) = (0u128, 0u128, 0u128);
    let mut i = 0;
    while i < sorted.len() {
        let value = sorted[i].0;
        let (tp0, fp0) = (tp, fp);
        while i < sorted.len() && sorted[i].0 == value {
            if sorted[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        twice_area += (fp - fp0) * (tp + tp0);
    }
    Ok(twice_area as f64 / (2 * pos * neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auc(scores: &[f32], labels: &[u8]) -> Result<f64, AurocError> {
        let s: Vec<(f32, bool)> = scores
            .iter()
            .zip(labels)
            .map(|(&s, &l)| (s, l == 1))
            .collect();
        roc_auc(&s)
    }

    #[test]
    fn hand_checked_cases() {
        // sklearn docs example: 0.75.
        assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]), Ok(0.75));
        assert_eq!(auc(&[0.1, 0.9], &[0, 1]), Ok(1.0));
        assert_eq!(auc(&[0.9, 0.1], &[0, 1]), Ok(0.0));
        // A tie between a positive and a negative counts half.
        assert_eq!(auc(&[0.5, 0.5], &[0, 1]), Ok(0.5));
        // Pairs: (p .5 vs n .5) 0.5, (p .5 vs n .2) 1, (p .9 vs both) 2 -> 3.5 / 4.
        assert_eq!(auc(&[0.2, 0.5, 0.5, 0.9], &[0, 0, 1, 1]), Ok(0.875));
    }

    #[test]
    fn undefined_cases_are_errors() {
        assert_eq!(
            auc(&[0.1, 0.2], &[1, 1]),
            Err(AurocError::OneClass { positive: true })
        );
        assert_eq!(auc(&[], &[]), Err(AurocError::Empty));
        assert_eq!(auc(&[f32::NAN, 0.2], &[0, 1]), Err(AurocError::NaN));
    }
}
