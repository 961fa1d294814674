"""How well a table predicts whole subnets: accuracy figures, the fitted correction, and the plot.

The correction is fitted on the same subnets it is judged on, so the corrected figures would flatter it;
the figures we report for the corrected prediction are leave-one-out (each subnet predicted by a
correction fitted on the others), which estimates how it does on subnets it has never seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import kendalltau

from ..fileio import atomic_write
from .latency import Correction

MIN_AFFINE = 6  # below this many subnets, fit a scale only (an offset needs spread to be estimated)


def accuracy(predicted: list[float] | np.ndarray, measured: list[float] | np.ndarray) -> dict[str, float]:
    """Share within +-5% and +-10%, RMSPE and mean signed error (% of measured), Kendall's tau."""

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    err = (p - m) / m
    tau = float(kendalltau(p, m).statistic) if len(p) > 1 else float("nan")
    return {
        "within_5pct": round(float(np.mean(np.abs(err) <= 0.05)), 4),
        "within_10pct": round(float(np.mean(np.abs(err) <= 0.10)), 4),
        "rmspe_pct": round(float(np.sqrt(np.mean(err**2)) * 100), 3),
        "mean_error_pct": round(float(np.mean(err) * 100), 3),
        "kendall_tau": round(tau, 4),
    }


def fit_correction(raw: list[float] | np.ndarray, measured: list[float] | np.ndarray) -> Correction | None:
    """measured ~= scale * raw + offset, minimising squared *relative* error (the figures are relative).

    With fewer than MIN_AFFINE subnets, or predictions with almost no spread, only a scale is fitted;
    with fewer than 2, nothing. A fit with a non-positive scale falls back to scale only.
    """
    p, m = np.asarray(raw, float), np.asarray(measured, float)
    n = len(p)
    if n < 2:
        return None
    scale_only = float(np.sum(p / m) / np.sum((p / m) ** 2))  # argmin sum((k p - m) / m)^2
    if n >= MIN_AFFINE and np.std(p) > 0.02 * np.mean(p):
        a = np.stack([p / m, 1 / m], axis=1)
        (k, b), *_ = np.linalg.lstsq(a, np.ones(n), rcond=None)
        if k > 0:
            return Correction("affine", round(float(k), 6), round(float(b), 6), n)
    return Correction("scale", round(scale_only, 6), 0.0, n)


def leave_one_out(raw: list[float] | np.ndarray, measured: list[float] | np.ndarray) -> list[float] | None:
    """Each subnet's corrected prediction from a correction fitted on all the others."""
    p, m = np.asarray(raw, float), np.asarray(measured, float)
    if len(p) < 3:
        return None
    out = []
    for i in range(len(p)):
        keep = np.arange(len(p)) != i
        c = fit_correction(p[keep], m[keep])
        out.append(c.apply(float(p[i])) if c else float(p[i]))
    return out


def summarize(raw: list[float], measured: list[float]) -> tuple[Correction | None, dict[str, Any]]:
    """The correction to store and the figures: raw, corrected (leave-one-out) and corrected in-sample."""
    corr = fit_correction(raw, measured)
    loo = leave_one_out(raw, measured)
    figures: dict[str, Any] = {"raw": accuracy(raw, measured)}
    if corr is not None and loo is not None:
        figures["corrected_loo"] = accuracy(loo, measured)
        figures["corrected_in_sample"] = accuracy([corr.apply(r) for r in raw], measured)
    return corr, {"figures": figures, "loo": loo}


def plot_validation(path: str | Path, raw: list[float], measured: list[float], corrected: list[float] | None,
                    title: str, figures: dict[str, Any]) -> Path:
    """Predicted vs measured (raw, and corrected leave-one-out), with the +-10% band, as a PNG."""
    m = np.asarray(measured, float)
    lo, hi = float(min(m.min(), min(raw))) * 0.9, float(max(m.max(), max(raw))) * 1.1
    fig = Figure(figsize=(6, 6), dpi=110)
    ax = fig.subplots()
    xs = np.linspace(lo, hi, 50)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.9", label="predicted within +-10% of measured")
    ax.plot(xs, xs, color="0.5", lw=1)

    def label(name: str, key: str) -> str:
        f = figures.get(key, {})
        return (f"{name}: {f.get('within_10pct', 0) * 100:.0f}% within 10%, "
                f"RMSPE {f.get('rmspe_pct', 0):.1f}%, tau {f.get('kendall_tau', 0):.2f}")

    ax.scatter(m, raw, s=22, facecolors="none", edgecolors="tab:blue", label=label("sum of parts", "raw"))
    if corrected is not None:
        ax.scatter(m, corrected, s=18, color="tab:orange", label=label("corrected (LOO)", "corrected_loo"))
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms per clip)")
    ax.set_ylabel("predicted latency (ms per clip)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return atomic_write(path, lambda p: fig.savefig(p, format="png"))
