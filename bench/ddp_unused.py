"""What DDP's find_unused_parameters=True costs per training step, measured side by side under torchrun.

Supernet training needs it (each step leaves the paths it did not sample without gradients); fine-tuning one
subnet does not. To compare like with like, both variants here train the same single-path model (the
fine-tuning model of one subnet, every parameter used), one DDP wrapper with the flag and one without,
alternating step by step (A B, B A, ...) on the same episode-shaped input: the difference is the flag's
cost, the traversal of the autograd graph after every forward. Rank 0 prints the medians and the ratio
(geometric mean of per-round ratios, 95% t interval).

Run: .venv/bin/torchrun --standalone --nproc_per_node 2 bench/ddp_unused.py [--space sst_tiny]
     [--rounds 10] [--device auto]       (gloo on CPUs, NCCL on GPUs; OMP_NUM_THREADS=1 on 2 cores)
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sst_edge.space.config import load_space
from sst_edge.space.supernet import activate, build_supernet, random_sample
from sst_edge.train.artifacts import single_path
from sst_edge.train.distributed import init_distributed, shutdown

sys.path.insert(0, str(Path(__file__).parent))
from train_step import speedup  # noqa: E402  (one definition of the paired speed-up)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="sst_tiny")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    d = init_distributed(args.device)
    torch.set_num_threads(1)
    config = load_space(args.space)
    sample = random_sample(config, random.Random(0))
    torch.manual_seed(0)
    base = build_supernet(config, single_path(sample))
    activate(base, config, sample, single_path(sample))
    models = {flag: nn.parallel.DistributedDataParallel(
        copy.deepcopy(base).to(d.device), find_unused_parameters=flag,
        device_ids=[d.device.index] if d.device.type == "cuda" else None) for flag in (True, False)}
    opts = {flag: torch.optim.AdamW(m.parameters(), lr=1e-4) for flag, m in models.items()}
    x = torch.randn(10, *config.input_shape(1)[1:], device=d.device)
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.rounds + 1):
        for flag in ((True, False) if r % 2 == 0 else (False, True)):
            if d.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            opts[flag].zero_grad(set_to_none=True)
            models[flag](x).pow(2).mean().backward()
            opts[flag].step()
            if d.device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times[flag].append(time.perf_counter() - t0)
    if d.is_main:
        s = speedup(times[True], times[False])
        print(f"{args.space} on {d.device} x {d.world} ranks ({d.backend}), {args.rounds} rounds: "
              f"find_unused_parameters=True {statistics.median(times[True]) * 1e3:.1f} ms/step, False "
              f"{statistics.median(times[False]) * 1e3:.1f} ms/step; True costs {s['speedup']:.3f}x "
              f"[{s['lo']:.3f}, {s['hi']:.3f}] the time of False "
              f"({'significant' if s['significant'] else 'not significant'} at 95%)")
    shutdown(d)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
