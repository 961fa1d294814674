"""Shrinking on latency: an injected cost function through the library, a latency table through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sst_edge.cli import main
from sst_edge.cost.latency import load_table_for
from sst_edge.resources import resolve
from sst_edge.space.config import load_space
from sst_edge.train.config import ShrinkConfig, TrainConfig
from sst_edge.train.loop import train_supernet

TINY = dict(way=3, shot=1, query=1, episodes=8, epochs=1, val_episodes=0, lr_warmup=4, workers=0, threads=1,
            log_every=4)


def test_an_injected_cost_decides_what_goes(synth_dataset: Path, tmp_path: Path) -> None:
    """A cost that makes 16 heads in s1_l1 ten times dearer than anything else: lambda=5 drops exactly it
    (24 steps: enough for the test to see beyond the loss noise of a barely trained supernet)."""
    calls = []

    def slow_heads(sample: dict) -> float:
        calls.append(sample)
        return 10.0 if sample["s1_l1_heads"] == 16 else 1.0

    cfg = TrainConfig(space="sst_tiny", data=str(synth_dataset), **{**TINY, "episodes": 24},
                      shrink=ShrinkConfig(warmup=0, period=1, drop_percent=2, lam=5.0, min_count=1))
    result = train_supernet(cfg, tmp_path / "run", cost_fn=slow_heads, cost_unit="ms", progress=False)
    assert calls and result.dropped == ["s1_l1_heads=16@1"]
    (event,) = json.loads((tmp_path / "run" / "restriction.json").read_text())["history"]
    # its block's exact cost: 9 ms over the label's cheapest; the mean subnet costs 1 + 9/3 = 4 ms
    assert event["cost_unit"] == "ms" and event["dropped"][0]["cost"] == 9.0
    assert event["mean_subnet_cost"] == 4.0 and event["dropped"][0]["cost_term"] == 5.0 * 9.0 / 4.0


def event_keep(event: dict) -> dict[str, list]:
    keep: dict[str, list] = {}
    for c in event["candidates"]:
        keep.setdefault(c["label"], []).append(c["value"])
    return keep


def test_latency_table_from_the_command_line(synth_dataset: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """The shipped sst_tiny.cpu-fp32 table, timed on another CPU (no matter) with 4 threads where its target
    runs 1 (foreign to its target): refused, naming only the threads, then used with --allow-foreign-table."""
    doc = json.loads(resolve("table", "sst_tiny.cpu-fp32").read_text())
    doc["fingerprint"]["cpu_model"] = "ARMv8 Processor rev 1 (v8l)"
    doc["fingerprint"]["threads"] = 4
    table = tmp_path / "foreign.json"
    table.write_text(json.dumps(doc))
    out = tmp_path / "run"
    args = ["train", "--space", "sst_tiny", "--data", str(synth_dataset), "--out", str(out), "--no-progress",
            "--latency-table", str(table), "--warmup", "0", "--shrink-period", "1",
            "--min-count", "1", "--lambda", "2"]
    for k, v in TINY.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(table) in err and "threads: table has 4, expected 1" in err and "cpu_model" not in err
    assert "--allow-foreign-table" in err and not (out / "restriction.json").exists()
    with pytest.warns(UserWarning, match="foreign latency table"):
        assert main([*args, "--allow-foreign-table"]) == 0
    (event,) = json.loads((out / "restriction.json").read_text())["history"]
    assert event["cost_unit"] == "ms"
    with pytest.warns(UserWarning, match="foreign latency table"):
        predicted = load_table_for(table, load_space("sst_tiny"), allow_foreign=True)
    extremes = [predicted.predict_ms({k: v[i] for k, v in event_keep(event).items()}) for i in (0, -1)]
    assert min(extremes) < event["mean_subnet_cost"] < max(extremes)  # table ms, not FLOPs
    scale = predicted.correction.scale if predicted.correction else 1.0
    for c in event["candidates"]:  # each candidate's exact cost: its own table entries
        s, layer = int(c["label"][1]), c["label"].rsplit("_", 1)[0]
        if c["kind"] == "heads":
            mine = {h: sum(predicted.block_ms(s, o, h) for o in ("tab", "sab")) / 2 for h in (6, 12, 16)}
        else:
            mine = {o: sum(predicted.block_ms(s, o, h) for h in (6, 12, 16)) / 3 for o in ("tab", "sab")}
        assert c["cost"] == pytest.approx(scale * (mine[c["value"]] - min(mine.values())), abs=1e-9), layer
        assert c["cost_term"] == pytest.approx(2 * c["cost"] / event["mean_subnet_cost"])
    assert json.loads((out / "run.json").read_text())["cost_unit"] == "ms"
