"""Few-shot video datasets: ``root/<class>/<clip>.<ext>``, split into disjoint meta-train/val/test classes.

A clip is a video file or a folder of extracted frames (``root/<class>/<clip>/00000001.jpg``, the layout of
the TRX / STRM / HyRSM code; see frames.py); one dataset, even one class, may hold both. The root may be a
zip archive of frame folders (``ssv2.zip``, or a folder inside one), read in place (archive.py).

Two sources of the split:
- split files in the format of the few-shot action-recognition literature (ARN, OTAM, TRX, CMN splits of
  HMDB51, UCF101, SSv2, Kinetics-100): one ``class/clip`` per line, with or without the file extension,
  optionally followed by a label number as in UCF101's ``trainlist01.txt``. Class names may hold spaces
  ("blasting sand/-kYzxMKp514_000086_000096").
- plain class folders: classes split by a seeded ratio (default 0.6/0.2/0.2), the same for a given seed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DatasetError, SSTEdgeError
from ..fileio import SPLIT_MAX_BYTES, SPLIT_MAX_LINES, read_bytes
from . import archive

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                    ".ogv")
SPLITS = ("train", "val", "test")
_LABEL = re.compile(r"^(?P<entry>.*\S)\s+-?\d+$")
_MAX_LISTED = 10


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


@dataclass(frozen=True)
class ClipSet:
    """The clips of one split: class name -> sorted clip paths. Class order is sorted by name."""

    name: str
    root: Path
    clips: Mapping[str, tuple[Path, ...]]
    missing: tuple[str, ...] = field(default=(), repr=False)  # split entries skipped (on_missing="skip")

    @property
    def classes(self) -> list[str]:
        return list(self.clips)

    def __len__(self) -> int:
        return sum(len(v) for v in self.clips.values())

    def items(self) -> Iterator[tuple[Path, str]]:
        """(clip path, class name) for every clip, class by class."""
        for cls, paths in self.clips.items():
            for p in paths:
                yield p, cls


@dataclass(frozen=True)
class FewShotSplits:
    """Disjoint class sets for meta-training, validation and testing."""

    train: ClipSet
    val: ClipSet
    test: ClipSet
    source: str  # "split files: ..." or "class folders, ratios ..., seed ..."

    def __getitem__(self, name: str) -> ClipSet:
        if name not in SPLITS:
            raise KeyError(f"no split {name!r} (splits: {', '.join(SPLITS)})")
        return getattr(self, name)


NO_CLASSES = ("no class folders with video files or frame folders (expected root/<class>/<clip>.mp4 or "
              "root/<class>/<clip>/<frame number>.jpg)")


def is_leaf_folder(path: str | Path) -> bool:
    """A folder that holds no sub-folder and no video: a clip's frames (or an empty clip, which loading
    and ``data check`` report). A folder of videos or of folders is a dataset level, never a clip."""
    try:
        for e in archive.scandir(path):
            if not e.name.startswith(".") and (e.is_dir or (e.is_file and is_video(e.path))):
                return False
    except OSError:
        return False
    return True


def class_clips(folder: str | Path) -> tuple[Path, ...]:
    """The clips of one class folder, sorted: its video files and its frame folders (leaf sub-folders)."""
    return tuple(sorted(e.path for e in archive.scandir(folder) if not e.name.startswith(".") and (
        (e.is_file and is_video(e.path)) or (e.is_dir and is_leaf_folder(e.path)))))


def dataset_root(root: str | Path) -> Path:
    """``root`` as a Path, or a `DatasetError` if it is neither a folder nor a zip archive (or a folder in
    one: frame datasets are read from a zip in place, as TRX reads them)."""
    root = Path(root)
    if not archive.is_dir(root):  # a damaged archive raises its own DatasetError
        raise DatasetError("dataset folder not found", root)
    return root


def scan_class_folders(root: str | Path) -> dict[str, tuple[Path, ...]]:
    """Every sub-folder of ``root`` that holds clips (video files or frame folders) is a class."""
    root = dataset_root(root)
    out: dict[str, tuple[Path, ...]] = {}
    for entry in sorted(archive.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir:
            continue
        clips = class_clips(entry.path)
        if clips:
            out[entry.name] = clips
    return out


class _ClassIndex:
    """File names of each class folder, listed once, so resolving 100k split entries stays fast.

    An entry must name a clip inside the root: absolute entries, '..' and symbolic links that lead
    out of the root are refused (a split file is data, and must not make us read elsewhere)."""

    def __init__(self, root: Path):
        self.root = root
        self._dirs: dict[str, dict[str, list[archive.Entry]] | None] = {}
        self._real: dict[str, str] = {}
        self._in_archive = archive.locate(root) is not None
        self._root_real = os.path.realpath(root)

    def _outside(self, cls: str, clip: Path) -> str | None:
        """Where `clip` (found in folder `cls`) really is, when that is outside the root; else None."""
        if self._in_archive:  # archive members are refused at the archive when they leave it
            return None
        if cls not in self._real:
            self._real[cls] = os.path.realpath(self.root / cls)
        real = os.path.realpath(clip) if os.path.islink(clip) else os.path.join(self._real[cls], clip.name)
        inside = real == self._root_real or real.startswith(self._root_real.rstrip(os.sep) + os.sep)
        return None if inside else real

    def _listing(self, cls: str) -> dict[str, list[archive.Entry]] | None:
        """Name (and stem, for videos) -> entries of the class folder; None if there is no such folder."""
        if cls not in self._dirs:
            try:
                entries = archive.scandir(self.root / cls)
            except OSError:
                self._dirs[cls] = None
                return None
            names: dict[str, list[archive.Entry]] = {}
            for e in entries:
                names.setdefault(e.name, []).append(e)
                if is_video(e.path):
                    names.setdefault(e.path.stem, []).append(e)
            self._dirs[cls] = names
        return self._dirs[cls]

    def resolve(self, entry: str) -> Path | str:
        """The clip for ``class/clip[.ext]`` (a video file, or a folder of frames: an exact name first),
        or the reason there is none."""
        cls, _, clip = entry.rpartition("/")
        if not cls or not clip:
            return "expected 'class/clip'"
        if entry.startswith("/") or ".." in entry.split("/"):
            return "refused: it leaves the dataset root (an absolute path or '..')"
        listing = self._listing(cls)
        if listing is None:
            return f"no class folder {self.root / cls}"
        found = self._pick(listing.get(clip, []), clip)
        if found is None:
            return f"no clip {clip}[.ext] in {self.root / cls}"
        real = self._outside(cls, found)
        if real is not None:
            return f"refused: it resolves outside the dataset root, to {real} (a symbolic link)"
        return found

    @staticmethod
    def _pick(hits: list[archive.Entry], clip: str) -> Path | None:
        """An exact name first, else the video whose extension comes first in VIDEO_EXTENSIONS."""
        exact = [e.path for e in hits if e.name == clip and (e.is_file or e.is_dir)]
        if exact:
            return exact[0]
        files = [e.path for e in hits if e.is_file]
        if files:
            return sorted(files, key=lambda p: VIDEO_EXTENSIONS.index(p.suffix.lower()))[0]
        return None


def read_split_file(path: str | Path, root: str | Path, name: str | None = None,
                    on_missing: Literal["error", "skip"] = "error") -> ClipSet:
    """Read one split file (``class/clip`` per line) against the clips under ``root``.

    A line may end in a label number (UCF101 ``trainlist01.txt``); blank lines and ``#`` comments are
    ignored. Entries whose clip does not exist raise a `DatasetError` listing them, or with
    ``on_missing="skip"`` are left out and recorded in ``ClipSet.missing``.
    """
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise DatasetError("split file not found", path)
    root = dataset_root(root)
    lines = _split_lines(path)
    index = _ClassIndex(root)
    clips: dict[str, list[Path]] = {}
    seen: set[Path] = set()
    problems: list[str] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip().replace("\\", "/")
        if not line or line.startswith("#"):
            continue
        found = index.resolve(line)
        if not isinstance(found, Path):
            m = _LABEL.match(line)
            if m:
                alt = index.resolve(m.group("entry"))
                if isinstance(alt, Path):
                    found, line = alt, m.group("entry")
                elif "/" in m.group("entry"):
                    found = alt
        if isinstance(found, Path):
            if found not in seen:
                seen.add(found)
                clips.setdefault(line.rpartition("/")[0], []).append(found)
        else:
            problems.append(f"line {lineno}: {line}: {found}")
    if problems and on_missing == "error":
        shown = problems[:_MAX_LISTED]
        if len(problems) > _MAX_LISTED:
            shown.append(f"... and {len(problems) - _MAX_LISTED} more")
        raise DatasetError(f"{len(problems)} entries name clips that are not under {root}", path, shown)
    if not clips:
        raise DatasetError(f"no clips listed (or none found under {root})", path)
    return ClipSet(name=name or path.stem, root=root,
                   clips={c: tuple(sorted(v)) for c, v in sorted(clips.items())}, missing=tuple(problems))


def _split_lines(path: Path) -> list[str]:
    """The lines of a split file, its size and line count bounded before any line is made."""
    try:
        data = read_bytes(path, "split file", SPLIT_MAX_BYTES)
    except SSTEdgeError as e:
        raise DatasetError(e.message, path) from None
    n = data.count(b"\n")
    if n > SPLIT_MAX_LINES:
        raise DatasetError(f"split file: {n:,} lines, more than the {SPLIT_MAX_LINES:,} a split can have",
                           path)
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DatasetError(f"not a text split file ({e})", path) from None


def find_split_files(folder: str | Path) -> dict[str, Path] | None:
    """``train*.txt``, ``val*.txt``, ``test*.txt`` in ``folder`` (ARN ``train.txt``, TRX ``trainlist03.txt``).

    None if the folder has none of them; a `DatasetError` if one is missing or ambiguous.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = {s: sorted(p for p in folder.glob(f"{s}*.txt") if p.is_file()) for s in SPLITS}
    if not any(found.values()):
        return None
    problems = []
    for s, paths in found.items():
        if not paths:
            problems.append(f"no {s}*.txt")
        elif len(paths) > 1:
            problems.append(f"several {s} files ({', '.join(p.name for p in paths)}): pass them explicitly")
    if problems:
        raise DatasetError("split files incomplete or ambiguous", folder, problems)
    return {s: paths[0] for s, paths in found.items()}


def split_classes(classes: Sequence[str], ratios: Sequence[float] = (0.6, 0.2, 0.2),
                  seed: int = 0) -> dict[str, list[str]]:
    """Shuffle the (sorted) class names with ``seed`` and cut them by ``ratios`` into train/val/test."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise DatasetError(f"split ratios must be 3 non-negative numbers that sum to 1, got {tuple(ratios)}")
    names = sorted(set(classes))
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n_val = int(round(ratios[1] * len(names)))
    n_test = int(round(ratios[2] * len(names)))
    n_train = len(names) - n_val - n_test
    if n_train < 0:
        n_test += n_train
        n_train = 0
    return {"train": sorted(order[:n_train]), "val": sorted(order[n_train:n_train + n_val]),
            "test": sorted(order[n_train + n_val:])}


def load_splits(root: str | Path, splits: str | Path | Mapping[str, str | Path] | None = None,
                ratios: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0,
                on_missing: Literal["error", "skip"] = "error") -> FewShotSplits:
    """The meta-train/val/test splits of the dataset at ``root``.

    ``splits``: a folder holding train/val/test split files, or a mapping {"train": file, ...}. When
    None, ``root/splits`` is used if it holds split files; otherwise the class folders are split by
    ``ratios`` with ``seed``. Raises `DatasetError` if a class appears in two splits.
    """
    root = dataset_root(root)
    files: dict[str, Path] | None
    if isinstance(splits, Mapping):
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            raise DatasetError(f"split files missing for: {', '.join(missing)}")
        files = {s: Path(splits[s]) for s in SPLITS}
    elif splits is not None:
        files = find_split_files(splits)
        if files is None:
            raise DatasetError("no train/val/test split files (train*.txt, val*.txt, test*.txt) here", splits)
    else:
        files = find_split_files(root / "splits")
    if files is not None:
        sets = {s: read_split_file(files[s], root, name=s, on_missing=on_missing) for s in SPLITS}
        source = "split files: " + ", ".join(str(files[s]) for s in SPLITS)
    else:
        folders = scan_class_folders(root)
        if not folders:
            raise DatasetError(NO_CLASSES, root)
        parts = split_classes(list(folders), ratios, seed)
        sets = {s: ClipSet(name=s, root=root, clips={c: folders[c] for c in parts[s]}) for s in SPLITS}
        source = f"class folders, ratios {tuple(ratios)}, seed {seed}"
    overlap = []
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            both = sorted(set(sets[a].clips) & set(sets[b].clips))
            if both:
                overlap.append(f"{a} and {b} share {len(both)} classes: {', '.join(both[:5])}")
    if overlap:
        raise DatasetError("few-shot splits must have disjoint classes", root, overlap)
    return FewShotSplits(train=sets["train"], val=sets["val"], test=sets["test"], source=source)
