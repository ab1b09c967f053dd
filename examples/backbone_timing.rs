//! Times one of our backends on one model, for `benches/bench_backbone.py`, which runs it
//! interleaved with Python onnxruntime on the same ONNX and thread count and prints the ratios.
//!
//! `cargo run --release [--features onnxruntime] --example backbone_timing -- BACKEND MODEL
//! THREADS ITERS [REFERENCE_DIR] [--batch N]` (BACKEND: `native`, `tract`, or `onnxruntime`
//! with the feature, its CPU provider, the library from `ORT_DYLIB_PATH`; MODEL an ONNX or a
//! checkpoint folder) prints one JSON line: load/prepare seconds, per-iteration milliseconds
//! and, with a reference directory from `export_backbone.py --reference`, the parity figures
//! against PyTorch. `--batch N` (native only) runs N different images per pass and reports
//! milliseconds per pass; parity is then taken from image 0 of the batch.

use std::path::Path;
use std::time::Instant;

use dinov3_perception::backend::native::{NativeBackend, NativeEngine};
use dinov3_perception::backend::tract::TractBackend;
use dinov3_perception::backend::{Backend, InputTensor};
use dinov3_perception::npz::read_npy_f32;
use dinov3_perception::tolerance::{compare, mean_row_cosine};
use dinov3_perception::BackboneModel;

fn backend_named(name: &str, threads: usize) -> Result<Box<dyn Backend>, String> {
    match name {
        "tract" => Ok(Box::new(TractBackend::new(threads))),
        "native" => Ok(Box::new(NativeBackend::new(threads))),
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
            "backend {other:?}: give native, tract, or onnxruntime in a build with --features onnxruntime"
        )),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut batch = 1usize;
    if let Some(i) = args.iter().position(|a| a == "--batch") {
        batch = args.get(i + 1).ok_or("--batch needs a number")?.parse()?;
        args.drain(i..i + 2);
    }
    let [backend, model, threads, iters, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: backbone_timing native|tract|onnxruntime MODEL THREADS ITERS [REFERENCE_DIR] [--batch N]"
                .into(),
        );
    };
    let threads: usize = threads.parse()?;
    let iters: usize = iters.parse()?;
    let start = Instant::now();
    let model = BackboneModel::load(Path::new(model))?;
    let load_s = start.elapsed().as_secs_f64();
    let size = model.resolve_size(None)?;
    if batch > 1 {
        if backend != "native" {
            return Err("--batch runs on the native engine only".into());
        }
        return batched(
            &model,
            size,
            threads,
            iters,
            batch,
            rest.first(),
            start,
            load_s,
        );
    }
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
    print_line(
        backend.name(),
        threads,
        1,
        load_s,
        prepare_s,
        first_ms,
        &times,
        &parity,
    );
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "one JSON line's fields")]
fn print_line(
    engine: &str,
    threads: usize,
    batch: usize,
    load_s: f64,
    prepare_s: f64,
    first_ms: f64,
    times: &[f64],
    parity: &str,
) {
    let times: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
    println!(
        "{{\"engine\": \"{engine}\", \"threads\": {threads}, \"batch\": {batch}, \"load_s\": {load_s:.4}, \"prepare_s\": {prepare_s:.4}, \"first_ms\": {first_ms:.3}, \"times_ms\": [{}], \"parity\": {parity}}}",
        times.join(", ")
    );
}

/// The seeded input of the bench, or the reference's input, for image `b` of a batch
/// (image 0 unchanged, the others shifted so a batch holds different images).
fn input_for(
    size: dinov3_perception::InputSize,
    reference: Option<&String>,
    b: usize,
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let base = match reference {
        Some(dir) => read_npy_f32(&Path::new(dir).join("input.npy"))?.1,
        None => (0..3 * size.height * size.width)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect(),
    };
    Ok(base.iter().map(|v| v + 0.1 * b as f32).collect())
}

/// `--batch N`: N images per pass on the native engine.
#[allow(clippy::too_many_arguments, reason = "the run's settings")]
fn batched(
    model: &BackboneModel,
    size: dinov3_perception::InputSize,
    threads: usize,
    iters: usize,
    batch: usize,
    reference: Option<&String>,
    start: Instant,
    load_s: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let engine = NativeEngine::load(model, threads)?;
    let mut ws = engine.workspace(size, batch);
    let prepare_s = start.elapsed().as_secs_f64() - load_s;
    let images = (0..batch)
        .map(|b| input_for(size, reference, b))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let first = Instant::now();
    engine.forward(&mut ws, &refs);
    let first_ms = first.elapsed().as_secs_f64() * 1e3;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        engine.forward(&mut ws, &refs);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut parity = String::from("null");
    if let Some(dir) = reference {
        let mut entries = Vec::new();
        for name in &model.manifest.outputs {
            let (_, got) = engine.output(&ws, name, 0).ok_or("missing output")?;
            let (_, expected) = read_npy_f32(&Path::new(dir).join(format!("{name}.npy")))?;
            let cmp = compare(got, &expected).ok_or("length mismatch")?;
            let cos = mean_row_cosine(got, &expected, model.manifest.hidden_size)
                .ok_or("length mismatch")?;
            entries.push(format!(
                "\"{name}\": {{\"max_abs\": {:e}, \"mean_cosine\": {:.12}}}",
                cmp.max_abs, cos
            ));
        }
        parity = format!("{{{}}}", entries.join(", "));
    }
    print_line(
        "native", threads, batch, load_s, prepare_s, first_ms, &times, &parity,
    );
    Ok(())
}
