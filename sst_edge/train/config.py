"""Everything that decides a supernet training run, in one JSON-able record.

A checkpoint stores it; `--resume` refuses a configuration that differs in anything that changes the
trajectory. `workers`, `threads`, `device` and `precision` may change: they move work, not the path of the
run (the episodes, subnets and learning rates stay), though the last three change float rounding, so a
bit-exact resumption wants the same values. A run trained on a GPU resumes on a CPU and the other way round;
`precision: auto` then keeps the precision the run used (train/loop.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..device.settings import HeadConfig, default_resize
from ..errors import SSTEdgeError

# Fields that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("workers", "threads", "device", "precision")
# --precision: auto resolves per device (train/device.py)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ShrinkConfig:
    """Algorithm 1 (DESIGN.md "Space shrinking"; the test and the score are described in shrink.py).

    warmup: epochs trained before any loss is recorded (the supernet is too young to judge).
    period: shrink events at the end of epochs tau > warmup with tau % period == 0.
    drop_percent: drop at most ceil(drop_percent% of the candidates still in the space) per event.
    confidence: a candidate goes only if it is worse than another value of its label beyond the noise at this
        confidence, family-wise over the candidates tested at an event (Holm): under no real difference an
        event drops anything with probability <= 1 - confidence.
    lam: weight of the exact cost term in S = mean loss + lam * (block cost - the label's cheapest) / mean
        subnet cost: the loss (nats) worth the cost of a whole mean subnet.
    min_count: a candidate needs this many recorded steps (and at least 2) since the last event to be tested.
    """

    warmup: int = 2
    period: int = 2
    drop_percent: float = 10.0
    confidence: float = 0.95
    lam: float = 0.5
    min_count: int = 5

    def problems(self) -> list[str]:
        out = []
        if self.warmup < 0:
            out.append(f"shrink warm-up must be >= 0 epochs, got {self.warmup}")
        if self.period < 1:
            out.append(f"shrink period must be >= 1 epoch, got {self.period}")
        if not 0 <= self.drop_percent <= 100:
            out.append(f"drop percent must lie in [0, 100], got {self.drop_percent}")
        if not 0 < self.confidence < 1:
            out.append(f"shrink confidence must lie strictly between 0 and 1, got {self.confidence}")
        if not self.lam >= 0:
            out.append(f"lambda must be >= 0, got {self.lam}")
        if self.min_count < 1:
            out.append(f"min count must be >= 1, got {self.min_count}")
        return out

    def is_event(self, epoch: int) -> bool:
        """True if shrinking happens at the end of (1-based) `epoch`: after warm-up, when epoch % period == 0
        (Algorithm 1's tau % P == 0)."""
        return epoch > self.warmup and epoch % self.period == 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShrinkConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise SSTEdgeError(f"unknown shrink configuration keys: {', '.join(unknown)}"
                               + (" ('threshold' is from an sst-edge before the statistical shrink test: "
                                  "such a run cannot be resumed)" if "threshold" in unknown else ""))
        return cls(**d)


@dataclass(frozen=True)
class TrainConfig:
    space: str
    data: str
    split: str | None = None            # folder of train/val/test split files (default DATA/splits)
    way: int = 5
    shot: int = 1
    query: int = 3
    episodes: int = 200                 # episodes per epoch and rank (steps x episodes_per_step)
    epochs: int = 10
    lr: float = 1e-3
    lr_warmup: int = 100                # steps of linear learning-rate warm-up, then cosine to 0
    weight_decay: float = 0.05
    clip_grad: float = 1.0
    head: HeadConfig = field(default_factory=HeadConfig)
    shrink: ShrinkConfig = field(default_factory=ShrinkConfig)
    latency_table: str | None = None    # cost = table latency (ms) instead of FLOPs
    allow_foreign_table: bool = False   # use a table measured for another device (warns)
    resize: int | None = None           # shorter side before the crop (default size * 8 / 7)
    hflip: bool = False                 # off: a flip reverses left/right motion (a different class)
    val_episodes: int = 50
    seed: int = 0
    workers: int = 1
    threads: int | None = None          # torch threads per process (default: cores / processes - workers)
    device: str = "auto"                # auto | cpu | cuda | cuda:N (train/device.py)
    precision: str = "auto"             # auto | fp32 | bf16 | fp16: the model's autocast (head, loss: fp32)
    episodes_per_step: int = 1          # episodes per optimizer step and rank (gradient accumulation)
    log_every: int = 10
    # Fine-tuning (both or neither): train only the subnet of this document, starting from its weights
    # in this run (folder or .safetensors); shrinking is off, the rest is as for a supernet.
    subnet: str | None = None
    init: str | None = None

    def __post_init__(self) -> None:
        problems = list(self.shrink.problems())
        if (self.subnet is None) != (self.init is None):
            problems.append("fine-tuning needs both a subnet document (--subnet) and the run whose weights "
                            "it starts from (--init)")
        for name in ("way", "shot", "episodes", "epochs", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("query", "lr_warmup", "val_episodes", "seed", "workers"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.query < 1:
            problems.append("training needs query >= 1 (the loss is computed on query clips)")
        if self.way < 2:
            problems.append(f"way must be >= 2 (a 1-way episode has nothing to tell apart), got {self.way}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.clip_grad < 0:
            problems.append("weight decay and gradient clipping must be >= 0")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be >= 1, got {self.threads}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.episodes_per_step < 1:
            problems.append(f"episodes per step must be >= 1, got {self.episodes_per_step}")
        elif self.episodes % self.episodes_per_step:
            problems.append(f"episodes per epoch ({self.episodes}) must be a multiple of the episodes per "
                            f"step ({self.episodes_per_step}): an epoch is a whole number of optimizer steps")
        if problems:
            raise SSTEdgeError("invalid training configuration", problems=problems)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (each takes `episodes_per_step` episodes on every rank)."""
        return self.episodes // self.episodes_per_step

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def resize_for(self, size: int) -> int:
        return self.resize if self.resize is not None else default_resize(size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["head"], d["shrink"] = self.head.to_dict(), asdict(self.shrink)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SSTEdgeError(f"unknown training configuration keys: {', '.join(unknown)}")
        kw = dict(d)
        kw["head"] = HeadConfig.from_dict(kw.get("head", {}))
        kw["shrink"] = ShrinkConfig.from_dict(kw.get("shrink", {}))
        return cls(**kw)

    def differences(self, other: TrainConfig) -> list[str]:
        """What differs from `other` in fields that change a run's trajectory."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {b[k]!r} in the checkpoint, {a[k]!r} now" for k in a
                if k not in RESUMABLE_CHANGES and a[k] != b[k]]
