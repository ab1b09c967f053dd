#!/usr/bin/env python3
"""Export a DINOv3 ViT backbone to a single-file ONNX model plus a JSON manifest.

The exported graph takes ``pixel_values`` float32 ``[1, 3, H, W]`` (already resized and
normalised with the ImageNet mean/std) and returns, in this order:

* ``cls``           ``[1, C]``          class token after the final LayerNorm
* ``registers``     ``[1, 4, C]``       register ("storage") tokens after the final LayerNorm
* ``patch_tokens``  ``[1, h*w, C]``     patch tokens after the final LayerNorm, row-major over the
                                        patch grid (row index = y), h = H/16, w = W/16
* ``layer_<i>``     ``[1, h*w, C]``     for each ``--layers`` index i (1-based): patch tokens of the
                                        output of transformer block i, with the final LayerNorm
                                        applied (DINOv3 ``get_intermediate_layers(norm=True)``)

Weights come from exactly one source (nothing is ever downloaded):

* ``--checkpoint DIR``       a Hugging Face folder (config.json + model.safetensors), e.g. a local
                             download of ``facebook/dinov3-vits16-pretrain-lvd1689m``
* ``--checkpoint FILE.pth``  Meta's original backbone weights (``dinov3_vits16_pretrain_*.pth``);
                             keys are converted with the mapping of transformers'
                             ``convert_dinov3_vit_to_hf.py``
* ``--random-init --variant NAME --seed N``  the architecture-exact model with seeded random
                             weights (layer scale and LayerNorm parameters randomised too, so every
                             block changes its input and parity tests catch a wrong block)

Variants: ``vits16``, ``vits16plus``, ``vitb16``, ``vitl16`` and ``tiny`` (a 2-block, 64-wide test
model with the same token layout: CLS + 4 registers + patches, RoPE, layer scale).

The export uses ``torch.onnx.export(..., dynamo=True, opset_version=18)``. By default the input
size is fixed (``--height``/``--width``, multiples of 16, default 224). ``--dynamic`` makes H and W
symbolic (input dims named ``height`` and ``width``; the patch-count dim of the outputs is left
unset; ``value_info`` is stripped); the RoPE patch coordinates are then computed inside the graph
and q/k are split at the constant prefix 1 + 4 instead of transformers' data-dependent split.
After export the script fails if the graph could not run whole on TensorRT (any ``If`` node, a
default-domain opset below 17, or a non-static input or output dimension of a fixed-size export),
embeds all weights in the single ``.onnx`` file, writes ``<out>.json`` (the manifest) and checks the ONNX model against
PyTorch with onnxruntime (at two input sizes when ``--dynamic``).

``--reference SPEC`` (repeatable) writes a seeded random input and PyTorch's eager fp32 outputs as
``.npy`` files: SPEC is ``DIR`` (at the export size) or ``HxW:DIR`` (at another size; only with
``--dynamic``).

``--quantize int8-dynamic`` also writes ``<out>_int8.onnx`` and its manifest: the linear layers
with per-channel s8 weights and activations quantised at run time (onnxruntime
``quantize_dynamic``, ``MatMulInteger``); attention products stay float. Its manifest's
``quantization`` names the float model, which stays the parity reference (tract runs it) and the
identity its heads are checked against. The node runs it with ``--backend onnxruntime``.

Examples::

    python models/export_backbone.py --random-init --variant vits16 --seed 0 --out /tmp/vits16.onnx
    python models/export_backbone.py --checkpoint ~/dinov3-vits16-pretrain-lvd1689m \\
        --height 448 --width 448 --layers 3,6,9 --out models/dinov3_vits16_448.onnx
    python models/export_backbone.py --checkpoint dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth \\
        --dynamic --out models/dinov3_vitb16_dynamic.onnx

Exit codes: 0 ok, 2 bad arguments or input, 1 export/verification failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
import transformers
from torch import nn
from transformers import DINOv3ViTConfig, DINOv3ViTModel
from transformers.models.dinov3_vit import modeling_dinov3_vit

FORMAT = "dinov3_perception/backbone"
FORMAT_VERSION = 1
OPSET = 18
PATCH_SIZE = 16
NUM_REGISTER_TOKENS = 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NAME = "pixel_values"
TWO_GIB = 2 * 1024**3


class UsageError(Exception):
    """Bad command-line input; reported with exit code 2."""


@dataclass(frozen=True)
class Variant:
    """Architecture of one DINOv3 ViT variant (values of transformers' conversion script)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    gated_mlp: bool
    hidden_act: str


# Official values from transformers' models/dinov3_vit/convert_dinov3_vit_to_hf.py
# (get_dinov3_config). All: patch 16, 4 registers, RoPE theta 100, query/value bias but no key
# bias, output-projection bias, layer scale, LayerNorm eps 1e-5.
VARIANTS: dict[str, Variant] = {
    "vits16": Variant(384, 12, 6, 1536, False, "gelu"),
    "vits16plus": Variant(384, 12, 6, 1536, True, "silu"),
    "vitb16": Variant(768, 12, 12, 3072, False, "gelu"),
    "vitl16": Variant(1024, 24, 16, 4096, False, "gelu"),
    "tiny": Variant(64, 2, 4, 256, False, "gelu"),
}


def make_config(variant: Variant) -> DINOv3ViTConfig:
    """The transformers config of a variant, with the official DINOv3 settings."""
    return DINOv3ViTConfig(
        patch_size=PATCH_SIZE,
        hidden_size=variant.hidden_size,
        intermediate_size=variant.intermediate_size,
        num_hidden_layers=variant.num_layers,
        num_attention_heads=variant.num_heads,
        hidden_act=variant.hidden_act,
        layer_norm_eps=1e-5,
        rope_theta=100.0,
        image_size=224,
        num_channels=3,
        query_bias=True,
        key_bias=False,
        value_bias=True,
        proj_bias=True,
        mlp_bias=True,
        layerscale_value=1.0,
        drop_path_rate=0.0,
        use_gated_mlp=variant.gated_mlp,
        num_register_tokens=NUM_REGISTER_TOKENS,
    )


def variant_of_config(config: DINOv3ViTConfig) -> str:
    """Name of the known variant whose architecture equals ``config``, else ``custom``."""
    for name, v in VARIANTS.items():
        if (
            config.hidden_size == v.hidden_size
            and config.num_hidden_layers == v.num_layers
            and config.num_attention_heads == v.num_heads
            and config.intermediate_size == v.intermediate_size
            and bool(config.use_gated_mlp) == v.gated_mlp
        ):
            return name
    return "custom"


def check_supported_config(config: DINOv3ViTConfig) -> None:
    """Refuse configurations this exporter's token layout does not describe."""
    patch = config.patch_size
    if (patch if isinstance(patch, int) else tuple(patch)) not in (PATCH_SIZE, (PATCH_SIZE, PATCH_SIZE)):
        raise UsageError(f"patch size {patch} is not supported (only {PATCH_SIZE})")
    if config.num_register_tokens != NUM_REGISTER_TOKENS:
        raise UsageError(
            f"the checkpoint has {config.num_register_tokens} register tokens; the manifest format "
            f"expects {NUM_REGISTER_TOKENS}"
        )


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@torch.no_grad()
def randomize_weights(model: DINOv3ViTModel, seed: int) -> None:
    """Give every parameter seeded, non-trivial random values.

    Linear/conv weights ~ N(0, 1/fan_in) so attention is not uniform, biases ~ N(0, 0.02^2),
    CLS/register tokens ~ N(0, 0.5^2), layer-scale gains ~ U(0.1, 1.0) (not the tiny training
    init that makes blocks near-identity), LayerNorm weights ~ 1 + N(0, 0.1^2) and biases
    ~ N(0, 0.05^2). Every parameter is visited in sorted-name order from one generator, so the
    result depends on ``seed`` only.
    """
    g = _generator(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if name.endswith("mask_token"):
            p.zero_()
        elif name.endswith(("cls_token", "register_tokens")):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        elif "layer_scale" in name:
            p.copy_(torch.rand(p.shape, generator=g) * 0.9 + 0.1)
        elif re.search(r"(^|\.)norm\d?\.weight$", name):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif re.search(r"(^|\.)norm\d?\.bias$", name):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        elif name.endswith(".weight"):
            fan_in = int(np.prod(p.shape[1:]))
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        elif name.endswith(".bias"):
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
        else:
            raise RuntimeError(f"randomize_weights: no rule for parameter {name}")


# Key mapping of transformers' convert_dinov3_vit_to_hf.py (ORIGINAL_TO_CONVERTED_KEY_MAPPING),
# applied in order; "qkv" is split into q_proj/k_proj/v_proj first.
META_TO_HF_KEY_MAPPING: list[tuple[str, str]] = [
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^mask_token$", "embeddings.mask_token"),
    (r"^storage_tokens$", "embeddings.register_tokens"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings."),
    (r"^rope_embed\.periods$", "rope_embeddings.inv_freq"),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"model.layer.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.attn\.", r"model.layer.\1.attention."),
    (r"^blocks\.(\d+)\.ls(\d+)\.gamma$", r"model.layer.\1.layer_scale\2.lambda1"),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"model.layer.\1.mlp.up_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"model.layer.\1.mlp.down_proj."),
    (r"^blocks\.(\d+)\.mlp\.w1\.", r"model.layer.\1.mlp.gate_proj."),
    (r"^blocks\.(\d+)\.mlp\.w2\.", r"model.layer.\1.mlp.up_proj."),
    (r"^blocks\.(\d+)\.mlp\.w3\.", r"model.layer.\1.mlp.down_proj."),
    (r"^blocks\.(\d+)\.norm", r"model.layer.\1.norm"),
    (r"^norm\.", "norm."),
]


def meta_key_to_hf(key: str) -> str | None:
    """HF name of one (qkv-split) Meta key, or None when the key has no HF counterpart."""
    for pattern, repl in META_TO_HF_KEY_MAPPING:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return None


def _unwrap_meta_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Accept a bare backbone state dict or a training checkpoint wrapping one."""
    if not isinstance(obj, dict):
        raise UsageError("the .pth file does not hold a state dict")
    for wrapper in ("model", "teacher", "state_dict"):
        inner = obj.get(wrapper)
        if isinstance(inner, dict) and not isinstance(inner, torch.Tensor):
            obj = inner
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    prefix = "backbone."
    if sd and all(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items()}
    if "cls_token" not in sd:
        raise UsageError("the .pth file is not a DINOv3 backbone state dict (no 'cls_token')")
    return sd


def infer_meta_variant(sd: dict[str, torch.Tensor]) -> str:
    """Variant name from the shapes of a Meta state dict."""
    hidden = int(sd["cls_token"].shape[-1])
    layers = len({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    gated = any(".mlp.w1." in k for k in sd)
    for name, v in VARIANTS.items():
        if v.hidden_size == hidden and v.num_layers == layers and v.gated_mlp == gated:
            return name
    raise UsageError(
        f"the .pth file (hidden {hidden}, {layers} blocks, gated MLP {gated}) matches no known "
        f"variant ({', '.join(VARIANTS)})"
    )


def convert_meta_state_dict(
    sd: dict[str, torch.Tensor], config: DINOv3ViTConfig
) -> dict[str, torch.Tensor]:
    """Convert Meta's original DINOv3 backbone keys to transformers' ``DINOv3ViTModel`` keys.

    Splits ``qkv`` into q/k/v, applies ``qkv.bias_mask`` (DINOv3 masks the key bias to zero),
    maps ``storage_tokens`` to register tokens, ``ls*.gamma`` to layer scale, reshapes
    ``mask_token``, and drops the RoPE ``periods`` buffer (transformers recomputes the
    frequencies in fp32; the stored bf16 periods are only compared, with a warning).
    """
    out: dict[str, torch.Tensor] = {}
    head_dim = config.hidden_size // config.num_attention_heads
    for key, value in sd.items():
        value = value.detach().to(torch.float32) if value.is_floating_point() else value
        if key.endswith("qkv.bias_mask"):
            continue
        if ".qkv." in key:
            q, k, v = torch.chunk(value, 3, dim=0)
            if key.endswith(".bias"):
                mask = sd.get(key.replace(".bias", ".bias_mask"))
                if mask is not None:
                    qm, km, vm = torch.chunk(mask.to(torch.float32), 3, dim=0)
                    q, k, v = q * qm, k * km, v * vm
                if torch.count_nonzero(k) != 0:
                    raise UsageError(
                        f"{key}: the key bias is not masked to zero; DINOv3ViTModel has no key bias"
                    )
                parts = {"q_proj": q, "v_proj": v}
            else:
                parts = {"q_proj": q, "k_proj": k, "v_proj": v}
            for proj, t in parts.items():
                hf = meta_key_to_hf(key.replace("qkv", proj))
                assert hf is not None
                out[hf] = t.contiguous()
            continue
        hf = meta_key_to_hf(key)
        if hf is None:
            if "local_cls_norm" in key:
                continue
            raise UsageError(f"unexpected key in the .pth file: {key}")
        if hf == "rope_embeddings.inv_freq":
            expected = 100.0 ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))
            if value.shape != expected.shape or not torch.allclose(value, expected, rtol=1e-2):
                print(f"warning: stored RoPE periods differ from theta=100: {value.tolist()}", file=sys.stderr)
            continue
        if hf == "embeddings.mask_token":
            value = value.reshape(1, 1, -1)
        out[hf] = value
    return out


@dataclass
class LoadedModel:
    model: DINOv3ViTModel
    variant: str
    source: dict[str, Any]
    image_mean: list[float]
    image_std: list[float]


def load_model(args: argparse.Namespace) -> LoadedModel:
    """Build the model from exactly one of --checkpoint / --random-init."""
    mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    if args.random_init:
        if args.checkpoint is not None:
            raise UsageError("use either --checkpoint or --random-init, not both")
        if args.variant is None:
            raise UsageError("--random-init needs --variant")
        seed = 0 if args.seed is None else args.seed
        torch.manual_seed(seed)
        model = DINOv3ViTModel(make_config(VARIANTS[args.variant]))
        randomize_weights(model, seed)
        return LoadedModel(model, args.variant, {"kind": "random-init", "path": None, "seed": seed}, mean, std)

    if args.checkpoint is None:
        raise UsageError("give --checkpoint DIR|FILE.pth or --random-init --variant NAME")
    if args.seed is not None:
        raise UsageError("--seed only applies to --random-init")
    path: Path = args.checkpoint
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{path}: not a Hugging Face model folder (no config.json)")
        model = DINOv3ViTModel.from_pretrained(str(path), local_files_only=True)
        check_supported_config(model.config)
        variant = variant_of_config(model.config)
        if args.variant is not None and args.variant != variant:
            raise UsageError(f"{path}: --variant {args.variant} but the checkpoint is {variant}")
        pp = path / "preprocessor_config.json"
        if pp.is_file():
            pcfg = json.loads(pp.read_text())
            mean = [float(x) for x in pcfg.get("image_mean", mean)]
            std = [float(x) for x in pcfg.get("image_std", std)]
        return LoadedModel(model, variant, {"kind": "huggingface", "path": str(path), "seed": None}, mean, std)

    if path.is_file() and path.suffix == ".pth":
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        sd = _unwrap_meta_state_dict(raw)
        variant = infer_meta_variant(sd)
        if args.variant is not None and args.variant != variant:
            raise UsageError(f"{path}: --variant {args.variant} but the checkpoint is {variant}")
        model = DINOv3ViTModel(make_config(VARIANTS[variant]))
        converted = convert_meta_state_dict(sd, model.config)
        missing, unexpected = model.load_state_dict(converted, strict=False)
        if missing or unexpected:
            raise UsageError(f"{path}: weights do not fit {variant}: missing {missing}, unexpected {unexpected}")
        return LoadedModel(model, variant, {"kind": "meta-pth", "path": str(path), "seed": None}, mean, std)

    raise UsageError(f"--checkpoint {path}: expected a Hugging Face folder or a .pth file")


# --------------------------------------------------------------------------------------------
# Export wrapper
# --------------------------------------------------------------------------------------------


def make_constant_prefix_rope(num_prefix: int) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``apply_rotary_pos_emb`` with constant-index slicing instead of a data-dependent split.

    transformers splits q/k with sizes computed from the runtime shapes, which keeps a
    data-dependent size (and, in other exporters, ``If`` nodes) in the graph. Slicing at the
    constant prefix (CLS + registers) gives the same numbers and keeps H and W symbolic.
    """

    def apply_rotary_pos_emb(
        q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rot = modeling_dinov3_vit.rotate_half
        q_prefix, q_patches = q[..., :num_prefix, :], q[..., num_prefix:, :]
        k_prefix, k_patches = k[..., :num_prefix, :], k[..., num_prefix:, :]
        q_patches = (q_patches * cos) + (rot(q_patches) * sin)
        k_patches = (k_patches * cos) + (rot(k_patches) * sin)
        return torch.cat((q_prefix, q_patches), dim=-2), torch.cat((k_prefix, k_patches), dim=-2)

    return apply_rotary_pos_emb


class _Patched:
    """Context manager that swaps transformers' RoPE application for the constant-prefix one."""

    def __init__(self, num_prefix: int) -> None:
        self._new = make_constant_prefix_rope(num_prefix)
        self._old: Callable[..., Any] | None = None

    def __enter__(self) -> None:
        self._old = modeling_dinov3_vit.apply_rotary_pos_emb
        modeling_dinov3_vit.apply_rotary_pos_emb = self._new

    def __exit__(self, *exc: object) -> None:
        modeling_dinov3_vit.apply_rotary_pos_emb = self._old


def rope_cos_sin(model: DINOv3ViTModel, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE cos/sin for the patch grid of ``pixel_values``, computed from its (symbolic) shape.

    Same formula as ``DINOv3ViTRopePositionEmbedding.forward`` in eval mode: patch centres
    ((i + 0.5) / n) * 2 - 1 on each axis, angles 2*pi*coord*inv_freq, [y freqs, x freqs] tiled twice.
    """
    rope = model.rope_embeddings
    h = pixel_values.shape[2] // PATCH_SIZE
    w = pixel_values.shape[3] // PATCH_SIZE
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).flatten(0, 1)
    coords = 2.0 * coords - 1.0
    angles = 2 * math.pi * coords[:, :, None] * rope.inv_freq[None, None, :]
    angles = angles.flatten(1, 2).tile(2)
    return torch.cos(angles), torch.sin(angles)


class BackboneWrapper(nn.Module):
    """``pixel_values -> (cls, registers, patch_tokens, layer_<i>...)`` over a DINOv3ViTModel."""

    def __init__(self, model: DINOv3ViTModel, layers: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.layers = list(layers)
        self.num_prefix = 1 + model.config.num_register_tokens

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        hidden = m.embeddings(pixel_values)
        position_embeddings = rope_cos_sin(m, pixel_values)
        p = self.num_prefix
        intermediate: list[torch.Tensor] = []
        for index, block in enumerate(m.model.layer, start=1):
            hidden = block(hidden, position_embeddings=position_embeddings)
            if index in self.layers:
                intermediate.append(m.norm(hidden[:, p:, :]))
        last = m.norm(hidden)
        return (last[:, 0, :], last[:, 1:p, :], last[:, p:, :], *intermediate)


def output_names(layers: Sequence[int]) -> list[str]:
    return ["cls", "registers", "patch_tokens", *[f"layer_{i}" for i in layers]]


@torch.no_grad()
def pytorch_reference(model: DINOv3ViTModel, layers: Sequence[int], pixel_values: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of transformers' own (unpatched) eager fp32 forward, independent of the wrapper."""
    out = model(torch.from_numpy(pixel_values), output_hidden_states=True)
    p = 1 + model.config.num_register_tokens
    last = out.last_hidden_state
    # hidden_states[0] is the embedding output; hidden_states[i] the output of block i.
    hs = out.hidden_states
    if len(hs) != model.config.num_hidden_layers + 1:
        raise RuntimeError(f"unexpected hidden_states length {len(hs)}")
    result = {"cls": last[:, 0, :], "registers": last[:, 1:p, :], "patch_tokens": last[:, p:, :]}
    for i in layers:
        result[f"layer_{i}"] = model.norm(hs[i])[:, p:, :]
    return {k: v.contiguous().numpy().astype(np.float32) for k, v in result.items()}


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


def iter_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node of the main graph, of nested subgraphs and of local functions."""

    def walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
        for node in graph.node:
            yield node
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        yield from walk(g)

    yield from walk(model.graph)
    for fn in model.functions:
        for node in fn.node:
            yield node
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        yield from walk(g)


def count_if_nodes(model: onnx.ModelProto) -> int:
    return sum(1 for n in iter_nodes(model) if n.op_type == "If")


#: Lowest default-domain opset whose LayerNormalization TensorRT takes as one layer (FP16
#: LayerNorm built from primitive ops overflows).
MIN_TENSORRT_OPSET = 17


def tensorrt_problems(model: onnx.ModelProto, dynamic: bool) -> list[str]:
    """Why TensorRT could not take the whole graph: ``If`` nodes, an opset below 17, and (for a
    fixed-size export) any graph input or output dimension that is not a fixed number."""
    problems = []
    ifs = count_if_nodes(model)
    if ifs:
        problems.append(f"the graph contains {ifs} If node(s)")
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not opsets or max(opsets) < MIN_TENSORRT_OPSET:
        problems.append(f"default-domain opset {opsets} is below {MIN_TENSORRT_OPSET}")
    if not dynamic:
        for value in [*model.graph.input, *model.graph.output]:
            dims = value.type.tensor_type.shape.dim
            if not dims or any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
                shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
                problems.append(f"{value.name} has a non-static shape {shape}")
    return problems


def quantize_int8_dynamic(float_path: Path, out: Path) -> None:
    """onnxruntime's dynamic quantisation of the linear layers: per-channel s8 weights, u8
    activations quantised per tensor at run time (MatMulInteger); activation x activation
    products (attention) stay float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(float_path),
        str(out),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        extra_options={"MatMulConstBOnly": True},
    )


def int8_path_for(out: Path) -> Path:
    """``vits16.onnx`` -> ``vits16_int8.onnx``."""
    return out.with_name(f"{out.stem}_int8.onnx")


def fidelity(a: dict[str, np.ndarray], b: dict[str, np.ndarray], name: str) -> tuple[float, float]:
    """(1 - mean per-token cosine, max abs) of output ``name``."""
    x = a[name].reshape(-1, a[name].shape[-1]).astype(np.float64)
    y = b[name].reshape(-1, b[name].shape[-1]).astype(np.float64)
    cos = np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return float(1.0 - cos.mean()), float(np.max(np.abs(x - y)))


def export_onnx(wrapper: BackboneWrapper, height: int, width: int, dynamic: bool) -> onnx.ModelProto:
    """Export with the dynamo exporter at opset 18 and return the post-processed ModelProto."""
    example = torch.zeros(1, 3, height, width, dtype=torch.float32)
    names = output_names(wrapper.layers)
    dynamic_shapes = None
    if dynamic:
        gh = torch.export.Dim("grid_h", min=1, max=1024)
        gw = torch.export.Dim("grid_w", min=1, max=1024)
        dynamic_shapes = {"pixel_values": {2: PATCH_SIZE * gh, 3: PATCH_SIZE * gw}}
    with _Patched(wrapper.num_prefix), torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    # Shape annotations of intermediate values carry the exporter's symbolic expressions;
    # tract unifies shapes better without them (and onnxruntime does not need them).
    del proto.graph.value_info[:]
    # Exporter bookkeeping (source stack traces, FX node names) only makes the file bigger.
    for node in iter_nodes(proto):
        del node.metadata_props[:]
        node.doc_string = ""
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.initializer]:
        del value.metadata_props[:]
        value.doc_string = ""
    # torch.export's signature and range constraints (the latter printed from a set, so the
    # bytes would change from run to run and with them the manifest's sha256).
    del proto.graph.metadata_props[:]
    if dynamic:
        _name_dynamic_dims(proto)
    return proto


def _name_dynamic_dims(proto: onnx.ModelProto) -> None:
    """Name the input dims ``height``/``width``; leave the patch-count dim of the outputs unset.

    torch names them ``16*grid_h`` and ``s52*s80`` (internal symbols unrelated to the input's),
    which a consumer that unifies declared output shapes with inferred ones (tract) cannot
    reconcile. An unset dim is "unknown" in ONNX and never conflicts.
    """
    inp = proto.graph.input[0].type.tensor_type.shape.dim
    for index, name in ((2, "height"), (3, "width")):
        inp[index].ClearField("dim_value")
        inp[index].dim_param = name
    for out in proto.graph.output:
        for dim in out.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.ClearField("dim_param")


def save_single_file(proto: onnx.ModelProto, out: Path) -> None:
    """Save with every initializer embedded (refuses models over 2 GB)."""
    size = proto.ByteSize()
    if size >= TWO_GIB:
        raise RuntimeError(f"the model is {size} bytes; a single-file ONNX must be under 2 GB")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(out), save_as_external_data=False)
    reloaded = onnx.load(str(out), load_external_data=False)
    for init in reloaded.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise RuntimeError(f"initializer {init.name} was saved as external data")


def weights_dir_for(out: Path) -> Path:
    """The checkpoint folder written beside ``out``: ``NAME.hf/``."""
    return out.with_suffix(".hf")


def write_weights_folder(out: Path, loaded: LoadedModel) -> tuple[str, str]:
    """Write the exported weights as a Hugging Face folder beside the ONNX (``NAME.hf/``:
    ``config.json``, ``model.safetensors``, ``preprocessor_config.json``), which the native
    engine reads. A ``--checkpoint`` folder's own ``config.json`` and ``model.safetensors`` are
    copied byte for byte, so the weights keep their identity (the sha256 of
    ``model.safetensors``) whether heads are trained on the ONNX or on the folder. Returns the
    folder's name and that sha256."""
    folder = weights_dir_for(out)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    src = Path(loaded.source["path"]) if loaded.source.get("path") else None
    if loaded.source["kind"] == "huggingface" and src is not None and (src / "model.safetensors").is_file():
        shutil.copyfile(src / "model.safetensors", folder / "model.safetensors")
        shutil.copyfile(src / "config.json", folder / "config.json")
    else:
        loaded.model.save_pretrained(str(folder), safe_serialization=True)
    if src is not None and (src / "preprocessor_config.json").is_file():
        shutil.copyfile(src / "preprocessor_config.json", folder / "preprocessor_config.json")
    else:
        (folder / "preprocessor_config.json").write_text(
            json.dumps({"image_mean": loaded.image_mean, "image_std": loaded.image_std}, indent=2) + "\n"
        )
    return folder.name, sha256_of(folder / "model.safetensors")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_onnxruntime(path: Path, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, {INPUT_NAME: pixel_values})
    return dict(zip(names, values))


def seeded_input(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, 3, height, width)).astype(np.float32)


def compare(
    path: Path, model: DINOv3ViTModel, layers: Sequence[int], pixel_values: np.ndarray, tol: float, label: str
) -> dict[str, np.ndarray]:
    """Run onnxruntime and PyTorch on one input, print max abs per output, fail above ``tol``."""
    ref = pytorch_reference(model, layers, pixel_values)
    got = run_onnxruntime(path, pixel_values)
    worst = 0.0
    for name in output_names(layers):
        if got[name].shape != ref[name].shape:
            raise RuntimeError(f"{label}: {name} shape {got[name].shape} != PyTorch {ref[name].shape}")
        err = float(np.max(np.abs(got[name] - ref[name])))
        worst = max(worst, err)
        print(f"  {label} {name:<14} shape {list(ref[name].shape)!s:<16} onnxruntime vs PyTorch max abs {err:.3e}")
    if not worst <= tol:
        raise RuntimeError(f"{label}: onnxruntime differs from PyTorch by {worst:.3e} > {tol:.1e}")
    return ref


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def parse_layers(text: str | None, num_layers: int) -> list[int]:
    if text is None or text.strip() == "":
        return []
    try:
        layers = [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise UsageError(f"--layers {text!r}: expected comma-separated block indices, e.g. 3,6,9") from None
    for i in layers:
        if not 1 <= i <= num_layers:
            raise UsageError(f"--layers: block index {i} is out of range 1..{num_layers} for this model")
    if len(set(layers)) != len(layers):
        raise UsageError(f"--layers {text!r}: duplicate block index")
    return sorted(layers)


def parse_reference(spec: str, height: int, width: int, dynamic: bool) -> tuple[Path, int, int]:
    m = re.fullmatch(r"(\d+)x(\d+):(.+)", spec)
    if m is None:
        return Path(spec), height, width
    h, w = int(m.group(1)), int(m.group(2))
    check_size(h, w, "--reference")
    if (h, w) != (height, width) and not dynamic:
        raise UsageError(f"--reference {spec}: a static export only runs at {height}x{width}; add --dynamic")
    return Path(m.group(3)), h, w


def check_size(height: int, width: int, what: str) -> None:
    for name, v in (("height", height), ("width", width)):
        if v <= 0 or v % PATCH_SIZE != 0:
            raise UsageError(f"{what}: {name} {v} is not a positive multiple of the patch size {PATCH_SIZE}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="export_backbone.py",
        description="Export a DINOv3 ViT backbone to ONNX (opset 18) with a JSON manifest.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
    )
    src = p.add_argument_group("weights (exactly one source)")
    src.add_argument("--checkpoint", type=Path, help="Hugging Face model folder or Meta .pth backbone file")
    src.add_argument("--random-init", action="store_true", help="seeded random weights (needs --variant)")
    src.add_argument("--variant", choices=sorted(VARIANTS), help="architecture (checked against --checkpoint)")
    src.add_argument("--seed", type=int, default=None, help="seed for --random-init (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output .onnx path; the manifest goes to <out>.json")
    p.add_argument("--height", type=int, default=224, help="input height in pixels, multiple of 16 (default 224)")
    p.add_argument("--width", type=int, default=224, help="input width in pixels, multiple of 16 (default 224)")
    p.add_argument("--dynamic", action="store_true", help="symbolic H and W (RoPE computed in the graph)")
    p.add_argument("--layers", default="", help="comma-separated 1-based block indices for layer_<i> outputs")
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="[HxW:]DIR",
        help="write input.npy and PyTorch outputs (*.npy) to DIR, at HxW (default: the export size)",
    )
    p.add_argument("--reference-seed", type=int, default=0, help="seed of the random reference input (default 0)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs onnxruntime vs PyTorch (default 1e-4)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check (not with --reference)")
    p.add_argument(
        "--quantize",
        choices=["int8-dynamic"],
        help="also write <out>_int8.onnx (+ .json): linear layers with per-channel s8 weights, "
        "activations quantised at run time (onnxruntime quantize_dynamic); runs on the onnxruntime backend",
    )
    p.add_argument(
        "--int8-tolerance",
        type=float,
        default=1e-2,
        help="largest 1 - mean patch cosine of the int8 model vs the float model (default 1e-2)",
    )
    return p


def write_int8(out: Path, manifest: dict[str, Any], height: int, width: int, seed: int, tolerance: float) -> int:
    """Write ``<out>_int8.onnx`` and its manifest (``quantization`` names the float model) and
    report its fidelity to the float model in onnxruntime on a seeded ``height x width`` input;
    1 if 1 - mean patch cosine exceeds ``tolerance``."""
    q_out = int8_path_for(out)
    quantize_int8_dynamic(out, q_out)
    q_manifest = dict(manifest)
    q_manifest["onnx_file"] = q_out.name
    q_manifest["onnx_sha256"] = sha256_of(q_out)
    q_manifest["quantization"] = {
        "method": "int8-dynamic",
        "float_onnx_file": out.name,
        "float_onnx_sha256": manifest["onnx_sha256"],
    }
    q_manifest["exporter"] = {**manifest["exporter"], "onnxruntime": onnxruntime.__version__}
    q_out.with_suffix(".json").write_text(json.dumps(q_manifest, indent=2, sort_keys=True) + "\n")
    reloaded = onnx.load(str(q_out))
    ops = sorted({n.op_type for n in reloaded.graph.node if "Integer" in n.op_type or "Quantize" in n.op_type})
    if not ops:
        print(f"error: {q_out} has no quantised operators", file=sys.stderr)
        return 1
    x = seeded_input(seed, height, width)
    ref = run_onnxruntime(out, x)
    got = run_onnxruntime(q_out, x)
    one_minus_cos, max_abs = fidelity(ref, got, "patch_tokens")
    print(
        f"  int8-dynamic {q_out} ({q_out.stat().st_size} bytes, {', '.join(ops)}): "
        f"patch_tokens 1-cos {one_minus_cos:.2e}, max abs {max_abs:.3e} vs the float model"
    )
    if not one_minus_cos <= tolerance:
        print(f"error: int8 model 1-cos {one_minus_cos:.2e} > tolerance {tolerance}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.suffix != ".onnx":
        raise UsageError(f"--out {out}: the file name must end in .onnx")
    check_size(args.height, args.width, "--height/--width")
    refs = [parse_reference(s, args.height, args.width, args.dynamic) for s in args.reference]

    loaded = load_model(args)
    model = loaded.model.eval().float()
    model.set_attn_implementation("eager")
    config = model.config
    layers = parse_layers(args.layers, config.num_hidden_layers)
    wrapper = BackboneWrapper(model, layers).eval()

    # The wrapper must equal transformers' own forward before it is exported.
    probe = seeded_input(args.reference_seed + 1, args.height, args.width)
    with torch.no_grad():
        mine = wrapper(torch.from_numpy(probe))
    theirs = pytorch_reference(model, layers, probe)
    for name, t in zip(output_names(layers), mine):
        err = float(np.max(np.abs(t.numpy() - theirs[name])))
        if err > 1e-5:
            raise RuntimeError(f"wrapper output {name} differs from DINOv3ViTModel by {err:.3e}")

    print(f"exporting {loaded.variant} ({'dynamic' if args.dynamic else f'{args.height}x{args.width}'}) to {out}")
    proto = export_onnx(wrapper, args.height, args.width, args.dynamic)
    problems = tensorrt_problems(proto, args.dynamic)
    if problems:
        print(f"error: the exported graph cannot run whole on TensorRT: {'; '.join(problems)}", file=sys.stderr)
        return 1
    if proto.opset_import and not any(o.domain in ("", "ai.onnx") and o.version == OPSET for o in proto.opset_import):
        print(f"error: the exported graph is not opset {OPSET}: {proto.opset_import}", file=sys.stderr)
        return 1
    save_single_file(proto, out)
    onnx.checker.check_model(str(out))
    reloaded = onnx.load(str(out))
    problems = tensorrt_problems(reloaded, args.dynamic)
    if problems:
        print(f"error: the saved graph: {'; '.join(problems)}", file=sys.stderr)
        return 1
    print(f"  {len(reloaded.graph.node)} nodes, no If, {out.stat().st_size} bytes")

    import onnxscript

    weights_dir, weights_sha256 = write_weights_folder(out, loaded)
    print(f"  checkpoint folder {out.parent / weights_dir} (model.safetensors sha256 {weights_sha256[:12]})")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "variant": loaded.variant,
        "patch_size": PATCH_SIZE,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "num_register_tokens": config.num_register_tokens,
        "input_name": INPUT_NAME,
        "input_height": None if args.dynamic else args.height,
        "input_width": None if args.dynamic else args.width,
        "dynamic": bool(args.dynamic),
        "layers": layers,
        "outputs": output_names(layers),
        "image_mean": loaded.image_mean,
        "image_std": loaded.image_std,
        "source": loaded.source,
        "onnx_file": out.name,
        "onnx_sha256": sha256_of(out),
        "opset": OPSET,
        "parameter_count": int(sum(p.numel() for p in model.parameters())),
        "weights_dir": weights_dir,
        "weights_sha256": weights_sha256,
        "exporter": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
        },
    }
    manifest_path = out.with_suffix(".json")
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"  manifest {manifest_path}")

    if args.quantize:
        status = write_int8(out, manifest, args.height, args.width, args.reference_seed, args.int8_tolerance)
        if status:
            return status

    if args.no_verify and not refs:
        return 0
    checks: list[tuple[int, int, Path | None]] = [(h, w, d) for d, h, w in refs]
    if not args.no_verify:
        sizes = {(h, w) for h, w, _ in checks}
        if (args.height, args.width) not in sizes:
            checks.append((args.height, args.width, None))
        if args.dynamic and len(sizes | {(args.height, args.width)}) < 2:
            checks.append((args.height + 2 * PATCH_SIZE, max(PATCH_SIZE, args.width - PATCH_SIZE), None))
    try:
        for h, w, directory in checks:
            x = seeded_input(args.reference_seed, h, w)
            ref = compare(out, model, layers, x, args.tolerance, f"{h}x{w}")
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
                np.save(directory / "input.npy", x)
                for name, value in ref.items():
                    np.save(directory / f"{name}.npy", value)
                print(f"  reference {directory}")
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
