"""PNG plots of a training run: the loss curve, and the candidates' shrink scores with the drops marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot state, no backend to pick

from ..fileio import atomic_write

_VALUE_COLOURS = {"tab": "tab:blue", "sab": "tab:orange", 6: "tab:green", 12: "tab:purple", 16: "tab:red"}


def _save(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))


def plot_loss(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Training loss and accuracy per logged window, validation accuracy per epoch, shrink events."""
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    shrinks = [r for r in records if r.get("kind") == "shrink"]
    fig = Figure(figsize=(9, 4.8))
    ax = fig.subplots()
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
    """Each shrink event's evidence: every tested candidate's score minus its label's best, with error bars
    (+- z x SE of that difference, z of the event's one-sided confidence), op candidates left, head counts
    right; x = dropped. Candidates are spread a little around their event's step so the bars can be told
    apart."""
    fig = Figure(figsize=(11, 4.8))
    axes = fig.subplots(1, 2, sharey=True)
    kinds = {"op": axes[0], "heads": axes[1]}
    seen: set[tuple[str, Any]] = set()
    gap = min((b["step"] - a["step"] for a, b in zip(history, history[1:], strict=False)), default=1) or 1
    for event in history:
        z = NormalDist().inv_cdf(event.get("confidence") or 0.95)
        tested = [c for c in event["candidates"]
                  if c.get("diff") is not None and c.get("value") != c.get("best")]
        for i, c in enumerate(tested):
            kind = c.get("kind") or ("op" if c["label"].endswith("_op") else "heads")
            ax = kinds.get(kind, kinds["op"])  # structure candidates (big_little | plain) beside the ops
            x = event["step"] + gap * 0.3 * ((i + 0.5) / max(1, len(tested)) - 0.5)
            colour = _VALUE_COLOURS.get(c["value"], "tab:gray")
            key = (kind, c["value"])
            ax.errorbar(x, c["diff"], yerr=z * (c.get("se_diff") or 0.0), fmt=".", color=colour, alpha=0.6,
                        elinewidth=0.8, ms=4, label=str(c["value"]) if key not in seen else None)
            seen.add(key)
            if c["decision"] == "dropped":
                ax.plot(x, c["diff"], "x", color="black", ms=9, mew=2)
    for name, ax in kinds.items():
        for event in history:
            ax.axvline(event["step"], color="tab:red", ls=":", lw=1)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.plot([], [], "x", color="black", ms=9, mew=2, label="dropped")
        ax.set_title(f"{name} candidates (each vs the best value of its label)")
        ax.set_xlabel("step (shrink events dotted)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    lam = history[0].get("lam") if history else None
    conf = history[0].get("confidence") if history else None
    axes[0].set_ylabel(f"S - S(best of label), S = mean loss + {lam} x cost term\n"
                       f"(bars: one-sided {conf} bound of the loss noise)")
    if not history:
        axes[0].text(0.5, 0.5, "no shrink event", transform=axes[0].transAxes, ha="center")
    fig.suptitle("search-space shrinking: each candidate against its label's best (Welch, Holm)")
    fig.tight_layout()
    return _save(fig, Path(path))
