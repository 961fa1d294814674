"""A short real training run through the CLI, then `sst-edge eval` on held-out classes.

One run (280 steps, about 90 s on 2 busy cores) serves every test here: the loss falls, shrinking removes
candidates, 5-way 1-shot accuracy on meta-test classes is well above chance (20%), and on classes that differ
only in temporal order (reversed pairs) the alignment head beats the ProtoNet mean on the same features.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sst_edge.cli import main
from sst_edge.space.config import load_space
from sst_edge.space.restriction import load_restriction
from sst_edge.space.subnet import load_subnet

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "sst_tiny"
    rc = main(["train", "--space", "sst_tiny", "--data", str(synth_dataset), "--out", str(out),
               "--episodes", "56", "--epochs", "5", "--query", "3", "--lr-warmup", "30", "--warmup", "1",
               "--shrink-period", "2", "--val-episodes", "10", "--no-progress",
               "--lambda", "20"])  # a loss difference this short run can tell from noise: the costliest go
    assert rc == 0
    return out


def evaluate(run_dir: Path, data: Path, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "eval.json"
    assert main(["eval", "--space", "sst_tiny", "--weights", str(run_dir), "--data", str(data),
                 "--no-progress", "--out", str(out), *args]) == 0
    return json.loads(out.read_text())


def test_loss_falls_and_shrinking_removes_candidates(run_dir: Path) -> None:
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["seed"] == 0 and record["space"] == "sst_tiny"
    assert {"torch", "nni", "numpy", "python", "sst-edge"} <= set(record["versions"])
    assert record["config"]["head"] == {"kind": "alignment", "tau": 0.1, "window": 1}
    result = record["result"]
    assert result["last_epoch_loss"] < 0.6 * result["first_epoch_loss"]
    assert result["dropped"] and result["space_size"] < result["full_space_size"]
    config = load_space("sst_tiny")
    restriction = load_restriction(
        run_dir / "restriction.json", config
    ).choices  # search reads it the same way
    assert restriction == result["restriction"] and all(restriction.values())
    assert sum(map(len, restriction.values())) == sum(map(len, config.choices().values())) - len(
        result["dropped"]
    )
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = [r for r in rows if r["kind"] == "shrink"]
    assert [e["epoch"] for e in events] == [2, 4]  # epochs > warm-up (1) divisible by the period (2)
    alive = sum(map(len, config.choices().values()))
    for e in events:
        assert len(e["candidates"]) == alive  # every candidate still in the space, with its evidence
        for c in e["dropped"]:
            assert c["p_holm"] <= 1 - e["confidence"] and c["n"] >= 5 and c["mean_loss"] > 0
            assert c["diff"] > 0 and c["value"] != c["best"] and c["decision"] == "dropped"
        alive -= len(e["dropped"])
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == 5 and all(0 <= r["val_acc"] <= 1 for r in epochs)
    for name in ("loss.png", "scores.png"):
        assert (run_dir / name).read_bytes()[:8] == PNG


def test_space_sample_restricted_to_the_shrunk_space(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub.json"
    assert (
        main(
            [
                "space",
                "sample",
                "--space",
                "sst_tiny",
                "--seed",
                "3",
                "--out",
                str(out),
                "--restriction",
                str(run_dir / "restriction.json"),
            ]
        )
        == 0
    )
    restriction = json.loads((run_dir / "restriction.json").read_text())["keep"]
    sub, _ = load_subnet(out)
    assert all(sub.sample[k] in v for k, v in restriction.items())


def test_five_way_one_shot_on_meta_test_is_well_above_chance(
    run_dir: Path, synth_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    r = evaluate(run_dir, synth_dataset, tmp_path, "--way", "5", "--shot", "1", "--episodes", "100")
    assert r["split"] == "test" and r["episodes"] == 100
    assert r["subnet_source"] == "largest of the restriction"
    assert r["accuracy"]["alignment"] > 0.35, r  # chance is 0.20
    assert 0 < r["ci95"]["alignment"] < 0.1
    assert "accuracy" in capsys.readouterr().out


def test_alignment_beats_the_mean_on_reversed_pairs(run_dir: Path, synth_dataset: Path,
                                                    tmp_path: Path) -> None:
    """2-way episodes of two classes that are each other played backwards, on held-out classes."""
    acc = {}
    for split in ("val", "test"):
        r = evaluate(run_dir, synth_dataset, tmp_path, "--reversed-pairs", "--eval-split", split,
                     "--head", "both", "--query", "4", "--episodes", "60")
        assert r["way"] == 2 and len(r["pairs"]) == 2
        acc[split] = r["accuracy"]
    alignment = sum(a["alignment"] for a in acc.values()) / 2
    prototype = sum(a["prototype"] for a in acc.values()) / 2
    assert alignment > prototype + 0.05, acc


def test_eval_with_a_subnet_document_and_the_model_option(run_dir: Path, synth_dataset: Path,
                                                          tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    sub = tmp_path / "sub.json"
    assert main(["space", "sample", "--space", "sst_tiny", "--out", str(sub)]) == 0
    r = evaluate(run_dir, synth_dataset, tmp_path, "--subnet", str(sub), "--episodes", "5",
                 "--head", "prototype", "--way", "3")
    assert r["subnet_source"] == str(sub) and set(r["accuracy"]) == {"prototype"}
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "models" / "x"), "--data", str(synth_dataset)]) == 2
    err = capsys.readouterr().err
    assert "models/x" in err and "card.json" in err
    with pytest.raises(SystemExit):
        main(["eval", "--space", "sst_tiny", "--model", "m", "--weights", str(run_dir), "--data", "d"])
    other = ["eval", "--space", "sst_paper", "--weights", str(run_dir), "--data", str(synth_dataset)]
    assert main(other) == 2
    assert "weights do not fit the space" in capsys.readouterr().err
