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

    _run(console, stages, "space", space_stage)
    _run(console, stages, "data", data_stage)
    _summary(console, stages, out)
    return stages
