"""Tests of models/export_backbone.py and the committed backbone fixtures.

Run: .venv/bin/python -m pytest tests/python -q
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
EXPORTER = REPO / "models" / "export_backbone.py"
sys.path.insert(0, str(REPO / "models"))

import export_backbone as eb  # noqa: E402

TINY = FIXTURES / "tiny" / "dinov3_tiny.onnx"
TINY_DYN = FIXTURES / "tiny_dynamic" / "dinov3_tiny_dynamic.onnx"
OUTPUTS = ["cls", "registers", "patch_tokens", "layer_1", "layer_2"]
C = 64

MANIFEST_KEYS = {
    "format", "format_version", "variant", "patch_size", "hidden_size", "num_layers", "num_heads",
    "num_register_tokens", "input_name", "input_height", "input_width", "dynamic", "layers", "outputs",
    "image_mean", "image_std", "source", "onnx_file", "onnx_sha256", "opset", "parameter_count", "exporter",
    "weights_dir", "weights_sha256",
}


def run_ort(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"pixel_values": x})))


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("path", [TINY, TINY_DYN], ids=["static", "dynamic"])
def test_fixture_graph(path: Path) -> None:
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert eb.count_if_nodes(model) == 0
    assert [(o.domain, o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")] == [("", 18)]
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    assert len(model.graph.value_info) == 0
    assert [i.name for i in model.graph.input] == ["pixel_values"]
    assert [o.name for o in model.graph.output] == OUTPUTS


def test_fixture_shapes_static() -> None:
    model = onnx.load(str(TINY))
    assert dims(model.graph.input[0]) == [1, 3, 64, 96]
    shapes = {o.name: dims(o) for o in model.graph.output}
    n = (64 // 16) * (96 // 16)
    assert shapes == {
        "cls": [1, C], "registers": [1, 4, C], "patch_tokens": [1, n, C], "layer_1": [1, n, C], "layer_2": [1, n, C],
    }


def test_fixture_shapes_dynamic() -> None:
    model = onnx.load(str(TINY_DYN))
    assert dims(model.graph.input[0]) == [1, 3, "height", "width"]
    shapes = {o.name: dims(o) for o in model.graph.output}
    assert shapes["cls"] == [1, C] and shapes["registers"] == [1, 4, C]
    for name in ("patch_tokens", "layer_1", "layer_2"):
        assert shapes[name] == [1, 0, C]  # patch count left unset (unknown)
        assert not model.graph.output[OUTPUTS.index(name)].type.tensor_type.shape.dim[1].HasField("dim_value")


@pytest.mark.parametrize(
    "onnx_path, ref_dir",
    [
        (TINY, FIXTURES / "tiny" / "reference"),
        (TINY_DYN, FIXTURES / "tiny_dynamic" / "reference_64x96"),
        (TINY_DYN, FIXTURES / "tiny_dynamic" / "reference_80x48"),
    ],
    ids=["static-64x96", "dynamic-64x96", "dynamic-80x48"],
)
def test_onnxruntime_matches_committed_reference(onnx_path: Path, ref_dir: Path) -> None:
    x = np.load(ref_dir / "input.npy")
    assert x.dtype == np.float32 and x.shape[:2] == (1, 3)
    got = run_ort(onnx_path, x)
    n = (x.shape[2] // 16) * (x.shape[3] // 16)
    expected_shapes = {"cls": (1, C), "registers": (1, 4, C)} | {k: (1, n, C) for k in OUTPUTS[2:]}
    for name in OUTPUTS:
        ref = np.load(ref_dir / f"{name}.npy")
        assert ref.dtype == np.float32 and ref.shape == expected_shapes[name] == got[name].shape
        assert float(np.max(np.abs(got[name] - ref))) <= 1e-5, name
        assert float(np.std(ref)) > 0.1, f"{name} is near-constant: the fixture would not catch much"


def test_references_exercise_every_block() -> None:
    ref = FIXTURES / "tiny" / "reference"
    assert np.max(np.abs(np.load(ref / "layer_1.npy") - np.load(ref / "layer_2.npy"))) > 0.1
    # the last block's normed output is the final patch_tokens
    np.testing.assert_array_equal(np.load(ref / "layer_2.npy"), np.load(ref / "patch_tokens.npy"))


@pytest.mark.parametrize("path", [TINY, TINY_DYN], ids=["static", "dynamic"])
def test_manifest(path: Path) -> None:
    manifest_path = path.with_suffix(".json")
    text = manifest_path.read_text()
    m = json.loads(text)
    # The dynamic fixture predates checkpoint folders: the native engine reads the static
    # fixture's folder (the same weights) at any size.
    assert set(m) == (MANIFEST_KEYS if path == TINY else MANIFEST_KEYS - {"weights_dir", "weights_sha256"})
    assert text == json.dumps(m, indent=2, sort_keys=True) + "\n"
    assert m["onnx_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m["onnx_file"] == path.name
    dynamic = path == TINY_DYN
    assert m["format"] == "dinov3_perception/backbone" and m["format_version"] == 1
    assert (m["variant"], m["patch_size"], m["hidden_size"], m["num_layers"], m["num_heads"]) == ("tiny", 16, 64, 2, 4)
    assert m["num_register_tokens"] == 4 and m["input_name"] == "pixel_values" and m["opset"] == 18
    assert m["dynamic"] is dynamic
    assert (m["input_height"], m["input_width"]) == ((None, None) if dynamic else (64, 96))
    assert m["layers"] == [1, 2] and m["outputs"] == OUTPUTS
    assert m["image_mean"] == [0.485, 0.456, 0.406] and m["image_std"] == [0.229, 0.224, 0.225]
    assert m["source"] == {"kind": "random-init", "path": None, "seed": 0}
    assert m["parameter_count"] == sum(p.numel() for p in _random_tiny_model(0).parameters())
    assert set(m["exporter"]) == {"python", "torch", "transformers", "onnx", "onnxscript"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXPORTER), *args], capture_output=True, text=True, timeout=300)


def test_bad_height_is_refused_with_exit_code_2(tmp_path: Path) -> None:
    r = _cli("--random-init", "--variant", "tiny", "--height", "70", "--out", str(tmp_path / "m.onnx"))
    assert r.returncode == 2, r.stderr
    assert "height 70" in r.stderr and "multiple" in r.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_bad_layer_index_is_refused_with_exit_code_2(tmp_path: Path) -> None:
    code = eb.main(["--random-init", "--variant", "tiny", "--layers", "0,3", "--out", str(tmp_path / "m.onnx")])
    assert code == 2
    assert not (tmp_path / "m.onnx").exists()


def _export(tmp_path: Path, name: str, *source: str) -> tuple[Path, Path]:
    out = tmp_path / f"{name}.onnx"
    ref = tmp_path / f"{name}_ref"
    code = eb.main([*source, "--height", "48", "--width", "32", "--layers", "1", "--out", str(out), "--reference", str(ref)])
    assert code == 0
    return out, ref


def test_fresh_export_round_trips(tmp_path: Path) -> None:
    out, ref = _export(tmp_path, "seed7", "--random-init", "--variant", "tiny", "--seed", "7")
    m = json.loads(out.with_suffix(".json").read_text())
    assert m["source"] == {"kind": "random-init", "path": None, "seed": 7}
    assert m["outputs"] == ["cls", "registers", "patch_tokens", "layer_1"]
    got = run_ort(out, np.load(ref / "input.npy"))
    for name in m["outputs"]:
        expected = np.load(ref / f"{name}.npy")
        assert float(np.max(np.abs(got[name] - expected))) <= 1e-5
    # a different seed gives different weights than the committed fixture
    fixture = run_ort(TINY_DYN, np.load(ref / "input.npy"))
    assert float(np.max(np.abs(fixture["cls"] - got["cls"]))) > 1e-2


def _random_tiny_model(seed: int) -> "eb.DINOv3ViTModel":
    torch.manual_seed(seed)
    model = eb.DINOv3ViTModel(eb.make_config(eb.VARIANTS["tiny"]))
    eb.randomize_weights(model, seed)
    return model.eval()


def test_export_from_huggingface_folder(tmp_path: Path) -> None:
    model = _random_tiny_model(3)
    hf_dir = tmp_path / "hf"
    model.save_pretrained(str(hf_dir))
    assert (hf_dir / "config.json").is_file() and (hf_dir / "model.safetensors").is_file()
    out_hf, ref_hf = _export(tmp_path, "hf", "--checkpoint", str(hf_dir))
    out_rand, _ = _export(tmp_path, "rand", "--random-init", "--variant", "tiny", "--seed", "3")
    m = json.loads(out_hf.with_suffix(".json").read_text())
    assert m["source"] == {"kind": "huggingface", "path": str(hf_dir), "seed": None}
    assert m["variant"] == "tiny"
    x = np.load(ref_hf / "input.npy")
    a, b = run_ort(out_hf, x), run_ort(out_rand, x)
    for name in m["outputs"]:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6)
        np.testing.assert_allclose(a[name], np.load(ref_hf / f"{name}.npy"), rtol=0, atol=1e-5)


def test_export_writes_the_weights_as_a_checkpoint_folder(tmp_path: Path) -> None:
    """Beside every ONNX: NAME.hf/ (config.json + model.safetensors) with the same weights,
    which transformers loads back to PyTorch's reference numbers, and its sha256 in the
    manifest as the weights' identity."""
    m = json.loads(TINY.with_suffix(".json").read_text())
    folder = TINY.parent / m["weights_dir"]
    assert folder.name == "dinov3_tiny.hf"
    assert m["weights_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    model = eb.DINOv3ViTModel.from_pretrained(str(folder), local_files_only=True).eval()
    model.set_attn_implementation("eager")
    ref = FIXTURES / "tiny" / "reference"
    got = eb.pytorch_reference(model, [1, 2], np.load(ref / "input.npy"))
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], np.load(ref / f"{name}.npy"), rtol=0, atol=1e-5)
    assert json.loads((folder / "preprocessor_config.json").read_text())["image_std"] == m["image_std"]
    # The quantised model keeps the float weights' identity (its heads are the float model's).
    q = json.loads(TINY_INT8.with_suffix(".json").read_text())
    assert q["weights_sha256"] == m["weights_sha256"]


def test_export_from_a_checkpoint_folder_keeps_its_identity(tmp_path: Path) -> None:
    """Exporting a downloaded folder copies its model.safetensors byte for byte, so heads
    trained on the ONNX also match the folder itself (the native engine's input)."""
    folder = FIXTURES / "tiny" / "dinov3_tiny.hf"
    out = tmp_path / "again.onnx"
    r = _cli("--checkpoint", str(folder), "--height", "32", "--width", "32", "--out", str(out), "--no-verify")
    assert r.returncode == 0, r.stderr
    m = json.loads(out.with_suffix(".json").read_text())
    assert m["weights_dir"] == "again.hf"
    assert m["weights_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert (out.with_suffix(".hf") / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


def hf_to_meta_state_dict(model: "eb.DINOv3ViTModel", key_bias_noise: bool = True) -> dict[str, torch.Tensor]:
    """Inverse of the conversion: what Meta's original checkpoint would hold for this model."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cfg = model.config
    c = cfg.hidden_size
    head_dim = c // cfg.num_attention_heads
    meta: dict[str, torch.Tensor] = {
        "cls_token": sd.pop("embeddings.cls_token"),
        "mask_token": sd.pop("embeddings.mask_token").reshape(1, c),
        "storage_tokens": sd.pop("embeddings.register_tokens"),
        "patch_embed.proj.weight": sd.pop("embeddings.patch_embeddings.weight"),
        "patch_embed.proj.bias": sd.pop("embeddings.patch_embeddings.bias"),
        "norm.weight": sd.pop("norm.weight"),
        "norm.bias": sd.pop("norm.bias"),
        # stored periods (bf16 in the real checkpoints)
        "rope_embed.periods": (
            100.0 ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))
        ).to(torch.bfloat16),
    }
    for i in range(cfg.num_hidden_layers):
        p = f"model.layer.{i}."
        b = f"blocks.{i}."
        q_w, k_w, v_w = (sd.pop(p + f"attention.{n}_proj.weight") for n in "qkv")
        meta[b + "attn.qkv.weight"] = torch.cat([q_w, k_w, v_w])
        q_b, v_b = sd.pop(p + "attention.q_proj.bias"), sd.pop(p + "attention.v_proj.bias")
        # real checkpoints store a (masked-out) key bias
        k_b = torch.randn(c) if key_bias_noise else torch.zeros(c)
        meta[b + "attn.qkv.bias"] = torch.cat([q_b, k_b, v_b])
        meta[b + "attn.qkv.bias_mask"] = torch.cat([torch.ones(c), torch.zeros(c), torch.ones(c)])
        meta[b + "attn.proj.weight"] = sd.pop(p + "attention.o_proj.weight")
        meta[b + "attn.proj.bias"] = sd.pop(p + "attention.o_proj.bias")
        for n in ("1", "2"):
            meta[b + f"ls{n}.gamma"] = sd.pop(p + f"layer_scale{n}.lambda1")
            meta[b + f"norm{n}.weight"] = sd.pop(p + f"norm{n}.weight")
            meta[b + f"norm{n}.bias"] = sd.pop(p + f"norm{n}.bias")
        if cfg.use_gated_mlp:
            for meta_name, hf_name in (("w1", "gate_proj"), ("w2", "up_proj"), ("w3", "down_proj")):
                for t in ("weight", "bias"):
                    meta[b + f"mlp.{meta_name}.{t}"] = sd.pop(p + f"mlp.{hf_name}.{t}")
        else:
            for meta_name, hf_name in (("fc1", "up_proj"), ("fc2", "down_proj")):
                for t in ("weight", "bias"):
                    meta[b + f"mlp.{meta_name}.{t}"] = sd.pop(p + f"mlp.{hf_name}.{t}")
    assert not sd, f"unmapped HF keys: {sorted(sd)}"
    return meta


def test_export_from_meta_pth_equals_huggingface(tmp_path: Path) -> None:
    model = _random_tiny_model(5)
    hf_dir = tmp_path / "hf"
    model.save_pretrained(str(hf_dir))
    pth = tmp_path / "dinov3_tiny_fake.pth"
    torch.save(hf_to_meta_state_dict(model), pth)
    out_pth, ref_pth = _export(tmp_path, "pth", "--checkpoint", str(pth))
    out_hf, _ = _export(tmp_path, "hf", "--checkpoint", str(hf_dir))
    m = json.loads(out_pth.with_suffix(".json").read_text())
    assert m["source"] == {"kind": "meta-pth", "path": str(pth), "seed": None} and m["variant"] == "tiny"
    x = np.load(ref_pth / "input.npy")
    a, b = run_ort(out_pth, x), run_ort(out_hf, x)
    for name in m["outputs"]:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6)


def test_meta_conversion_of_gated_mlp() -> None:
    """SwiGLU (ViT-S+/H+) key mapping: w1 -> gate, w2 -> up, w3 -> down; exact forward equality."""
    cfg = eb.make_config(eb.Variant(64, 2, 4, 128, True, "silu"))
    torch.manual_seed(0)
    src = eb.DINOv3ViTModel(cfg).eval()
    eb.randomize_weights(src, 11)
    converted = eb.convert_meta_state_dict(hf_to_meta_state_dict(src), cfg)
    dst = eb.DINOv3ViTModel(cfg).eval()
    missing, unexpected = dst.load_state_dict(converted, strict=False)
    assert not missing and not unexpected
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(dst(x).last_hidden_state, src(x).last_hidden_state, rtol=0, atol=0)


def test_key_mapping_matches_known_variant_inference() -> None:
    model = _random_tiny_model(1)
    assert eb.infer_meta_variant(hf_to_meta_state_dict(model)) == "tiny"


def test_unmasked_key_bias_is_refused() -> None:
    model = _random_tiny_model(2)
    meta = hf_to_meta_state_dict(model)
    meta["blocks.0.attn.qkv.bias_mask"] = torch.ones_like(meta["blocks.0.attn.qkv.bias_mask"])
    with pytest.raises(eb.UsageError, match="key bias"):
        eb.convert_meta_state_dict(meta, model.config)


# ---------------------------------------------------------------------------------------------
# What TensorRT needs (issue #12), and the int8-dynamic model.

TINY_INT8 = FIXTURES / "tiny" / "dinov3_tiny_int8.onnx"


def test_committed_fixtures_are_tensorrt_ready() -> None:
    assert eb.tensorrt_problems(onnx.load(str(TINY)), dynamic=False) == []
    assert eb.tensorrt_problems(onnx.load(str(TINY_DYN)), dynamic=True) == []


def test_tensorrt_problems_name_if_nodes_old_opsets_and_symbolic_dims() -> None:
    m = onnx.load(str(TINY))
    # A symbolic batch dimension in a fixed-size export.
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    # An If node and opset 16.
    then_g = onnx.helper.make_graph([], "t", [], [onnx.helper.make_tensor_value_info("o", onnx.TensorProto.FLOAT, [1])])
    m.graph.node.append(onnx.helper.make_node("If", ["c"], ["o"], then_branch=then_g, else_branch=then_g))
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 16
    problems = eb.tensorrt_problems(m, dynamic=False)
    text = "; ".join(problems)
    assert len(problems) == 3, text
    assert "1 If node" in text and "below 17" in text and "pixel_values has a non-static shape ['batch'" in text
    # The same dims are fine in a dynamic export.
    assert len(eb.tensorrt_problems(m, dynamic=True)) == 2


def test_int8_fixture_manifest_names_its_float_model() -> None:
    m = json.loads(TINY_INT8.with_suffix(".json").read_text())
    f = json.loads(TINY.with_suffix(".json").read_text())
    assert m["onnx_file"] == TINY_INT8.name
    assert m["onnx_sha256"] == hashlib.sha256(TINY_INT8.read_bytes()).hexdigest()
    assert m["quantization"] == {
        "method": "int8-dynamic",
        "float_onnx_file": TINY.name,
        "float_onnx_sha256": f["onnx_sha256"],
    }
    assert {k: v for k, v in m.items() if k not in ("onnx_file", "onnx_sha256", "quantization", "exporter")} == {
        k: v for k, v in f.items() if k not in ("onnx_file", "onnx_sha256", "exporter")
    }
    ops = {n.op_type for n in onnx.load(str(TINY_INT8)).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    # Attention (activation x activation) stays float.
    assert "MatMul" in ops


def test_int8_model_is_close_to_pytorch_but_not_equal() -> None:
    ref = FIXTURES / "tiny" / "reference"
    got = run_ort(TINY_INT8, np.load(ref / "input.npy"))
    torch_out = {"patch_tokens": np.load(ref / "patch_tokens.npy")}
    one_minus_cos, max_abs = eb.fidelity(torch_out, got, "patch_tokens")
    # Same bound as the Rust side's INT8_MAX_ONE_MINUS_COSINE: onnxruntime's int8 kernels differ
    # by CPU (4.2e-5 with AVX-512 VNNI, 1.18e-3 on an AVX2-only AMD EPYC).
    assert one_minus_cos <= 2e-3, one_minus_cos
    assert max_abs > 1e-4, "quantised: not bit-equal to the float model"


def test_quantize_backbone_cli_writes_the_same_model_and_refuses_bad_input(tmp_path: Path) -> None:
    import shutil

    shutil.copy(TINY, tmp_path / TINY.name)
    shutil.copy(TINY.with_suffix(".json"), tmp_path / TINY.with_suffix(".json").name)
    script = REPO / "models" / "quantize_backbone.py"
    r = subprocess.run([sys.executable, str(script), "--model", str(tmp_path / TINY.name)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1-cos" in r.stdout
    out = tmp_path / TINY_INT8.name
    # Deterministic: the committed fixture is what the script writes.
    assert out.read_bytes() == TINY_INT8.read_bytes()
    # Quantising a quantised model, or a model whose bytes do not match its manifest: exit 2.
    r = subprocess.run([sys.executable, str(script), "--model", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "already quantised" in r.stderr
    (tmp_path / TINY.name).write_bytes(b"not onnx")
    r = subprocess.run([sys.executable, str(script), "--model", str(tmp_path / TINY.name)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "sha256" in r.stderr
