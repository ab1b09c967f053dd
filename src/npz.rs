//! NumPy `.npz` output (what `features --out` writes) and `.npy` input (reference fixtures).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

/// Errors reading or writing NumPy files. They name the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// Reading or writing failed.
    #[error("{path}: {source}; check the path and free space")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a float32 NumPy array.
    #[error("{path} is not a float32 .npy array: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A named float32 array to write.
#[derive(Debug, Clone, Copy)]
pub struct NamedArray<'a> {
    /// Array name (the key in Python's `np.load(...)[name]`).
    pub name: &'a str,
    /// Shape.
    pub shape: &'a [usize],
    /// Row-major values.
    pub data: &'a [f32],
}

/// Write arrays to an uncompressed `.npz`, as `numpy.savez` does.
pub fn write_npz(path: &Path, arrays: &[NamedArray]) -> Result<(), NpyError> {
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(io)?;
    let mut npz = npyz::npz::NpzWriter::new(BufWriter::new(file));
    for a in arrays {
        let expected: usize = a.shape.iter().product();
        if expected != a.data.len() {
            return Err(NpyError::Format {
                path: path.to_path_buf(),
                reason: format!(
                    "array {} has {} values for shape {:?}",
                    a.name,
                    a.data.len(),
                    a.shape
                ),
            });
        }
        let options =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let shape: Vec<u64> = a.shape.iter().map(|&d| d as u64).collect();
        let mut writer = npz
            .array::<f32>(a.name, options)
            .map_err(io)?
            .default_dtype()
            .shape(&shape)
            .begin_nd()
            .map_err(io)?;
        writer.extend(a.data.iter().copied()).map_err(io)?;
        writer.finish().map_err(io)?;
    }
    npz.zip_writer()
        .finish()
        .map_err(|e| io(std::io::Error::other(e)))?;
    Ok(())
}

/// Write one float32 array as `.npy`, as `numpy.save` does.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let expected: usize = shape.iter().product();
    if expected != data.len() {
        return Err(NpyError::Format {
            path: path.to_path_buf(),
            reason: format!("{} values for shape {shape:?}", data.len()),
        });
    }
    let file = File::create(path).map_err(io)?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(io)?;
    writer.extend(data.iter().copied()).map_err(io)?;
    writer.finish().map_err(io)
}

/// Read a float32 `.npy` file: (shape, values).
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| NpyError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    let data = npy.into_vec::<f32>().map_err(|e| NpyError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((shape, data))
}
