"""Per-clip latency of an exported subnet: ONNX Runtime vs PyTorch eager, fp32 vs int8, as ratios.

All variants run in this one process, interleaved round by round in shuffled order (the profiler's
`time_items`), one thread each (the cpu-fp32/cpu-int8 targets' setting), batch 1, timed with the calling
thread's CPU clock, so the ratios hold even on a shared 2-vCPU host. Workload: a subnet with the paper's
cost (search_spaces/sst_paper.paper_cost.json, 8x224x224, 13.62 G multiply-adds, SABs and TABs in every
stage; not the paper's own searched architecture, see bench/paper_cost_subnet.py) with freshly initialised
supernet weights: speed does not depend on the weights. Variants: PyTorch eager (SDPA), ORT fp32 (the
exported, offline-optimised model.onnx), ORT int8 dynamic and int8 static (MatMul/Gemm, calibrated on
synthetic clips).

Accuracy: int8 costs accuracy only through trained weights, and no sst_paper supernet is trained on this
CPU, so the accuracy change is measured on a trained sst_tiny run (`--run`, `--subnet`, `--data`, e.g. the
demo's demo_out/run, demo_out/search/best.json, demo_out/data): fp32 and int8 ORT models scored on the same
validation episodes.

Run: .venv/bin/python bench/export.py [--rounds 6] [--run DIR --subnet JSON --data DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

from sst_edge.cost.profile import ort_opener, resolve_clock, timed, torch_opener, torch_threads
from sst_edge.data.synth import generate_synthetic
from sst_edge.deploy.export import export_model, load_export_subnet
from sst_edge.device.card import MODEL_FILE
from sst_edge.device.targets import load_target
from sst_edge.device.timing import TimingPolicy
from sst_edge.space.config import load_space
from sst_edge.space.supernet import build_supernet
from sst_edge.train.checkpoint import save_tensors
from sst_edge.train.evaluate import SUPERNET_FORMAT

ROOT = Path(__file__).resolve().parents[1]
PAPER_SUBNET = ROOT / "search_spaces" / "sst_paper.paper_cost.json"


def paper_cost_models(tmp: Path) -> tuple[torch.nn.Module, dict[str, Path], torch.Tensor]:
    config = load_space("sst_paper")
    torch.manual_seed(0)
    weights = tmp / "supernet.safetensors"
    save_tensors(weights, build_supernet(config).state_dict(),
                 {"format": SUPERNET_FORMAT, "space": config.name, "space_hash": config.hash})
    data = generate_synthetic(tmp / "synth", clips=3, seed=0, progress=False)
    paths = {}
    for key, target, mode in [("ort fp32", "cpu-fp32", None), ("ort int8 dynamic", "cpu-int8", "dynamic"),
                              ("ort int8 static", "cpu-int8", "static")]:
        out = tmp / key.replace(" ", "_")
        export_model(PAPER_SUBNET, weights, target, out, data=data if mode == "static" else None,
                     quantization=mode, episodes=0, measure=False, progress=True)
        paths[key] = out / MODEL_FILE
    _, _, module, _ = load_export_subnet(PAPER_SUBNET, weights)
    return module, paths, torch.randn(config.input_shape(1), generator=torch.Generator().manual_seed(0))


def speed(rounds: int) -> dict[str, float]:
    fp32, int8 = load_target("cpu-fp32"), load_target("cpu-int8")
    policy = dataclasses.replace(TimingPolicy(rounds=rounds, max_rounds=rounds), clock=resolve_clock(fp32))
    with tempfile.TemporaryDirectory() as tmp, torch_threads(fp32.threads):
        module, paths, x = paper_cost_models(Path(tmp))
        openers = {"torch eager fp32": torch_opener(module, fp32, x)}
        for key, p in paths.items():
            openers[key] = ort_opener(p, int8 if "int8" in key else fp32, x.numpy())
        timings, _ = timed(openers, policy, 0, "time sst_paper variants", True)
    return {k: t.median_ms for k, t in timings.items()}


def accuracy(run: str, subnet: str, data: str, episodes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = {}
        for mode in ("dynamic", "static"):
            card = export_model(subnet, run, "cpu-int8", Path(tmp) / mode, data=data, quantization=mode,
                                episodes=episodes, measure=False, progress=True)
            acc = card.extra["quantization"]["accuracy"]
            out["fp32"] = acc["fp32"]
            out[f"int8 {mode}"] = acc["int8"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (~10+ runs each, default 6)")
    ap.add_argument("--run", help="a trained sst_tiny run folder, for the int8 accuracy change")
    ap.add_argument("--subnet", help="a subnet document of that run's space (best.json)")
    ap.add_argument("--data", help="the dataset the run was trained on")
    ap.add_argument("--episodes", type=int, default=300, help="validation episodes (default 300)")
    args = ap.parse_args(argv)

    ms = speed(args.rounds)
    eager, fp32 = ms["torch eager fp32"], ms["ort fp32"]
    print("\nsst_paper paper-cost subnet (13.62 G multiply-adds), 8x224x224, batch 1, 1 thread, "
          "thread-CPU clock, interleaved rounds")
    print(f"{'variant':<20}{'median ms':>10}{'vs eager':>10}{'vs ort fp32':>13}")
    for k, v in ms.items():
        print(f"{k:<20}{v:>10.1f}{eager / v:>10.2f}{fp32 / v:>13.2f}")
    print(f"\nORT fp32 / PyTorch eager speed-up: {eager / fp32:.2f}x (goal 1.5x)")
    for mode in ("dynamic", "static"):
        print(f"int8 {mode} / ORT fp32 speed-up: {fp32 / ms[f'ort int8 {mode}']:.2f}x (goal 1.5x)")
    if args.run and args.subnet and args.data:
        acc = accuracy(args.run, args.subnet, args.data, args.episodes)
        print(f"\nint8 accuracy change ({args.episodes} 5-way 1-shot validation episodes, trained sst_tiny "
              "run):")
        for k, v in acc.items():
            print(f"  {k:<14}{v:.2%}" + ("" if k == "fp32" else f"  ({100 * (v - acc['fp32']):+.2f} points)"))
    else:
        print("\n(pass --run, --subnet and --data of a trained run for the int8 accuracy change)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
