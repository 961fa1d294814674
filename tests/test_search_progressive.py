"""`search --progressive`: the phases' order and restrictions against a brute-force search of the same
subspaces (no NNI), then one real run of NNI experiments on the trained sst_tiny supernet."""

from __future__ import annotations

import itertools
import json
import zlib

import numpy as np
import pytest

from sst_edge.cost.flops import extreme_sample
from sst_edge.search.experiment import run_search
from sst_edge.search.progressive import phase_trials, run_phases
from sst_edge.search.settings import SearchSettings
from sst_edge.space.config import load_space

CONFIG = load_space("sst_tiny")


def _score(sample: dict) -> float:
    """A deterministic, arbitrary objective: a hash of the sample, so no phase can guess the winner."""
    return zlib.crc32(repr(sorted(sample.items())).encode()) / 2 ** 32


def _all(restriction: dict) -> list[dict]:
    keys = list(restriction)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*restriction.values())]


def _run(choices: dict, total: int):
    calls = []

    def run_phase(name, restr, trials, seed):
        calls.append((name, restr, trials))
        subs = _all(restr)[:trials]  # a "search" that scores the first `trials` subnets of the subspace
        return [{"sample": s, "accuracy": _score(s), "gflops": 1.0} for s in subs]

    def rescore(samples):
        return np.array([[_score(s)] * 3 for s in samples])

    def shortlist(records):
        return sorted(records, key=lambda r: -r["accuracy"])[:2]

    cheapest = extreme_sample(CONFIG)
    results = run_phases(CONFIG, choices, {**{k: v[0] for k, v in choices.items()}, **cheapest}, total, 0,
                         run_phase, rescore, shortlist, "gflops")
    return calls, results, cheapest


def test_phases_fix_what_the_previous_phase_found_and_search_only_their_labels():
    choices = {"s1_structure": ["plain", "big_little"], "s2_structure": ["plain", "big_little"],
               **CONFIG.choices()}
    calls, results, cheapest = _run(choices, total=30)
    assert [c[0] for c in calls] == ["structure", "ops", "heads"]
    # phase 1: only the structure labels are free; every layer at the cheapest subnet's op and heads
    (_, r1, n1), (_, r2, n2), (_, r3, n3) = calls
    assert {k for k, v in r1.items() if len(v) > 1} == {"s1_structure", "s2_structure"}
    assert all(r1[k] == [cheapest[k]] for k in cheapest)
    assert n1 == 4  # its subspace holds 4 subnets, fewer than a third of 30
    # the brute-force winner of phase 1 (by the re-score) fixes the structure of phase 2
    w1 = max(_all(r1), key=_score)
    assert results[0].winner["sample"] == w1
    assert r2["s1_structure"] == [w1["s1_structure"]] and r2["s2_structure"] == [w1["s2_structure"]]
    assert {k for k, v in r2.items() if len(v) > 1} == {k for k in CONFIG.choices() if k.endswith("_op")}
    assert all(r2[k] == [cheapest[k]] for k in cheapest if k.endswith("_heads"))
    # the 26 trials left split over the two phases left: 13, then what is left
    assert n2 == 13 and n3 == 30 - 4 - 13
    w2 = max(_all(r2)[:n2], key=_score)
    assert results[1].winner["sample"] == w2
    # phase 3: only head counts (every sst_tiny op has attention), ops as phase 2 found them
    assert {k for k, v in r3.items() if len(v) > 1} == {k for k in CONFIG.choices() if k.endswith("_heads")}
    assert all(r3[k] == [w2[k]] for k in w2 if not k.endswith("_heads"))


def test_a_space_without_structure_labels_skips_the_first_phase():
    calls, results, _ = _run(CONFIG.choices(), total=10)
    assert [c[0] for c in calls] == ["ops", "heads"]
    assert results[0].skipped == "the space has no structure label"
    assert [c[2] for c in calls] == [5, 5]


def test_phase_trials():
    assert phase_trials(30, 3, 4) == 4
    assert phase_trials(30, 3, 1000) == 10
    assert phase_trials(1, 3, 1000) == 1  # never none


def test_progressive_search_on_a_trained_supernet(trained_run, synth_dataset, tmp_path):
    s = SearchSettings(trials=6, population=3, sample_size=2, episodes=4, budget_gflops=10.0,
                       rescore_top=2, rescore_episodes=6, progressive=True, baseline=False)
    summary = run_search("sst_tiny", trained_run, synth_dataset, tmp_path / "p", s)
    prog = summary["progressive"]
    phases = {p["phase"]: p for p in prog["phases"]}
    assert phases["structure"]["skipped"] and phases["ops"]["trials"] == 3 and phases["heads"]["trials"] == 3
    assert prog["trials"] == 6 and prog["vs_joint"]["trials"] == {"progressive": 6, "joint": 6}
    records = [json.loads(p.read_text()) for p in (tmp_path / "p" / "trials").glob("*.json")]
    kinds = sorted({r["kind"] for r in records})
    assert kinds == ["evolution", "progressive-heads", "progressive-ops"]
    ops_winner = phases["ops"]["winner"]["sample"]
    for r in records:  # phase 3 only moved head counts, from phase 2's winner
        if r["kind"] == "progressive-heads":
            assert all(r["sample"][k] == v for k, v in ops_winner.items() if k.endswith("_op"))
    best = json.loads((tmp_path / "p" / "best.json").read_text())
    assert best["metrics"]["found_by"] == "progressive"
    assert best["metrics"]["vs_joint"]["episodes"] == 6
    eps = summary["episodes"]
    assert eps["phase"]["first"] == eps["rescore"]["first"] + eps["rescore"]["episodes"]
    assert any(line.startswith("progressive - joint") for line in summary.lines())


@pytest.mark.parametrize("total", [3, 7])
def test_the_trials_never_exceed_the_joint_searchs(total):
    calls, results, _ = _run(CONFIG.choices(), total=total)
    assert sum(r.trials for r in results) <= total
