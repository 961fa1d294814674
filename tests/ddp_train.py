"""Run by tests/test_train_distributed.py under torchrun: check DDP's gradients, then `sst-edge train`.

Not a test module itself (pytest collects test_*.py only).
"""

from __future__ import annotations

import random
import sys

import torch

from sst_edge.cli import main
from sst_edge.space.config import load_space
from sst_edge.space.supernet import activate, build_supernet, random_sample
from sst_edge.train.distributed import init_distributed, wrap


def unsampled_paths_get_no_gradient() -> None:
    """With find_unused_parameters=True, the paths a step does not sample keep .grad None on every rank,
    so AdamW neither decays nor moves them (as in a single process)."""
    d = init_distributed()
    torch.manual_seed(0)
    config = load_space("sst_tiny")
    net = build_supernet(config)
    model = wrap(net, d)
    sample = random_sample(config, random.Random(0))
    activate(net, config, sample)
    model(torch.randn(2, config.frames, 3, config.size, config.size) * (d.rank + 1)).pow(2).mean().backward()
    unused = [n for n, p in net.named_parameters() if p.grad is None]
    used = [n for n, p in net.named_parameters() if p.grad is not None]
    other = {"tab": "sab", "sab": "tab"}[sample["s1_l1_op"]]
    assert any(n.startswith(f"stages.0.0.{other}.") for n in unused), unused[:5]
    assert not any(n.startswith(f"stages.0.0.{other}.") for n in used)
    grads = torch.cat([net.get_parameter(n).grad.flatten() for n in used])
    total = grads.clone()
    torch.distributed.all_reduce(total)
    assert torch.allclose(total, grads * d.world), "gradients were not averaged across ranks"
    print(f"rank {d.rank}: {len(unused)} unsampled parameters without gradient", flush=True)


if __name__ == "__main__":
    unsampled_paths_get_no_gradient()
    sys.exit(main(sys.argv[1:]))
