"""Ablation of SST's parts on the synthetic set (sst_tiny): shrinking, search, the head, the window.

Every trained variant gets the same budget (--episodes x --epochs training episodes, the same seed, so the
same episode and subnet-draw sequence) and differs from the base run in one thing only:

    base      shrinking on (ShrinkConfig defaults, or --warmup/--shrink-period), alignment head, window 1
    noshrink  shrinking off (warm-up beyond the last epoch: no shrink event ever happens)
    proto     trained with the prototype (ProtoNet mean) head
    nowindow  trained with the alignment head without a window (every support frame)
    cca       trained with the cca head (RENet's cross-correlational attention; its weights train too)

Everything is scored on the same --eval-episodes fixed episodes of the held-out TEST classes (5-way 1-shot,
seed --seed; the reversed pairs: 2-way episodes of the test classes that are each other played backwards),
with the protocol of `sst-edge eval` (`sst_edge.train.evaluate.evaluate`). Comparisons:
(a) shrinking vs none: base vs noshrink, on the largest subnet of each run's (shrunk) space, and on the
    best subnet a short search (`run_search`, the same FLOPs budget for both) finds;
(b) search vs random at the same FLOPs budget: the search's best vs the best of its random baseline (the
    same number of random subnets under the same budget, scored on the same validation episodes, in the
    same `run_search` call; each side's pick as the summary names it, re-scored if the search re-scores);
    both then scored on the test episodes; the search's own paired comparison on its validation
    episodes (the summary's "comparison", where it has one) is printed beside it;
(c) alignment vs prototype: the same features with the head swapped at evaluation (base run), and each
    head trained and scored (proto run vs base run), on all test classes and on the reversed pairs;
(d) window none vs window 1, the same two ways (base run; nowindow run vs base run);
(e) cca vs alignment and cca vs prototype: on the same features (the cca run's backbone, the two
    non-parametric heads swapped in at evaluation), and each head trained and scored (cca run vs base
    and proto runs), on all test classes and, reported apart, on the reversed pairs, where a head that
    attends both ways should help.

Statistics: each accuracy with its 95% CI over episodes (1.96 sd / sqrt(n), `sst-edge eval`'s). Every
comparison is paired on the same episodes (the same seed and settings give identical episodes): the
per-episode differences' mean with a 95% CI (normal approximation: a paired z-test at the 5% level),
"significant" when that CI excludes 0; a two-sided Wilcoxon signed-rank p-value on the same differences is
printed beside it as a check. The CIs cover the episode sampling only: each variant is ONE training run
(one seed), so run-to-run variance of training is not in them. On the reversed pairs, heads blind to frame
order (prototype, no window) see a reversed clip as its partner's frames, so their episode results are
set by which clips an episode draws and come out the same for every model.

Writes OUT/results.json, OUT/ablation.md (the table), OUT/ablation.png (accuracies with CIs), the runs
(OUT/runs/<variant>, reused when a finished run with the same configuration is there) and the searches
(OUT/search/<variant>).

Run: .venv/bin/python bench/ablation.py --out runs/ablation [--epochs 8 --episodes 100
     --eval-episodes 600 --seed 0] [--data DIR] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sst_edge.cost.flops import extreme_sample, predicted_cost
from sst_edge.data.synth import generate_synthetic
from sst_edge.device.settings import HeadConfig
from sst_edge.errors import SSTEdgeError
from sst_edge.fileio import atomic_write_json, atomic_write_text, read_json
from sst_edge.search.experiment import run_search
from sst_edge.search.report import comparison_verdict
from sst_edge.search.settings import SearchSettings
from sst_edge.space.config import load_space
from sst_edge.train.config import ShrinkConfig, TrainConfig
from sst_edge.train.evaluate import evaluate
from sst_edge.train.loop import train_supernet

SPACE = "sst_tiny"
T0 = time.perf_counter()


def say(msg: str) -> None:
    s = int(time.perf_counter() - T0)
    print(f"[ablation {s // 60:02d}:{s % 60:02d}] {msg}", file=sys.stderr, flush=True)  # progress


# ------------------------------------------------------------------------------------------- training
def train_configs(args: argparse.Namespace, data: Path) -> dict[str, TrainConfig]:
    shrink = ShrinkConfig()
    if args.warmup is not None or args.shrink_period is not None:
        shrink = dataclasses.replace(shrink, warmup=args.warmup if args.warmup is not None else shrink.warmup,
                                     period=args.shrink_period or shrink.period)
    base = TrainConfig(space=SPACE, data=str(data), episodes=args.episodes, epochs=args.epochs,
                       val_episodes=args.val_episodes, seed=args.seed, shrink=shrink)
    return {
        "base": base,
        "noshrink": dataclasses.replace(base, shrink=dataclasses.replace(shrink, warmup=args.epochs)),
        "proto": dataclasses.replace(base, head=HeadConfig("prototype")),
        "nowindow": dataclasses.replace(base, head=HeadConfig("alignment", window=None)),
        "cca": dataclasses.replace(base, head=HeadConfig("cca")),
    }


def train(name: str, cfg: TrainConfig, out: Path) -> dict[str, Any]:
    run = out / "runs" / name
    rec_path = run / "run.json"
    if rec_path.is_file():
        rec = read_json(rec_path, "run record")
        try:
            same = TrainConfig.from_dict(rec["config"]).differences(cfg) == []
        except (SSTEdgeError, KeyError, TypeError):  # a run of another sst-edge
            same = False
        if rec.get("status") == "finished" and same:
            say(f"{name}: reusing the finished run in {run}")
            return rec["result"]
        say(f"{name}: {run} holds another or an unfinished run; starting it again")
        shutil.rmtree(run)
    say(f"{name}: training {cfg.epochs} epochs x {cfg.episodes} episodes (head {cfg.head.kind}, window "
        f"{cfg.head.window}, shrink warm-up {cfg.shrink.warmup}, period {cfg.shrink.period})")
    r = train_supernet(cfg, run).to_dict()
    say(f"{name}: loss {r['first_epoch_loss']:.3f} -> {r['last_epoch_loss']:.3f}, space "
        f"{r['full_space_size']:,} -> {r['space_size']:,} architectures ({len(r['dropped'])} candidates "
        f"dropped), {r['seconds']:.0f} s")
    return r


# -------------------------------------------------------------------------------------------- search
def flops_budget(runs: list[Path]) -> float:
    """60% of the way from the cheapest to the largest subnet of the whole space, raised if need be so
    that the cheapest subnet of every (shrunk) run space fits: one budget for every search."""
    from sst_edge.train.artifacts import run_restriction

    config = load_space(SPACE)
    lo = predicted_cost(config, extreme_sample(config)).gflops
    hi = predicted_cost(config, extreme_sample(config, largest=True)).gflops
    budget = lo + 0.6 * (hi - lo)
    for run in runs:
        restriction = run_restriction(run, config)
        cheapest = predicted_cost(config, extreme_sample(config, restriction)).gflops
        budget = max(budget, cheapest + 0.1 * (hi - lo))
    return round(budget, 6)


def search(name: str, run: Path, data: Path, out: Path, budget: float, args: argparse.Namespace) -> dict:
    folder = out / "search" / name
    if folder.exists():
        shutil.rmtree(folder)
    fields = {f.name for f in dataclasses.fields(SearchSettings)}
    want = {"trials": args.trials, "population": args.population, "sample_size": args.sample_size,
            "episodes": args.search_episodes, "seed": args.seed, "budget_gflops": budget,
            "rescore_top": args.rescore_top, "rescore_episodes": args.rescore_episodes}
    want = {k: v for k, v in want.items() if v is not None}
    settings = SearchSettings(**{k: v for k, v in want.items() if k in fields})
    say(f"{name}: search, {settings.trials} trials + a random baseline of as many, budget {budget} GFLOPs")
    summary = run_search(SPACE, run, data, folder, settings)
    best = json.loads((folder / "best.json").read_text())["sample"]
    rnd = random_best_sample(summary, folder)
    keys = ", ".join(sorted(summary))
    say(f"{name}: search done ({keys}); best {fmt_metrics(summary.get('best'))}; random best "
        f"{fmt_metrics(summary.get('random_best'))}")
    return {"summary": summary, "best_sample": best, "random_sample": rnd, "folder": str(folder)}


def fmt_metrics(m: dict | None) -> str:
    """The accuracy figures (flat, or nested per episode set as the re-scoring search writes) and cost."""
    if not m:
        return "-"
    out = []
    for k, v in m.items():
        if isinstance(v, dict) and isinstance(v.get("accuracy"), float):
            out.append(f"{k} accuracy {v['accuracy']:.3f} ({v.get('episodes', '?')} episodes)")
        elif k in ("accuracy", "gflops") and isinstance(v, float):
            out.append(f"{k} {v:.4g}")
    return ", ".join(out)


def random_best_sample(summary: dict, folder: Path) -> dict | None:
    """The random baseline's chosen subnet: from the summary if it names it (or its re-scored shortlist
    holds it), else the random trial record with the summary's cost figures, else the best random record
    by validation accuracy."""
    from sst_edge.search.report import best_record
    from sst_edge.search.trials import read_records

    rb = summary.get("random_best")
    if not rb:
        return None
    if isinstance(rb.get("sample"), dict):
        return rb["sample"]
    rescored = [r for r in summary.get("rescored") or [] if isinstance(r, dict) and r.get("kind") == "random"]
    same = [r for r in rescored if {k: v for k, v in r.items() if k != "sample"} == rb and "sample" in r]
    if same:
        return same[0]["sample"]
    rnd = [r for r in read_records(folder) if r.get("kind") == "random"]
    same = [r for r in rnd if all(r.get(k) == rb.get(k) for k in ("gflops", "mparams", "accuracy"))]
    same = same or [r for r in rnd if all(r.get(k) == rb.get(k) for k in ("gflops", "mparams"))]
    return (same[0] if same else best_record(rnd, "gflops"))["sample"]


# ---------------------------------------------------------------------------------------- evaluation
class Scores:
    """Test-episode accuracies ([episodes] arrays) under names, each evaluated once."""

    def __init__(self, data: Path, out: Path, args: argparse.Namespace):
        self.data, self.out, self.args = data, out, args
        self.acc: dict[str, np.ndarray] = {}
        self.info: dict[str, dict[str, Any]] = {}

    def run(self, names: dict[str, str], run: str, *, heads: tuple[str, ...], window: int | None,
            reversed_pairs: bool = False, sample: dict | None = None, what: str = "") -> None:
        """Evaluate `run`'s weights once with `heads`; names maps each head to the name it is stored as."""
        if all(n in self.acc for n in names.values()):
            return
        say(f"eval {', '.join(names.values())} ({what}{', reversed pairs' if reversed_pairs else ''})")
        with warnings.catch_warnings():  # a head other than the trained one is the point here
            warnings.filterwarnings("ignore", message=r"head .* differs from")
            r = evaluate(SPACE, self.out / "runs" / run, self.data, split="test", sample=sample,
                         episodes=self.args.eval_episodes, seed=self.args.seed, heads=heads, window=window,
                         reversed_pairs=reversed_pairs, progress=True)
        for h, head in enumerate(heads):
            a = np.asarray(r.per_episode[h], dtype=np.float64)
            self.acc[names[head]] = a
            self.info[names[head]] = {"run": run, "head": head, "window": window, "subnet": r.subnet_source,
                                      "reversed_pairs": reversed_pairs, "episodes": int(a.size),
                                      "way": r.way, "accuracy": float(a.mean()), "ci95": ci95(a),
                                      "pairs": list(r.pairs)}


def ci95(a: np.ndarray) -> float:
    return float(1.96 * np.std(a) / math.sqrt(a.size)) if a.size else float("nan")


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """b - a, episode by episode: mean, 95% CI (normal approximation), Wilcoxon signed-rank p."""
    from scipy.stats import wilcoxon

    d = b - a
    n = d.size
    half = float(1.96 * np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    mean = float(d.mean())
    try:
        p = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    except ValueError:
        p = float("nan")
    return {"diff": mean, "ci95": half, "lo": mean - half, "hi": mean + half,
            "significant": bool(n > 1 and (mean - half > 0 or mean + half < 0)), "wilcoxon_p": p, "n": n}


COMPARISONS = [
    # (id, comparison, A, B): B - A
    ("a1", "shrinking vs none, largest subnet of each space", "noshrink largest", "shrink largest"),
    ("a2", "shrinking vs none, best subnet of a search", "noshrink search", "shrink search"),
    ("b", "search vs random, same FLOPs budget (shrink run)", "random best", "search best"),
    ("c1", "alignment vs prototype, same features, all classes", "prototype (eval)", "alignment w1"),
    ("c2", "alignment vs prototype, same features, reversed pairs", "prototype (eval) rev",
     "alignment w1 rev"),
    ("c3", "alignment vs prototype, each trained, all classes", "prototype (trained)", "alignment w1"),
    ("c4", "alignment vs prototype, each trained, reversed pairs", "prototype (trained) rev",
     "alignment w1 rev"),
    ("d1", "window 1 vs none, same features, all classes", "window none (eval)", "alignment w1"),
    ("d2", "window 1 vs none, same features, reversed pairs", "window none (eval) rev", "alignment w1 rev"),
    ("d3", "window 1 vs none, each trained, all classes", "window none (trained)", "alignment w1"),
    ("d4", "window 1 vs none, each trained, reversed pairs", "window none (trained) rev", "alignment w1 rev"),
    ("e1", "cca vs alignment, same features (cca run), all classes", "alignment (cca run)", "cca"),
    ("e2", "cca vs alignment, same features (cca run), reversed pairs", "alignment (cca run) rev", "cca rev"),
    ("e3", "cca vs prototype, same features (cca run), all classes", "prototype (cca run)", "cca"),
    ("e4", "cca vs prototype, same features (cca run), reversed pairs", "prototype (cca run) rev", "cca rev"),
    ("e5", "cca vs alignment, each trained, all classes", "alignment w1", "cca"),
    ("e6", "cca vs alignment, each trained, reversed pairs", "alignment w1 rev", "cca rev"),
    ("e7", "cca vs prototype, each trained, all classes", "prototype (trained)", "cca"),
    ("e8", "cca vs prototype, each trained, reversed pairs", "prototype (trained) rev", "cca rev"),
]


def evaluate_all(sc: Scores, searches: dict[str, dict]) -> None:
    for rev in (False, True):
        t = " rev" if rev else ""
        sc.run({"alignment": f"alignment w1{t}", "prototype": f"prototype (eval){t}"}, "base",
               heads=("alignment", "prototype"), window=1, reversed_pairs=rev,
               what="base run, largest subnet")
        sc.run({"alignment": f"window none (eval){t}"}, "base", heads=("alignment",), window=None,
               reversed_pairs=rev, what="base run, largest subnet")
        sc.run({"prototype": f"prototype (trained){t}"}, "proto", heads=("prototype",), window=1,
               reversed_pairs=rev, what="proto run, largest subnet")
        sc.run({"alignment": f"window none (trained){t}"}, "nowindow", heads=("alignment",), window=None,
               reversed_pairs=rev, what="nowindow run, largest subnet")
        sc.run({"cca": f"cca{t}", "alignment": f"alignment (cca run){t}",
                "prototype": f"prototype (cca run){t}"}, "cca", heads=("cca", "alignment", "prototype"),
               window=1, reversed_pairs=rev,
               what="cca run, largest subnet")
    sc.acc["shrink largest"], sc.info["shrink largest"] = sc.acc["alignment w1"], sc.info["alignment w1"]
    sc.run({"alignment": "noshrink largest"}, "noshrink", heads=("alignment",), window=1,
           what="noshrink run, largest subnet")
    sc.run({"alignment": "shrink search"}, "base", heads=("alignment",), window=1,
           sample=searches["base"]["best_sample"], what="base run, search's best")
    sc.acc["search best"], sc.info["search best"] = sc.acc["shrink search"], sc.info["shrink search"]
    if searches["base"]["random_sample"] is not None:
        sc.run({"alignment": "random best"}, "base", heads=("alignment",), window=1,
               sample=searches["base"]["random_sample"], what="base run, random baseline's best")
    sc.run({"alignment": "noshrink search"}, "noshrink", heads=("alignment",), window=1,
           sample=searches["noshrink"]["best_sample"], what="noshrink run, search's best")


# -------------------------------------------------------------------------------------------- report
def table(sc: Scores) -> tuple[list[dict[str, Any]], str, str]:
    rows = []
    for cid, what, a, b in COMPARISONS:
        if a not in sc.acc or b not in sc.acc:
            continue
        rows.append({"id": cid, "comparison": what, "a": a, "b": b, "acc_a": sc.info[a]["accuracy"],
                     "ci_a": sc.info[a]["ci95"], "acc_b": sc.info[b]["accuracy"], "ci_b": sc.info[b]["ci95"],
                     **paired(sc.acc[a], sc.acc[b])})

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    head = ["", "comparison (B vs A)", "A", "acc A % (CI)", "B", "acc B % (CI)", "B - A points [95% CI]",
            "significant", "Wilcoxon p"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    txt = []
    for r in rows:
        cells = [r["id"], r["comparison"], r["a"], f"{pct(r['acc_a'])} +- {pct(r['ci_a'])}", r["b"],
                 f"{pct(r['acc_b'])} +- {pct(r['ci_b'])}",
                 f"{100 * r['diff']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}]",
                 "yes" if r["significant"] else "no", f"{r['wilcoxon_p']:.3g}"]
        md.append("| " + " | ".join(cells) + " |")
        txt.append(f"{r['id']:<3} {r['comparison']:<55} {r['b']:<22} {pct(r['acc_b']):>5} vs {r['a']:<24} "
                   f"{pct(r['acc_a']):>5}  {cells[6]:<20} {'SIGNIFICANT' if r['significant'] else 'n.s.':<11}"
                   f" p={r['wilcoxon_p']:.3g}")
    return rows, "\n".join(md) + "\n", "\n".join(txt)


def verdict(c: dict) -> str:
    """Which way run_search's search-vs-random comparison went (a significant loss is named as one)."""
    return comparison_verdict(c, "random").replace("significantly", "search significantly", 1)


def search_comparison(summary: dict) -> str:
    """run_search's own search-vs-random figure on its (re-scoring) validation episodes, if it has one."""
    c = summary.get("comparison")
    if not isinstance(c, dict) or not isinstance(c.get("difference"), float):
        return ""
    half = c.get("difference_ci95")
    ci = f" [{100 * (c['difference'] - half):+.1f}, {100 * (c['difference'] + half):+.1f}]" if half else ""
    return (f"search - random {100 * c['difference']:+.1f} points{ci} on {c.get('episodes', '?')} episodes, "
            f"{c.get('test', 'test ?')}, p = {c.get('p_value', float('nan')):.3g}, "
            f"{verdict(c)}"
            + (" (the same subnet)" if c.get("same_subnet") else ""))


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(rows)), 5.5))
    x = np.arange(len(rows))
    w = 0.38
    for off, side, colour in ((-w / 2, "a", "#9e9e9e"), (w / 2, "b", "#1f77b4")):
        acc = [100 * r[f"acc_{side}"] for r in rows]
        err = [100 * r[f"ci_{side}"] for r in rows]
        ax.bar(x + off, acc, w, yerr=err, capsize=3, color=colour, label="A" if side == "a" else "B")
    for i, r in enumerate(rows):
        top = 100 * max(r["acc_a"] + r["ci_a"], r["acc_b"] + r["ci_b"])
        ax.text(i, top + 1.5, f"{100 * r['diff']:+.1f}{'*' if r['significant'] else ''}", ha="center",
                fontsize=8)
    ax.set_xticks(x, [f"{r['id']}\nB: {r['b']}\nA: {r['a']}".replace(" (", "\n(") for r in rows], fontsize=6)
    ax.set_ylabel("test accuracy % (95% CI)")
    ax.set_title("SST ablation on the synthetic set (sst_tiny): B - A in points, * = paired CI excludes 0",
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_ylim(0, 110)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- main
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--data", help="a synthetic dataset (default: generated into OUT/data with --seed)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=100, help="training episodes per epoch")
    ap.add_argument("--eval-episodes", type=int, default=600, help="test episodes per evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, help="shrink warm-up epochs (default: ShrinkConfig's)")
    ap.add_argument("--shrink-period", type=int,
                    help="epochs between shrink events (default: ShrinkConfig's)")
    ap.add_argument("--val-episodes", type=int, default=20, help="validation episodes per training epoch")
    ap.add_argument("--trials", type=int, default=24, help="search trials (the random baseline: as many)")
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--sample-size", type=int, default=3)
    ap.add_argument("--search-episodes", type=int, default=30, help="validation episodes per search trial")
    ap.add_argument("--rescore-top", type=int, help="search: re-score this many best (default: the search's)")
    ap.add_argument("--rescore-episodes", type=int,
                    help="search: re-scoring validation episodes (default: the search's)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 epochs x 12 episodes, 40 test episodes, 4 search trials, "
                         "5 clips per class")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.episodes, args.eval_episodes, args.val_episodes = 2, 12, 40, 4
        args.trials, args.population, args.sample_size, args.search_episodes = 4, 4, 2, 6
        args.rescore_top, args.rescore_episodes = args.rescore_top or 2, args.rescore_episodes or 10
        args.warmup = 0 if args.warmup is None else args.warmup
        args.shrink_period = args.shrink_period or 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.data:
        data = Path(args.data)
    else:
        data = out / "data"
        if not (data / "classes.json").is_file():
            say(f"generating the synthetic dataset into {data}")
            generate_synthetic(data, clips=5 if args.quick else 10, seed=args.seed, overwrite=True)
    cfgs = train_configs(args, data)
    runs = {name: train(name, cfg, out) for name, cfg in cfgs.items()}
    budget = flops_budget([out / "runs" / "base", out / "runs" / "noshrink"])
    searches = {name: search(name, out / "runs" / name, data, out, budget, args)
                for name in ("base", "noshrink")}
    sc = Scores(data, out, args)
    evaluate_all(sc, searches)
    rows, md, txt = table(sc)
    val = search_comparison(searches["base"]["summary"])
    note = (f"sst_tiny on the synthetic set; every variant trained {args.epochs} epochs x {args.episodes} "
            f"episodes, seed {args.seed}; {args.eval_episodes} test episodes per figure (5-way 1-shot; "
            "reversed pairs: 2-way); B - A paired on the same episodes (95% CI, normal approximation; "
            "Wilcoxon signed-rank p as a check); one training run per variant, so the CIs cover episode "
            "sampling, not training-seed variance.")
    atomic_write_text(out / "ablation.md", md + "\n" + note + "\n"
                      + (f"\nb on validation episodes, from run_search's summary: {val}\n" if val else ""))
    png = plot(rows, out / "ablation.png")
    atomic_write_json(out / "results.json", {
        "format": "sst-edge/ablation", "args": vars(args), "data": str(data), "budget_gflops": budget,
        "note": note, "comparisons": rows, "figures": sc.info,
        "per_episode": {k: [round(float(x), 6) for x in v] for k, v in sc.acc.items()},
        "runs": {k: {f: v.get(f) for f in ("first_epoch_loss", "last_epoch_loss", "space_size",
                                            "full_space_size", "dropped", "seconds", "val_acc")}
                 for k, v in runs.items()},
        "search_comparison_val": val,
        "searches": {k: {"summary": dict(v["summary"]), "best_sample": v["best_sample"],
                         "random_sample": v["random_sample"]} for k, v in searches.items()},
        "train_configs": {k: v.to_dict() for k, v in cfgs.items()}, "seconds": time.perf_counter() - T0})
    print()
    print(txt)
    if val:
        print(f"b (validation, from run_search's own summary): {val}")
    print()
    print(md)
    print(note)
    say(f"wrote {out / 'results.json'}, {out / 'ablation.md'}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
