"""The trained head has one owner, the run: a supernet trained with a non-default head (tau 0.2, window 0)
is searched, evaluated and exported with that head; an explicit setting overrides it and is recorded; a
difference from the run's head is reported; a bad run.json is an error naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sst_edge.cli import main
from sst_edge.device.card import load_card
from sst_edge.device.settings import HeadConfig
from sst_edge.errors import SSTEdgeError
from sst_edge.space.config import load_space

TINY = load_space("sst_tiny")
RUN_HEAD = {"kind": "alignment", "tau": 0.2, "window": 0}  # not the defaults (0.1, 1)
EVAL = ["--no-progress", "--episodes", "4", "--way", "5"]


@pytest.fixture(scope="module")
def head_run(synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny supernet trained through alignment with tau 0.2 and window 0 (conftest's quick settings)."""
    from sst_edge.train.config import ShrinkConfig, TrainConfig
    from sst_edge.train.loop import train_supernet

    out = tmp_path_factory.mktemp("headrun") / "tiny"
    cfg = TrainConfig(space="sst_tiny", data=str(synth_dataset), episodes=40, epochs=3, val_episodes=6,
                      lr_warmup=20, workers=0, threads=1, head=HeadConfig(**RUN_HEAD),
                      shrink=ShrinkConfig(warmup=1, period=1, min_count=3))
    train_supernet(cfg, out, progress=False)
    assert json.loads((out / "run.json").read_text())["config"]["head"] == RUN_HEAD
    return out


@pytest.fixture(scope="module")
def head_search(head_run: Path, synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sst_edge.cost.flops import extreme_sample, predicted_cost
    from sst_edge.search.experiment import run_search
    from sst_edge.search.settings import SearchSettings
    from sst_edge.train.artifacts import run_restriction

    restriction = run_restriction(head_run, TINY)
    hi = predicted_cost(TINY, extreme_sample(TINY, restriction, largest=True)).gflops
    out = tmp_path_factory.mktemp("headsearch") / "search"
    settings = SearchSettings(trials=3, population=2, sample_size=2, episodes=3, budget_gflops=hi, seed=2,
                              rescore_top=1, rescore_episodes=3)
    run_search("sst_tiny", head_run, synth_dataset, out, settings)
    return out


def _eval(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"eval{len(list(tmp_path.glob('eval*.json')))}.json"
    assert main(["eval", *args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_search_scores_with_the_runs_head(head_run: Path, head_search: Path) -> None:
    from sst_edge.search.trials import CONTEXT_FILE, EPISODES_FILE, CachedEpisodes, read_records
    from sst_edge.train.artifacts import load_supernet
    from sst_edge.train.evaluate import episode_accuracies

    summary = json.loads((head_search / "search.json").read_text())
    assert summary["head"]["used"] == summary["head"]["trained"] == RUN_HEAD
    assert summary["head"]["source"] == str(head_run / "run.json") and summary["head"]["notes"] == []
    assert summary["settings"]["tau"] is None and summary["settings"]["window"] == "run"  # nothing given
    assert json.loads((head_search / CONTEXT_FILE).read_text())["head"] == RUN_HEAD
    best = json.loads((head_search / "best.json").read_text())["metrics"]
    assert best["head"] == RUN_HEAD and best["head_source"]["trained"] == RUN_HEAD
    # The trials really scored with that head (not only recorded it): recompute every trial's accuracy
    # on the cached episodes. (Planting "window 1" in the trials' head fails here, and only here.)
    supernet, _ = load_supernet(head_run, TINY)
    episodes = CachedEpisodes.load(head_search / EPISODES_FILE)
    records = read_records(head_search)
    assert len(records) == 6
    for rec in records:
        acc = episode_accuracies(supernet, TINY, rec["sample"], episodes, [HeadConfig(**RUN_HEAD)])
        assert rec["accuracy"] == pytest.approx(float(acc[0].mean()), abs=1e-12)


def test_eval_takes_the_head_from_the_run_and_records_an_override(head_run: Path, head_search: Path,
                                                                  synth_dataset: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    base = ["--space", "sst_tiny", "--weights", str(head_run), "--data", str(synth_dataset), *EVAL]
    r = _eval(tmp_path, *base, "--subnet", str(head_search / "best.json"))
    assert r["heads"] == {"alignment": RUN_HEAD}
    assert r["head_source"] == str(head_run / "run.json") and r["notes"] == []
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"head tau 0\.3 differs from the tau 0\.2"):
        r = _eval(tmp_path, *base, "--tau", "0.3", "--head", "both")
    assert r["heads"] == {"alignment": {**RUN_HEAD, "tau": 0.3}, "prototype": {**RUN_HEAD, "tau": 0.3,
                                                                                "kind": "prototype"}}
    assert "tau 0.3 given" in r["head_source"]
    assert any("tau 0.3 differs" in n for n in r["notes"])
    assert any("kind 'prototype' differs" in n for n in r["notes"])
    assert "note: head tau 0.3 differs" in capsys.readouterr().out  # said out loud, not only in the JSON


def test_export_writes_the_runs_head_into_the_card(head_run: Path, head_search: Path, synth_dataset: Path,
                                                   tmp_path: Path) -> None:
    from sst_edge.deploy.export import card_summary, export_model

    card = export_model(head_search / "best.json", head_run, "cpu-fp32", tmp_path / "m", measure=False,
                        progress=False)
    assert load_card(tmp_path / "m").head.to_dict() == RUN_HEAD
    doc = json.loads((tmp_path / "m" / "card.json").read_text())
    assert doc["head"] == RUN_HEAD and doc["head_source"]["source"] == str(head_run / "run.json")
    assert doc["head_source"]["notes"] == [] and doc["head_source"]["given"] == {}
    assert any(line.startswith("head      alignment, tau 0.2, window 0") for line in card_summary(card))
    # The runtime evaluates with the card's head (the CLI's defaults do not override it).
    r = _eval(tmp_path, "--model", str(tmp_path / "m"), "--data", str(synth_dataset), *EVAL)
    assert r["heads"] == {"alignment": RUN_HEAD} and r["notes"] == []
    # An explicit window is recorded in the card, with the difference from the run's and the search's head.
    with pytest.warns(UserWarning, match="window 2 differs"):
        export_model(head_search / "best.json", head_run, "cpu-fp32", tmp_path / "m2", measure=False,
                     progress=False, window=2)
    doc = json.loads((tmp_path / "m2" / "card.json").read_text())
    assert doc["head"] == {**RUN_HEAD, "window": 2} and doc["head_source"]["given"] == {"window": 2}
    notes = doc["head_source"]["notes"]
    assert any("the model was trained with" in n and "run.json" in n for n in notes)
    assert any("the subnet was searched with" in n and "best.json" in n for n in notes)


def test_bad_run_json_is_a_named_error_and_bare_weights_use_defaults(head_run: Path, synth_dataset: Path,
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from sst_edge.train.artifacts import choose_head
    from sst_edge.train.evaluate import evaluate

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(head_run / "supernet.safetensors", bad / "supernet.safetensors")
    run = bad / "run.json"
    cases = {"{not json": "not a valid run record",
             json.dumps({"config": {}}): "holds no few-shot head",
             json.dumps({"config": {"head": {**RUN_HEAD, "tau": -1}}}): "tau must be > 0",
             json.dumps({"config": {"head": {**RUN_HEAD, "window": "x"}}}): "bad few-shot head",
             json.dumps({"config": {"head": {**RUN_HEAD, "tau": "0.2"}}}): "tau must be a finite number"}
    for text, why in cases.items():
        run.write_text(text)
        with pytest.raises(SSTEdgeError, match=why) as e:
            choose_head(bad)
        assert str(run) in str(e.value)
    assert main(["eval", "--space", "sst_tiny", "--weights", str(bad), "--data", str(synth_dataset),
                 *EVAL]) == 2
    assert str(run) in capsys.readouterr().err
    # A bare .safetensors (no run.json beside it): the defaults, said so.
    run.unlink()
    with pytest.warns(UserWarning, match="no run.json beside"):
        r = evaluate("sst_tiny", bad / "supernet.safetensors", synth_dataset, episodes=2, workers=0,
                     threads=1, progress=False)
    assert r.heads == {"alignment": HeadConfig().to_dict()} and r.head_source.startswith("defaults")
    assert r.notes and "the defaults" in r.notes[0]
    assert np.isfinite(r.accuracy["alignment"])
