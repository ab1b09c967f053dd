//! Settings of the synthetic scene ([`SyntheticConfig`]) and their limits.
//!
//! The config says what to draw (image size, seed, number of objects, scene time per frame) and
//! also carries the source's settings (`frame_id`, `max_frames`, pacing at `fps`), so one value
//! describes a stream; [`crate::source::synthetic::SyntheticSource`] re-exports it.

use serde::{Deserialize, Serialize};

use crate::frame::{DEFAULT_FRAME_ID, DEFAULT_HEIGHT, DEFAULT_WIDTH};

/// Largest accepted `num_objects`.
pub const MAX_OBJECTS: usize = 64;
/// Largest accepted image side, pixels.
pub const MAX_SIDE: usize = 8_192;
/// Frame rate that sets scene time when `fps` is 0 (frames as fast as asked).
pub const DEFAULT_SCENE_RATE_HZ: f64 = 15.0;

/// Settings of the synthetic scene and source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Image width, pixels (default 640).
    pub width: usize,
    /// Image height, pixels (default 480).
    pub height: usize,
    /// Target frame rate; 0 = a frame as soon as one is asked for (default 15).
    pub fps: f64,
    /// Seed of everything random in the scene (default 0).
    pub seed: u64,
    /// `frame_id` of the frames (default `camera_optical_frame`).
    pub frame_id: String,
    /// Number of objects on the ground (default 6, at most [`MAX_OBJECTS`]).
    pub num_objects: usize,
    /// End the stream after this many frames (default: never).
    pub max_frames: Option<u64>,
    /// Share of frames in which one object wears a foreign checkerboard surface: an anomaly,
    /// with its pixels as the anomaly mask of the ground truth (default 0: none, and no anomaly
    /// ground truth).
    pub anomaly_rate: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
            fps: 15.0,
            seed: 0,
            frame_id: DEFAULT_FRAME_ID.to_string(),
            num_objects: 6,
            max_frames: None,
            anomaly_rate: 0.0,
        }
    }
}

impl SyntheticConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SceneConfigError> {
        for (name, value) in [("width", self.width), ("height", self.height)] {
            if value == 0 || value > MAX_SIDE {
                return Err(bad(
                    name,
                    value,
                    format!("must be between 1 and {MAX_SIDE} pixels"),
                ));
            }
        }
        if !self.fps.is_finite() || self.fps < 0.0 {
            return Err(bad(
                "fps",
                self.fps,
                "must be a finite number of frames per second >= 0 (0 = as fast as asked)".into(),
            ));
        }
        if self.num_objects > MAX_OBJECTS {
            return Err(bad(
                "num_objects",
                self.num_objects,
                format!("must be at most {MAX_OBJECTS}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.anomaly_rate) {
            return Err(bad(
                "anomaly_rate",
                self.anomaly_rate,
                "must be a share of frames between 0 and 1".into(),
            ));
        }
        if self.frame_id.is_empty() {
            return Err(bad(
                "frame_id",
                "\"\"",
                "must name the camera's coordinate frame, e.g. camera_optical_frame".into(),
            ));
        }
        Ok(())
    }

    /// Scene rate: `fps`, or [`DEFAULT_SCENE_RATE_HZ`] when `fps` is 0.
    pub(super) fn scene_rate(&self) -> f64 {
        if self.fps > 0.0 {
            self.fps
        } else {
            DEFAULT_SCENE_RATE_HZ
        }
    }
}

/// A scene or camera setting out of range; names the setting, its value and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("synthetic scene setting {name} = {value} is invalid: {reason}")]
pub struct SceneConfigError {
    /// Setting name.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// Why, and the fix.
    pub reason: String,
}

/// A [`SceneConfigError`].
pub(super) fn bad(
    name: &'static str,
    value: impl std::fmt::Display,
    reason: String,
) -> SceneConfigError {
    SceneConfigError {
        name,
        value: value.to_string(),
        reason,
    }
}
