"""Does a search over one space beat one over another, under one latency budget? By default sst_plus_tiny
(tab, sab + tps, tam, msq) against sst_tiny (tab, sab); `--spaces sst_plus_tiny sst_plus_bl_tiny` asks
whether the per-stage big-little structure pays, and `--progressive` also runs each side's search in phases
(search --progressive) and compares it with the joint evolution at the same trial count.

Same synthetic set, same training budget (epochs x episodes, seed: the same episode sequence), same
latency budget (ms, each space's own table, both profiled here in this run with one timing policy), same
search settings. Each side: train a supernet (train_supernet), search under the budget (run_search, with
its random baseline), then score the search's best subnet on the same fixed episodes of the held-out TEST
classes (5-way 1-shot) and on the reversed pairs (2-way episodes of the test classes that are each other
played backwards), with `sst-edge eval`'s protocol (train.evaluate.evaluate).

Statistics as bench/ablation.py: each accuracy with its 95% CI over episodes; plus - tiny paired on the
same episodes (mean difference, 95% CI by the normal approximation, "significant" when it excludes 0;
Wilcoxon signed-rank p beside it). One training run per side: the CIs cover episode sampling only.

Writes OUT/results.json and OUT/comparison.md; the runs, searches and tables stay under OUT.

Run: .venv/bin/python bench/operators_search.py --out runs/operators_search [--epochs 6 --episodes 80
     --eval-episodes 300 --seed 0] [--data DIR] [--quick] [--spaces REFERENCE OTHER] [--progressive]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from ablation import ci95, paired  # the same statistics as the ablation (bench/ablation.py)

from sst_edge.cost.flops import extreme_sample
from sst_edge.cost.latency import load_table, read_table
from sst_edge.cost.profile import profile_space
from sst_edge.data.synth import generate_synthetic
from sst_edge.device.targets import load_target
from sst_edge.device.timing import TimingPolicy
from sst_edge.fileio import atomic_write_json, atomic_write_text
from sst_edge.search.experiment import run_search
from sst_edge.search.report import comparison_verdict
from sst_edge.search.settings import SearchSettings
from sst_edge.space.config import load_space
from sst_edge.train.config import TrainConfig
from sst_edge.train.evaluate import evaluate
from sst_edge.train.loop import train_supernet

SPACES = ("sst_tiny", "sst_plus_tiny")  # the default pair: (reference, other)
TARGET = "cpu-fp32"
T0 = time.perf_counter()
# Shorter than the shipped tables' policy (8 rounds): both tables are timed here, one after the other,
# on a machine other sessions share, so disturbed rounds are timed again once and not waited out.
POLICY = TimingPolicy(warmup_runs=2, rounds=3, max_rounds=4, min_runs=10, max_runs=100, min_time_s=0.1,
                      retries=1, quiet_wait_s=2.0, wait_budget_s=30.0)


def say(msg: str) -> None:
    s = int(time.perf_counter() - T0)
    print(f"[operators_search {s // 60:02d}:{s % 60:02d}] {msg}", file=sys.stderr, flush=True)  # progress


def tables(out: Path, quick: bool, spaces: tuple[str, ...]) -> dict[str, Path]:
    paths = {}
    for name in spaces:
        path = out / "tables" / f"{name}.{TARGET}.json"
        if not path.is_file() or read_table(path).space_hash != load_space(name).hash:
            say(f"profiling {name} on {TARGET} (onnxruntime)")
            table = profile_space(load_space(name), load_target(TARGET), policy=TimingPolicy.quick() if quick
                                  else POLICY, progress=False)
            table.save(path)
        paths[name] = path
    return paths


def latency_budget(paths: dict[str, Path], frac: float, reference: str) -> float:
    """`frac` of the way from the reference space's least-FLOPs subnet to its most-FLOPs one, in its
    table's ms."""
    config = load_space(reference)
    table = load_table(paths[reference], config)
    lo = table.predict_ms(extreme_sample(config))
    hi = table.predict_ms(extreme_sample(config, largest=True))
    return round(lo + frac * (hi - lo), 4)


def side(name: str, args: argparse.Namespace, data: Path, out: Path, table: Path, budget_ms: float) -> dict:
    run = out / "runs" / name
    cfg = TrainConfig(space=name, data=str(data), episodes=args.episodes, epochs=args.epochs,
                      val_episodes=args.val_episodes, seed=args.seed)
    say(f"{name}: training {cfg.epochs} epochs x {cfg.episodes} episodes")
    r = train_supernet(cfg, run).to_dict()
    say(f"{name}: loss {r['first_epoch_loss']:.3f} -> {r['last_epoch_loss']:.3f}, {r['seconds']:.0f} s, "
        f"{len(r['dropped'])} candidates dropped")
    settings = SearchSettings(trials=args.trials, population=args.population, sample_size=args.sample_size,
                              episodes=args.search_episodes, seed=args.seed, budget_ms=budget_ms,
                              table=str(table), rescore_top=args.rescore_top,
                              rescore_episodes=args.rescore_episodes, progressive=args.progressive)
    say(f"{name}: search, {settings.trials} trials + as many random, budget {budget_ms} ms")
    summary = run_search(name, run, data, out / "search" / name, settings)
    best = json.loads((out / "search" / name / "best.json").read_text())["sample"]
    scores = {}
    for rev in (False, True):
        say(f"{name}: test episodes{' (reversed pairs)' if rev else ''}")
        e = evaluate(name, run, data, split="test", sample=best, episodes=args.eval_episodes, seed=args.seed,
                     reversed_pairs=rev, progress=False)
        scores["reversed" if rev else "all"] = np.asarray(e.per_episode[0], dtype=np.float64)
    ops = [v for k, v in best.items() if k.endswith("_op")]
    prog = summary.get("progressive")
    return {"structures": {k: v for k, v in best.items() if k.endswith("_structure")},
            "progressive": None if prog is None else {
                "vs_joint": prog["vs_joint"], "joint_rescore": prog["joint_best"]["rescore"],
                "progressive_rescore": summary["best"]["rescore"],
                "phases": [{k: ph[k] for k in ("phase", "trials", "skipped")} for ph in prog["phases"]]},
            "train": {k: r.get(k) for k in ("first_epoch_loss", "last_epoch_loss", "seconds", "dropped",
                                            "space_size", "full_space_size")},
            "best": best, "ops": {op: ops.count(op) for op in dict.fromkeys(ops)},
            "latency_ms": load_table(table, load_space(name)).predict_ms(best),
            "summary_best": summary.get("best"), "scores": scores}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/operators_search")
    ap.add_argument("--data", help="a synthetic dataset (default: generated into OUT/data with --seed)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--episodes", type=int, default=80)
    ap.add_argument("--val-episodes", type=int, default=20)
    ap.add_argument("--eval-episodes", type=int, default=300)
    ap.add_argument("--spaces", nargs=2, default=list(SPACES), metavar=("REFERENCE", "OTHER"),
                    help="the two spaces; the budget comes from the reference's table")
    ap.add_argument("--progressive", action="store_true",
                    help="each side's search also runs in phases; compare it with the joint evolution")
    ap.add_argument("--budget-frac", type=float, default=0.5,
                    help="latency budget: this fraction of the way from the reference space's cheapest to "
                         "its largest")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--sample-size", type=int, default=3)
    ap.add_argument("--search-episodes", type=int, default=30)
    ap.add_argument("--rescore-top", type=int, default=3)
    ap.add_argument("--rescore-episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run (2 x 12 episodes, 20 test episodes)")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.episodes, args.eval_episodes, args.val_episodes = 2, 12, 20, 4
        args.trials, args.population, args.sample_size, args.search_episodes = 4, 4, 2, 6
        args.rescore_top, args.rescore_episodes = 2, 10
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else out / "data"
    if not (data / "classes.json").is_file():
        say(f"generating the synthetic dataset into {data}")
        generate_synthetic(data, clips=5 if args.quick else 10, seed=args.seed, overwrite=True,
                           progress=False)
    spaces = tuple(args.spaces)
    ref, other = spaces
    paths = tables(out, args.quick, spaces)
    budget = latency_budget(paths, args.budget_frac, ref)
    res = {name: side(name, args, data, out, paths[name], budget) for name in spaces}
    lines = ["| space | best subnet's ops | structure | predicted ms | all classes % (95% CI) "
             "| reversed pairs % (95% CI) |", "|---|---|---|---|---|---|"]
    for name in spaces:
        s = res[name]["scores"]
        acc = " | ".join(f"{100 * s[k].mean():.1f} +- {100 * ci95(s[k]):.1f}" for k in ("all", "reversed"))
        st = ", ".join(f"{k.split('_')[0]} {v}" for k, v in res[name]["structures"].items()) or "plain"
        lines.append(f"| {name} | {', '.join(f'{k} {v}' for k, v in res[name]['ops'].items())} | {st} | "
                     f"{res[name]['latency_ms']:.3f} | {acc} |")
    comp = {k: paired(res[ref]["scores"][k], res[other]["scores"][k]) for k in ("all", "reversed")}
    for k, c in comp.items():
        lines.append(f"\n{other} - {ref}, {k}: {100 * c['diff']:+.1f} points "
                     f"[{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}], "
                     f"{'significant' if c['significant'] else 'not significant'}, Wilcoxon p = "
                     f"{c['wilcoxon_p']:.3g} ({c['n']} episodes)")
    for name in spaces:
        pg = res[name]["progressive"]
        if pg:
            v, pr, jr = pg["vs_joint"], pg["progressive_rescore"], pg["joint_rescore"]
            h = v["difference_ci95"]
            ci = ("n/a" if h is None else
                  f"[{100 * (v['difference'] - h):+.1f}, {100 * (v['difference'] + h):+.1f}]")
            p = "n/a" if v["p_value"] is None else f"{v['p_value']:.3g}"
            lines.append(f"\n{name}, progressive vs joint search ({v['trials']['progressive']} vs "
                         f"{v['trials']['joint']} trials): {100 * pr['accuracy']:.1f} +- "
                         f"{100 * pr['ci95']:.1f} vs {100 * jr['accuracy']:.1f} +- {100 * jr['ci95']:.1f} % "
                         f"on {v['episodes']} "
                         f"re-scoring episodes; difference {100 * v['difference']:+.1f} points {ci}, "
                         f"progressive {comparison_verdict(v, 'joint')} (two-sided paired t-test p = {p})"
                         + (" (the same subnet)" if v.get("same_subnet") else ""))
    note = (f"\nSynthetic set, both trained {args.epochs} epochs x {args.episodes} episodes, seed "
            f"{args.seed}; latency budget {budget} ms ({TARGET}, tables profiled in this run); search "
            f"{args.trials} trials; {args.eval_episodes} test episodes per figure; total "
            f"{time.perf_counter() - T0:.0f} s.")
    md = "\n".join(lines) + "\n" + note + "\n"
    atomic_write_text(out / "comparison.md", md)
    atomic_write_json(out / "results.json", {
        "args": vars(args), "budget_ms": budget, "comparison": comp,
        "sides": {n: {k: v for k, v in r.items() if k != "scores"} | {
            "accuracy": {k: float(a.mean()) for k, a in r["scores"].items()},
            "ci95": {k: ci95(a) for k, a in r["scores"].items()},
            "per_episode": {k: [float(x) for x in a] for k, a in r["scores"].items()}}
            for n, r in res.items()}})
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
