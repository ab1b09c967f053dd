//! Times one of our backends on one model, for `benches/bench_backbone.py`, which runs it
//! interleaved with Python onnxruntime on the same ONNX and thread count and prints the ratios.
//!
//! `cargo run --release [--features onnxruntime] --example backbone_timing -- BACKEND MODEL.onnx
//! THREADS ITERS [REFERENCE_DIR]` (BACKEND: `tract`, or `onnxruntime` with the feature, its CPU
//! provider, the library from `ORT_DYLIB_PATH`) prints one JSON line: load/prepare seconds,
//! per-iteration milliseconds and, with a reference directory from
//! `export_backbone.py --reference`, the parity figures against PyTorch.

use std::path::Path;
use std::time::Instant;

use dinov3_perception::backend::tract::TractBackend;
use dinov3_perception::backend::{Backend, InputTensor};
use dinov3_perception::npz::read_npy_f32;
use dinov3_perception::tolerance::{compare, mean_row_cosine};
use dinov3_perception::BackboneModel;

fn backend_named(name: &str, threads: usize) -> Result<Box<dyn Backend>, String> {
    match name {
        "tract" => Ok(Box::new(TractBackend::new(threads))),
        #[cfg(feature = "onnxruntime")]
        "onnxruntime" => {
            use dinov3_perception::backend::onnxruntime::{OnnxRuntimeBackend, SessionFactory};
            use dinov3_perception::backend::settings::BackendSettings;
            let b = OnnxRuntimeBackend::new(SessionFactory::new(
                &BackendSettings::tract(threads),
                std::sync::Arc::new(|_: &str| {}),
            ));
            b.check().map_err(|e| e.to_string())?;
            Ok(Box::new(b))
        }
        other => Err(format!(
            "backend {other:?}: give tract, or onnxruntime in a build with --features onnxruntime"
        )),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backend, model, threads, iters, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: backbone_timing tract|onnxruntime MODEL.onnx THREADS ITERS [REFERENCE_DIR]"
                .into(),
        );
    };
    let threads: usize = threads.parse()?;
    let iters: usize = iters.parse()?;
    let start = Instant::now();
    let model = BackboneModel::load(Path::new(model))?;
    let load_s = start.elapsed().as_secs_f64();
    let size = model
        .fixed_input_size()
        .ok_or("bench models are fixed-size")?;
    let backend = backend_named(backend, threads)?;
    let prepared = backend.prepare(&model, size)?;
    let mut session = prepared.session()?;
    let prepare_s = start.elapsed().as_secs_f64() - load_s;

    let input = match rest.first() {
        Some(dir) => {
            let (shape, data) = read_npy_f32(&Path::new(dir).join("input.npy"))?;
            InputTensor {
                shape: [shape[0], shape[1], shape[2], shape[3]],
                data,
            }
        }
        None => {
            let mut t = InputTensor::zeros(size);
            for (i, v) in t.data.iter_mut().enumerate() {
                *v = ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
            }
            t
        }
    };
    let first = Instant::now();
    let outputs = session.run(&input)?;
    let first_ms = first.elapsed().as_secs_f64() * 1e3;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let out = session.run(&input)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }

    let mut parity = String::from("null");
    if let Some(dir) = rest.first() {
        let mut entries = Vec::new();
        for t in &outputs.tensors {
            let (_, expected) = read_npy_f32(&Path::new(dir).join(format!("{}.npy", t.name)))?;
            let cmp = compare(t.data(), &expected).ok_or("length mismatch")?;
            let cos = mean_row_cosine(t.data(), &expected, model.manifest.hidden_size)
                .ok_or("length mismatch")?;
            entries.push(format!(
                "\"{}\": {{\"max_abs\": {:e}, \"mean_cosine\": {:.12}}}",
                t.name, cmp.max_abs, cos
            ));
        }
        parity = format!("{{{}}}", entries.join(", "));
    }
    let times: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
    println!(
        "{{\"engine\": \"{}\", \"threads\": {threads}, \"load_s\": {load_s:.4}, \"prepare_s\": {prepare_s:.4}, \"first_ms\": {first_ms:.3}, \"times_ms\": [{}], \"parity\": {parity}}}",
        backend.name(),
        times.join(", ")
    );
    Ok(())
}
