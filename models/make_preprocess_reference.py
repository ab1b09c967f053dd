#!/usr/bin/env python3
"""Write the preprocessing reference fixtures for the Rust preprocessor.

Saves scikit-image's ``chelsea`` photograph (300x451 RGB, uint8) as a lossless PNG and the
``pixel_values`` that transformers' DINOv3 image processor makes from that PNG:

* ``chelsea.png``                 the photograph
* ``chelsea_hf_224.npy``          float32 [1, 3, 224, 224]  (official setting: 224x224)
* ``chelsea_hf_448x320.npy``      float32 [1, 3, 448, 320]  (height 448, width 320: the height
                                  is upsampled, the width downsampled)

The processor is ``transformers.DINOv3ViTImageProcessor`` (in transformers 5 the only DINOv3 image
processor, on the torchvision backend; what ``AutoImageProcessor`` builds for
facebook/dinov3-*-pretrain-lvd1689m), constructed offline with the official
``preprocessor_config.json`` values. The script also re-derives the output independently
(torch ``interpolate`` and a NumPy float64 implementation) and prints the differences, which the
README of the fixture folder quotes.

Usage::

    python models/make_preprocess_reference.py --out-dir tests/fixtures/preprocess
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (height, width) -> file name
TARGETS: dict[tuple[int, int], str] = {
    (224, 224): "chelsea_hf_224.npy",
    (448, 320): "chelsea_hf_448x320.npy",
}

# Values of facebook/dinov3-vits16-pretrain-lvd1689m/preprocessor_config.json
OFFICIAL_SETTINGS = {
    "do_resize": True,
    "size": {"height": 224, "width": 224},
    "resample": 2,  # PIL.Image.BILINEAR
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": list(IMAGENET_MEAN),
    "image_std": list(IMAGENET_STD),
    "do_center_crop": False,
}


def make_processor(height: int, width: int):  # type: ignore[no-untyped-def]
    from transformers import DINOv3ViTImageProcessor

    settings = dict(OFFICIAL_SETTINGS)
    settings["size"] = {"height": height, "width": width}
    return DINOv3ViTImageProcessor(**settings)


def hf_pixel_values(png: Path, height: int, width: int) -> np.ndarray:
    """What the transformers processor returns for the PNG (read with PIL, as a user would)."""
    image = Image.open(png).convert("RGB")
    out = make_processor(height, width)(images=image, return_tensors="pt")["pixel_values"]
    return out.numpy().astype(np.float32)


def torch_equivalent(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The same computation spelled out: float rescale, antialiased bilinear resize, normalise."""
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].contiguous()  # uint8 [1,3,H,W]
    x = x * (1 / 255)  # float32 multiply by float32(1/255), as the processor's rescale
    x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[None, :, None, None]
    return ((x - mean) / std).numpy()


def _aa_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] resampling matrix of torch's/PIL's antialiased bilinear (triangle) filter."""
    scale = in_size / out_size
    support_scale = max(scale, 1.0)
    support = 1.0 * support_scale
    w = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        k = np.maximum(0.0, 1.0 - np.abs((j - center + 0.5) / support_scale))
        w[i, lo:hi] = k / k.sum()
    return w


def numpy_float64(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Independent float64 implementation (separable triangle filter, PIL-style weights)."""
    x = rgb.astype(np.float64) / 255.0  # [H, W, 3]
    wy = _aa_weights(rgb.shape[0], height)
    wx = _aa_weights(rgb.shape[1], width)
    y = np.einsum("oh,hwc->owc", wy, x)
    y = np.einsum("pw,owc->opc", wx, y)
    y = (y - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return y.transpose(2, 0, 1)[None]


def chelsea_rgb() -> np.ndarray:
    from skimage import data

    rgb = np.asarray(data.chelsea())
    if rgb.shape != (300, 451, 3) or rgb.dtype != np.uint8:
        raise RuntimeError(f"unexpected skimage chelsea image {rgb.shape} {rgb.dtype}")
    return rgb


def write_fixtures(out_dir: Path) -> dict[str, np.ndarray]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rgb = chelsea_rgb()
    png = out_dir / "chelsea.png"
    # Fixed encoder settings so the bytes are reproducible; PNG is lossless either way.
    Image.fromarray(rgb, mode="RGB").save(png, format="PNG", optimize=False, compress_level=9)
    if not np.array_equal(np.asarray(Image.open(png).convert("RGB")), rgb):
        raise RuntimeError("PNG round trip is not lossless")
    written: dict[str, np.ndarray] = {}
    for (h, w), name in TARGETS.items():
        pv = hf_pixel_values(png, h, w)
        if pv.shape != (1, 3, h, w) or pv.dtype != np.float32:
            raise RuntimeError(f"processor returned {pv.shape} {pv.dtype} for {h}x{w}")
        np.save(out_dir / name, pv)
        written[name] = pv
        same = float(np.max(np.abs(torch_equivalent(rgb, h, w) - pv)))
        f64 = float(np.max(np.abs(numpy_float64(rgb, h, w) - pv)))
        print(
            f"{name}: shape {list(pv.shape)}, range [{pv.min():.4f}, {pv.max():.4f}]; "
            f"max abs vs torch interpolate(antialias) {same:.3e}, vs NumPy float64 {f64:.3e}"
        )
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, required=True, help="folder for chelsea.png and the .npy files")
    args = p.parse_args(argv)
    write_fixtures(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
