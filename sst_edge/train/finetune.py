"""Fine-tuning the subnet that search found, alone, from the weights it inherits from the supernet.

The model is the supernet restricted to one path (`build_supernet(config, single_path(sample))`): every
tensor has exactly the subnet's shape and starts as the leading slice of the init run's tensor, the slice
the supernet itself computes this subnet with (`load_shared_weights`), so before any step the model
computes what the supernet did. Everything else is supernet training (loop.py: optimizer, schedule,
checkpoints, `--resume`, torchrun) with shrinking off: one subnet has nothing to shrink. The weights'
metadata name the subnet ("subnet"), so `load_supernet` rebuilds the single path from the file alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SSTEdgeError
from ..fewshot_cca import prefixed
from ..space.config import SpaceConfig
from ..space.restriction import run_restriction_file
from ..space.subnet import Subnet, load_subnet, sample_problems
from ..space.supernet import load_shared_weights
from .artifacts import resolve_weights, run_restriction, single_path, trained_head, weights_problems
from .checkpoint import load_tensors, model_state
from .config import TrainConfig


@dataclass
class FineTune:
    """The subnet a fine-tuning run trains and, at a fresh start, the weights it starts from."""

    subnet: Subnet
    document: Path
    init: str
    init_weights: Path | None = None  # None on resumption: the checkpoint holds the weights
    init_meta: dict[str, Any] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None
    head_state: dict[str, torch.Tensor] = field(default_factory=dict)  # the init run's cca head, if any
    warnings: list[str] = field(default_factory=list)
    head: dict[str, Any] = field(default_factory=dict)  # the init run's head and what this run overrode

    @property
    def sample(self) -> dict[str, Any]:
        return self.subnet.sample

    @property
    def restriction(self) -> dict[str, list]:
        return single_path(self.sample)

    def record(self) -> dict[str, Any]:
        """What run.json keeps of it (the init weights only when this run started from them)."""
        rec: dict[str, Any] = {"subnet": str(self.document), "sample": dict(self.sample), "init": self.init,
                               "head": dict(self.head)}
        if self.init_weights is not None:
            rec |= {"init_weights": str(self.init_weights), "init_epoch": self.init_meta.get("epoch"),
                    "init_step": self.init_meta.get("step"), "warnings": list(self.warnings)}
        return rec


def subnet_space(document: str | Path) -> str:
    """The space a subnet document names (checked), so `train --subnet` needs no `--space`."""
    return load_subnet(document)[0].space


def head_record(cfg: TrainConfig) -> dict[str, Any]:
    """The init run's head (None for bare weights) and each field this fine-tune trains differently."""
    trained, run = trained_head(cfg.init)  # type: ignore[arg-type]
    used = cfg.head.to_dict()
    init = trained.to_dict() if trained is not None else None
    overrides = ({} if init is None else
                 {k: {"init": init[k], "used": v} for k, v in used.items() if init[k] != v})
    return {"init_head": init, "init_run": str(run) if trained is not None else None, "overrides": overrides}


def load_finetune(cfg: TrainConfig, config: SpaceConfig, *, with_init: bool = True) -> FineTune:
    """Check `cfg.subnet` against the space and, with `with_init`, load the weights of `cfg.init`.

    Refused, naming the file: a bad document, weights of another space, weights fine-tuned for another
    subnet. A subnet outside the init run's restriction is allowed (the full supernet state holds every
    candidate) with a warning: shrinking stopped training those candidates early.
    """
    if cfg.subnet is None or cfg.init is None:
        raise SSTEdgeError("fine-tuning needs a subnet document and an init run")
    document = Path(cfg.subnet)
    subnet, _ = load_subnet(document, config)
    tune = FineTune(subnet, document, cfg.init, head=head_record(cfg))
    if not with_init:
        return tune
    path = resolve_weights(cfg.init)
    tensors, meta = load_tensors(path)
    problems = weights_problems(meta, config)
    if problems:
        raise SSTEdgeError(f"is a subnet of space '{config.name}', but the --init weights are not", document,
                           [f"{path}: {p}" for p in problems])
    tuned = meta.get("subnet")
    if isinstance(tuned, dict) and tuned != subnet.sample:
        raise SSTEdgeError("holds the weights of one fine-tuned subnet, not of this one: fine-tune from the "
                           "supernet run instead", path,
                           [f"{document}: {p}" for p in sample_problems(config, subnet.sample,
                                                                         single_path(tuned))])
    restriction = run_restriction(cfg.init, config)
    outside = [f"{label}={value}" for label, value in subnet.sample.items()
               if restriction is not None and value not in restriction.get(label, [value])]
    if outside:
        folder = path.parent if Path(cfg.init).is_file() else Path(cfg.init)
        tune.warnings.append(f"{document}: {', '.join(outside)} "
                             f"{'is' if len(outside) == 1 else 'are'} outside the init run's restriction "
                             f"({run_restriction_file(folder)}): shrinking dropped "
                             f"{'it' if len(outside) == 1 else 'them'}, so those weights were trained less")
    tune.init_weights, tune.init_meta = path, meta
    tune.state = model_state(tensors) if any(k.startswith("model.") for k in tensors) else tensors
    tune.head_state = prefixed(tensors)  # a cca fine-tune starts from the init run's head when it had one
    return tune


def load_init(model: nn.Module, tune: FineTune) -> None:
    """Copy the init weights into the single-path model (leading slices: the subnet's own weights)."""
    if tune.state is None:
        raise SSTEdgeError("no init weights loaded (load_finetune(..., with_init=True))")
    try:
        missing = load_shared_weights(model, tune.state)
    except SSTEdgeError as e:
        raise SSTEdgeError(f"cannot initialise the subnet from these weights ({e})",
                           tune.init_weights) from None
    if missing:
        raise SSTEdgeError(f"{len(missing)} tensors of the subnet missing from the weights",
                           tune.init_weights, missing[:10])
