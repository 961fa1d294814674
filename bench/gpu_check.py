"""The host half on a GPU, end to end, in a few minutes: what `bench/gpu_check.sh` runs on a lent GPU
machine. Every figure goes into one JSON file (--out); each part that cannot run here says why instead.

1. train sst_tiny for 2 epochs on the GPU in fp32, bf16 and fp16 (time per step, losses, steps fp16 did
   not take, the precision `auto` picks);
2. resume the fp32 run's last epoch on the CPU (a GPU checkpoint, CPU tensors), and compare its weights
   with the GPU's;
3. eval --weights on the GPU and on the CPU, the same episodes (accuracy and CI each);
4. a short search on the GPU;
5. export for cpu-fp32 with PyTorch-on-GPU parity; for cuda-fp16 (its fp16 graph against PyTorch, on
   ONNX Runtime's CUDA provider where it has one, else its CPU provider) and jetson-trt-fp16 (the fp16
   engine where ONNX Runtime has TensorRT);
6. bench/train_step.py's figures for sst_tiny and sst_paper on the GPU.

Run: python3 bench/gpu_check.py --out OUT.json [--work DIR] [--device cuda] [--allow-cpu]
(--allow-cpu: run the same flow without a GPU, as a check of this script.)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from sst_edge.data.synth import generate_synthetic
from sst_edge.device.session import available_providers
from sst_edge.fileio import atomic_write_json
from sst_edge.search.experiment import run_search
from sst_edge.search.settings import SearchSettings
from sst_edge.train.checkpoint import checkpoint_paths
from sst_edge.train.config import ShrinkConfig, TrainConfig
from sst_edge.train.device import resolve_device, resolve_precision
from sst_edge.train.evaluate import evaluate
from sst_edge.train.loop import train_supernet

HERE = Path(__file__).parent


def part(report: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run one part; its result (or its error, with the traceback's last lines) and its time go in, and
    the report is written again (a run stopped by its time limit keeps the parts it finished)."""
    t0 = time.perf_counter()
    print(f"[gpu_check] {name} ...", flush=True)
    try:
        result = fn()
        report["parts"][name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 2), **(result or {})}
    except Exception as e:  # one failing part must not hide the others' figures
        report["parts"][name] = {"ok": False, "seconds": round(time.perf_counter() - t0, 2),
                                 "error": f"{type(e).__name__}: {e}",
                                 "traceback": traceback.format_exc().splitlines()[-6:]}
        result = None
    print(f"[gpu_check] {name}: {json.dumps(report['parts'][name], default=str)[:400]}", flush=True)
    atomic_write_json(report["out"], report)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/sst-gpu-check")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--allow-cpu", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: torch sees no CUDA device (pass --allow-cpu to check the script on a CPU)")
        return 2
    dev_spec = args.device if torch.cuda.is_available() else "cpu"
    dev = resolve_device(dev_spec)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report: dict[str, Any] = {
        "host": {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                 "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
                 "ort_providers": available_providers(),
                 "auto_precision": resolve_precision("auto", dev).to_dict()},
        "out": args.out, "parts": {}}
    t_all = time.perf_counter()
    data = generate_synthetic(work / "data", seed=0, progress=False)
    runs = work / "runs"

    workers = 4 if dev.type == "cuda" else 1

    def config(precision: str, device: str = dev_spec) -> TrainConfig:
        return TrainConfig(space="sst_tiny", data=str(data), episodes=40, epochs=2, val_episodes=20,
                           lr_warmup=10, workers=workers, precision=precision, device=device,
                           shrink=ShrinkConfig(warmup=1, period=1, min_count=3))

    def train(precision: str) -> dict[str, Any]:
        r = train_supernet(config(precision), runs / precision, progress=False)
        rec = json.loads((runs / precision / "run.json").read_text())
        epochs = [json.loads(x) for x in (runs / precision / "metrics.jsonl").read_text().splitlines()]
        epochs = [e for e in epochs if e["kind"] == "epoch"]
        return {"steps": r.steps, "seconds": r.seconds, "seconds_per_step": r.seconds / r.steps,
                "loss": [e["train_loss"] for e in epochs], "val_acc": r.val_acc,
                "untaken_steps": sum(e["untaken_steps"] for e in epochs), "precision": rec["precision"],
                "device": rec["device"]}

    for p in ("fp32", "bf16", "fp16"):
        part(report, f"train_{p}", lambda p=p: train(p))

    def resume_on_cpu() -> dict[str, Any]:
        cut = runs / "fp32-cpu"
        shutil.copytree(runs / "fp32", cut)
        for f in checkpoint_paths(cut, 2):
            f.unlink()
        (cut / "supernet.safetensors").unlink()
        r = train_supernet(config("fp32", "cpu"), cut, resume=True, progress=False)
        a, b = (load_file(str(d / "supernet.safetensors")) for d in (runs / "fp32", cut))
        diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
        return {"steps": r.steps, "max_abs_weight_diff_gpu_vs_cpu_resumed": diff,
                "same_keys": a.keys() == b.keys()}

    part(report, "resume_on_cpu", resume_on_cpu)

    def evals() -> dict[str, Any]:
        out = {}
        for where in (dev_spec, "cpu"):
            r = evaluate("sst_tiny", runs / "fp32", data, episodes=300, workers=workers, device=where,
                         progress=False)
            head = next(iter(r.accuracy))
            out[where] = {"accuracy": r.accuracy[head], "ci95": r.ci95[head], "episodes": r.episodes}
        return out

    part(report, "eval", evals)

    def search() -> dict[str, Any]:
        s = SearchSettings(trials=8, population=4, sample_size=2, episodes=16, budget_gflops=0.0115,
                           rescore_top=2, rescore_episodes=40, device=dev_spec)
        summary = run_search("sst_tiny", runs / "fp32", data, work / "search", s)
        best = summary.data["best"]
        return {"trials": summary.data["trials"], "best_rescore": best["rescore"],
                "search_seconds": summary.data["search_seconds"]}

    part(report, "search", search)

    def export(target: str) -> dict[str, Any]:
        from sst_edge.deploy.export import export_model

        card = export_model(work / "search" / "best.json", runs / "fp32", target, work / "models" / target,
                            measure=True, progress=False, device=dev_spec)
        return {"parity": card.parity, "latency": card.latency, "tensorrt": card.tensorrt}

    for t in ("cpu-fp32", "cuda-fp16", "jetson-trt-fp16"):
        part(report, f"export_{t}", lambda t=t: export(t))

    def train_step() -> dict[str, Any]:
        js = work / "train_step.json"
        spaces = ["sst_tiny", "sst_paper"] if dev.type == "cuda" else ["sst_tiny"]  # --allow-cpu: quick
        cmd = [sys.executable, str(HERE / "train_step.py"), "--device", dev_spec, "--rounds", "3", "--spaces",
               *spaces,
               "--workers", str(workers), "--json", str(js), "--plot", str(work / "train_step.png"),
               "--data-root", str(work / "train_step_data")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout[-1500:] + proc.stderr[-1500:])
        return {"table": [x for x in proc.stdout.splitlines() if x.startswith("|")],
                "results": json.loads(js.read_text())["results"]}

    part(report, "train_step", train_step)
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    atomic_write_json(args.out, report)
    print(f"[gpu_check] wrote {args.out} in {report['seconds']} s", flush=True)
    return 0 if all(p["ok"] for p in report["parts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
