//! Reading image files into packed RGB8, with errors that name the file.

use std::path::{Path, PathBuf};

use crate::frame::RgbImageView;

/// Errors reading an image file.
#[derive(Debug, thiserror::Error)]
pub enum ImageFileError {
    /// The file cannot be opened.
    #[error("cannot read image {path}: {source}; check the path")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a decodable PNG or JPEG.
    #[error("cannot decode image {path}: {reason}; give a PNG or JPEG file")]
    Undecodable {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
}

/// A decoded, packed RGB8 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A borrowed view for preprocessing.
    pub fn view(&self) -> RgbImageView<'_> {
        RgbImageView::packed(self.width, self.height, &self.data)
    }
}

/// Decode a PNG or JPEG file (any bit depth or channel layout) to RGB8.
pub fn load_rgb(path: &Path) -> Result<RgbImage, ImageFileError> {
    let bytes = std::fs::read(path).map_err(|source| ImageFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let img = image::load_from_memory(&bytes).map_err(|e| ImageFileError::Undecodable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let rgb = img.into_rgb8();
    Ok(RgbImage {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        data: rgb.into_raw(),
    })
}
