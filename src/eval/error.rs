//! The errors of offline evaluation. Each names the file (or the frames) and says what to fix.

use std::path::PathBuf;

/// At most this many unmatched names are listed in one error.
pub const LISTED_MISMATCHES: usize = 10;

/// Errors reading ground truth or predictions, or scoring them.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file cannot be read.
    #[error("cannot read {path}: {reason}; check the path")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A file's contents are not what its format requires.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Detection results name images the ground truth does not have (pycocotools asserts).
    #[error(
        "{path}: {count} result(s) name image ids that are not in the ground truth {truth} \
         (ids {ids}); evaluate against the annotations the detections were made for"
    )]
    UnknownImages {
        /// The results file.
        path: PathBuf,
        /// The ground truth file.
        truth: PathBuf,
        /// How many results.
        count: usize,
        /// The first few unknown ids, comma separated.
        ids: String,
    },
    /// Predicted frames and ground-truth frames do not correspond.
    #[error(
        "predictions and ground truth {truth} do not match: {details}; frames match by file stem, \
         or by stamp (the stem is the stamp in nanoseconds)"
    )]
    Unmatched {
        /// The ground truth directory or file.
        truth: PathBuf,
        /// What did not match on each side.
        details: String,
    },
    /// A prediction's size differs from its ground truth.
    #[error(
        "{path}: {what} is {predicted_width}x{predicted_height} but the ground truth {truth} is \
         {truth_width}x{truth_height}; predict at the ground truth's resolution"
    )]
    SizeMismatch {
        /// The prediction (file or frame).
        path: PathBuf,
        /// The ground truth file.
        truth: PathBuf,
        /// What was compared (e.g. "the segmentation mask").
        what: &'static str,
        /// Prediction width.
        predicted_width: usize,
        /// Prediction height.
        predicted_height: usize,
        /// Truth width.
        truth_width: usize,
        /// Truth height.
        truth_height: usize,
    },
    /// A detection's class name is not a category of the ground truth.
    #[error(
        "frame {frame}: detection class {name:?} is not a category of {truth} (categories: \
         {known}); use a detection head trained on these categories"
    )]
    UnknownClass {
        /// The frame.
        frame: String,
        /// The class name.
        name: String,
        /// The annotations file.
        truth: PathBuf,
        /// The category names, comma separated.
        known: String,
    },
    /// A metric is undefined for this input (e.g. AUROC with one class).
    #[error("{what}: {reason}")]
    Undefined {
        /// Which metric and input.
        what: String,
        /// Why, and what to add.
        reason: String,
    },
    /// Nothing to evaluate.
    #[error("{0}")]
    Nothing(String),
    /// Writing a report or a plot failed (not the input's fault).
    #[error("cannot write {path}: {reason}; check the directory and free space")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl EvalError {
    /// Whether the input is at fault (exit 2) rather than the machine (exit 1).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, EvalError::Write { .. })
    }
}

/// Up to [`LISTED_MISMATCHES`] items, comma separated, with the count of the rest.
pub fn list_some<T: std::fmt::Display>(items: &[T]) -> String {
    let mut s = items
        .iter()
        .take(LISTED_MISMATCHES)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > LISTED_MISMATCHES {
        s.push_str(&format!(" and {} more", items.len() - LISTED_MISMATCHES));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_at_most_ten() {
        let items: Vec<u32> = (1..=12).collect();
        assert_eq!(
            list_some(&items),
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more"
        );
        assert_eq!(list_some(&[1]), "1");
    }
}
