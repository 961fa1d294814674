"""Deployment targets (export/NAME.yaml): which runtime, execution provider, precision and threads.

A target is what latency tables are measured on and what models are exported for, so both must read the
same settings from one place. Loading lists every problem at once, naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SSTEdgeError
from ..fileio import read_yaml
from ..resources import resolve

BACKENDS = ("onnxruntime", "openvino", "torch")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "int8")
GRAPH_OPTIMIZATION = ("disable", "basic", "extended", "all")
QUANT_MODES = ("dynamic", "static")
# standard: attention as opset-17 MatMul/Softmax (any runtime); fused: ORT's com.microsoft MultiHeadAttention
ATTENTION = ("standard", "fused")
TRT_PROVIDER = "TensorrtExecutionProvider"
GPU_PROVIDERS = ("CUDAExecutionProvider", TRT_PROVIDER)
OPENVINO_PROVIDER = "OpenVINO:CPU"  # OpenVINO's CPU plugin (device/openvino.py)
KNOWN_PROVIDERS = ("CPUExecutionProvider", *GPU_PROVIDERS, OPENVINO_PROVIDER)
# an OpenVINO target's INFERENCE_PRECISION_HINT; auto: chosen per host by measurement at export
PRECISION_HINTS = ("auto", "fp32", "bf16")
_KEYS = {"name", "description", "backend", "device", "execution_providers", "provider_options", "precision",
         "opset", "dynamic_batch", "threads", "graph_optimization", "quantization", "attention",
         "precision_hint"}
_QUANT_KEYS = {"mode", "op_types", "per_channel", "reduce_range", "calibration"}


@dataclass(frozen=True)
class Quantization:
    """INT8 settings. `dynamic`: weights quantized offline, activations at run time (no data needed).
    `static` also needs `calibration` clips to fix activation ranges. `reduce_range` (7-bit weights) keeps
    x86 CPUs without VNNI from saturating u8 x s8 products (bench/export.py measures both)."""

    mode: str = "dynamic"
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    per_channel: bool = False
    reduce_range: bool = False
    calibration: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    name: str
    backend: str
    device: str
    execution_providers: tuple[str, ...]
    precision: str
    opset: int = 17
    dynamic_batch: bool = True
    threads: int = 1
    graph_optimization: str = "all"
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    quantization: Quantization | None = None
    attention: str = "standard"
    precision_hint: str | None = None  # OpenVINO targets only: auto | fp32 | bf16
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def provider(self) -> str:
        """The execution provider that runs the model (the first; later ones take unsupported nodes)."""
        return self.execution_providers[0]

    @property
    def fused_attention(self) -> bool:
        """Attention exported as ORT's com.microsoft MultiHeadAttention (see space/attention.py)."""
        return self.attention == "fused"

    @property
    def openvino(self) -> bool:
        return self.backend == "openvino"

    @property
    def uses_gpu(self) -> bool:
        return self.device == "cuda"

    def canonical(self) -> dict[str, Any]:
        """The settings that change a timing (everything but the prose and the file it came from)."""
        d = asdict(self)
        d.pop("source")
        d.pop("description")
        if self.attention == "standard":  # the default before the key existed: older tables keep their hash
            d.pop("attention")
        if self.precision_hint is None:  # not an OpenVINO target: older tables keep their hash
            d.pop("precision_hint")
        d["execution_providers"] = list(self.execution_providers)
        if self.quantization is not None:
            d["quantization"]["op_types"] = list(self.quantization.op_types)
        return d

    @property
    def hash(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def ort_providers(self) -> list[tuple[str, dict[str, Any]]]:
        """(provider, options) pairs in priority order, as InferenceSession takes them."""
        return [(p, dict(self.provider_options.get(p, {}))) for p in self.execution_providers]


def _check_type(doc: dict, key: str, kind: type | tuple, problems: list[str], where: str = "target") -> Any:
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, bool) and kind is not bool or not isinstance(v, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        problems.append(f"{where}.{key}: expected {name}, got {v!r}")
        return None
    return v


def _parse_quantization(q: Any, problems: list[str]) -> Quantization | None:
    if not isinstance(q, dict):
        problems.append(f"quantization: expected a mapping, got {q!r}")
        return None
    for k in sorted(set(q) - _QUANT_KEYS):
        problems.append(f"quantization: unknown key '{k}' (known: {', '.join(sorted(_QUANT_KEYS))})")
    mode = q.get("mode", "dynamic")
    if mode not in QUANT_MODES:
        problems.append(f"quantization.mode: expected one of {list(QUANT_MODES)}, got {mode!r}")
    op_types = q.get("op_types", ["MatMul", "Gemm"])
    if not isinstance(op_types, list) or not op_types or not all(isinstance(o, str) for o in op_types):
        problems.append(f"quantization.op_types: expected a non-empty list of op names, got {op_types!r}")
        op_types = ["MatMul", "Gemm"]
    flags = {}
    for key in ("per_channel", "reduce_range"):
        v = q.get(key, False)
        if not isinstance(v, bool):
            problems.append(f"quantization.{key}: expected true or false, got {v!r}")
        flags[key] = bool(v)
    cal = q.get("calibration", {}) or {}
    if not isinstance(cal, dict):
        problems.append(f"quantization.calibration: expected a mapping, got {cal!r}")
        cal = {}
    if mode == "static" and not cal:
        problems.append("quantization.calibration: static int8 needs calibration settings (method, clips)")
    return Quantization(mode=mode, op_types=tuple(op_types), calibration=dict(cal), **flags)


def parse_target(doc: Any, source: str = "<memory>") -> Target:
    """Validate a parsed target document and build a Target, listing every problem at once."""
    if not isinstance(doc, dict):
        raise SSTEdgeError("a target YAML must be a mapping", source)
    problems: list[str] = []
    for k in sorted(set(doc) - _KEYS):
        problems.append(f"unknown key '{k}' (known: {', '.join(sorted(_KEYS))})")
    for key in ("name", "backend", "device", "execution_providers", "precision"):
        if key not in doc:
            problems.append(f"missing '{key}'")
    name = _check_type(doc, "name", str, problems)
    backend = doc.get("backend")
    if backend is not None and backend not in BACKENDS:
        problems.append(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    device = doc.get("device")
    if device is not None and device not in DEVICES:
        problems.append(f"device: expected one of {list(DEVICES)}, got {device!r}")
    providers = doc.get("execution_providers")
    if providers is not None:
        if not isinstance(providers, list) or not providers or not all(isinstance(p, str) for p in providers):
            problems.append(f"execution_providers: expected a non-empty list of names, got {providers!r}")
            providers = None
        else:
            for p in providers:
                if p not in KNOWN_PROVIDERS:
                    problems.append(f"execution_providers: unknown provider {p!r} "
                                    f"(known: {', '.join(KNOWN_PROVIDERS)})")
            if device == "cpu" and any(p in GPU_PROVIDERS for p in providers):
                problems.append("execution_providers: a GPU provider on a 'cpu' device")
            if device == "cuda" and providers[0] not in GPU_PROVIDERS:
                problems.append(f"execution_providers: a 'cuda' device needs a GPU provider first, "
                                f"got {providers[0]!r}")
    precision = doc.get("precision")
    if precision is not None and precision not in PRECISIONS:
        problems.append(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device == "cpu":
        problems.append("precision: fp16 needs a GPU device (ONNX Runtime's CPU provider runs fp16 slowly)")
    opset = _check_type(doc, "opset", int, problems)
    if opset is not None and not 13 <= opset <= 21:
        problems.append(f"opset: expected 13..21, got {opset}")
    dynamic_batch = _check_type(doc, "dynamic_batch", bool, problems)
    threads = _check_type(doc, "threads", int, problems)
    if threads is not None and threads < 0:
        problems.append(f"threads: expected >= 0 (0 = the runtime's default), got {threads}")
    graph_opt = doc.get("graph_optimization", "all")
    if graph_opt not in GRAPH_OPTIMIZATION:
        problems.append(f"graph_optimization: expected one of {list(GRAPH_OPTIMIZATION)}, got {graph_opt!r}")
    popts = doc.get("provider_options", {}) or {}
    if not isinstance(popts, dict) or not all(isinstance(v, dict) for v in popts.values()):
        problems.append("provider_options: expected {provider: {option: value}}")
        popts = {}
    for p in popts:
        if providers and p not in providers:
            problems.append(f"provider_options: {p!r} is not in execution_providers")
    trt = TRT_PROVIDER
    for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
        where = popts.get(trt, {}).get(key)
        if where is not None and not (isinstance(where, str) and Path(where).is_absolute()):
            problems.append(f"provider_options: {trt}.{key} must be an absolute path, got {where!r} (by "
                            "default each model's engine is cached under ~/.cache/sst-edge/tensorrt, or "
                            "$SST_EDGE_TRT_CACHE)")
    if precision == "fp16" and providers and providers[0] == trt \
            and not popts.get(trt, {}).get("trt_fp16_enable"):
        problems.append("provider_options: an fp16 TensorRT target needs "
                        "TensorrtExecutionProvider.trt_fp16_enable: true")
    if precision == "int8" and providers and providers[0] != "CPUExecutionProvider":
        problems.append("precision: int8 is implemented for the CPU provider only (dynamic MatMul/Gemm)")
    attention = doc.get("attention", "standard")
    if attention not in ATTENTION:
        problems.append(f"attention: expected one of {list(ATTENTION)}, got {attention!r}")
    elif attention == "fused" and (backend != "onnxruntime" or (providers and providers[0] == trt)):
        problems.append("attention: 'fused' is ONNX Runtime's com.microsoft MultiHeadAttention, for the CPU "
                        "and CUDA providers; TensorRT and torch targets need 'standard' (opset-17 ONNX)")
    hint = doc.get("precision_hint")
    if backend == "openvino":
        if providers and list(providers) != [OPENVINO_PROVIDER]:
            problems.append(f"execution_providers: an openvino target runs on [{OPENVINO_PROVIDER}], got "
                            f"{providers!r}")
        if precision not in (None, "fp32"):
            problems.append(f"precision: an openvino target ships the fp32 graph (its precision_hint says "
                            f"how OpenVINO runs it), got {precision!r}")
        hint = "auto" if hint is None else hint
        if hint not in PRECISION_HINTS:
            problems.append(f"precision_hint: expected one of {list(PRECISION_HINTS)}, got {hint!r}")
        if attention != "standard":
            problems.append("attention: an openvino target needs 'standard' (opset-17 ONNX)")
    else:
        if hint is not None:
            problems.append("precision_hint: only an openvino target takes one")
        if providers and OPENVINO_PROVIDER in providers:
            problems.append(f"execution_providers: {OPENVINO_PROVIDER} needs backend: openvino")
    quant = None
    if precision == "int8":
        quant = _parse_quantization(doc.get("quantization", {}) or {}, problems)
    elif doc.get("quantization"):
        problems.append(f"quantization: only an int8 target takes quantization settings, not {precision!r}")
    if problems:
        raise SSTEdgeError("invalid deployment target", source, problems)
    return Target(
        name=name, backend=backend, device=device, execution_providers=tuple(providers),
        precision=precision, opset=17 if opset is None else opset,
        dynamic_batch=True if dynamic_batch is None else dynamic_batch,
        threads=1 if threads is None else threads,
        graph_optimization=graph_opt, provider_options={k: dict(v) for k, v in popts.items()},
        quantization=quant, attention=attention, precision_hint=hint,
        description=str(doc.get("description", "")).strip(),
        source=source,
    )


def load_target(name_or_path: str | Path | Target) -> Target:
    """A target by name (export/NAME.yaml) or path; a Target passes through."""
    if isinstance(name_or_path, Target):
        return name_or_path
    path = resolve("target", name_or_path)
    doc = read_yaml(path, "target YAML")
    return parse_target(doc, str(path))
