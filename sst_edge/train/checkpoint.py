"""Training checkpoints: tensors in safetensors, everything else in a JSON sidecar. Nothing is pickled.

    OUT/checkpoint-e0003.safetensors   model.<name>        supernet parameters and buffers
                                       optim.<i>.<key>     optimizer state of parameter i (AdamW: step,
                                                           exp_avg, exp_avg_sq)
                                       fewshot.<name>      a learned few-shot head's weights (cca runs)
                                       rng.torch           torch's CPU generator state (uint8)
    OUT/checkpoint-e0003.json          {"format": "sst-edge/checkpoint", "epoch", "step", "weights",
                                        "weights_sha256", "space", "space_hash", "seed", "world_size",
                                        "config", "optimizer": {"param_groups"}, "rng": {"python", "numpy"},
                                        "sampler", "shrink": {"records", "restriction"}, "metrics",
                                        "versions"}

The safetensors file is written first, then the sidecar, each atomically; the sidecar names the weights'
sha256, so a sidecar is the commit mark of a complete pair. Resuming takes the newest complete pair: a
kill -9 at any moment leaves at worst a temporary file and the previous pair. The two newest pairs are kept.
The safetensors metadata holds one key (its header order is then fixed), so equal states give equal bytes.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import SSTEdgeError
from ..fileio import atomic_write, atomic_write_json, read_json, sha256_file

FORMAT = "sst-edge/checkpoint"
VERSION = 1
KEEP = 2
_NAME = re.compile(r"^checkpoint-e(\d{4,})\.json$")


def checkpoint_paths(out: str | Path, epoch: int) -> tuple[Path, Path]:
    """(weights, sidecar) of the checkpoint taken at the end of `epoch`."""
    out = Path(out)
    return out / f"checkpoint-e{epoch:04d}.safetensors", out / f"checkpoint-e{epoch:04d}.json"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """safetensors with our metadata as ONE JSON string (several keys come out in a random order)."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"sst-edge": json.dumps(meta, sort_keys=True)}
    return atomic_write(path, lambda p: save_file(flat, str(p), metadata=header))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and our metadata of a safetensors file (safetensors never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise SSTEdgeError("weights file not found", path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("sst-edge", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError) as e:
        raise SSTEdgeError(f"not a readable safetensors file ({e})", path) from None
    return tensors, meta


# ------------------------------------------------------------------------------------------- RNG state
def python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_python_rng_state(state: list) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


def numpy_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
            "gauss": float(gauss)}


def set_numpy_rng_state(state: dict[str, Any]) -> None:
    np.random.set_state((state["name"], np.array(state["keys"], dtype=np.uint32), state["pos"],
                         state["has_gauss"], state["gauss"]))


# ------------------------------------------------------------------------------------------ save/load
def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Optimizer state as flat tensors plus its JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors = {}
    for i, state in sd["state"].items():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"optim.{i}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, i, key = name.split(".", 2)
            state.setdefault(int(i), {})[key] = value
    restored = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": restored})


def save_checkpoint(out: str | Path, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    sidecar: dict[str, Any], meta: dict[str, Any] | None = None,
                    extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the pair for `epoch` (weights, then sidecar) and delete all but the newest `KEEP` pairs.

    `meta` goes into the safetensors metadata too (the space and its hash, so the file alone can be
    checked by evaluation); `extra`: more tensors under their own names (a few-shot head's "fewshot.*")."""
    weights, side = checkpoint_paths(out, epoch)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(extra or {})
    opt, groups = optimizer_tensors(optimizer)
    tensors.update(opt)
    tensors["rng.torch"] = torch.get_rng_state()
    save_tensors(weights, tensors, {"format": FORMAT, "epoch": epoch, **(meta or {})})
    doc = {"format": FORMAT, "version": VERSION, "epoch": epoch, "weights": weights.name,
           "weights_sha256": sha256_file(weights), **sidecar, "optimizer": {"param_groups": groups},
           "rng": {"python": python_rng_state(), "numpy": numpy_rng_state()}}
    atomic_write_json(side, doc)
    for old in sorted(complete_checkpoints(out))[:-KEEP]:
        for p in checkpoint_paths(out, old):
            p.unlink(missing_ok=True)
    return side


def complete_checkpoints(out: str | Path) -> list[int]:
    """Epochs that have a sidecar (the pair may still be checked by `load_checkpoint`)."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(int(m.group(1)) for p in out.iterdir() if (m := _NAME.match(p.name)))


def load_checkpoint(out: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The newest complete checkpoint in `out` as (sidecar, tensors), or None if there is none.

    A pair whose weights are missing or do not match the sidecar's sha256 is skipped (with the reason
    kept in the error if no pair is usable).
    """
    problems = []
    for epoch in reversed(complete_checkpoints(out)):
        weights, side = checkpoint_paths(out, epoch)
        doc = read_json(side, "checkpoint sidecar")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            problems.append(f"{side.name}: not an sst-edge checkpoint sidecar")
            continue
        if not weights.is_file():
            problems.append(f"{side.name}: its weights {weights.name} are missing")
            continue
        if sha256_file(weights) != doc.get("weights_sha256"):
            problems.append(f"{side.name}: {weights.name} does not match its sha256")
            continue
        tensors, _ = load_tensors(weights)
        return doc, tensors
    if problems:
        raise SSTEdgeError("no usable checkpoint", out, problems)
    return None


def restore_rng(doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    set_python_rng_state(doc["rng"]["python"])
    set_numpy_rng_state(doc["rng"]["numpy"])
    torch.set_rng_state(tensors["rng.torch"])


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
