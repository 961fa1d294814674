"""Bad input: every broken clip or split entry gets a clear error naming the file; training skips them."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from sst_edge.data.episodes import EpisodeDataset
from sst_edge.data.synth import generate_synthetic
from sst_edge.device.datasets import load_splits, read_split_file
from sst_edge.device.decoders import decord_available
from sst_edge.device.preprocess import Preprocess, load_clip
from sst_edge.errors import DatasetError, SSTEdgeError, VideoError

NO_DECORD = pytest.mark.skipif(not decord_available(), reason="decord is not installed (aarch64)")
DECODERS = ["pyav", pytest.param("decord", marks=NO_DECORD)]


def _faststart(path: Path, n: int = 30) -> Path:
    """An mp4 with its index (moov) before the data: cutting it keeps a readable header."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(n):
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def _zero_frames(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()  # header written, no frame ever encoded
    return path


def _bad_file(kind: str, tmp_path: Path, make_video) -> tuple[Path, str]:
    """A broken clip of ``kind`` and the words its error must contain."""
    if kind == "truncated":
        good = make_video("good.mp4")
        bad = tmp_path / "truncated.mp4"
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return bad, "not a readable video container"
    if kind == "truncated_faststart":
        good = _faststart(tmp_path / "fs.mp4")
        bad = tmp_path / "truncated_fs.mp4"
        bad.write_bytes(good.read_bytes()[: int(good.stat().st_size * 0.6)])
        return bad, "truncated: the container lists 30 frames but only"
    if kind == "zero_frames":
        return _zero_frames(tmp_path / "zero.mp4"), "zero frames"
    if kind == "text":
        bad = tmp_path / "notes.mp4"
        bad.write_text("this is not a video\n")
        return bad, "not a readable video container"
    if kind == "empty":
        bad = tmp_path / "empty.mp4"
        bad.write_bytes(b"")
        return bad, "empty file"
    if kind == "missing":
        return tmp_path / "gone.mp4", "file not found"
    raise AssertionError(kind)


KINDS = ["truncated", "truncated_faststart", "zero_frames", "text", "empty", "missing"]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("kind", KINDS)
def test_broken_clip_raises_video_error_naming_it(kind, decoder, tmp_path, make_video, capfd):
    bad, words = _bad_file(kind, tmp_path, make_video)
    capfd.readouterr()
    with pytest.raises(VideoError) as err:
        load_clip(bad, Preprocess(frames=8, size=32, resize=32, decoder=decoder))
    assert isinstance(err.value, SSTEdgeError)
    assert err.value.path == bad
    assert str(bad) in str(err.value) and words in str(err.value)
    out = capfd.readouterr()
    assert out.err == "" and out.out == "", "decoders must not print on a broken file"


@pytest.mark.parametrize("decoder", DECODERS)
def test_clip_shorter_than_t_repeats_frames(decoder, make_video):
    path = make_video("short.mp4", n=3, h=48, w=64)
    x = load_clip(path, Preprocess(frames=8, size=48, resize=48, decoder=decoder))
    assert x.shape == (8, 3, 48, 48)
    distinct = {tuple(x[i].flatten()[:64].tolist()) for i in range(8)}
    assert len(distinct) == 3
    assert np.array_equal(x[0], x[1])


def test_missing_split_entry_names_the_split_file_and_line(tmp_path):
    (tmp_path / "walk").mkdir()
    (tmp_path / "walk" / "a.mp4").write_bytes(b"x")
    split = tmp_path / "test.txt"
    split.write_text("walk/a\nwalk/b.avi 3\nrun/c\n")
    with pytest.raises(DatasetError) as err:
        read_split_file(split, tmp_path)
    text = str(err.value)
    assert err.value.path == split and str(split) in text
    assert "2 entries" in text
    assert "line 2: walk/b.avi 3: no clip b.avi" in text
    assert f"line 3: run/c: no class folder {tmp_path / 'run'}" in text
    skipped = read_split_file(split, tmp_path, on_missing="skip")
    assert len(skipped) == 1 and len(skipped.missing) == 2


@pytest.fixture(scope="module")
def damaged_dataset(tmp_path_factory) -> tuple[Path, list[Path]]:
    """5 classes x 3 clips; one class has a text file, another a truncated clip."""
    root = generate_synthetic(tmp_path_factory.mktemp("damaged") / "ds", classes=5, clips=3, frames=6,
                              size=32, progress=False)
    shutil.rmtree(root / "splits")  # class folders only: all five classes in one split below
    clips = sorted(root.glob("*/*.mp4"))
    clips[0].write_text("not a video")
    clips[4].write_bytes(clips[4].read_bytes()[:200])
    return root, [clips[0], clips[4]]


@pytest.mark.parametrize("decoder", DECODERS)
def test_episode_replaces_unreadable_clips_and_counts_them(damaged_dataset, decoder):
    root, bad = damaged_dataset
    train = load_splits(root, ratios=(1.0, 0.0, 0.0)).train
    pre = Preprocess(frames=4, size=32, resize=32, decoder=decoder)
    ds = EpisodeDataset(train, pre, way=5, shot=1, query=1, episodes=6, seed=0)
    skipped = []
    for i in range(len(ds)):
        ep = ds[i]
        assert ep.support.shape == (5, 4, 3, 32, 32) and ep.query.shape == (5, 4, 3, 32, 32)
        used = set(ep.support_paths) | set(ep.query_paths)
        assert not used & {str(b) for b in bad}
        for path, label in zip(ep.support_paths + ep.query_paths,
                               ep.support_labels.tolist() + ep.query_labels.tolist(), strict=True):
            assert Path(path).parent.name == ep.classes[label], "a replacement comes from the same class"
        skipped += ep.skipped
    assert skipped, "with 2 of 15 clips broken, 6 five-way episodes must hit one"
    assert ds.skipped_count == len(skipped)
    assert set(ds.unreadable) <= {str(b) for b in bad}
    assert all(any(str(b) in s for b in bad) for s in skipped)


def test_class_without_enough_readable_clips_is_replaced_or_reported(damaged_dataset):
    root, _ = damaged_dataset
    train = load_splits(root, ratios=(1.0, 0.0, 0.0)).train
    pre = Preprocess(frames=4, size=32, resize=32, decoder="pyav")
    ds = EpisodeDataset(train, pre, way=5, shot=2, query=1, episodes=1)  # needs 3 good clips per class
    with pytest.raises(DatasetError, match="only 3 classes .* have 3 readable clips"):
        ds[0]
    ok = EpisodeDataset(train, pre, way=3, shot=2, query=1, episodes=3)
    for i in range(3):
        ep = ok[i]
        assert len(ep.classes) == 3 and len(ep.support_paths) == 6
