"""Where the host half computes and in what precision: one `--device` and one `--precision` for train,
eval, search and export, resolved here once, with a named error for what this machine cannot do.

The device: `auto` (a CUDA GPU when torch sees one, else the CPU), `cpu`, `cuda` (under torchrun each rank
takes cuda:LOCAL_RANK), or `cuda:N`. The precision: `fp32`, `bf16` or `fp16` through `torch.autocast`
(fp16 with a GradScaler), or `auto`, which takes bf16 only where the hardware multiplies bf16 natively and
fp32 elsewhere (why, with the measurements: docs/train.md, "Training on GPUs and CPUs"). The few-shot
head, its softmax and the loss always run in fp32 (`full_precision`): CPU autocast would run softmax in bf16.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..device.fingerprint import native_bf16_cpu
from ..errors import SSTEdgeError
from .config import PRECISIONS

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def local_rank() -> int:
    """This process's index on its machine under torchrun (0 alone)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return (f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build of torch "
                "(docs/install.md)")
    return ("torch cannot see a CUDA device (torch.cuda.is_available() is False): check the NVIDIA driver "
            "and CUDA_VISIBLE_DEVICES")


def resolve_device(spec: str = "auto", world: int = 1, rank: int | None = None) -> torch.device:
    """The torch device named by `spec` (see the module docstring). Under torchrun (`world` > 1) `cuda`
    means this rank's own GPU, cuda:LOCAL_RANK; a fixed `cuda:N` would put every rank on one GPU."""
    text = str(spec).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m is None:
        raise SSTEdgeError(f"unknown device {spec!r}: expected {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise SSTEdgeError(f"--device {spec}: {_no_cuda_reason()}; or use --device cpu (or auto)")
    if m.group(1) is not None and world > 1:
        raise SSTEdgeError(f"--device {spec} under torchrun would put all {world} ranks on one GPU: give "
                           "--device cuda (each rank takes cuda:LOCAL_RANK)")
    index = int(m.group(1)) if m.group(1) is not None else (local_rank() if rank is None else rank)
    count = torch.cuda.device_count()
    if index >= count:
        raise SSTEdgeError(f"--device {spec}: cuda:{index} does not exist (torch sees {count} CUDA "
                           f"device{'s' if count != 1 else ''})")
    return torch.device("cuda", index)


@dataclass(frozen=True)
class Precision:
    """The arithmetic of the model's forward and backward pass. `requested` is what the user asked for
    (`auto` included) and `why` says how `name` was chosen: both go into run.json."""

    name: str
    requested: str
    why: str

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @property
    def mixed(self) -> bool:
        return self.name != "fp32"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The model's forward in this precision (a no-op for fp32)."""
        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """Loss scaling: on for fp16 only (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(device.type, enabled=self.name == "fp16")

    def to_dict(self) -> dict[str, str]:
        return {"used": self.name, "requested": self.requested, "why": self.why}


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """`requested` (one of PRECISIONS) for `device`: `auto` resolved, impossible choices named."""
    if requested not in PRECISIONS:
        raise SSTEdgeError(f"unknown precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported(including_emulation=False)
        if requested == "bf16" and not bf16_ok:
            name = torch.cuda.get_device_name(device)
            raise SSTEdgeError(f"--precision bf16: {name} has no native bf16 (it needs compute capability "
                               ">= 8.0, Ampere or newer): use fp16 or fp32")
        if requested == "auto":
            if bf16_ok:
                return Precision("bf16", requested, "CUDA device with native bf16 (compute capability >= "
                                 "8.0): bf16 autocast, fp32's range, no loss scaling")
            return Precision("fp32", requested, "CUDA device without native bf16 (compute capability < "
                             "8.0): fp32; fp16 with loss scaling is available as --precision fp16")
        return Precision(requested, requested, "given")
    if requested == "auto":
        if native_bf16_cpu():
            return Precision("bf16", requested, "this CPU multiplies bf16 natively (AMX or AVX512-BF16): "
                             "bf16 autocast measured faster than fp32 there")
        return Precision("fp32", requested, "this CPU has no native bf16 (no AMX or AVX512-BF16): PyTorch "
                         "emulates it, and bf16 autocast measured several times slower than fp32")
    return Precision(requested, requested, "given")


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off: the few-shot head, the alignment's softmax and the loss run in fp32 on fp32
    features, whatever the model's precision (CPU autocast would run the softmax in bf16)."""
    return torch.autocast(device.type, enabled=False)


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """fp32 as fp32 on CUDA for a parity check: TF32 convolutions and matmuls off for the block (cuDNN
    uses TF32 for fp32 convolutions by default, about 1e-3 relative error)."""
    if device.type != "cuda":
        yield
        return
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's parameters (the CPU for a module with none)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
