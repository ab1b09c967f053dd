#!/usr/bin/env python3
"""Write the AnomalyDINO scoring reference fixture for the Rust anomaly head.

Plain NumPy (float64 arithmetic on the float32 arrays that are saved), following AnomalyDINO:

1. L2-normalise every query patch token (``x / max(|x|, 1e-12)``, like ``F.normalize``);
2. patch distance = 1 - max cosine similarity to the memory bank (whose rows are L2-normalised);
3. image score = mean of the top ``top_percent`` % patch distances, ``k = max(1, ceil(P * p / 100))``.

Files written to ``--out-dir`` (default ``tests/fixtures/heads/anomaly``):

* ``bank.npy``          float32 [N, C]     L2-normalised bank rows (random, N=300, C=64)
* ``patch_tokens.npy``  float32 [1, P, C]  query patch tokens of a 4x6 grid (P=24, raw norms);
                                           token 5 is 3 x bank row 17 (distance 0), token 11 is
                                           bank row 42 plus small noise (distance near 0)
* ``distances.npy``     float32 [P]        expected patch distances
* ``scores.npy``        float32 [T]        expected image scores for ``top_percents.npy``
* ``top_percents.npy``  float32 [T]        1, 10, 50, 100 (1 % of 24 patches is one patch)
* ``reference.json``    grid, sizes, seed

C=64 and the 4x6 grid are those of the tiny test backbone (tests/fixtures/tiny, 64x96 input), so
the Rust test can run the head on these tokens through the real Features/Letterbox path.

Usage::

    python models/make_anomaly_reference.py [--out-dir tests/fixtures/heads/anomaly]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

SEED = 20240607
C = 64
GRID = (4, 6)
N_BANK = 300
TOP_PERCENTS = (1.0, 10.0, 50.0, 100.0)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))
    return x / np.maximum(norm, 1e-12)


def patch_distances(bank: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """1 - max cosine similarity of each (normalised) query to the bank rows."""
    q = l2_normalize(queries)
    cos = q @ bank.astype(np.float64).T
    return 1.0 - cos.max(axis=1)


def image_score(distances: np.ndarray, top_percent: float) -> float:
    k = max(1, math.ceil(len(distances) * top_percent / 100.0))
    k = min(k, len(distances))
    return float(np.sort(distances)[::-1][:k].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "heads" / "anomaly",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)

    bank = l2_normalize(rng.standard_normal((N_BANK, C))).astype(np.float32)
    p = GRID[0] * GRID[1]
    scales = rng.uniform(0.5, 20.0, size=(p, 1))
    tokens = rng.standard_normal((p, C)) * scales
    tokens[5] = 3.0 * bank[17].astype(np.float64)
    tokens[11] = bank[42].astype(np.float64) + 0.01 * rng.standard_normal(C)
    tokens = tokens.astype(np.float32)

    distances = patch_distances(bank, tokens)
    scores = [image_score(distances, t) for t in TOP_PERCENTS]

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "bank.npy", bank)
    np.save(out / "patch_tokens.npy", tokens.reshape(1, p, C))
    np.save(out / "distances.npy", distances.astype(np.float32))
    np.save(out / "scores.npy", np.asarray(scores, dtype=np.float32))
    np.save(out / "top_percents.npy", np.asarray(TOP_PERCENTS, dtype=np.float32))
    meta = {
        "generator": "models/make_anomaly_reference.py",
        "seed": SEED,
        "grid": list(GRID),
        "hidden_size": C,
        "bank_rows": N_BANK,
        "top_percents": list(TOP_PERCENTS),
        "scores": scores,
        "exact_match_patch": 5,
        "near_match_patch": 11,
    }
    (out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: distances {distances.min():.6f}..{distances.max():.6f}, scores {scores}")


if __name__ == "__main__":
    main()
