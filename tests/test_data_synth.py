"""The synthetic temporal-action dataset and the `sst-edge data` verbs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sst_edge.cli import main
from sst_edge.data.datasets import load_splits
from sst_edge.data.decoders import make_decoder
from sst_edge.data.synth import assign_splits, generate_synthetic, render_clip, synth_classes
from sst_edge.errors import SSTEdgeError


def test_default_dataset_layout_and_class_description(synth_dataset):
    meta = json.loads((synth_dataset / "classes.json").read_text())
    classes = {c["name"]: c for c in meta["classes"]}
    assert len(classes) == 24 and meta["clips_per_class"] == 10 and meta["frames"] == 16
    assert (meta["height"], meta["width"]) == (64, 86)
    assert {c["split"] for c in classes.values()} == {"train", "val", "test"}
    looks = {(c["motion"], c["shape"], c["colour"]) for c in classes.values() if not c["reversed_of"]}
    assert len(looks) == 16
    splits = load_splits(synth_dataset)
    assert [len(splits[s].classes) for s in ("train", "val", "test")] == [12, 6, 6]
    for s in ("train", "val", "test"):
        assert all(len(v) == 10 for v in splits[s].clips.values())
        assert set(splits[s].classes) == {n for n, c in classes.items() if c["split"] == s}
    pairs = meta["reversed_pairs"]
    assert len(pairs) == 8
    for base, rev in pairs:
        assert classes[rev]["reversed_of"] == base and classes[base]["reversed_of"] is None
        assert classes[base]["split"] == classes[rev]["split"], "a reversed pair stays in one split"
        assert classes[base]["shape"] == classes[rev]["shape"]
        assert classes[base]["colour"] == classes[rev]["colour"]
    in_test = [p for p in pairs if classes[p[0]]["split"] == "test"]
    assert len(in_test) >= 2
    assert (synth_dataset / "splits" / "test.txt").read_text().splitlines()[0].count("/") == 1


def test_reversed_class_plays_its_partner_backwards(synth_dataset):
    meta = json.loads((synth_dataset / "classes.json").read_text())
    base, rev = meta["reversed_pairs"][0]
    clip = 4
    a = make_decoder("auto").read(synth_dataset / base / f"{base}_{clip:03d}.mp4", range(16)).astype(float)
    b = make_decoder("auto").read(synth_dataset / rev / f"{rev}_{clip:03d}.mp4", range(16)).astype(float)
    # frame t of one is frame 15-t of the other, up to H.264 loss of the pixel noise: compare 4x4 block
    # means (the noise averages out, a moved object does not)
    def blocks(x):
        return x[:, :64, :84].reshape(16, 16, 4, 21, 4, 3).mean(axis=(2, 4))

    a, b = blocks(a), blocks(b)
    assert max(np.abs(a[t] - b[15 - t]).max() for t in range(16)) < 25
    assert np.abs(a[0] - b[0]).max() > 100 and np.abs(a[15] - b[15]).max() > 100, "the object moved"
    # exactly, before encoding
    specs = {c.name: c for c in synth_classes(24)}
    fa = render_clip(specs[base], [0, specs[base].unit, clip], 16, 64)
    fb = render_clip(specs[rev], [0, specs[rev].unit, clip], 16, 64)
    assert np.array_equal(fa[::-1], fb)


def test_clips_of_a_class_differ(synth_dataset):
    name = "move_right_red_circle"
    dec = make_decoder("auto")
    c0 = dec.read(synth_dataset / name / f"{name}_000.mp4", [0]).astype(float)
    c1 = dec.read(synth_dataset / name / f"{name}_001.mp4", [0]).astype(float)
    assert np.abs(c0 - c1).mean() > 5


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    kw = dict(classes=4, clips=2, frames=4, size=32, progress=False)
    a = generate_synthetic(tmp_path / "a", seed=3, **kw)
    b = generate_synthetic(tmp_path / "b", seed=3, **kw)
    c = generate_synthetic(tmp_path / "c", seed=4, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 4 * 2 + 3 + 1
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files if f.suffix == ".mp4")


@pytest.mark.parametrize("n", [4, 5, 6, 7, 9, 13, 20, 24, 31, 40, 57])
def test_split_assignment_for_any_class_count(n):
    specs = synth_classes(n)
    assert len({c.name for c in specs}) == n
    splits = assign_splits(specs, seed=0)
    names = [c for s in splits.values() for c in s]
    assert sorted(names) == sorted(c.name for c in specs) and all(splits.values())
    where = {c: s for s, v in splits.items() for c in v}
    for c in specs:
        if c.reversed_of:
            assert where[c.name] == where[c.reversed_of]
    if n >= 20:
        assert len(splits["val"]) >= 5 and len(splits["test"]) >= 5
        assert sum(c.reversed_of is not None and where[c.name] == "test" for c in specs) >= 2


def test_refuses_to_write_over_other_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SSTEdgeError, match="not empty"):
        generate_synthetic(tmp_path, classes=4, clips=1, frames=2, size=16, progress=False)
    with pytest.raises(SSTEdgeError, match="refusing to overwrite"):
        generate_synthetic(tmp_path, classes=4, clips=1, frames=2, size=16, overwrite=True, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    with pytest.raises(SSTEdgeError, match="at least 4 classes"):
        generate_synthetic(tmp_path / "x", classes=3, progress=False)
    with pytest.raises(SSTEdgeError, match="even number"):
        generate_synthetic(tmp_path / "x", size=63, progress=False)


def test_cli_synth_then_check(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["data", "synth", "--out", str(out), "--classes", "5", "--clips", "2", "--frames", "6",
            "--size", "32"]
    assert main(args) == 0
    assert "wrote 5 classes x 2 clips" in capsys.readouterr().out
    assert main(args) == 2, "an existing dataset is not overwritten silently"
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--seed", "1"]) == 0
    capsys.readouterr()

    assert main(["data", "check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "move_right_red_circle" in text and "10 of 10 clips readable" in text

    bad = sorted(out.glob("*/*.mp4"))[1]
    bad.write_bytes(bad.read_bytes()[:300])
    (sorted(out.glob("*/*.mp4"))[2]).unlink()
    assert main(["data", "check", str(out), "--decoder", "pyav"]) == 1
    text = capsys.readouterr().out.replace("\n", "")
    assert str(bad) in text and "not a readable video container" in text
    assert "8 of 9 clips readable" in text and "1 split problems" in text

    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_cli_check_full_decode(tmp_path, capsys):
    out = generate_synthetic(tmp_path / "ds", classes=4, clips=1, frames=4, size=32, progress=False)
    assert main(["data", "check", str(out), "--full"]) == 0
    assert Path(out / "classes.json").is_file()
