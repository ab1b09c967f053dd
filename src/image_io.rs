//! Reading image files into packed RGB8, and listing a directory's image files, with errors
//! that name the file or directory.

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

/// Errors listing a directory of images ([`list_images`]). Callers add what the directory was
/// given as (`dir:`, `--images`).
#[derive(Debug, thiserror::Error)]
pub enum ImageDirError {
    /// The directory does not exist.
    #[error("{dir} does not exist; check the path")]
    Missing {
        /// The directory.
        dir: PathBuf,
    },
    /// The path is a file.
    #[error("{dir} is a file, not a directory; give a folder of images")]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// The directory cannot be read.
    #[error("permission denied opening {dir}: make the directory readable by this user")]
    PermissionDenied {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory holds no image files.
    #[error("{dir} holds no .png/.jpg/.jpeg images")]
    NoImages {
        /// The directory.
        dir: PathBuf,
    },
    /// Any other I/O failure.
    #[error("{dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ImageDirError {
    /// Whether this is the user's input to fix (everything but unexpected I/O).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, ImageDirError::Io { .. })
    }
}

/// Extensions of image files, compared case-insensitively.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether a path names a PNG or JPEG by its extension (any case).
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The image files of a directory: its `.png`, `.jpg` and `.jpeg` files (extension in any
/// case; subdirectories, other files and dangling links ignored; symbolic links followed),
/// sorted by file name in plain byte order. A directory without any is an error
/// ([`ImageDirError::NoImages`]).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, ImageDirError> {
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => ImageDirError::Missing {
            dir: dir.to_path_buf(),
        },
        std::io::ErrorKind::PermissionDenied => ImageDirError::PermissionDenied {
            dir: dir.to_path_buf(),
        },
        _ => ImageDirError::Io {
            dir: dir.to_path_buf(),
            source,
        },
    };
    let meta = std::fs::metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(ImageDirError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        // Follows symbolic links; a dangling link is not an image file.
        if is_image_name(&path) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(ImageDirError::NoImages {
            dir: dir.to_path_buf(),
        });
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_images_sorts_filters_and_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in ["b.PNG", "a.jpeg", "c.txt", "png"] {
            std::fs::write(root.join(name), "x").unwrap();
        }
        std::fs::create_dir(root.join("d.jpg")).unwrap();
        let names: Vec<_> = list_images(root)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.jpeg", "b.PNG"]);

        let file = root.join("a.jpeg");
        assert!(
            matches!(list_images(&file), Err(ImageDirError::NotADirectory { dir }) if dir == file)
        );
        let missing = root.join("nope");
        let e = list_images(&missing).unwrap_err();
        assert!(matches!(&e, ImageDirError::Missing { dir } if *dir == missing));
        assert!(e.to_string().contains("nope") && e.is_bad_input());
        let empty = root.join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(
            matches!(list_images(&empty), Err(ImageDirError::NoImages { dir }) if dir == empty)
        );
    }
}
