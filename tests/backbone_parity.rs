//! tract, the native engine (and, with the `onnxruntime` feature, our onnxruntime backend on its CPU provider) vs
//! PyTorch on the committed architecture-exact tiny DINOv3 fixtures.
//!
//! The onnxruntime tests load the library the way the node does (`ORT_DYLIB_PATH`, then the
//! usual install paths); `scripts/test.sh` points `ORT_DYLIB_PATH` at the test venv's
//! `onnxruntime` wheel. Without a library they fail, naming every place tried.
//!
//! The references were written by `models/export_backbone.py --reference` from the same weights
//! in PyTorch eager fp32 (see tests/fixtures/regen.sh). Tolerances are the named constants of
//! `dinov3_perception::tolerance` (issue #2: mean patch cosine >= 0.99999, max abs <= 1e-4).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::path::Path;

use common::{fixture, npy};
use dinov3_perception::backend::native::NativeBackend;
use dinov3_perception::backend::tract::TractBackend;
use dinov3_perception::backend::{Backend, InputTensor};
use dinov3_perception::tolerance::{
    compare, mean_row_cosine, BACKBONE_MAX_ABS, BACKBONE_MIN_MEAN_COSINE,
};
use dinov3_perception::{BackboneModel, Features, InputSize};

fn check_parity(model_path: &Path, reference: &Path, threads: usize) {
    check_parity_on(&TractBackend::new(threads), model_path, reference);
}

fn check_parity_on(backend: &dyn Backend, model_path: &Path, reference: &Path) {
    let model = BackboneModel::load(model_path).expect("fixture model loads");
    let (shape, data) = npy(&reference.join("input.npy"));
    assert_eq!(shape.len(), 4);
    let size = InputSize {
        height: shape[2],
        width: shape[3],
    };
    backend.check().expect("backend available");
    let prepared = backend.prepare(&model, size).expect("prepare");
    assert_eq!(prepared.backend_name(), backend.name());
    let mut session = prepared.session().expect("session");
    let input = InputTensor {
        shape: [shape[0], shape[1], shape[2], shape[3]],
        data,
    };
    let outputs = session.run(&input).expect("run");
    let features = Features::new(&outputs, &model.manifest, size).expect("shapes match manifest");
    assert_eq!(features.patch_grid().height, size.height / 16);
    assert_eq!(features.patch_grid().width, size.width / 16);

    let c = model.manifest.hidden_size;
    for name in &model.manifest.outputs {
        let (ref_shape, expected) = npy(&reference.join(format!("{name}.npy")));
        let actual = outputs
            .get(name)
            .unwrap_or_else(|| panic!("output {name} missing"));
        assert_eq!(actual.shape, ref_shape, "{name} shape");
        let cmp = compare(actual.data(), &expected).expect("same length");
        let cos = mean_row_cosine(actual.data(), &expected, c).expect("rows");
        eprintln!(
            "{} on {}: {name}: {cmp}; mean cosine {cos:.9}",
            model_path.display(),
            backend.name()
        );
        assert_eq!(cmp.non_finite, 0, "{name}: {cmp}");
        assert!(
            cmp.max_abs <= BACKBONE_MAX_ABS,
            "{name}: {cmp} > {BACKBONE_MAX_ABS}"
        );
        assert!(
            cos >= BACKBONE_MIN_MEAN_COSINE,
            "{name}: mean cosine {cos} < {BACKBONE_MIN_MEAN_COSINE}"
        );
        // The reference is not trivially constant: a wrong graph could not pass by accident.
        let spread = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(spread > 1e-2, "{name} reference is degenerate");
    }
}

#[test]
fn fixed_size_fixture_matches_pytorch() {
    check_parity(
        &fixture("tiny/dinov3_tiny.onnx"),
        &fixture("tiny/reference"),
        1,
    );
}

#[test]
fn fixed_size_fixture_matches_pytorch_multithreaded() {
    check_parity(
        &fixture("tiny/dinov3_tiny.onnx"),
        &fixture("tiny/reference"),
        2,
    );
}

#[test]
fn dynamic_fixture_matches_pytorch_at_two_sizes() {
    let model = fixture("tiny_dynamic/dinov3_tiny_dynamic.onnx");
    check_parity(&model, &fixture("tiny_dynamic/reference_64x96"), 2);
    check_parity(&model, &fixture("tiny_dynamic/reference_80x48"), 2);
}

/// The native engine on the checkpoint folder `export_backbone.py` wrote beside the tiny ONNX
/// (the same seeded weights as both ONNX fixtures), at three references of two sizes.
#[test]
fn native_engine_on_the_checkpoint_folder_matches_pytorch() {
    let folder = fixture("tiny/dinov3_tiny.hf");
    for threads in [1, 2] {
        let native = NativeBackend::new(threads);
        check_parity_on(&native, &folder, &fixture("tiny/reference"));
        check_parity_on(&native, &folder, &fixture("tiny_dynamic/reference_64x96"));
        check_parity_on(&native, &folder, &fixture("tiny_dynamic/reference_80x48"));
    }
}

/// Given the ONNX, the native engine reads the folder its manifest names.
#[test]
fn native_engine_on_the_onnx_export_matches_pytorch() {
    check_parity_on(
        &NativeBackend::new(2),
        &fixture("tiny/dinov3_tiny.onnx"),
        &fixture("tiny/reference"),
    );
}

#[test]
fn views_slice_the_outputs_without_copying() {
    let model = BackboneModel::load(&fixture("tiny/dinov3_tiny.onnx")).unwrap();
    let size = model.fixed_input_size().unwrap();
    let prepared = TractBackend::new(1).prepare(&model, size).unwrap();
    let outputs = prepared
        .session()
        .unwrap()
        .run(&InputTensor::zeros(size))
        .unwrap();
    let f = Features::new(&outputs, &model.manifest, size).unwrap();
    let patch = outputs.get("patch_tokens").unwrap().data();
    assert!(std::ptr::eq(f.patch_grid().as_slice(), patch));
    let c = f.channels();
    let (gh, gw) = (f.patch_grid().height, f.patch_grid().width);
    assert_eq!(
        f.patch_grid().token(gh - 1, gw - 1).unwrap(),
        &patch[(gh * gw - 1) * c..]
    );
    assert!(f.patch_grid().token(gh, 0).is_none());
    assert_eq!(
        f.register(3).unwrap(),
        &outputs.get("registers").unwrap().data()[3 * c..]
    );
    assert!(f.register(4).is_none());
    for layer in &model.manifest.layers {
        assert!(f.layer(*layer).is_some());
    }
    assert!(f.layer(99).is_none());
}

#[cfg(feature = "onnxruntime")]
mod onnxruntime {
    use super::*;
    use dinov3_perception::backend::onnxruntime::{OnnxRuntimeBackend, SessionFactory};
    use dinov3_perception::backend::settings::{BackendSettings, Provider};
    use std::sync::Arc;

    fn ort(threads: usize) -> OnnxRuntimeBackend {
        OnnxRuntimeBackend::new(SessionFactory::new(
            &BackendSettings::tract(threads),
            Arc::new(|_: &str| {}),
        ))
    }

    #[test]
    fn fixed_size_fixture_matches_pytorch_on_onnxruntime() {
        for threads in [1, 2] {
            check_parity_on(
                &ort(threads),
                &fixture("tiny/dinov3_tiny.onnx"),
                &fixture("tiny/reference"),
            );
        }
    }

    #[test]
    fn dynamic_fixture_matches_pytorch_at_two_sizes_on_onnxruntime() {
        let model = fixture("tiny_dynamic/dinov3_tiny_dynamic.onnx");
        check_parity_on(&ort(2), &model, &fixture("tiny_dynamic/reference_64x96"));
        check_parity_on(&ort(2), &model, &fixture("tiny_dynamic/reference_80x48"));
    }

    #[test]
    fn gpu_providers_missing_from_the_cpu_library_are_named_with_the_fix() {
        let model = BackboneModel::load(&fixture("tiny/dinov3_tiny.onnx")).unwrap();
        let size = model.fixed_input_size().unwrap();
        for (provider, fix) in [
            (Provider::Cuda, "onnxruntime-gpu"),
            (Provider::TensorRt, "--use_tensorrt"),
        ] {
            let mut s = BackendSettings::tract(1);
            s.onnxruntime.provider = provider;
            let backend = OnnxRuntimeBackend::new(SessionFactory::new(&s, Arc::new(|_: &str| {})));
            let e = backend.check().unwrap_err();
            let text = e.to_string();
            assert!(e.is_bad_input(), "{text}");
            assert!(
                text.contains(&format!("the {provider} execution provider is missing"))
                    && text.contains("CPUExecutionProvider")
                    && text.contains(fix),
                "{text}"
            );
            assert!(backend.prepare(&model, size).is_err());
        }
    }
}
