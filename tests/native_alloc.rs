//! The native engine's pass allocates nothing after warm-up: a counting global allocator
//! around repeated passes (one image and a batch of four, one and two threads).
//!
//! `Session::run` (the `Backend` interface the pipeline uses) also copies each output into the
//! tensors it returns; that copy is counted separately and bounded by the number of outputs.

#![allow(unsafe_code, reason = "a counting global allocator")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{fixture, npy};
use dinov3_perception::backend::native::{NativeBackend, NativeEngine};
use dinov3_perception::backend::{Backend, InputTensor};
use dinov3_perception::{BackboneModel, InputSize};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` (by any thread of the process).
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

// One test function: the counter is process-wide, so nothing else may run beside it.
#[test]
fn passes_after_warm_up_allocate_nothing() {
    let model = BackboneModel::load(&fixture("tiny/dinov3_tiny.hf")).unwrap();
    let (shape, input) = npy(&fixture("tiny/reference/input.npy"));
    let size = InputSize {
        height: shape[2],
        width: shape[3],
    };
    let images: Vec<Vec<f32>> = (0..4)
        .map(|b| input.iter().map(|v| v + b as f32 * 0.1).collect())
        .collect();
    let refs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    for threads in [1, 2] {
        let engine = NativeEngine::load(&model, threads).unwrap();
        for batch in [1, 4] {
            let mut ws = engine.workspace(size, batch);
            engine.forward(&mut ws, &refs[..batch]);
            let n = allocations(|| {
                for _ in 0..20 {
                    engine.forward(&mut ws, &refs[..batch]);
                }
            });
            assert_eq!(
                n, 0,
                "{threads} threads, batch {batch}: {n} allocations in 20 passes"
            );
            // The counter works: a pass in a fresh workspace allocates its buffers.
            let n = allocations(|| {
                let mut fresh = engine.workspace(size, batch);
                engine.forward(&mut fresh, &refs[..batch]);
            });
            assert!(n > 0);
        }
    }

    // Through the Backend interface: the outputs handed back are the only allocations.
    let prepared = NativeBackend::new(2).prepare(&model, size).unwrap();
    let mut session = prepared.session().unwrap();
    let tensor = InputTensor {
        shape: [1, 3, size.height, size.width],
        data: input.clone(),
    };
    drop(session.run(&tensor).unwrap());
    let outputs = model.manifest.outputs.len();
    let n = allocations(|| {
        for _ in 0..10 {
            drop(session.run(&tensor).unwrap());
        }
    });
    // Per pass: the tensor list, and per output its values, their box, its name and shape.
    assert!(
        n <= 10 * (1 + 4 * outputs),
        "{n} allocations in 10 session runs ({outputs} outputs)"
    );
}
