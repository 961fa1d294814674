"""The device half: the runtime verbs in a process where torch, NNI, onnx, fvcore, lightning, matplotlib
and scipy cannot be imported (tests/hostless.py) work, and give the same features and answers as the full
install in this process; the device's features equal the evaluation preprocessing written out
independently (tests/device_check.py's `reference_clip`). `make device-check` does the same with a real
`pip install '.[cpu]'`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from device_check import reference_clip
from hostless import HOST_ONLY, hostless_code, run_hostless

from sst_edge.data.encode import write_video
from sst_edge.device.card import load_card
from sst_edge.device.datasets import load_splits
from sst_edge.device.decoders import make_decoder
from sst_edge.runtime import verbs
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.runtime.gallery import Gallery

TOL = 1e-5

IMPORT_ALL = """
import importlib, pkgutil
import sst_edge.cli, sst_edge.device, sst_edge.runtime
for pkg in (sst_edge.device, sst_edge.runtime):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(m.name)
print("\\n".join(sorted(sys.modules)))
"""


def _ok(r: subprocess.CompletedProcess[str], what: str) -> str:
    assert r.returncode == 0, f"hostless `sst-edge {what}` exited {r.returncode}:\n{r.stderr[-3000:]}"
    return r.stdout


def test_device_modules_import_nothing_host_only() -> None:
    """Every module of sst_edge.device and sst_edge.runtime (and the CLI) imports, hostless; and in a plain
    process, where torch and the rest could be imported, none of them is."""
    for code in (hostless_code(IMPORT_ALL), "import sys\n" + IMPORT_ALL):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           check=False)
        assert r.returncode == 0, r.stderr[-3000:]
        modules = r.stdout.split()
        assert "sst_edge.runtime.verbs" in modules and "sst_edge.device.preprocess" in modules
        pulled = sorted({m.split(".")[0] for m in modules} & set(HOST_ONLY))
        assert not pulled, f"the device half imported {pulled}"


@pytest.mark.parametrize("args", [["--help"], ["classify", "--help"], ["enroll", "--help"],
                                  ["gallery", "list", "--help"], ["eval", "--help"]])
def test_help_hostless(args: list[str]) -> None:
    out = _ok(run_hostless(args), " ".join(args))
    assert out.startswith("usage: sst-edge")


# ------------------------------------------------------------------------------------------- verbs
@pytest.fixture(scope="module")
def scene(exported_model: Path, synth_dataset: Path,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """3 test labels x 3 clips to enroll, a held-out query of each, and the 3 queries back to back."""
    tmp = tmp_path_factory.mktemp("device_half")
    test = load_splits(synth_dataset).test
    labels = test.classes[:3]
    queries = [test.clips[lb][-1] for lb in labels]
    dec = make_decoder("pyav")
    long = write_video(tmp / "long.mp4", np.concatenate(
        [dec.read(q, range(dec.info(q).num_frames)) for q in queries]))
    return {"tmp": tmp, "model": exported_model, "data": synth_dataset, "labels": labels,
            "enroll": {lb: test.clips[lb][:3] for lb in labels}, "queries": queries, "long": long}


@pytest.fixture(scope="module")
def hostless_gallery(scene: dict[str, Any]) -> Path:
    """The scene's clips enrolled by `sst-edge enroll` in hostless children, one call per label."""
    gallery = scene["tmp"] / "gallery-hostless"
    for lb, clips in scene["enroll"].items():
        _ok(run_hostless(["enroll", "--model", scene["model"], "--gallery", gallery, "--label", lb, *clips,
                          "--no-progress"]), "enroll")
    return gallery


@pytest.fixture(scope="module")
def full_gallery(scene: dict[str, Any]) -> Path:
    """The same clips enrolled in this process (the full install)."""
    gallery = scene["tmp"] / "gallery-full"
    rt = FewShotRuntime(scene["model"])
    for lb, clips in scene["enroll"].items():
        verbs.enroll(rt, gallery, lb, clips, progress=False)
    return gallery


def test_enrolled_features_match_full_install_and_reference(scene: dict[str, Any], hostless_gallery: Path,
                                                           full_gallery: Path) -> None:
    card = load_card(scene["model"])
    g_dev, g_full = Gallery.open(hostless_gallery, card), Gallery.open(full_gallery, card)
    assert {lb: len(r) for lb, r in g_dev.labels.items()} == {lb: 3 for lb in scene["labels"]}
    full = {r.source: g_full.features(r) for recs in g_full.labels.values() for r in recs}
    rt = FewShotRuntime(scene["model"])
    dec = make_decoder(rt.decoder_name)
    for recs in g_dev.labels.values():
        for r in recs:
            f = g_dev.features(r)
            assert f.shape == rt.feature_shape
            assert np.abs(f - full[r.source]).max() <= TOL, r.source
            assert np.abs(f - rt.embed(rt.load(r.source)[None])[0]).max() <= TOL, r.source
            ref = rt.embed(reference_clip(r.source, card.preprocess.to_dict(), dec)[None])[0]
            assert np.abs(f - ref).max() <= TOL, f"{r.source}: device preprocessing differs from the card's"
    # both galleries calibrated the same way on the same features
    cal_dev, cal_full = g_dev.doc["calibration"], g_full.doc["calibration"]
    assert set(cal_dev) == set(cal_full) == {"alignment", "prototype"}
    for k in cal_dev:
        assert cal_dev[k]["temperature"] == pytest.approx(cal_full[k]["temperature"], abs=TOL)
        assert cal_dev[k]["threshold"] == pytest.approx(cal_full[k]["threshold"], abs=TOL)
        assert (cal_dev[k].get("score_threshold") is None) == (cal_full[k].get("score_threshold") is None)
        if cal_full[k].get("score_threshold") is not None:
            assert cal_dev[k]["score_threshold"] == pytest.approx(cal_full[k]["score_threshold"], abs=1e-4)


def _same_predictions(dev: list[dict[str, Any]], full: list[dict[str, Any]]) -> None:
    assert len(dev) == len(full)
    for a, b in zip(dev, full, strict=True):
        assert a["label"] == b["label"]
        assert [x["label"] for x in a["ranking"]] == [x["label"] for x in b["ranking"]]
        for x, y in zip(a["ranking"], b["ranking"], strict=True):
            assert x["score"] == pytest.approx(y["score"], abs=TOL)
            assert x["confidence"] == pytest.approx(y["confidence"], abs=TOL)


def test_classify_stream_list_eval_match_full_install(scene: dict[str, Any], hostless_gallery: Path,
                                                      full_gallery: Path) -> None:
    model, queries = scene["model"], scene["queries"]
    out = json.loads(_ok(run_hostless(["classify", "--model", model, "--gallery", hostless_gallery, *queries,
                                       "--json", "--no-progress"]), "classify --json"))
    assert [r["clip"] for r in out["results"]] == [str(q) for q in queries]
    full = verbs.classify(model, full_gallery, queries, progress=False).to_dict()
    _same_predictions(out["results"], full["results"])

    out = json.loads(_ok(run_hostless(["classify", "--model", model, "--gallery", hostless_gallery,
                                       "--stream", scene["long"], "--unit", "frames", "--span", "16",
                                       "--stride", "8", "--json"]), "classify --stream"))
    full = verbs.stream(model, full_gallery, scene["long"], span=16, stride=8, unit="frames").to_dict()
    assert [(w["start_frame"], w["end_frame"]) for w in out["spans"]] == [(0, 16), (8, 24), (16, 32),
                                                                            (24, 40), (32, 48)]
    assert [w["label"] for w in out["spans"]] == [w["label"] for w in full["spans"]]
    for a, b in zip(out["spans"], full["spans"], strict=True):
        assert a["confidence"] == pytest.approx(b["confidence"], abs=TOL)

    listing = _ok(run_hostless(["gallery", "list", hostless_gallery, "--model", model]), "gallery list")
    assert all(lb in listing for lb in scene["labels"]) and "calibration alignment" in listing

    res = scene["tmp"] / "eval.json"
    text = _ok(run_hostless(["eval", "--model", model, "--data", scene["data"], "--episodes", "6", "--head",
                             "both", "--out", res, "--no-progress"]), "eval --model")
    assert "ONNX Runtime" in text
    dev = json.loads(res.read_text())
    full = verbs.eval_model(model, scene["data"], episodes=6, heads=("alignment", "prototype"),
                            progress=False).to_dict()
    assert dev["accuracy"] == full["accuracy"] and dev["episodes"] == 6
