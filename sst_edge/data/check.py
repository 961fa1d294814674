"""Scan a dataset: clips per class, every unreadable clip with the reason, split entries that are missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..device.datasets import SPLITS, find_split_files, read_split_file, scan_class_folders
from ..device.decoders import make_decoder
from ..device.preprocess import sample_indices
from ..device.probe import decode_all
from ..errors import DatasetError, VideoError


@dataclass
class CheckReport:
    root: Path
    decoder: str
    clips: dict[str, int]                                     # class -> number of clips
    unreadable: dict[str, list[tuple[Path, str]]]             # class -> [(clip, reason)]
    split_problems: list[str] = field(default_factory=list)   # missing entries, bad split files

    @property
    def n_clips(self) -> int:
        return sum(self.clips.values())

    @property
    def n_unreadable(self) -> int:
        return sum(len(v) for v in self.unreadable.values())

    @property
    def ok(self) -> bool:
        return not self.n_unreadable and not self.split_problems


def check_dataset(root: str | Path, decoder: str = "auto", frames: int = 8, full: bool = False,
                  progress: bool = True) -> CheckReport:
    """Probe every clip and decode ``frames`` segment-centre frames with ``decoder`` (as evaluation would);
    ``full`` also decodes every frame with PyAV (slow). Split files in ``root/splits`` are checked too."""
    root = Path(root)
    classes = scan_class_folders(root)
    if not classes:
        raise DatasetError("no class folders with video files (expected root/<class>/<clip>.mp4)", root)
    dec = make_decoder(decoder)
    report = CheckReport(root=root, decoder=dec.name, clips={c: len(v) for c, v in classes.items()},
                         unreadable={})
    jobs = [(c, p) for c, paths in classes.items() for p in paths]
    for cls, path in tqdm(jobs, desc="checking clips", unit="clip", disable=not progress):
        try:
            info = dec.info(path)
            dec.read(path, sample_indices(info.num_frames, frames, train=False), None)
            if full:
                decode_all(path)
        except VideoError as e:
            reason = str(e).removeprefix(f"{path}: ")
            report.unreadable.setdefault(cls, []).append((path, reason))
    try:
        files = find_split_files(root / "splits")
    except DatasetError as e:
        report.split_problems.append(str(e))
        files = None
    for split in SPLITS if files else ():
        try:
            s = read_split_file(files[split], root, name=split, on_missing="skip")
            report.split_problems += [f"{files[split]}: {m}" for m in s.missing]
        except DatasetError as e:
            report.split_problems.append(str(e))
    return report


def print_report(report: CheckReport) -> None:
    """A table per class, then every unreadable clip and split problem."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=escape(f"{report.root} ({report.decoder})"))
    table.add_column("class")
    table.add_column("clips", justify="right")
    table.add_column("unreadable", justify="right")
    for cls, n in report.clips.items():
        bad = len(report.unreadable.get(cls, []))
        table.add_row(escape(cls), str(n), f"[red]{bad}[/red]" if bad else "0")
    table.add_section()
    table.add_row(f"{len(report.clips)} classes", str(report.n_clips), str(report.n_unreadable))
    console.print(table)
    for items in report.unreadable.values():
        for path, reason in items:
            line = escape(f"{path}: {reason}")
            console.print(f"[red]unreadable[/red] {line}", highlight=False, soft_wrap=True)
    for problem in report.split_problems:
        console.print(f"[red]split[/red] {escape(problem)}", highlight=False, soft_wrap=True)
    verdict = "[green]all clips readable[/green]" if report.ok else "[red]problems found[/red]"
    console.print(f"{verdict}: {report.n_clips - report.n_unreadable} of {report.n_clips} clips readable, "
                  f"{len(report.split_problems)} split problems", highlight=False)
