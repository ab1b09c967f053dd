#!/usr/bin/env python3
"""Train task heads on DINOv3 backbone features and export them as ONNX + manifest (models/HEADS.md).

Three modes::

    # 1. linear probing / light heads on frozen, cached features of a backbone ONNX (default)
    python models/train_heads.py [train] --backbone M.onnx --dataset DIR \\
        --tasks detection,segmentation,depth,classification --out OUTDIR \\
        [--epochs N] [--cache DIR] [--val DIR] [--reference DIR] [--seed 0]

    # 2. fine-tune the backbone end-to-end with the heads, export the adapted backbone + heads
    python models/train_heads.py --finetune (--checkpoint HF_DIR|FILE.pth | --random-init --variant tiny) \\
        [--backbone M.onnx | --height H --width W --layers 3,6,9] --dataset DIR --tasks segmentation --out OUTDIR

    # 3. untrained heads of the right shapes for a backbone (benchmarks), seeded random weights
    python models/train_heads.py export-random --backbone M.onnx --out OUTDIR \\
        [--tasks ...] [--num-classes detection=80,segmentation=150,classification=1000] [--reference DIR]

Frozen mode
    Images are preprocessed exactly as ``src/preprocess.rs`` does in stretch mode (RGB uint8 *
    f32(1/255) -> antialiased bilinear resize on float to the manifest input size ->
    ``(x - mean) * (1/std)`` -> NCHW) and run through the backbone ONNX with onnxruntime. Features
    (``cls [C]``, ``patch_tokens``/``layer_<i>`` ``[C, h, w]``) are cached per image in
    ``CACHE/<backbone sha256>/<hash of path, mtime, byte size, input size>.npz`` (default CACHE:
    OUTDIR/feature_cache).
    Training: AdamW (lr 1e-3, weight decay 1e-4), linear warmup (5 % of the steps) then cosine, batch
    256 (detection/segmentation/depth 32; ``--batch-size``), ``--epochs`` (default: enough epochs for 500
    optimizer steps, ``--min-steps``, and at least 10), seeded (``--seed``; task i uses seed + its index
    in detection,segmentation,depth,classification) and deterministic on CPU. Targets are resized
    to the model-input size (masks and depth nearest-neighbour, boxes scaled), i.e. the image
    stretched like the backbone input; logits/depth are upsampled bilinearly to it for the loss
    (``--label-stride S``: to 1/S of it, much cheaper for large inputs).

Heads (outputs and inputs as HEADS.md names them)
    classification  Linear on CLS, or on concat(CLS, mean patch token) (default; ``--no-mean-patch``).
                    Cross-entropy. Inputs ``cls`` [+ ``patch_tokens``]; output ``logits [1,K]``.
    segmentation    BatchNorm2d + 1x1 conv on ``patch_tokens`` (+ ``--seg-layers``). Cross-entropy on
                    logits upsampled to the (resized) mask (255 = ignore). Output ``logits [1,K,h,w]``.
    depth           BatchNorm2d + 1x1 conv -> ``--depth-bins`` log-uniform bins in [min, max] depth ->
                    softmax -> expected depth in metres; SILog loss on valid pixels. Inputs
                    ``patch_tokens`` + ``--depth-layers`` (default ``auto``: the backbone's exported
                    intermediate layers except the last block). Output ``depth [1,1,h,w]``.
    detection       FCOS-style: ``--det-convs`` x (3x3 conv(->``--det-width``) + GroupNorm + ReLU), then
                    1x1 class (sigmoid in the graph; focal loss) and 1x1 box (softplus * 16 = l,t,r,b
                    model-input pixels from the cell centre; GIoU loss). A cell is positive for the
                    smallest GT box containing its centre; the cell holding a box centre is positive too.
                    Outputs ``scores [1,K,h,w]``, ``boxes [1,4,h,w]``.

Datasets (HEADS.md layout under ``--dataset DIR``; each path can be overridden)
    images      DIR/images/*.png|jpg                               (--images DIR)
    detection   DIR/annotations.json, COCO instances; category ids sorted -> 0..K-1 (--coco FILE,
                images looked up in --coco-images, else images/ beside the JSON, else its folder)
    segmentation DIR/masks/<stem>.png, 8-bit ids, 255 ignore   (--masks DIR). Class names (background
                first): --class-names a,b,c | FILE(.json list or one per line), else
                masks/class_names.json, masks/classes.txt, else ["background", COCO categories] when
                the COCO category ids are exactly 1..K.
    depth       DIR/depth/<stem>.npy float32 metres or .png uint16 millimetres; 0/non-finite invalid
                (--depth-dir DIR). Range: --min-depth/--max-depth, default from the data (0.8 x
                smallest, 1.25 x largest valid value).
    classification DIR/classes/<label>/*.png|jpg               (--image-folder DIR)
    ``--val DIR`` (same layout) prints held-out metrics: mIoU, depth AbsRel, accuracy, mAP@0.5.

Outputs (OUTDIR)
    <task>.onnx   opset 18, static shapes, batch 1, no If nodes; checked against PyTorch with
                  onnxruntime (|difference| <= 1e-5 * max(1, |value|)) on random and real features
    <task>.json   the HEADS.md manifest (``backbone`` block from the backbone manifest)
    with --finetune also: finetuned_backbone_hf/ (HF folder) and backbone/dinov3_<variant>_finetuned.onnx
                  (+ .json), exported by export_backbone.py; the head manifests carry its sha256.

``--reference DIR`` writes, per head, DIR/<task>/: ``<input>.npy`` (fed, ONNX layout, float32),
``<output>.npy`` (PyTorch), ``logits_upsampled.npy`` / ``depth_upsampled.npy`` (bilinear,
align_corners=False, to ``--reference-size``, default 480x640; depth clamped to its range),
``detections.json`` (decode + class-wise NMS by the HEADS.md rule, a candidate is considered when
score >= score_threshold: ``{"coordinates", "config": <manifest detection section>, "detections":
[{"candidate": (i*w+j)*K+k, "cell": [i, j], "class_id", "class_name", "score", "box": [x1, y1, x2,
y2] model-input pixels}]}`` in output order) and ``reference.json`` (task, head_onnx, inputs,
outputs, files, upsampled_size, source). Features come from the first validation (else training)
image, or are seeded random with ``--random-features`` (always for export-random, whose heads get
seeded N(0, 1/fan_in) weights so that outputs spread; detection scores cross the threshold often,
a worst case for NMS). ``--threads N`` sets torch's CPU threads (1 is fastest for small heads on a
busy machine).

Fine-tuning (``--finetune``)
    Loads the PyTorch backbone with export_backbone.py's loader, trains backbone + heads: backbone
    lr 1e-5, head lr 1e-3 (detection 1e-4), batch 16, progressive unfreezing (head only for
    ``--head-only-epochs``, then the last block + final norm, one more block every
    ``--unfreeze-every`` epochs, the patch embedding after all blocks), bf16 autocast and gradient
    checkpointing on CUDA, multi-scale random crops for segmentation (``--crop-sizes 224,768``:
    short side a multiple of 16 in that range, the model-input aspect ratio, random horizontal flip).
    Several tasks train jointly (losses summed each step). Input size, layers and mean/std come from
    ``--backbone``'s manifest when given (else ``--height``/``--width``/``--layers``).

Exit: 0 ok; bad input raises SystemExit with a message naming the file and the fix (status 1).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import export_backbone as eb  # noqa: E402
import heads_lib as hl  # noqa: E402
from heads_lib import TASKS, UsageError  # noqa: E402

DEFAULT_NUM_CLASSES = {"detection": 80, "segmentation": 150, "classification": 1000}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise UsageError(f"--tasks {text!r}: choose from {', '.join(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise UsageError(f"--tasks {text!r}: a task is listed twice")
    return tasks


def parse_hw(text: str, what: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected HxW, e.g. 480x640") from None
    if h <= 0 or w <= 0:
        raise UsageError(f"{what} {text!r}: sizes must be positive")
    return h, w


def parse_num_classes(text: str) -> dict[str, int]:
    out = dict(DEFAULT_NUM_CLASSES)
    for part in filter(None, (p.strip() for p in text.split(","))):
        task, _, value = part.partition("=")
        if task not in DEFAULT_NUM_CLASSES or not value.isdigit() or int(value) < 1:
            raise UsageError(f"--num-classes {part!r}: expected TASK=K with TASK in {', '.join(DEFAULT_NUM_CLASSES)}")
        out[task] = int(value)
    if out["segmentation"] < 2:
        raise UsageError("--num-classes segmentation=K: K counts the background, so at least 2")
    return out


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder for <task>.onnx + <task>.json")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)} (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of head init, shuffling and random features (default 0)")
    p.add_argument("--reference", type=Path, help="write PyTorch reference inputs/outputs per head to DIR/<task>/")
    p.add_argument("--reference-size", default="480x640", help="HxW for the upsampled reference outputs (default 480x640)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter for the heads (default torchscript: static, fast, byte-stable)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    p.add_argument("--height", type=int, help="input height for a dynamic backbone (or --finetune without --backbone)")
    p.add_argument("--width", type=int, help="input width for a dynamic backbone (or --finetune without --backbone)")
    g = p.add_argument_group("head architecture")
    g.add_argument("--no-mean-patch", dest="use_mean_patch", action="store_false",
                   help="classification on CLS only (default: concat CLS and mean patch token)")
    g.add_argument("--top-k", type=int, default=5, help="classification top_k in the manifest (capped at K; default 5)")
    g.add_argument("--depth-bins", type=int, default=256, help="depth bins (default 256)")
    g.add_argument("--min-depth", type=float, help="depth range minimum in metres (default: from the data / 0.1)")
    g.add_argument("--max-depth", type=float, help="depth range maximum in metres (default: from the data / 80)")
    g.add_argument("--depth-layers", default="auto", help="none | auto | 1-based blocks, e.g. 3,6,9 (default auto)")
    g.add_argument("--seg-layers", default="none", help="extra layer_<i> inputs for segmentation (default none)")
    g.add_argument("--det-layers", default="none", help="extra layer_<i> inputs for detection (default none)")
    g.add_argument("--det-width", type=int, default=128, help="detection tower width (default 128)")
    g.add_argument("--det-convs", type=int, default=2, choices=(1, 2), help="detection tower 3x3 convs (default 2)")
    g.add_argument("--score-threshold", type=float, default=0.3, help="detection manifest score threshold (0.3)")
    g.add_argument("--nms-iou", type=float, default=0.5, help="detection manifest NMS IoU threshold (0.5)")
    g.add_argument("--max-detections", type=int, default=100, help="detection manifest max detections (100)")
    g.add_argument("--pre-nms-top-k", type=int, default=1000, help="detection manifest pre-NMS top k (1000)")


def build_train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_heads.py [train]",
        description="Train task heads on DINOv3 features; export ONNX + manifests (models/HEADS.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backbone", type=Path, help="backbone ONNX (manifest beside it); required unless --finetune")
    add_common(p)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", type=Path, help="dataset folder (images/, annotations.json, masks/, depth/, classes/)")
    d.add_argument("--images", type=Path, help="images folder for masks/depth (default DATASET/images)")
    d.add_argument("--coco", type=Path, help="COCO instances JSON (default DATASET/annotations.json)")
    d.add_argument("--coco-images", type=Path, help="folder the COCO file_name entries are relative to")
    d.add_argument("--masks", type=Path, help="segmentation masks folder (default DATASET/masks)")
    d.add_argument("--depth-dir", type=Path, help="depth folder (default DATASET/depth)")
    d.add_argument("--image-folder", type=Path, help="classification ImageFolder (default DATASET/classes)")
    d.add_argument("--class-names", help="segmentation class names, background first: a,b,c or a .json/.txt file")
    d.add_argument("--val", type=Path, help="held-out dataset folder (same layout) for metrics")
    d.add_argument("--cache", type=Path, help="feature cache folder (default OUT/feature_cache)")
    d.add_argument("--random-features", action="store_true", help="reference data from seeded random features")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int,
                   help="epochs (frozen default: enough for --min-steps steps, at least 10; finetune: 10)")
    t.add_argument("--min-steps", type=int, default=500,
                   help="frozen training without --epochs: at least this many optimizer steps (500)")
    t.add_argument("--batch-size", type=int,
                   help="batch size (frozen: classification 256, others 32; finetune: 16)")
    t.add_argument("--lr", type=float, default=1e-3, help="head learning rate (default 1e-3)")
    t.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    t.add_argument("--label-stride", type=int, default=1, choices=(1, 2, 4, 8),
                   help="segmentation/depth loss at 1/S of the model-input size (default 1; 4 is ~16x cheaper)")
    t.add_argument("--warmup", type=float, default=0.05, help="fraction of steps of linear warmup (default 0.05)")
    t.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    f = p.add_argument_group("fine-tuning (--finetune)")
    f.add_argument("--finetune", action="store_true", help="train backbone + heads end to end")
    f.add_argument("--checkpoint", type=Path, help="HF folder or Meta .pth of the backbone to fine-tune")
    f.add_argument("--random-init", action="store_true", help="seeded random backbone (tests), with --variant")
    f.add_argument("--variant", choices=sorted(eb.VARIANTS), help="backbone architecture for --random-init")
    f.add_argument("--backbone-seed", type=int, default=0, help="seed of --random-init backbone weights (default 0)")
    f.add_argument("--layers", help="layer_<i> outputs of the fine-tuned backbone (default: --backbone's)")
    f.add_argument("--backbone-lr", type=float, default=1e-5, help="backbone learning rate (default 1e-5)")
    f.add_argument("--det-head-lr", type=float, default=1e-4, help="detection head lr when fine-tuning (default 1e-4)")
    f.add_argument("--head-only-epochs", type=int, default=1, help="epochs before the first block unfreezes (1)")
    f.add_argument("--unfreeze-every", type=int, default=1, help="unfreeze one more block every N epochs (1)")
    f.add_argument("--crop-sizes", default="224,768", help="segmentation crop short side range MIN,MAX (224,768)")
    return p


def build_random_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_heads.py export-random",
        description="Export untrained (seeded random) heads of the right shapes for a backbone.",
    )
    p.add_argument("--backbone", type=Path, required=True, help="backbone ONNX (manifest beside it)")
    add_common(p)
    p.add_argument("--num-classes", default="", help="TASK=K overrides (default detection=80,segmentation=150,classification=1000)")
    return p


# --------------------------------------------------------------------------------------------
# Head specifications
# --------------------------------------------------------------------------------------------


def parse_layer_inputs(text: str, backbone: hl.BackboneInfo, option: str) -> list[str]:
    t = text.strip().lower()
    if t in ("", "none"):
        return []
    if t == "auto":
        return [f"layer_{i}" for i in backbone.layers if i != backbone.num_layers]
    try:
        idx = sorted({int(v) for v in t.split(",") if v.strip()})
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected none, auto or block indices like 3,6,9") from None
    missing = [i for i in idx if i not in backbone.layers]
    if missing:
        raise UsageError(
            f"{option} {text!r}: the backbone exports layers {backbone.layers}, not {missing}; re-export it "
            f"with export_backbone.py --layers {','.join(map(str, idx))}"
        )
    return [f"layer_{i}" for i in idx]


def make_spec(task: str, class_names: list[str], backbone: hl.BackboneInfo, args: argparse.Namespace,
              depth_range: tuple[float, float] | None = None) -> hl.HeadSpec:
    if task == "classification":
        inputs = ["cls", "patch_tokens"] if args.use_mean_patch else ["cls"]
        section = {"top_k": max(1, min(args.top_k, len(class_names))), "use_mean_patch": bool(args.use_mean_patch)}
        return hl.HeadSpec(task, inputs, class_names, section)
    grids = ["patch_tokens"]
    if task == "segmentation":
        grids += parse_layer_inputs(args.seg_layers, backbone, "--seg-layers")
        return hl.HeadSpec(task, grids, class_names, {"palette": hl.palette(len(class_names))})
    if task == "depth":
        grids += parse_layer_inputs(args.depth_layers, backbone, "--depth-layers")
        lo, hi = depth_range if depth_range is not None else (0.1, 80.0)
        if not 0 < lo < hi:
            raise UsageError(f"depth range {lo}..{hi} m: need 0 < --min-depth < --max-depth")
        if args.depth_bins < 2:
            raise UsageError("--depth-bins: at least 2")
        return hl.HeadSpec(task, grids, [], {"min_depth_m": lo, "max_depth_m": hi}, {"bins": args.depth_bins})
    grids += parse_layer_inputs(args.det_layers, backbone, "--det-layers")
    if not 0 <= args.score_threshold <= 1 or not 0 <= args.nms_iou <= 1:
        raise UsageError("--score-threshold and --nms-iou must lie in [0, 1]")
    section = {
        "score_threshold": args.score_threshold,
        "nms_iou_threshold": args.nms_iou,
        "max_detections": args.max_detections,
        "pre_nms_top_k": args.pre_nms_top_k,
    }
    return hl.HeadSpec(task, grids, class_names, section, {"width": args.det_width, "num_convs": args.det_convs})


def depth_range_from(ds: hl.TaskDataset, args: argparse.Namespace) -> tuple[float, float]:
    vals = np.concatenate([r.target[r.target > 0] for r in ds.records])
    lo = args.min_depth if args.min_depth is not None else float(f"{0.8 * float(vals.min()):.4g}")
    hi = args.max_depth if args.max_depth is not None else float(f"{1.25 * float(vals.max()):.4g}")
    return lo, hi


# --------------------------------------------------------------------------------------------
# Datasets per task
# --------------------------------------------------------------------------------------------


def load_task_dataset(task: str, root: Path | None, args: argparse.Namespace, override: bool,
                      class_names: list[str] | None = None) -> hl.TaskDataset:
    """The dataset of ``task`` under ``root`` (HEADS.md layout); ``override`` applies the per-task
    path options (training set only)."""

    def pick(opt: Path | None, default: str) -> Path:
        if override and opt is not None:
            return opt
        if root is None:
            raise UsageError(f"{task}: give --dataset DIR (or the task's own path option)")
        return root / default

    if task == "classification":
        return hl.load_image_folder(pick(args.image_folder, "classes"))
    if task == "detection":
        coco = pick(args.coco, "annotations.json")
        return hl.load_coco(coco, args.coco_images if override else None)
    images = pick(args.images, "images")
    if task == "depth":
        return hl.load_depth(images, pick(args.depth_dir, "depth"))
    masks = pick(args.masks, "masks")
    hint = ""
    if class_names is None:
        if override and args.class_names:
            class_names = hl.parse_class_names(args.class_names)
            if len(class_names) < 2:
                raise UsageError(f"--class-names {args.class_names!r}: need the background and at least one class")
        else:
            coco = (args.coco if override and args.coco is not None else (root / "annotations.json" if root else None))
            found = hl.find_segmentation_class_names(masks, coco)
            if found is not None:
                class_names = found[0]
                print(f"[segmentation] class names from {found[1]}: {class_names}")
            elif coco is not None and coco.is_file():
                hint = f" ({coco.name}'s category ids are not 1..K, so they cannot name the mask ids)"
    return hl.load_masks(images, masks, class_names, hint)


def check_val_compatible(train: hl.TaskDataset, val: hl.TaskDataset) -> hl.TaskDataset:
    if train.task == "classification":
        unknown = sorted(set(val.class_names) - set(train.class_names))
        if unknown:
            raise UsageError(f"{val.source}: validation labels {unknown} are not training labels {train.class_names}")
        remap = [train.class_names.index(n) for n in val.class_names]
        recs = [hl.Record(r.image, remap[r.target], r.size) for r in val.records]
        return hl.TaskDataset(val.task, recs, train.class_names, val.source)
    if train.task == "detection" and val.class_names != train.class_names:
        raise UsageError(f"{val.source}: categories {val.class_names} differ from the training set's {train.class_names}")
    return val


# --------------------------------------------------------------------------------------------
# Training (frozen features)
# --------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu")
    return torch.device(name)


def task_loss(task: str, head: nn.Module, inputs: Sequence[torch.Tensor], tg: dict[str, torch.Tensor]) -> torch.Tensor:
    """Loss of one batch; head outputs are cast to float32 (they may be bf16 under autocast)."""
    if task == "classification":
        return F.cross_entropy(head(*inputs).float(), tg["label"])
    if task == "segmentation":
        return hl.segmentation_loss(head(*inputs).float(), tg["mask"])
    if task == "depth":
        return hl.silog_loss(head(*inputs).float(), tg["depth"])
    logits, ltrb = head.raw(*inputs)
    return hl.detection_loss(logits.float(), ltrb.float(), tg["cls"], tg["box"], tg["pos"])


def log_epoch(task: str, epoch: int, epochs: int, loss: float, extra: str = "") -> None:
    every = max(1, epochs // 10)
    if epoch == 0 or (epoch + 1) % every == 0 or epoch + 1 == epochs:
        print(f"[{task}] epoch {epoch + 1}/{epochs} loss {loss:.4f}{extra}", flush=True)


def frozen_batch_size(task: str, args: argparse.Namespace, n: int) -> int:
    """``--batch-size``, else 256 for classification and 32 for the dense heads (their loss
    upsamples maps to the model-input size; the detector's 3x3 tower costs per sample), never
    more than ``n``."""
    default = 256 if task == "classification" else 32
    return max(1, min(args.batch_size or default, n))


def frozen_epochs(args: argparse.Namespace, steps_per_epoch: int) -> int:
    """``--epochs``, else enough epochs for ``--min-steps`` optimizer steps (at least 10)."""
    if args.epochs is not None:
        return args.epochs
    return max(10, math.ceil(args.min_steps / steps_per_epoch))


def train_frozen(spec: hl.HeadSpec, ds: hl.TaskDataset, feats: dict[str, torch.Tensor], backbone: hl.BackboneInfo,
                 args: argparse.Namespace, seed: int, device: torch.device) -> tuple[nn.Module, list[float]]:
    torch.manual_seed(seed)
    head = hl.build_head(spec, backbone.hidden_size).to(device)
    targets = hl.build_targets(ds, backbone.height, backbone.width, args.label_stride)
    targets = {k: v.to(device) for k, v in targets.items()}
    feats = {k: v.to(device) for k, v in feats.items()}
    n = len(ds.records)
    bs = frozen_batch_size(spec.task, args, n)
    steps = math.ceil(n / bs)
    epochs = frozen_epochs(args, steps)
    total = max(1, epochs * steps)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, hl.warmup_cosine(total, hl.warmup_steps_for(total, args.warmup)))
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        head.train()
        perm = torch.randperm(n, generator=gen)
        acc, count = 0.0, 0
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs].to(device)
            loss = task_loss(spec.task, head, [feats[k][idx] for k in spec.inputs], {k: v[idx] for k, v in targets.items()})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            acc += loss.item() * len(idx)
            count += len(idx)
        losses.append(acc / count)
        log_epoch(spec.task, epoch, epochs, losses[-1])
    return head.eval().cpu(), losses


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(spec: hl.HeadSpec, head: nn.Module, val: hl.TaskDataset, extractor: hl.FeatureExtractor) -> dict[str, float]:
    head = head.eval().cpu()
    bb = extractor.backbone
    if spec.task == "classification":
        correct = 0
        for r in val.records:
            f = extractor(r.image)
            out = hl.run_head_torch(head, spec, {k: f[k][None] for k in spec.inputs})["logits"]
            correct += int(int(np.argmax(out[0])) == r.target)
        return {"accuracy": correct / len(val.records)}
    if spec.task == "segmentation":
        k = len(spec.class_names)
        conf = np.zeros((k, k), np.int64)
        for r in val.records:
            f = extractor(r.image)
            logits = torch.from_numpy(hl.run_head_torch(head, spec, {n: f[n][None] for n in spec.inputs})["logits"])
            pred = F.interpolate(logits, size=r.size, mode="bilinear", align_corners=False)[0].argmax(0).numpy()
            m = r.target
            v = m != hl.IGNORE_INDEX
            conf += np.bincount(m[v].astype(np.int64) * k + pred[v], minlength=k * k).reshape(k, k)
        inter = np.diag(conf)
        union = conf.sum(0) + conf.sum(1) - inter
        present = union > 0
        return {"mIoU": float(np.mean(inter[present] / union[present])) if present.any() else float("nan")}
    if spec.task == "depth":
        num, den = 0.0, 0
        lo, hi = spec.section["min_depth_m"], spec.section["max_depth_m"]
        for r in val.records:
            f = extractor(r.image)
            d = torch.from_numpy(hl.run_head_torch(head, spec, {n: f[n][None] for n in spec.inputs})["depth"])
            pred = F.interpolate(d, size=r.size, mode="bilinear", align_corners=False)[0, 0].clamp(lo, hi).numpy()
            v = r.target > 0
            num += float(np.sum(np.abs(pred[v] - r.target[v]) / r.target[v]))
            den += int(v.sum())
        return {"AbsRel": num / max(den, 1)}
    cfg = dict(spec.section, score_threshold=0.05)
    dets, gts = [], []
    for r in val.records:
        f = extractor(r.image)
        out = hl.run_head_torch(head, spec, {n: f[n][None] for n in spec.inputs})
        sy, sx = bb.height / r.size[0], bb.width / r.size[1]
        d_img = hl.decode_detections(out["scores"], out["boxes"], cfg)
        for d in d_img:
            x1, y1, x2, y2 = d["box"]
            d["box"] = [x1 / sx, y1 / sy, x2 / sx, y2 / sy]
        dets.append(d_img)
        gts.append(r.target)
    return {"mAP50": hl.map50(dets, gts, len(spec.class_names))}


def format_metrics(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items())


# --------------------------------------------------------------------------------------------
# Export helpers
# --------------------------------------------------------------------------------------------


def real_feeds(spec: hl.HeadSpec, extractor: hl.FeatureExtractor, image: Path) -> dict[str, np.ndarray]:
    f = extractor(image)
    return {n: f[n][None].astype(np.float32) for n in spec.inputs}


def export_one(head: nn.Module, spec: hl.HeadSpec, backbone: hl.BackboneInfo, args: argparse.Namespace,
               training: dict[str, Any], ref_feeds: dict[str, np.ndarray], ref_source: str) -> None:
    onnx_path, manifest_path, err = hl.save_head(
        head, spec, backbone, args.out, training, args.exporter, [ref_feeds], seed=args.seed
    )
    print(f"[{spec.task}] wrote {onnx_path} + {manifest_path.name} (onnxruntime vs PyTorch max error {err:.2e})")
    if args.reference is not None:
        directory = args.reference / spec.task
        hl.write_reference(directory, head, spec, ref_feeds, args.reference_hw, ref_source, onnx_path.name)
        print(f"[{spec.task}] reference {directory}")


def training_record(mode: str, args: argparse.Namespace, spec: hl.HeadSpec, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"mode": mode, "seed": args.seed, "torch": torch.__version__, "exporter": args.exporter}
    if spec.options:
        rec["architecture"] = dict(spec.options)
    rec.update(extra)
    return rec


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------


def run_export_random(args: argparse.Namespace) -> int:
    tasks = parse_tasks(args.tasks)
    backbone = hl.load_backbone(args.backbone, args.height, args.width)
    counts = parse_num_classes(args.num_classes)
    for task in tasks:
        if task == "detection":
            names = [f"class_{i}" for i in range(counts[task])]
        elif task == "segmentation":
            names = ["background", *[f"class_{i}" for i in range(1, counts[task])]]
        elif task == "classification":
            names = [f"label_{i}" for i in range(counts[task])]
        else:
            names = []
        lo = args.min_depth if args.min_depth is not None else 0.1
        hi = args.max_depth if args.max_depth is not None else 80.0
        spec = make_spec(task, names, backbone, args, (lo, hi))
        seed = args.seed + TASKS.index(task)
        torch.manual_seed(seed)
        head = hl.build_head(spec, backbone.hidden_size)
        randomize_head(head, seed)
        feeds = hl.random_features(backbone, spec.inputs, seed)
        record = training_record("random-init", args, spec, note="untrained: seeded random weights, for benchmarks and shape tests")
        export_one(head, spec, backbone, args, record, feeds, f"random features, seed {seed}")
    return 0


@torch.no_grad()
def randomize_head(head: nn.Module, seed: int) -> None:
    """Seeded weights with spread-out outputs (conv/linear ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2),
    BatchNorm running stats and affine perturbed), so exported graphs are not near-constant; the
    detection scores land on both sides of usual thresholds (a worst case for NMS)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(head.named_parameters(), key=lambda kv: kv[0]):
        if p.ndim >= 2:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(int(np.prod(p.shape[1:]))))
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
    for m in head.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1.0 + 0.5 * torch.rand(m.running_var.shape, generator=g))


def load_all_datasets(tasks: Sequence[str], args: argparse.Namespace) -> dict[str, hl.TaskDataset]:
    if args.dataset is not None and not args.dataset.is_dir():
        raise UsageError(f"--dataset {args.dataset}: not a folder")
    out = {}
    for task in tasks:
        out[task] = load_task_dataset(task, args.dataset, args, override=True)
        ds = out[task]
        print(f"[{task}] {len(ds.records)} training images from {ds.source}"
              + (f", {len(ds.class_names)} classes" if ds.class_names else ""))
    return out


def load_val_datasets(train: dict[str, hl.TaskDataset], args: argparse.Namespace) -> dict[str, hl.TaskDataset]:
    if args.val is None:
        return {}
    if not args.val.is_dir():
        raise UsageError(f"--val {args.val}: not a folder")
    out = {}
    for task, ds in train.items():
        names = ds.class_names if task == "segmentation" else None
        out[task] = check_val_compatible(ds, load_task_dataset(task, args.val, args, override=False, class_names=names))
    return out


def run_train(args: argparse.Namespace) -> int:
    if args.random_init and not args.finetune:
        raise UsageError("--random-init picks backbone weights for --finetune; for untrained heads use "
                         "`train_heads.py export-random --backbone M.onnx --out DIR`")
    if args.finetune:
        return run_finetune(args)
    if args.checkpoint is not None:
        raise UsageError("--checkpoint is only used with --finetune; frozen training reads --backbone M.onnx")
    if args.backbone is None:
        raise UsageError("give --backbone M.onnx (a backbone exported by models/export_backbone.py)")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    tasks = parse_tasks(args.tasks)
    backbone = hl.load_backbone(args.backbone, args.height, args.width)
    datasets = load_all_datasets(tasks, args)
    vals = load_val_datasets(datasets, args)
    device = resolve_device(args.device)
    cache = args.cache if args.cache is not None else args.out / "feature_cache"
    extractor = hl.FeatureExtractor(backbone, cache)
    for task in tasks:
        ds = datasets[task]
        depth_range = depth_range_from(ds, args) if task == "depth" else None
        spec = make_spec(task, ds.class_names, backbone, args, depth_range)
        t0, hits, misses = time.perf_counter(), extractor.hits, extractor.misses
        feats = extractor.stack([r.image for r in ds.records], spec.inputs)
        print(f"[{task}] features of {len(ds.records)} images ({time.perf_counter() - t0:.1f} s; "
              f"{extractor.hits - hits} from the cache, {extractor.misses - misses} computed)")
        seed = args.seed + TASKS.index(task)
        head, losses = train_frozen(spec, ds, feats, backbone, args, seed, device)
        metrics = None
        if task in vals:
            metrics = evaluate(spec, head, vals[task], extractor)
            print(f"[{task}] validation ({len(vals[task].records)} images): {format_metrics(metrics)}")
        ref_ds = vals.get(task, ds)
        if args.random_features:
            feeds, source = hl.random_features(backbone, spec.inputs, seed), f"random features, seed {seed}"
        else:
            feeds, source = real_feeds(spec, extractor, ref_ds.records[0].image), str(ref_ds.records[0].image)
        record = training_record(
            "frozen-features", args, spec,
            dataset=ds.source, train_images=len(ds.records), epochs=len(losses),
            batch_size=frozen_batch_size(task, args, len(ds.records)), optimizer="AdamW", lr=args.lr,
            weight_decay=args.weight_decay, schedule=f"linear warmup {args.warmup:g} of steps, cosine",
            final_loss=losses[-1], validation=metrics,
        )
        export_one(head, spec, backbone, args, record, feeds, source)
    return 0


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------


def round16(v: float) -> int:
    return max(hl.STRIDE, int(round(v / hl.STRIDE)) * hl.STRIDE)


def crop_sizes(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--crop-sizes {text!r}: expected MIN,MAX, e.g. 224,768") from None
    if not hl.STRIDE <= lo <= hi:
        raise UsageError(f"--crop-sizes {text!r}: need {hl.STRIDE} <= MIN <= MAX")
    return round16(lo), round16(hi)


class FinetuneData:
    """In-memory images + targets of one task and its batches for fine-tuning."""

    def __init__(self, ds: hl.TaskDataset, height: int, width: int, label_stride: int) -> None:
        self.ds = ds
        self.rgb = [torch.from_numpy(hl.load_rgb(r.image)).permute(2, 0, 1).contiguous() for r in ds.records]
        self.targets = hl.build_targets(ds, height, width, label_stride)
        self.height, self.width, self.label_stride = height, width, label_stride

    def __len__(self) -> int:
        return len(self.ds.records)

    def fixed_batch(self, idx: list[int], mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = torch.cat([hl.preprocess_tensor(self.rgb[i][None], self.height, self.width, mean, std) for i in idx])
        return x, {k: v[idx] for k, v in self.targets.items()}

    def crop_batch(self, idx: list[int], sizes: tuple[int, int], gen: torch.Generator,
                   mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Multi-scale random crops (segmentation): one output size per batch, short side a
        multiple of 16 in ``sizes``, the model-input aspect ratio; random horizontal flip."""
        choices = list(range(sizes[0], sizes[1] + 1, hl.STRIDE))
        short = choices[int(torch.randint(len(choices), (1,), generator=gen))]
        aspect = self.width / self.height
        oh, ow = (short, round16(short * aspect)) if aspect >= 1 else (round16(short / aspect), short)
        xs, ms = [], []
        for i in idx:
            img, mask = self.rgb[i], self.ds.records[i].target
            ih, iw = mask.shape
            ch_max = min(ih, iw / (ow / oh))
            frac = 0.5 + 0.5 * float(torch.rand((), generator=gen))
            ch = max(1, int(ch_max * frac))
            cw = max(1, min(iw, int(round(ch * ow / oh))))
            y0 = int(torch.randint(ih - ch + 1, (1,), generator=gen))
            x0 = int(torch.randint(iw - cw + 1, (1,), generator=gen))
            crop = img[:, y0:y0 + ch, x0:x0 + cw]
            mcrop = mask[y0:y0 + ch, x0:x0 + cw]
            if bool(torch.rand((), generator=gen) < 0.5):
                crop, mcrop = crop.flip(-1), mcrop[:, ::-1]
            xs.append(hl.preprocess_tensor(crop[None], oh, ow, mean, std))
            s = self.label_stride
            ms.append(torch.from_numpy(hl.resize_nearest(np.ascontiguousarray(mcrop), oh // s, ow // s)).long())
        return torch.cat(xs), {"mask": torch.stack(ms)}


def backbone_features(wrapper: eb.BackboneWrapper, x: torch.Tensor, layers: Sequence[int]) -> dict[str, torch.Tensor]:
    """Backbone outputs in the head input layout (grids ``[B, C, h, w]``)."""
    out = wrapper(x)
    h, w = x.shape[2] // hl.STRIDE, x.shape[3] // hl.STRIDE

    def grid(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)

    feats = {"cls": out[0], "patch_tokens": grid(out[2])}
    for i, t in zip(layers, out[3:]):
        feats[f"layer_{i}"] = grid(t)
    return feats


def set_unfrozen(model: nn.Module, blocks: int) -> None:
    """Train the last ``blocks`` transformer blocks (and the final norm when any); the embeddings
    once every block is trainable."""
    layers = list(model.model.layer)
    for p in model.parameters():
        p.requires_grad_(False)
    for block in layers[len(layers) - blocks:] if blocks > 0 else []:
        for p in block.parameters():
            p.requires_grad_(True)
    if blocks > 0:
        for p in model.norm.parameters():
            p.requires_grad_(True)
    if blocks > len(layers):
        for p in model.embeddings.parameters():
            p.requires_grad_(True)


def run_finetune(args: argparse.Namespace) -> int:
    tasks = parse_tasks(args.tasks)
    if args.epochs is None:
        args.epochs = 10
    if args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if (args.checkpoint is None) == (not args.random_init):
        raise UsageError("--finetune needs the PyTorch backbone: --checkpoint HF_DIR|FILE.pth or --random-init --variant NAME")
    if args.head_only_epochs < 0 or args.unfreeze_every < 1:
        raise UsageError("--head-only-epochs must be >= 0 and --unfreeze-every >= 1")
    sizes = crop_sizes(args.crop_sizes)
    loaded = eb.load_model(argparse.Namespace(
        checkpoint=args.checkpoint, random_init=args.random_init, variant=args.variant,
        seed=args.backbone_seed if args.random_init else None,
    ))
    model = loaded.model.float()
    cfg = model.config
    if args.backbone is not None:
        ref = hl.load_backbone(args.backbone, args.height, args.width)
        if ref.hidden_size != cfg.hidden_size or ref.num_layers != cfg.num_hidden_layers:
            raise UsageError(f"--backbone {args.backbone}: {ref.variant} (hidden {ref.hidden_size}) does not match the "
                             f"fine-tuned model {loaded.variant} (hidden {cfg.hidden_size})")
        height, width, mean, std = ref.height, ref.width, ref.mean, ref.std
        layers = ref.layers if args.layers is None else eb.parse_layers(args.layers, cfg.num_hidden_layers)
    else:
        if args.height is None or args.width is None:
            raise UsageError("--finetune: give --backbone M.onnx (for input size and layers) or --height and --width")
        eb.check_size(args.height, args.width, "--height/--width")
        height, width, mean, std = args.height, args.width, loaded.image_mean, loaded.image_std
        layers = eb.parse_layers(args.layers, cfg.num_hidden_layers)
    provisional = hl.BackboneInfo(Path("-"), {}, "", height, width, cfg.hidden_size, list(layers),
                                  cfg.num_hidden_layers, list(mean), list(std), loaded.variant)
    datasets = load_all_datasets(tasks, args)
    vals = load_val_datasets(datasets, args)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(args.seed)
    specs, heads, data = {}, {}, {}
    for task in tasks:
        ds = datasets[task]
        specs[task] = make_spec(task, ds.class_names, provisional, args,
                                depth_range_from(ds, args) if task == "depth" else None)
        torch.manual_seed(args.seed + TASKS.index(task))
        heads[task] = hl.build_head(specs[task], cfg.hidden_size).to(device)
        data[task] = FinetuneData(ds, height, width, args.label_stride)
    model.to(device).train()
    if cuda:
        # non-reentrant: frozen early blocks give inputs without grad to the trainable ones
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    wrapper = eb.BackboneWrapper(model, layers)
    head_lr = {t: (args.det_head_lr if t == "detection" else args.lr) for t in tasks}
    groups = [{"params": list(model.parameters()), "lr": args.backbone_lr}]
    groups += [{"params": list(heads[t].parameters()), "lr": head_lr[t]} for t in tasks]
    opt = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    bs = args.batch_size or 16
    steps = max(math.ceil(len(data[t]) / min(bs, len(data[t]))) for t in tasks)
    total = args.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, hl.warmup_cosine(total, hl.warmup_steps_for(total, args.warmup)))
    gen = torch.Generator().manual_seed(args.seed)
    nblocks = cfg.num_hidden_layers
    history: dict[str, list[float]] = {t: [] for t in tasks}
    for epoch in range(args.epochs):
        unfrozen = 0 if epoch < args.head_only_epochs else 1 + (epoch - args.head_only_epochs) // args.unfreeze_every
        unfrozen = min(unfrozen, nblocks + 1)
        set_unfrozen(model, unfrozen)
        print(f"[finetune] epoch {epoch + 1}/{args.epochs}: {min(unfrozen, nblocks)}/{nblocks} blocks trainable"
              + (", patch embedding too" if unfrozen > nblocks else ""), flush=True)
        perms = {t: torch.randperm(len(data[t]), generator=gen).tolist() for t in tasks}
        sums = {t: 0.0 for t in tasks}
        for s in range(steps):
            total_loss = torch.zeros((), device=device)
            for t in tasks:
                n = len(data[t])
                b = min(bs, n)
                idx = [perms[t][(s * b + k) % n] for k in range(b)]
                if t == "segmentation":
                    x, tg = data[t].crop_batch(idx, sizes, gen, mean, std)
                else:
                    x, tg = data[t].fixed_batch(idx, mean, std)
                x, tg = x.to(device), {k: v.to(device) for k, v in tg.items()}
                heads[t].train()
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
                    with torch.set_grad_enabled(unfrozen > 0):
                        feats = backbone_features(wrapper, x, layers)
                    loss = task_loss(t, heads[t], [feats[k] for k in specs[t].inputs], tg)
                sums[t] += loss.item()
                total_loss = total_loss + loss.float()
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            opt.step()
            sched.step()
        for t in tasks:
            history[t].append(sums[t] / steps)
            log_epoch(t, epoch, args.epochs, history[t][-1])

    # Export the adapted backbone through export_backbone.py (one backbone ONNX + manifest).
    model.eval().cpu()
    if cuda:
        model.gradient_checkpointing_disable()
    hf_dir = args.out / "finetuned_backbone_hf"
    model.save_pretrained(str(hf_dir))
    hl.write_json(hf_dir / "preprocessor_config.json", {
        "image_processor_type": "DINOv3ViTImageProcessor", "do_resize": True, "size": {"height": height, "width": width},
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(mean), "image_std": list(std), "do_center_crop": False,
    })
    onnx_out = args.out / "backbone" / f"dinov3_{loaded.variant}_finetuned.onnx"
    argv = ["--checkpoint", str(hf_dir), "--height", str(height), "--width", str(width), "--out", str(onnx_out)]
    if layers:
        argv += ["--layers", ",".join(map(str, layers))]
    print(f"[finetune] exporting the adapted backbone: export_backbone.py {' '.join(argv)}", flush=True)
    rc = eb.main(argv)
    if rc != 0:
        raise RuntimeError(f"export_backbone.py failed with status {rc}")
    backbone = hl.load_backbone(onnx_out)
    cache = args.cache if args.cache is not None else args.out / "feature_cache"
    extractor = hl.FeatureExtractor(backbone, cache)
    for t in tasks:
        spec, head = specs[t], heads[t].eval().cpu()
        metrics = None
        if t in vals:
            metrics = evaluate(spec, head, vals[t], extractor)
            print(f"[{t}] validation ({len(vals[t].records)} images): {format_metrics(metrics)}")
        ref_ds = vals.get(t, datasets[t])
        if args.random_features:
            feeds, source = hl.random_features(backbone, spec.inputs, args.seed + TASKS.index(t)), "random features"
        else:
            feeds, source = real_feeds(spec, extractor, ref_ds.records[0].image), str(ref_ds.records[0].image)
        record = training_record(
            "finetune", args, spec, dataset=datasets[t].source, train_images=len(datasets[t].records), epochs=args.epochs,
            batch_size=bs, optimizer="AdamW", lr=head_lr[t], backbone_lr=args.backbone_lr,
            weight_decay=args.weight_decay, head_only_epochs=args.head_only_epochs,
            unfreeze_every=args.unfreeze_every, crop_sizes=list(sizes) if t == "segmentation" else None,
            backbone_source=loaded.source, final_loss=history[t][-1], validation=metrics,
            mixed_precision="bf16" if cuda else None, gradient_checkpointing=cuda,
        )
        export_one(head, spec, backbone, args, record, feeds, source)
    return 0


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export-random":
        args = build_random_parser().parse_args(argv[1:])
        runner = run_export_random
    else:
        if argv and argv[0] == "train":
            argv = argv[1:]
        args = build_train_parser().parse_args(argv)
        runner = run_train
    try:
        args.reference_hw = parse_hw(args.reference_size, "--reference-size")
        if args.threads:
            torch.set_num_threads(args.threads)
        return runner(args)
    except UsageError as e:
        raise SystemExit(f"train_heads.py: error: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
