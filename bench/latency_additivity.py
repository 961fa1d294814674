"""Does a latency table add up? One subnet, whole vs the sum of its own parts, on both clocks.

For one random subnet of a space, export the whole model (dynamic and static batch axis) and every part
(embedding, each block, downsamples, head) exactly as `sst-edge profile` does, then time them all in this
one process, interleaved round by round, one ONNX Runtime session at a time, on the wall clock and on the
calling thread's CPU time together. Prints each variant's median and the ratios whole / sum of parts and
wall / thread: the evidence behind the profiler's thread clock and the target's `dynamic_batch` choice.

Run: .venv/bin/python bench/latency_additivity.py [--space sst_paper] [--target cpu-fp32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sst_edge.cost.onnx_export import export_for_target
from sst_edge.device.session import make_session
from sst_edge.device.targets import load_target
from sst_edge.space.config import load_space
from sst_edge.space.model import SSTSpace
from sst_edge.space.supernet import random_sample


def parts_of(sub: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    """(name, module, its real input) for every part of a frozen subnet, in forward order."""
    mods: list[tuple[str, torch.nn.Module]] = [("embed", sub.embed)]
    for i, stage in enumerate(sub.stages):
        if i:
            mods.append((f"downsample{i + 1}", sub.downsamples[i - 1]))
        mods += [(f"s{i + 1}_l{j + 1}", b) for j, b in enumerate(stage)]
    mods.append(("head", sub.head))
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, a, k=k: inputs.__setitem__(k, a[0].clone()))
             for k, m in mods]
    with torch.no_grad():
        sub(x)
    for h in hooks:
        h.remove()
    return [(k, m, inputs[k]) for k, m in mods]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="sst_tiny")
    ap.add_argument("--target", default="cpu-fp32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=0, help="runs per round (default: ~1 s of work)")
    args = ap.parse_args()
    config, target = load_space(args.space), load_target(args.target)
    torch.set_num_threads(max(target.threads, 1))
    sub = SSTSpace(config).freeze(random_sample(config, random.Random(args.seed))).eval()
    x = torch.randn(config.input_shape(1))
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, tuple[Path, np.ndarray]] = {}
        for name, dyn in (("whole", True), ("whole_static", False)):
            t = dataclasses.replace(target, dynamic_batch=dyn)
            files[name] = (export_for_target(sub, x, Path(tmp) / f"{name}.onnx", t), x.numpy())
        for name, m, inp in parts_of(sub, x):
            files[name] = (export_for_target(m, inp, Path(tmp) / f"{name}.onnx", target), inp.numpy())
        wall: dict[str, list[float]] = {k: [] for k in files}
        cpu: dict[str, list[float]] = {k: [] for k in files}
        for r in range(args.rounds):
            for key in sorted(files, key=lambda _k: random.Random(r).random()):
                path, inp = files[key]
                sess = make_session(path, target)
                feed = {"input": inp}
                for _ in range(3):
                    sess.run(None, feed)
                t0 = time.perf_counter()
                sess.run(None, feed)
                n = args.runs or max(5, int(1.0 / max(time.perf_counter() - t0, 1e-4)))
                for _ in range(n):
                    w, c = time.perf_counter_ns(), time.thread_time_ns()
                    sess.run(None, feed)
                    cpu[key].append((time.thread_time_ns() - c) / 1e6)
                    wall[key].append((time.perf_counter_ns() - w) / 1e6)
                del sess
    print(f"{args.space} on {args.target}, seed {args.seed}: median ms over {args.rounds} interleaved rounds")
    for clock, d in (("wall", wall), ("thread", cpu)):
        med = {k: statistics.median(v) for k, v in d.items()}
        parts = sum(v for k, v in med.items() if not k.startswith("whole"))
        print(f"  {clock:>6}: sum of parts {parts:9.3f}  whole {med['whole']:9.3f} "
              f"(x{med['whole'] / parts:.3f})  whole, static batch {med['whole_static']:9.3f} "
              f"(x{med['whole_static'] / parts:.3f})")
    ratio = statistics.median(wall["whole"]) / statistics.median(cpu["whole"])
    print(f"  wall / thread, whole model: {ratio:.3f}")


if __name__ == "__main__":
    main()
