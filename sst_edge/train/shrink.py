"""Algorithm 1 of SST: FLOPs-aware (or latency-aware) shrinking of the search space during training.

A candidate is one value of one label: an op of an `_op` label or a head count of a `_heads` label.

From the paper (Algorithm 1's structure): the supernet trains for `warmup` epochs before anything is
recorded; shrink events then come periodically; at an event every candidate gets a score made of its loss
and its cost (FLOPs-aware, Eq. 6/7), and the worst are dropped, at most K% (`drop_percent`) of the candidates
still in the space per event.

Our reconstruction (the paper does not give these details, or gives them in a form we could not follow):
- The score (our form of Eq. 6/7), lower is better:

      S(v) = mean episode loss of the steps whose subnet contained v  +  lam * cost(v)

  The loss term is in nats (mean cross-entropy), not min-max normalised: min-max puts the noisiest
  candidates at the ends of the range whatever their true loss. The cost term is EXACT (no sampling noise):
  cost(v) = (c(v) - min over the label's surviving values w of c(w)) / M, where c(v) is v's own block cost
  and M the mean subnet cost of the current space (every subnet drawn uniformly, as training does). For an
  op candidate o of layer L, c(o) is the cost of L's block with op o averaged over L's surviving head
  counts; for a head count h, the cost of L's block with h heads averaged over L's surviving ops. A block's
  cost is read from the subnet cost function by changing that one layer of a fixed reference subnet (FLOPs
  from NNI's expression, or a latency table's predicted ms, which is scale * block_ms + a constant): for the
  additive costs we use (FLOPs, table latency) this is exactly the block's own share, up to a constant that
  the difference to the label's cheapest value cancels. So `lam` is the loss (nats) one would give to save
  the cost of a whole mean subnet: with lam = 0.5, a head count that costs 10% of the mean subnet more than
  the label's cheapest must have a mean loss 0.05 lower to score the same.
- The test: a candidate is compared only with the other values of ITS OWN label (a label's values split
  the steps into disjoint samples). For each ordered pair (v, w) of one label, a one-sided Welch t test of
  "S(v) > S(w)" on the per-step losses (the cost term is exact: it shifts the difference, the noise is the
  loss's), p(v, w) from Student's t with Welch-Satterthwaite degrees of freedom. A candidate's p-value is
  p(v) = min(1, (k - 1) * min over w of p(v, w)) (Bonferroni over its k - 1 rivals, so a head count, with
  two rivals, is held to the same error as an op, with one). Holm's step-down over the candidates tested
  at the event (those with >= max(2, min_count) steps in a label with another such value) then keeps the
  chance that an event drops any candidate although no candidate of the space differs in expected score at
  or below 1 - confidence (family-wise, per event; Holm is valid under any dependence). A candidate is thus
  dropped only when it is worse than some value of its label by more than the noise allows, and how often
  a candidate is dropped under noise does not depend on how often its label is sampled: the standard
  errors carry the counts.
- Among the significant candidates the worst (largest difference to the best of their label) go first, at
  most ceil(drop_percent% of the candidates still in the space), never the last value of a label (the
  label's best is never significantly worse than anything, so this guard is a second line).
- Timing: events at the end of epochs tau > warmup with tau % period == 0 (ShrinkConfig.is_event).
  Records restart after each event, so a candidate is judged on the supernet as it is now, not as it was in
  early training.

Records are per-candidate sums of loss, of squared loss, and counts: plain floats and ints that a
checkpoint restores exactly (JSON round-trips floats).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SSTEdgeError
from ..space.config import Choices
from .config import ShrinkConfig

METHOD = "one-sided Welch t per pair of one label's values, Bonferroni over a candidate's rivals, Holm " \
         "over the candidates tested at the event"


def space_size(restriction: Choices) -> int:
    """Number of architectures in a restricted space given as {label: [values]}."""
    return math.prod(len(v) for v in restriction.values())


def label_kind(label: str) -> str:
    if label.endswith("_structure"):
        return "structure"
    return "op" if label.endswith("_op") else "heads"


def layer_of(label: str) -> str:
    """'s1_l2_op' and 's1_l2_heads' -> 's1_l2'; 's1_structure' -> 's1'."""
    return label.rsplit("_", 1)[0]


def stage_of(layer: str) -> str:
    """'s1_l2' -> 's1' (the prefix of the stage's structure label)."""
    return layer.split("_", 1)[0]


# ----------------------------------------------------------------------------------------------- records
class ShrinkRecords:
    """Per (label, value) since the last shrink event: steps, sum of loss, sum of squared loss."""

    def __init__(self) -> None:
        self.stats: dict[tuple[str, Any], list] = {}  # (label, value) -> [n, loss_sum, loss_sq_sum]

    def add(self, sample: Mapping[str, Any], loss: float) -> None:
        loss = float(loss)
        for label, value in sample.items():
            s = self.stats.setdefault((label, value), [0, 0.0, 0.0])
            s[0] += 1
            s[1] += loss
            s[2] += loss * loss

    def clear(self) -> None:
        self.stats.clear()

    def __len__(self) -> int:
        return len(self.stats)

    def to_list(self) -> list[dict[str, Any]]:
        return [{"label": label, "value": value, "n": s[0], "loss_sum": s[1], "loss_sq_sum": s[2]}
                for (label, value), s in self.stats.items()]

    @classmethod
    def from_list(cls, rows: list) -> ShrinkRecords:
        r = cls()
        for row in rows:
            if not isinstance(row, Mapping):
                raise SSTEdgeError("these shrink records come from an older sst-edge (sums of loss and cost, "
                                   "no sums of squares): a run started before the statistical shrink test "
                                   "cannot be resumed; start it again")
            r.stats[(row["label"], row["value"])] = [int(row["n"]), float(row["loss_sum"]),
                                                     float(row["loss_sq_sum"])]
        return r


# ------------------------------------------------------------------------------------------------- costs
@dataclass(frozen=True)
class CandidateCosts:
    """Exact cost terms of the candidates of a space: `extra[(label, value)]` is c(v) minus the label's
    cheapest c(w), in cost units; `mean_subnet` is M. See the module docstring."""

    extra: dict[tuple[str, Any], float]
    mean_subnet: float
    unit: str = "cost"

    def term(self, label: str, value: Any) -> float:
        """cost(v) = extra / M (0 when M is not positive)."""
        return self.extra[(label, value)] / self.mean_subnet if self.mean_subnet > 0 else 0.0


def candidate_costs(restriction: Choices, cost_fn: Callable[[dict[str, Any]], float],
                    unit: str = "cost") -> CandidateCosts:
    """Each candidate's own block cost from a subnet cost function (one layer changed at a time).

    `keep` holds `sN_lM_op` / `sN_lM_heads` label pairs, and maybe `sN_structure` labels. Calls cost_fn
    1 + sum over layers of |ops| x |heads| times (x |structures| in a stage with a structure label).
    Exact for a cost that is a sum over layers plus a constant.

    A stage with a structure label (ours, for big_little): its layers' blocks cost differently in each
    structure, so a layer's block cost is the mean over the stage's surviving structures (as uniform
    draws mix them); a structure's own cost is the stage's EXPECTED cost under it (its fixed part, from
    the reference subnet, plus every layer's mean block cost in that structure), so plain vs big_little
    compares whole stages as training draws them, not the reference's cheapest layers.
    """
    ref = {label: values[0] for label, values in restriction.items()}
    base = float(cost_fn(dict(ref)))
    layers: dict[str, dict[str, str]] = {}
    structures = {layer_of(label): label for label in restriction if label_kind(label) == "structure"}
    for label in restriction:
        if label_kind(label) != "structure":
            layers.setdefault(layer_of(label), {})[label_kind(label)] = label
    extra: dict[tuple[str, Any], float] = {}
    mean = base
    stage_fixed = {sl: {v: float(cost_fn({**ref, sl: v})) for v in restriction[sl]}
                   for sl in structures.values()}  # the reference subnet with each structure
    stage_cost = {sl: {v: c - base for v, c in per_v.items()} for sl, per_v in stage_fixed.items()}
    for layer, labels in layers.items():
        if set(labels) != {"op", "heads"}:
            raise SSTEdgeError(f"layer {layer} needs both an _op and a _heads label to cost its candidates")
        ol, hl = labels["op"], labels["heads"]
        sl = structures.get(stage_of(layer))
        if sl is None:
            block = {(o, h): float(cost_fn({**ref, ol: o, hl: h})) - base
                     for o in restriction[ol] for h in restriction[hl]}
            mean += sum(block.values()) / len(block)
        else:
            block = dict.fromkeys(((o, h) for o in restriction[ol] for h in restriction[hl]), 0.0)
            for v in restriction[sl]:
                in_v = {k: float(cost_fn({**ref, sl: v, ol: k[0], hl: k[1]})) - stage_fixed[sl][v]
                        for k in block}
                stage_cost[sl][v] += sum(in_v.values()) / len(in_v)  # -> the stage's expected cost
                for k, c in in_v.items():
                    block[k] += c / len(restriction[sl])
        per = {
            (ol, o): sum(block[(o, h)] for h in restriction[hl]) / len(restriction[hl])
            for o in restriction[ol]
        }
        per |= {
            (hl, h): sum(block[(o, h)] for o in restriction[ol]) / len(restriction[ol])
            for h in restriction[hl]
        }
        for label in (ol, hl):
            cheapest = min(c for (lb, _), c in per.items() if lb == label)
            extra |= {key: c - cheapest for key, c in per.items() if key[0] == label}
    for sl, per_v in stage_cost.items():
        mean += sum(per_v.values()) / len(per_v)
        cheapest = min(per_v.values())
        extra |= {(sl, v): c - cheapest for v, c in per_v.items()}
    return CandidateCosts(extra, mean, unit)


# ------------------------------------------------------------------------------------------- statistics
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                     + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` (> 0) degrees of freedom."""
    if math.isnan(t):
        return 1.0
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


@dataclass(frozen=True)
class Welch:
    diff: float   # score difference v - w
    se: float     # its standard error (loss noise only: the cost term is exact)
    t: float
    df: float
    p: float      # one-sided: P(T >= t) under "v is no worse than w"


def welch(diff: float, var_v: float, n_v: int, var_w: float, n_w: int) -> Welch:
    """One-sided Welch test of a positive difference of means (`diff`), given sample variances."""
    a, b = var_v / n_v, var_w / n_w
    se = math.sqrt(a + b)
    if se == 0.0:  # no loss noise at all: the difference is what it is
        return Welch(diff, 0.0, math.copysign(math.inf, diff) if diff else 0.0, math.inf,
                     0.0 if diff > 0 else 1.0)
    df = (a + b) ** 2 / ((a * a / (n_v - 1) if a else 0.0) + (b * b / (n_w - 1) if b else 0.0))
    t = diff / se
    return Welch(diff, se, t, df, t_sf(t, df))


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given): reject i iff adjusted[i] <= alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


# ------------------------------------------------------------------------------------------- decisions
@dataclass(frozen=True)
class CandidateTest:
    label: str
    value: Any
    kind: str                   # op | heads | structure
    n: int
    mean_loss: float | None
    sd_loss: float | None
    se_loss: float | None
    cost: float | None          # extra cost over the label's cheapest value (cost units)
    cost_term: float            # lam * cost / M
    score: float | None         # mean_loss + cost_term
    best: Any = None            # the label's tested value of lowest score
    diff: float | None = None   # score - the best's score
    se_diff: float | None = None
    vs: Any = None              # the rival of the strongest test (usually `best`)
    t: float | None = None
    df: float | None = None
    p: float | None = None      # min(1, (k - 1) * min over rivals of the one-sided Welch p)
    p_holm: float | None = None
    decision: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            out[k] = None if isinstance(v, float) and not math.isfinite(v) else v  # JSON has no inf
        return out


def _moments(stats: list) -> tuple[int, float, float]:
    n, s, sq = int(stats[0]), float(stats[1]), float(stats[2])
    mean = s / n
    var = max(0.0, (sq - s * mean) / (n - 1)) if n > 1 else math.nan
    return n, mean, var


def judge_candidates(
    restriction: Choices, records: ShrinkRecords, cfg: ShrinkConfig, costs: CandidateCosts | None = None
) -> list[CandidateTest]:
    """Every candidate still in `keep` (forward order) with its evidence; decision "" for tested ones,
    "untested: ..." for the others. `costs` None: no cost term (as lam = 0)."""
    need = max(2, cfg.min_count)
    out: list[CandidateTest] = []
    tested_at: list[int] = []
    for label, values in restriction.items():
        rows: list[dict[str, Any]] = []
        for value in values:
            n, mean, var = _moments(records.stats[(label, value)]) if (label, value) in records.stats \
                else (0, math.nan, math.nan)
            extra = costs.extra[(label, value)] if costs is not None else None
            term = cfg.lam * costs.term(label, value) if costs is not None else 0.0
            rows.append({"label": label, "value": value, "kind": label_kind(label), "n": n,
                         "mean_loss": mean if n else None, "sd_loss": math.sqrt(var) if n > 1 else None,
                         "se_loss": math.sqrt(var / n) if n > 1 else None, "cost": extra, "cost_term": term,
                         "score": mean + term if n else None, "var": var})
        ready = [r for r in rows if r["n"] >= need]
        if len(ready) < 2:
            for r in rows:
                why = (f"untested: n={r['n']} < {need}" if r["n"] < need
                       else "untested: no other value of its label has enough steps")
                out.append(CandidateTest(**{k: v for k, v in r.items() if k != "var"}, decision=why))
            continue
        best = min(ready, key=lambda r: r["score"])
        k = len(ready)
        for r in rows:
            fields = {k2: v for k2, v in r.items() if k2 != "var"}
            if r["n"] < need:
                out.append(CandidateTest(**fields, decision=f"untested: n={r['n']} < {need}"))
                continue
            tests = {id(w): welch(r["score"] - w["score"], r["var"], r["n"], w["var"], w["n"])
                     for w in ready if w is not r}
            strongest = min((w for w in ready if w is not r), key=lambda w: tests[id(w)].p)
            s = tests[id(strongest)]
            to_best = tests[id(best)] if best is not r else None
            out.append(CandidateTest(
                **fields, best=best["value"], diff=to_best.diff if to_best else 0.0,
                se_diff=to_best.se if to_best else 0.0, vs=strongest["value"], t=s.t, df=s.df,
                p=min(1.0, (k - 1) * s.p)))
            tested_at.append(len(out) - 1)
    adjusted = holm([out[i].p for i in tested_at])  # type: ignore[misc]
    for i, p_holm in zip(tested_at, adjusted, strict=True):
        out[i] = CandidateTest(**{**out[i].__dict__, "p_holm": p_holm})
    return out


def shrink(
    restriction: Choices,
    records: ShrinkRecords,
    cfg: ShrinkConfig,
    epoch: int,
    step: int,
    costs: CandidateCosts | None = None,
    cost_unit: str | None = None,
) -> tuple[Choices, dict[str, Any]]:
    """One shrink event: the new `keep` and the event record (every candidate with its evidence)."""
    alpha = 1.0 - cfg.confidence
    tests = judge_candidates(restriction, records, cfg, costs)
    alive = sum(len(v) for v in restriction.values())
    budget = math.ceil(cfg.drop_percent / 100 * alive - 1e-9)
    significant = sorted((c for c in tests if c.p_holm is not None and c.p_holm <= alpha),
                         key=lambda c: (-(c.diff or 0.0), c.p_holm))
    left = {label: len(values) for label, values in restriction.items()}
    decision: dict[tuple[str, Any], str] = {}
    dropped = 0
    for c in significant:
        if c.value == c.best:
            decision[(c.label, c.value)] = "kept: best of its label"
        elif dropped >= budget:
            decision[(c.label, c.value)] = "kept: drop budget spent"
        elif left[c.label] <= 1:
            decision[(c.label, c.value)] = "kept: last value of its label"
        else:
            decision[(c.label, c.value)] = "dropped"
            left[c.label] -= 1
            dropped += 1
    for c in tests:
        if c.p_holm is not None and (c.label, c.value) not in decision:
            decision[(c.label, c.value)] = "kept: best of its label" if c.value == c.best \
                else "kept: not significant"
    final = [CandidateTest(**{**c.__dict__, "decision": decision.get((c.label, c.value), c.decision)})
             for c in tests]
    new_keep = {
        label: [v for v in values if decision.get((label, v)) != "dropped"]
        for label, values in restriction.items()
    }
    event = {
        "epoch": epoch,
        "step": step,
        "cost_unit": cost_unit or (costs.unit if costs is not None else None),
        "method": METHOD,
        "confidence": cfg.confidence,
        "lam": cfg.lam,
        "min_count": cfg.min_count,
        "tests": sum(c.p_holm is not None for c in final),
        "drop_budget": budget,
        "mean_subnet_cost": costs.mean_subnet if costs is not None else None,
        "space_size_before": space_size(restriction),
        "space_size_after": space_size(new_keep),
        "dropped": [c.to_dict() for c in final if c.decision == "dropped"],
        "candidates": [c.to_dict() for c in final],
    }
    return new_keep, event
