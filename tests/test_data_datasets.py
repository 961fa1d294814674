"""Dataset layouts: literature split files and seeded class-folder splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from sst_edge.device.datasets import (
    find_split_files,
    load_splits,
    read_split_file,
    scan_class_folders,
    split_classes,
)
from sst_edge.device.preprocess import Preprocess, load_clip
from sst_edge.errors import DatasetError, VideoError


def _touch(root: Path, *rel: str) -> None:
    """Placeholder clip files: split parsing looks at names only, it decodes nothing."""
    for r in rel:
        p = root / r
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\0")


def test_split_file_formats_of_the_literature(tmp_path):
    _touch(tmp_path, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
           "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi", "blasting sand/-kYzxMKp514_000086_000096.mp4",
           "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "test18/195025.webm",
           "brush_hair/notes.txt")
    split = tmp_path / "trainlist01.txt"
    split.write_text(
        "# UCF101 style, with a label number\r\n"
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi\t1\r\n"
        "\n"
        "blasting sand/-kYzxMKp514_000086_000096\n"       # Kinetics (CMN): spaces in the class, no extension
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0\n"  # HMDB51 (ARN)
        "test18/195025\n"                                   # SSv2 (OTAM)
        "test18/195025\n"                                   # a duplicate is kept once
    )
    s = read_split_file(split, tmp_path, name="train")
    assert s.name == "train" and len(s) == 5 and not s.missing
    assert s.classes == ["ApplyEyeMakeup", "blasting sand", "brush_hair", "test18"]
    assert s.clips["blasting sand"] == (tmp_path / "blasting sand/-kYzxMKp514_000086_000096.mp4",)
    assert s.clips["test18"] == (tmp_path / "test18/195025.webm",)
    assert len(s.clips["ApplyEyeMakeup"]) == 2


def test_clip_whose_name_ends_in_a_number_is_not_mistaken_for_a_label(tmp_path):
    _touch(tmp_path, "jump/take 2.mp4")
    split = tmp_path / "test.txt"
    split.write_text("jump/take 2\n")
    assert read_split_file(split, tmp_path).clips["jump"] == (tmp_path / "jump/take 2.mp4",)


def test_frame_folder_entry_is_the_folder_and_an_empty_one_is_named_when_read(tmp_path):
    (tmp_path / "run" / "clip1").mkdir(parents=True)
    split = tmp_path / "val.txt"
    split.write_text("run/clip1\n")
    assert read_split_file(split, tmp_path).clips == {"run": (tmp_path / "run" / "clip1",)}
    with pytest.raises(VideoError, match="clip1: empty frame folder"):
        load_clip(tmp_path / "run" / "clip1", Preprocess(frames=2, size=8, resize=8, decoder="pyav"))


def test_split_files_found_in_both_namings(tmp_path):
    folder = tmp_path / "splits"
    folder.mkdir()
    for name in ("trainlist03.txt", "vallist03.txt", "testlist03.txt"):
        (folder / name).write_text("")
    assert find_split_files(folder) == {s: folder / f"{s}list03.txt" for s in ("train", "val", "test")}
    (folder / "trainlist01.txt").write_text("")
    with pytest.raises(DatasetError, match="several train files"):
        find_split_files(folder)
    assert find_split_files(tmp_path) is None


def test_load_splits_uses_root_splits_and_rejects_overlap(tmp_path):
    _touch(tmp_path, *(f"c{i}/v{j}.mp4" for i in range(6) for j in range(2)))
    (tmp_path / "splits").mkdir()
    for name, classes in {"train": [0, 1], "val": [2, 3], "test": [4, 5]}.items():
        lines = "".join(f"c{i}/v{j}\n" for i in classes for j in range(2))
        (tmp_path / "splits" / f"{name}.txt").write_text(lines)
    sp = load_splits(tmp_path)
    assert sp.train.classes == ["c0", "c1"] and sp["test"].classes == ["c4", "c5"]
    assert "split files" in sp.source
    (tmp_path / "splits" / "val.txt").write_text("c2/v0\nc1/v1\n")
    with pytest.raises(DatasetError, match="train and val share 1 classes: c1"):
        load_splits(tmp_path)


def test_class_folders_split_by_seeded_ratio(tmp_path):
    _touch(tmp_path, *(f"class{i:02d}/clip{j}.mp4" for i in range(20) for j in range(3)))
    _touch(tmp_path, "class20/readme.txt")
    folders = scan_class_folders(tmp_path)
    assert len(folders) == 20 and all(len(v) == 3 for v in folders.values())
    a = load_splits(tmp_path, seed=1)
    assert a.source.startswith("class folders")
    sizes = [len(a.train.classes), len(a.val.classes), len(a.test.classes)]
    assert sizes == [12, 4, 4]
    assert sorted(a.train.classes + a.val.classes + a.test.classes) == sorted(folders)
    b = load_splits(tmp_path, seed=1)
    for s in ("train", "val", "test"):
        assert a[s].classes == b[s].classes
    c = load_splits(tmp_path, seed=2)
    assert c.test.classes != a.test.classes
    assert split_classes(list(folders), (0.5, 0.25, 0.25), seed=0)["val"] == \
        split_classes(list(reversed(list(folders))), (0.5, 0.25, 0.25), seed=0)["val"]  # order-independent
    with pytest.raises(DatasetError, match="ratios"):
        split_classes(list(folders), (0.5, 0.5, 0.5))


def test_empty_or_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_splits(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no class folders"):
        load_splits(tmp_path)
