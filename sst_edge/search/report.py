"""What a search leaves behind: every trial as CSV, and accuracy vs cost with the Pareto front."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..fileio import atomic_write, atomic_write_text


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


def _key(sample: dict[str, Any]) -> tuple:
    return tuple(sorted(sample.items()))


def write_csv(records: list[dict[str, Any]], path: Path,
              rescored: list[dict[str, Any]] | None = None) -> Path:
    """One row per trial: its search estimate, and its re-score where it was shortlisted."""
    keys = ["kind", "accuracy", "ci95", "episodes", "latency_ms", "gflops", "mparams", "eval_s"]
    again = {_key(f["sample"]): f["rescore"] for f in rescored or []}
    labels = list(records[0]["sample"]) if records else []
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", *keys, "rescore_accuracy", "rescore_ci95", "rescore_episodes", *labels])
    for i, r in enumerate(records, 1):
        re = again.get(_key(r["sample"]), {})
        w.writerow([i, *[r.get(k) for k in keys], re.get("accuracy"), re.get("ci95"), re.get("episodes"),
                    *[r["sample"][k] for k in labels]])
    return atomic_write_text(path, buf.getvalue())


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


@dataclass
class SearchSummary(Mapping[str, Any]):
    """What `run_search` returns: search.json's content (`to_dict`, and read-only mapping access) and
    what `sst-edge search` prints."""

    data: dict[str, Any]
    out: Path

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def lines(self) -> list[str]:
        return summary_lines(self.data) + [f"wrote {self.out}/best.json, trials.csv, pareto.png, search.json "
                                           "(NNI's own log: nni/nni.log)"]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """What `sst-edge search` prints: the search estimate and the re-score of the winner and of the
    random baseline's best, and whether the winner is significantly better."""
    cost = "latency_ms" if summary["budget"].get("latency_ms") is not None else "gflops"
    unit = "ms" if cost == "latency_ms" else "GFLOPs"
    eps = summary["episodes"]
    lines = [f"{summary['trials']} trials, {summary['over_budget']} over budget; search scores on "
             f"{eps['search']['episodes']} validation episodes, re-scores of the top "
             f"{summary['settings']['rescore_top']} of each on {eps['rescore']['episodes']} other ones "
             f"(episodes {eps['rescore']['first']}.. of seed {eps['rescore']['seed']})"]
    prog = summary.get("progressive")
    rows = [("best (progressive)" if prog else "best (evolution)", summary["best"]),
            *([("joint evolution", prog["joint_best"])] if prog else []),
            ("random baseline", summary["random_best"])]
    for name, f in rows:
        if f:
            se, re = f["search"], f["rescore"]
            lines.append(f"{name:<17} re-score {_pct(re['accuracy'])}% +- {_pct(re['ci95'])} "
                         f"({re['episodes']} ep.), search estimate {_pct(se['accuracy'])}% +- "
                         f"{_pct(se['ci95'])} ({se['episodes']} ep.), {f[cost]:.4g} {unit}")
    if prog:
        for ph in prog["phases"]:
            what = (f"skipped: {ph['skipped']}" if ph["skipped"] else
                    f"{ph['trials']} trials over {len(ph['free_labels'])} labels, winner's phase re-score "
                    f"{_pct(ph['winner']['phase_accuracy'])}%")
            lines.append(f"phase {ph['phase']:<11} {what}")
        if prog["vs_joint"]:
            lines.append(_comparison_line("progressive - joint", prog["vs_joint"], "the joint evolution"))
    if summary.get("comparison"):
        lines.append(_comparison_line("best - random", summary["comparison"], "the random baseline"))
    h = summary.get("head") or {}
    used = h.get("used", {})
    lines.append(f"head           {used.get('kind')}, tau {used.get('tau')}, window {used.get('window')} "
                 f"(from {h.get('source')})")
    lines += [f"note           {n}" for n in h.get("notes", [])]
    svc = summary.get("training_service") or {}
    if svc.get("platform") == "remote":
        ran = ", ".join(f"{k} {v}" for k, v in svc.get("trials_by_host", {}).items())
        lines.append(f"machines       {len(svc.get('machines', {}))} over SSH (NNI remote); "
                     f"trials ran on {ran}")
        for t in svc.get("lost_trials", []):
            lines.append(f"lost trial     {t['nni_trial']} on {t.get('machine') or 'an unknown machine'}: "
                         f"{t['status']} ({t.get('log')})")
    t = summary.get("latency_table")
    if t:
        on = t.get("timed_on") or {}
        where = ", ".join(str(on[k]) for k in ("cpu_model", "gpu") if on.get(k))
        lines.append(f"latency table  {t['name']} (sha256 {t['sha256'][:16]}...), target {t.get('target')}"
                     + (f", timed on {where}" if where else ""))
        lines += [f"note           foreign table used: {f}" for f in t.get("foreign", [])]
    return lines


def direction(mean: float, p: float | None, alpha: float = 0.05) -> str:
    """"better", "worse" or "no significant difference": a significant loss is reported as one."""
    if p is None or p >= alpha or mean == 0:
        return "no significant difference"
    return "better" if mean > 0 else "worse"


def comparison_verdict(c: dict[str, Any], other: str) -> str:
    """Which way a paired comparison went, in words; a significant loss is named as one."""
    d = c.get("direction") or direction(c["difference"], c.get("p_value"), c.get("alpha", 0.05))
    return {"better": f"significantly better than {other}", "worse": f"significantly worse than {other}"}.get(
        d, f"not significantly different from {other}")


def _comparison_line(name: str, c: dict[str, Any], other: str) -> str:
    p = "n/a" if c["p_value"] is None else f"{c['p_value']:.3g}"
    ci = "n/a" if c["difference_ci95"] is None else _pct(c["difference_ci95"])
    verdict = "the same subnet" if c.get("same_subnet") else comparison_verdict(c, other)
    return (f"{name:<14} {_pct(c['difference'])} +- {ci} points on the same {c['episodes']} "
            f"episodes (paired t-test p = {p}, {c['wins']} wins / {c['losses']} losses): {verdict}")


def write_plot(records: list[dict[str, Any]], path: Path, cost_key: str, limit: float,
               rescored: list[dict[str, Any]] | None = None, best: dict[str, Any] | None = None) -> Path:
    """Accuracy vs cost: every trial's search estimate with its 95% CI, the evolution's Pareto front, the
    re-scored shortlist (its 95% CI on the re-scoring episodes) and the winner."""
    unit = "predicted latency (ms)" if cost_key == "latency_ms" else "GFLOPs (multiply-adds)"
    fig = Figure(figsize=(10.5, 4.8))
    ax = fig.subplots()
    for kind, colour, marker in (("random", "tab:gray", "x"), ("evolution", "tab:blue", "o"),
                                 ("progressive", "tab:orange", "^")):
        rs = [r for r in records if r["kind"].startswith(kind)]
        if rs:
            ax.errorbar([r[cost_key] for r in rs], [r["accuracy"] for r in rs],
                        yerr=[r.get("ci95") or 0.0 for r in rs], fmt=marker, c=colour, alpha=0.5, ms=5,
                        elinewidth=0.7, capsize=2, label=f"{kind}: search estimate, 95% CI ({len(rs)})")
    evo = [r for r in records if r["kind"] == "evolution"]
    if evo:
        front = pareto_front(evo, cost_key)
        ax.plot([r[cost_key] for r in front], [r["accuracy"] for r in front], "-", c="tab:blue", alpha=0.6,
                label="Pareto front (evolution, search estimates)")
    for kind, colour in (("evolution", "tab:green"), ("random", "black"), ("progressive", "tab:brown")):
        fs = [f for f in rescored or [] if f["kind"] == kind]
        if fs:
            ax.errorbar([f[cost_key] for f in fs], [f["rescore"]["accuracy"] for f in fs],
                        yerr=[f["rescore"]["ci95"] for f in fs], fmt="D", c=colour, mfc="none", ms=7,
                        capsize=3, label=f"{kind} top {len(fs)}: re-score, 95% CI "
                                         f"({fs[0]['rescore']['episodes']} other episodes)")
    if best is not None:
        ax.scatter([best[cost_key]], [best["rescore"]["accuracy"]], s=220, facecolors="none",
                   edgecolors="tab:red", linewidths=1.5, label="best.json (re-scored)")
    ax.axvline(limit, ls="--", c="tab:red", label=f"budget {limit:g}")
    ax.set_xlabel(unit)
    ax.set_ylabel("few-shot accuracy (validation episodes)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    return path
