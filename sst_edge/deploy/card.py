"""The model card: what a model directory holds and how to run it, read by the runtime before anything else.

A model directory (../shared/DESIGN.md) holds `model.onnx`, `card.json` and, for TensorRT targets built
where TensorRT exists, `model.engine`. The card names the subnet and its space (with the YAML's hash),
the preprocessing, the input and output shapes, the head, FLOPs and params, predicted and measured latency,
and the sha256 of every file: the runtime refuses a model whose file no longer matches (tampered or
corrupted), and a gallery remembers the model's sha256 so features of two models never mix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.preprocess import Preprocess
from ..errors import SSTEdgeError
from ..fewshot import HeadConfig
from ..fileio import atomic_write_json, read_json, sha256_file

CARD_FORMAT = "sst-edge/model-card"
CARD_VERSION = 1
CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"
ENGINE_FILE = "model.engine"

_REQUIRED = ("format", "version", "name", "space", "space_hash", "subnet", "target", "preprocess", "input",
             "output", "head", "files")


@dataclass
class ModelCard:
    """card.json as an object. `files` maps a file name in the directory to {"sha256", "bytes"}."""

    name: str
    space: str
    space_hash: str
    subnet: dict[str, Any]
    target: dict[str, Any]
    preprocess: Preprocess
    input: dict[str, Any]  # {"name", "shape": ["batch", T, 3, H, W], "dtype"}
    output: dict[str, Any]  # {"name", "shape": ["batch", T, C], "dtype"}
    head: HeadConfig
    files: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)  # cost, latency, parity, quantization, tensorrt...
    path: Path | None = None

    @property
    def sha256(self) -> str:
        """The identity of the model: the sha256 of model.onnx (galleries record it)."""
        return str(self.files[MODEL_FILE]["sha256"])

    @property
    def frames(self) -> int:
        return int(self.input["shape"][1])

    @property
    def feature_dim(self) -> int:
        return int(self.output["shape"][2])

    def to_dict(self) -> dict[str, Any]:
        return {"format": CARD_FORMAT, "version": CARD_VERSION, "name": self.name, "space": self.space,
                "space_hash": self.space_hash, "subnet": self.subnet, "target": self.target,
                "preprocess": self.preprocess.to_dict(), "input": self.input, "output": self.output,
                "head": self.head.to_dict(), "files": self.files, **self.extra}

    @classmethod
    def from_dict(cls, doc: Any, path: str | Path | None = None) -> ModelCard:
        where = path or None
        if not isinstance(doc, dict) or doc.get("format") != CARD_FORMAT:
            raise SSTEdgeError(f"not an sst-edge model card (expected format '{CARD_FORMAT}')", where)
        if doc.get("version") != CARD_VERSION:
            raise SSTEdgeError(f"model card version {doc.get('version')!r} is not supported "
                               f"(this sst-edge reads version {CARD_VERSION})", where)
        missing = [k for k in _REQUIRED if k not in doc]
        if missing:
            raise SSTEdgeError("the model card is incomplete", where, [f"missing key '{k}'" for k in missing])
        problems = []
        for key in ("input", "output"):
            shape = doc[key].get("shape") if isinstance(doc[key], dict) else None
            if not isinstance(shape, list) or len(shape) != (5 if key == "input" else 3):
                problems.append(f"{key}.shape must be a list of {5 if key == 'input' else 3} dimensions")
        if not isinstance(doc["files"], dict) or MODEL_FILE not in doc["files"]:
            problems.append(f"files must list {MODEL_FILE} with its sha256")
        if problems:
            raise SSTEdgeError("the model card is malformed", where, problems)
        try:
            pre = Preprocess.from_dict(doc["preprocess"])
            head = HeadConfig(**doc["head"])
        except (SSTEdgeError, TypeError) as e:
            raise SSTEdgeError(f"the model card's preprocess or head is invalid: {e}", where) from None
        extra = {k: v for k, v in doc.items() if k not in _REQUIRED}
        return cls(doc["name"], doc["space"], doc["space_hash"], doc["subnet"], doc["target"], pre,
                   doc["input"], doc["output"], head, doc["files"], extra,
                   Path(path) if path is not None else None)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())


def file_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def load_card(model_dir: str | Path) -> ModelCard:
    """The card of a model directory (or of the card file itself), checked for completeness."""
    model_dir = Path(model_dir)
    path = model_dir / CARD_FILE if model_dir.is_dir() else model_dir
    if model_dir.exists() and not model_dir.is_dir() and model_dir.name != CARD_FILE:
        raise SSTEdgeError(f"expected a model directory (with {CARD_FILE} and {MODEL_FILE})", model_dir)
    if not path.is_file():
        raise SSTEdgeError(f"no {CARD_FILE} here: not a model directory made by `sst-edge export`", model_dir)
    return ModelCard.from_dict(read_json(path, "model card"), path)


def verify_files(card: ModelCard, names: tuple[str, ...] | None = None) -> None:
    """Check each listed file's sha256 against the card; a mismatch means tampering or corruption."""
    folder = card.path.parent if card.path is not None else Path(".")
    for name, rec in card.files.items():
        if names is not None and name not in names:
            continue
        f = folder / name
        if not f.is_file():
            raise SSTEdgeError(f"{name} listed in {CARD_FILE} is missing", f)
        digest = sha256_file(f)
        if digest != rec.get("sha256"):
            raise SSTEdgeError(f"{name} does not match the sha256 in {CARD_FILE} (the file was modified or "
                               f"corrupted after export; re-export it)", f,
                               [f"card: {rec.get('sha256')}", f"file: {digest}"])
