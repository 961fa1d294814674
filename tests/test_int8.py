"""INT8 recipe settings in targets, and the paired accuracy change that decides whether a recipe ships."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sst_edge.device.evaluation import paired_change
from sst_edge.device.targets import load_target
from sst_edge.errors import SSTEdgeError

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_int8_recipe_is_the_chosen_one() -> None:
    t = load_target("cpu-int8")
    assert t.attention == "fused"
    assert t.quantization is not None and t.quantization.reduce_range and t.quantization.mode == "dynamic"
    assert load_target("cpu-fp32").attention == "standard"


def test_standard_attention_keeps_older_target_hashes() -> None:
    """The hash recorded in a table made before targets had an `attention` key (an independent record)."""
    table = json.loads((ROOT / "latency_tables" / "sst_tiny.cpu-fp32.json").read_text())
    assert load_target("cpu-fp32").hash == table["target"]["hash"]


def test_attention_setting_is_checked(tmp_path: Path) -> None:
    trt = (ROOT / "export" / "jetson-trt-fp16.yaml").read_text()
    bad = tmp_path / "trt-fused.yaml"
    bad.write_text(trt + "\nattention: fused\n")
    with pytest.raises(SSTEdgeError, match="TensorRT and torch targets need 'standard'") as e:
        load_target(bad)
    assert str(bad) in str(e.value)
    odd = tmp_path / "odd.yaml"
    odd.write_text((ROOT / "export" / "cpu-fp32.yaml").read_text() + "\nattention: flash\n")
    with pytest.raises(SSTEdgeError, match=r"expected one of \['standard', 'fused'\], got 'flash'"):
        load_target(odd)
    fused = tmp_path / "fp32-fused.yaml"
    fused.write_text((ROOT / "export" / "cpu-fp32.yaml").read_text() + "\nattention: fused\n")
    assert load_target(fused).hash != load_target("cpu-fp32").hash


def test_paired_change_by_hand() -> None:
    # differences in points: 0, +100, 0, -100 -> mean 0, sd (ddof 1) sqrt(20000 / 3) = 81.65,
    # half-width 1.96 * 81.65 / 2 = 80.02
    c = paired_change(np.array([1, 0, 1, 1.0]), np.array([1, 1, 1, 0.0]))
    assert c["change_points"] == 0 and c["ci95_points"] == pytest.approx(80.02, abs=0.01)
    assert not c["significant"] and not c["within_margin"]
    # +20 points on every episode: no spread, so significant and within any margin below
    c = paired_change(np.zeros(5), np.full(5, 0.2))
    assert c["change_points"] == pytest.approx(20) and c["ci95_points"] == 0
    assert c["significant"] and c["within_margin"] and c["episodes"] == 5
    # -0.5 points on average with a small spread: not worse than 1 point at 95%
    before = np.ones(400)
    after = np.ones(400)
    after[:2] = 0.0  # two episodes lost: mean -0.5 points, sd 7.06, half-width 0.69
    c = paired_change(before, after)
    assert c["change_points"] == -0.5 and c["ci95_points"] == pytest.approx(0.692, abs=0.001)
    assert c["significant"] is False and c["within_margin"] is False
    with pytest.raises(SSTEdgeError, match="equal-length"):
        paired_change(np.ones(3), np.ones(4))
