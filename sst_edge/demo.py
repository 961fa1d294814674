"""`sst-edge demo`: the whole path on the synthetic dataset and sst_tiny, with a summary at the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .cost.flops import extreme_sample
from .cost.latency import load_table
from .cost.profile import run_profile
from .cost.space_report import describe_space
from .data.check import check_dataset
from .data.synth import generate_synthetic
from .deploy.export import card_summary, export_model
from .device.datasets import load_splits
from .device.settings import LITERATURE_EPISODES
from .errors import SSTEdgeError
from .runtime.engine import FewShotRuntime
from .runtime.verbs import classify, enroll, eval_model
from .search.experiment import run_search
from .search.settings import SearchSettings
from .space.config import load_space
from .space.restriction import FILE as RESTRICTION_FILE
from .tables import cell, rich_lines
from .train.artifacts import run_restriction
from .train.config import ShrinkConfig, TrainConfig
from .train.loop import train_supernet

TARGET = "cpu-fp32"
SHOTS = 5  # clips enrolled per action; the rest of each meta-test class is classified
DEMO_EPISODES = 200  # eval episodes: fewer than the literature's 10,000, for the demo's speed (said so)


@dataclass
class Stage:
    name: str
    output: str = ""
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def _run(console: Console, stages: list[Stage], name: str, fn: Callable[[Stage], None]) -> Stage:
    console.rule(f"[bold]{name}")
    stage = Stage(name)
    fn(stage)
    stage.seconds = stage.elapsed()
    stages.append(stage)
    return stage


def _print_lines(console: Console, lines: list[str]) -> None:
    for line in lines:
        console.print(line, markup=False, highlight=False)


@dataclass
class DemoResult:
    """Every stage the demo ran: what it wrote, how long it took, its figures."""

    stages: list[Stage]
    out: Path

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out.resolve()),
                "stages": [{"name": s.name, "output": s.output, "seconds": round(s.seconds, 3),
                            "figures": s.figures} for s in self.stages],
                "plots": [str(p) for p in sorted(self.out.rglob("*.png"))]}

    def lines(self) -> list[str]:
        table = Table(title="sst-edge demo")
        for col in ("stage", "output", "time (s)", "figures"):
            table.add_column(col)
        for s in self.stages:
            figs = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in s.figures.items())
            table.add_row(cell(s.name), cell(s.output), f"{s.seconds:.1f}", cell(figs))
        return (rich_lines(table, width=140) + [f"All files are under {self.out.resolve()}; plots:"]
                + [f"  {png}" for png in sorted(self.out.rglob("*.png"))])


def run_demo(out: str | Path = "demo_out", space: str = "sst_tiny", seed: int = 0,
             console: Console | None = None, quiet: bool = False) -> DemoResult:
    """Run every stage, in order, printing what each made as it goes (on stderr with `quiet`, so that
    stdout holds the result alone); the result is the summary."""
    # a pipe or a CI log gets a table wide enough to read, not rich's 80-column default
    console = console or Console(width=None if sys.stdout.isatty() else 140, stderr=quiet)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SSTEdgeError("the demo writes into a new or empty folder: remove it or pick another --out", out)
    out.mkdir(parents=True, exist_ok=True)
    stages: list[Stage] = []

    def space_stage(st: Stage) -> None:
        summary = describe_space(space, samples=2, seed=seed)
        _print_lines(console, summary.lines())
        lo, hi = summary.subnets["smallest"], summary.subnets["largest"]
        st.output = f"search_spaces/{space}.yaml"
        st.figures = {"architectures": summary.architectures, "GFLOPs min": lo["gflops"],
                      "GFLOPs max": hi["gflops"], "Mparams min": lo["mparams"], "Mparams max": hi["mparams"]}

    def data_stage(st: Stage) -> None:
        root = generate_synthetic(out / "data", seed=seed, overwrite=True)
        report = check_dataset(root)
        _print_lines(console, report.lines())
        st.output = str(root)
        st.figures = {"classes": len(report.clips), "clips": report.n_clips,
                      "unreadable": report.n_unreadable}

    def train_stage(st: Stage) -> None:
        cfg = TrainConfig(space=space, data=str(out / "data"), episodes=100, epochs=8, val_episodes=20,
                          seed=seed, shrink=ShrinkConfig(warmup=2, period=2))
        r = train_supernet(cfg, out / "run")
        st.output = f"{out / 'run'} (loss.png, scores.png, {RESTRICTION_FILE})"
        st.figures = {"loss first epoch": r.first_epoch_loss, "loss last epoch": r.last_epoch_loss,
                      "val acc": r.val_acc[-1] or 0.0, "dropped": len(r.dropped),
                      "architectures": f"{r.full_space_size:,} -> {r.space_size:,}"}

    table_path = out / "latency_tables" / f"{space}.{TARGET}.json"
    model_dir = out / "models" / space
    gallery_dir = out / "gallery"

    def profile_stage(st: Stage) -> None:
        tab = run_profile(space, TARGET, out=str(table_path), validate=10, rounds=3, seed=seed)
        loo = tab.validation["figures"]["corrected_loo"]
        st.output = f"{table_path} (+ .validation.png)"
        st.figures = {"subnets within 10%": f"{loo['within_10pct']:.0%}", "RMSPE %": loo["rmspe_pct"],
                      "Kendall tau": loo["kendall_tau"]}

    def search_stage(st: Stage) -> None:
        config = load_space(space)
        table = load_table(table_path, config)
        restriction = run_restriction(out / "run", config)
        lo = table.predict_ms(extreme_sample(config, restriction))
        hi = table.predict_ms(extreme_sample(config, restriction, largest=True))
        budget = round(lo + 0.6 * (hi - lo), 4)
        settings = SearchSettings(trials=24, population=8, sample_size=3, episodes=30, seed=seed,
                                  budget_ms=budget, table=str(table_path))
        summary = run_search(space, out / "run", out / "data", out / "search", settings)
        _print_lines(console, summary.lines())
        best, rnd, cmp = summary["best"], summary["random_best"], summary["comparison"]
        st.output = f"{out / 'search'} (best.json, trials.csv, pareto.png)"
        st.figures = {"budget ms": budget, "best acc (re-scored)": best["rescore"]["accuracy"],
                      "random acc (re-scored)": rnd["rescore"]["accuracy"],
                      "vs random": cmp["direction"],
                      "best ms": best["latency_ms"], "over budget": summary["over_budget"]}

    def export_stage(st: Stage) -> None:
        card = export_model(out / "search" / "best.json", out / "run", TARGET, model_dir,
                            latency_table=table_path)
        _print_lines(console, card_summary(card))
        st.output = f"{model_dir} (model.onnx, card.json)"
        st.figures = {"GFLOPs": card.cost["gflops"], "Mparams": card.cost["mparams"],
                      "predicted ms": card.latency["predicted"].get("ms") or float("nan"),
                      "measured ms": card.latency["measured"]["median_ms"],
                      "parity": card.parity["max_abs_diff"]}

    def runtime_stages() -> None:
        rt = FewShotRuntime(model_dir)
        test = load_splits(out / "data").test
        support = {c: list(paths[:SHOTS]) for c, paths in test.clips.items()}
        queries = [(p, c) for c, paths in test.clips.items() for p in paths[SHOTS:]]

        def enroll_stage(st: Stage) -> None:
            for label, clips in support.items():
                enroll(rt, gallery_dir, label, clips, progress=False)
            st.output = f"{gallery_dir} ({len(support)} actions x {SHOTS} clips, unseen in training)"
            st.figures = {"labels": len(support), "clips": sum(map(len, support.values())),
                          "ms per clip": 1000 * st.elapsed() / max(1, sum(map(len, support.values())))}

        def classify_stage(st: Stage) -> None:
            report = classify(rt, gallery_dir, [p for p, _ in queries], progress=True)
            right = sum(p.label == c for (_, c), (_, p) in zip(queries, report.results, strict=True))
            _print_lines(console, report.lines()[:4])
            st.output = f"{len(queries)} held-out clips of the enrolled actions"
            st.figures = {"accuracy": f"{right / len(queries):.0%}", "chance": f"{1 / len(support):.0%}",
                          "ms per clip": 1000 * st.elapsed() / len(queries)}

        _run(console, stages, "enroll", enroll_stage)
        _run(console, stages, "classify", classify_stage)

    def eval_stage(st: Stage) -> None:
        r = eval_model(model_dir, out / "data", episodes=DEMO_EPISODES, seed=seed,
                       heads=("alignment", "prototype"))
        _print_lines(console, r.lines())
        console.print(f"(reduced for the demo's speed: {DEMO_EPISODES} episodes; `sst-edge eval` defaults to "
                      f"the literature's {LITERATURE_EPISODES:,}, whose interval is "
                      f"~{(LITERATURE_EPISODES / DEMO_EPISODES) ** 0.5:.0f}x narrower)",
                      markup=False, highlight=False)
        st.output = f"5-way 1-shot, meta-test classes, ONNX Runtime, {DEMO_EPISODES} episodes (reduced)"
        st.figures = {"alignment acc": r.accuracy["alignment"], "+-": r.ci95["alignment"],
                      "prototype acc": r.accuracy["prototype"]}

    _run(console, stages, "space", space_stage)
    _run(console, stages, "data", data_stage)
    _run(console, stages, "train", train_stage)
    _run(console, stages, "profile", profile_stage)
    _run(console, stages, "search", search_stage)
    _run(console, stages, "export", export_stage)
    runtime_stages()
    _run(console, stages, "eval", eval_stage)
    return DemoResult(stages, out)
