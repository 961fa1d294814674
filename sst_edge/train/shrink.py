"""Algorithm 1 of SST: FLOPs-aware (or latency-aware) shrinking of the search space during training.

A candidate is one value of one label: an op of an `_op` label or a head count of a `_heads` label.
Each training step adds the episode's loss and the sampled subnet's cost to every candidate the subnet
contains. At a shrink event every candidate with enough evidence gets

    S = norm(mean loss) + lam * norm(mean cost)        (min-max over the scored candidates; lower is better)

and the worst of those with S >= threshold are dropped, at most ceil(drop_percent% of the candidates
still in the space), never the last value of a label. Records restart after each event, so a candidate is
judged on the supernet as it is now, not as it was in early training. Every decision is logged with its
evidence. All sums are plain floats so a checkpoint restores them exactly (JSON round-trips floats).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import ShrinkConfig

Keep = dict[str, list]


def space_size(keep: Keep) -> int:
    """Number of architectures in a restricted space given as {label: [values]}."""
    return math.prod(len(v) for v in keep.values())


class ShrinkRecords:
    """Sums of loss and cost and the count of steps, per (label, value), since the last shrink event."""

    def __init__(self) -> None:
        self.stats: dict[tuple[str, Any], list[float]] = {}  # (label, value) -> [loss_sum, cost_sum, count]

    def add(self, sample: Mapping[str, Any], loss: float, cost: float) -> None:
        for label, value in sample.items():
            s = self.stats.setdefault((label, value), [0.0, 0.0, 0])
            s[0] += float(loss)
            s[1] += float(cost)
            s[2] += 1

    def clear(self) -> None:
        self.stats.clear()

    def __len__(self) -> int:
        return len(self.stats)

    def to_list(self) -> list[list]:
        return [[label, value, *s] for (label, value), s in self.stats.items()]

    @classmethod
    def from_list(cls, rows: list[list]) -> ShrinkRecords:
        r = cls()
        for label, value, loss_sum, cost_sum, count in rows:
            r.stats[(label, value)] = [float(loss_sum), float(cost_sum), int(count)]
        return r


@dataclass(frozen=True)
class CandidateScore:
    label: str
    value: Any
    count: int
    mean_loss: float | None
    mean_cost: float | None
    norm_loss: float | None = None
    norm_cost: float | None = None
    score: float | None = None
    decision: str = ""  # dropped | kept | kept: last value of its label | kept: below threshold | unscored

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _normalise(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    return [0.0 if hi <= lo else (v - lo) / (hi - lo) for v in values]


def score_candidates(keep: Keep, records: ShrinkRecords, lam: float, min_count: int) -> list[CandidateScore]:
    """Score every candidate still in `keep` (forward order); too few records -> score None."""
    raw = []
    for label, values in keep.items():
        for value in values:
            loss_sum, cost_sum, count = records.stats.get((label, value), (0.0, 0.0, 0))
            if count >= min_count:
                raw.append((label, value, int(count), loss_sum / count, cost_sum / count))
            else:
                raw.append((label, value, int(count), None, None))
    scored = [r for r in raw if r[3] is not None]
    if not scored:
        return [CandidateScore(l, v, c, None, None, decision="unscored") for l, v, c, _, _ in raw]
    nl = dict(zip([(r[0], r[1]) for r in scored], _normalise([r[3] for r in scored]), strict=True))
    nc = dict(zip([(r[0], r[1]) for r in scored], _normalise([r[4] for r in scored]), strict=True))
    out = []
    for label, value, count, ml, mc in raw:
        if ml is None:
            out.append(CandidateScore(label, value, count, None, None, decision="unscored"))
        else:
            a, b = nl[(label, value)], nc[(label, value)]
            out.append(CandidateScore(label, value, count, ml, mc, a, b, a + lam * b))
    return out


def shrink(keep: Keep, records: ShrinkRecords, cfg: ShrinkConfig, epoch: int, step: int,
           cost_unit: str = "flops") -> tuple[Keep, dict[str, Any]]:
    """One shrink event: the new `keep` and the event record (every candidate with its evidence)."""
    scores = score_candidates(keep, records, cfg.lam, cfg.min_count)
    alive = sum(len(v) for v in keep.values())
    budget = math.ceil(cfg.drop_percent / 100 * alive - 1e-9)
    order = sorted((s for s in scores if s.score is not None), key=lambda s: -s.score)
    left = {label: len(values) for label, values in keep.items()}
    decision: dict[tuple[str, Any], str] = {}
    dropped = 0
    for s in order:
        if s.score < cfg.threshold:
            decision[(s.label, s.value)] = "kept: below threshold"
        elif dropped >= budget:
            decision[(s.label, s.value)] = "kept: drop budget spent"
        elif left[s.label] <= 1:
            decision[(s.label, s.value)] = "kept: last value of its label"
        else:
            decision[(s.label, s.value)] = "dropped"
            left[s.label] -= 1
            dropped += 1
    final = [CandidateScore(**{**s.to_dict(), "decision": decision.get((s.label, s.value), s.decision)})
             for s in scores]
    new_keep = {label: [v for v in values if decision.get((label, v)) != "dropped"]
                for label, values in keep.items()}
    event = {
        "epoch": epoch, "step": step, "cost_unit": cost_unit,
        "lam": cfg.lam, "threshold": cfg.threshold, "drop_budget": budget,
        "space_size_before": space_size(keep), "space_size_after": space_size(new_keep),
        "dropped": [s.to_dict() for s in final if s.decision == "dropped"],
        "candidates": [s.to_dict() for s in final],
    }
    return new_keep, event
