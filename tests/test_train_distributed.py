"""`sst-edge train` under torchrun: 2 CPU processes on gloo, one subnet per step, episodes per rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sst_edge.space.config import load_space
from sst_edge.train.loop import episode_indices, subnet_for_step

HERE = Path(__file__).parent


def test_ranks_share_subnets_and_split_episodes() -> None:
    config = load_space("sst_tiny")
    restriction = {label: list(values) for label, values in config.choices().items()}
    assert subnet_for_step(config, 0, 7, restriction) == subnet_for_step(config, 0, 7, restriction)
    assert subnet_for_step(config, 0, 7, restriction) != subnet_for_step(config, 0, 8, restriction)
    restriction["s1_l1_heads"] = [12]
    assert all(subnet_for_step(config, 0, s, restriction)["s1_l1_heads"] == 12 for s in range(20))
    # 2 ranks x 6 episodes per epoch, one per step: step i takes 2i on rank 0 and 2i + 1 on rank 1
    assert episode_indices(1, 0, 2, 6) == [0, 2, 4, 6, 8, 10]
    assert episode_indices(1, 1, 2, 6) == [1, 3, 5, 7, 9, 11]
    assert episode_indices(2, 1, 2, 6) == [13, 15, 17, 19, 21, 23]
    # one process with 2 episodes per step takes, step by step, what the two ranks take together
    assert episode_indices(2, 0, 1, 12, 2) == [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]
    # 2 ranks x 2 per step: rank 1 takes episodes 2, 3 of each group of 4
    assert episode_indices(1, 1, 2, 4, 2) == [2, 3, 6, 7]


def test_torchrun_two_processes_on_gloo(synth_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(HERE / "ddp_train.py"),
           "train", "--space", "sst_tiny", "--data", str(synth_dataset), "--out", str(out),
           "--way", "3", "--query", "1", "--episodes", "4", "--epochs", "2", "--val-episodes", "4",
           "--warmup", "0", "--shrink-period", "1", "--drop-percent", "10", "--confidence", "0.9",
           "--min-count", "1", "--workers", "0", "--threads", "1", "--log-every", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("unsampled parameters without gradient") == 2
    assert proc.stdout.count("trained 2 epochs (8 steps)") == 1  # rank 0 reports, rank 1 does not
    record = json.loads((out / "run.json").read_text())
    assert record["world_size"] == 2 and record["status"] == "finished"
    assert record["result"]["in_sync"] is True  # every rank ends with the same weights
    assert record["result"]["steps"] == 8 and len(record["result"]["val_acc"]) == 2
    history = json.loads((out / "restriction.json").read_text())["history"]
    assert len(history) == 2 and len(history[0]["candidates"]) == 45  # 4 steps: too few to drop
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "step"] == [2, 4, 6, 8]  # written once, by rank 0
