//! Area under the ROC curve, as `sklearn.metrics.roc_auc_score` computes it for binary labels:
//! the ROC is built from the distinct score values (tied scores form one step, a diagonal
//! segment when positives and negatives tie), and the area is the trapezoid rule over it.
//!
//! The area is summed in integers (twice the area times positives times negatives) and divided
//! once, so it is exact up to the final division; sorting makes it O(n log n), which is what
//! pixel AUROC over millions of pixels needs.

/// Scores and 0/1 labels, collected over frames: the scores of positives and of negatives kept
/// apart (4 bytes a sample).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AurocSamples {
    positive: Vec<f32>,
    negative: Vec<f32>,
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
        if positive {
            self.positive.push(score);
        } else {
            self.negative.push(score);
        }
    }

    /// Add scores with their labels (pairs by position; the shorter side decides).
    pub fn extend(&mut self, scores: &[f32], positive: impl Iterator<Item = bool>) {
        for (&s, p) in scores.iter().zip(positive) {
            self.push(s, p);
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.positive.len() + self.negative.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of positive samples.
    pub fn positives(&self) -> usize {
        self.positive.len()
    }

    /// The area under the ROC curve (sorts the samples in place).
    pub fn auroc(&mut self) -> Result<f64, AurocError> {
        if self.is_empty() {
            return Err(AurocError::Empty);
        }
        if self
            .positive
            .iter()
            .chain(&self.negative)
            .any(|s| s.is_nan())
        {
            return Err(AurocError::NaN);
        }
        if self.positive.is_empty() || self.negative.is_empty() {
            return Err(AurocError::OneClass {
                positive: !self.positive.is_empty(),
            });
        }
        // Highest score first; -0.0 and 0.0 tie, as in numpy.
        let desc = |a: &f32, b: &f32| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal);
        self.positive.sort_unstable_by(desc);
        self.negative.sort_unstable_by(desc);
        let (pos, neg) = (&self.positive, &self.negative);
        // Walk the distinct thresholds: each group of equal scores moves (fp, tp) at once, and
        // the trapezoid of the step adds dfp * (tp_before + tp_after) (twice its area,
        // unnormalised).
        let (mut i, mut j) = (0, 0);
        let (mut tp, mut twice_area) = (0u128, 0u128);
        while i < pos.len() || j < neg.len() {
            let value = match (pos.get(i), neg.get(j)) {
                (Some(&p), Some(&n)) => p.max(n),
                (Some(&p), None) => p,
                (None, Some(&n)) => n,
                (None, None) => break,
            };
            let i0 = i;
            while pos.get(i).is_some_and(|&p| p == value) {
                i += 1;
            }
            let j0 = j;
            while neg.get(j).is_some_and(|&n| n == value) {
                j += 1;
            }
            let (dtp, dfp) = ((i - i0) as u128, (j - j0) as u128);
            twice_area += dfp * (2 * tp + dtp);
            tp += dtp;
        }
        let (p, n) = (pos.len() as u128, neg.len() as u128);
        Ok(twice_area as f64 / (2 * p * n) as f64)
    }
}

/// `roc_auc_score(labels, scores)` of (score, label) pairs.
pub fn roc_auc(samples: &[(f32, bool)]) -> Result<f64, AurocError> {
    let mut s = AurocSamples::default();
    for &(score, positive) in samples {
        s.push(score, positive);
    }
    s.auroc()
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

    /// Mann-Whitney: the fraction of (positive, negative) pairs ranked right, ties half.
    fn naive(samples: &[(f32, bool)]) -> f64 {
        let (mut right, mut pairs) = (0.0, 0.0);
        for &(p, _) in samples.iter().filter(|s| s.1) {
            for &(n, _) in samples.iter().filter(|s| !s.1) {
                pairs += 1.0;
                right += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        right / pairs
    }

    proptest::proptest! {
        #[test]
        fn equals_pair_counting(
            samples in proptest::collection::vec((0u8..8, proptest::bool::ANY), 2..60)
        ) {
            // Few distinct scores: many ties.
            let s: Vec<(f32, bool)> = samples.iter().map(|&(v, l)| (v as f32 / 4.0, l)).collect();
            match roc_auc(&s) {
                Ok(a) => proptest::prop_assert!((a - naive(&s)).abs() < 1e-12),
                Err(e) => {
                    let one_class = matches!(e, AurocError::OneClass { .. });
                    proptest::prop_assert!(one_class, "{}", e);
                }
            }
        }
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
