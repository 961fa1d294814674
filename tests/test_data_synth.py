"""The synthetic temporal-action dataset and the `sst-edge data` verbs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sst_edge.cli import main
from sst_edge.data.synth import _mask, _objects, assign_splits, generate_synthetic, render_clip, synth_classes
from sst_edge.device.datasets import load_splits
from sst_edge.device.decoders import make_decoder
from sst_edge.device.preprocess import sample_indices
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


def test_same_seed_same_bytes_in_other_processes(tmp_path):
    """Separate processes (other str-hash salt, other memory layout) must write the same bytes: x264's
    macroblock tree made about 3 clips in 4 differ between two processes, and some within one."""
    code = ("import sys\nfrom sst_edge.data.synth import generate_synthetic\n"
            "for out in sys.argv[1:]:\n"
            "    generate_synthetic(out, classes=5, clips=2, frames=16, size=32, seed=5, progress=False)\n")
    for hash_seed, outs in (("0", ["a"]), ("1", ["b", "c"])):  # "c": a second run in a used process
        subprocess.run([sys.executable, "-c", code, *(str(tmp_path / o) for o in outs)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed}, timeout=120)
    a = tmp_path / "a"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert sum(f.suffix == ".mp4" for f in files) == 10
    for other in (tmp_path / "b", tmp_path / "c"):
        assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
        differ = [str(f) for f in files if (a / f).read_bytes() != (other / f).read_bytes()]
        assert not differ, f"{other.name}: {differ}"


def _blocks(x: np.ndarray) -> np.ndarray:
    """4x4 block means of 64x86 frames: H.264 loss and pixel noise average out, a moved object does not."""
    return x[:, :64, :84].reshape(len(x), 16, 4, 21, 4, 3).mean(axis=(2, 4))


def test_reversed_pairs_differ_at_the_evaluation_frames(synth_dataset):
    """At the 4 segment-centre frames of a clip, each frame differs visibly from the frame at the same
    position in its reversed partner, so the order of what a 4-frame model sees tells the pair apart."""
    meta = json.loads((synth_dataset / "classes.json").read_text())
    idx = sample_indices(16, 4, train=False)
    dec = make_decoder("auto")
    assert len(meta["reversed_pairs"]) == 8
    for base, rev in meta["reversed_pairs"]:
        for k in range(10):
            a = _blocks(dec.read(synth_dataset / base / f"{base}_{k:03d}.mp4", idx).astype(float))
            b = _blocks(dec.read(synth_dataset / rev / f"{rev}_{k:03d}.mp4", idx).astype(float))
            least = min(np.abs(a[t] - b[t]).max() for t in range(4))
            assert least > 15, f"{base} / {rev} clip {k}: a frame differs by only {least:.1f} levels"


def _turn_period(shape: str) -> int:
    """The smallest turn (degrees) after which ``shape`` covers itself again; 360 if no symmetry."""
    yy, xx = np.mgrid[-1.5:1.5:121j, -1.5:1.5:121j]
    ref = _mask(shape, xx, yy, 1.0)
    iou = []
    for deg in range(361):
        t = np.deg2rad(deg)
        m = _mask(shape, xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t), 1.0)
        iou.append((m & ref).sum() / (m | ref).sum())
    off = next(d for d, v in enumerate(iou) if v < 0.8)  # turned away from itself; then back, at a peak
    return next(d for d in range(off, 361) if iou[d] > 0.9 and iou[d] >= max(iou[d - 3:d + 4]))


def test_turn_periods_of_shapes():
    assert [_turn_period(s) for s in ("arrow", "triangle", "bar", "square")] == [360, 120, 180, 90]


@pytest.mark.parametrize("frames", [4, 8])
def test_turning_pairs_show_their_direction(frames):
    """Between two evaluation frames a rotating shape or an orbiting object turns by less than a third
    of the turn after which it looks the same, so turning the other way would take at least twice as
    far: the direction is plain and cw/ccw are told apart (a triangle repeats every 120 and turned 48)."""
    du = np.diff(sample_indices(16, frames, train=False)).max() / 15  # the phase step; a clip spans <= 1
    j = {"x0": 0.0, "y0": 0.0, "angle0": 0.0, "freq": 1.0, "phase": 0.0}
    specs = synth_classes(24)
    turning = [c for c in specs if c.motion in ("rotate_cw", "orbit_cw") and c.reversed_of is None]
    assert len(turning) == 2 and all(any(r.reversed_of == c.name for r in specs) for c in turning)
    for c in turning:
        (o0,), (o1,) = _objects(c.motion, 0.0, j), _objects(c.motion, du, j)
        if c.motion == "rotate_cw":
            turn, period = np.rad2deg(o1["angle"] - o0["angle"]), _turn_period(c.shape)
        else:  # the position goes round; the shape itself does not turn
            turn, period = np.rad2deg(np.arctan2(o1["y"], o1["x"]) - np.arctan2(o0["y"], o0["x"])), 360
        assert 0 < turn < period / 3, f"{c.name}: turns {turn:.0f} degrees of {period}"


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


def test_cli_check_reads_the_split_files_train_and_eval_are_given(tmp_path, capsys):
    """`data check --split DIR` checks the split files where `train --split DIR` reads them: a clip that a
    split elsewhere names, and that is gone, is a split problem; without --split that split is not seen."""
    out = generate_synthetic(tmp_path / "ds", classes=5, clips=2, frames=4, size=32, progress=False)
    elsewhere = tmp_path / "splits" / "arn"
    elsewhere.parent.mkdir()
    (out / "splits").rename(elsewhere)
    gone = elsewhere.joinpath("test.txt").read_text().split()[0]
    next((out / gone.split("/")[0]).glob(gone.split("/")[1] + ".*")).unlink()
    assert main(["data", "check", str(out)]) == 0  # DIR/splits is not there: only the clips are checked
    assert "0 split problems" in capsys.readouterr().out
    assert main(["data", "check", str(out), "--split", str(elsewhere)]) == 1
    text = capsys.readouterr().out.replace("\n", "")
    assert "1 split problems" in text and gone.split("/")[1] in text
    assert main(["data", "check", str(out), "--split", str(tmp_path / "nowhere")]) == 2
    assert "no split files here" in capsys.readouterr().err
