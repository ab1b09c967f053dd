//! What we know about TensorRT versions: how the library reports its version, and the versions
//! reported to compute DINOv3 wrongly (a warning at start-up; the parity gate decides).

use std::fmt;

use super::settings::TensorRtPrecision;

/// A TensorRT library version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TensorRtVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl TensorRtVersion {
    /// Decode `getInferLibVersion()`: `major * 1000 + minor * 100 + patch` up to TensorRT 9,
    /// `major * 10000 + minor * 100 + patch` from TensorRT 10 (`NV_TENSORRT_VERSION`).
    pub fn from_lib_version(v: u32) -> Self {
        if v >= 100_000 {
            Self {
                major: v / 10_000,
                minor: (v / 100) % 100,
                patch: v % 100,
            }
        } else {
            Self {
                major: v / 1000,
                minor: (v / 100) % 10,
                patch: v % 100,
            }
        }
    }
}

impl fmt::Display for TensorRtVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Reports of TensorRT computing DINOv3 wrongly that apply to `version` at `precision` for a
/// backbone of `variant` (`vits16`, `vitb16`, ...). Each entry is one sentence for the log.
pub fn known_reports(
    version: TensorRtVersion,
    precision: TensorRtPrecision,
    variant: &str,
) -> Vec<&'static str> {
    let large = matches!(variant, "vitb16" | "vitl16" | "vith16plus" | "vit7b16");
    let fp16 = precision == TensorRtPrecision::Fp16;
    let (major, minor) = (version.major, version.minor);
    let mut out = Vec::new();
    if (major, minor) == (10, 3) && fp16 && large {
        out.push("TensorRT 10.3 FP16 has been reported to compute DINOv3 ViT-B/L wrongly (8.6.1 was right on the same models)");
    }
    if (major, minor) == (10, 4) {
        out.push("TensorRT 10.4 has been reported to compute DINOv3 ViT-B/16 wrongly in FP32 (cosine 0.018 to PyTorch) and to give NaN in FP16");
    }
    if (major, minor) == (10, 13) && fp16 {
        out.push("TensorRT 10.13 FP16 has been reported to give NaN on DINOv3");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_version_encodings_decode() {
        assert_eq!(
            TensorRtVersion::from_lib_version(100_300).to_string(),
            "10.3.0"
        );
        assert_eq!(
            TensorRtVersion::from_lib_version(101_302).to_string(),
            "10.13.2"
        );
        assert_eq!(TensorRtVersion::from_lib_version(8602).to_string(), "8.6.2");
        assert_eq!(TensorRtVersion::from_lib_version(8502).to_string(), "8.5.2");
    }

    #[test]
    fn reported_versions_warn_and_others_do_not() {
        let v = |v| TensorRtVersion::from_lib_version(v);
        use TensorRtPrecision::*;
        assert_eq!(known_reports(v(100_300), Fp16, "vitb16").len(), 1);
        assert!(known_reports(v(100_300), Fp16, "vits16").is_empty());
        assert!(known_reports(v(100_300), Fp32, "vitb16").is_empty());
        assert_eq!(known_reports(v(100_400), Fp32, "vits16").len(), 1);
        assert_eq!(known_reports(v(101_300), Fp16, "vits16").len(), 1);
        assert!(known_reports(v(8602), Fp16, "vitb16").is_empty());
    }
}
