"""Shrinking at its boundaries: a count equal to min_count is tested, a p-value equal to alpha is
significant, and the drop budget is a share of the candidates still in the space (tested or not).
Expectations are worked out by hand in the comments, not taken from the code under test."""

from __future__ import annotations

import math

import pytest

from sst_edge.errors import SSTEdgeError
from sst_edge.train.config import ShrinkConfig
from sst_edge.train.shrink import (
    CandidateCosts,
    ShrinkRecords,
    candidate_costs,
    holm,
    judge_candidates,
    label_kind,
    layer_of,
    shrink,
    space_size,
    t_sf,
    welch,
)


def recorded(losses: dict[tuple[str, object], list[float]]) -> ShrinkRecords:
    r = ShrinkRecords()
    for key, xs in losses.items():
        r.stats[key] = [len(xs), float(sum(xs)), float(sum(x * x for x in xs))]
    return r


def decisions(event: dict) -> dict[tuple[str, object], str]:
    return {(c["label"], c["value"]): c["decision"] for c in event["candidates"]}


# Losses without noise within a candidate: every standard error is 0, so a worse mean is certain (p = 0).
GOOD, BAD = [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]


def test_a_count_equal_to_min_count_is_tested_one_less_is_not() -> None:
    space = {"a_op": ["tab", "sab"]}
    cfg = ShrinkConfig(lam=0.0, drop_percent=100, min_count=3)
    new, event = shrink(space, recorded({("a_op", "tab"): GOOD, ("a_op", "sab"): BAD}), cfg, 1, 6)
    d = decisions(event)
    assert d == {("a_op", "tab"): "kept: best of its label", ("a_op", "sab"): "dropped"}
    assert new == {"a_op": ["tab"]} and event["tests"] == 2
    # two steps each, one short of min_count = 3: nothing is tested, nothing goes
    new, event = shrink(space, recorded({("a_op", "tab"): GOOD[:2], ("a_op", "sab"): BAD[:2]}), cfg, 1, 4)
    assert decisions(event) == {("a_op", "tab"): "untested: n=2 < 3", ("a_op", "sab"): "untested: n=2 < 3"}
    assert new == space and event["tests"] == 0
    # min_count 1 still needs 2 steps (a variance needs two)
    one = ShrinkConfig(lam=0.0, drop_percent=100, min_count=1)
    _, event = shrink(space, recorded({("a_op", "tab"): [1.0], ("a_op", "sab"): [2.0]}), one, 1, 2)
    assert set(decisions(event).values()) == {"untested: n=1 < 2"}
    _, event = shrink(space, recorded({("a_op", "tab"): [1.0, 1.0], ("a_op", "sab"): [2.0, 2.0]}), one, 1, 4)
    assert decisions(event)[("a_op", "sab")] == "dropped"


def test_a_p_value_equal_to_alpha_is_significant() -> None:
    """Equal means with noise: t = 0, so each one-sided p is exactly 1/2; with one rival (k = 2) p = 1/2,
    and Holm over the two tested candidates gives min(1, 2 * 1/2) = 1 for both. With confidence 0 alpha is
    1 - 0 = 1 = p_holm: significant (reject iff p_holm <= alpha), so the one that is not the best goes."""
    losses = {("a_op", "tab"): [1.0, 2.0, 3.0], ("a_op", "sab"): [3.0, 2.0, 1.0]}
    tests = judge_candidates({"a_op": ["tab", "sab"]}, recorded(losses), ShrinkConfig(lam=0.0, min_count=3))
    assert [(c.t, c.p, c.p_holm) for c in tests] == [(0.0, 0.5, 1.0), (0.0, 0.5, 1.0)]
    cfg = ShrinkConfig(lam=0.0, drop_percent=100, min_count=3, confidence=0.0)
    new, event = shrink({"a_op": ["tab", "sab"]}, recorded(losses), cfg, 1, 6)
    assert sorted(decisions(event).values()) == ["dropped", "kept: best of its label"]
    assert space_size(new) == 1
    cfg = ShrinkConfig(lam=0.0, drop_percent=100, min_count=3, confidence=1e-9)  # alpha just below 1
    new, event = shrink({"a_op": ["tab", "sab"]}, recorded(losses), cfg, 1, 6)
    assert sorted(decisions(event).values()) == ["kept: best of its label", "kept: not significant"]
    assert new == {"a_op": ["tab", "sab"]}


def test_the_drop_budget_counts_every_candidate_still_in_the_space() -> None:
    """Ten candidates in the space, four of them tested (two labels of two values; the heads labels have no
    steps). drop_percent 20: ceil(0.2 * 10) = 2 drops, not ceil(0.2 * 4) = 1 as over the tested ones."""
    space = {"a_op": ["tab", "sab"], "a_heads": [6, 12, 16], "b_op": ["tab", "sab"], "b_heads": [6, 12, 16]}
    losses = {("a_op", "tab"): GOOD, ("a_op", "sab"): BAD, ("b_op", "tab"): BAD, ("b_op", "sab"): GOOD}
    cfg = ShrinkConfig(lam=0.0, drop_percent=20, min_count=3)
    new, event = shrink(space, recorded(losses), cfg, 3, 12)
    assert event["drop_budget"] == 2 and event["tests"] == 4
    assert new == {"a_op": ["tab"], "a_heads": [6, 12, 16], "b_op": ["sab"], "b_heads": [6, 12, 16]}
    assert event["space_size_before"] == 36 and event["space_size_after"] == 9
    assert [(c["label"], c["value"]) for c in event["dropped"]] == [("a_op", "sab"), ("b_op", "tab")]
    # 15%: ceil(1.5) = 2 as well; 10%: ceil(1.0) = 1 (the -1e-9 keeps an exact product from rounding up)
    assert shrink(space, recorded(losses), ShrinkConfig(lam=0.0, drop_percent=15, min_count=3), 3, 12
                  )[1]["drop_budget"] == 2
    new, event = shrink(space, recorded(losses), ShrinkConfig(lam=0.0, drop_percent=10, min_count=3), 3, 12)
    assert event["drop_budget"] == 1 and space_size(new) == 18
    assert sorted(decisions(event).values()).count("kept: drop budget spent") == 1
    # 0%: nothing goes
    new, event = shrink(space, recorded(losses), ShrinkConfig(lam=0.0, drop_percent=0, min_count=3), 3, 12)
    assert event["drop_budget"] == 0 and new == space and event["dropped"] == []


def test_the_worst_goes_first_and_never_the_last_value() -> None:
    """Three values of one label: the two worse ones are significant; with a budget of one, the worse of
    them (larger difference to the best) goes. With budget for all, the best stays."""
    space = {"a_heads": [6, 12, 16]}
    losses = {("a_heads", 6): GOOD, ("a_heads", 12): [1.5] * 3, ("a_heads", 16): BAD}
    new, event = shrink(space, recorded(losses), ShrinkConfig(lam=0.0, drop_percent=34, min_count=3), 1, 9)
    assert event["drop_budget"] == 2 and new == {"a_heads": [6]}
    new, event = shrink(space, recorded(losses), ShrinkConfig(lam=0.0, drop_percent=33, min_count=3), 1, 9)
    assert event["drop_budget"] == 1 and new == {"a_heads": [6, 12]}
    assert decisions(event) == {("a_heads", 6): "kept: best of its label",
                                ("a_heads", 12): "kept: drop budget spent", ("a_heads", 16): "dropped"}
    c = {x["value"]: x for x in event["candidates"]}
    assert (c[16]["diff"], c[12]["diff"], c[6]["diff"]) == (1.0, 0.5, 0.0)
    assert c[16]["best"] == 6 and c[16]["vs"] == 6 and c[16]["p"] == 0.0 and c[6]["p"] == 1.0
    assert c[16]["mean_loss"] == 2.0 and c[16]["sd_loss"] == 0.0 and c[16]["n"] == 3
    assert event["method"].startswith("one-sided Welch") and event["epoch"] == 1 and event["step"] == 9


def test_a_cost_term_moves_the_score_by_lam_times_extra_over_the_mean_subnet() -> None:
    """Equal losses; sab costs 10 more than tab over a mean subnet of 20: with lam 0.4 its score is
    1 + 0.4 * 10 / 20 = 1.2, worse by 0.2 with no noise: dropped."""
    space = {"a_op": ["tab", "sab"]}
    costs = CandidateCosts({("a_op", "tab"): 0.0, ("a_op", "sab"): 10.0}, 20.0, "ms")
    losses = {("a_op", "tab"): GOOD, ("a_op", "sab"): GOOD}
    new, event = shrink(space, recorded(losses), ShrinkConfig(lam=0.4, drop_percent=100, min_count=3), 1, 6,
                        costs)
    c = {x["value"]: x for x in event["candidates"]}
    assert c["sab"]["cost_term"] == pytest.approx(0.2) and c["sab"]["score"] == pytest.approx(1.2)
    assert c["sab"]["cost"] == 10.0 and c["tab"]["cost_term"] == 0.0
    assert c["sab"]["diff"] == pytest.approx(0.2)
    assert new == {"a_op": ["tab"]} and event["mean_subnet_cost"] == 20.0 and event["cost_unit"] == "ms"
    assert CandidateCosts({("a", 1): 5.0}, 0.0).term("a", 1) == 0.0  # no mean cost: no cost term
    assert CandidateCosts({("a", 1): 5.0}, -1.0).term("a", 1) == 0.0


def test_candidate_costs_of_an_additive_cost_by_hand() -> None:
    """cost = 10 + {tab: 1, sab: 3}[op] * heads. Reference subnet (tab, 2): 12.
    Block extras (o, h) -> m(o) * h - 2: (tab,2) 0, (tab,4) 2, (sab,2) 4, (sab,4) 10; mean 4, M = 12 + 4 = 16.
    Per op (mean over heads): tab 1, sab 7 -> extra 0, 6. Per heads (mean over ops): 2 -> 2, 4 -> 6: 0, 4."""
    space = {"x_op": ["tab", "sab"], "x_heads": [2, 4]}
    calls = []

    def cost(s: dict) -> float:
        calls.append(dict(s))
        return 10.0 + {"tab": 1, "sab": 3}[s["x_op"]] * s["x_heads"]

    cc = candidate_costs(space, cost, "flops")
    assert cc.mean_subnet == 16.0 and cc.unit == "flops" and len(calls) == 1 + 4
    assert cc.extra == {("x_op", "tab"): 0.0, ("x_op", "sab"): 6.0, ("x_heads", 2): 0.0, ("x_heads", 4): 4.0}
    with pytest.raises(SSTEdgeError, match="layer x needs both an _op and a _heads label"):
        candidate_costs({"x_op": ["tab"]}, lambda s: 1.0)


def test_records_sum_per_candidate() -> None:
    r = ShrinkRecords()
    r.add({"a_op": "tab", "a_heads": 6}, 1.5)
    r.add({"a_op": "tab", "a_heads": 12}, 0.5)
    assert r.stats == {("a_op", "tab"): [2, 2.0, 2.5], ("a_heads", 6): [1, 1.5, 2.25],
                       ("a_heads", 12): [1, 0.5, 0.25]}
    assert len(r) == 3
    r.clear()
    assert len(r) == 0


def test_statistics_by_hand() -> None:
    # Welch: means differ by 1, variances 2 and 8 over 2 and 4 steps: se = sqrt(1 + 2) = sqrt(3),
    # df = 9 / (1/1 + 4/3) = 27/7
    w = welch(1.0, 2.0, 2, 8.0, 4)
    assert w.se == pytest.approx(math.sqrt(3)) and w.df == pytest.approx(27 / 7)
    assert w.t == pytest.approx(1 / math.sqrt(3))
    assert welch(0.5, 0.0, 3, 0.0, 3).p == 0.0 and welch(-0.5, 0.0, 3, 0.0, 3).p == 1.0
    assert welch(0.0, 0.0, 3, 0.0, 3).p == 1.0 and welch(0.0, 0.0, 3, 0.0, 3).t == 0.0
    one_sided = welch(1.0, 2.0, 2, 0.0, 4)  # b = 0: df = a^2 / (a^2 / (n_v - 1)) = n_v - 1 = 1
    assert one_sided.df == pytest.approx(1.0)
    # Student's t, 1 degree of freedom, is Cauchy: P(T > t) = 1/2 - atan(t) / pi
    for t in (-3.0, -0.5, 0.0, 0.7, 2.0, 40.0):
        assert t_sf(t, 1.0) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-9, abs=1e-12)
    # 2 degrees of freedom: P(T > t) = 1/2 - t / (2 sqrt(2 + t^2))
    for t in (-2.0, 0.3, 5.0):
        assert t_sf(t, 2.0) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), rel=1e-9)
    assert t_sf(float("nan"), 3.0) == 1.0 and t_sf(float("inf"), 3.0) == 0.0 and t_sf(-float("inf"), 3) == 1.0
    # Holm by hand: p = (0.01, 0.04, 0.03): sorted 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max so far 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.6, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_labels() -> None:
    assert label_kind("s1_l2_op") == "op" and label_kind("s1_l2_heads") == "heads"
    assert layer_of("s1_l2_op") == layer_of("s1_l2_heads") == "s1_l2"
    assert space_size({"a": [1, 2, 3], "b": [1, 2]}) == 6 and space_size({}) == 1


def test_small_costs_and_defaults() -> None:
    # a mean subnet cost below 1 (GFLOPs of a tiny space, say) still divides: 0.25 / 0.5 = 0.5
    assert CandidateCosts({("a", 1): 0.25}, 0.5).term("a", 1) == 0.5
    cc = candidate_costs({"x_op": ["tab"], "x_heads": [2]}, lambda s: 1.0)
    assert cc.unit == "cost" and cc.mean_subnet == 1.0 and cc.extra == {("x_op", "tab"): 0.0,
                                                                         ("x_heads", 2): 0.0}
    with pytest.raises(SSTEdgeError) as e:
        ShrinkRecords.from_list([["a_op", "tab", 0.3, 8.0, 2]])
    assert e.value.message == ("these shrink records come from an older sst-edge (sums of loss and cost, no "
                               "sums of squares): a run started before the statistical shrink test cannot be "
                               "resumed; start it again")


def test_untested_candidates_beside_tested_ones_keep_their_evidence() -> None:
    """One label, four values: two tested (3 steps each), one with a single step, one never drawn. The
    untested ones are reported with what is known (no spread from one step) and the rest still judged."""
    space = {"a_heads": [6, 12, 16, 24]}
    losses = {("a_heads", 6): GOOD, ("a_heads", 12): [5.0], ("a_heads", 16): BAD}
    tests = judge_candidates(space, recorded(losses), ShrinkConfig(lam=0.0, min_count=3))
    c = {t.value: t for t in tests}
    assert [t.value for t in tests] == [6, 12, 16, 24]
    assert (c[12].decision, c[12].n, c[12].mean_loss, c[12].score) == ("untested: n=1 < 3", 1, 5.0, 5.0)
    assert c[12].sd_loss is None and c[12].se_loss is None and c[12].p_holm is None
    assert (c[24].decision, c[24].n, c[24].mean_loss, c[24].score) == ("untested: n=0 < 3", 0, None, None)
    assert c[16].decision == "" and c[16].p == 0.0 and c[16].best == 6 and c[16].cost_term == 0.0
    assert c[6].sd_loss == 0.0 and c[6].se_loss == 0.0
    d = c[16].to_dict()
    assert d["t"] is None and d["df"] is None and d["diff"] == 1.0  # infinite t and df: not JSON numbers
    two = judge_candidates({"a_op": ["tab", "sab"]}, recorded({("a_op", "tab"): [1.0, 2.0],
                                                               ("a_op", "sab"): [1.0, 3.0]}),
                           ShrinkConfig(lam=0.0, min_count=2))
    assert [t.sd_loss for t in two] == [pytest.approx(math.sqrt(0.5)), pytest.approx(math.sqrt(2.0))]
    assert [t.se_loss for t in two] == [pytest.approx(0.5), pytest.approx(1.0)]


def test_the_budget_stops_at_its_count_and_the_event_records_its_settings() -> None:
    """Three labels, each with a certainly worse value; a budget of 2 drops exactly 2 (the two worst).
    101 candidates at 10%: ceil(10.1) = 11."""
    space = {"a_op": ["tab", "sab"], "b_op": ["tab", "sab"], "c_op": ["tab", "sab"]}
    losses = {("a_op", "tab"): GOOD, ("a_op", "sab"): [4.0] * 3, ("b_op", "tab"): GOOD,
              ("b_op", "sab"): [3.0] * 3, ("c_op", "tab"): GOOD, ("c_op", "sab"): BAD}
    cfg = ShrinkConfig(lam=0.25, drop_percent=34, min_count=3)
    new, event = shrink(space, recorded(losses), cfg, 1, 6)
    assert event["drop_budget"] == 3 and space_size(new) == 1
    cfg = ShrinkConfig(lam=0.25, drop_percent=33, min_count=3)
    new, event = shrink(space, recorded(losses), cfg, 1, 6)
    assert event["drop_budget"] == 2 and new == {"a_op": ["tab"], "b_op": ["tab"], "c_op": ["tab", "sab"]}
    assert (event["lam"], event["min_count"], event["confidence"]) == (0.25, 3, 0.95)
    many = {f"l{i}_op": ["tab"] for i in range(101)}
    assert shrink(many, ShrinkRecords(), ShrinkConfig(drop_percent=10), 1, 1)[1]["drop_budget"] == 11
    # a lone value with exactly min_count steps has no rival: untested for that reason, not for its count
    _, event = shrink({"a_op": ["tab", "sab"]}, recorded({("a_op", "tab"): GOOD}), cfg, 1, 3)
    assert decisions(event)[("a_op", "tab")] == "untested: no other value of its label has enough steps"
