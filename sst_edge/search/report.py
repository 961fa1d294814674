"""What a search leaves behind: every trial as CSV, and accuracy vs cost with the Pareto front."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text


def best_record(records: list[dict[str, Any]], cost_key: str) -> dict[str, Any]:
    """Highest accuracy; ties go to the cheaper subnet."""
    return max(records, key=lambda r: (round(r["accuracy"], 9), -r[cost_key]))


def pareto_front(records: list[dict[str, Any]], cost_key: str) -> list[dict[str, Any]]:
    """Records no other record beats on both accuracy (higher) and cost (lower), by rising cost."""
    front, best = [], -1.0
    for r in sorted(records, key=lambda r: (r[cost_key], -r["accuracy"])):
        if round(r["accuracy"], 9) > best:
            front.append(r)
            best = round(r["accuracy"], 9)
    return front


def write_csv(records: list[dict[str, Any]], path: Path) -> Path:
    keys = ["kind", "accuracy", "ci95", "latency_ms", "gflops", "mparams", "eval_s"]
    labels = list(records[0]["sample"]) if records else []
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", *keys, *labels])
    for i, r in enumerate(records, 1):
        w.writerow([i, *[r.get(k) for k in keys], *[r["sample"][k] for k in labels]])
    return atomic_write_text(path, buf.getvalue())


def write_plot(records: list[dict[str, Any]], path: Path, cost_key: str, limit: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_write

    unit = "predicted latency (ms)" if cost_key == "latency_ms" else "GFLOPs (multiply-adds)"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, colour, marker in (("random", "tab:gray", "x"), ("evolution", "tab:blue", "o")):
        rs = [r for r in records if r["kind"] == kind]
        if rs:
            ax.scatter([r[cost_key] for r in rs], [r["accuracy"] for r in rs], c=colour, marker=marker,
                       alpha=0.7, label=f"{kind} ({len(rs)})")
    evo = [r for r in records if r["kind"] == "evolution"]
    if evo:
        front = pareto_front(evo, cost_key)
        ax.plot([r[cost_key] for r in front], [r["accuracy"] for r in front], "-", c="tab:blue",
                label="Pareto front (evolution)")
        best = best_record(evo, cost_key)
        ax.scatter([best[cost_key]], [best["accuracy"]], s=160, facecolors="none", edgecolors="tab:red",
                   label="best.json")
    ax.axvline(limit, ls="--", c="tab:red", label=f"budget {limit:g}")
    ax.set_xlabel(unit)
    ax.set_ylabel("5-way accuracy (validation episodes)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return path
