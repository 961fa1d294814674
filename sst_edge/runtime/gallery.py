"""A gallery on disk: the enrolled actions of one model, as per-clip frame features.

Layout of a gallery directory::

    gallery.json               the index, and the truth: model, labels -> clip records, calibration
    features/<id>.safetensors  one clip's frame features [T, C] float32 (safetensors, numpy API)
    .lock                      serialises writers (fcntl), so two enrollments cannot lose each other's clips

Crash safety without a journal: a clip's feature file is written atomically (temporary file, fsync,
rename) before the index that names it is atomically replaced, and only the index says what exists. A
kill at any point leaves the previous index (the new clip's file then is a stray, ignored and deleted by
the next write) or the new one (with its file complete). Enrollment commits clip by clip, so a crash
loses at most the clip being embedded; every clip is probed before the first one is committed, so a bad
file stops the enrollment with the gallery unchanged.

Features of two models are never comparable, so the index records the model's sha256 and a gallery
opened with another model is refused. Storing features rather than prototypes keeps both heads (the
alignment head needs every support frame) and lets clips be removed; prototypes are built from them on
the device. Calibration (classify.py) is recomputed after each change and stored with the clips it was
computed on; a stale one (after a crash mid-enrollment) is recomputed in memory when classifying.
Readers take no lock: a clip removed by another process while its features load fails that load with a
clear error (run it again).
"""

from __future__ import annotations

import contextlib
import copy
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..deploy.card import ModelCard
from ..errors import SSTEdgeError
from ..fewshot import HEADS, HeadConfig
from ..fileio import atomic_write_bytes, atomic_write_json, read_json, sha256_bytes, sha256_file, utc_now
from .classify import UNKNOWN, calibrate, calibration_key, group_ids

if TYPE_CHECKING:
    from .engine import FewShotRuntime

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock (one writer at a time is then the user's job)
    fcntl = None  # type: ignore[assignment]

FORMAT = "sst-edge/gallery"
VERSION = 1
INDEX_FILE = "gallery.json"
FEATURES_DIR = "features"
LOCK_FILE = ".lock"
TENSOR = "features"
_LABEL_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")



def check_label(label: Any) -> str:
    """A label is any printable, non-empty text of up to 200 characters except the open-set answer."""
    if not isinstance(label, str) or not label.strip():
        raise SSTEdgeError(f"a label must be non-empty text, got {label!r}")
    if label != label.strip() or _CONTROL.search(label) or len(label) > _LABEL_MAX:
        raise SSTEdgeError(f"label {label!r}: no leading/trailing spaces or control characters, at most "
                           f"{_LABEL_MAX} characters")
    if label.lower() == UNKNOWN:
        raise SSTEdgeError(f"'{label}' is reserved: classification answers it for clips of no enrolled "
                           "action")
    return label


@dataclass(frozen=True)
class ClipRecord:
    """One enrolled clip: its feature file and where it came from."""

    id: str
    source: str  # the video's absolute path at enrollment
    sha256: str  # of the source video: the same video is not enrolled twice into a label
    added: str
    file: str  # feature file, relative to the gallery
    features_sha256: str

    @classmethod
    def from_dict(cls, d: Any) -> ClipRecord:
        return cls(**{k: str(d[k]) for k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class EnrollReport:
    """What an enrollment did: clips added, clips skipped (with why), and the label counts after it."""

    gallery: str
    label: str
    added: list[ClipRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"gallery": self.gallery, "label": self.label, "added": [r.to_dict() for r in self.added],
                "skipped": self.skipped, "notes": self.notes, "counts": self.counts,
                "calibration": self.calibration}

    def lines(self) -> list[str]:
        out = [f"enrolled {len(self.added)} clip{'s' * (len(self.added) != 1)} as '{self.label}' in "
               f"{self.gallery} ({self.counts.get(self.label, 0)} in the label, {len(self.counts)} labels)"]
        out += [f"  skipped {s}" for s in self.skipped] + [f"  note: {n}" for n in self.notes]
        return out


class Gallery:
    """A gallery directory bound to one model. Open with `Gallery.open` (or `open_or_create`)."""

    def __init__(self, path: Path, doc: dict[str, Any], exists: bool):
        self.path = path
        self.doc = doc
        self.exists = exists  # False until the first write creates the directory and the index
        self._cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------------------------ open/create
    @property
    def index_path(self) -> Path:
        return self.path / INDEX_FILE

    @classmethod
    def open(cls, path: str | Path, card: ModelCard | None = None) -> Gallery:
        """An existing gallery; with `card`, refused unless it was made by that model."""
        path = Path(path)
        index = path / INDEX_FILE
        if not index.is_file():
            what = "no such directory" if not path.exists() else f"no {INDEX_FILE} here"
            raise SSTEdgeError(f"not a gallery ({what}): enroll clips to create one", path)
        g = cls(path, _validate(read_json(index, "gallery index"), index), True)
        if card is not None:
            g.check_model(card)
        return g

    @classmethod
    def create(cls, path: str | Path, card: ModelCard) -> Gallery:
        """A new, empty gallery for `card`'s model; nothing is written until the first clip is enrolled."""
        path = Path(path)
        if path.exists() and not _only_ours(path):
            raise SSTEdgeError(f"exists and is not a gallery (no {INDEX_FILE}): refusing to write into it",
                               path)
        doc = {"format": FORMAT, "version": VERSION, "created": utc_now(), "updated": utc_now(),
               "model": {"name": card.name, "sha256": card.sha256}, "space": card.space,
               "space_hash": card.space_hash, "feature_shape": [card.frames, card.feature_dim],
               "head": card.head.to_dict(), "labels": {}, "calibration": {}}
        return cls(path, doc, False)

    @classmethod
    def open_or_create(cls, path: str | Path, card: ModelCard) -> Gallery:
        return cls.open(path, card) if (Path(path) / INDEX_FILE).is_file() else cls.create(path, card)

    def check_model(self, card: ModelCard) -> None:
        """Refuse a gallery whose features were made by another model (another sha256 of model.onnx)."""
        m = self.doc["model"]
        if m["sha256"] != card.sha256:
            raise SSTEdgeError(
                f"this gallery was enrolled with model '{m['name']}' (sha256 {m['sha256'][:12]}), not with "
                f"'{card.name}' (sha256 {card.sha256[:12]}): features of different models cannot be "
                f"compared; use that model, or enroll the clips again into a new gallery", self.index_path)
        if list(self.doc["feature_shape"]) != [card.frames, card.feature_dim]:
            raise SSTEdgeError(f"feature shape {self.doc['feature_shape']} differs from the model's "
                               f"{[card.frames, card.feature_dim]}", self.index_path)

    # ------------------------------------------------------------------------------------------- read
    @property
    def model(self) -> dict[str, str]:
        return dict(self.doc["model"])

    @property
    def head(self) -> HeadConfig:
        return HeadConfig(**self.doc["head"])

    @property
    def feature_shape(self) -> tuple[int, int]:
        t, c = self.doc["feature_shape"]
        return int(t), int(c)

    @property
    def labels(self) -> dict[str, list[ClipRecord]]:
        return {lb: [ClipRecord.from_dict(r) for r in recs] for lb, recs in self.doc["labels"].items()}

    def find_clip(self, clip_id: str) -> tuple[str, ClipRecord]:
        """(label, record) of a clip id (a unique prefix of at least 4 characters is enough)."""
        hits = [(lb, r) for lb, recs in self.labels.items() for r in recs
                if r.id == clip_id or (len(clip_id) >= 4 and r.id.startswith(clip_id))]
        if len(hits) != 1:
            why = "no clip has" if not hits else f"{len(hits)} clips match"
            raise SSTEdgeError(f"{why} the id {clip_id!r} (`sst-edge gallery list` shows the ids)", self.path)
        return hits[0]

    def features(self, rec: ClipRecord) -> np.ndarray:
        """A clip's frame features ``[T, C]``, checked against the sha256 the index recorded."""
        hit = self._cache.get(rec.id)
        if hit is not None:
            return hit
        import safetensors.numpy as stn

        f = self.path / rec.file
        if not f.is_file():
            raise SSTEdgeError(f"the feature file of clip {rec.id} ({rec.source}) is missing: remove the "
                               f"clip (`sst-edge gallery remove --clip {rec.id}`) and enroll it again", f)
        data = f.read_bytes()
        if sha256_bytes(data) != rec.features_sha256:
            raise SSTEdgeError(f"the feature file of clip {rec.id} ({rec.source}) does not match its sha256 "
                               f"in {INDEX_FILE} (corrupted): remove the clip and enroll it again", f)
        try:
            arr = stn.load(data)[TENSOR]
        except Exception as e:  # safetensors raises SafetensorError, KeyError for a foreign file
            raise SSTEdgeError(f"not a readable feature file ({e})", f) from None
        if arr.shape != self.feature_shape or arr.dtype != np.float32:
            raise SSTEdgeError(f"features {arr.dtype}{list(arr.shape)}, expected float32"
                               f"{list(self.feature_shape)}", f)
        self._cache[rec.id] = arr
        return arr

    def supports(self, labels: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """label -> its clips' features ``[K, T, C]`` (K may differ between labels)."""
        recs = self.labels
        names = list(recs) if labels is None else list(labels)
        missing = [lb for lb in names if lb not in recs]
        if missing:
            raise SSTEdgeError(f"no label {', '.join(map(repr, missing))} in this gallery", self.path)
        return {lb: np.stack([self.features(r) for r in recs[lb]]) for lb in names if recs[lb]}

    def calibration(self, head: HeadConfig, labels: Sequence[str],
                    supports: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
        """The stored calibration of `head` over `labels` if it is current, else computed now (not stored)."""
        key = calibration_key(group_ids(self.labels, labels), head)
        stored = self.doc.get("calibration", {}).get(head.kind)
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored
        if supports is None:
            s = self.supports(labels)
            supports = [s[lb] for lb in labels]
        return {**calibrate(supports, head, key), "stored": False}

    def calibration_current(self) -> bool:
        """Whether the stored calibrations were computed on the clips the index lists now."""
        keep = [lb for lb, recs in self.labels.items() if recs]
        stored = self.doc.get("calibration", {})
        return all(isinstance(stored.get(k), dict) and stored[k].get("key") == calibration_key(
            group_ids(self.labels, keep), HeadConfig(k, self.head.tau, self.head.window)) for k in HEADS)

    def summary(self) -> dict[str, Any]:
        return {"gallery": str(self.path), "model": self.model, "space": self.doc["space"],
                "feature_shape": list(self.feature_shape), "head": self.doc["head"],
                "labels": {lb: [r.to_dict() for r in recs] for lb, recs in self.labels.items()},
                "calibration": self.doc.get("calibration", {}), "updated": self.doc.get("updated")}

    # ------------------------------------------------------------------------------------------ write
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Hold the writer lock, re-read the index (another process may have written), yield a copy of it."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK_FILE, "a+") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            if self.index_path.is_file():
                model = self.doc["model"]
                self.doc = _validate(read_json(self.index_path, "gallery index"), self.index_path)
                if self.doc["model"] != model:
                    raise SSTEdgeError("another model's gallery replaced this one while it was open",
                                       self.index_path)
            yield copy.deepcopy(self.doc)

    def _commit(self, doc: dict[str, Any], recalibrate: bool = True) -> None:
        """Replace the index atomically (the commit point), then delete files it does not name."""
        doc["updated"] = utc_now()
        if recalibrate:
            doc["calibration"] = self._calibrate(doc)
        atomic_write_json(self.index_path, doc)
        self.doc, self.exists = doc, True
        self._clean()

    def _calibrate(self, doc: dict[str, Any]) -> dict[str, Any]:
        labels = {lb: [ClipRecord.from_dict(r) for r in recs] for lb, recs in doc["labels"].items()}
        keep = [lb for lb, recs in labels.items() if recs]
        supports = [np.stack([self.features(r) for r in labels[lb]]) for lb in keep]
        out = {}
        for kind in HEADS:
            head = HeadConfig(kind, self.head.tau, self.head.window)
            out[kind] = calibrate(supports, head, calibration_key(group_ids(labels, keep), head))
        return out

    def _clean(self) -> int:
        """Delete feature files the index does not name (a crash's strays) and leftover temporary files."""
        named = {Path(r["file"]).name for recs in self.doc["labels"].values() for r in recs}
        removed = 0
        folder = self.path / FEATURES_DIR
        strays = [p for p in folder.iterdir() if p.name not in named] if folder.is_dir() else []
        strays += list(self.path.glob(f".{INDEX_FILE}.*.tmp"))
        for p in strays:
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
        self._cache = {k: v for k, v in self._cache.items() if f"{k}.safetensors" in named}
        return removed

    def add(self, label: str, features: np.ndarray, source: str | Path, source_sha256: str,
            recalibrate: bool = True) -> ClipRecord | None:
        """Commit one clip's features to `label`; None (nothing written) if that video is already in it."""
        import safetensors.numpy as stn

        label = check_label(label)
        feats = np.ascontiguousarray(features, np.float32)
        if feats.shape != self.feature_shape:
            raise SSTEdgeError(f"features {list(feats.shape)} do not fit this gallery's "
                               f"{list(self.feature_shape)}", self.path)
        with self._locked() as doc:
            if any(r["sha256"] == source_sha256 for r in doc["labels"].get(label, [])):
                return None
            clip_id = uuid.uuid4().hex[:12]
            rel = f"{FEATURES_DIR}/{clip_id}.safetensors"
            meta = {"clip": clip_id, "model_sha256": doc["model"]["sha256"], "source_sha256": source_sha256}
            blob = stn.save({TENSOR: feats}, metadata=meta)
            atomic_write_bytes(self.path / rel, blob)
            rec = ClipRecord(clip_id, str(source), source_sha256, utc_now(), rel, sha256_bytes(blob))
            doc["labels"].setdefault(label, []).append(rec.to_dict())
            self._cache[clip_id] = feats
            self._commit(doc, recalibrate)
        return rec

    def recalibrate(self) -> dict[str, Any]:
        with self._locked() as doc:
            self._commit(doc, True)
        return self.doc["calibration"]

    def remove_clip(self, clip_id: str) -> tuple[str, ClipRecord]:
        """Remove one clip (by id or unique prefix); a label left without clips is removed too."""
        with self._locked() as doc:
            label, rec = self.find_clip(clip_id)
            doc["labels"][label] = [r for r in doc["labels"][label] if r["id"] != rec.id]
            if not doc["labels"][label]:
                del doc["labels"][label]
            self._commit(doc)
        return label, rec

    def remove_label(self, label: str) -> list[ClipRecord]:
        with self._locked() as doc:
            if label not in doc["labels"]:
                raise SSTEdgeError(f"no label '{label}' ({_names(doc)})", self.path)
            recs = [ClipRecord.from_dict(r) for r in doc["labels"].pop(label)]
            self._commit(doc)
        return recs

    def rename_label(self, old: str, new: str) -> int:
        """Rename a label (its clips and their order unchanged); refused if `new` exists."""
        new = check_label(new)
        with self._locked() as doc:
            if old not in doc["labels"]:
                raise SSTEdgeError(f"no label '{old}' ({_names(doc)})", self.path)
            if new in doc["labels"]:
                raise SSTEdgeError(f"label '{new}' exists already: remove it first, or enroll the clips of "
                                   f"'{old}' into it", self.path)
            doc["labels"] = {(new if lb == old else lb): recs for lb, recs in doc["labels"].items()}
            self._commit(doc)  # the calibration key ignores names: this reuses nothing stale
        return len(doc["labels"][new])

    # ------------------------------------------------------------------------------------------ enroll
    def enroll(self, runtime: FewShotRuntime, label: str, clips: Sequence[str | Path],
               progress: bool = True) -> EnrollReport:
        """Embed `clips` with `runtime` and add them to `label`, committing clip by clip.

        Every clip is hashed and probed first: an unreadable one stops the enrollment before anything is
        written. A video already in the label (same sha256) is skipped with a note, not duplicated.
        """
        from tqdm import tqdm

        self.check_model(runtime.card)
        label = check_label(label)
        if not clips:
            raise SSTEdgeError("no clips given to enroll")
        report = EnrollReport(str(self.path), label)
        decoder = runtime.decoder()
        todo: list[tuple[Path, str]] = []
        bad: list[SSTEdgeError] = []
        seen: dict[str, Path] = {}
        for c in clips:
            p = Path(c).expanduser().resolve()
            try:
                if not p.is_file():
                    raise SSTEdgeError("video not found" if not p.exists() else "not a file", p)
                decoder.info(p)  # probe: missing, empty, foreign, truncated -> VideoError naming the file
                digest = sha256_file(p)
            except SSTEdgeError as e:
                bad.append(e)
                continue
            if digest in seen:
                report.skipped.append(f"{p}: the same video as {seen[digest]} (given twice)")
                continue
            seen[digest] = p
            todo.append((p, digest))
        if bad:
            if len(bad) == 1:
                e = bad[0]
                raise SSTEdgeError(f"{e.message}; nothing was enrolled", e.path, e.problems)
            raise SSTEdgeError(f"{len(bad)} of {len(clips)} clips cannot be read; nothing was enrolled", None,
                               [str(e) for e in bad])
        bar = tqdm(todo, desc=f"enroll '{label}'", unit="clip", disable=not progress or len(todo) < 2,
                   leave=False)
        for p, digest in bar:
            if any(r.sha256 == digest for r in self.labels.get(label, [])):
                report.skipped.append(f"{p}: already enrolled in '{label}' (same video, sha256 "
                                      f"{digest[:12]})")
                continue
            feats = runtime.embed(runtime.load(p, decoder)[None])[0]
            rec = self.add(label, feats, p, digest, recalibrate=False)
            if rec is None:  # enrolled meanwhile by another process
                report.skipped.append(f"{p}: already enrolled in '{label}'")
                continue
            report.added.append(rec)
            others = [lb for lb, recs in self.labels.items() if lb != label and any(r.sha256 == digest
                                                                                   for r in recs)]
            if others:
                report.notes.append(f"{p} is also enrolled as {', '.join(map(repr, others))}")
        bar.close()
        if report.added or (self.exists and not self.calibration_current()):
            report.calibration = {k: _short(v) for k, v in self.recalibrate().items()}
        report.counts = {lb: len(recs) for lb, recs in self.labels.items()}
        return report


def _only_ours(path: Path) -> bool:
    """An empty directory, or what a first enrollment killed before its first commit leaves behind."""
    if not path.is_dir():
        return False
    for p in path.iterdir():
        if p.name == FEATURES_DIR and p.is_dir():
            if any(not (f.suffix in (".safetensors", ".tmp") and f.is_file()) for f in p.iterdir()):
                return False
        elif p.name != LOCK_FILE and not (p.name.startswith(f".{INDEX_FILE}.") and p.suffix == ".tmp"):
            return False
    return True


def _names(doc: dict[str, Any]) -> str:
    return "labels: " + (", ".join(f"'{lb}'" for lb in doc["labels"]) or "none")


def _short(cal: dict[str, Any]) -> dict[str, Any]:
    return {k: cal[k] for k in ("method", "temperature", "threshold", "loo_accuracy") if k in cal}


def _validate(doc: Any, path: Path) -> dict[str, Any]:
    """The index, checked for shape: a corrupt or foreign file is reported, never half used."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SSTEdgeError(f"not an sst-edge gallery index (expected format '{FORMAT}')", path)
    if doc.get("version") != VERSION:
        raise SSTEdgeError(f"gallery version {doc.get('version')!r} is not supported (this sst-edge reads "
                           f"version {VERSION})", path)
    problems = []
    for key in ("model", "space", "feature_shape", "head", "labels"):
        if key not in doc:
            problems.append(f"missing key '{key}'")
    model = doc.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("sha256"), str) or "name" not in model:
        problems.append("'model' must be {name, sha256}")
    fs = doc.get("feature_shape")
    if not (isinstance(fs, list) and len(fs) == 2 and all(isinstance(v, int) and v > 0 for v in fs)):
        problems.append(f"'feature_shape' must be [T, C], got {fs!r}")
    try:
        HeadConfig(**doc.get("head", {}))
    except (SSTEdgeError, TypeError) as e:
        problems.append(f"'head' is invalid: {e}")
    labels = doc.get("labels")
    ids: set[str] = set()
    if not isinstance(labels, dict):
        problems.append("'labels' must map a label to a list of clip records")
    else:
        for lb, recs in labels.items():
            if not isinstance(recs, list):
                problems.append(f"label '{lb}': expected a list of clip records")
                continue
            for i, r in enumerate(recs):
                try:
                    rec = ClipRecord.from_dict(r)
                except (KeyError, TypeError):
                    need = ", ".join(ClipRecord.__dataclass_fields__)
                    problems.append(f"label '{lb}', clip {i}: needs {need}")
                    continue
                if rec.id in ids:
                    problems.append(f"clip id {rec.id} appears twice")
                ids.add(rec.id)
                if Path(rec.file).is_absolute() or ".." in Path(rec.file).parts:
                    problems.append(f"clip {rec.id}: feature file {rec.file!r} is outside the gallery")
    if not isinstance(doc.setdefault("calibration", {}), dict):
        problems.append("'calibration' must be an object")
    if problems:
        raise SSTEdgeError("the gallery index is corrupt", path, problems)
    return doc
