"""`sst-edge demo`: the whole path on the synthetic dataset and sst_tiny, with a summary at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Stage:
    name: str
    output: str = ""
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


def _run(console: Console, stages: list[Stage], name: str, fn: Callable[[Stage], None]) -> Stage:
    console.rule(f"[bold]{name}")
    stage = Stage(name)
    t0 = time.perf_counter()
    fn(stage)
    stage.seconds = time.perf_counter() - t0
    stages.append(stage)
    return stage


def _summary(console: Console, stages: list[Stage], out: Path) -> None:
    table = Table(title="sst-edge demo")
    for col in ("stage", "output", "time (s)", "figures"):
        table.add_column(col)
    for s in stages:
        figs = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.figures.items())
        table.add_row(s.name, s.output, f"{s.seconds:.1f}", figs)
    console.print(table)
    console.print(f"All files are under {out.resolve()}")


def run_demo(out: str | Path = "demo_out", space: str = "sst_tiny", seed: int = 0,
             console: Console | None = None) -> list[Stage]:
    """Run every stage that exists, in order, and print what each made."""
    console = console or Console()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        from .errors import SSTEdgeError

        raise SSTEdgeError("the demo writes into a new or empty folder: remove it or pick another --out", out)
    out.mkdir(parents=True, exist_ok=True)
    stages: list[Stage] = []

    def space_stage(st: Stage) -> None:
        from .space.report import show_space

        figures = show_space(space, samples=2, seed=seed, console=console)
        lo, hi = figures["subnets"]["smallest"], figures["subnets"]["largest"]
        st.output = f"search_spaces/{space}.yaml"
        st.figures = {"architectures": figures["architectures"], "GFLOPs min": lo["gflops"],
                      "GFLOPs max": hi["gflops"], "Mparams min": lo["mparams"], "Mparams max": hi["mparams"]}

    def data_stage(st: Stage) -> None:
        from .data.check import check_dataset, print_report
        from .data.synth import generate_synthetic

        root = generate_synthetic(out / "data", seed=seed, overwrite=True)
        report = check_dataset(root)
        print_report(report)
        st.output = str(root)
        st.figures = {"classes": len(report.clips), "clips": report.n_clips,
                      "unreadable": report.n_unreadable}

    def train_stage(st: Stage) -> None:
        from .train.config import ShrinkConfig, TrainConfig
        from .train.loop import train_supernet

        cfg = TrainConfig(space=space, data=str(out / "data"), episodes=100, epochs=6, val_episodes=20,
                          seed=seed, shrink=ShrinkConfig(warmup=2, period=1))
        r = train_supernet(cfg, out / "run")
        st.output = f"{out / 'run'} (loss.png, scores.png, shrunk.json)"
        st.figures = {"loss first epoch": r.first_epoch_loss, "loss last epoch": r.last_epoch_loss,
                      "val acc": r.val_acc[-1] or 0.0, "dropped": len(r.dropped),
                      "architectures": f"{r.full_space_size:,} -> {r.space_size:,}"}

    def search_stage(st: Stage) -> None:
        from .cost.flops import predicted_cost
        from .search import SearchSettings, run_search
        from .space.config import load_space
        from .space.report import extreme_sample
        from .train.evaluate import run_restriction

        config = load_space(space)
        keep = run_restriction(out / "run", config)
        lo = predicted_cost(config, extreme_sample(config, keep)).gflops
        hi = predicted_cost(config, extreme_sample(config, keep, largest=True)).gflops
        budget = round(lo + 0.6 * (hi - lo), 6)
        settings = SearchSettings(trials=24, population=8, sample_size=3, episodes=30, seed=seed,
                                  budget_gflops=budget)
        summary = run_search(space, out / "run", out / "data", out / "search", settings)
        best, rnd = summary["best"], summary["random_best"]
        st.output = f"{out / 'search'} (best.json, trials.csv, pareto.png)"
        st.figures = {"budget GFLOPs": budget, "best acc": best["accuracy"], "random acc": rnd["accuracy"],
                      "best GFLOPs": best["gflops"], "best Mparams": best["mparams"],
                      "over budget": summary["over_budget"]}

    def eval_stage(st: Stage) -> None:
        from .train.evaluate import evaluate

        r = evaluate(space, out / "run", out / "data", subnet=out / "search" / "best.json", episodes=200,
                     seed=seed, heads=("alignment", "prototype"))
        for line in r.lines():
            console.print(line)
        st.output = "5-way 1-shot, meta-test classes"
        st.figures = {"alignment acc": r.accuracy["alignment"], "+-": r.ci95["alignment"],
                      "prototype acc": r.accuracy["prototype"]}

    _run(console, stages, "space", space_stage)
    _run(console, stages, "data", data_stage)
    _run(console, stages, "train", train_stage)
    _run(console, stages, "search", search_stage)
    _run(console, stages, "eval", eval_stage)
    _summary(console, stages, out)
    return stages
