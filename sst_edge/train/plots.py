"""PNG plots of a training run: the loss curve, and the candidates' shrink scores with the drops marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write

_VALUE_COLOURS = {"tab": "tab:blue", "sab": "tab:orange", 6: "tab:green", 12: "tab:purple", 16: "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    try:
        return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    finally:
        plt.close(fig)


def plot_loss(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Training loss and accuracy per logged window, validation accuracy per epoch, shrink events."""
    plt = _pyplot()
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    shrinks = [r for r in records if r.get("kind") == "shrink"]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    if steps:
        x = np.array([r["step"] for r in steps])
        loss = np.array([r["loss"] for r in steps])
        ax.plot(x, loss, color="tab:blue", alpha=0.35, lw=1, label="training loss (window mean)")
        k = max(1, len(loss) // 25)
        if k > 1:
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(x[k - 1:], smooth, color="tab:blue", lw=2, label=f"training loss ({k}-window average)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    acc_ax = ax.twinx()
    acc_ax.set_ylim(0, 1)
    acc_ax.set_ylabel("accuracy")
    if epochs:
        acc_ax.plot([r["step"] for r in epochs], [r["train_acc"] for r in epochs], "s--", color="tab:gray",
                    label="training accuracy (epoch)")
        val = [r for r in epochs if r.get("val_acc") is not None]
        if val:
            acc_ax.plot([r["step"] for r in val], [r["val_acc"] for r in val], "o-", color="tab:green",
                        label="validation accuracy (largest subnet)")
    for i, r in enumerate(shrinks):
        ax.axvline(r["step"], color="tab:red", ls=":", lw=1.2,
                   label="shrink event" if i == 0 else None)
    lines = ax.get_legend_handles_labels()
    more = acc_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    ax.set_title("supernet training")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_scores(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Score of every candidate at each shrink event (op candidates left, head counts right); x = dropped."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    kinds = {"op": axes[0], "heads": axes[1]}
    series: dict[tuple[str, Any], list[tuple[int, float]]] = {}
    drops: list[tuple[str, Any, int, float]] = []
    for event in history:
        for c in event["candidates"]:
            if c["score"] is not None:
                series.setdefault((c["label"], c["value"]), []).append((event["step"], c["score"]))
            if c["decision"] == "dropped":
                drops.append((c["label"], c["value"], event["step"], c["score"]))
    seen: set[tuple[str, Any]] = set()
    for (label, value), pts in series.items():
        ax = kinds["op" if label.endswith("_op") else "heads"]
        xs, ys = zip(*pts, strict=True)
        colour = _VALUE_COLOURS.get(value, "tab:gray")
        key = (label.rsplit("_", 1)[1], value)
        ax.plot(xs, ys, "-", marker=".", color=colour, alpha=0.45, lw=1,
                label=str(value) if key not in seen else None)
        seen.add(key)
    for label, _value, step, score in drops:
        kinds["op" if label.endswith("_op") else "heads"].plot(step, score, "x", color="black", ms=9, mew=2)
    for name, ax in kinds.items():
        for i, event in enumerate(history):
            ax.axvline(event["step"], color="tab:red", ls=":", lw=1)
            if i == 0 and event.get("threshold") is not None:
                ax.axhline(event["threshold"], color="black", ls="--", lw=0.8, label="threshold")
        ax.plot([], [], "x", color="black", ms=9, mew=2, label="dropped")
        ax.set_title(f"{name} candidates")
        ax.set_xlabel("step (shrink events dotted)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    lam = history[0].get("lam") if history else None
    axes[0].set_ylabel(f"score = norm. loss + {lam} x norm. cost (lower is better)")
    if not history:
        axes[0].text(0.5, 0.5, "no shrink event", transform=axes[0].transAxes, ha="center")
    fig.suptitle("search-space shrinking: candidate scores")
    fig.tight_layout()
    return _save(fig, Path(path))
