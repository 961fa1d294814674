"""Does mixed precision cost accuracy? The same sst_tiny run on the synthetic set trained in each precision
(`sst-edge train --precision P`, everything else equal), then every run's largest subnet of the whole space
(the same architecture for all) scored in fp32 on the same test episodes: accuracy with its 95% CI, and
each precision's difference from fp32 paired episode by episode (95% CI by the normal approximation,
significant when it excludes 0; Wilcoxon signed-rank p beside it). Time per optimizer step is each run's
own (its run.json): on a CPU without native bf16 that figure is the emulation's, not bf16's.

Run: .venv/bin/python bench/precision.py --out runs/precision [--epochs 8 --episodes 100
     --eval-episodes 2000 --precisions fp32 bf16 --device auto]
Runs already finished in OUT with the same configuration are reused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sst_edge.cost.flops import extreme_sample
from sst_edge.data.synth import generate_synthetic
from sst_edge.device.fingerprint import cpu_features, cpu_model
from sst_edge.fileio import atomic_write_json, read_json
from sst_edge.space.config import load_space
from sst_edge.train.config import TrainConfig
from sst_edge.train.evaluate import evaluate
from sst_edge.train.loop import train_supernet

sys.path.insert(0, str(Path(__file__).parent))
from ablation import ci95, paired  # noqa: E402  (the ablation's paired comparison, one definition)

SPACE = "sst_tiny"


def train(cfg: TrainConfig, run: Path) -> dict[str, Any]:
    rec = run / "run.json"
    if rec.is_file():
        old = read_json(rec, "run record")
        if old.get("status") == "finished" and TrainConfig.from_dict(old["config"]).differences(cfg) == []:
            return old
    train_supernet(cfg, run, progress=False)
    return read_json(rec, "run record")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/precision")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--eval-episodes", type=int, default=2000)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default="bench/precision.png")
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "data"
    if not (data / "classes.json").is_file():
        generate_synthetic(data, seed=0, progress=False)
    config = load_space(SPACE)
    sample = extreme_sample(config, None, largest=True)
    runs: dict[str, Any] = {}
    for p in args.precisions:
        t0 = time.perf_counter()
        cfg = TrainConfig(space=SPACE, data=str(data.resolve()), episodes=args.episodes, epochs=args.epochs,
                          val_episodes=20, seed=args.seed, precision=p, device=args.device, workers=1)
        rec = train(cfg, out / "runs" / p)
        r = evaluate(SPACE, out / "runs" / p, data, sample=sample, episodes=args.eval_episodes,
                     workers=1, device=args.device, progress=False)
        head = next(iter(r.accuracy))
        acc = np.asarray(r.per_episode[0], np.float64)
        runs[p] = {"acc": acc, "head": head, "precision": rec["precision"], "device": rec["device"],
                   "seconds_per_step": rec["result"]["seconds"] / rec["result"]["steps"],
                   "wall_s": time.perf_counter() - t0}
        print(f"{p}: {100 * acc.mean():.2f}% +- {100 * ci95(acc):.2f}% ({head}, {acc.size} episodes), "
              f"{runs[p]['seconds_per_step']:.3f} s/step", flush=True)
    base = args.precisions[0]
    rows = []
    for p in args.precisions:
        row = {"precision": p, "accuracy": float(runs[p]["acc"].mean()), "ci95": ci95(runs[p]["acc"]),
               "seconds_per_step": runs[p]["seconds_per_step"], "used": runs[p]["precision"],
               "device": runs[p]["device"]}
        if p != base:
            row["vs_" + base] = paired(runs[base]["acc"], runs[p]["acc"])
        rows.append(row)
    doc = {"space": SPACE, "epochs": args.epochs, "episodes": args.episodes, "seed": args.seed,
           "eval_episodes": args.eval_episodes, "subnet": "largest of the whole space", "sample": sample,
           "host": {"cpu": cpu_model(), "features": cpu_features()}, "results": rows}
    atomic_write_json(out / "precision.json", doc)
    print(f"\n| precision | accuracy % (95% CI) | s / step | vs {base}, points [95% CI] | significant | "
          "Wilcoxon p |\n|---|---|---|---|---|---|")
    for row in rows:
        d = row.get("vs_" + base)
        cmp = (f"{100 * d['diff']:+.2f} [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}] | "
               f"{'yes' if d['significant'] else 'no'} | {d['wilcoxon_p']:.3g}") if d else "- | - | -"
        print(f"| {row['precision']} | {100 * row['accuracy']:.2f} +- {100 * row['ci95']:.2f} | "
              f"{row['seconds_per_step']:.3f} | {cmp} |")
    print(f"host: {cpu_model()}; features: {', '.join(k for k, v in cpu_features().items() if v)}")
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    ax.bar(range(len(rows)), [100 * r["accuracy"] for r in rows], yerr=[100 * r["ci95"] for r in rows],
           capsize=4, color="#4a78b0")
    ax.set_xticks(range(len(rows)), [r["precision"] for r in rows])
    ax.set_ylabel("5-way 1-shot test accuracy %")
    ax.set_title(f"{SPACE}, {args.epochs}x{args.episodes} episodes, {args.eval_episodes} test episodes",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"wrote {out / 'precision.json'} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
