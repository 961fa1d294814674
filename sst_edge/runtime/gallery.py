"""A gallery on disk: the enrolled actions of one model, as per-clip frame features.

Layout of a gallery directory::

    gallery.json               the index, and the truth: model, labels -> clip records, calibration
    features/<id>.safetensors  one clip's frame features [T, C] float32 (safetensors, numpy API)
    .lock                      serialises writers (fcntl), so two enrollments cannot lose each other's clips

All or nothing, without a journal: an enrollment first checks everything it can (every clip probed,
every feature file already in the gallery read and verified, every new clip embedded and its features
checked finite), then writes the new clips' feature files atomically (temporary file, fsync, rename), then
replaces the index atomically: the commit point, and only the index says what exists. A failure or a kill
before the commit leaves the gallery as it was (the new files are deleted, or, after a kill, are strays
of our own naming that the next write deletes); after it, the enrollment is whole. Files we did not
create are never deleted or overwritten: a gallery folder holding foreign files is refused.

Features of two models are never comparable, so the index records the model's sha256 and a gallery
opened with another model is refused. Storing features rather than prototypes keeps both heads (the
alignment head needs every support frame) and lets clips be removed; prototypes are built from them on
the device. Calibration (calibration.py) is recomputed after each change and stored with the clips it was
computed on; a stale one (after a crash mid-enrollment) is recomputed in memory when classifying.
Readers take no lock: a clip removed by another process while its features load fails that load with a
clear error (run it again).
"""

from __future__ import annotations

import contextlib
import copy
import re
import stat
import struct
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.numpy as stn
from tqdm import tqdm

from ..device.card import ModelCard
from ..device.cca import card_params
from ..device.frames import clip_sha256, is_folder
from ..device.ood import FeatureDistribution
from ..device.settings import HEADS, PARAMETRIC_HEADS, HeadConfig
from ..errors import SSTEdgeError
from ..fileio import (
    TEMP_NAME,
    atomic_write_bytes,
    atomic_write_json,
    os_error,
    read_bytes,
    read_json,
    sha256_bytes,
    stat_file,
    utc_now,
)
from ..schema import HEX64, POS_INT, TEXT, check, check_header, header_schema
from ..text import LABEL_MAX, brief, is_label_text, printable
from .calibration import UNKNOWN, calibrate, calibrate_ood, calibration_key, group_ids, ood_key

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
_CLIP_ID = "[0-9a-f]{12}"
OUR_FEATURE = re.compile(rf"^{_CLIP_ID}\.safetensors$")  # the only names we write (and delete) in features/
OUR_TEMP = TEMP_NAME  # fileio.atomic_write's temporary files
_HEADER_MAX = 1 << 16  # a feature file's safetensors header: one tensor and a little metadata
CLIP_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["id", "source", "sha256", "added", "file", "features_sha256"],
    "properties": {"id": {"type": "string", "pattern": f"^{_CLIP_ID}$"}, "source": TEXT, "sha256": HEX64,
                   "added": {**TEXT, "maxLength": 64},
                   "file": {"type": "string", "pattern": f"^{FEATURES_DIR}/{_CLIP_ID}\\.safetensors$"},
                   "features_sha256": HEX64}}
CALIBRATION_SCHEMA = {  # what is read back and printed; the rest of a record is the calibration's own
    "type": "object", "required": ["method", "temperature", "threshold", "key"],
    "properties": {"method": {**TEXT, "maxLength": 64}, "key": {**TEXT, "maxLength": 64},
                   "temperature": {"type": "number", "exclusiveMinimum": 0},
                   "threshold": {"type": "number"},
                   "loo_accuracy": {"type": "number", "minimum": 0, "maximum": 1},
                   "known_accepted": {"type": "number", "minimum": 0, "maximum": 1},
                   "unknown_rejected": {"type": "number", "minimum": 0, "maximum": 1},
                   "floor": {"type": ["number", "null"]}, "fit": {"type": ["number", "null"]},
                   "score_threshold": {"type": ["number", "null"]}, "version": {"type": "integer"},
                   "queries": {"type": "integer", "minimum": 0}, "labels": {"type": "integer", "minimum": 0},
                   "head": {"type": "object"},
                   "ood": {"type": "object", "required": ["method", "key", "threshold"],  # the check's
                           "properties": {"method": {**TEXT, "maxLength": 64},
                                          "key": {**TEXT, "maxLength": 64},
                                          "threshold": {"type": ["number", "null"]},
                                          "version": {"type": "integer"}, "why": TEXT}}}}
INDEX_SCHEMA = {
    "type": "object", "required": ["format", "version", "model", "space", "feature_shape", "head", "labels"],
    "additionalProperties": False,  # an unknown key is a typo or another program's: never ignored
    "properties": {
        **header_schema(FORMAT, VERSION),
        "model": {"type": "object", "required": ["name", "sha256"], "additionalProperties": False,
                  "properties": {"name": {**TEXT, "maxLength": 200}, "sha256": HEX64}},
        "space": {**TEXT, "maxLength": 200}, "space_hash": {**TEXT, "maxLength": 128},
        "feature_shape": {"type": "array", "items": POS_INT, "minItems": 2, "maxItems": 2},
        "head": {"type": "object"},
        "labels": {"type": "object", "propertyNames": {"format": "label", "maxLength": LABEL_MAX},
                   "additionalProperties": {"type": "array", "minItems": 1, "items": CLIP_SCHEMA}},
        "calibration": {"type": "object", "propertyNames": {"enum": list(HEADS)},
                        "additionalProperties": CALIBRATION_SCHEMA},
        "created": TEXT, "updated": TEXT}}


def check_label(label: Any) -> str:
    """A label is any printable, non-empty text of up to 200 characters except the open-set answer."""
    if not isinstance(label, str) or not label.strip():
        raise SSTEdgeError(f"a label must be non-empty text, got {brief(label)!r}")
    if not is_label_text(label):
        raise SSTEdgeError(f"label '{brief(label, 60)}': printable characters only, no leading/trailing "
                           f"spaces, at most {LABEL_MAX} characters")
    if label.lower() == UNKNOWN:
        raise SSTEdgeError(f"'{label}' is reserved: classification answers it for clips of no enrolled "
                           "action")
    return label


@dataclass(frozen=True)
class ClipRecord:
    """One enrolled clip: its feature file and where it came from."""

    id: str
    source: str  # the video's (or frame folder's) absolute path at enrollment
    sha256: str  # of the source video (frames_sha256 for a folder): not enrolled twice into a label
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
        n = len(self.added)
        out = [f"enrolled {n} clip{'s' * (n != 1)} as '{printable(self.label)}' in {printable(self.gallery)} "
               f"({self.counts.get(self.label, 0)} in the label, {len(self.counts)} labels)"
               + ("; committed" if n else "; nothing changed")]
        out += [f"  skipped {printable(s)}" for s in self.skipped]
        out += [f"  note: {printable(n)}" for n in self.notes]
        return out


class Gallery:
    """A gallery directory bound to one model. Open with `Gallery.open` (or `open_or_create`)."""

    def __init__(self, path: Path, doc: dict[str, Any], exists: bool):
        self.path = path
        self.doc = doc
        self.exists = exists  # False until the first write creates the directory and the index
        self._cache: dict[str, np.ndarray] = {}
        # the model's training features (set by `enroll` from its runtime): each commit then stores the
        # threshold of the check of clips unlike them with the calibration
        self.ood: FeatureDistribution | None = None
        # the model's card (from open, create or enroll): a cca head's weights ship with it
        self.card: ModelCard | None = None
        self._head_params: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------------------------ open/create
    @property
    def index_path(self) -> Path:
        return self.path / INDEX_FILE

    @classmethod
    def open(cls, path: str | Path, card: ModelCard | None = None) -> Gallery:
        """An existing gallery; with `card`, refused unless it was made by that model."""
        path = Path(path)
        index = path / INDEX_FILE
        if not index.exists() and not index.is_symlink():
            what = "no such directory" if not path.exists() else f"no {INDEX_FILE} here"
            raise SSTEdgeError(f"not a gallery ({what}): enroll clips to create one", path)
        g = cls(path, _validate(read_json(index, "gallery index"), index), True)
        if card is not None:
            g.check_model(card)
            g.card = card
        return g

    @classmethod
    def create(cls, path: str | Path, card: ModelCard) -> Gallery:
        """A new, empty gallery for `card`'s model; nothing is written until the first clip is enrolled."""
        path = Path(path)
        if path.exists() or path.is_symlink():
            foreign = _foreign_files(path, indexed=False)
            if foreign:
                raise SSTEdgeError(f"exists and is not a gallery (no {INDEX_FILE}): refusing to write into "
                                   "it", path, [f"not ours: {printable(f)}" for f in foreign[:10]])
        doc = {"format": FORMAT, "version": VERSION, "created": utc_now(), "updated": utc_now(),
               "model": {"name": card.name, "sha256": card.sha256}, "space": card.space,
               "space_hash": card.space_hash, "feature_shape": [card.frames, card.feature_dim],
               "head": card.head.to_dict(), "labels": {}, "calibration": {}}
        g = cls(path, doc, False)
        g.card = card
        return g

    @classmethod
    def open_or_create(cls, path: str | Path, card: ModelCard) -> Gallery:
        index = Path(path) / INDEX_FILE
        return cls.open(path, card) if index.exists() or index.is_symlink() else cls.create(path, card)

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
    def kinds(self) -> tuple[str, ...]:
        """The heads this gallery's model can run: every non-parametric one, and cca when the model ships
        its weights (the card's "head_weights"); each is calibrated at every change."""
        cca = self.card is not None and isinstance(self.card.head_weights, dict)
        return tuple(k for k in HEADS if k not in PARAMETRIC_HEADS or cca)

    def head_config(self, kind: str | HeadConfig, weights: bool = True) -> HeadConfig:
        """The head `kind` with the gallery model's constants (`HeadConfig.as_kind`) and, for cca with
        `weights`, the model's weights (device/cca.py `card_params`: verified against the card; an error
        naming the file when the model has none)."""
        head = kind if isinstance(kind, HeadConfig) else \
            self.head if kind == self.head.kind else self.head.as_kind(kind)
        if not weights or head.kind not in PARAMETRIC_HEADS or head.params is not None:
            return head
        if self.card is None:
            raise SSTEdgeError("the cca head's weights come with the model: open the gallery with its model",
                               self.path)
        if self._head_params is None:
            self._head_params = card_params(self.card)
        return head.with_params(self._head_params)

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
        """A clip's frame features ``[T, C]``, checked against the sha256 the index recorded.

        The file's size is known from the shape (a safetensors header, then T*C float32): it is checked
        before the file is read, so a damaged or hostile file cannot make a small device read gigabytes."""
        hit = self._cache.get(rec.id)
        if hit is not None:
            return hit

        f = self.path / rec.file
        what = f"the feature file of clip {rec.id} ({brief(rec.source)})"
        if not f.exists() and not f.is_symlink():
            raise SSTEdgeError(f"{what} is missing: remove the clip (`sst-edge gallery remove --clip "
                               f"{rec.id}`) and enroll it again", f)
        t, c = self.feature_shape
        data_bytes = t * c * 4
        size = stat_file(f, what).st_size
        if not 8 + data_bytes < size <= 8 + _HEADER_MAX + data_bytes:
            raise SSTEdgeError(f"{what} has {size:,} bytes; features [{t}, {c}] take {data_bytes + 8:,} to "
                               f"{data_bytes + 8 + _HEADER_MAX:,} (damaged): remove the clip and enroll it "
                               "again", f)
        data = read_bytes(f, what)
        if sha256_bytes(data) != rec.features_sha256:
            raise SSTEdgeError(f"{what} does not match its sha256 in {INDEX_FILE} (corrupted): remove the "
                               "clip and enroll it again", f)
        header = struct.unpack("<Q", data[:8])[0]
        if 8 + header + data_bytes != len(data):
            raise SSTEdgeError(f"{what} is not a feature file of shape [{t}, {c}]", f)
        try:
            arr = stn.load(data)[TENSOR]
        except Exception as e:  # safetensors raises SafetensorError, KeyError for a foreign file
            raise SSTEdgeError(f"not a readable feature file ({brief(e, 200)})", f) from None
        if arr.shape != self.feature_shape or arr.dtype != np.float32:
            raise SSTEdgeError(f"features {arr.dtype}{list(arr.shape)}, expected float32"
                               f"{list(self.feature_shape)}", f)
        if not np.isfinite(arr).all():
            raise SSTEdgeError(f"{what} holds non-finite values (NaN or Infinity): remove the clip", f)
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
                    supports: Sequence[np.ndarray] | None = None,
                    ood: FeatureDistribution | None = None) -> dict[str, Any]:
        """The stored calibration of `head` over `labels` if it is current, else computed now (not stored);
        with `ood`, its "ood" record is the check's threshold for that distribution, likewise (a gallery
        made before the check, or changed without the model, has none stored: it is computed now)."""
        groups = group_ids(self.labels, labels)
        key = calibration_key(groups, head)
        stored = self.doc.get("calibration", {}).get(head.kind)

        def clips() -> Sequence[np.ndarray]:
            if supports is not None:
                return supports
            s = self.supports(labels)
            return [s[lb] for lb in labels]

        cal = stored if isinstance(stored, dict) and stored.get("key") == key else \
            {**calibrate(clips(), head, key), "stored": False}
        if ood is not None:
            okey = ood_key(groups, ood.digest)
            rec = cal.get("ood")
            if not (isinstance(rec, dict) and rec.get("key") == okey):
                cal = {**cal, "ood": {**calibrate_ood(clips(), ood, okey), "stored": False}}
        return cal

    def calibration_current(self) -> bool:
        """Whether the stored calibrations were computed on the clips the index lists now (and, when the
        gallery knows the model's training features, hold the check's threshold for them)."""
        keep = [lb for lb, recs in self.labels.items() if recs]
        stored = self.doc.get("calibration", {})
        groups = group_ids(self.labels, keep)
        okey = ood_key(groups, self.ood.digest) if self.ood is not None else None
        return all(isinstance(stored.get(k), dict) and stored[k].get("key") == calibration_key(
            groups, self.head_config(k, weights=False))
            and (okey is None or (stored[k].get("ood") or {}).get("key") == okey) for k in self.kinds)

    def summary(self) -> dict[str, Any]:
        return {"gallery": str(self.path), "model": self.model, "space": self.doc["space"],
                "feature_shape": list(self.feature_shape), "head": self.doc["head"],
                "labels": {lb: [r.to_dict() for r in recs] for lb, recs in self.labels.items()},
                "calibration": self.doc.get("calibration", {}), "updated": self.doc.get("updated")}

    # ------------------------------------------------------------------------------------------ write
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Hold the writer lock, re-read the index (another process may have written), yield a copy of it.

        Refused (before anything is written) when the folder holds files we did not create."""
        foreign = _foreign_files(self.path, indexed=self.index_path.is_file())
        if foreign:
            raise SSTEdgeError("the gallery folder holds files sst-edge did not create; refusing to write "
                               "(move them elsewhere)", self.path, [printable(f) for f in foreign[:10]])
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 (held for the whole block)
        except OSError as e:
            raise os_error(e, "cannot write to the gallery", self.path) from None
        with lock:
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
        """Replace the index atomically (the commit point), then delete our own files it does not name.

        Calibration is computed first: a feature file that cannot be read stops the change uncommitted."""
        doc["updated"] = utc_now()
        if recalibrate:
            doc["calibration"] = self._calibrate(doc)
        check(doc, INDEX_SCHEMA, "gallery index", self.index_path)
        try:
            atomic_write_json(self.index_path, doc)
        except OSError as e:
            raise os_error(e, "cannot write the gallery index; the gallery is unchanged",
                           self.index_path) from None
        self.doc, self.exists = doc, True
        self._clean()

    def _calibrate(self, doc: dict[str, Any]) -> dict[str, Any]:
        labels = {lb: [ClipRecord.from_dict(r) for r in recs] for lb, recs in doc["labels"].items()}
        keep = [lb for lb, recs in labels.items() if recs]
        supports = [np.stack([self.features(r) for r in labels[lb]]) for lb in keep]
        out = {}
        groups = group_ids(labels, keep)
        ood = calibrate_ood(supports, self.ood, ood_key(groups, self.ood.digest)) \
            if self.ood is not None and supports else None
        for kind in self.kinds:
            head = self.head_config(kind)
            out[kind] = calibrate(supports, head, calibration_key(groups, head))
            if ood is not None:
                out[kind]["ood"] = dict(ood)
        return out

    def _clean(self) -> int:
        """Delete OUR feature files the index does not name (a crash's strays) and our temporary files;
        nothing else, whatever its name."""
        named = {Path(r["file"]).name for recs in self.doc["labels"].values() for r in recs}
        folder = self.path / FEATURES_DIR
        strays = [p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and (
            (OUR_FEATURE.match(p.name) and p.name not in named) or OUR_TEMP.match(p.name))] \
            if folder.is_dir() else []
        strays += [p for p in self.path.glob(f".{INDEX_FILE}.*.tmp") if OUR_TEMP.match(p.name)]
        removed = 0
        for p in strays:
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
        self._cache = {k: v for k, v in self._cache.items() if f"{k}.safetensors" in named}
        return removed

    def add(self, label: str, features: np.ndarray, source: str | Path, source_sha256: str,
            recalibrate: bool = True) -> ClipRecord | None:
        """Commit one clip's features to `label`; None (nothing written) if that video is already in it."""
        added = self.add_many(label, [(features, Path(source), source_sha256)], recalibrate)
        return added[0] if added else None

    def add_many(self, label: str, clips: Sequence[tuple[np.ndarray, Path, str]],
                 recalibrate: bool = True) -> list[ClipRecord]:
        """Commit clips (features, source, source sha256) to `label` in one index write: all or nothing.

        Videos already in the label are left out. Their feature files are written first; if anything fails
        before the index is replaced, they are deleted again and the gallery is as it was."""
        label = check_label(label)
        for feats, source, _ in clips:
            _check_features(feats, self.feature_shape, source, self.path)
        written: list[Path] = []
        new_folder = not self.path.exists()
        try:
            with self._locked() as doc:
                have = {r["sha256"] for r in doc["labels"].get(label, [])}
                recs: list[ClipRecord] = []
                for feats, source, digest in clips:
                    if digest in have:
                        continue
                    have.add(digest)
                    clip_id = uuid.uuid4().hex[:12]
                    rel = f"{FEATURES_DIR}/{clip_id}.safetensors"
                    meta = {"clip": clip_id, "model_sha256": doc["model"]["sha256"], "source_sha256": digest}
                    arr = np.ascontiguousarray(feats, np.float32)
                    blob = stn.save({TENSOR: arr}, metadata=meta)
                    try:
                        atomic_write_bytes(self.path / rel, blob)
                    except OSError as e:
                        raise os_error(e, "cannot write a feature file; nothing was enrolled",
                                       self.path / rel) from None
                    written.append(self.path / rel)
                    self._cache[clip_id] = arr
                    rec = ClipRecord(clip_id, str(source), digest, utc_now(), rel, sha256_bytes(blob))
                    recs.append(rec)
                    doc["labels"].setdefault(label, []).append(rec.to_dict())
                if recs:
                    self._commit(doc, recalibrate)
                return recs
        except BaseException:
            for f in written:  # ours, and named by no index: the gallery is as it was
                with contextlib.suppress(OSError):
                    f.unlink()
            if new_folder and not self.index_path.exists():  # a first enrollment leaves no folder behind
                for f in (self.path / LOCK_FILE, self.path / FEATURES_DIR, self.path):
                    with contextlib.suppress(OSError):
                        f.unlink() if f.name == LOCK_FILE else f.rmdir()
            raise

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
        """Embed `clips` with `runtime` and add them to `label`: all of them, or none.

        Every clip is hashed and probed, every feature file of the gallery read and verified, and every
        new clip embedded (its features finite) before anything is written; then one commit adds them.
        A video already in the label (same sha256) is skipped with a note, not duplicated.
        """

        self.check_model(runtime.card)
        self.ood = runtime.ood
        self.card = runtime.card
        label = check_label(label)
        if not clips:
            raise SSTEdgeError("no clips given to enroll")
        report = EnrollReport(str(self.path), label)
        decoder = runtime.decoder()
        todo: list[tuple[Path, str]] = []
        bad: list[SSTEdgeError] = []
        seen: dict[str, Path] = {}
        for c in clips:
            p = Path(c).expanduser().absolute()
            try:
                check_source(p)
                if not is_folder(p):  # a folder is a clip of frames, probed and hashed image by image
                    stat_file(p, "video")
                # probe: missing, empty, foreign, truncated -> VideoError naming the file (or image)
                digest = clip_sha256(decoder.info(p))
            except SSTEdgeError as e:
                bad.append(e)
                continue
            except OSError as e:
                bad.append(os_error(e, "video", p))
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
        try:
            self.supports()  # every feature file already here, verified: the commit recalibrates on them
        except SSTEdgeError as e:
            raise SSTEdgeError(f"{e.message}; nothing was enrolled", e.path, e.problems) from None
        have = {r.sha256 for r in self.labels.get(label, [])}
        new: list[tuple[np.ndarray, Path, str]] = []
        for p, digest in tqdm(todo, desc=f"enroll '{brief(label, 30)}'", unit="clip",
                              disable=not progress or len(todo) < 2, leave=False):
            if digest in have:
                report.skipped.append(f"{p}: already enrolled in '{label}' (same video, sha256 "
                                      f"{digest[:12]})")
                continue
            new.append((runtime.embed_file(p, decoder), p, digest))
        report.added = self.add_many(label, new, recalibrate=True) if new else []
        if len(report.added) < len(new):
            report.skipped.append(f"{len(new) - len(report.added)} clip(s) enrolled meanwhile by another "
                                  "process")
        for rec in report.added:
            others = [lb for lb, recs in self.labels.items()
                      if lb != label and any(r.sha256 == rec.sha256 for r in recs)]
            if others:
                report.notes.append(f"{rec.source} is also enrolled as {', '.join(map(repr, others))}")
        if not report.added and self.exists and not self.calibration_current():
            self.recalibrate()
        report.calibration = {k: _short(v) for k, v in self.doc.get("calibration", {}).items()}
        report.counts = {lb: len(recs) for lb, recs in self.labels.items()}
        return report


def check_source(path: Path) -> None:
    """Refuse, where clip paths come in (before anything is probed or embedded), a path the index cannot
    record: it keeps each clip's path as printable text, so a newline, a control or bidi character (which
    would forge lines or reorder a listing) or bytes that are not UTF-8 are named here, escaped."""
    text, limit = str(path), CLIP_SCHEMA["properties"]["source"]["maxLength"]
    if text.isprintable() and len(text) <= limit:
        return
    why = (f"longer than {limit} characters" if text.isprintable() else
           "it holds a character that is not printable (a newline, a control or bidi character, or bytes "
           "that are not UTF-8)")
    raise SSTEdgeError(f"clip path: {why}, so the gallery cannot record it: rename or move the clip", path)


def _foreign_files(path: Path, indexed: bool) -> list[str]:
    """Files in a gallery folder that sst-edge did not create (empty when there are none, or no folder).

    Ours: gallery.json (when `indexed`), .lock, our temporary files, features/<12 hex>.safetensors."""
    if not path.exists() and not path.is_symlink():
        return []
    if not path.is_dir():
        return [str(path)]
    out = []
    try:
        for p in sorted(path.iterdir()):
            if p.name == FEATURES_DIR and p.is_dir() and not p.is_symlink():
                out += [str(f) for f in sorted(p.iterdir()) if not _ours_in_features(f)]
            elif not ((p.name == INDEX_FILE and indexed) or p.name == LOCK_FILE
                      or (p.name.startswith(f".{INDEX_FILE}.") and OUR_TEMP.match(p.name))):
                out.append(str(p))
    except OSError as e:
        raise os_error(e, "cannot list the gallery folder", path) from None
    return out


def _ours_in_features(f: Path) -> bool:
    """A regular file named as our feature files or temporary files are, or a file gone since the folder
    was listed: another writer's temporary file, renamed into place meanwhile (this scan runs unlocked)."""
    try:
        mode = f.lstat().st_mode
    except FileNotFoundError:
        return True
    return stat.S_ISREG(mode) and bool(OUR_FEATURE.match(f.name) or OUR_TEMP.match(f.name))


def _check_features(feats: np.ndarray, shape: tuple[int, int], source: str | Path, where: Path) -> None:
    a = np.asarray(feats)
    if a.shape != shape:
        raise SSTEdgeError(f"features {list(a.shape)} of {source} do not fit this gallery's {list(shape)}",
                           where)
    if not np.isfinite(a).all():
        raise SSTEdgeError(f"the features of {source} hold non-finite values (NaN or Infinity); nothing was "
                           "enrolled", where)


def _names(doc: dict[str, Any]) -> str:
    return "labels: " + (", ".join(f"'{lb}'" for lb in doc["labels"]) or "none")


def _short(cal: dict[str, Any]) -> dict[str, Any]:
    keys = ("method", "temperature", "threshold", "score_threshold", "why", "loo_accuracy")
    out = {k: cal[k] for k in keys if k in cal}
    if isinstance(cal.get("ood"), dict):
        out["ood_threshold"] = cal["ood"].get("threshold")
    return out


def _validate(doc: Any, path: Path) -> dict[str, Any]:
    """The index, checked by schema on every read: a corrupt, foreign or hostile file (a label holding
    escape codes, a feature file outside the gallery, a newer format) is reported, never half used."""
    check_header(doc, FORMAT, VERSION, "gallery index", path)
    check(doc, INDEX_SCHEMA, "gallery index", path)
    problems = []
    try:
        HeadConfig.from_dict(doc["head"])
    except (SSTEdgeError, TypeError) as e:
        problems.append(f"'head' is invalid: {brief(e, 200)}")
    ids: set[str] = set()
    for lb, recs in doc["labels"].items():
        if lb.lower() == UNKNOWN:
            problems.append(f"label '{lb}' is reserved for the open-set answer")
        for r in recs:
            if r["id"] in ids:
                problems.append(f"clip id {r['id']} appears twice")
            ids.add(r["id"])
            if r["file"] != f"{FEATURES_DIR}/{r['id']}.safetensors":
                problems.append(f"clip {r['id']}: feature file {r['file']!r} is not the clip's own")
    doc.setdefault("calibration", {})
    if problems:
        raise SSTEdgeError("the gallery index is corrupt", path, problems)
    return doc
