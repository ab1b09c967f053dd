//! The synthetic scene ([`crate::synthetic`]) as a [`FrameSource`]: [`SyntheticSource`] renders
//! frame after frame, stamps each on the injected clock and paces them at the config's `fps`.
//!
//! # Pacing
//!
//! With `fps > 0`, frame `n` of [`SyntheticSource`] is due `n / fps` after the first frame on the
//! injected clock; the source sleeps until then, so it neither drifts nor runs ahead. If the
//! consumer falls more than one period behind, the schedule restarts from now instead of
//! delivering a burst to catch up. Each frame is stamped with the clock's time after the wait.

use std::sync::Arc;

pub use super::pacing::SleepFn;
use super::pacing::{thread_sleep, Pacer, RunState};
use super::{FrameSource, SourceError, SourceStats};
use crate::frame::{Clock, Frame, SystemClock};
use crate::synthetic::{SceneConfigError, SyntheticCamera, SyntheticScene};

/// The scene's config, which also holds this source's settings (`fps`, `frame_id`,
/// `max_frames`).
pub use crate::synthetic::SyntheticConfig;

/// A scene setting out of range is a source parameter out of range.
impl From<SceneConfigError> for SourceError {
    fn from(e: SceneConfigError) -> Self {
        SourceError::BadParameter {
            name: e.name,
            value: e.value,
            reason: e.reason,
        }
    }
}

/// The synthetic scene as a [`FrameSource`]: frame `n` is [`SyntheticScene::render`]`(n)`, with
/// seq `n`, stamped on the injected clock and paced at `fps` (see the module docs).
///
/// `next_frame` before `start` starts the source; after `stop` it returns `Ok(None)` until
/// `start` is called again, which resumes the sequence where it stopped.
pub struct SyntheticSource {
    scene: SyntheticScene,
    clock: Arc<dyn Clock>,
    sleep: SleepFn,
    pacer: Pacer,
    next_index: u64,
    state: RunState,
    stats: SourceStats,
}

impl std::fmt::Debug for SyntheticSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSource")
            .field("config", &self.scene.config())
            .field("camera", &self.scene.camera())
            .field("next_index", &self.next_index)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl SyntheticSource {
    /// A source with the default camera for the config's image size
    /// ([`SyntheticCamera::for_image`]).
    pub fn new(config: SyntheticConfig, clock: Arc<dyn Clock>) -> Result<Self, SourceError> {
        let camera = SyntheticCamera::for_image(config.width, config.height);
        Self::with_camera(config, camera, clock)
    }

    /// A source with a given camera.
    pub fn with_camera(
        config: SyntheticConfig,
        camera: SyntheticCamera,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SourceError> {
        let scene = SyntheticScene::new(&config, &camera)?;
        Ok(SyntheticSource {
            pacer: Pacer::new(config.fps),
            scene,
            clock,
            sleep: thread_sleep(),
            next_index: 0,
            state: RunState::Idle,
            stats: SourceStats::default(),
        })
    }

    /// A source on wall-clock time ([`SystemClock`]) with the default camera.
    pub fn with_system_clock(config: SyntheticConfig) -> Result<Self, SourceError> {
        Self::new(config, Arc::new(SystemClock))
    }

    /// Replace how the source waits for a frame's due time (tests, simulated time).
    pub fn with_sleep(mut self, sleep: SleepFn) -> Self {
        self.sleep = sleep;
        self
    }

    /// The scene it renders.
    pub fn scene(&self) -> &SyntheticScene {
        &self.scene
    }
}

impl FrameSource for SyntheticSource {
    fn describe(&self) -> String {
        let c = &self.scene.config();
        let rate = if c.fps > 0.0 {
            format!("{} fps", c.fps)
        } else {
            "as fast as asked".to_string()
        };
        format!(
            "synthetic seed={} {}x{} @ {rate}, {} objects",
            c.seed, c.width, c.height, c.num_objects
        )
    }

    fn start(&mut self) -> Result<(), SourceError> {
        if self.state != RunState::Running {
            self.pacer.restart();
            self.state = RunState::Running;
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        match self.state {
            RunState::Stopped => return Ok(None),
            RunState::Idle => self.start()?,
            RunState::Running => {}
        }
        if self
            .scene
            .config()
            .max_frames
            .is_some_and(|max| self.stats.frames >= max)
        {
            return Ok(None);
        }
        self.pacer.wait(self.clock.as_ref(), self.sleep.as_ref());
        let stamp = self.clock.now();
        let index = self.next_index;
        let (rgb, truth) = self.scene.render(index);
        self.next_index += 1;
        self.stats.frames += 1;
        log::trace!("synthetic frame {index} at {stamp:?}");
        Ok(Some(Frame {
            width: self.scene.config().width,
            height: self.scene.config().height,
            rgb,
            stamp,
            seq: index,
            frame_id: self.scene.config().frame_id.clone(),
            ground_truth: Some(Arc::new(truth)),
        }))
    }

    fn stop(&mut self) {
        self.state = RunState::Stopped;
    }

    fn stats(&self) -> SourceStats {
        self.stats.clone()
    }
}
