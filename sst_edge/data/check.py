"""Scan a dataset: clips per class, every unreadable clip (or frame image) with the reason, split entries
that are missing; for frame folders also empty images, and gaps in the frame numbering as warnings (the
clip still loads: frames are taken by position, but a gap usually means frames lost in extraction)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from tqdm import tqdm

from ..device import archive
from ..device.datasets import NO_CLASSES, SPLITS, find_split_files, read_split_file, scan_class_folders
from ..device.decoders import VideoDecoder, make_decoder
from ..device.frames import FrameFolderInfo, decode_all_frames
from ..device.preprocess import sample_indices
from ..device.probe import decode_all
from ..errors import DatasetError, VideoError
from ..fileio import os_reason
from ..tables import cell, rich_lines


@dataclass
class CheckReport:
    root: Path
    decoder: str
    clips: dict[str, int]                                     # class -> number of clips
    unreadable: dict[str, list[tuple[Path, str]]]             # class -> [(clip, reason)]
    split_problems: list[str] = field(default_factory=list)   # missing entries, bad split files
    warnings: list[tuple[Path, str]] = field(default_factory=list)  # gaps in frame numbers, empty folders

    @property
    def n_clips(self) -> int:
        return sum(self.clips.values())

    @property
    def n_unreadable(self) -> int:
        return sum(len(v) for v in self.unreadable.values())

    @property
    def ok(self) -> bool:
        return not self.n_unreadable and not self.split_problems

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "decoder": self.decoder, "ok": self.ok, "clips": self.clips,
                "unreadable": {c: [{"clip": str(p), "reason": r} for p, r in v]
                               for c, v in self.unreadable.items()},
                "split_problems": self.split_problems,
                "warnings": [{"path": str(p), "problem": w} for p, w in self.warnings]}

    def lines(self) -> list[str]:
        """A table per class, then every unreadable clip, split problem and warning, then the verdict."""
        table = Table(title=cell(f"{self.root} ({self.decoder})"))
        table.add_column("class")
        table.add_column("clips", justify="right")
        table.add_column("unreadable", justify="right")
        for cls, n in self.clips.items():
            table.add_row(cell(cls), str(n), str(len(self.unreadable.get(cls, []))))
        table.add_section()
        table.add_row(f"{len(self.clips)} classes", str(self.n_clips), str(self.n_unreadable))
        out = rich_lines(table)
        out += [
            f"unreadable {path}: {reason}" for items in self.unreadable.values() for path, reason in items
        ]
        out += [f"split {problem}" for problem in self.split_problems]
        out += [f"warning {path}: {problem}" for path, problem in self.warnings]
        verdict = "all clips readable" if self.ok else "problems found"
        out.append(
            f"{verdict}: {self.n_clips - self.n_unreadable} of {self.n_clips} clips readable, "
            f"{len(self.split_problems)} split problems, {len(self.warnings)} warnings"
        )
        return out


def check_dataset(root: str | Path, decoder: str = "auto", frames: int = 8, full: bool = False,
                  progress: bool = True, split: str | Path | None = None) -> CheckReport:
    """Probe every clip and decode ``frames`` segment-centre frames with ``decoder`` (as evaluation would);
    ``full`` also decodes every frame with PyAV (slow). The split files in ``split`` (default
    ``root/splits``, as train and eval read them) are checked too."""
    root = Path(root)
    classes = scan_class_folders(root)
    if not classes:
        raise DatasetError(NO_CLASSES, root)
    dec = make_decoder(decoder)
    report = CheckReport(root=root, decoder=dec.name, clips={c: len(v) for c, v in classes.items()},
                         unreadable={})
    report.warnings += [(p, "empty folder: no videos or frame folders (not a class)") for p in _empty(root)]
    jobs = {p: c for c, paths in classes.items() for p in paths}
    splits = Path(split) if split is not None else root / "splits"
    # a split may name clips no class folder lists
    for c, p in _split_clips(root, splits, report.split_problems, required=split is not None):
        if p not in jobs:
            jobs[p] = c
            report.clips[c] = report.clips.get(c, 0) + 1
    for path, cls in tqdm(list(jobs.items()), desc="checking clips", unit="clip", disable=not progress):
        try:
            _check_clip(dec, path, frames, full, report.warnings)
        except VideoError as e:
            where = e.path or path
            report.unreadable.setdefault(cls, []).append((where, e.message))
    return report


def _split_clips(root: Path, splits: Path, problems: list[str],
                 required: bool = False) -> list[tuple[str, Path]]:
    """(class, clip) of every entry of the split files in ``splits``; what is wrong with them goes to
    ``problems`` (missing clips, entries that leave the root, files that cannot be read). A folder the
    user named (``required``) without any split file is an error, not a dataset without splits."""
    try:
        files = find_split_files(splits)
    except DatasetError as e:
        problems.append(str(e))
        return []
    if files is None and required:
        raise DatasetError("no split files here (train*.txt, val*.txt, test*.txt)", splits)
    out: list[tuple[str, Path]] = []
    for split in SPLITS if files else ():
        try:
            s = read_split_file(files[split], root, name=split, on_missing="skip")
        except DatasetError as e:
            problems.append(str(e))
            continue
        problems += [f"{files[split]}: {m}" for m in s.missing]
        out += [(c, p) for p, c in s.items()]
    return out


def _check_clip(dec: VideoDecoder, path: Path, frames: int, full: bool,
                warnings: list[tuple[Path, str]]) -> None:
    """Read ``path`` as evaluation would (VideoError if it cannot be); warnings about it go to ``warnings``
    first (a gap is worth knowing about even in a clip that then fails)."""
    info = dec.info(path)
    if isinstance(info, FrameFolderInfo):
        warnings += _gaps(info)
        for i in range(info.num_frames):  # cheap, and a common failure of an interrupted extraction
            try:
                empty = archive.file_size(info.file(i)) == 0
            except OSError as e:
                raise VideoError(f"unreadable image: {os_reason(e)}", info.file(i)) from None
            if empty:
                raise VideoError("unreadable image: empty file (0 bytes)", info.file(i))
    dec.read(path, sample_indices(info.num_frames, frames, train=False), None)
    if full:
        if isinstance(info, FrameFolderInfo):
            decode_all_frames(info)
        else:
            decode_all(path)


def _gaps(info: FrameFolderInfo) -> list[tuple[Path, str]]:
    """A warning for missing frame numbers (frames lost in extraction, usually); none when there are none."""
    gaps = info.gaps()
    if not gaps:
        return []
    runs = [f"{a}" if a == b else f"{a}-{b}" for a, b in gaps]
    shown = ", ".join(runs[:5]) + (f", ... ({len(runs)} gaps)" if len(runs) > 5 else "")
    missing = sum(b - a + 1 for a, b in gaps)
    first, last = info.numbers[0], info.numbers[-1]
    return [(info.path, f"gap in the frame numbers: {missing} missing ({shown}) between {first} and {last}; "
                        f"the clip is read from the {info.num_frames} frames present")]


def _empty(root: Path) -> list[Path]:
    """Class-level folders of ``root`` that hold nothing at all (empty clip folders are unreadable clips)."""
    out = []
    for cls in sorted(archive.scandir(root), key=lambda e: e.name):
        if cls.is_dir and not cls.name.startswith(".") and cls.name != "splits" and \
                not [e for e in archive.scandir(cls.path) if not e.name.startswith(".")]:
            out.append(cls.path)
    return out
