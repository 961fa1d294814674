"""Processes, devices and threads: the same training command alone or under `torchrun`: DDP over NCCL
when the ranks run on GPUs (each rank on cuda:LOCAL_RANK), over gloo on CPUs.

Every rank draws the same subnet at a step (from the seed and the step number) and its own episodes, so
the path through the supernet is the same everywhere and DDP's gradient all-reduce lines up. DDP runs with
find_unused_parameters=True: each step leaves the paths not sampled without gradients, on every rank
alike, and DDP then leaves their .grad None (AdamW skips them; a test checks). Only rank 0 writes files,
and only rank 0 reads the run folder: a resumed run sends its checkpoint to the other ranks, so a node
needs no copy of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .device import resolve_device

# Ranks wait for each other at every step; a rank that decodes a slow clip or writes a checkpoint must not
# time the others out (the default is 10 minutes for NCCL).
PROCESS_GROUP_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_world: int = 1
    owns_group: bool = False  # we initialised the process group, so we tear it down
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # this rank's, for collectives
    backend: str = ""  # the process group's ("nccl", "gloo"), "" with one process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise float64 sum over ranks (a copy; the identity with one process). The reduction runs
        on this rank's device, which NCCL needs."""
        out = np.array(values, dtype=np.float64)
        if self.active:
            t = torch.from_numpy(out).to(self.device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            out = t.cpu().numpy()
        return out

    def mean(self, *values: float) -> list[float]:
        """The mean over ranks of a few scalars, in float64 so every rank gets the same bits."""
        return (self.sum(np.array(values, dtype=np.float64)) / self.world).tolist()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast_bytes(self, data: bytes) -> bytes:
        """Rank 0's `data` on every rank (the others pass b""): raw bytes over the process group, on this
        rank's device as NCCL needs, so what travels is never pickled."""
        if not self.active:
            return data
        size = torch.tensor([len(data) if self.is_main else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(size, 0)
        n = int(size.item())
        if n == 0:
            return b""
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.is_main
               else torch.empty(n, dtype=torch.uint8)).to(self.device)
        dist.broadcast(buf, 0)
        return buf.cpu().numpy().tobytes()


def init_distributed(device: str = "cpu") -> Dist:
    """This process's device (`--device`, see train/device.py) and, when started by torchrun (WORLD_SIZE
    > 1), the process group of the device's default backend: NCCL for CUDA, gloo for the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device, world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # NCCL and every bare .cuda() of the libraries use this rank's GPU
    if world <= 1:
        return Dist(device=dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(dist.get_default_backend_for_device(dev), timeout=PROCESS_GROUP_TIMEOUT)
        owns = True
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(),
                local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))), owns_group=owns,
                device=dev, backend=str(dist.get_backend()))


def shutdown(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_threads(threads: int | None, workers: int, local_world: int) -> int:
    """Set torch's intra-op threads; default: this process's share of the cores minus its loader workers.

    With 2 cores and 1 loader worker that is 1 thread: decoding and the step then run side by side, and
    torch never spins a second thread against the decoder (more busy threads than cores slow a step
    down several times). DataLoader workers run 1 torch thread each (PyTorch sets that in every worker)
    and decode with 1 thread (`make_decoder`'s default).
    """
    n = threads if threads is not None else max(1, available_cores() // max(1, local_world) - workers)
    torch.set_num_threads(n)
    return n


def wrap(model: nn.Module, d: Dist, find_unused: bool = True) -> nn.Module:
    """DDP around the supernet when there are several ranks; the supernet itself otherwise.

    `find_unused=False` for a single-path model (fine-tuning): every parameter gets a gradient each step,
    and DDP warns about, and pays for, the search for unused ones."""
    if not d.active:
        return model
    ids = [d.device.index] if d.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def average_gradients(module: nn.Module, d: Dist) -> None:
    """Average `module`'s gradients over the ranks: for parameters DDP does not own (the cca head runs
    outside the wrapped supernet), called once per optimizer step, after the last backward."""
    if not d.active:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= d.world


def in_sync(model: nn.Module, d: Dist) -> bool:
    """True if every rank holds the same weights (compares a float64 checksum of all parameters)."""
    if not d.active:
        return True
    with torch.no_grad():
        s = torch.stack([sum(p.double().sum() for p in model.parameters()),
                         sum((p.double() ** 2).sum() for p in model.parameters())])
    lo, hi = s.clone(), s.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))
