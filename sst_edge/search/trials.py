"""One trial of the search: score a subnet with weights inherited from the supernet.

The same function runs inside NNI's in-process engine and inside the local engine's trial processes, so
everything it needs travels as plain paths. Each trial writes its own record (NNI's export was seen pairing
architectures with the wrong scores under concurrency, so we never rely on it).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .._nni import current_model, nni
from ..cost.flops import predicted_cost
from ..cost.latency import load_table_for
from ..device.evaluation import confidence_interval
from ..device.settings import HeadConfig
from ..errors import SSTEdgeError
from ..fileio import atomic_write, atomic_write_json, sha256_file
from ..space.config import SpaceConfig, heads_label, load_space, op_label, structure_label
from ..train.artifacts import WEIGHTS_FILE, attach_params, load_supernet
from ..train.device import resolve_device
from ..train.evaluate import episode_accuracies

EPISODES_FILE = "val_episodes.safetensors"
RECORD_KEY = "sst_edge_record"  # a remote trial's whole record, inside its NNI final metric
CONTEXT_FILE = "context.json"
TRIALS_DIR = "trials"


def sample_of(model: nn.Module, config: SpaceConfig) -> dict[str, Any]:
    """The architecture of the frozen subnet NNI hands a trial (a model, not a sample).

    The sample SSTSpace.freeze recorded on it, else NNI's model context (a trial process rebuilding the
    model), else read back from the blocks; a block without attention (tam, msq) cannot tell its layer's
    heads value, which changes nothing in it, so that fallback records the first one.
    """
    labels = config.choices()
    for known in (getattr(model, "frozen_sample", None), current_model()):
        if isinstance(known, dict) and all(k in known for k in labels):
            return {k: known[k] for k in labels}
    sample: dict[str, Any] = {}
    for (s, l) in config.layers():
        stage = model.stages[s - 1]
        if config.structures(s):  # a big_little stage holds its searched blocks in its big branch
            sample[structure_label(s)] = "big_little" if hasattr(stage, "big") else "plain"
        block = stage.big[l - 1] if hasattr(stage, "big") else stage[l - 1]
        sample[op_label(s, l)] = block.mode
        q = getattr(block, "q", None)
        sample[heads_label(s, l)] = q.out_features // block.head_dim if q is not None else config.heads[0]
    return {k: sample[k] for k in labels}


@dataclass
class CachedEpisodes(torch.utils.data.Dataset):
    """Validation episodes decoded once: every candidate is scored on exactly the same tensors."""

    clips: list[torch.Tensor]   # [N*K + N*Q, T, 3, H, W] each, support first
    labels: list[torch.Tensor]  # query labels [N*Q]
    way: int
    shot: int

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> Any:

        s = self.way * self.shot
        clips = self.clips[i]
        return SimpleNamespace(support=clips[:s], query=clips[s:], query_labels=self.labels[i])

    def save(self, path: Path) -> None:

        tensors = {f"clips.{i}": c for i, c in enumerate(self.clips)}
        tensors |= {f"labels.{i}": y for i, y in enumerate(self.labels)}
        meta = {"way": str(self.way), "shot": str(self.shot), "episodes": str(len(self.clips))}
        atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))

    @classmethod
    def load(cls, path: Path) -> CachedEpisodes:

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            n = int(meta["episodes"])
            clips = [f.get_tensor(f"clips.{i}") for i in range(n)]
            labels = [f.get_tensor(f"labels.{i}") for i in range(n)]
        return cls(clips, labels, int(meta["way"]), int(meta["shot"]))


_CACHE: dict[str, Any] = {}


def _context(workdir: str) -> dict[str, Any]:
    """Supernet, episodes, heads and cost models of a search, built once per process."""
    if workdir in _CACHE:
        return _CACHE[workdir]

    ctx = json.loads((Path(workdir) / CONTEXT_FILE).read_text())
    if ctx.get("remote"):
        ctx = _on_this_machine(ctx, Path(workdir))
    torch.set_num_threads(int(ctx.get("threads", 1)))
    config = load_space(ctx["space"])
    supernet, _ = load_supernet(ctx["weights"], config)
    # a trial process of a multi-GPU search sees only the GPU NNI gave it (CUDA_VISIBLE_DEVICES): cuda:0
    supernet.to(resolve_device(ctx.get("device", "cpu")))
    table = None
    if ctx.get("table"):

        table = load_table_for(ctx["table"], config, ctx.get("target"), ctx.get("allow_foreign_table", False))
    built = {
        "config": config, "supernet": supernet, "table": table, "ctx": ctx,
        "episodes": CachedEpisodes.load(Path(workdir) / EPISODES_FILE),
        # a cca head's weights are the run's, beside the supernet's (errors name the file without them)
        "head": attach_params(HeadConfig.from_dict(ctx["head"]), ctx["weights"]),
    }
    _CACHE[workdir] = built
    return built


def _on_this_machine(ctx: dict[str, Any], code: Path) -> dict[str, Any]:
    """A remote trial's context: the search's files from the code folder NNI copied here, the supernet
    from the first of the machines' paths that holds the host's file (by sha256, so any machine finds its
    own, whatever its place in the machines file)."""
    ctx = dict(ctx)
    for key in ("space", "table"):
        if ctx.get(key) and (code / ctx[key]).is_file():
            ctx[key] = str(code / ctx[key])
    for run in ctx["weights_candidates"]:
        f = Path(run) / WEIGHTS_FILE
        if f.is_file() and sha256_file(f) == ctx["supernet_sha256"]:
            ctx["weights"] = run
            return ctx
    raise SSTEdgeError(f"none of {ctx['weights_candidates']} holds the search's supernet on this machine "
                       f"({socket.gethostname()})")


def score(sample: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Accuracy on the fixed validation episodes, predicted latency, FLOPs and params of one subnet."""

    c = _context(workdir)
    config = c["config"]
    t0 = time.perf_counter()
    acc = episode_accuracies(c["supernet"], config, sample, c["episodes"], [c["head"]])[0]
    cost = predicted_cost(config, sample)
    return {
        "accuracy": float(acc.mean()), "ci95": confidence_interval(acc), "episodes": len(acc),
        "latency_ms": c["table"].predict_ms(sample) if c["table"] is not None else None,
        "gflops": cost.gflops, "mparams": cost.mparams, "eval_s": time.perf_counter() - t0,
    }


def write_record(workdir: str, kind: str, sample: dict[str, Any], metrics: dict[str, Any]) -> Path:
    folder = Path(workdir) / TRIALS_DIR
    name = f"{kind}-{time.time_ns()}-{os.getpid()}.json"
    return atomic_write_json(folder / name, {"kind": kind, "sample": sample, **metrics})


def read_records(workdir: str | Path) -> list[dict[str, Any]]:
    folder = Path(workdir) / TRIALS_DIR
    recs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return sorted(recs, key=lambda r: r["finished"])


def nni_worker() -> str | None:
    """NNI's name for the machine a remote trial runs on (`remote-worker{N}`, N counting the machines
    file's entries from 1), from the trial folder NNI made there; None elsewhere."""
    parts = Path(os.environ.get("NNI_OUTPUT_DIR", "")).parts
    return next((p for p in parts if p.startswith("remote-worker")), None)


def nni_trial(model: nn.Module, workdir: str, kind: str = "evolution", remote: bool = False) -> None:
    """The NNI evaluator: score the subnet `model` stands for and report accuracy as the default metric;
    its record is of `kind` (the joint search's, or a progressive phase's).

    A local trial writes its record into the search folder. A remote one runs in the code folder NNI
    copied to its machine (`workdir` is ignored) and packs the whole record into its final metric, which
    NNI carries back to the host (remote.RemoteResults writes it there)."""
    if remote:
        workdir = os.getcwd()
    c = _context(workdir)
    sample = sample_of(model, c["config"])
    metrics = score(sample, workdir)
    metrics["finished"] = time.time()
    final: dict[str, Any] = {"default": metrics["accuracy"],
                             **{k: v for k, v in metrics.items() if isinstance(v, float)}}
    if remote:
        final[RECORD_KEY] = json.dumps({"kind": kind, "sample": sample, **metrics,
                                        "hostname": socket.gethostname(), "nni_worker": nni_worker()})
    else:
        write_record(workdir, kind, sample, metrics)
    nni.report_final_result(final)
