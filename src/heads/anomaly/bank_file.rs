//! Bank files: `<name>.bank.json` (the [`BankManifest`]) + `<name>.bank.npz` (the `features`
//! array), as `models/HEADS.md` ("Anomaly memory bank") defines them; [`MemoryBank::save`],
//! [`MemoryBank::read`] and [`MemoryBank::load`], which check every field and name the file and
//! the fix.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::{BackboneRef, HeadError};
use super::coreset::CoresetInfo;
use super::memory_bank::MemoryBank;
use super::search::check_top_percent;
use crate::model::Manifest;
use crate::npz::{write_npz, NamedArray};

/// Value of the bank manifest's `format` field.
pub const BANK_FORMAT: &str = "dinov3_perception/bank";
/// Supported bank `format_version`.
pub const BANK_FORMAT_VERSION: u32 = 1;
/// A row of the bank file counts as L2-normalised if its norm is within this of 1.
pub const NORM_TOLERANCE: f32 = 1e-3;
/// Name of the array in the bank `.npz`.
pub const FEATURES_ARRAY: &str = "features";

pub(super) const BUILD_COMMAND: &str =
    "dinov3_perception bank build --model MODEL.onnx --images NORMAL_IMAGES_DIR --out BANK";

pub(super) fn rebuild_fix() -> String {
    format!("rebuild it from normal images with `{BUILD_COMMAND}`")
}

/// The bank manifest (`<name>.bank.json`), as `models/HEADS.md` defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankManifest {
    /// Always [`BANK_FORMAT`].
    pub format: String,
    /// Always [`BANK_FORMAT_VERSION`].
    pub format_version: u32,
    /// The backbone whose patch tokens the bank holds.
    pub backbone: BackboneRef,
    /// The `.npz` file name, relative to the manifest's directory.
    pub npz_file: String,
    /// Hex sha256 of the `.npz` bytes.
    pub npz_sha256: String,
    /// Rows of `features`.
    pub patches: usize,
    /// Normal images the rows came from.
    pub images: usize,
    /// Coreset subsampling record.
    pub coreset: CoresetInfo,
    /// Share of patch distances (percent) averaged into the image score.
    pub top_percent: f32,
}

impl BankManifest {
    /// Parse a bank manifest's JSON and check its fields (what [`MemoryBank::read`] reads);
    /// `json_path` names it in errors.
    pub fn parse(text: &str, json_path: &Path) -> Result<Self, HeadError> {
        let manifest: BankManifest = serde_json::from_str(text).map_err(|e| {
            HeadError::invalid(
                json_path,
                format!("not a memory bank manifest ({e})"),
                format!("{} (format in models/HEADS.md)", rebuild_fix()),
            )
        })?;
        let bad = |reason: String| HeadError::invalid(json_path, reason, rebuild_fix());
        if manifest.format != BANK_FORMAT || manifest.format_version != BANK_FORMAT_VERSION {
            return Err(bad(format!(
                "format {:?} version {} is not {BANK_FORMAT:?} version {BANK_FORMAT_VERSION}",
                manifest.format, manifest.format_version
            )));
        }
        if manifest.patches == 0 {
            return Err(HeadError::invalid(
                json_path,
                "the memory bank is empty (0 patches)",
                format!("build it from normal images with `{BUILD_COMMAND}`"),
            ));
        }
        if manifest.backbone.hidden_size == 0 {
            return Err(bad("backbone hidden_size is 0".into()));
        }
        if let Err(e) = check_top_percent(manifest.top_percent) {
            return Err(HeadError::invalid(
                json_path,
                e.to_string(),
                "set \"top_percent\" in (0, 100] (1.0 is AnomalyDINO's choice)",
            ));
        }
        if manifest.npz_file.trim().is_empty() {
            return Err(bad("npz_file is empty".into()));
        }
        Ok(manifest)
    }
}

/// The two files of a bank: `(<name>.bank.json, <name>.bank.npz)` for a path naming either file
/// or the bare `<name>` (or `<name>.bank`).
pub fn bank_paths(path: &Path) -> (PathBuf, PathBuf) {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        let mut json = path.as_os_str().to_owned();
        json.push(".bank.json");
        let mut npz = path.as_os_str().to_owned();
        npz.push(".bank.npz");
        return (json.into(), npz.into());
    };
    let stem = name
        .strip_suffix(".bank.json")
        .or_else(|| name.strip_suffix(".bank.npz"))
        .or_else(|| name.strip_suffix(".bank"))
        .unwrap_or(name);
    (
        path.with_file_name(format!("{stem}.bank.json")),
        path.with_file_name(format!("{stem}.bank.npz")),
    )
}

pub(super) fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl MemoryBank {
    /// Write `<name>.bank.npz` and `<name>.bank.json` for `path` (see [`bank_paths`]); returns
    /// the manifest written. An empty bank is refused (it could not be loaded).
    pub fn save(&self, path: &Path) -> Result<BankManifest, HeadError> {
        let (json_path, npz_path) = bank_paths(path);
        if self.is_empty() {
            return Err(HeadError::invalid(
                &json_path,
                "refusing to write an empty memory bank (0 patches)",
                "collect patch tokens of normal images first",
            ));
        }
        check_top_percent(self.top_percent()).map_err(|e| {
            HeadError::invalid(&json_path, e.to_string(), "set a valid top_percent")
        })?;
        write_npz(
            &npz_path,
            &[NamedArray {
                name: FEATURES_ARRAY,
                shape: &[self.len(), self.dim()],
                data: self.features(),
            }],
        )
        .map_err(|e| {
            HeadError::invalid(&npz_path, e.to_string(), "check the path and free space")
        })?;
        let bytes = std::fs::read(&npz_path).map_err(|source| HeadError::Io {
            path: npz_path.clone(),
            source,
        })?;
        let npz_file = npz_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = BankManifest {
            format: BANK_FORMAT.into(),
            format_version: BANK_FORMAT_VERSION,
            backbone: self.backbone().clone(),
            npz_file,
            npz_sha256: hex_sha256(&bytes),
            patches: self.len(),
            images: self.images(),
            coreset: self.coreset(),
            top_percent: self.top_percent(),
        };
        let text = serde_json::to_string_pretty(&manifest).map_err(|e| {
            HeadError::invalid(
                &json_path,
                format!("cannot encode the manifest: {e}"),
                "report this bug",
            )
        })?;
        std::fs::write(&json_path, text + "\n").map_err(|source| HeadError::Io {
            path: json_path.clone(),
            source,
        })?;
        Ok(manifest)
    }

    /// Read and validate a bank (`path` names either file or the bare `<name>`): manifest
    /// fields, the `.npz` sha256, shape `[patches, hidden_size]`, finite unit-norm rows.
    /// Does not check which backbone is running; see [`MemoryBank::load`].
    pub fn read(path: &Path) -> Result<Self, HeadError> {
        let (json_path, _) = bank_paths(path);
        let text = std::fs::read_to_string(&json_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                HeadError::invalid(
                    &json_path,
                    "the memory bank manifest does not exist",
                    format!(
                        "check the path, or build a bank from normal images with `{BUILD_COMMAND}`"
                    ),
                )
            } else {
                HeadError::Io {
                    path: json_path.clone(),
                    source,
                }
            }
        })?;
        let manifest = BankManifest::parse(&text, &json_path)?;
        let npz_path = json_path
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(&manifest.npz_file);
        let bytes = std::fs::read(&npz_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                HeadError::invalid(
                    &npz_path,
                    format!(
                        "the memory bank features named by {} do not exist",
                        json_path.display()
                    ),
                    format!(
                        "keep the .bank.npz beside its .bank.json, or {}",
                        rebuild_fix()
                    ),
                )
            } else {
                HeadError::Io {
                    path: npz_path.clone(),
                    source,
                }
            }
        })?;
        Self::from_npz_bytes(manifest, &json_path, &npz_path, bytes)
    }

    /// The rest of [`MemoryBank::read`] once both files are read: `manifest` (from
    /// [`BankManifest::parse`]) and the bytes of the `.npz` it names: sha256, shape, rows.
    pub fn from_npz_bytes(
        manifest: BankManifest,
        json_path: &Path,
        npz_path: &Path,
        bytes: Vec<u8>,
    ) -> Result<Self, HeadError> {
        let actual = hex_sha256(&bytes);
        if !actual.eq_ignore_ascii_case(manifest.npz_sha256.trim()) {
            return Err(HeadError::invalid(
                npz_path,
                format!(
                    "sha256 is {actual} but {} says {}; the file was modified, truncated or replaced",
                    json_path.display(),
                    manifest.npz_sha256
                ),
                rebuild_fix(),
            ));
        }
        let features = read_features(npz_path, bytes, &manifest)?;
        Ok(Self::from_parts(
            manifest.backbone,
            features,
            manifest.images,
            manifest.coreset,
            manifest.top_percent,
        ))
    }

    /// [`MemoryBank::read`], then check that the bank was built with `backbone` (hidden size,
    /// patch size, ONNX sha256; not the grid: patch features work at any grid).
    pub fn load(path: &Path, backbone: &Manifest) -> Result<Self, HeadError> {
        let bank = Self::read(path)?;
        check_bank_backbone(&bank_paths(path).0, bank.backbone(), backbone)?;
        Ok(bank)
    }
}

fn read_features(
    npz_path: &Path,
    bytes: Vec<u8>,
    manifest: &BankManifest,
) -> Result<Vec<f32>, HeadError> {
    let bad = |reason: String| HeadError::invalid(npz_path, reason, rebuild_fix());
    let mut archive = npyz::npz::NpzArchive::new(Cursor::new(bytes)).map_err(|e| {
        bad(format!(
            "not a valid .npz archive ({e}); the file is truncated or corrupt"
        ))
    })?;
    let npy = archive
        .by_name(FEATURES_ARRAY)
        .map_err(|e| {
            bad(format!(
                "cannot read array {FEATURES_ARRAY:?} ({e}); the file is corrupt"
            ))
        })?
        .ok_or_else(|| bad(format!("has no array {FEATURES_ARRAY:?}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad(format!(
            "array {FEATURES_ARRAY:?} is in Fortran order, expected C order"
        )));
    }
    let shape: Vec<u64> = npy.shape().to_vec();
    let c = manifest.backbone.hidden_size;
    if shape.len() != 2 {
        return Err(bad(format!(
            "array {FEATURES_ARRAY:?} has shape {shape:?}, expected [patches, {c}]"
        )));
    }
    if shape[0] == 0 {
        return Err(HeadError::invalid(
            npz_path,
            "the memory bank is empty (0 patches)",
            format!("build it from normal images with `{BUILD_COMMAND}`"),
        ));
    }
    if shape[1] != c as u64 {
        return Err(bad(format!(
            "rows have dimension {} but the bank's backbone ({}) has hidden size {c}",
            shape[1], manifest.backbone.variant
        )));
    }
    if shape[0] != manifest.patches as u64 {
        return Err(bad(format!(
            "has {} rows but the manifest says {} patches",
            shape[0], manifest.patches
        )));
    }
    let data = npy.into_vec::<f32>().map_err(|e| {
        bad(format!(
            "array {FEATURES_ARRAY:?} is not readable float32 ({e})"
        ))
    })?;
    if data.len() != manifest.patches * c {
        return Err(bad(format!(
            "array {FEATURES_ARRAY:?} holds {} values, expected {}",
            data.len(),
            manifest.patches * c
        )));
    }
    for (r, row) in data.chunks_exact(c).enumerate() {
        if row.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!(
                "row {r} holds a non-finite value (NaN or infinity)"
            )));
        }
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if (norm as f32 - 1.0).abs() > NORM_TOLERANCE {
            return Err(bad(format!(
                "row {r} has L2 norm {norm:.6}, but bank rows must be L2-normalised"
            )));
        }
    }
    Ok(data)
}

/// Check that a bank built for `reference` fits the backbone `manifest`: hidden size, patch
/// size and ONNX sha256 (not the grid, unlike [`crate::heads::check_backbone`]: a bank of patch
/// features works at any input size).
pub fn check_bank_backbone(
    path: &Path,
    reference: &BackboneRef,
    manifest: &Manifest,
) -> Result<(), HeadError> {
    let fix = format!(
        "rebuild the bank with this backbone (`{BUILD_COMMAND}`), or run the backbone it was built with ({})",
        reference.variant
    );
    let mismatch = |what: &str, head: String, backbone: String| {
        Err(HeadError::BackboneMismatch {
            path: path.to_path_buf(),
            what: what.into(),
            head,
            backbone,
            fix: fix.clone(),
        })
    };
    if reference.hidden_size != manifest.hidden_size {
        return mismatch(
            "the feature dimension",
            reference.hidden_size.to_string(),
            manifest.hidden_size.to_string(),
        );
    }
    if reference.patch_size != manifest.patch_size {
        return mismatch(
            "the patch size",
            reference.patch_size.to_string(),
            manifest.patch_size.to_string(),
        );
    }
    if !manifest.is_identity(&reference.onnx_sha256) {
        let short = |s: &str| s.chars().take(12).collect::<String>();
        return mismatch(
            "the backbone sha256",
            short(&reference.onnx_sha256),
            short(manifest.identity_sha256()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bank_paths_accept_either_file_or_the_name() {
        let want = (
            PathBuf::from("d/normal.bank.json"),
            PathBuf::from("d/normal.bank.npz"),
        );
        for p in [
            "d/normal",
            "d/normal.bank",
            "d/normal.bank.json",
            "d/normal.bank.npz",
        ] {
            assert_eq!(bank_paths(Path::new(p)), want, "{p}");
        }
    }
}
