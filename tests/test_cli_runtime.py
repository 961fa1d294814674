"""The runtime verbs as a user types them: enroll, classify (and --stream), gallery, eval --model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sst_edge.cli import main
from sst_edge.device.datasets import load_splits


def test_enroll_classify_gallery_eval(exported_model: Path, synth_dataset: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    test = load_splits(synth_dataset).test
    labels = test.classes[:3]
    gallery = tmp_path / "gallery"
    for label in labels:
        clips = [str(p) for p in test.clips[label][:4]]
        assert main(["enroll", "--model", str(exported_model), "--gallery", str(gallery), "--label", label,
                     *clips, "--no-progress"]) == 0
    capsys.readouterr()

    queries = [str(test.clips[lb][-1]) for lb in labels]
    assert main(["classify", "--model", str(exported_model), "--gallery", str(gallery), *queries,
                 "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["clip"] for r in out["results"]] == queries
    for r in out["results"]:
        assert r["label"] in (*labels, "unknown") and 0 <= r["confidence"] <= 1
        assert len(r["ranking"]) == 3

    assert main(["gallery", "list", str(gallery)]) == 0
    listing = capsys.readouterr().out
    assert all(lb in listing for lb in labels)
    assert main(["gallery", "rename", str(gallery), labels[0], "renamed"]) == 0
    assert main(["gallery", "remove", str(gallery), "--label", labels[1]]) == 0
    capsys.readouterr()
    assert main(["gallery", "list", str(gallery), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(doc["labels"]) == sorted(["renamed", labels[2]])
    assert len(doc["labels"]["renamed"]) == 4
    assert main(["gallery", "remove", str(gallery)]) == 2  # neither --label nor --clip
    assert "exactly one" in capsys.readouterr().err

    assert main(["eval", "--model", str(exported_model), "--data", str(synth_dataset), "--episodes", "4",
                 "--head", "both", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "alignment" in text and "prototype" in text and "ONNX Runtime" in text


def test_classify_names_a_bad_clip(exported_model: Path, synth_dataset: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    test = load_splits(synth_dataset).test
    gallery = tmp_path / "g"
    label = test.classes[0]
    assert main(["enroll", "--model", str(exported_model), "--gallery", str(gallery), "--label", label,
                 *map(str, test.clips[label][:2]), "--no-progress"]) == 0
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    capsys.readouterr()
    assert main(["classify", "--model", str(exported_model), "--gallery", str(gallery), str(bad)]) == 2
    assert "broken.mp4" in capsys.readouterr().err
