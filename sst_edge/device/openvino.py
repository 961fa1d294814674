"""OpenVINO for the device half: the runtime Intel CPUs (and iGPUs) deploy with, behind the same session
interface as ONNX Runtime's, so profiling, export checks and the runtime run an OpenVINO model the way
they run an ONNX Runtime one. No torch.

Why the OpenVINO runtime itself and not ONNX Runtime's OpenVINO execution provider: `onnxruntime-openvino`
installs the same `onnxruntime` module as the `onnxruntime` wheel (the two cannot live in one install, and
the [cpu] extra needs the latter), and it lags OpenVINO's releases; the bench that chose it is in
bench/export.py (docs/benchmarks.md).

The model file is the target's ONNX file, read by OpenVINO's ONNX frontend: the card's sha256 covers
exactly what OpenVINO compiles, and nothing is converted at export. The precision is a compile-time hint
(`INFERENCE_PRECISION_HINT`): `bf16` runs the MatMuls and convolutions in bf16 on CPUs that multiply bf16
natively (AMX, AVX512-BF16) and keeps fp32 elsewhere in the graph where OpenVINO needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import SSTEdgeError

PROVIDER = "OpenVINO:CPU"  # a target's execution provider: OpenVINO's CPU plugin
PROVIDERS = (PROVIDER,)
HINTS = ("fp32", "bf16")
_OV_HINT = {"fp32": "f32", "bf16": "bf16"}
INSTALL_ADVICE = "install OpenVINO: `pip install 'sst-edge[openvino]'`"


def openvino() -> ModuleType:
    """The openvino module; an SSTEdgeError saying what to install when it is missing."""
    try:
        import openvino as ov  # optional extra ([openvino]): named if missing
    except ImportError as e:
        raise SSTEdgeError(f"OpenVINO is not installed ({e}): {INSTALL_ADVICE}") from None
    return ov


@cache
def _core() -> Any:
    return openvino().Core()


def available() -> bool:
    """True when the openvino module imports and has a CPU device."""
    try:
        return "CPU" in _core().available_devices
    except SSTEdgeError:
        return False


def version() -> str:
    return str(openvino().__version__).split("-")[0]


def native_bf16() -> bool:
    """True when OpenVINO's CPU plugin can run bf16 on this CPU (its capability list says BF16)."""
    try:
        return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except SSTEdgeError:
        return False


def default_hint() -> str:
    """`auto` without a measurement: bf16 where the CPU multiplies it natively, else fp32."""
    return "bf16" if native_bf16() else "fp32"


def resolve_hint(hint: str | None) -> str:
    """A target's or card's `precision_hint` as this machine runs it: `auto` (or none) by capability, and
    bf16 on a CPU without it is fp32 (OpenVINO would emulate it, slower than fp32)."""
    if hint in (None, "auto"):
        return default_hint()
    if hint not in HINTS:
        raise SSTEdgeError(f"unknown OpenVINO precision hint {hint!r} (known: auto, {', '.join(HINTS)})")
    return "fp32" if hint == "bf16" and not native_bf16() else hint


@dataclass(frozen=True)
class Port:
    """An input or output as ONNX Runtime's NodeArg shows it: name, shape (None: dynamic), type."""

    name: str
    shape: list[int | None]
    type: str


_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "f64": "tensor(double)", "i64": "tensor(int64)",
          "i32": "tensor(int32)", "u8": "tensor(uint8)", "i8": "tensor(int8)", "boolean": "tensor(bool)"}


def _port(p: Any) -> Port:
    shape = [d.get_length() if d.is_static else None for d in p.get_partial_shape()]
    return Port(p.get_any_name(), shape, _TYPES.get(p.get_element_type().get_type_name(),
                                                     str(p.get_element_type())))


class OpenVINOSession:
    """A compiled OpenVINO model with ONNX Runtime's session interface (`run`, `get_inputs`,
    `get_outputs`, `get_providers`): one synchronous infer request, `threads` inference threads (0: all),
    one stream, the latency hint, and the precision `hint` (fp32 or bf16, already resolved).

    A dynamic batch axis is compiled as a batch of 1 and a batch runs clip by clip: OpenVINO's CPU plugin
    is 13-16% faster on a static shape (bf16 and fp32, sst_paper's paper-cost subnet, one thread), and on
    one thread a batch buys nothing. The ports still show the file's own (dynamic) shapes, which the card
    is checked against."""

    def __init__(self, path: str | Path, threads: int = 1, hint: str = "fp32"):
        if hint not in HINTS:
            raise SSTEdgeError(f"unknown OpenVINO precision hint {hint!r} (known: {', '.join(HINTS)})", path)
        config: dict[str, Any] = {"NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                                  "INFERENCE_PRECISION_HINT": _OV_HINT[hint]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = _core()
        try:
            model = core.read_model(str(path))
            self._inputs = [_port(p) for p in model.inputs]
            self._outputs = [_port(p) for p in model.outputs]
            self.per_clip = len(model.inputs) == 1 and bool(self._inputs[0].shape) \
                and self._inputs[0].shape[0] is None and all(d is not None for d in self._inputs[0].shape[1:])
            if self.per_clip:
                model.reshape({model.inputs[0]: [1, *self._inputs[0].shape[1:]]})
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
            raise SSTEdgeError(f"OpenVINO cannot load this model: {str(e).strip().splitlines()[0]}",
                               path) from None
        self.hint = hint
        self.threads = threads
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self._request = self.compiled.create_infer_request()

    def get_inputs(self) -> list[Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[Port]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [f"{PROVIDER} ({self.hint})"]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return [np.array(result[p], copy=True) for p in self.compiled.outputs]  # the request reuses buffers

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs (all, or those named), as fresh numpy arrays."""
        if self.per_clip:
            ((name, x),) = feeds.items()
            parts = [self._infer({name: x[i:i + 1]}) for i in range(len(x))]
            outs = [np.concatenate([p[j] for p in parts]) if parts else
                    np.zeros((0, *[d or 0 for d in self._outputs[j].shape[1:]]), np.float32)
                    for j in range(len(self._outputs))]
        else:
            outs = self._infer(feeds)
        names = [p.name for p in self._outputs] if output_names is None else list(output_names)
        index = {p.name: i for i, p in enumerate(self._outputs)}
        return [outs[index[n]] for n in names]


def record(hint: str, asked: str, why: str, evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card's `openvino` section: the version, the device, the precision hint and why it was chosen."""
    rec: dict[str, Any] = {"version": version(), "device": "CPU", "precision_hint": hint, "asked": asked,
                           "why": why}
    if evidence:
        rec["evidence"] = evidence
    return rec
