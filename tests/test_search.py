"""Hardware-aware search as an NNI experiment: budgets hold, results load, NNI leaves nothing behind."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest

from sst_edge.cli import main
from sst_edge.cost.flops import predicted_cost
from sst_edge.errors import SSTEdgeError
from sst_edge.search import SearchSettings, run_search
from sst_edge.space.config import load_space
from sst_edge.space.report import extreme_sample
from sst_edge.space.subnet import load_subnet
from sst_edge.train.evaluate import run_restriction

TINY = load_space("sst_tiny")


def _budget(run, share: float) -> float:
    """A FLOPs budget `share` of the way from the cheapest to the dearest subnet of the run's space."""
    keep = run_restriction(run, TINY)
    lo = predicted_cost(TINY, extreme_sample(TINY, keep)).gflops
    hi = predicted_cost(TINY, extreme_sample(TINY, keep, largest=True)).gflops
    return lo + share * (hi - lo)


def _nni_processes() -> list[str]:
    r = subprocess.run(["pgrep", "-af", "nni_node|nni.tools.trial_tool|nni/main.js"], capture_output=True,
                       text=True)
    return [line for line in r.stdout.splitlines() if "pgrep" not in line]


def test_in_process_search_meets_the_budget(trained_run, synth_dataset, tmp_path):
    budget = _budget(trained_run, 0.5)
    out = tmp_path / "search"
    settings = SearchSettings(trials=10, population=4, sample_size=2, episodes=8, budget_gflops=budget,
                              seed=1)
    summary = run_search("sst_tiny", trained_run, synth_dataset, out, settings)
    records = list(csv.DictReader((out / "trials.csv").open()))
    assert sum(r["kind"] == "evolution" for r in records) == 10
    assert sum(r["kind"] == "random" for r in records) == 10
    assert all(float(r["gflops"]) <= budget + 1e-12 for r in records)
    assert summary["over_budget"] == 0
    sub, config = load_subnet(out / "best.json", restrict=run_restriction(trained_run, TINY))
    assert config.name == "sst_tiny" and predicted_cost(config, sub.sample).gflops <= budget
    assert sub.metrics["accuracy"] == max(float(r["accuracy"]) for r in records if r["kind"] == "evolution")
    assert sub.metrics["accuracy"] > 0.2  # 5-way: well above chance with trained weights
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The CLI loads what search wrote.
    assert main(["space", "check", str(out / "best.json")]) == 0


def test_multi_process_engine_completes_and_stops_nni(trained_run, synth_dataset, tmp_path):
    out = tmp_path / "mp"
    settings = SearchSettings(trials=4, population=2, sample_size=2, episodes=4, concurrency=2,
                              budget_gflops=_budget(trained_run, 0.7), baseline=False, port=8761)
    summary = run_search("sst_tiny", trained_run, synth_dataset, out, settings)
    assert summary["trials"] == 4 and summary["over_budget"] == 0
    assert len(list((out / "trials").glob("evolution-*.json"))) == 4
    assert _nni_processes() == []


def test_latency_budget_through_the_table(trained_run, synth_dataset, tmp_path):
    """The shipped table made foreign on purpose (another CPU), so the test means the same on any host:
    refused, then searched under with allow_foreign_table."""
    from sst_edge.cost.latency import load_table
    from sst_edge.resources import resolve

    doc = json.loads(resolve("table", "sst_tiny.cpu-fp32").read_text())
    doc["fingerprint"]["cpu_model"] = "ARMv8 Processor rev 1 (v8l)"
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="foreign latency table"):
        table = load_table(foreign, config=TINY, allow_foreign=True)
    assert len(table.foreign) == 1 and table.foreign[0].startswith("device cpu_model")
    keep = run_restriction(trained_run, TINY)
    lo = table.predict_ms(extreme_sample(TINY, keep))
    budget = lo * 1.05
    settings = SearchSettings(trials=4, population=2, sample_size=2, episodes=4, budget_ms=budget,
                              table=str(foreign), baseline=False)
    with pytest.raises(SSTEdgeError, match="another space, target or device"):
        run_search("sst_tiny", trained_run, synth_dataset, tmp_path / "refused", settings)
    settings.allow_foreign_table = True
    with pytest.warns(UserWarning, match="foreign latency table"):
        run_search("sst_tiny", trained_run, synth_dataset, tmp_path / "lat", settings)
    for f in (tmp_path / "lat" / "trials").glob("*.json"):
        rec = json.loads(f.read_text())
        assert rec["latency_ms"] <= budget and table.predict_ms(rec["sample"]) == rec["latency_ms"]


def test_impossible_budget_is_refused(trained_run, synth_dataset, tmp_path):
    settings = SearchSettings(trials=2, budget_gflops=1e-6)
    with pytest.raises(SSTEdgeError, match="below the cheapest subnet"):
        run_search("sst_tiny", trained_run, synth_dataset, tmp_path / "x", settings)
    assert main(["search", "--space", "sst_tiny", "--weights", str(trained_run), "--data", str(synth_dataset),
                 "--out", str(tmp_path / "y"), "--budget-ms", "5"]) == 2  # no table


def test_weights_of_another_space_are_refused(trained_run, synth_dataset, tmp_path):
    with pytest.raises(SSTEdgeError, match="for space 'sst_tiny', not 'sst_paper'"):
        run_search("sst_paper", trained_run, synth_dataset, tmp_path / "z", SearchSettings(budget_gflops=10))


def test_space_with_fewer_subnets_than_trials(trained_run, synth_dataset, tmp_path):
    """A heavily shrunk space: the random baseline scores every subnet under the budget, then stops."""
    from sst_edge.space.restriction import Restriction

    keep = {label: values[:1] for label, values in TINY.choices().items()}
    keep["s3_l1_op"] = ["tab", "sab"]
    keep["s3_l2_op"] = ["tab", "sab"]  # 4 subnets in all
    restrict = Restriction(TINY.name, TINY.hash, keep).save(tmp_path / "shrunk.json")
    settings = SearchSettings(trials=6, population=2, sample_size=2, episodes=2, budget_gflops=10.0)
    run_search("sst_tiny", trained_run, synth_dataset, tmp_path / "s", settings, restrict=restrict)
    randoms = [json.loads(f.read_text()) for f in (tmp_path / "s" / "trials").glob("random-*.json")]
    assert len(randoms) == 4
    assert len({tuple(r["sample"].values()) for r in randoms}) == 4
