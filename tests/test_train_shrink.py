"""Algorithm 1's decisions: the statistics (checked against hand computation and scipy), the exact cost
terms (checked against a latency table's entries and brute force), and simulations on sst_paper's labels
with pure-noise losses (few false drops, op and head candidates alike) and with a planted worse candidate
(found within a few events). No training here."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest
from scipy import stats

from sst_edge.errors import SSTEdgeError
from sst_edge.space.config import load_space
from sst_edge.space.supernet import random_sample
from sst_edge.train.config import ShrinkConfig, TrainConfig
from sst_edge.train.shrink import ShrinkRecords, candidate_costs, holm, judge_candidates, shrink, t_sf, welch

KEEP = {"a_op": ["tab", "sab"], "a_heads": [6, 12, 16], "b_op": ["tab", "sab"], "b_heads": [6, 12, 16]}


def recorded(losses: dict[tuple[str, object], list[float]]) -> ShrinkRecords:
    """Records holding exactly these per-step losses for each candidate."""
    r = ShrinkRecords()
    for key, xs in losses.items():
        r.stats[key] = [len(xs), float(sum(xs)), float(sum(x * x for x in xs))]
    return r


def noisy(mean: float, n: int, rng: np.random.Generator, sd: float = 0.3) -> list[float]:
    return list(mean + sd * rng.standard_normal(n))


def flat(rng: np.random.Generator, n: int = 60, **means: float) -> dict[tuple[str, object], list[float]]:
    """Every candidate of KEEP at loss 1 + noise, except those named as label__value=mean."""
    out = {}
    for label, values in KEEP.items():
        for v in values:
            out[(label, v)] = noisy(means.get(f"{label}__{v}", 1.0), n, rng)
    return out


# ------------------------------------------------------------------------------------------ records
def test_records_keep_sums_of_squares_and_round_trip_exactly() -> None:
    r = ShrinkRecords()
    r.add({"a_op": "tab", "a_heads": 6}, 0.1)
    r.add({"a_op": "tab", "a_heads": 12}, 0.2)
    assert r.stats[("a_op", "tab")] == [2, pytest.approx(0.3), pytest.approx(0.05)]
    assert r.stats[("a_heads", 12)] == [1, 0.2, 0.2 * 0.2]
    back = ShrinkRecords.from_list(json.loads(json.dumps(r.to_list())))
    assert back.stats == r.stats  # bit-exact: JSON round-trips floats
    with pytest.raises(SSTEdgeError, match="older sst-edge"):  # [label, value, loss_sum, cost_sum, count]
        ShrinkRecords.from_list([["a_op", "tab", 0.3, 8.0, 2]])


# ---------------------------------------------------------------------------------------- statistics
def test_welch_matches_a_hand_computed_case_and_scipy() -> None:
    v, w = [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0]
    # by hand: means 5/2 and 4/3, variances 5/3 and 1/3; SE^2 = 5/12 + 1/9 = 19/36, diff = 7/6
    # t = (7/6) / sqrt(19/36) = 7 / sqrt(19); df = (19/36)^2 / ((5/12)^2 / 3 + (1/9)^2 / 2) = 361/83
    res = welch(7 / 6, 5 / 3, 4, 1 / 3, 3)
    assert res.t == pytest.approx(7 / math.sqrt(19), rel=1e-12)
    assert res.df == pytest.approx(361 / 83, rel=1e-12)
    assert res.se == pytest.approx(math.sqrt(19 / 36), rel=1e-12)
    ref = stats.ttest_ind(v, w, equal_var=False, alternative="greater")
    assert res.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert welch(0.5, 0.0, 5, 0.0, 5).p == 0.0 and welch(-0.5, 0.0, 5, 0.0, 5).p == 1.0  # no noise


@pytest.mark.parametrize("df", [1.0, 2.5, 4.349, 30.0, 400.0, 1e5])
def test_student_t_tail_matches_scipy(df: float) -> None:
    for t in (-6.0, -1.0, -0.1, 0.0, 0.3, 1.0, 2.0, 4.0, 8.0, 30.0):
        assert t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-9, abs=1e-300)


def test_holm_matches_a_hand_computed_case() -> None:
    # sorted 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == [] and holm([0.7]) == [0.7]


def test_each_candidate_is_tested_against_its_own_label_as_scipy_would() -> None:
    rng = np.random.default_rng(3)
    losses = flat(rng, a_heads__16=1.3)
    event = shrink(KEEP, recorded(losses), ShrinkConfig(lam=0.0, min_count=5), epoch=4, step=800)[1]
    by = {(c["label"], c["value"]): c for c in event["candidates"]}
    pvals = {}
    for label, values in KEEP.items():
        for v in values:
            rivals = [stats.ttest_ind(losses[(label, v)], losses[(label, w)], equal_var=False,
                                      alternative="greater").pvalue for w in values if w != v]
            pvals[(label, v)] = min(1.0, len(rivals) * min(rivals))
    for key, c in by.items():
        assert c["p"] == pytest.approx(pvals[key], rel=1e-8)
        assert c["n"] == 60 and c["mean_loss"] == pytest.approx(np.mean(losses[key]))
        assert c["se_loss"] == pytest.approx(np.std(losses[key], ddof=1) / math.sqrt(60))
    keys = list(pvals)
    m = len(keys)
    order = sorted(keys, key=pvals.get)
    expected = {}
    running = 0.0
    for i, k in enumerate(order):  # Holm, written out again
        running = max(running, min(1.0, (m - i) * pvals[k]))
        expected[k] = running
    assert all(by[k]["p_holm"] == pytest.approx(expected[k], rel=1e-8) for k in keys)
    gone = by[("a_heads", 16)]
    best = by[("a_heads", gone["best"])]
    assert gone["decision"] == "dropped"
    assert gone["diff"] == pytest.approx(gone["mean_loss"] - best["mean_loss"])
    assert gone["se_diff"] == pytest.approx(math.hypot(gone["se_loss"], best["se_loss"]))
    assert [(c["label"], c["value"]) for c in event["dropped"]] == [("a_heads", 16)]
    assert event["tests"] == 10 and event["confidence"] == 0.95
    assert json.loads(json.dumps(event)) == event  # metrics.jsonl and shrunk.json hold it as is


def test_a_bad_candidate_does_not_condemn_the_values_of_other_labels() -> None:
    """a_op=sab is much worse. Every subnet with it is worse, so b_op's values, each drawn with a_op=sab half
    the time, have means between a_op's two: compared across labels they would look worse than a_op=tab."""
    rng = np.random.default_rng(0)
    losses = {("a_op", "tab"): noisy(1.0, 200, rng), ("a_op", "sab"): noisy(2.0, 200, rng),
              ("b_op", "tab"): noisy(1.5, 200, rng), ("b_op", "sab"): noisy(1.5, 200, rng)}
    restriction = {"a_op": ["tab", "sab"], "b_op": ["tab", "sab"]}
    new, event = shrink(restriction, recorded(losses), ShrinkConfig(lam=0.0, drop_percent=100), 1, 400)
    assert new == {"a_op": ["tab"], "b_op": ["tab", "sab"]}
    assert {c["decision"] for c in event["candidates"] if c["label"] == "b_op"} <= {
        "kept: not significant", "kept: best of its label"}


def test_drop_budget_worst_first_and_never_the_last_value() -> None:
    rng = np.random.default_rng(1)
    losses = flat(rng, a_heads__16=2.0, b_op__sab=1.6, b_heads__12=1.4)
    cfg = ShrinkConfig(lam=0.0, drop_percent=10)  # ceil(10% of 10) = 1
    new, event = shrink(KEEP, recorded(losses), cfg, 2, 200)
    assert event["drop_budget"] == 1 and new["a_heads"] == [6, 12]
    d = {(c["label"], c["value"]): c["decision"] for c in event["candidates"]}
    assert d[("b_op", "sab")] == d[("b_heads", 12)] == "kept: drop budget spent"
    assert event["space_size_before"] == 36 and event["space_size_after"] == 24

    restriction = {"a_op": ["sab"], "a_heads": [6, 16], "b_op": ["tab", "sab"], "b_heads": [6]}
    losses = {("a_op", "sab"): noisy(3.0, 20, rng), ("a_heads", 6): noisy(1.0, 10, rng),
              ("a_heads", 16): noisy(3.0, 10, rng), ("b_op", "tab"): noisy(1.0, 18, rng),
              ("b_op", "sab"): noisy(3.0, 2, rng), ("b_heads", 6): noisy(1.0, 20, rng)}
    cfg = ShrinkConfig(drop_percent=100, min_count=5, lam=0.0)
    new, event = shrink(restriction, recorded(losses), cfg, 2, 20)
    d = {(c["label"], c["value"]): c["decision"] for c in event["candidates"]}
    alone = "untested: no other value of its label has enough steps"
    assert d[("a_op", "sab")] == alone  # the last value of a label has nothing to be compared with
    assert d[("b_op", "sab")] == "untested: n=2 < 5" and d[("b_op", "tab")] == alone
    assert d[("a_heads", 16)] == "dropped" and d[("a_heads", 6)] == "kept: best of its label"
    assert new == {"a_op": ["sab"], "a_heads": [6], "b_op": ["tab", "sab"], "b_heads": [6]}


# ------------------------------------------------------------------------------------------- costs
def toy_cost(sample: dict) -> float:
    """100 + per layer {tab: 1, sab: 2}[op] * heads: additive, like FLOPs and table latency."""
    return 100.0 + sum({"tab": 1, "sab": 2}[sample[f"{x}_op"]] * sample[f"{x}_heads"] for x in ("a", "b"))


def test_exact_cost_terms_by_hand_and_lambda_trades_loss_for_cost() -> None:
    costs = candidate_costs(KEEP, toy_cost, "ms")
    # heads h: c(h) = mean over ops of {1, 2} * h = 1.5 h -> extra over 6 heads: 1.5 * (h - 6)
    # op o: c(o) = {1, 2}[o] * mean(6, 12, 16) = {1, 2}[o] * 34/3 -> sab costs 34/3 more than tab
    # M = 100 + 2 * 1.5 * 34/3 = 134 (mean over the 36 subnets, checked by brute force below)
    assert costs.extra[("a_heads", 16)] == pytest.approx(15.0) and costs.extra[("b_heads", 6)] == 0.0
    assert costs.extra[("a_op", "sab")] == pytest.approx(34 / 3) and costs.extra[("a_op", "tab")] == 0.0
    subnets = [dict(zip(KEEP, vs, strict=True)) for vs in itertools.product(*KEEP.values())]
    assert costs.mean_subnet == pytest.approx(np.mean([toy_cost(s) for s in subnets])) == pytest.approx(134)
    rng = np.random.default_rng(2)
    losses = flat(rng, n=40)
    r = recorded(losses)
    assert shrink(KEEP, r, ShrinkConfig(lam=0.0), 1, 1, costs)[1]["dropped"] == []  # equal losses
    event = shrink(KEEP, r, ShrinkConfig(lam=5.0, drop_percent=100), 1, 1, costs)[1]
    by = {(c["label"], c["value"]): c for c in event["candidates"]}
    assert by[("a_heads", 16)]["cost_term"] == pytest.approx(5.0 * 15 / 134)
    assert by[("a_heads", 16)]["score"] == pytest.approx(np.mean(losses[("a_heads", 16)]) + 5.0 * 15 / 134)
    assert {(c["label"], c["value"]) for c in event["dropped"]} >= {("a_op", "sab"), ("b_op", "sab")}
    assert event["cost_unit"] == "ms" and event["mean_subnet_cost"] == pytest.approx(134)


def test_exact_cost_of_a_latency_table_is_its_block_entries() -> None:
    import warnings

    from sst_edge.cost.latency import load_table

    config = load_space("sst_tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = load_table("sst_tiny.cpu-fp32", config=config, allow_foreign=True)
    restriction = config.choices()
    restriction["s2_l1_heads"] = [6, 16]
    costs = candidate_costs(restriction, table.predict_ms, "ms")
    scale = table.correction.scale if table.correction else 1.0
    for s, l in config.layers():
        ol, hl = f"s{s}_l{l}_op", f"s{s}_l{l}_heads"
        c_op = {o: np.mean([table.block_ms(s, o, h) for h in restriction[hl]]) for o in restriction[ol]}
        c_h = {h: np.mean([table.block_ms(s, o, h) for o in restriction[ol]]) for h in restriction[hl]}
        for label, c in ((ol, c_op), (hl, c_h)):
            for v, x in c.items():
                expected = scale * (x - min(c.values()))
                assert costs.extra[(label, v)] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    raw = table.fixed_ms + sum(
        np.mean(
            [
                table.block_ms(s, o, h)
                for o in restriction[f"s{s}_l{l}_op"]
                for h in restriction[f"s{s}_l{l}_heads"]
            ]
        )
        for s, l in config.layers()
    )
    mean = table.correction.apply(raw) if table.correction else raw
    assert costs.mean_subnet == pytest.approx(mean, rel=1e-12)


def test_exact_cost_of_flops_equals_the_brute_force_marginals() -> None:
    """FLOPs from NNI's expression are additive over layers: a candidate's extra cost equals the difference
    of the mean FLOPs of the subnets with it and with the label's cheapest value (all 36 subnets of a space
    with two free layers), and M is their mean."""
    from sst_edge.cost.flops import predicted_cost

    config = load_space("sst_tiny")
    restriction = {k: v[:1] for k, v in config.choices().items()}
    restriction |= {
        "s1_l2_op": ["tab", "sab"],
        "s1_l2_heads": [6, 12, 16],
        "s3_l1_op": ["tab", "sab"],
        "s3_l1_heads": [6, 12, 16],
    }
    flops = {}
    subnets = [dict(zip(restriction, vs, strict=True)) for vs in itertools.product(*restriction.values())]
    for s in subnets:
        flops[tuple(s.values())] = predicted_cost(config, s).flops
    costs = candidate_costs(restriction, lambda s: flops[tuple(s.values())], "flops")
    assert costs.mean_subnet == pytest.approx(np.mean(list(flops.values())), rel=1e-12)
    for label in ("s1_l2_op", "s1_l2_heads", "s3_l1_op", "s3_l1_heads"):
        means = {
            v: np.mean([flops[tuple(s.values())] for s in subnets if s[label] == v])
            for v in restriction[label]
        }
        for v in restriction[label]:
            assert costs.extra[(label, v)] == pytest.approx(means[v] - min(means.values()), rel=1e-9, abs=1.0)
    assert max(costs.extra[("s1_l2_heads", h)] for h in (6, 12, 16)) > 0


# ------------------------------------------------------------------------------------- simulations
PAPER = load_space("sst_paper")
STEPS, EVENTS = 400, 10


def simulate(
    seed: int,
    events: int = EVENTS,
    planted: tuple[str, object] | None = None,
    cfg: ShrinkConfig | None = None,
) -> dict:
    """Training's sampling (a uniform subnet of the current space per step) with loss 1 + N(0, 0.3^2),
    +0.15 when the subnet holds the planted candidate; a shrink event every STEPS steps."""
    rng, noise = random.Random(seed), np.random.default_rng(seed)
    restriction = PAPER.choices()
    out = {"drops": {"op": 0, "heads": 0}, "tested": {"op": 0, "heads": 0}, "events_with_drop": 0,
           "small_p": {"op": 0, "heads": 0}, "loose": {"op": 0, "heads": 0}, "found_at": None,
           "alive": {"op": 0, "heads": 0}}
    for e in range(1, events + 1):
        r = ShrinkRecords()
        for _ in range(STEPS):
            sample = random_sample(PAPER, rng, restriction)
            r.add(sample, 1.0 + 0.3 * noise.standard_normal()
                  + (0.15 if planted and sample[planted[0]] == planted[1] else 0.0))
        for c in judge_candidates(
            restriction, r, ShrinkConfig(lam=0.0, confidence=0.5)
        ):  # a looser shadow test
            if c.p is not None:
                out["loose"][c.kind] += c.p_holm <= 0.5 and c.value != c.best
                out["small_p"][c.kind] += c.p <= 0.05
        restriction, event = shrink(restriction, r, cfg or ShrinkConfig(lam=0.0), e, e * STEPS)
        false = [c for c in event["dropped"] if (c["label"], c["value"]) != planted]
        if len(false) < len(event["dropped"]):
            out["found_at"] = e
        for c in false:
            out["drops"][c["kind"]] += 1
        out["events_with_drop"] += bool(false)
        for c in event["candidates"]:
            out["tested"][c["kind"]] += c["p_holm"] is not None
            out["alive"][c["kind"]] += 1
    return out


def differ_beyond_chance(k1: int, n1: int, k2: int, n2: int) -> bool:
    """Fisher's exact test of equal proportions, at 0.001."""
    return stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue < 0.001


@pytest.fixture(scope="module")
def noise_runs() -> list[dict]:
    return [simulate(seed) for seed in range(4)]


def test_pure_noise_drops_no_more_than_the_stated_rate(noise_runs: list[dict]) -> None:
    """Stated bound: with no real difference an event drops anything with probability <= 1 - confidence
    (0.05). Over 4 seeds x 10 events the count of such events is at most Binomial(40, 0.05); we allow its
    99.9% quantile (7). (The min-max score dropped ~9 candidates at every event here.)"""
    events = len(noise_runs) * EVENTS
    with_drop = sum(r["events_with_drop"] for r in noise_runs)
    assert with_drop <= stats.binom.ppf(0.999, events, 0.05)
    for kind in ("op", "heads"):  # every candidate still in the space was tested at every event
        assert [r["tested"][kind] for r in noise_runs] == [r["alive"][kind] for r in noise_runs]


def test_op_and_head_candidates_are_alike_under_noise(noise_runs: list[dict]) -> None:
    """Heads values are sampled 1/3 of the steps, ops 1/2: their p-values are equally calibrated
    (P(p <= 0.05) <= 0.05 within binomial noise) and their drop rates do not differ beyond chance, both at
    the default confidence and for a loose shadow test (confidence 0.5) that drops far more."""
    tested = {k: sum(r["tested"][k] for r in noise_runs) for k in ("op", "heads")}
    for key in ("drops", "loose", "small_p"):
        counts = {k: sum(r[key][k] for r in noise_runs) for k in ("op", "heads")}
        assert not differ_beyond_chance(counts["op"], tested["op"], counts["heads"], tested["heads"]), key
    for k in ("op", "heads"):
        small = sum(r["small_p"][k] for r in noise_runs)
        assert small <= stats.binom.ppf(0.999, tested[k], 0.05), k
    assert sum(sum(r["loose"].values()) for r in noise_runs) >= 10  # the shadow test is not vacuous


@pytest.mark.parametrize("planted", [("s2_l4_op", "sab"), ("s1_l7_heads", 16)])
def test_a_candidate_worse_by_015_is_dropped_within_a_few_events(planted: tuple[str, object]) -> None:
    runs = [simulate(100 + seed, events=3, planted=planted) for seed in range(3)]
    assert all(r["found_at"] is not None for r in runs), [r["found_at"] for r in runs]
    assert sum(r["events_with_drop"] for r in runs) <= stats.binom.ppf(0.999, 9, 0.05)  # nothing else


# ------------------------------------------------------------------------------------ configuration
def test_events_at_epochs_divisible_by_the_period_after_warm_up() -> None:
    assert [e for e in range(1, 9) if ShrinkConfig(warmup=2, period=2).is_event(e)] == [4, 6, 8]
    assert [e for e in range(1, 9) if ShrinkConfig(warmup=3, period=2).is_event(e)] == [4, 6, 8]
    assert [e for e in range(1, 4) if ShrinkConfig(warmup=0, period=1).is_event(e)] == [1, 2, 3]


def test_training_configuration_lists_every_problem_and_round_trips() -> None:
    cfg = TrainConfig(space="sst_tiny", data="/d", shrink=ShrinkConfig(lam=2.0, confidence=0.99))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    changed = TrainConfig(space="sst_tiny", data="/d", shrink=cfg.shrink, workers=4, lr=0.1)
    assert changed.differences(cfg) == ["lr: 0.001 in the checkpoint, 0.1 now"]
    with pytest.raises(SSTEdgeError) as e:
        TrainConfig(space="sst_tiny", data="/d", way=1, query=0, lr=0,
                    shrink=ShrinkConfig(period=0, confidence=1.0))
    text = str(e.value)
    assert "way must be >= 2" in text and "query >= 1" in text and "lr must be > 0" in text
    assert "shrink period" in text and "confidence" in text
    old = cfg.to_dict()
    old["shrink"] = {"warmup": 2, "period": 2, "drop_percent": 10.0, "threshold": 0.75, "lam": 0.5,
                     "min_count": 5}
    with pytest.raises(SSTEdgeError, match="threshold"):
        TrainConfig.from_dict(old)


def test_scores_png_draws_every_event(tmp_path) -> None:
    from sst_edge.train.plots import plot_scores

    rng = np.random.default_rng(5)
    history = [shrink(KEEP, recorded(flat(rng, a_heads__16=1.5)), ShrinkConfig(lam=0.0), 2, s)[1]
               for s in (100, 200)]
    path = plot_scores(history, tmp_path / "scores.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_scores([], tmp_path / "empty.png").is_file()
