"""Building blocks of ``train_heads.py``: preprocessing, cached backbone features, datasets,
the four task heads, their losses and targets, NMS/decoding, metrics and the ONNX export.

Everything here follows ``models/HEADS.md`` (the contract with the Rust runtime). The module is
importable on its own (tests use it directly); ``train_heads.py`` is the command line.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import export_backbone as eb

TASKS = ("detection", "segmentation", "depth", "classification")
HEAD_FORMAT = "dinov3_perception/head"
HEAD_FORMAT_VERSION = 1
OPSET = 18
STRIDE = eb.PATCH_SIZE
IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OUTPUTS: dict[str, list[str]] = {
    "detection": ["scores", "boxes"],
    "segmentation": ["logits"],
    "depth": ["depth"],
    "classification": ["logits"],
}
UsageError = eb.UsageError


# --------------------------------------------------------------------------------------------
# Backbone manifest
# --------------------------------------------------------------------------------------------


@dataclass
class BackboneInfo:
    """What heads need to know about the backbone ONNX they read features from."""

    onnx_path: Path
    manifest: dict[str, Any]
    sha256: str
    height: int
    width: int
    hidden_size: int
    layers: list[int]
    num_layers: int
    mean: list[float]
    std: list[float]
    variant: str

    @property
    def grid(self) -> tuple[int, int]:
        return self.height // STRIDE, self.width // STRIDE

    def manifest_block(self) -> dict[str, Any]:
        """The ``backbone`` block of a head manifest."""
        h, w = self.grid
        return {
            "variant": self.variant,
            "hidden_size": self.hidden_size,
            "patch_size": STRIDE,
            "grid": [h, w],
            # The weights' identity (the checkpoint folder's model.safetensors sha256), so the
            # heads also run on the native engine reading that folder; older exports: the ONNX's.
            "onnx_sha256": self.identity,
        }

    @property
    def identity(self) -> str:
        """The sha256 heads record: the weights', else the float ONNX's, else this ONNX's."""
        q = self.manifest.get("quantization") or {}
        return self.manifest.get("weights_sha256") or q.get("float_onnx_sha256") or self.sha256


def load_backbone(onnx_path: Path, height: int | None = None, width: int | None = None) -> BackboneInfo:
    """Read ``<model>.json`` beside ``onnx_path`` and check it describes that file."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UsageError(f"--backbone {onnx_path}: no such file; export one with models/export_backbone.py")
    manifest_path = onnx_path.with_suffix(".json")
    if not manifest_path.is_file():
        raise UsageError(
            f"{manifest_path}: the backbone manifest is missing; export_backbone.py writes it beside the .onnx"
        )
    try:
        m = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{manifest_path}: not valid JSON ({e})") from None
    if m.get("format") != eb.FORMAT:
        raise UsageError(f"{manifest_path}: format is {m.get('format')!r}, expected {eb.FORMAT!r}")
    if m.get("patch_size") != STRIDE:
        raise UsageError(f"{manifest_path}: patch size {m.get('patch_size')} is not {STRIDE}")
    sha = eb.sha256_of(onnx_path)
    if m.get("onnx_sha256") != sha:
        raise UsageError(
            f"{manifest_path}: onnx_sha256 {m.get('onnx_sha256')} does not match {onnx_path.name} ({sha}); "
            "re-export the backbone so the manifest and the model belong together"
        )
    mh, mw = m.get("input_height"), m.get("input_width")
    if mh is None or mw is None:
        if height is None or width is None:
            raise UsageError(
                f"{manifest_path}: the backbone has a dynamic input size; give --height and --width "
                "(the size the runtime will use) so the heads get a fixed patch grid"
            )
        eb.check_size(height, width, "--height/--width")
    else:
        if (height is not None and height != mh) or (width is not None and width != mw):
            raise UsageError(f"--height/--width {height}x{width}: the static backbone runs only at {mh}x{mw}")
        height, width = int(mh), int(mw)
    return BackboneInfo(
        onnx_path=onnx_path,
        manifest=m,
        sha256=sha,
        height=int(height),
        width=int(width),
        hidden_size=int(m["hidden_size"]),
        layers=[int(i) for i in m.get("layers", [])],
        num_layers=int(m["num_layers"]),
        mean=[float(x) for x in m["image_mean"]],
        std=[float(x) for x in m["image_std"]],
        variant=str(m["variant"]),
    )


# --------------------------------------------------------------------------------------------
# Images and preprocessing (the Rust preprocessor's stretch mode)
# --------------------------------------------------------------------------------------------


def load_rgb(path: Path) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]``."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read the image ({e})") from None


def preprocess_tensor(rgb: torch.Tensor, height: int, width: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[B, 3, H0, W0]`` -> float32 ``[B, 3, height, width]`` as ``src/preprocess.rs`` does.

    ``v * f32(1/255)``, antialiased bilinear resize on float (skipped when the size already
    matches, as in Rust), then ``(x - mean) * f32(1/std)``.
    """
    x = rgb.to(torch.float32) * torch.tensor(1.0 / 255.0, dtype=torch.float32)
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    inv = (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, 3, 1, 1)
    return (x - m) * inv


def preprocess(rgb: np.ndarray, height: int, width: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> ``pixel_values`` float32 ``[1, 3, height, width]`` (stretch)."""
    t = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None]
    return preprocess_tensor(t, height, width, mean, std).numpy()


# --------------------------------------------------------------------------------------------
# Backbone features (onnxruntime) with an on-disk cache
# --------------------------------------------------------------------------------------------


def tokens_to_grid(tokens: np.ndarray, h: int, w: int) -> np.ndarray:
    """``[1, h*w, C]`` -> ``[C, h, w]`` (row-major patches, row index = y)."""
    n, c = tokens.shape[1], tokens.shape[2]
    if n != h * w:
        raise RuntimeError(f"backbone returned {n} patch tokens, expected {h}x{w}")
    return np.ascontiguousarray(tokens[0].reshape(h, w, c).transpose(2, 0, 1))


class FeatureExtractor:
    """Runs the backbone ONNX on images; caches per image ``cls [C]``, ``patch_tokens`` and
    ``layer_<i>`` ``[C, h, w]`` in ``cache/<backbone sha256>/<key>.npz`` where key hashes the
    resolved image path, its mtime (ns), its size in bytes and the model input size."""

    def __init__(self, backbone: BackboneInfo, cache_dir: Path | None) -> None:
        import onnxruntime as ort

        self.backbone = backbone
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(backbone.onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_name = self.session.get_inputs()[0].name
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / backbone.sha256
        self.hits = 0
        self.misses = 0

    def names(self) -> list[str]:
        return ["cls", "patch_tokens", *[f"layer_{i}" for i in self.backbone.layers]]

    def run_rgb(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        b = self.backbone
        x = preprocess(rgb, b.height, b.width, b.mean, b.std)
        values = dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: x})))
        h, w = b.grid
        out = {"cls": values["cls"][0].astype(np.float32)}
        for name in self.names()[1:]:
            out[name] = tokens_to_grid(values[name], h, w).astype(np.float32)
        return out

    def cache_path(self, image: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        p = Path(image).resolve()
        st = p.stat()
        b = self.backbone
        key = hashlib.sha256(f"{p}|{st.st_mtime_ns}|{st.st_size}|{b.height}x{b.width}".encode()).hexdigest()[:32]
        return self.cache_dir / f"{key}.npz"

    def __call__(self, image: Path) -> dict[str, np.ndarray]:
        cp = self.cache_path(image)
        if cp is not None and cp.is_file():
            try:
                with np.load(cp) as z:
                    got = {k: z[k] for k in z.files}
                if set(self.names()) <= set(got):
                    self.hits += 1
                    return got
            except (OSError, ValueError, EOFError):
                pass  # a damaged entry is recomputed
        feats = self.run_rgb(load_rgb(image))
        self.misses += 1
        if cp is not None:
            cp.parent.mkdir(parents=True, exist_ok=True)
            tmp = cp.with_suffix(".tmp.npz")
            np.savez(tmp, **feats)
            tmp.replace(cp)
        return feats

    def stack(self, images: Sequence[Path], names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Features of all images, stacked per input name (``[N, C]`` or ``[N, C, h, w]``)."""
        per = [self(p) for p in images]
        return {n: torch.from_numpy(np.stack([f[n] for f in per])) for n in names}


def random_features(backbone: BackboneInfo, names: Sequence[str], seed: int) -> dict[str, np.ndarray]:
    """Seeded N(0, 1) features with a batch dim, in the head ONNX input layout."""
    rng = np.random.default_rng(seed)
    h, w = backbone.grid
    c = backbone.hidden_size
    return {
        n: rng.standard_normal((1, c) if n == "cls" else (1, c, h, w)).astype(np.float32) for n in names
    }


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One labelled image. ``target`` depends on the task (see the loaders)."""

    image: Path
    target: Any
    size: tuple[int, int]  # image (height, width)


@dataclass
class TaskDataset:
    task: str
    records: list[Record]
    class_names: list[str]
    source: str  # where it came from, for messages and the manifest's training record


def image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except OSError as e:
        raise UsageError(f"{path}: cannot read the image ({e})") from None


def list_images(folder: Path) -> dict[str, Path]:
    """stem -> image path for the images directly in ``folder``."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in out:
                raise UsageError(f"{folder}: two images share the name {p.stem!r} ({out[p.stem].name}, {p.name})")
            out[p.stem] = p
    return out


def require_dir(path: Path, what: str, hint: str) -> None:
    if not path.is_dir():
        raise UsageError(f"{path}: no such folder ({what}); {hint}")


def load_image_folder(root: Path) -> TaskDataset:
    """ImageFolder: ``root/<label>/*.png|jpg``; labels in sorted order."""
    require_dir(root, "the classification ImageFolder", "expected DIR/classes/<label>/*.png (or pass --image-folder)")
    labels = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(labels) < 2:
        raise UsageError(f"{root}: a classification ImageFolder needs at least two label folders <label>/*.png, found {labels}")
    records: list[Record] = []
    for k, label in enumerate(labels):
        images = list_images(root / label)
        if not images:
            raise UsageError(f"{root / label}: no .png/.jpg images in this label folder; add some or remove it")
        records += [Record(p, k, image_size(p)) for p in images.values()]
    return TaskDataset("classification", records, labels, str(root))


def parse_class_names(text: str) -> list[str]:
    """``a,b,c`` or a path to a ``.json`` list / a text file with one name per line."""
    p = Path(text)
    if p.is_file():
        if p.suffix == ".json":
            names = json.loads(p.read_text())
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise UsageError(f"{p}: expected a JSON list of class names")
            return names
        return [line.strip() for line in p.read_text().splitlines() if line.strip()]
    return [t.strip() for t in text.split(",") if t.strip()]


def read_coco(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"{path}: COCO annotations not found; expected DIR/annotations.json (or pass --coco FILE)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON ({e})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UsageError(f"{path}: not a COCO instances file (no {key!r} list)")
    if not data["categories"]:
        raise UsageError(f"{path}: 'categories' is empty; detection needs at least one class")
    return data


def coco_class_names(data: dict[str, Any]) -> tuple[list[int], list[str]]:
    cats = sorted(data["categories"], key=lambda c: c["id"])
    return [int(c["id"]) for c in cats], [str(c["name"]) for c in cats]


def load_coco(path: Path, images_dir: Path | None) -> TaskDataset:
    """COCO instances; bbox ``[x, y, w, h]`` -> xyxy image pixels; category ids in sorted order
    -> 0..K-1. Target: ``(boxes float32 [n, 4], labels int64 [n])``. Crowd and empty boxes are skipped."""
    data = read_coco(path)
    ids, names = coco_class_names(data)
    cat_index = {cid: k for k, cid in enumerate(ids)}
    roots = [images_dir] if images_dir is not None else [path.parent / "images", path.parent]
    per_image: dict[int, list[tuple[list[float], int]]] = {}
    images: dict[int, tuple[Path, tuple[int, int]]] = {}
    for im in data["images"]:
        rel = im["file_name"]
        found = next((r / rel for r in roots if (r / rel).is_file()), None)
        if found is None:
            raise UsageError(
                f"{path}: image {rel!r} (id {im['id']}) not found under {', '.join(str(r) for r in roots)}; "
                "fix file_name or pass --coco-images DIR"
            )
        size = image_size(found)
        if "height" in im and "width" in im and (int(im["height"]), int(im["width"])) != size:
            raise UsageError(
                f"{path}: image {rel!r} is {size[0]}x{size[1]} but the annotations say {im['height']}x{im['width']}"
            )
        images[int(im["id"])] = (found, size)
        per_image[int(im["id"])] = []
    for a in data["annotations"]:
        if a.get("iscrowd", 0):
            continue
        iid, cid = int(a["image_id"]), int(a["category_id"])
        if iid not in images:
            raise UsageError(f"{path}: annotation {a.get('id')} refers to unknown image_id {iid}")
        if cid not in cat_index:
            raise UsageError(f"{path}: annotation {a.get('id')} has category_id {cid}, not in 'categories' {ids}")
        x, y, w, h = (float(v) for v in a["bbox"])
        if w <= 0 or h <= 0:
            continue
        per_image[iid].append(([x, y, x + w, y + h], cat_index[cid]))
    records = []
    for iid in sorted(images):
        p, size = images[iid]
        anns = per_image[iid]
        boxes = np.array([b for b, _ in anns], dtype=np.float32).reshape(-1, 4)
        labels = np.array([k for _, k in anns], dtype=np.int64)
        records.append(Record(p, (boxes, labels), size))
    if not records:
        raise UsageError(f"{path}: no images")
    return TaskDataset("detection", records, names, str(path))


def pair_files(images_dir: Path, labels_dir: Path, suffixes: Sequence[str], what: str) -> list[tuple[Path, Path]]:
    """Match ``labels_dir/<stem>.<suffix>`` with ``images_dir/<stem>.png|jpg``; every image
    needs a label and every label an image."""
    require_dir(images_dir, "the images folder", "expected DIR/images/*.png (or pass --images DIR)")
    require_dir(labels_dir, f"the {what} folder", f"expected DIR/{labels_dir.name}/<stem>{suffixes[0]} per image")
    images = list_images(images_dir)
    labels: dict[str, Path] = {}
    for p in sorted(labels_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes:
            if p.stem in labels:
                raise UsageError(f"{labels_dir}: two {what} files for {p.stem!r} ({labels[p.stem].name}, {p.name}); keep one")
            labels[p.stem] = p
    if not labels:
        raise UsageError(f"{labels_dir}: no {what} files (*{'/*'.join(suffixes)})")
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise UsageError(
            f"{labels[orphans[0]]}: no image {orphans[0]}.png/.jpg in {images_dir} "
            f"({len(orphans)} {what} file(s) without an image); {what} and images must share file stems"
        )
    missing = sorted(set(images) - set(labels))
    if missing:
        raise UsageError(
            f"{images[missing[0]]}: no {what} file {labels_dir / (missing[0] + suffixes[0])} "
            f"({len(missing)} image(s) without one); add it or move the image out of {images_dir}"
        )
    return [(images[s], labels[s]) for s in sorted(images)]


def read_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise UsageError(f"{path}: mode {im.mode}; masks must be 8-bit single-channel PNGs of class ids")
            return np.asarray(im, dtype=np.uint8).copy()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the mask ({e})") from None


def find_segmentation_class_names(masks_dir: Path, coco: Path | None) -> tuple[list[str], str] | None:
    """Class names from dataset metadata: ``masks/class_names.json`` (a JSON list),
    ``masks/classes.txt`` (one per line), else ``["background", *COCO categories]`` when the COCO
    category ids are exactly 1..K."""
    for cand in (masks_dir / "class_names.json", masks_dir / "classes.txt"):
        if cand.is_file():
            return parse_class_names(str(cand)), str(cand)
    if coco is not None and coco.is_file():
        ids, names = coco_class_names(read_coco(coco))
        if ids == list(range(1, len(ids) + 1)):
            return ["background", *names], str(coco)
    return None


def load_masks(images_dir: Path, masks_dir: Path, class_names: list[str] | None, names_hint: str) -> TaskDataset:
    """Segmentation: ``masks/<stem>.png`` 8-bit class ids (255 = ignore). Target: uint8 mask."""
    pairs = pair_files(images_dir, masks_dir, (".png",), "mask")
    if not class_names:
        raise UsageError(
            f"{masks_dir}: segmentation needs class names (background first); pass --class-names "
            f"background,a,b or write {masks_dir / 'class_names.json'} (a JSON list){names_hint}"
        )
    records = []
    for img, mp in pairs:
        mask = read_mask(mp)
        size = image_size(img)
        if mask.shape != size:
            raise UsageError(f"{mp}: mask is {mask.shape[0]}x{mask.shape[1]} but {img.name} is {size[0]}x{size[1]}")
        ids = np.unique(mask[mask != IGNORE_INDEX])
        if ids.size and int(ids.max()) >= len(class_names):
            raise UsageError(
                f"{mp}: class id {int(ids.max())} but only {len(class_names)} class names {class_names}; "
                "fix --class-names / class_names.json or the mask (255 = ignore)"
            )
        records.append(Record(img, mask, size))
    return TaskDataset("segmentation", records, list(class_names), str(masks_dir))


def read_depth(path: Path) -> np.ndarray:
    """Metres, float32; 0 where there is no depth."""
    if path.suffix.lower() == ".npy":
        try:
            d = np.load(path)
        except (OSError, ValueError) as e:
            raise UsageError(f"{path}: cannot read ({e})") from None
        if d.ndim == 3 and d.shape[0] == 1:
            d = d[0]
        if d.ndim != 2 or not np.issubdtype(d.dtype, np.floating):
            raise UsageError(f"{path}: expected a float [H, W] array of metres, got {d.dtype} {list(d.shape)}")
        d = d.astype(np.float32)
    else:
        try:
            with Image.open(path) as im:
                arr = np.asarray(im)
        except OSError as e:
            raise UsageError(f"{path}: cannot read ({e})") from None
        if arr.ndim != 2 or arr.dtype not in (np.uint16, np.int32, np.uint8) or im.mode not in ("I;16", "I;16B", "I"):
            raise UsageError(f"{path}: expected a 16-bit single-channel PNG of millimetres (mode {im.mode})")
        d = arr.astype(np.float32) / 1000.0
    d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
    return d


def load_depth(images_dir: Path, depth_dir: Path) -> TaskDataset:
    """Depth: ``depth/<stem>.npy`` (float32 m) or ``.png`` (uint16 mm). Target: float32 metres."""
    pairs = pair_files(images_dir, depth_dir, (".npy", ".png"), "depth")
    records = []
    for img, dp in pairs:
        d = read_depth(dp)
        size = image_size(img)
        if d.shape != size:
            raise UsageError(f"{dp}: depth is {d.shape[0]}x{d.shape[1]} but {img.name} is {size[0]}x{size[1]}")
        records.append(Record(img, d, size))
    if not any(bool((r.target > 0).any()) for r in records):
        raise UsageError(f"{depth_dir}: no valid depth (> 0, finite) in any file")
    return TaskDataset("depth", records, [], str(depth_dir))


# --------------------------------------------------------------------------------------------
# Targets at model-input resolution
# --------------------------------------------------------------------------------------------


def resize_nearest(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array (PIL's NEAREST: pixel-centre sampling)."""
    if a.shape == (height, width):
        return a
    mode = "L" if a.dtype == np.uint8 else "F"
    im = Image.fromarray(a.astype(np.uint8 if mode == "L" else np.float32), mode=mode)
    return np.asarray(im.resize((width, height), Image.Resampling.NEAREST)).astype(a.dtype)


def assign_detection_targets(
    boxes: np.ndarray, labels: np.ndarray, image_hw: tuple[int, int], height: int, width: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FCOS-style targets on the patch grid.

    Boxes (xyxy image pixels) are scaled to model-input pixels. A cell whose centre
    ``((j+0.5)*16, (i+0.5)*16)`` lies strictly inside boxes is positive for the smallest of them;
    the cell containing a box centre is also given to that box when it is free or held by a larger
    box (so boxes smaller than a cell get a positive). Returns ``cls [K, h, w]`` (0/1),
    ``box [4, h, w]`` (target xyxy in model-input pixels) and ``pos [h, w]`` (bool).
    """
    h, w = height // STRIDE, width // STRIDE
    cls_t = np.zeros((num_classes, h, w), np.float32)
    box_t = np.zeros((4, h, w), np.float32)
    owner = np.full((h, w), -1, np.int64)
    if len(boxes) == 0:
        return cls_t, box_t, owner >= 0
    sy, sx = height / image_hw[0], width / image_hw[1]
    b = boxes.astype(np.float64) * np.array([sx, sy, sx, sy])
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    cy = (np.arange(h) + 0.5) * STRIDE
    cx = (np.arange(w) + 0.5) * STRIDE
    best = np.full((h, w), np.inf)
    for n in range(len(b)):
        inside = (
            (cx[None, :] > b[n, 0]) & (cx[None, :] < b[n, 2]) & (cy[:, None] > b[n, 1]) & (cy[:, None] < b[n, 3])
        )
        take = inside & (area[n] < best)
        owner[take] = n
        best[take] = area[n]
    for n in np.argsort(-area, kind="stable"):
        i = min(h - 1, max(0, int(((b[n, 1] + b[n, 3]) / 2) // STRIDE)))
        j = min(w - 1, max(0, int(((b[n, 0] + b[n, 2]) / 2) // STRIDE)))
        if owner[i, j] < 0 or area[owner[i, j]] > area[n]:
            owner[i, j] = n
    pos = owner >= 0
    ii, jj = np.nonzero(pos)
    for i, j in zip(ii, jj):
        n = owner[i, j]
        cls_t[labels[n], i, j] = 1.0
        box_t[:, i, j] = b[n]
    return cls_t, box_t, pos


def build_targets(ds: TaskDataset, height: int, width: int, label_stride: int = 1) -> dict[str, torch.Tensor]:
    """Stacked training targets at model-input size (the image stretched like the backbone input);
    masks and depth at ``1/label_stride`` of it (nearest-neighbour)."""
    lh, lw = max(1, height // label_stride), max(1, width // label_stride)
    if ds.task == "classification":
        return {"label": torch.tensor([r.target for r in ds.records], dtype=torch.int64)}
    if ds.task == "segmentation":
        return {"mask": torch.from_numpy(np.stack([resize_nearest(r.target, lh, lw) for r in ds.records])).long()}
    if ds.task == "depth":
        return {"depth": torch.from_numpy(np.stack([resize_nearest(r.target, lh, lw) for r in ds.records]))}
    k = len(ds.class_names)
    parts = [assign_detection_targets(*r.target, r.size, height, width, k) for r in ds.records]
    return {
        "cls": torch.from_numpy(np.stack([p[0] for p in parts])),
        "box": torch.from_numpy(np.stack([p[1] for p in parts])),
        "pos": torch.from_numpy(np.stack([p[2] for p in parts])),
    }


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


class PlainGroupNorm(nn.Module):
    """``nn.GroupNorm`` spelled with Reshape/ReduceMean/Sqrt so the ONNX graph has only basic ops."""

    def __init__(self, groups: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} groups")
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = x.reshape(b, self.groups, (c // self.groups) * h * w)
        mean = g.mean(dim=2, keepdim=True)
        d = g - mean
        var = (d * d).mean(dim=2, keepdim=True)
        g = d / torch.sqrt(var + self.eps)
        return g.reshape(b, c, h, w) * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """Numerically stable softplus from Relu/Abs/Exp/Log (same graph in every runtime)."""
    return torch.relu(x) + torch.log(1.0 + torch.exp(-torch.abs(x)))


def _cat(grids: Sequence[torch.Tensor]) -> torch.Tensor:
    return grids[0] if len(grids) == 1 else torch.cat(list(grids), dim=1)


class ClassificationHead(nn.Module):
    """Linear layer on CLS, or on ``concat(CLS, mean patch token)`` with ``use_mean_patch``."""

    def __init__(self, hidden: int, num_classes: int, use_mean_patch: bool) -> None:
        super().__init__()
        self.use_mean_patch = use_mean_patch
        self.linear = nn.Linear(hidden * (2 if use_mean_patch else 1), num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, cls: torch.Tensor, patch_tokens: torch.Tensor | None = None) -> torch.Tensor:
        x = cls
        if self.use_mean_patch:
            assert patch_tokens is not None
            x = torch.cat([cls, patch_tokens.mean(dim=(2, 3))], dim=1)
        return self.linear(x)


class SegmentationHead(nn.Module):
    """DINOv2 linear segmentation: BatchNorm2d + 1x1 conv on the patch grid."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, *grids: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(_cat(grids)))


def depth_bin_centres(min_depth: float, max_depth: float, bins: int) -> torch.Tensor:
    """Log-uniform bin centres between ``min_depth`` and ``max_depth`` (both included)."""
    return torch.exp(torch.linspace(math.log(min_depth), math.log(max_depth), bins, dtype=torch.float64)).float()


class DepthHead(nn.Module):
    """BatchNorm2d + 1x1 conv -> depth-bin logits -> softmax -> expected depth (metres)."""

    def __init__(self, in_channels: int, bins: int, min_depth: float, max_depth: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, bins, 1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)
        self.register_buffer("centres", depth_bin_centres(min_depth, max_depth, bins).view(1, bins, 1, 1))

    def forward(self, *grids: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.conv(self.bn(_cat(grids))), dim=1)
        return (p * self.centres).sum(dim=1, keepdim=True)


class DetectionHead(nn.Module):
    """FCOS-style anchor-free detector on the patch grid.

    Tower: ``num_convs`` x (3x3 conv -> GroupNorm(32) -> ReLU), then 1x1 class logits (sigmoid in
    the graph) and 1x1 box branch: ``l, t, r, b = softplus(x) * 16`` model-input pixels.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 128, num_convs: int = 2, prior: float = 0.01) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            conv = nn.Conv2d(c, width, 3, padding=1)
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
            layers += [conv, PlainGroupNorm(min(32, width), width), nn.ReLU()]
            c = width
        self.tower = nn.Sequential(*layers)
        self.cls = nn.Conv2d(c, num_classes, 1)
        self.box = nn.Conv2d(c, 4, 1)
        for conv in (self.cls, self.box):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls.bias, -math.log((1 - prior) / prior))

    def raw(self, *grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.tower(_cat(grids))
        return self.cls(t), softplus(self.box(t)) * float(STRIDE)

    def forward(self, *grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, ltrb = self.raw(*grids)
        return torch.sigmoid(logits), ltrb


@dataclass
class HeadSpec:
    """A head's interface: task, ONNX inputs (in order), class names, manifest section."""

    task: str
    inputs: list[str]
    class_names: list[str]
    section: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)  # architecture details (bins, width...)


def build_head(spec: HeadSpec, hidden: int) -> nn.Module:
    grids = [n for n in spec.inputs if n != "cls"]
    cin = hidden * len(grids)
    k = len(spec.class_names)
    if spec.task == "classification":
        return ClassificationHead(hidden, k, bool(spec.section["use_mean_patch"]))
    if spec.task == "segmentation":
        return SegmentationHead(cin, k)
    if spec.task == "depth":
        return DepthHead(cin, int(spec.options["bins"]), spec.section["min_depth_m"], spec.section["max_depth_m"])
    return DetectionHead(cin, k, int(spec.options.get("width", 128)), int(spec.options.get("num_convs", 2)))


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of bilinearly upsampled logits over non-ignored pixels."""
    up = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    valid = (mask != IGNORE_INDEX).sum()
    loss = F.cross_entropy(up, mask, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss / valid.clamp(min=1)


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, lam: float = 0.85) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al.) on valid pixels of the upsampled prediction."""
    up = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    valid = (gt > 0).to(up.dtype)
    n = valid.sum()
    if not bool(n > 0):
        return up.sum() * 0.0
    # masked sums, not boolean indexing (nonzero() dominated the step time)
    g = (torch.log(up.clamp(min=1e-6)) - torch.log(gt.clamp(min=1e-6))) * valid
    mean = g.sum() / n
    return torch.sqrt((g * g).sum() / n - lam * mean * mean + 1e-8)


def cell_centres(h: int, w: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    cy = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * STRIDE
    cx = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * STRIDE
    return cy.view(h, 1).expand(h, w), cx.view(1, w).expand(h, w)


def ltrb_to_xyxy(ltrb: torch.Tensor) -> torch.Tensor:
    """``[B, 4, h, w]`` distances -> ``[B, 4, h, w]`` boxes (x1, y1, x2, y2)."""
    h, w = ltrb.shape[-2:]
    cy, cx = cell_centres(h, w, ltrb.device)
    return torch.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]], dim=1)


def detection_loss(
    logits: torch.Tensor, ltrb: torch.Tensor, cls_t: torch.Tensor, box_t: torch.Tensor, pos: torch.Tensor
) -> torch.Tensor:
    """Sigmoid focal loss (alpha 0.25, gamma 2) + GIoU on positive cells, both / #positives."""
    from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

    npos = pos.sum().clamp(min=1).float()
    loss = sigmoid_focal_loss(logits, cls_t, alpha=0.25, gamma=2.0, reduction="sum") / npos
    if bool(pos.any()):
        pred = ltrb_to_xyxy(ltrb).permute(0, 2, 3, 1)[pos]
        tgt = box_t.permute(0, 2, 3, 1)[pos]
        loss = loss + generalized_box_iou_loss(pred, tgt, reduction="sum") / npos
    return loss


# --------------------------------------------------------------------------------------------
# Detection decode and NMS (the HEADS.md rule)
# --------------------------------------------------------------------------------------------


def iou_f32(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes in float32 arithmetic (0 when the union is empty)."""
    f = np.float32
    ax1, ay1, ax2, ay2 = (f(v) for v in a)
    bx1, by1, bx2, by2 = (f(v) for v in b)
    iw = max(f(0), min(ax2, bx2) - max(ax1, bx1))
    ih = max(f(0), min(ay2, by2) - max(ay1, by1))
    inter = f(iw * ih)
    area_a = f(max(f(0), ax2 - ax1) * max(f(0), ay2 - ay1))
    area_b = f(max(f(0), bx2 - bx1) * max(f(0), by2 - by1))
    union = f(area_a + area_b - inter)
    return float(inter / union) if union > 0 else 0.0


def nms_reference(
    scores: Sequence[float],
    boxes: Sequence[Sequence[float]],
    classes: Sequence[int],
    score_threshold: float,
    iou_threshold: float,
    pre_nms_top_k: int,
    max_detections: int,
) -> list[int]:
    """Kept candidate indices, in output order.

    Candidates with ``score >= score_threshold`` are ordered by score descending, then by index
    ascending; the first ``pre_nms_top_k`` enter NMS. Walking that order, a candidate is dropped
    when a kept candidate of the same class overlaps it with IoU strictly greater than
    ``iou_threshold``; at most ``max_detections`` are kept.
    """
    order = [i for i in range(len(scores)) if scores[i] >= score_threshold]
    order.sort(key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order[:pre_nms_top_k]:
        if len(keep) >= max_detections:
            break
        if any(classes[k] == classes[i] and iou_f32(boxes[k], boxes[i]) > iou_threshold for k in keep):
            continue
        keep.append(i)
    return keep


def decode_detections(scores: np.ndarray, boxes: np.ndarray, cfg: dict[str, Any], class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Head outputs ``scores [1,K,h,w]``, ``boxes [1,4,h,w]`` -> detections in model-input pixels.

    Candidate index ``(i*w + j)*K + k``; box ``[cx - l, cy - t, cx + r, cy + b]`` in float32.
    """
    _, k, h, w = scores.shape
    s = scores[0].transpose(1, 2, 0).reshape(-1).astype(np.float32)  # (i, j, k) order
    ltrb = boxes[0].astype(np.float32)
    f = np.float32
    cy = (np.arange(h, dtype=np.float32) + f(0.5)) * f(STRIDE)
    cx = (np.arange(w, dtype=np.float32) + f(0.5)) * f(STRIDE)
    xyxy = np.stack(
        [cx[None, :] - ltrb[0], cy[:, None] - ltrb[1], cx[None, :] + ltrb[2], cy[:, None] + ltrb[3]], axis=-1
    ).astype(np.float32)  # [h, w, 4]
    cand_boxes = np.repeat(xyxy.reshape(h * w, 4), k, axis=0)
    cand_classes = np.tile(np.arange(k), h * w)
    keep = nms_reference(
        s.tolist(), cand_boxes.tolist(), cand_classes.tolist(),
        cfg["score_threshold"], cfg["nms_iou_threshold"], cfg["pre_nms_top_k"], cfg["max_detections"],
    )
    out = []
    for idx in keep:
        cell, cls = divmod(idx, k)
        i, j = divmod(cell, w)
        d = {
            "candidate": int(idx),
            "cell": [int(i), int(j)],
            "class_id": int(cls),
            "score": float(s[idx]),
            "box": [float(v) for v in cand_boxes[idx]],
        }
        if class_names is not None:
            d["class_name"] = class_names[cls]
        out.append(d)
    return out


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def average_precision(tp: np.ndarray, conf: np.ndarray, npos: int) -> float:
    """All-point interpolated AP (VOC 2010+)."""
    if npos == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-conf, kind="stable")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / npos
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clip(0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def map50(dets: list[list[dict[str, Any]]], gts: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> float:
    """mAP@0.5 over classes with ground truth; ``dets`` boxes and ``gts`` in the same pixels."""
    aps = []
    for c in range(num_classes):
        tps, confs, npos = [], [], 0
        for d_img, (gb, gl) in zip(dets, gts):
            g = gb[gl == c]
            npos += len(g)
            used = np.zeros(len(g), bool)
            for d in sorted((d for d in d_img if d["class_id"] == c), key=lambda d: -d["score"]):
                confs.append(d["score"])
                if len(g):
                    ious = box_iou_np(np.array([d["box"]]), g)[0]
                    m = int(np.argmax(ious))
                    if ious[m] >= 0.5 and not used[m]:
                        used[m] = True
                        tps.append(1)
                        continue
                tps.append(0)
        ap = average_precision(np.array(tps), np.array(confs), npos)
        if not math.isnan(ap):
            aps.append(ap)
    return float(np.mean(aps)) if aps else float("nan")


# --------------------------------------------------------------------------------------------
# ONNX export of a head
# --------------------------------------------------------------------------------------------


def example_inputs(spec: HeadSpec, backbone: BackboneInfo) -> tuple[torch.Tensor, ...]:
    h, w = backbone.grid
    c = backbone.hidden_size
    return tuple(torch.zeros((1, c) if n == "cls" else (1, c, h, w)) for n in spec.inputs)


def _strip_identities(proto: onnx.ModelProto) -> None:
    """Remove Identity nodes the TorchScript exporter leaves on shared initializers."""
    g = proto.graph
    outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}
    keep = []
    for node in g.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
            continue
        keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del g.node[:]
    g.node.extend(keep)


def export_head_onnx(head: nn.Module, spec: HeadSpec, backbone: BackboneInfo, exporter: str = "torchscript") -> onnx.ModelProto:
    """Static-shape opset-18 graph; inputs named per ``spec.inputs``, outputs per HEADS.md."""
    head = head.eval().cpu()
    example = example_inputs(spec, backbone)
    names = OUTPUTS[spec.task]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            program = torch.onnx.export(
                head, example, dynamo=True, opset_version=OPSET, input_names=list(spec.inputs),
                output_names=names, optimize=True, verbose=False,
            )
            proto = program.model_proto
        elif exporter == "torchscript":
            buf = io.BytesIO()
            torch.onnx.export(
                head, example, buf, dynamo=False, opset_version=OPSET, input_names=list(spec.inputs),
                output_names=names, do_constant_folding=True,
            )
            proto = onnx.load_from_string(buf.getvalue())
            _strip_identities(proto)
        else:
            raise UsageError(f"--exporter {exporter!r}: use torchscript or dynamo")
    del proto.graph.value_info[:]
    for node in eb.iter_nodes(proto):
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.graph.metadata_props[:]
    proto.producer_name = "dinov3_perception/train_heads"
    return proto


def check_head_graph(proto: onnx.ModelProto, spec: HeadSpec, backbone: BackboneInfo) -> None:
    """Opset 18, no If, the exact input/output names, static shapes."""
    onnx.checker.check_model(proto)
    if eb.count_if_nodes(proto):
        raise RuntimeError(f"{spec.task}: the exported graph contains If nodes")
    opsets = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if opsets != [OPSET]:
        raise RuntimeError(f"{spec.task}: opset {opsets}, expected {OPSET}")
    got_in = [i.name for i in proto.graph.input]
    if got_in != list(spec.inputs):
        raise RuntimeError(f"{spec.task}: graph inputs {got_in}, expected {spec.inputs}")
    got_out = [o.name for o in proto.graph.output]
    if got_out != OUTPUTS[spec.task]:
        raise RuntimeError(f"{spec.task}: graph outputs {got_out}, expected {OUTPUTS[spec.task]}")
    for v in [*proto.graph.input, *proto.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if not dims or any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            raise RuntimeError(f"{spec.task}: {v.name} does not have a static shape")
    h, w = backbone.grid
    k = len(spec.class_names)
    expected = {
        "scores": [1, k, h, w], "boxes": [1, 4, h, w], "depth": [1, 1, h, w],
        "logits": [1, k] if spec.task == "classification" else [1, k, h, w],
    }
    for o in proto.graph.output:
        got = [d.dim_value for d in o.type.tensor_type.shape.dim]
        if got != expected[o.name]:
            raise RuntimeError(f"{spec.task}: output {o.name} has shape {got}, expected {expected[o.name]}")


def run_head_onnx(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {i.name: feeds[i.name] for i in sess.get_inputs()})))


@torch.no_grad()
def run_head_torch(head: nn.Module, spec: HeadSpec, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = head.eval().cpu()(*[torch.from_numpy(feeds[n]) for n in spec.inputs])
    if isinstance(out, torch.Tensor):
        out = (out,)
    return {n: t.numpy().astype(np.float32) for n, t in zip(OUTPUTS[spec.task], out)}


def verify_head(path: Path, head: nn.Module, spec: HeadSpec, feeds_list: Sequence[dict[str, np.ndarray]], tol: float = 1e-5) -> float:
    """Worst ``|onnxruntime - PyTorch| / max(1, |PyTorch|)`` over the given inputs (an absolute
    error for values up to 1, relative above: box distances are pixels); raises above ``tol``."""
    worst = 0.0
    for feeds in feeds_list:
        ref = run_head_torch(head, spec, feeds)
        got = run_head_onnx(path, feeds)
        for name, r in ref.items():
            if got[name].shape != r.shape:
                raise RuntimeError(f"{path}: {name} shape {got[name].shape} != PyTorch {r.shape}")
            err = np.abs(got[name].astype(np.float64) - r) / np.maximum(1.0, np.abs(r))
            worst = max(worst, float(np.max(err)))
    if not worst <= tol:
        raise RuntimeError(f"{path}: onnxruntime differs from PyTorch by {worst:.3e} > {tol:.1e}")
    return worst


def head_manifest(spec: HeadSpec, backbone: BackboneInfo, onnx_path: Path, training: dict[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = {
        "format": HEAD_FORMAT,
        "format_version": HEAD_FORMAT_VERSION,
        "task": spec.task,
        "onnx_file": onnx_path.name,
        "onnx_sha256": eb.sha256_of(onnx_path),
        "backbone": backbone.manifest_block(),
        "inputs": list(spec.inputs),
        "class_names": list(spec.class_names),
        "training": training,
    }
    for t in TASKS:
        m[t] = spec.section if t == spec.task else None
    return m


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_head(
    head: nn.Module,
    spec: HeadSpec,
    backbone: BackboneInfo,
    out_dir: Path,
    training: dict[str, Any],
    exporter: str,
    check_feeds: Sequence[dict[str, np.ndarray]],
    seed: int = 0,
) -> tuple[Path, Path, float]:
    """Export ``<out>/<task>.onnx`` + ``<task>.json``, verified against PyTorch (1e-5)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{spec.task}.onnx"
    proto = export_head_onnx(head, spec, backbone, exporter)
    check_head_graph(proto, spec, backbone)
    eb.save_single_file(proto, onnx_path)
    feeds = [random_features(backbone, spec.inputs, seed + 1000), *check_feeds]
    err = verify_head(onnx_path, head, spec, feeds)
    manifest_path = onnx_path.with_suffix(".json")
    write_json(manifest_path, head_manifest(spec, backbone, onnx_path, training))
    return onnx_path, manifest_path, err


# --------------------------------------------------------------------------------------------
# Reference data for the Rust parity test
# --------------------------------------------------------------------------------------------


def write_reference(
    directory: Path,
    head: nn.Module,
    spec: HeadSpec,
    feeds: dict[str, np.ndarray],
    upsample_hw: tuple[int, int],
    source: str,
    onnx_file: str,
) -> None:
    """``<input>.npy`` (fed), ``<output>.npy`` (PyTorch), ``*_upsampled.npy`` for segmentation
    (``logits``) and depth (``depth``, clamped to the range), ``detections.json`` for detection,
    and ``reference.json`` describing them."""
    directory.mkdir(parents=True, exist_ok=True)
    for n in spec.inputs:
        np.save(directory / f"{n}.npy", feeds[n].astype(np.float32))
    outs = run_head_torch(head, spec, feeds)
    for n, v in outs.items():
        np.save(directory / f"{n}.npy", v)
    meta: dict[str, Any] = {
        "task": spec.task,
        "head_onnx": onnx_file,
        "inputs": list(spec.inputs),
        "outputs": list(outs),
        "source": source,
        "files": [f"{n}.npy" for n in [*spec.inputs, *outs]],
    }
    if spec.task in ("segmentation", "depth"):
        name = OUTPUTS[spec.task][0]
        up = F.interpolate(torch.from_numpy(outs[name]), size=upsample_hw, mode="bilinear", align_corners=False)
        if spec.task == "depth":
            up = up.clamp(spec.section["min_depth_m"], spec.section["max_depth_m"])
        np.save(directory / f"{name}_upsampled.npy", up.numpy().astype(np.float32))
        meta["upsampled_size"] = [int(upsample_hw[0]), int(upsample_hw[1])]
        meta["files"].append(f"{name}_upsampled.npy")
    if spec.task == "detection":
        dets = decode_detections(outs["scores"], outs["boxes"], spec.section, spec.class_names)
        write_json(
            directory / "detections.json",
            {
                "coordinates": "model-input pixels (x1, y1, x2, y2)",
                "config": spec.section,
                "detections": dets,
            },
        )
        meta["files"].append("detections.json")
    write_json(directory / "reference.json", meta)


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear warmup ``(s+1)/warmup`` then cosine from 1 towards 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))

    return factor


def warmup_steps_for(total_steps: int, fraction: float) -> int:
    return max(1, min(total_steps, round(fraction * total_steps)))


def palette(k: int) -> list[list[int]]:
    """Fixed distinct colours: black for background, then a 20-colour table, then golden-ratio hues."""
    base = [
        [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
        [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0],
        [255, 215, 180], [0, 0, 128], [128, 128, 128],
    ]
    out = [list(c) for c in base[:k]]
    import colorsys

    n = len(out)
    while len(out) < k:
        hue = (n * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
        out.append([int(r * 255), int(g * 255), int(b * 255)])
        n += 1
    return out
