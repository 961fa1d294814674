"""A procedural temporal-action dataset, written as real H.264 mp4 files: seeded, small, offline.

Each class is a motion of a shape of a colour: moving, rotating, growing, fading, orbiting, splitting,
oscillating, blinking, bouncing... Some pairs of classes are the same clips played backwards (move right /
move left, grow / shrink, fall / rise): their frames are identical as sets, so only the order of frames
separates them, and a model must use time. Clip j of a reversed class is clip j of its partner reversed.
Between two frames sampled at segment centres (4 to 8 of 16) a turning pair turns well under half the turn
after which it looks the same, so clockwise and counter-clockwise differ: rotate_cw turns an arrow (no
rotational symmetry; a triangle repeats every 120 degrees) by at most 48 degrees.

Every clip varies (start position, extent and speed of the motion, object size, colour shade, background
level, texture and noise), so clips of one class differ. Split files in the ARN/OTAM format put both
members of a reversed pair in the same split, with reversed pairs in the test split, and ``classes.json``
describes every class (motion, shape, colour, reversed_of, split) for later evaluation.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import SSTEdgeError
from ..fileio import atomic_write_json, atomic_write_text, read_json
from .encode import write_video

FORMAT = "sst-edge synthetic v1"
META_FILE = "classes.json"
SPLIT_DIR = "splits"
MIN_CLASSES = 4
FPS = 12

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45), "green": (45, 200, 70), "blue": (55, 90, 235), "yellow": (235, 215, 45),
    "magenta": (215, 55, 205), "cyan": (55, 215, 225), "orange": (245, 140, 35), "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "bar", "arrow")

# (motion, its reverse or None, shape, colour). Pairs and singles alternate so any prefix is a mix.
CATALOGUE: tuple[tuple[str, str | None, str, str], ...] = (
    ("move_right", "move_left", "circle", "red"),
    ("oscillate_h", None, "square", "green"),
    ("rotate_cw", "rotate_ccw", "arrow", "blue"),  # no rotational symmetry: the turn direction shows
    ("blink", None, "diamond", "yellow"),
    ("grow", "shrink", "square", "magenta"),
    ("bounce", None, "circle", "cyan"),
    ("fade_in", "fade_out", "ring", "orange"),
    ("zigzag", None, "triangle", "white"),
    ("fall", "rise", "circle", "green"),
    ("pulse", None, "diamond", "red"),
    ("orbit_cw", "orbit_ccw", "square", "yellow"),
    ("spin", None, "bar", "magenta"),
    ("split", "merge", "circle", "blue"),
    ("oscillate_v", None, "cross", "orange"),
    ("warm_to_cool", "cool_to_warm", "diamond", "red"),
    ("move_up", None, "triangle", "cyan"),
    ("diagonal", None, "square", "white"),
    ("still", None, "ring", "blue"),
    ("shake", None, "cross", "yellow"),
)
_COOL = (55, 90, 235)
_A = 0.28  # motion amplitude, in units of the frame height


@dataclass(frozen=True)
class SynthClass:
    """One class: ``motion`` rendered with ``shape``/``colour``; ``reversed_of`` names the partner whose
    clips this class plays backwards (None for a base class)."""

    name: str
    motion: str            # the motion the frames are rendered with (the base motion for a reversed class)
    shape: str
    colour: str
    unit: int              # classes of one unit share their clips' random draws
    reversed_of: str | None = None
    appears_as: str = ""   # the motion as seen (e.g. "move_left" for reversed "move_right")


def synth_classes(n: int) -> list[SynthClass]:
    """The first ``n`` classes of the catalogue; past its end, more rounds with shifted colours."""
    if n < MIN_CLASSES:
        raise SSTEdgeError(f"the synthetic dataset needs at least {MIN_CLASSES} classes (3 disjoint splits), "
                           f"got {n}")
    names = list(COLOURS)
    out: list[SynthClass] = []
    unit = 0
    while len(out) < n:
        cycle, k = divmod(unit, len(CATALOGUE))
        motion, reverse, shape, colour = CATALOGUE[k]
        if cycle:
            colour = names[(names.index(colour) + 3 * cycle) % len(names)]
        taken = {c.name for c in out}
        base = SynthClass(_class_name(motion, colour, shape, cycle, taken), motion, shape, colour, unit, None,
                          motion)
        out.append(base)
        if reverse is not None and len(out) < n:
            name = _class_name(reverse, colour, shape, cycle, taken)
            out.append(SynthClass(name, motion, shape, colour, unit, base.name, reverse))
        unit += 1
    return out


def _class_name(motion: str, colour: str, shape: str, cycle: int, taken: set[str]) -> str:
    name = f"{motion}_{colour}_{shape}"
    return name if name not in taken else f"{name}_{cycle}"


# ----------------------------------------------------------------------------------------- rendering
def frame_size(size: int) -> tuple[int, int]:
    """(height, width) of the synthetic frames: ``size`` high, 4:3, both even (H.264 yuv420p)."""
    if size < 16 or size % 2:
        raise SSTEdgeError(f"--size must be an even number >= 16, got {size}")
    return size, int(round(size * 4 / 3 / 2)) * 2


def _objects(motion: str, u: float, j: dict) -> list[dict]:
    """Objects of one frame at motion phase ``u`` in [0, 1]: position in frame heights from the centre."""
    x, y, angle, scale, alpha, mix = j["x0"], j["y0"], j["angle0"], 1.0, 1.0, 0.0
    f, ph = j["freq"], j["phase"]
    if motion == "move_right":
        x += -_A + 2 * _A * u
    elif motion == "move_up":
        y += _A - 2 * _A * u
    elif motion == "diagonal":
        x += -_A + 2 * _A * u
        y += -_A + 2 * _A * u
    elif motion == "fall":
        y += -_A + 2 * _A * u * u
    elif motion == "zigzag":
        x += -_A + 2 * _A * u
        y += 0.12 * np.sin(2 * np.pi * 3 * f * u + ph)
    elif motion == "rotate_cw":  # half a turn per clip: <= 48 degrees between 4 segment-centre frames
        angle += np.pi * u
    elif motion == "spin":
        angle += 4 * np.pi * f * u
    elif motion == "grow":
        scale = 0.45 + 1.1 * u
    elif motion == "pulse":
        scale = 1.0 + 0.45 * np.sin(2 * np.pi * 2 * f * u + ph)
    elif motion == "fade_in":
        alpha = u
    elif motion == "blink":
        alpha = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * f * u + ph)
    elif motion == "orbit_cw":  # <= 72 degrees round the orbit between 4 segment-centre frames
        theta = j["angle0"] + 1.5 * np.pi * u
        x += 0.22 * np.cos(theta)
        y += 0.22 * np.sin(theta)
    elif motion == "oscillate_h":
        x += _A * np.sin(2 * np.pi * 2 * f * u + ph)
    elif motion == "oscillate_v":
        y += _A * np.sin(2 * np.pi * 2 * f * u + ph)
    elif motion == "bounce":
        y += _A - 2 * _A * abs(np.sin(np.pi * 2 * f * u + ph))
    elif motion == "warm_to_cool":
        mix = u
    elif motion == "shake":
        x += j["shake"][j["t"]][0]
        y += j["shake"][j["t"]][1]
    elif motion == "split":
        d = 0.05 + _A * u
        return [dict(x=x - d, y=y, angle=angle, scale=0.8, alpha=1.0, mix=0.0),
                dict(x=x + d, y=y, angle=angle, scale=0.8, alpha=1.0, mix=0.0)]
    elif motion != "still":
        raise ValueError(f"unknown motion {motion!r}")
    return [dict(x=x, y=y, angle=angle, scale=scale, alpha=alpha, mix=mix)]


def _mask(shape: str, lx: np.ndarray, ly: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return lx * lx + ly * ly <= r * r
    if shape == "ring":
        d2 = lx * lx + ly * ly
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        return np.maximum(np.abs(lx), np.abs(ly)) <= 0.8 * r
    if shape == "diamond":
        return np.abs(lx) + np.abs(ly) <= r
    if shape == "cross":
        return ((np.abs(lx) <= 0.3 * r) & (np.abs(ly) <= r)) | ((np.abs(ly) <= 0.3 * r) & (np.abs(lx) <= r))
    if shape == "bar":
        return (np.abs(lx) <= r) & (np.abs(ly) <= 0.3 * r)
    if shape == "arrow":  # pointing along +x before rotation; looks like itself only after a full turn
        head = (lx >= 0.1 * r) & (lx <= r) & (np.abs(ly) <= 0.65 * (r - lx))
        return head | ((lx >= -r) & (lx < 0.1 * r) & (np.abs(ly) <= 0.25 * r))
    if shape == "triangle":  # equilateral, circumradius r, apex up before rotation
        inside = np.ones_like(lx, dtype=bool)
        for deg in (90, 210, 330):
            t = np.deg2rad(deg)
            inside &= lx * np.cos(t) + ly * np.sin(t) <= 0.5 * r
        return inside
    raise ValueError(f"unknown shape {shape!r}")


def render_clip(cls: SynthClass, clip_seed: int | list[int], frames: int, size: int) -> np.ndarray:
    """uint8 ``[frames, H, W, 3]`` of one clip; a reversed class gets its partner's frames, reversed."""
    h, w = frame_size(size)
    rng = np.random.default_rng(clip_seed)
    span = rng.uniform(0.75, 1.0)
    j = {
        "x0": rng.uniform(-0.06, 0.06), "y0": rng.uniform(-0.06, 0.06), "angle0": rng.uniform(0, 2 * np.pi),
        "freq": rng.uniform(0.85, 1.15), "phase": rng.uniform(0, 2 * np.pi),
        "shake": rng.normal(0, 0.03, size=(frames, 2)),
    }
    u0 = rng.uniform(0, 1 - span)
    radius = 0.12 * h * rng.uniform(0.85, 1.15)
    colour = np.clip(np.array(COLOURS[cls.colour]) * rng.uniform(0.85, 1.1, 3), 0, 255)
    cool = np.clip(np.array(_COOL) * rng.uniform(0.85, 1.1, 3), 0, 255)
    base = rng.uniform(25, 105) + rng.uniform(-12, 12, 3)
    coarse = rng.normal(0, 10, size=(4, 5, 3))
    texture = np.kron(coarse, np.ones((h // 4 + 1, w // 5 + 1, 1)))[:h, :w]
    background = base + texture
    sigma = rng.uniform(2, 6)
    noise = rng.normal(0, sigma, size=(frames, h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        u = u0 + span * (t / (frames - 1) if frames > 1 else 0.5)
        j["t"] = t
        img = background.copy()
        for ob in _objects(cls.motion, u, j):
            cx, cy = w / 2 + ob["x"] * h, h / 2 + ob["y"] * h
            ca, sa = np.cos(ob["angle"]), np.sin(ob["angle"])
            dx, dy = xx - cx, yy - cy
            lx, ly = dx * ca + dy * sa, -dx * sa + dy * ca
            m = _mask(cls.shape, lx, ly, radius * ob["scale"])
            c = (1 - ob["mix"]) * colour + ob["mix"] * cool
            img[m] = (1 - ob["alpha"]) * img[m] + ob["alpha"] * c
        out[t] = np.clip(img + noise[t], 0, 255).astype(np.uint8)
    return out[::-1].copy() if cls.reversed_of is not None else out


# ---------------------------------------------------------------------------------------------- splits
def assign_splits(classes: list[SynthClass], seed: int) -> dict[str, list[str]]:
    """Disjoint train/val/test class lists (about 1/2, 1/4, 1/4); a reversed pair never straddles two
    splits, and the test (then val) split gets its share of pairs, at least one when it has room."""
    n = len(classes)
    units: dict[int, list[str]] = {}
    for c in classes:
        units.setdefault(c.unit, []).append(c.name)
    rng = np.random.default_rng([seed, 7])
    pairs = [units[k] for k in sorted(units) if len(units[k]) == 2]
    singles = [units[k] for k in sorted(units) if len(units[k]) == 1]
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    singles = [singles[i] for i in rng.permutation(len(singles))]
    target = {"test": max(1, round(n / 4)), "val": max(1, round(n / 4))}
    target["train"] = n - target["test"] - target["val"]
    quota = {"test": min(target["test"] // 2, len(pairs), max(1, round(len(pairs) * target["test"] / n)))}
    quota["val"] = min(target["val"] // 2, len(pairs) - quota["test"], round(len(pairs) * target["val"] / n))
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for split in ("test", "val"):
        for _ in range(quota[split]):
            out[split] += pairs.pop()
    for split in ("test", "val", "train"):  # every split gets a class, a single if one is left
        if not out[split] and (singles or pairs):
            out[split] += singles.pop() if singles else pairs.pop()
    for unit in pairs + singles:  # the rest to the split furthest below its target (train wins ties)
        split = max(("train", "val", "test"), key=lambda s: target[s] - len(out[s]))
        out[split] += unit
    empty = [s for s in out if not out[s]]
    if empty:
        raise SSTEdgeError(f"cannot split {n} synthetic classes into 3 non-empty splits (empty: {empty})")
    return {s: sorted(v) for s, v in out.items()}


# ------------------------------------------------------------------------------------------ generation
def _prepare(out: Path, overwrite: bool) -> None:
    """Refuse to write into a folder that holds anything but an earlier synthetic dataset."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SSTEdgeError("exists and is not a folder", out)
    if not any(out.iterdir()):
        return
    meta = out / META_FILE
    if not overwrite:
        raise SSTEdgeError("folder is not empty (pass --overwrite to replace an earlier synthetic dataset)",
                           out)
    try:
        old = json.loads(meta.read_text(encoding="utf-8"))
        assert old.get("format") == FORMAT
        names = [c["name"] for c in old["classes"]]
    except (OSError, ValueError, AssertionError, KeyError, TypeError):
        raise SSTEdgeError(f"folder is not empty and holds no {META_FILE} of a synthetic dataset: "
                           "refusing to overwrite it", out) from None
    for name in names:
        if name and "/" not in name and name not in (".", ".."):
            shutil.rmtree(out / name, ignore_errors=True)
    shutil.rmtree(out / SPLIT_DIR, ignore_errors=True)
    meta.unlink(missing_ok=True)


@dataclass
class SynthReport:
    """What `sst-edge data synth` wrote."""

    out: Path
    classes: int
    clips: int
    splits: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "classes": self.classes, "clips_per_class": self.clips,
                "splits": self.splits, "split_files": str(self.out / SPLIT_DIR),
                "meta": str(self.out / META_FILE)}

    def lines(self) -> list[str]:
        return [
            f"wrote {self.classes} classes x {self.clips} clips to {self.out} (splits in "
            f"{self.out / SPLIT_DIR}, classes in {self.out / META_FILE})"
        ]


def synth_report(out: str | Path) -> SynthReport:
    """The report of a synthetic dataset already written (from its classes.json)."""
    meta = read_json(Path(out) / META_FILE, "synthetic dataset metadata")
    return SynthReport(Path(out), len(meta["classes"]), meta["clips_per_class"], meta["splits"])


def generate_synthetic(out: str | Path, classes: int = 24, clips: int = 10, frames: int = 16, size: int = 64,
                       seed: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """Write the synthetic dataset to ``out``; the same arguments always give the same files.

    Layout: ``out/<class>/<class>_<j>.mp4``, ``out/splits/{train,val,test}.txt`` (``class/clip`` lines,
    no extension, as in the ARN/TRX split files) and ``out/classes.json``. Returns ``out``.
    """
    if clips < 1 or frames < 2:
        raise SSTEdgeError(f"need >= 1 clip per class and >= 2 frames per clip, got {clips} and {frames}")
    if seed < 0:
        raise SSTEdgeError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    h, w = frame_size(size)
    specs = synth_classes(classes)
    splits = assign_splits(specs, seed)
    _prepare(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    split_of = {c: s for s, names in splits.items() for c in names}
    entries: dict[str, list[str]] = {s: [] for s in splits}
    jobs = [(c, k) for c in specs for k in range(clips)]
    for cls, k in tqdm(jobs, desc="synthetic clips", unit="clip", disable=not progress):
        stem = f"{cls.name}_{k:03d}"
        frames_k = render_clip(cls, [seed, cls.unit, k], frames, size)
        write_video(out / cls.name / f"{stem}.mp4", frames_k, fps=FPS)
        entries[split_of[cls.name]].append(f"{cls.name}/{stem}")
    for split, lines in entries.items():
        atomic_write_text(out / SPLIT_DIR / f"{split}.txt", "".join(f"{line}\n" for line in lines))
    pairs = [[c.reversed_of, c.name] for c in specs if c.reversed_of is not None]
    meta = {
        "format": FORMAT, "seed": seed, "clips_per_class": clips, "frames": frames, "height": h, "width": w,
        "fps": FPS, "codec": "h264",
        "note": "clip j of a class with reversed_of is clip j of that class played backwards",
        "splits": {s: len(v) for s, v in splits.items()},
        "reversed_pairs": pairs,
        "classes": [{**{k: v for k, v in asdict(c).items() if k != "unit"}, "split": split_of[c.name]}
                    for c in specs],
    }
    atomic_write_json(out / META_FILE, meta)
    return out
