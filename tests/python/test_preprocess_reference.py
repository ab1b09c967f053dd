"""The committed preprocessing fixtures equal a fresh run of models/make_preprocess_reference.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "preprocess"
sys.path.insert(0, str(REPO / "models"))

import make_preprocess_reference as mpr  # noqa: E402


def test_regenerated_reference_equals_committed(tmp_path: Path) -> None:
    fresh = mpr.write_fixtures(tmp_path)
    committed_png = np.asarray(Image.open(FIXTURE / "chelsea.png").convert("RGB"))
    assert committed_png.shape == (300, 451, 3)
    np.testing.assert_array_equal(committed_png, np.asarray(Image.open(tmp_path / "chelsea.png").convert("RGB")))
    for (h, w), name in mpr.TARGETS.items():
        committed = np.load(FIXTURE / name)
        assert committed.dtype == np.float32 and committed.shape == (1, 3, h, w)
        np.testing.assert_array_equal(committed, fresh[name])
        np.testing.assert_array_equal(committed, np.load(tmp_path / name))


def test_reference_is_the_documented_computation() -> None:
    rgb = np.asarray(Image.open(FIXTURE / "chelsea.png").convert("RGB"))
    for (h, w), name in mpr.TARGETS.items():
        committed = np.load(FIXTURE / name)
        # bit-exact with torch interpolate(bilinear, antialias=True) on float32 rescaled pixels
        np.testing.assert_array_equal(mpr.torch_equivalent(rgb, h, w), committed)
        # and within float32 accumulation error of an independent float64 triangle filter
        assert float(np.max(np.abs(mpr.numpy_float64(rgb, h, w) - committed))) < 1e-4
