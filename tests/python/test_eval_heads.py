"""models/eval_heads.py: perfect predictions score perfectly, known errors give known figures,
bad input exits 2 naming the file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models"))

import eval_heads  # noqa: E402


def make_dataset(d: Path) -> None:
    (d / "masks").mkdir(parents=True)
    (d / "depth").mkdir()
    (d / "classes" / "box").mkdir(parents=True)
    (d / "classes" / "ball").mkdir(parents=True)
    mask = np.zeros((8, 10), np.uint8)
    mask[2:6, 3:7] = 1
    Image.fromarray(mask).save(d / "masks" / "000001.png")
    depth = np.full((8, 10), 4.0, np.float32)
    depth[0, :] = 0.0  # no depth (sky)
    np.save(d / "depth" / "000001.npy", depth)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(d / "classes" / "box" / "000001.png")
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(d / "classes" / "ball" / "000002.png")
    coco = {
        "images": [{"id": 1, "file_name": "000001.png", "width": 10, "height": 8},
                   {"id": 2, "file_name": "000002.png", "width": 10, "height": 8}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [3, 2, 4, 4], "area": 16, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "box"}],
    }
    (d / "annotations.json").write_text(json.dumps(coco))


def test_perfect_and_known_errors(tmp_path: Path) -> None:
    data, pred = tmp_path / "data", tmp_path / "pred"
    make_dataset(data)
    (pred / "masks").mkdir(parents=True)
    (pred / "depth").mkdir()
    mask = np.asarray(Image.open(data / "masks" / "000001.png"))
    Image.fromarray(mask).save(pred / "masks" / "000001.png")
    np.save(pred / "depth" / "000001.npy", np.full((8, 10), 4.0, np.float32))
    (pred / "detections.json").write_text(json.dumps(
        [{"image_id": 1, "category_id": 1, "bbox": [3, 2, 4, 4], "score": 0.9}]))
    (pred / "classification.json").write_text(json.dumps({"000001": [["box", 0.9]], "000002": [["box", 0.6]]}))
    r = eval_heads.main(["--dataset", str(data), "--predictions", str(pred)])
    assert r["detection"]["mAP"] == pytest.approx(1.0)
    assert r["segmentation"]["mIoU"] == pytest.approx(1.0)
    assert r["depth"]["AbsRel"] == pytest.approx(0.0)
    assert r["classification"]["top1"] == pytest.approx(0.5)
    # Depth 5 m everywhere: AbsRel 0.25, RMSE 1, delta1 1 (5/4 = 1.25 is not < 1.25 -> 0).
    np.save(pred / "depth" / "000001.npy", np.full((8, 10), 5.0, np.float32))
    # Mask shifted by one column: class 1 IoU = 12 / 20.
    shifted = np.zeros_like(mask)
    shifted[2:6, 4:8] = 1
    Image.fromarray(shifted).save(pred / "masks" / "000001.png")
    r = eval_heads.main(["--dataset", str(data), "--predictions", str(pred)])
    assert r["depth"]["AbsRel"] == pytest.approx(0.25)
    assert r["depth"]["RMSE"] == pytest.approx(1.0)
    assert r["depth"]["delta1"] == pytest.approx(0.0)
    iou1 = 12 / 20
    iou0 = (80 - 20) / (80 - 16 + 4)
    assert r["segmentation"]["mIoU"] == pytest.approx((iou0 + iou1) / 2)


def test_bad_input_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, pred = tmp_path / "data", tmp_path / "pred"
    make_dataset(data)
    (pred / "masks").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(pred / "masks" / "000009.png")
    with pytest.raises(SystemExit) as e:
        eval_heads.main(["--dataset", str(data), "--predictions", str(pred)])
    assert e.value.code == 2
    assert "000009.png is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_heads.main(["--dataset", str(data), "--predictions", str(tmp_path / "nope")])
