"""One supernet training step in each precision, side by side, and the loader's clips/s beside the step's:
which of the two bounds training on this host.

For each space (sst_tiny on the built-in synthetic set; sst_paper on a synthetic set of 320x240 clips, the
size of UCF101 and HMDB51, decoded straight to the model's 256-pixel shorter side): the real training step
of `sst-edge train` (`_Trainer.optimizer_step`: autocast forward, the head and the loss in fp32, backward,
clipping, AdamW) on one 5-way 1-shot episode with 1 query per class (10 clips), one subnet per round, every
precision in every round, the order alternating (A B, B A, ...). Reported: the median time per step, clips
per second, and each precision's speed-up over fp32 (geometric mean of the per-round ratios with its 95%
t interval; significant when the interval excludes 1). Then the loader (`sst-edge train`'s own DataLoader:
--workers processes decoding with each decoder) in clips per second, and which one bounds a step.

The host's CPU features are printed first: bf16 is fast on a CPU only with AMX or AVX512-BF16.
torchcodec is timed too where it imports (its PyPI wheels need a CUDA build of torch).

Run: .venv/bin/python bench/train_step.py [--spaces sst_tiny sst_paper] [--rounds 3] [--device auto]
     [--threads N] [--workers 1] [--json bench/train_step.json] [--plot bench/train_step.png]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy import stats

from sst_edge.data.episodes import to_device
from sst_edge.data.synth import generate_synthetic
from sst_edge.device.decoders import decord_available
from sst_edge.device.fingerprint import cpu_features, cpu_model
from sst_edge.fileio import atomic_write_json
from sst_edge.space.restriction import full_restriction
from sst_edge.space.supernet import activate
from sst_edge.train.config import TrainConfig
from sst_edge.train.device import resolve_precision
from sst_edge.train.distributed import init_distributed
from sst_edge.train.loop import _Trainer, subnet_for_step

DATASETS = {"sst_tiny": {"size": 64, "frames": 16, "classes": 24, "clips": 10},
            "sst_paper": {"size": 240, "frames": 48, "classes": 12, "clips": 4}}
LOADER_EPISODES = 6


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dataset(space: str, root: Path) -> Path:
    spec = DATASETS[space]
    out = root / f"{space}-{spec['size']}"
    if not (out / "classes.json").is_file():
        generate_synthetic(out, classes=spec["classes"], clips=spec["clips"], frames=spec["frames"],
                           size=spec["size"], seed=0, progress=False)
    return out


def speedup(base: list[float], other: list[float]) -> dict[str, Any]:
    """base / other per round: geometric mean, 95% t interval of the log ratio, significance."""
    logs = np.log(np.asarray(base) / np.asarray(other))
    n = len(logs)
    mean = float(logs.mean())
    half = float(stats.t.ppf(0.975, n - 1) * logs.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    lo, hi = math.exp(mean - half), math.exp(mean + half)
    return {"speedup": math.exp(mean), "lo": lo, "hi": hi, "rounds": n,
            "significant": bool(n > 1 and (lo > 1 or hi < 1))}


def step_times(trainer: _Trainer, precisions: list[str], rounds: int) -> dict[str, list[float]]:
    dev = trainer.device
    ep = to_device(next(iter(trainer._loader(1))), dev)
    restriction = full_restriction(trainer.space).choices
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for r in range(rounds + 1):  # round 0 warms up every precision
        sample = subnet_for_step(trainer.space, 0, r, restriction)
        activate(trainer.supernet, trainer.space, sample)
        order = precisions if r % 2 == 0 else precisions[::-1]
        for p in order:
            trainer.precision = resolve_precision(p, dev)
            trainer.scaler = trainer.precision.scaler(dev)
            sync(dev)
            t0 = time.perf_counter()
            trainer.optimizer_step(iter([ep]))
            sync(dev)
            if r:
                times[p].append(time.perf_counter() - t0)
        print(f"  round {r}: " + ", ".join(f"{p} {times[p][-1]:.3f} s" for p in precisions if r), flush=True)
    return times


def loader_rate(trainer: _Trainer, decoder: str, clips_per_episode: int) -> float:
    """Clips per second of the training DataLoader with this decoder (the first episode, which starts the
    workers, is not counted)."""
    trainer.pre = replace(trainer.pre, decoder=decoder)
    it = iter(trainer._loader(1))
    next(it)
    t0 = time.perf_counter()
    for _ in range(LOADER_EPISODES):
        next(it)
    return LOADER_EPISODES * clips_per_episode / (time.perf_counter() - t0)


def torchcodec_rate(trainer: _Trainer, n: int = 12) -> float | None:
    """Decode-only clips/s of torchcodec on the same clips (8 frames at the segment centres, resized by
    torch to the loader's size), or None where it does not import."""
    try:
        from torchcodec.decoders import VideoDecoder  # optional: its PyPI wheels need CUDA torch
    except (ImportError, OSError, RuntimeError):
        return None
    from sst_edge.device.preprocess import resized_shape, sample_indices

    paths = [p for c in trainer.splits.train.classes for p in trainer.splits.train.clips[c]][:n]
    t0 = time.perf_counter()
    for p in paths:
        d = VideoDecoder(str(p), dimension_order="NCHW", seek_mode="exact")
        idx = sample_indices(d.metadata.num_frames, trainer.pre.frames, False).tolist()
        x = d.get_frames_at(idx).data
        h, w = resized_shape(x.shape[2], x.shape[3], trainer.pre.resize)
        torch.nn.functional.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=False)
    return len(paths) / (time.perf_counter() - t0)


def bench_space(space: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    data = dataset(space, root)
    d = init_distributed(args.device)
    cfg = TrainConfig(space=space, data=str(data), way=5, shot=1, query=1, episodes=10, epochs=1,
                      val_episodes=0, workers=args.workers, threads=args.threads, device=args.device,
                      precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _Trainer(cfg, Path(tmp), d, None, None, False)
    clips = cfg.way * (cfg.shot + cfg.query)
    precisions = ["fp32", "bf16"] + (["fp16"] if d.device.type == "cuda" else [])
    shape = f"{trainer.space.frames}x{trainer.space.size}x{trainer.space.size}"
    print(f"{space}: {clips} clips of {shape} per step on {d.device}, {trainer.threads} threads", flush=True)
    times = step_times(trainer, precisions, args.rounds)
    steps = {p: {"median_s": statistics.median(t), "clips_per_s": clips / statistics.median(t), "times": t}
             for p, t in times.items()}
    for p in precisions[1:]:
        steps[p]["vs_fp32"] = speedup(times["fp32"], times[p])
    decoders = ["pyav"] + (["decord"] if decord_available() else [])
    loader = {dec: loader_rate(trainer, dec, clips) for dec in decoders}
    tc = torchcodec_rate(trainer)
    auto = resolve_precision("auto", d.device).name
    step_rate = steps[auto]["clips_per_s"]
    best = max(loader, key=loader.get)
    bound = "loader" if loader[best] < step_rate else "step"
    return {"space": space, "device": str(d.device), "threads": trainer.threads, "workers": args.workers,
            "clips_per_step": clips, "frames": trainer.space.frames, "size": trainer.space.size,
            "data": {"path": str(data), **DATASETS[space]}, "steps": steps, "auto_precision": auto,
            "loader_clips_per_s": loader, "torchcodec_decode_clips_per_s": tc, "bound_by": bound}


def plot(results: list[dict[str, Any]], path: str) -> None:
    fig = Figure(figsize=(4 + 2.5 * len(results), 3.4))
    for i, r in enumerate(results):
        ax = fig.add_subplot(1, len(results), i + 1)
        names = [f"step {p}" for p in r["steps"]] + [f"loader {d}" for d in r["loader_clips_per_s"]]
        vals = [s["clips_per_s"] for s in r["steps"].values()] + list(r["loader_clips_per_s"].values())
        colors = ["#4a78b0"] * len(r["steps"]) + ["#d08a3c"] * len(r["loader_clips_per_s"])
        ax.bar(range(len(vals)), vals, color=colors)
        ax.set_xticks(range(len(vals)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("clips / s")
        ax.set_title(f"{r['space']} on {r['device']} ({r['threads']} threads)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", nargs="+", default=["sst_tiny", "sst_paper"], choices=sorted(DATASETS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: cores - workers)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--data-root", default="runs/train_step_data")
    ap.add_argument("--json", default="bench/train_step.json")
    ap.add_argument("--plot", default="bench/train_step.png")
    args = ap.parse_args()
    feats = cpu_features()
    host = {"cpu": cpu_model(), "features": [k for k, v in feats.items() if v], "torch": torch.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(f"host: {host['cpu']} ({', '.join(host['features']) or 'no listed features'}); "
          f"torch {host['torch']}; GPU: {host['gpu'] or 'none'}", flush=True)
    results = [bench_space(s, args, Path(args.data_root)) for s in args.spaces]
    print("\n| space | device | precision | s / step (median) | clips / s | vs fp32 [95% CI] | significant |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for p, s in r["steps"].items():
            v = s.get("vs_fp32")
            sig = "yes" if v and v["significant"] else "no"
            cmp = f"{v['speedup']:.2f}x [{v['lo']:.2f}, {v['hi']:.2f}] | {sig}" if v else "1 | -"
            print(f"| {r['space']} | {r['device']} | {p} | {s['median_s']:.3f} | {s['clips_per_s']:.1f} | "
                  f"{cmp} |")
    print("\n| space | loader workers | decoder | loader clips / s | step clips / s (auto precision) | "
          "bound by |")
    print("|---|---|---|---|---|---|")
    for r in results:
        rate = r["steps"][r["auto_precision"]]["clips_per_s"]
        for dec, c in r["loader_clips_per_s"].items():
            print(f"| {r['space']} | {r['workers']} | {dec} | {c:.1f} | {rate:.1f} ({r['auto_precision']}) | "
                  f"{'loader' if c < rate else 'step'} |")
        if r["torchcodec_decode_clips_per_s"] is None:
            print(f"| {r['space']} | - | torchcodec | not importable here | | |")
        else:
            tc = r["torchcodec_decode_clips_per_s"]
            print(f"| {r['space']} | 0 | torchcodec (decode only) | {tc:.1f} | | |")
    atomic_write_json(args.json, {"host": host, "rounds": args.rounds, "results": results})
    plot(results, args.plot)
    print(f"wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
