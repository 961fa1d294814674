"""Clips stored as folders of extracted frames (issue 19): numeric order, clear refusals, `data check`,
mixed datasets, and the same results as the videos they came from in training, evaluation and the runtime.

Expected values come from elsewhere than the frame reader: hand-written levels and orders, the video
decoders (an independent decoding path: H.264 + libswscale from the video), Pillow's PNG decoder, and the
same training / evaluation / runtime run on the videos.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostless import run_hostless
from PIL import Image

from sst_edge.data.check import check_dataset
from sst_edge.data.frames import encode_image, write_frames
from sst_edge.device.datasets import load_splits, read_split_file, scan_class_folders
from sst_edge.device.decoders import make_decoder
from sst_edge.device.frames import frame_number
from sst_edge.device.preprocess import Preprocess, load_clip
from sst_edge.errors import VideoError


def _gray(level: int, h: int = 8, w: int = 10) -> np.ndarray:
    return np.full((h, w, 3), level, np.uint8)


def _folder(path: Path, names: dict[str, np.ndarray | bytes]) -> Path:
    """A folder holding ``names``: arrays are written as PNG (or JPEG by extension), bytes as they are."""
    path.mkdir(parents=True, exist_ok=True)
    for name, content in names.items():
        ext = "png" if name.endswith(".png") else "jpg"
        data = content if isinstance(content, bytes) else encode_image(content, ext)
        (path / name).write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------ order
@pytest.mark.parametrize("names", [
    ["1.png", "02.png", "10.png", "011.png", "3.png", "00000100.png", "9.png"],   # mixed padding
    ["img_1.png", "img_10.png", "img_2.png", "img_0003.png", "img_20.png"],       # TSN-style prefix
    ["frame7.png", "frame12.png", "frame8.png", "frame100.png"],
])
def test_frames_are_read_in_numeric_order_whatever_the_padding(tmp_path: Path, names: list[str]) -> None:
    numbers = [int("".join(ch for ch in n if ch.isdigit())) for n in names]  # each name holds one number
    folder = _folder(tmp_path / "clip", {n: _gray(2 * k) for n, k in zip(names, numbers, strict=True)})
    dec = make_decoder("pyav")
    assert dec.info(folder).num_frames == len(names)
    got = dec.read(folder, range(len(names)))[:, 0, 0, 0].tolist()
    assert got == [2 * k for k in sorted(numbers)]


def test_frame_number_parsing() -> None:
    assert frame_number("00000012.jpg") == ("#.jpg", 12)
    assert frame_number("img_00003.JPG") == ("img_#.jpg", 3)
    assert frame_number("v_Run_g01_c02_0005.png") == ("v_Run_g01_c02_#.png", 5)
    assert frame_number("thumb.jpg") is None


@pytest.mark.parametrize("names, words", [
    (["1.png", "001.png", "2.png"], ["given twice", "001.png and 1.png"]),
    (["img_1.png", "img_2.png", "flow_1.png"], ["2 patterns", "flow_#.png", "img_#.png"]),
    (["1.png", "2.png", "last.png"], ["hold the frame number", "last.png"]),
    (["1.jpg", "2.png"], ["2 patterns"]),
])
def test_ambiguous_frame_names_are_refused(tmp_path: Path, names: list[str], words: list[str]) -> None:
    folder = _folder(tmp_path / "clip", {n: _gray(10) for n in names})
    with pytest.raises(VideoError) as e:
        load_clip(folder, Preprocess(frames=2, size=8, resize=8, decoder="pyav"))
    assert e.value.path == folder
    for w in words:
        assert w in str(e.value)


# ------------------------------------------------------------------------------------ bad input
def test_bad_frames_are_named(tmp_path: Path) -> None:
    pre = Preprocess(frames=4, size=8, resize=8, decoder="pyav")
    good = encode_image(_gray(50), "jpg")
    noise = encode_image(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8), "jpg")
    cut = noise[: len(noise) * 3 // 4]  # headers intact, scan data cut: FFmpeg conceals it unless told
    big = encode_image(_gray(50, 48, 64), "jpg")
    cases = {
        "empty": ({}, None, "empty frame folder"),
        "only_text": ({"notes.txt": b"hello"}, None, "notes.txt"),
        "zero_bytes": ({"1.jpg": good, "2.jpg": b"", "3.jpg": good, "4.jpg": good}, "2.jpg", "0 bytes"),
        "garbage": ({"1.jpg": good, "2.jpg": good, "3.jpg": b"not an image at all", "4.jpg": good}, "3.jpg",
                    "not a JPEG or PNG"),
        "truncated": ({"1.jpg": big, "2.jpg": cut, "3.jpg": big, "4.jpg": big}, "2.jpg", "damaged JPEG"),
        "sizes": ({"1.png": _gray(5), "2.png": _gray(5, 10, 10), "3.png": _gray(5), "4.png": _gray(5)},
                  "2.png", "frames of one clip must have one size"),
    }
    for case, (files, culprit, words) in cases.items():
        folder = _folder(tmp_path / case, files)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        with pytest.raises(VideoError) as e:
            load_clip(folder, pre)
        assert e.value.path == (folder / culprit if culprit else folder), case
        assert words in str(e.value), (case, str(e.value))
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, f"{case}: input changed"


def test_data_check_names_empty_folders_bad_images_and_gaps(tmp_path: Path, bframe_video: Path) -> None:
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    os.symlink(bframe_video, root / "videos" / "a.mp4")
    frames = {f"{k:05d}.png": _gray(3 * k, 48, 64) for k in (1, 2, 3, 4, 7, 8, 10)}  # 5-6 and 9 missing
    _folder(root / "frames" / "gappy", frames)
    _folder(root / "frames" / "fine", {f"{k}.png": _gray(k, 48, 64) for k in range(1, 9)})
    _folder(root / "frames" / "hollow", {})
    _folder(root / "frames" / "broken", {"1.png": _gray(1, 48, 64), "2.png": b"", "3.png": _gray(1, 48, 64)})
    (root / "nothing").mkdir()
    rep = check_dataset(root, decoder="pyav", progress=False)
    assert rep.clips == {"frames": 4, "videos": 1}
    assert sorted(rep.unreadable["frames"]) == sorted([
        (root / "frames" / "broken" / "2.png", "unreadable image: empty file (0 bytes)"),
        (root / "frames" / "hollow", "empty frame folder: no .jpg/.jpeg/.png images"),
    ])
    assert not rep.ok
    warned = dict(rep.warnings)
    assert warned[root / "nothing"].startswith("empty folder")
    assert warned[root / "frames" / "gappy"].startswith("gap in the frame numbers: 3 missing (5-6, 9) "
                                                         "between 1 and 10")
    assert len(warned) == 2


def test_mixed_dataset_scan_and_split_entries(tmp_path: Path, bframe_video: Path) -> None:
    root = tmp_path / "data"
    (root / "walk").mkdir(parents=True)
    shutil.copy(bframe_video, root / "walk" / "v1.mp4")
    _folder(root / "walk" / "v2", {"00000001.jpg": _gray(1), "00000002.jpg": _gray(2)})
    _folder(root / "run" / "r1", {"1.png": _gray(1)})
    _folder(root / "nested" / "level" / "clip", {"1.png": _gray(1)})  # a folder of folders: no clip
    found = scan_class_folders(root)
    assert found == {"walk": (root / "walk" / "v1.mp4", root / "walk" / "v2"), "run": (root / "run" / "r1",)}
    split = tmp_path / "test.txt"
    split.write_text("walk/v1\nwalk/v2\nrun/r1\n")
    s = read_split_file(split, root)
    assert s.clips == {"run": (root / "run" / "r1",),
                       "walk": (root / "walk" / "v1.mp4", root / "walk" / "v2")}


# ------------------------------------------------------------------------ the same as the videos
def test_png_frames_of_a_video_read_back_as_its_frames(synth_dataset: Path, tmp_path: Path) -> None:
    """Native size: exactly the video's decoded frames (also as Pillow decodes the files). At the
    preprocessing's reduced size: the video path scales in YUV, this one in RGB (measured bound)."""
    dec = make_decoder("pyav")
    videos = sorted(synth_dataset.glob("*/*_000.mp4"))[:6]
    pre = Preprocess(frames=8, size=64, resize=73, decoder="pyav")
    diffs = []
    for v in videos:
        frames = dec.read(v, range(dec.info(v).num_frames))
        folder = write_frames(tmp_path / v.stem, frames, "png")
        assert np.array_equal(dec.read(folder, range(len(frames))), frames)
        pillow = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.iterdir())])
        assert np.array_equal(pillow, frames)
        levels = np.abs(load_clip(v, pre) - load_clip(folder, pre)) * np.asarray(pre.std)[:, None, None] * 255
        diffs.append(levels)
    d = np.concatenate([x.ravel() for x in diffs])
    assert d.mean() < 3.0 and np.percentile(d, 99) < 20, (d.mean(), np.percentile(d, 99), d.max())


# ------------------------------------------------------------- training, evaluation and the runtime
def _lines(split: list[tuple[str, str]]) -> str:
    return "".join(f"{c}/{n}\n" for c, n in split)


@pytest.fixture(scope="module")
def frame_sets(synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The synthetic set's decoded frames as PNG and JPEG frame folders for the train classes (2 clips
    each) and the test classes (5 each); the val classes stay videos (a mixed dataset). Split files list
    those clips, for the videos too, so each of the three datasets holds the same clips."""
    tmp = tmp_path_factory.mktemp("frame_sets")
    full = load_splits(synth_dataset)
    dec = make_decoder("pyav")
    take = {"train": 2, "val": 2, "test": 5}
    chosen = {s: [(c, p) for c in full[s].classes for p in full[s].clips[c][:take[s]]] for s in take}
    split_dir = tmp / "video_splits"
    split_dir.mkdir()
    for s, items in chosen.items():
        (split_dir / f"{s}.txt").write_text(_lines([(c, p.stem) for c, p in items]))
    out: dict[str, Any] = {"videos": synth_dataset, "video_splits": split_dir, "chosen": chosen}
    decoded = {p: dec.read(p, range(dec.info(p).num_frames)) for s in ("train", "test") for _, p in chosen[s]}
    for ext in ("png", "jpg"):
        root = tmp / ext
        for s in ("train", "test"):
            for c, p in chosen[s]:
                write_frames(root / c / p.stem, decoded[p], ext)
        for c in full.val.classes:
            shutil.copytree(synth_dataset / c, root / c)  # a symbolic link out of the root is refused
        (root / "splits").mkdir()
        for s in take:
            (root / "splits" / f"{s}.txt").write_text((split_dir / f"{s}.txt").read_text())
        out[ext] = root
    return out


def test_dataset_of_frame_folders_loads_like_the_videos(frame_sets: dict[str, Any]) -> None:
    v = load_splits(frame_sets["videos"], frame_sets["video_splits"])
    for ext in ("png", "jpg"):
        f = load_splits(frame_sets[ext])
        for s in ("train", "val", "test"):
            assert f[s].classes == v[s].classes
            for c in v[s].classes:
                assert [p.stem for p in f[s].clips[c]] == [p.stem for p in v[s].clips[c]]
        assert all(p.is_dir() for p, _ in f.test.items())
        assert all(p.suffix == ".mp4" for p, _ in f.val.items())  # the val classes stayed videos


def _train(data: Path, split: Path | None, out: Path):
    from sst_edge.train.config import ShrinkConfig, TrainConfig
    from sst_edge.train.loop import train_supernet

    cfg = TrainConfig(space="sst_tiny", data=str(data), split=str(split) if split else None, episodes=3,
                      epochs=1, val_episodes=0, query=1, lr_warmup=1, workers=0, threads=1, resize=64, seed=3,
                      shrink=ShrinkConfig(warmup=5, period=1, min_count=3))
    return train_supernet(cfg, out, progress=False)


def test_training_on_frames_equals_training_on_videos(frame_sets: dict[str, Any], tmp_path: Path) -> None:
    """At the frames' native size PNG frames are the video's pixels, so training is the same to the bit
    (JPEG frames change the loss by their loss: measured in the issue's report, not asserted here)."""
    ref = _train(frame_sets["videos"], frame_sets["video_splits"], tmp_path / "videos")
    png = _train(frame_sets["png"], None, tmp_path / "png")
    assert png.first_epoch_loss == ref.first_epoch_loss
    assert png.val_acc == ref.val_acc and png.steps == ref.steps == 3


def _evaluate(trained_run: Path, data: Path, split: Path | None, resize: int | None):
    from sst_edge.train.evaluate import evaluate

    return evaluate("sst_tiny", trained_run, data, split_dir=split, episodes=15, seed=1, resize=resize,
                    workers=0, threads=1, progress=False)


def test_evaluation_on_frames_equals_evaluation_on_videos(frame_sets: dict[str, Any],
                                                          trained_run: Path) -> None:
    ref = _evaluate(trained_run, frame_sets["videos"], frame_sets["video_splits"], 64)
    png = _evaluate(trained_run, frame_sets["png"], None, 64)
    assert np.array_equal(png.per_episode, ref.per_episode)  # native size: the same pixels
    ref73 = _evaluate(trained_run, frame_sets["videos"], frame_sets["video_splits"], None)
    jpg = _evaluate(trained_run, frame_sets["jpg"], None, None)  # JPEG at the card's size: both losses
    for h in ref73.accuracy:
        assert abs(jpg.accuracy[h] - ref73.accuracy[h]) <= 0.05, (h, jpg.accuracy, ref73.accuracy)


def test_runtime_enrolls_and_classifies_frame_folders(frame_sets: dict[str, Any], exported_model: Path,
                                                      tmp_path: Path) -> None:
    """Features of a frame folder are the video's up to the pixel difference of the card's resize (YUV vs
    RGB scaling), and the queries get the video's answers (all 6 here; 88% of 42 queries on the demo's
    test split, measured); the device half (no torch) gives the in-process features exactly, hostless."""
    from sst_edge.runtime import verbs
    from sst_edge.runtime.engine import FewShotRuntime
    from sst_edge.runtime.gallery import Gallery

    rt = FewShotRuntime(exported_model)
    chosen = frame_sets["chosen"]["test"]
    labels = sorted({c for c, _ in chosen})[:3]
    per = {lb: [p for c, p in chosen if c == lb] for lb in labels}
    frames = {lb: [frame_sets["png"] / lb / p.stem for p in ps] for lb, ps in per.items()}
    videos = [p for lb in labels for p in per[lb]]
    folders = [f for lb in labels for f in frames[lb]]
    fv, ff = rt.embed_paths(videos), rt.embed_paths(folders)
    cos = np.sum(fv * ff, -1) / (np.linalg.norm(fv, axis=-1) * np.linalg.norm(ff, axis=-1))
    assert cos.mean() > 0.99, cos  # at the card's size (64x86 -> 73x98) the pixels differ by ~2 levels
    results = {}
    for kind, clips in (("videos", per), ("frames", frames)):
        g = tmp_path / f"gallery-{kind}"
        for lb in labels:
            verbs.enroll(rt, g, lb, clips[lb][:3], progress=False)
        queries = [clips[lb][k] for lb in labels for k in (3, 4)]
        results[kind] = [p.label for _, p in verbs.classify(rt, g, queries, progress=False).results]
    same = sum(a == b for a, b in zip(results["frames"], results["videos"], strict=True))
    assert same >= len(queries) - 1, results  # the same answers, up to that difference (all 6 here)
    g = tmp_path / "gallery-frames"
    again = verbs.enroll(rt, g, labels[0], [frames[labels[0]][0]], progress=False)
    assert not again.added and "already enrolled" in again.skipped[0]  # a folder's digest is stable
    # the device half: enroll and classify frame folders with the host libraries blocked
    hg = tmp_path / "gallery-hostless"
    r = run_hostless(["enroll", "--model", exported_model, "--gallery", hg, "--label", labels[0],
                      *frames[labels[0]][:3], "--no-progress"])
    assert r.returncode == 0, r.stderr[-2000:]
    for lb in labels[1:]:
        verbs.enroll(rt, hg, lb, frames[lb][:3], progress=False)
    card = rt.card
    dev, full = Gallery.open(hg, card), Gallery.open(g, card)
    for a, b in zip(dev.labels[labels[0]], full.labels[labels[0]], strict=True):
        assert a.sha256 == b.sha256 and np.abs(dev.features(a) - full.features(b)).max() <= 1e-5
    queries = [frames[lb][3] for lb in labels]
    r = run_hostless(["classify", "--model", exported_model, "--gallery", hg, *queries, "--json"])
    assert r.returncode == 0, r.stderr[-2000:]
    got = [x["label"] for x in json.loads(r.stdout)["results"]]
    assert got == [results["frames"][2 * i] for i in range(3)]


# ------------------------------------------------------------------------------------ zip archives
def test_a_zip_archive_of_frame_folders_is_read_in_place(tmp_path: Path, bframe_video: Path) -> None:
    """The same frames from a zip (root, or a folder inside one) as from the folders; bad members named."""
    import zipfile

    plain = tmp_path / "plain"
    for c in ("jump", "run", "walk"):
        for k in range(2):
            _folder(plain / c / f"{c}{k}", {f"{n:08d}.png": _gray(10 * n + k, 48, 64) for n in range(1, 6)})
    _folder(plain / "walk" / "broken", {"1.png": _gray(1, 48, 64), "2.png": b"", "4.png": _gray(1, 48, 64)})
    arc = tmp_path / "set.zip"
    with zipfile.ZipFile(arc, "w") as z:
        for p in sorted(plain.rglob("*")):
            z.write(p, "frames/" + p.relative_to(plain).as_posix())
        z.write(bframe_video, "frames/walk/clip.mp4")
    root = arc / "frames"
    found = scan_class_folders(root)
    assert {c: [p.name for p in v] for c, v in found.items()} == {
        "jump": ["jump0", "jump1"], "run": ["run0", "run1"], "walk": ["broken", "clip.mp4", "walk0", "walk1"]}
    pre = Preprocess(frames=4, size=48, resize=48, decoder="pyav")
    for c in ("jump", "run"):
        for k in range(2):
            assert np.array_equal(load_clip(root / c / f"{c}{k}", pre), load_clip(plain / c / f"{c}{k}", pre))
    split = tmp_path / "test.txt"
    split.write_text("run/run1\njump/jump0\n")
    assert read_split_file(split, root).clips == {"jump": (root / "jump" / "jump0",),
                                                  "run": (root / "run" / "run1",)}
    with pytest.raises(VideoError, match="only frame folders are read from an archive"):
        load_clip(root / "walk" / "clip.mp4", pre)
    rep = check_dataset(root, decoder="pyav", progress=False)
    (img, why), (video, why_video) = rep.unreadable["walk"]
    assert (img, why) == (root / "walk" / "broken" / "2.png", "unreadable image: empty file (0 bytes)")
    assert video == root / "walk" / "clip.mp4" and "only frame folders" in why_video
    assert [str(p) for p, _ in rep.warnings] == [str(root / "walk" / "broken")]  # the gap at frame 3
