"""Checkpoints: a run killed with SIGKILL and resumed ends bit-exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sst_edge.cli import main
from sst_edge.train.checkpoint import checkpoint_paths

PY = [sys.executable, "-m", "sst_edge.cli"]


def tiny_args(data: Path, out: Path, **override: str) -> list[str]:
    """3 epochs x 6 steps, shrinking at the end of epoch 2 from records that span the kill (warm-up 0)."""
    opts = {"--way": "3", "--shot": "1", "--query": "1", "--episodes": "6", "--epochs": "3",
            "--val-episodes": "3", "--warmup": "0", "--shrink-period": "2", "--drop-percent": "20",
            "--confidence": "0.9", "--min-count": "1", "--lr-warmup": "4", "--workers": "1", "--threads": "1",
            "--log-every": "2", **override}
    return ["train", "--space", "sst_tiny", "--data", str(data), "--out", str(out), "--no-progress",
            *[x for kv in opts.items() for x in kv]]


def run(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(PY + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def without_times(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_kill_9_then_resume_equals_an_uninterrupted_run(synth_dataset: Path, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = run(tiny_args(synth_dataset, whole))  # runs beside the one we kill: same threads, same bits
    victim = run(tiny_args(synth_dataset, killed))
    first = checkpoint_paths(killed, 1)[1]
    deadline = time.monotonic() + 120
    while not first.exists():
        assert victim.poll() is None, victim.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    os.killpg(victim.pid, signal.SIGKILL)  # the trainer and its loader worker
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not checkpoint_paths(killed, 3)[1].exists(), "killed too late to test anything"
    assert not (killed / "supernet.safetensors").exists()

    resumed = run(tiny_args(synth_dataset, killed) + ["--resume"])
    out_resumed = resumed.communicate(timeout=300)[0]
    out_whole = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0, out_whole
    assert resumed.returncode == 0, out_resumed
    assert "resuming" in out_resumed

    a, b = (load_file(str(checkpoint_paths(d, 3)[0])) for d in (whole, killed))
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a) and "rng.torch" in a
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == [], f"tensors differ after resumption: {different[:5]}"
    side_a, side_b = (json.loads(checkpoint_paths(d, 3)[1].read_text()) for d in (whole, killed))
    assert side_a == side_b  # epoch, step, sampler, shrink records and restriction, RNG, optimizer, sha256
    assert side_a["shrink"]["restriction"]["history"], "the run was meant to shrink once"
    assert (whole / "supernet.safetensors").read_bytes() == (killed / "supernet.safetensors").read_bytes()
    assert (whole / "restriction.json").read_text() == (killed / "restriction.json").read_text()
    assert without_times(whole / "metrics.jsonl") == without_times(killed / "metrics.jsonl")
    record = json.loads((killed / "run.json").read_text())
    assert record["status"] == "finished" and len(record["resumed"]) == 1
    assert sorted(p.name for p in killed.glob("checkpoint-*.json")) == ["checkpoint-e0002.json",
                                                                        "checkpoint-e0003.json"]


def test_refuses_to_overwrite_to_resume_nothing_or_to_resume_otherwise(synth_dataset: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(synth_dataset, out) + ["--resume"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert main(tiny_args(synth_dataset, out, **{"--epochs": "1", "--val-episodes": "0"})) == 0
    capsys.readouterr()
    assert main(tiny_args(synth_dataset, out, **{"--epochs": "1", "--val-episodes": "0"})) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(tiny_args(synth_dataset, out, **{"--epochs": "1", "--val-episodes": "0", "--lr": "0.1"})
                + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "lr: 0.001 in the checkpoint, 0.1 now" in err
