"""The model card: what a model directory holds and how to run it, read by the runtime before anything else.

A model directory holds `model.onnx`, `card.json` and the training features of the
out-of-distribution check (`train_features.safetensors`, device/ood.py, when export had the training data);
TensorRT engines are built by ONNX Runtime's provider into its cache, not shipped. A model with a learned
few-shot head (cca) ships its weights too (`head.safetensors`, the card's "head_weights": file, sha256,
shapes, constants). The card names the subnet and its space (with the YAML's hash), the preprocessing,
the input and output shapes, the head, FLOPs and params, predicted and measured latency, and the sha256 of
every file: the runtime refuses a model whose file no longer matches (tampered or corrupted), and a gallery
remembers the model's sha256 so features of two models never mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from ..errors import SSTEdgeError
from ..fileio import atomic_write_json, os_error, read_json, sha256_file, stat_file
from ..schema import HEX64, NONNEG_INT, POS_INT, POS_NUMBER, TEXT, check, check_header, header_schema
from .decoders import DECODERS
from .preprocess import Preprocess
from .settings import HEADS, HeadConfig

CARD_FORMAT = "sst-edge/model-card"
CARD_VERSION = 2  # 2: every section is typed and schema-checked, unknown sections are refused
READABLE_VERSIONS = (1, 2)  # version 1 has the same layout, checked less strictly when written
CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"
ENGINE_FILE = "model.engine"

_REQUIRED = ("format", "version", "name", "space", "space_hash", "subnet", "target", "preprocess", "input",
             "output", "head", "files")
_DIM = {"anyOf": [POS_INT, {"type": "string", "format": "text", "maxLength": 64}]}  # a size, or "batch"
_FILE_NAME = "^(?!\\.\\.?$)[A-Za-z0-9._-]{1,255}$"  # a plain name inside the model directory
PREPROCESS_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {"frames": POS_INT, "size": POS_INT, "resize": POS_INT,
                   "mean": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
                   "std": {"type": "array", "items": POS_NUMBER, "minItems": 3, "maxItems": 3},
                   "decoder": {"enum": list(DECODERS)}, "hflip": {"type": "boolean"}}}
HEAD_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["kind", "tau", "window"],
    "properties": {"kind": {"enum": list(HEADS)}, "tau": POS_NUMBER,
                   "window": {"anyOf": [NONNEG_INT, {"type": "null"}]}}}
_NUMBER_OR_NULL = {"anyOf": [{"type": "number"}, {"type": "null"}]}
_MEASURED = {"type": "object",  # a measurement, or why there is none
             "properties": {"median_ms": POS_NUMBER, "p10_ms": POS_NUMBER, "p90_ms": POS_NUMBER, "why": TEXT},
             "oneOf": [{"required": ["median_ms", "p10_ms", "p90_ms"]}, {"required": ["why"]}]}
# What export records about the model, one section each (all optional: a card written by hand may have
# none). The keys the code reads are required in their section.
SECTION_SCHEMAS: dict[str, dict[str, Any]] = {
    "created": TEXT,
    "sst_edge": TEXT,
    "cost": {"type": "object", "required": ["gflops", "mparams"],
             "properties": {"gflops": {"type": "number", "minimum": 0},
                            "mparams": {"type": "number", "minimum": 0}, "convention": TEXT}},
    "parity": {"type": "object", "required": ["max_abs_diff", "tolerance"],
               "properties": {"max_abs_diff": {"type": "number", "minimum": 0}, "tolerance": POS_NUMBER,
                              "clips": POS_INT}},
    "latency": {"type": "object", "required": ["predicted", "measured"],
                "properties": {
                    "predicted": {"type": "object",
                                  "properties": {"ms": _NUMBER_OR_NULL, "table": TEXT, "why": TEXT}},
                    "measured": {"anyOf": [{"type": "null"}, _MEASURED]}}},
    "tensorrt": {"type": "object", "required": ["ok"],
                 "properties": {"ok": {"type": "boolean"}, "trtexec": TEXT, "why": TEXT,
                                "engine": {"anyOf": [TEXT, {"type": "null"}]},
                                "unsupported": {"type": "array", "items": TEXT}}},
    "quantization": {"type": "object", "required": ["mode"], "properties": {"mode": TEXT}},
    "graph_optimization": {"type": "object", "required": ["level"], "properties": {"level": TEXT}},
    "weights": {"type": "object", "required": ["path", "sha256"],
                "properties": {"path": TEXT, "sha256": HEX64}},
    "subnet_metrics": {"type": "object"},
    "head_source": {"type": "object",
                    "properties": {"source": TEXT, "notes": {"type": "array", "items": TEXT}}},
    # OpenVINO targets: the runtime's version and the precision hint export chose, with its evidence
    "openvino": {"type": "object", "required": ["version", "precision_hint"],
                 "properties": {"version": TEXT, "device": TEXT, "precision_hint": {"enum": ["fp32", "bf16"]},
                                "asked": TEXT, "why": TEXT, "evidence": {"type": "object"}}},
    # every graph the model ships, against PyTorch fp32 by feature cosine (export's gate on real clips)
    "checks": {"type": "array", "items": {"type": "object", "required": ["graph", "checked"],
                                          "properties": {"graph": TEXT, "checked": {"type": "boolean"},
                                                         "min_cosine": {"type": "number"}}}},
    # a learned few-shot head's weights (cca, device/cca.py): the file (also in `files`), its sha256, the
    # shape of each tensor, and the constants the numpy head was written for (checked when it loads)
    "head_weights": {"type": "object", "additionalProperties": False,
                     "required": ["kind", "file", "sha256", "shapes", "constants"],
                     "properties": {"kind": {"enum": ["cca"]},
                                    "file": {"type": "string", "pattern": _FILE_NAME}, "sha256": HEX64,
                                    "shapes": {"type": "object",
                                               "additionalProperties": {"type": "array", "items": POS_INT}},
                                    "constants": {"type": "object"}, "source": TEXT}},
    # the out-of-distribution check's training features (device/ood.py), or why export stored none
    "ood": {"type": "object",
            "properties": {"version": POS_INT, "file": {"type": "string", "pattern": _FILE_NAME},
                           "score": TEXT, "pooling": TEXT, "clips": POS_INT, "classes": POS_INT,
                           "dim": POS_INT,
                           "shrinkage": {"type": "object", "additionalProperties": {"type": "number"}},
                           "data": TEXT, "split": TEXT, "source": TEXT, "skipped": NONNEG_INT, "why": TEXT},
            "oneOf": [{"required": ["version", "file", "pooling", "clips", "dim"]},
                      {"required": ["why"], "not": {"required": ["file"]}}]},
}

SECTIONS = tuple(SECTION_SCHEMAS)


class CostRecord(TypedDict):
    gflops: float  # multiply-adds per clip, in G
    mparams: float
    convention: str


class LatencyRecord(TypedDict):
    predicted: dict[str, Any]  # {"ms", "table"} or {"ms": None, "why"}
    measured: dict[str, Any] | None  # {"median_ms", "p10_ms", "p90_ms", ...} or {"why"}


class ParityRecord(TypedDict, total=False):
    max_abs_diff: float  # PyTorch eager vs ONNX Runtime fp32 features
    tolerance: float
    clips: int


class TensorRTRecord(TypedDict, total=False):
    ok: bool  # the static check: every op and shape is what TensorRT takes
    trtexec: str
    unsupported: list[str]
    engine: str | None  # None: not built here (`why` says so)
    why: str


class OODRecord(TypedDict, total=False):
    version: int  # of the training-feature file (device/ood.py)
    file: str  # in the model directory, listed in `files` (its sha256 checked before it is read)
    score: str
    pooling: str
    clips: int  # training clips embedded
    classes: int
    dim: int
    shrinkage: dict[str, float]
    data: str  # the dataset, its split, and where export learnt it from (run.json, --data)
    split: str
    source: str
    skipped: int  # training clips that could not be read
    why: str  # instead of the rest: why export stored none


def _io_schema(dims: list[dict[str, Any]]) -> dict[str, Any]:
    """An input or output: its name, dtype and shape (one schema per dimension)."""
    return {"type": "object", "required": ["shape"],
            "properties": {"name": TEXT, "dtype": TEXT,
                           "shape": {"type": "array", "prefixItems": dims, "minItems": len(dims),
                                     "maxItems": len(dims)}}}


CARD_SCHEMA = {
    "type": "object", "required": list(_REQUIRED), "additionalProperties": False,
    "properties": {
        **header_schema(CARD_FORMAT, None), "version": {"enum": list(READABLE_VERSIONS)}, **SECTION_SCHEMAS,
        "name": {**TEXT, "minLength": 1, "maxLength": 200}, "space": {**TEXT, "maxLength": 200},
        "space_hash": {**TEXT, "maxLength": 128}, "subnet": {"type": "object"}, "target": {"type": "object"},
        "preprocess": PREPROCESS_SCHEMA, "head": HEAD_SCHEMA,
        "input": _io_schema([_DIM] + [POS_INT] * 4),  # [batch, T, 3, H, W]
        "output": _io_schema([_DIM, POS_INT, POS_INT]),  # [batch, T, C]
        "files": {"type": "object", "required": [MODEL_FILE], "propertyNames": {"pattern": _FILE_NAME},
                  "additionalProperties": {"type": "object", "required": ["sha256", "bytes"],
                                           "properties": {"sha256": HEX64, "bytes": NONNEG_INT}}},
    }}


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
    # what export recorded (None: absent from the card)
    created: str | None = None
    sst_edge: str | None = None  # the version that wrote it
    cost: CostRecord | None = None
    parity: ParityRecord | None = None
    latency: LatencyRecord | None = None
    tensorrt: TensorRTRecord | None = None
    quantization: dict[str, Any] | None = None  # int8 targets: mode, recipe, accuracy, latency
    graph_optimization: dict[str, Any] | None = None
    weights: dict[str, Any] | None = None
    subnet_metrics: dict[str, Any] | None = None  # what search measured for the subnet
    head_source: dict[str, Any] | None = None
    ood: OODRecord | None = None  # None: a card from before the check (no training features)
    openvino: dict[str, Any] | None = None  # OpenVINO targets: version, precision hint and why
    checks: list[dict[str, Any]] | None = None  # the shipped graph(s) against PyTorch, by feature cosine
    head_weights: dict[str, Any] | None = None  # a cca model's head file (device/cca.py: card_head)
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
        return {
            "format": CARD_FORMAT,
            "version": CARD_VERSION,
            "name": self.name,
            "space": self.space,
            "space_hash": self.space_hash,
            "subnet": self.subnet,
            "target": self.target,
            "preprocess": self.preprocess.to_dict(),
            "input": self.input,
            "output": self.output,
            "head": self.head.to_dict(),
            "files": self.files,
            **{k: getattr(self, k) for k in SECTIONS if getattr(self, k) is not None},
        }

    @classmethod
    def from_dict(cls, doc: Any, path: str | Path | None = None) -> ModelCard:
        where = path or None
        check_header(doc, CARD_FORMAT, READABLE_VERSIONS, "model card", where)
        check(doc, CARD_SCHEMA, "model card", where)
        try:
            pre = Preprocess.from_dict(doc["preprocess"])
            head = HeadConfig(**doc["head"])
        except (SSTEdgeError, TypeError) as e:
            raise SSTEdgeError(f"the model card's preprocess or head is invalid: {e}", where) from None
        return cls(
            doc["name"],
            doc["space"],
            doc["space_hash"],
            doc["subnet"],
            doc["target"],
            pre,
            doc["input"],
            doc["output"],
            head,
            doc["files"],
            **{k: doc.get(k) for k in SECTIONS},
            path=Path(path) if path is not None else None,
        )

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, check(self.to_dict(), CARD_SCHEMA, "model card", path))


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


# ONNX Runtime's tensor types in the card's words
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8", "tensor(bool)": "bool"}
Port = tuple[str, list[Any], str]  # an input or output of a session: name, shape (int, str or None), type


def _shape_text(shape: list[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _dim_problems(what: str, card: list[Any], model: list[Any], names: tuple[str, ...]) -> list[str]:
    """Each fixed dimension of `model` that the card gives otherwise, in words ("card says 64x64, ...")."""
    if len(card) != len(model):
        return [f"card says {what} {_shape_text(card)} ({len(card)} dimensions), {MODEL_FILE} has "
                f"{_shape_text(model)} ({len(model)} dimensions)"]
    fixed = [isinstance(m, int) for m in model]
    out = []
    if what == "input" and fixed[3] and fixed[4] and (card[3], card[4]) != (model[3], model[4]):
        out.append(f"card says {card[3]}x{card[4]}, {MODEL_FILE} expects {model[3]}x{model[4]}")
    skip = {3, 4} if what == "input" else set()
    for i, (c, m, name) in enumerate(zip(card, model, names, strict=True)):
        if i in skip or not fixed[i] or c == m:
            continue
        if i == 0:
            out.append(f"card says a {'dynamic' if not isinstance(c, int) else c} batch, {MODEL_FILE}'s "
                       f"{what} takes a batch of {m}")
        else:
            verb = "expects" if what == "input" else "gives"
            out.append(f"card says {c} {name}, {MODEL_FILE} {verb} {m} (its {what} {_shape_text(model)})")
    return out


def _port_problems(what: str, card_io: dict[str, Any], ports: list[Port],
                   names: tuple[str, ...]) -> list[str]:
    if len(ports) != 1:
        listed = ", ".join(repr(n) for n, _, _ in ports) or "none"
        return [f"card says one {what}, {MODEL_FILE} has {len(ports)} ({listed})"]
    name, shape, kind = ports[0]
    out = []
    if card_io.get("name") is not None and card_io["name"] != name:
        out.append(f"card says {what} {card_io['name']!r}, {MODEL_FILE} names it {name!r}")
    dtype = ORT_DTYPES.get(kind, kind)
    if card_io.get("dtype") is not None and card_io["dtype"] != dtype:
        out.append(f"card says a {card_io['dtype']} {what}, {MODEL_FILE}'s is {dtype}")
    return out + _dim_problems(what, list(card_io["shape"]), list(shape), names)


def session_problems(card: ModelCard, inputs: list[Port], outputs: list[Port]) -> list[str]:
    """Every way the model a session opened differs from what its card says about it: the number,
    names, types and fixed dimensions of its inputs and outputs, each named."""
    return (_port_problems("input", card.input, inputs, ("batch", "frames", "channels", "rows", "columns"))
            + _port_problems("output", card.output, outputs, ("batch", "frames", "features")))


def verify_files(card: ModelCard, names: tuple[str, ...] | None = None) -> None:
    """Check each listed file's sha256 against the card; a mismatch means tampering or corruption."""
    folder = card.path.parent if card.path is not None else Path(".")
    for name, rec in card.files.items():
        if names is not None and name not in names:
            continue
        f = folder / name
        if not f.exists() and not f.is_symlink():
            raise SSTEdgeError(f"{name} listed in {CARD_FILE} is missing", f)
        size = stat_file(f, name).st_size
        if size != rec.get("bytes"):
            raise SSTEdgeError(f"{name} has {size:,} bytes, not the {rec.get('bytes'):,} of {CARD_FILE} (the "
                               "file was modified, truncated or corrupted after export; re-export it)", f)
        try:
            digest = sha256_file(f)
        except OSError as e:
            raise os_error(e, f"reading {name}", f) from None
        if digest != rec.get("sha256"):
            raise SSTEdgeError(f"{name} does not match the sha256 in {CARD_FILE} (the file was modified or "
                               f"corrupted after export; re-export it)", f,
                               [f"card: {rec.get('sha256')}", f"file: {digest}"])
