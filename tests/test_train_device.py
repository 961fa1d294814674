"""The host half on any torch device (issue 26), proven without a GPU: named errors for devices this
machine lacks, precision chosen per host (native and foreign bf16 hardware both simulated), no tensor made
without a device (the model on the CPU while torch's default device is `meta`), gradient accumulation and
resumption across --device / --precision settings bit-exact, and `--dry-run`."""

from __future__ import annotations

import functools
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from sst_edge import fewshot
from sst_edge.cli import main
from sst_edge.errors import SSTEdgeError
from sst_edge.train import device as devmod
from sst_edge.train import loop
from sst_edge.train.checkpoint import checkpoint_paths
from sst_edge.train.config import ShrinkConfig, TrainConfig
from sst_edge.train.device import resolve_device, resolve_precision

CPU = torch.device("cpu")


def tiny(data: Path, **kw) -> TrainConfig:
    base = dict(space="sst_tiny", data=str(data), way=3, query=1, episodes=4, epochs=2, val_episodes=3,
                lr_warmup=2, workers=0, threads=1, device="cpu", precision="fp32", log_every=2,
                shrink=ShrinkConfig(warmup=0, period=1, min_count=1, confidence=0.9))
    return TrainConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------------- devices
def test_cuda_on_a_machine_without_it_is_a_named_error(monkeypatch, synth_dataset, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine, or simulated elsewhere
    assert resolve_device("auto") == CPU and resolve_device("cpu") == CPU
    for spec in ("cuda", "cuda:0", "CUDA:1"):
        with pytest.raises(SSTEdgeError, match="--device (cuda|CUDA).*(CPU-only build|cannot see a CUDA)"):
            resolve_device(spec)
    with pytest.raises(SSTEdgeError, match="unknown device 'gpu': expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    code = main(["train", "--space", "sst_tiny", "--data", str(synth_dataset), "--out", str(tmp_path / "r"),
                 "--device", "cuda", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--device cuda" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_cuda_indices_per_rank(monkeypatch):
    """With CUDA present (simulated: only the count is asked, no tensor is made): `cuda` is this rank's GPU
    under torchrun, a fixed index under torchrun is refused, and a GPU that is not there is named."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda", world=2) == torch.device("cuda", 1)
    assert resolve_device("auto", world=2) == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(SSTEdgeError, match="all 2 ranks on one GPU"):
        resolve_device("cuda:0", world=2)
    with pytest.raises(SSTEdgeError, match="cuda:3 does not exist \\(torch sees 2 CUDA devices\\)"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_follows_the_hardware(monkeypatch, native):
    """auto: bf16 only where the CPU multiplies bf16 natively (AMX / AVX512-BF16), both cases simulated
    whatever this host is; an explicit choice is kept; anything else is named."""
    monkeypatch.setattr(devmod, "native_bf16_cpu", lambda: native)
    p = resolve_precision("auto", CPU)
    assert (p.name, p.requested) == ("bf16" if native else "fp32", "auto")
    assert ("natively" in p.why) if native else ("no native bf16" in p.why)
    assert resolve_precision("fp16", CPU).name == "fp16" and resolve_precision("fp16", CPU).why == "given"
    assert resolve_precision("bf16", CPU).dtype is torch.bfloat16
    assert resolve_precision("fp16", CPU).scaler(CPU).is_enabled()
    assert not resolve_precision("bf16", CPU).scaler(CPU).is_enabled()
    with pytest.raises(SSTEdgeError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", CPU)
    with pytest.raises(SSTEdgeError, match="precision must be one of"):
        tiny(Path("/d"), precision="tf32")


def test_head_and_loss_stay_fp32_under_bf16(synth_dataset, tmp_path, monkeypatch):
    """Under bf16 autocast the model's features come out bf16, but the head sees fp32 features and its
    logits and loss are fp32 (CPU autocast would run the softmax in bf16)."""
    seen = {}
    head = fewshot.head_logits

    def spy(query, support, cfg, module=None):
        logits = head(query, support, cfg, module)
        seen.update(query=query.dtype, support=support.dtype, logits=logits.dtype,
                    autocast=torch.is_autocast_enabled("cpu"))
        return logits

    monkeypatch.setattr(loop, "head_logits", spy)
    r = loop.train_supernet(tiny(synth_dataset, precision="bf16", epochs=1, val_episodes=0),
                            tmp_path / "bf16", progress=False)
    assert r.steps == 4 and r.last_epoch_loss is not None
    assert seen == {"query": torch.float32, "support": torch.float32, "logits": torch.float32,
                    "autocast": False}
    record = json.loads((tmp_path / "bf16" / "run.json").read_text())
    assert record["precision"] == {"used": "bf16", "requested": "bf16", "why": "given"}
    assert record["device"] == {"device": "cpu", "backend": None}


def test_fp16_trains_with_loss_scaling_and_records_the_scale(synth_dataset, tmp_path):
    """fp16: GradScaler skips the steps whose scaled gradients overflow while the scale settles (from
    2^16), counted per epoch; the loss scale is in the checkpoint, so a resumed run continues with it."""
    out = tmp_path / "fp16"
    r = loop.train_supernet(tiny(synth_dataset, precision="fp16", episodes=8, val_episodes=0), out,
                            progress=False)
    epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    untaken = sum(e["untaken_steps"] for e in epochs)
    scaler = json.loads(checkpoint_paths(out, 2)[1].read_text())["scaler"]
    assert r.steps == 16 and untaken < 16
    assert scaler["scale"] == 2.0 ** 16 / 2 ** untaken  # halved at every step not taken, never grown


# --------------------------------------------------------------------------------- no tensor off-device
def on_device(dev: str, f):
    @functools.wraps(f)
    def g(*a, **k):
        with torch.device(dev):
            return f(*a, **k)
    return g


@pytest.fixture
def meta_default(monkeypatch):
    """torch's default device is `meta` inside the training and evaluation steps, while model and data are
    on an explicit device (the CPU): a tensor made without `device=` is a meta tensor there, and the first
    operation that mixes it with real data fails. The DataLoader's own internals (its base seed) run on
    the CPU: that is torch's code, not ours."""
    monkeypatch.setattr(DataLoader, "__iter__", on_device("cpu", DataLoader.__iter__))
    for name in ("train_epoch", "validate", "maybe_shrink", "checkpoint", "dry_run"):
        monkeypatch.setattr(loop._Trainer, name, on_device("meta", getattr(loop._Trainer, name)))


def test_no_tensor_is_made_without_a_device(synth_dataset, tmp_path, meta_default, monkeypatch):
    """Training (2 episodes per step, validation, shrink events, checkpoints), evaluation and the search's
    scoring, with every step under a meta default device (models are built before, on the default device,
    as on a GPU host)."""
    from sst_edge.search import experiment, trials
    from sst_edge.search.settings import SearchSettings
    from sst_edge.train import evaluate as ev

    r = loop.train_supernet(tiny(synth_dataset, episodes=4, episodes_per_step=2), tmp_path / "run",
                            progress=False)
    assert r.steps == 4 and len(r.val_acc) == 2 and all(v is not None for v in r.val_acc)
    monkeypatch.setattr(ev, "compare_embeddings", on_device("meta", ev.compare_embeddings))
    result = ev.evaluate("sst_tiny", tmp_path / "run", synth_dataset, episodes=4, way=3, workers=0,
                         device="cpu", progress=False)
    assert len(result.heads) == 1
    # the scoring of each trial and the re-scoring of the shortlist (the models are built before, as ever)
    monkeypatch.setattr(trials, "episode_accuracies", on_device("meta", trials.episode_accuracies))
    monkeypatch.setattr(experiment, "compare_embeddings", on_device("meta", experiment.compare_embeddings))
    s = SearchSettings(trials=2, population=2, sample_size=1, way=3, episodes=2, rescore_top=1,
                       rescore_episodes=2, budget_gflops=1.0, device="cpu")
    summary = experiment.run_search("sst_tiny", tmp_path / "run", synth_dataset, tmp_path / "search", s)
    assert summary.data["trials"] == 2


def test_the_meta_harness_catches_a_planted_tensor_without_a_device(synth_dataset, tmp_path, meta_default,
                                                                    monkeypatch):
    """The harness above can fail: a head that makes `torch.arange(way)` without a device (the bug it is
    for) is caught at the first step."""
    head = fewshot.head_logits

    def planted(query, support, cfg, module=None):
        # made on the default device
        return head(query, support, cfg, module) + torch.arange(support.shape[0])

    monkeypatch.setattr(loop, "head_logits", planted)
    with pytest.raises((RuntimeError, NotImplementedError)):
        loop.train_supernet(tiny(synth_dataset, val_episodes=0), tmp_path / "planted", progress=False)


# ------------------------------------------------------------------------ accumulation and resumption
def test_resume_across_device_and_precision_settings_is_bit_exact(synth_dataset, tmp_path, monkeypatch):
    """A run of 2 episodes per step, stopped after epoch 2 (its later files removed) and resumed with
    --device auto --precision auto on a host whose CPU would take bf16 for auto (simulated): the resumed
    run keeps the checkpoint's precision and ends with the uninterrupted run's weights, bit for bit."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    cfg = tiny(synth_dataset, episodes=6, episodes_per_step=2, epochs=3)
    loop.train_supernet(cfg, whole, progress=False)
    shutil.copytree(whole, cut)
    for p in checkpoint_paths(cut, 3):  # the run as a kill after epoch 2 leaves it (the 2 newest are kept)
        p.unlink()
    (cut / "supernet.safetensors").unlink()
    monkeypatch.setattr(devmod, "native_bf16_cpu", lambda: True)
    assert resolve_precision("auto", CPU).name == "bf16"
    loop.train_supernet(replace(cfg, device="auto", precision="auto"), cut, resume=True, progress=False)
    a, b = (load_file(str(d / "supernet.safetensors")) for d in (whole, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((cut / "run.json").read_text())
    assert record["precision"]["used"] == "fp32" and "kept from the checkpoint" in record["precision"]["why"]
    assert record["result"]["steps"] == 9 and len(record["resumed"]) == 1


def test_episodes_must_fill_whole_steps():
    with pytest.raises(SSTEdgeError, match="multiple of the episodes per step"):
        tiny(Path("/d"), episodes=5, episodes_per_step=2)
    cfg = tiny(Path("/d"), episodes=8, episodes_per_step=4, epochs=3)
    assert (cfg.steps_per_epoch, cfg.total_steps) == (2, 6)
    # the learning rate counts optimizer steps: the cosine ends at the 6th step, not the 24th episode
    assert loop.learning_rate(cfg, 5) == pytest.approx(0.5 * cfg.lr * (1 + math.cos(math.pi * (5 - 2) / 4)))


def test_dry_run_estimates_and_writes_nothing(synth_dataset, tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["train", "--space", "sst_tiny", "--data", str(synth_dataset), "--out", str(out),
                 "--way", "3", "--query", "1", "--episodes", "8", "--epochs", "5", "--episodes-per-step", "2",
                 "--val-episodes", "4", "--workers", "0", "--threads", "1", "--device", "cpu",
                 "--precision", "fp32", "--dry-run", "--json"])
    assert code == 0
    est = json.loads(capsys.readouterr().out)
    assert est["steps_left"] == est["steps_total"] == 20 and est["episodes_per_step"] == 2
    assert est["steps_timed"] == 3  # 4 steps fit in the epoch: the first warms up
    assert est["seconds_per_step"] > 0 and est["seconds_per_validation_episode"] > 0
    assert est["total_seconds"] == pytest.approx(20 * est["seconds_per_step"]
                                                 + 5 * 4 * est["seconds_per_validation_episode"])
    assert not out.exists()
