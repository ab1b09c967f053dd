//! Image files from a directory (`--source dir:PATH`).
//!
//! The directory is listed once, at start: its `.png`, `.jpg` and `.jpeg` files (extension in
//! any case; subdirectories and other files are ignored, and so are files added later) in plain
//! byte order of their names, so number frames with zero padding (`frame_0009.png` before
//! `frame_0010.png`). Each is decoded to RGB8; images may differ in size.
//!
//! Files carry no capture time, so a frame's stamp is the injected clock's time when its file
//! was read (after any pacing wait). With `fps > 0` frames are paced like a camera at that rate,
//! without drift (see [`super::synthetic`] for the schedule).
//!
//! A file that cannot be read or decoded is skipped: counted in [`SourceStats::skipped`], its
//! sequence number left as a gap, and a warning naming it logged the first time it fails (for
//! at most [`MAX_SKIP_WARNINGS`] files; later failures are logged at debug level). A full pass
//! over the files without one good image ends the stream with [`SourceError::NoImages`] rather
//! than looping forever.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::pacing::{thread_sleep, Pacer, RunState, SleepFn};
use super::{FrameSource, SourceError, SourceStats};
use crate::frame::{Clock, Frame, SystemClock};
use crate::image_io::{self, load_rgb, ImageDirError};

/// Distinct unreadable files warned about before further ones go to debug level.
pub const MAX_SKIP_WARNINGS: usize = 10;

/// Settings of a directory source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The directory of images.
    pub dir: PathBuf,
    /// Target frame rate; 0 = a frame as soon as one is asked for.
    pub fps: f64,
    /// Start again from the first file after the last.
    pub loop_forever: bool,
    /// `frame_id` of the frames.
    pub frame_id: String,
    /// End the stream after this many frames (default: never).
    pub max_frames: Option<u64>,
}

impl FilesConfig {
    /// Defaults for a directory: as fast as asked, one pass, `camera_optical_frame`, no limit.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FilesConfig {
            dir: dir.into(),
            fps: 0.0,
            loop_forever: false,
            frame_id: crate::frame::DEFAULT_FRAME_ID.to_string(),
            max_frames: None,
        }
    }

    /// Check the parameters (not the directory: that happens at start).
    pub fn validate(&self) -> Result<(), SourceError> {
        if !self.fps.is_finite() || self.fps < 0.0 {
            return Err(SourceError::BadParameter {
                name: "fps",
                value: self.fps.to_string(),
                reason: "must be a finite number of frames per second >= 0 (0 = as fast as asked)"
                    .into(),
            });
        }
        if self.frame_id.is_empty() {
            return Err(SourceError::BadParameter {
                name: "frame_id",
                value: "\"\"".into(),
                reason: "must name the camera's coordinate frame, e.g. camera_optical_frame".into(),
            });
        }
        Ok(())
    }
}

/// The image files of a directory, sorted by name (see the module docs):
/// [`crate::image_io::list_images`] with its errors as the `dir:` source reports them.
///
/// Errors: [`SourceError::Missing`] if it does not exist, [`SourceError::BadParameter`] (`dir`)
/// if it is not a directory, [`SourceError::PermissionDenied`], [`SourceError::NoImages`] if it
/// holds no image files, [`SourceError::Io`] for other failures.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    image_io::list_images(dir).map_err(|e| match e {
        ImageDirError::Missing { dir } => SourceError::Missing {
            path: dir,
            fix: "check the path given to dir:".into(),
        },
        ImageDirError::PermissionDenied { dir } => SourceError::PermissionDenied {
            path: dir,
            fix: "make the directory readable by this user".into(),
        },
        ImageDirError::NotADirectory { dir } => SourceError::BadParameter {
            name: "dir",
            value: dir.display().to_string(),
            reason: "is a file, not a directory; point dir: at a folder of images".into(),
        },
        ImageDirError::NoImages { dir } => SourceError::NoImages { path: dir },
        ImageDirError::Io { dir, source } => SourceError::Io { path: dir, source },
    })
}

/// A directory of images as a [`FrameSource`] (see the module docs).
///
/// `next_frame` before `start` starts the source; after `stop` it returns `Ok(None)` until
/// `start` is called again, which lists the directory anew and begins from its first file.
pub struct FilesSource {
    config: FilesConfig,
    clock: Arc<dyn Clock>,
    sleep: SleepFn,
    pacer: Pacer,
    files: Vec<PathBuf>,
    /// Index of the next file to read.
    next: usize,
    /// Files read (good or not) since start: the next sequence number.
    seq: u64,
    /// Failures in a row; a whole pass of them ends the stream.
    failures_in_row: usize,
    /// Which files were already warned about.
    warned: Vec<bool>,
    warnings: usize,
    state: RunState,
    stats: SourceStats,
}

impl std::fmt::Debug for FilesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesSource")
            .field("config", &self.config)
            .field("files", &self.files.len())
            .field("next", &self.next)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl FilesSource {
    /// A source over `config.dir`; checks the parameters now and the directory at start.
    pub fn new(config: FilesConfig, clock: Arc<dyn Clock>) -> Result<Self, SourceError> {
        config.validate()?;
        Ok(FilesSource {
            pacer: Pacer::new(config.fps),
            config,
            clock,
            sleep: thread_sleep(),
            files: Vec::new(),
            next: 0,
            seq: 0,
            failures_in_row: 0,
            warned: Vec::new(),
            warnings: 0,
            state: RunState::Idle,
            stats: SourceStats::default(),
        })
    }

    /// A source on wall-clock time ([`SystemClock`]).
    pub fn with_system_clock(config: FilesConfig) -> Result<Self, SourceError> {
        Self::new(config, Arc::new(SystemClock))
    }

    /// Replace how the source waits for a frame's due time (tests, simulated time).
    pub fn with_sleep(mut self, sleep: SleepFn) -> Self {
        self.sleep = sleep;
        self
    }

    /// The files it reads, in order (empty before start).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The error for a directory in which nothing could be read.
    fn no_good_image(&self) -> SourceError {
        SourceError::NoImages {
            path: self.config.dir.clone(),
        }
    }

    /// Log a skipped file: a warning the first time each file fails, for a limited number of
    /// files; debug level otherwise.
    fn report_skip(&mut self, index: usize, error: &crate::image_io::ImageFileError) {
        if self.warned[index] || self.warnings >= MAX_SKIP_WARNINGS {
            log::debug!("dir source: skipping unreadable image: {error}");
            return;
        }
        self.warned[index] = true;
        self.warnings += 1;
        log::warn!("dir source: skipping unreadable image: {error}");
        if self.warnings == MAX_SKIP_WARNINGS {
            log::warn!(
                "dir source: {MAX_SKIP_WARNINGS} unreadable images in {}; further ones are \
                 logged at debug level and counted in the source's skipped frames",
                self.config.dir.display()
            );
        }
    }
}

impl FrameSource for FilesSource {
    fn describe(&self) -> String {
        let rate = if self.config.fps > 0.0 {
            format!("{} fps", self.config.fps)
        } else {
            "as fast as asked".to_string()
        };
        let pass = if self.config.loop_forever {
            ", looping"
        } else {
            ""
        };
        format!(
            "dir:{} ({} images, {rate}{pass})",
            self.config.dir.display(),
            self.files.len()
        )
    }

    fn start(&mut self) -> Result<(), SourceError> {
        if self.state == RunState::Running {
            return Ok(());
        }
        self.files = list_images(&self.config.dir)?;
        self.warned = vec![false; self.files.len()];
        self.next = 0;
        self.failures_in_row = 0;
        self.pacer.restart();
        self.state = RunState::Running;
        log::debug!("{}", self.describe());
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        match self.state {
            RunState::Stopped => return Ok(None),
            RunState::Idle => self.start()?,
            RunState::Running => {}
        }
        if self
            .config
            .max_frames
            .is_some_and(|max| self.stats.frames >= max)
        {
            return Ok(None);
        }
        if self.failures_in_row >= self.files.len() {
            return Err(self.no_good_image());
        }
        self.pacer.wait(self.clock.as_ref(), self.sleep.as_ref());
        loop {
            if self.next >= self.files.len() {
                if !self.config.loop_forever {
                    // The end of one pass: an error only if nothing in it could be read.
                    return if self.stats.frames == 0 {
                        Err(self.no_good_image())
                    } else {
                        Ok(None)
                    };
                }
                self.next = 0;
            }
            let index = self.next;
            self.next += 1;
            let seq = self.seq;
            self.seq += 1;
            let stamp = self.clock.now();
            match load_rgb(&self.files[index]) {
                Ok(img) => {
                    self.failures_in_row = 0;
                    self.stats.frames += 1;
                    log::trace!(
                        "dir source: frame {seq} from {}",
                        self.files[index].display()
                    );
                    return Ok(Some(Frame {
                        width: img.width,
                        height: img.height,
                        rgb: img.data,
                        stamp,
                        seq,
                        frame_id: self.config.frame_id.clone(),
                        ground_truth: None,
                    }));
                }
                Err(e) => {
                    self.stats.skipped += 1;
                    self.failures_in_row += 1;
                    self.report_skip(index, &e);
                    if self.failures_in_row >= self.files.len() {
                        return Err(self.no_good_image());
                    }
                }
            }
        }
    }

    fn stop(&mut self) {
        self.state = RunState::Stopped;
    }

    fn stats(&self) -> SourceStats {
        self.stats.clone()
    }
}
