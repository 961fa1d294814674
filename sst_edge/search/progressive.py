"""`search --progressive`: an Auto-TSNet-style search in phases, each an NNI experiment under the budget.

Phase 1 searches the per-stage structure labels (`s{stage}_structure`: plain or big-little) with every
per-layer op and head count at the cheapest subnet's; phase 2 searches the per-layer ops inside the best
structure, head counts still at the cheapest; phase 3 the head counts of the layers whose chosen op has
attention. A phase with nothing to search (a space without structure labels, a subnet without attention)
is skipped and says so. Between phases the shortlist (the phase's top `rescore_top` by search estimate) is
re-scored on episodes of their own ("phase" episodes, disjoint from the search's and from the final
re-score's), and the best re-scored subnet fixes that phase's labels: a phase never decides on the same
noisy estimate that ranked it.

The trials are the joint search's count, split evenly over the phases that run; a phase whose subspace
holds fewer subnets than its share (NNI's evolution stops when it finds no new subnet) passes the rest on.

Provenance: searching the macro structure first, then the blocks inside it, is Auto-TSNet's order
(streams, fusion, attention; Gong et al., ICCV 2021, whose code is not public). The phases over these
labels, the re-scoring between phases and the trial split are ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..space.config import HEADLESS_OPS, Choices, SpaceConfig, heads_label, op_label

PHASES = ("structure", "ops", "heads")
STRUCTURE_SUFFIX = "_structure"


def phase_free_labels(config: SpaceConfig, choices: Choices, phase: str,
                      incumbent: dict[str, Any]) -> list[str]:
    """The labels phase `phase` searches (those of more than one allowed value), in forward order."""
    if phase == "structure":
        labels = [k for k in choices if k.endswith(STRUCTURE_SUFFIX)]
    elif phase == "ops":
        labels = [op_label(s, l) for s, l in config.layers()]
    elif phase == "heads":
        labels = [heads_label(s, l) for s, l in config.layers()
                  if incumbent[op_label(s, l)] not in HEADLESS_OPS]
    else:
        raise ValueError(f"unknown phase {phase!r}")
    return [k for k in labels if len(choices[k]) > 1]


def phase_restriction(choices: Choices, free: Sequence[str], incumbent: dict[str, Any]) -> dict[str, list]:
    """Every free label keeps its allowed values; every other label is fixed at the incumbent's."""
    return {k: (list(v) if k in free else [incumbent[k]]) for k, v in choices.items()}


def subspace_size(choices: Choices, free: Sequence[str]) -> int:
    return math.prod(len(choices[k]) for k in free)


def phase_trials(remaining: int, phases_left: int, size: int) -> int:
    """An even share of the trials left, never more than the phase's subspace holds, at least one."""
    return max(1, min(size, remaining // max(1, phases_left)))


@dataclass
class PhaseResult:
    name: str
    free: list[str]
    trials: int = 0                 # trials the phase's experiment ran
    skipped: str | None = None      # why nothing was searched
    shortlist: list[dict[str, Any]] = field(default_factory=list)  # re-scored, best first
    winner: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.name, "free_labels": self.free, "trials": self.trials, "skipped": self.skipped,
                "winner": self.winner, "shortlist": self.shortlist}


# run_phase(name, restriction, trials, seed) -> the phase's trial records (kind "progressive-<name>")
RunPhase = Callable[[str, dict[str, list], int, int], list[dict[str, Any]]]
# rescore(samples) -> per-episode accuracies [len(samples), episodes] on the phase episodes
Rescore = Callable[[list[dict[str, Any]]], np.ndarray]
# shortlist(records) -> the records to re-score, best estimate first
Shortlist = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def run_phases(config: SpaceConfig, choices: Choices, cheapest: dict[str, Any], total_trials: int,
               seed: int, run_phase: RunPhase, rescore: Rescore, shortlist: Shortlist,
               cost_key: str) -> list[PhaseResult]:
    """Run the phases in order, each starting from the previous phase's re-scored winner."""
    incumbent = dict(cheapest)
    results: list[PhaseResult] = []
    remaining = total_trials
    for i, name in enumerate(PHASES):
        free = phase_free_labels(config, choices, name, incumbent)
        res = PhaseResult(name, free)
        results.append(res)
        if not free:
            res.skipped = ("the space has no structure label" if name == "structure" else
                           "no label with more than one value" if name == "ops" else
                           "no layer of the chosen subnet has attention")
            continue
        n = phase_trials(remaining, len(PHASES) - i, subspace_size(choices, free))
        records = run_phase(name, phase_restriction(choices, free, incumbent), n, seed + i)
        res.trials = len(records)
        remaining = max(0, remaining - res.trials)
        if not records:
            res.skipped = "the experiment finished no trial"
            continue
        picked = shortlist(records)
        acc = rescore([r["sample"] for r in picked])
        res.shortlist = [{"sample": r["sample"], "search_accuracy": r["accuracy"], cost_key: r[cost_key],
                          "phase_accuracy": float(a.mean()), "phase_episodes": len(a)}
                         for r, a in zip(picked, acc, strict=True)]
        res.shortlist.sort(key=lambda f: (-round(f["phase_accuracy"], 9), f[cost_key]))
        res.winner = res.shortlist[0]
        incumbent = dict(res.winner["sample"])
    return results


def progressive_shortlist(results: list[PhaseResult], k: int, cost_key: str) -> list[dict[str, Any]]:
    """The `k` best distinct subnets over every phase by their phase re-score: what the final re-score
    compares with the joint search's top `k` (the same number of candidates, the same selection bias)."""
    seen: set[tuple] = set()
    ranked = sorted((f for r in results for f in r.shortlist),
                    key=lambda f: (-round(f["phase_accuracy"], 9), f[cost_key],
                                   repr(sorted(f["sample"].items()))))
    out = []
    for f in ranked:
        key = tuple(sorted(f["sample"].items()))
        if key not in seen:
            seen.add(key)
            out.append(f)
        if len(out) == k:
            break
    return out
