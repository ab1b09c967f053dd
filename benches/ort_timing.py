"""Peer for benches/bench_backbone.py: times onnxruntime on the same ONNX, same thread count.

Usage: python benches/ort_timing.py MODEL.onnx THREADS ITERS
Prints one JSON line shaped like examples/backbone_timing.rs's.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    model, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    start = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    prepare_s = time.perf_counter() - start
    shape = session.get_inputs()[0].shape
    n = int(np.prod(shape))
    # Same deterministic input as the Rust timing example.
    x = (((np.arange(n, dtype=np.int64) * 7919) % 1000).astype(np.float32) / 500.0 - 1.0).reshape(shape)
    feed = {session.get_inputs()[0].name: x}
    t = time.perf_counter()
    session.run(None, feed)
    first_ms = (time.perf_counter() - t) * 1e3
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({
        "engine": "onnxruntime", "version": ort.__version__, "threads": threads,
        "load_s": 0.0, "prepare_s": prepare_s, "first_ms": first_ms,
        "times_ms": [round(v, 3) for v in times], "parity": None,
    }))


if __name__ == "__main__":
    main()
