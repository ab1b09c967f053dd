//! Shared by the benchmark examples: a backbone + heads inference stage.

use std::path::Path;
use std::sync::Arc;

use dinov3_perception::backend::tract::TractBackend;
use dinov3_perception::backend::Backend;
use dinov3_perception::frame::{Frame, Stamp};
use dinov3_perception::heads::loader::{load_heads, HeadsConfig};
use dinov3_perception::pipeline::InferenceStage;
use dinov3_perception::preprocess::ResizeMode;
use dinov3_perception::synthetic::{SyntheticCamera, SyntheticConfig, SyntheticScene};
use dinov3_perception::BackboneModel;

/// The tract stage for `model` at its own input size with the heads of `heads_dir` (PCA basis
/// fitted on the first frame), and the head names.
pub fn stage_with_heads(
    model: &BackboneModel,
    heads_dir: &Path,
    threads: usize,
) -> anyhow::Result<(InferenceStage, Vec<String>)> {
    let size = model.resolve_size(None)?;
    let m = &model.manifest;
    let grid = (size.height / m.patch_size, size.width / m.patch_size);
    let config = HeadsConfig {
        dir: Some(heads_dir.to_path_buf()),
        pca: true,
        pca_fit_frames: 1,
    };
    let heads = load_heads(&config, m, grid)?;
    let names = heads.names();
    let prepared = TractBackend::new(threads).prepare(model, size)?;
    let stage = InferenceStage::new(prepared.as_ref(), Arc::new(m.clone()), ResizeMode::Stretch)?
        .with_heads(heads);
    Ok((stage, names))
}

/// Median (upper middle for an even count); sorts `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The default synthetic scene at 640x480.
pub fn scene() -> anyhow::Result<SyntheticScene> {
    Ok(SyntheticScene::new(
        &SyntheticConfig::default(),
        &SyntheticCamera::for_image(640, 480),
    )?)
}

/// Frame `i` of `scene` (stamp = `i` ns after a fixed epoch second).
pub fn frame(scene: &SyntheticScene, i: usize, frame_id: &str) -> Frame {
    let (rgb, _) = scene.render(i as u64);
    Frame {
        width: 640,
        height: 480,
        rgb,
        stamp: Stamp(1_700_000_000_000_000_000 + i as u64),
        seq: i as u64,
        frame_id: frame_id.into(),
        ground_truth: None,
    }
}
