"""Algorithm 1's decisions on hand-made records: who is scored, who goes, and the evidence logged."""

from __future__ import annotations

import json

import pytest

from sst_edge.errors import SSTEdgeError
from sst_edge.train.config import ShrinkConfig, TrainConfig
from sst_edge.train.shrink import ShrinkRecords, score_candidates, shrink

KEEP = {"a_op": ["tab", "sab"], "a_heads": [6, 12, 16], "b_op": ["tab", "sab"], "b_heads": [6, 12, 16]}


def records(losses: dict[tuple[str, object], float], costs: dict[tuple[str, object], float],
            count: int = 10) -> ShrinkRecords:
    r = ShrinkRecords()
    for key in losses:
        r.stats[key] = [losses[key] * count, costs[key] * count, count]
    return r


def flat(loss: float = 1.0, cost: float = 100.0) -> tuple[dict, dict]:
    keys = [(label, v) for label, values in KEEP.items() for v in values]
    return {k: loss for k in keys}, {k: cost for k in keys}


def test_records_add_every_candidate_of_a_sample_and_round_trip_exactly() -> None:
    r = ShrinkRecords()
    r.add({"a_op": "tab", "a_heads": 6}, 0.1, 3.0)
    r.add({"a_op": "tab", "a_heads": 12}, 0.2, 5.0)
    assert r.stats[("a_op", "tab")] == [pytest.approx(0.3), 8.0, 2]
    assert r.stats[("a_heads", 12)] == [0.2, 5.0, 1]
    back = ShrinkRecords.from_list(json.loads(json.dumps(r.to_list())))
    assert back.stats == r.stats


def test_the_worst_loss_and_cost_candidate_goes_with_its_evidence() -> None:
    loss, cost = flat()
    loss[("a_heads", 16)], cost[("a_heads", 16)] = 2.0, 300.0  # bad and expensive
    loss[("b_op", "sab")] = 1.9                                 # bad, not expensive
    cfg = ShrinkConfig(drop_percent=10, threshold=0.75, lam=0.5, min_count=5)
    keep, event = shrink(KEEP, records(loss, cost), cfg, epoch=4, step=800)
    assert keep["a_heads"] == [6, 12] and keep["b_op"] == ["tab", "sab"]
    assert event["drop_budget"] == 1  # ceil(10% of 10 candidates)
    (gone,) = event["dropped"]
    assert (gone["label"], gone["value"], gone["count"]) == ("a_heads", 16, 10)
    assert gone["mean_loss"] == pytest.approx(2.0) and gone["mean_cost"] == pytest.approx(300.0)
    assert gone["score"] == pytest.approx(1.0 + 0.5 * 1.0)
    decisions = {(c["label"], c["value"]): c["decision"] for c in event["candidates"]}
    assert decisions[("b_op", "sab")] == "kept: drop budget spent"  # S = 0.9 passes, the budget is spent
    assert decisions[("a_op", "tab")] == "kept: below threshold"
    assert event["space_size_before"] == 36 and event["space_size_after"] == 24
    assert (event["epoch"], event["step"], event["cost_unit"]) == (4, 800, "flops")


def test_threshold_guards_and_lambda_trades_loss_for_cost() -> None:
    loss, cost = flat()
    loss[("a_op", "sab")] = 1.2   # a little worse, same cost
    cost[("b_heads", 16)] = 200.0  # same loss, twice the cost
    r = records(loss, cost)
    high = ShrinkConfig(drop_percent=50, threshold=1.01, lam=1.0)
    assert shrink(KEEP, r, high, 1, 1)[1]["dropped"] == []  # nobody reaches the threshold
    by_loss = shrink(KEEP, r, ShrinkConfig(drop_percent=10, threshold=0.5, lam=0.0), 1, 1)[1]
    by_cost = shrink(KEEP, r, ShrinkConfig(drop_percent=10, threshold=0.5, lam=5.0), 1, 1)[1]
    assert [(c["label"], c["value"]) for c in by_loss["dropped"]] == [("a_op", "sab")]
    assert [(c["label"], c["value"]) for c in by_cost["dropped"]] == [("b_heads", 16)]


def test_never_the_last_value_of_a_label_and_unscored_candidates_stay() -> None:
    keep = {"a_op": ["sab"], "a_heads": [6, 16], "b_op": ["tab", "sab"], "b_heads": [6]}
    r = ShrinkRecords()
    r.stats = {("a_op", "sab"): [50.0, 5000.0, 10], ("a_heads", 6): [10.0, 1000.0, 10],
               ("a_heads", 16): [40.0, 3000.0, 10], ("b_op", "tab"): [10.0, 1000.0, 10],
               ("b_op", "sab"): [30.0, 3000.0, 2], ("b_heads", 6): [10.0, 1000.0, 10]}
    new, event = shrink(keep, r, ShrinkConfig(drop_percent=100, threshold=0.1, min_count=5), 2, 20)
    decisions = {(c["label"], c["value"]): c["decision"] for c in event["candidates"]}
    assert decisions[("a_op", "sab")] == "kept: last value of its label"
    assert decisions[("b_op", "sab")] == "unscored"  # 2 records < min_count
    assert decisions[("a_heads", 16)] == "dropped"
    assert new == {"a_op": ["sab"], "a_heads": [6], "b_op": ["tab", "sab"], "b_heads": [6]}
    assert all(v for v in new.values())


def test_scores_are_min_max_normalised_over_scored_candidates() -> None:
    loss, cost = flat()
    loss[("a_op", "tab")], loss[("a_op", "sab")] = 0.5, 1.5
    scores = {(s.label, s.value): s for s in score_candidates(KEEP, records(loss, cost), 0.5, 1)}
    assert scores[("a_op", "tab")].norm_loss == 0.0 and scores[("a_op", "sab")].norm_loss == 1.0
    assert scores[("b_op", "tab")].norm_loss == pytest.approx(0.5)
    assert all(s.norm_cost == 0.0 for s in scores.values())  # equal costs: no cost signal
    assert ShrinkConfig(warmup=2, period=2).is_event(4) and not ShrinkConfig(warmup=2, period=2).is_event(3)
    assert not ShrinkConfig(warmup=2, period=2).is_event(2)


def test_training_configuration_lists_every_problem_and_round_trips() -> None:
    cfg = TrainConfig(space="sst_tiny", data="/d", shrink=ShrinkConfig(lam=2.0))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    changed = TrainConfig(space="sst_tiny", data="/d", shrink=ShrinkConfig(lam=2.0), workers=4, lr=0.1)
    assert changed.differences(cfg) == ["lr: 0.001 in the checkpoint, 0.1 now"]
    with pytest.raises(SSTEdgeError) as e:
        TrainConfig(space="sst_tiny", data="/d", way=1, query=0, lr=0, shrink=ShrinkConfig(period=0))
    text = str(e.value)
    assert "way must be >= 2" in text and "query >= 1" in text and "lr must be > 0" in text
    assert "shrink period" in text
