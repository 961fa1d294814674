"""TensorRT: what an exported graph needs, checked statically on any machine.

TensorRT cannot build engines without an NVIDIA GPU, so every export checks here what the ONNX parser of
TensorRT >= 8.6 (JetPack 6) would need: every op in its support matrix, static shapes apart from the batch,
and no int64 arithmetic on the hot path. The engine sst-edge runs is built by ONNX Runtime's TensorRT
provider (device/session.py, `tensorrt_options`: fp16 with LayerNorm's Pow/ReduceMean in fp32, cached per
model), the same on TensorRT 8.6 and 10.x since ONNX Runtime builds it. `trtexec_command` is for a
standalone engine for other runtimes (DeepStream); sst-edge does not load such a file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

# ONNX operators that the TensorRT ONNX parser supports (onnx-tensorrt's support matrix; LayerNormalization
# from TensorRT 8.6). Only plain ONNX-domain ops: com.microsoft fusions are ONNX Runtime's, not TensorRT's.
TRT_SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear
Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GRU HardSigmoid Identity If
ImageScaler InstanceNormalization IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax
Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg Not Or Pad ParametricSoftplus
Pow PRelu QuantizeLinear RandomUniform RandomUniformLike Range ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax
Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose
Unsqueeze Upsample Where Xor
""".split())  # noqa: SIM905
# Ops that compute on shapes are fine in int64 (TensorRT casts shape tensors); arithmetic ops are not.
_INT64_ARITHMETIC = frozenset({"Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "Pow", "Mod"})


@dataclass
class TrtReport:
    ok: bool
    ops: dict[str, int]
    unsupported: list[str] = field(default_factory=list)
    dynamic_dims: list[str] = field(default_factory=list)
    int64_arithmetic: list[str] = field(default_factory=list)
    trtexec: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self) -> list[str]:
        out = [f"op {op} is not in TensorRT's ONNX support matrix" for op in self.unsupported]
        out += [f"dynamic dimension {d} (only the batch axis may be dynamic)" for d in self.dynamic_dims]
        out += [f"int64 arithmetic at node {n}" for n in self.int64_arithmetic]
        return out


def _int64_tensors(model: Any) -> set[str]:

    inferred = onnx.shape_inference.infer_shapes(model)
    names = set()
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if vi.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            names.add(vi.name)
    for init in inferred.graph.initializer:
        if init.data_type == onnx.TensorProto.INT64:
            names.add(init.name)
    return names


def check_graph(path: str | Path, batch_axis_name: str = "batch") -> TrtReport:
    """Static check of an ONNX file against what TensorRT's parser takes."""

    model = onnx.load(str(path))
    ops: dict[str, int] = {}
    unsupported: set[str] = set()
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        ops[key] = ops.get(key, 0) + 1
        if key not in TRT_SUPPORTED_OPS:
            unsupported.add(key)
    dynamic = []
    for vi in [*model.graph.input, *model.graph.output]:
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            symbolic = d.dim_param or not d.HasField("dim_value")
            if symbolic and not (axis == 0 and d.dim_param == batch_axis_name):
                dynamic.append(f"{vi.name}[{axis}]")
    int64 = _int64_tensors(model)
    arithmetic = [f"{n.op_type} '{n.name}'" for n in model.graph.node
                  if n.op_type in _INT64_ARITHMETIC and any(i in int64 for i in n.input)
                  and not _is_shape_math(n, model)]
    report = TrtReport(ok=not unsupported and not dynamic and not arithmetic, ops=dict(sorted(ops.items())),
                       unsupported=sorted(unsupported), dynamic_dims=dynamic, int64_arithmetic=arithmetic)
    return report


def _is_shape_math(node: Any, model: Any) -> bool:
    """Shape computations (Shape -> Gather -> Mul -> Reshape) are int64 by ONNX's rules and TensorRT folds
    them at build time with a fixed batch profile: they are not on the hot path."""
    consumers = {o: [n for n in model.graph.node if o in n.input] for o in node.output}
    shape_sinks = {"Reshape", "Expand", "ConstantOfShape", "Unsqueeze", "Concat", "Slice", "Range", "Tile"}
    return all(c.op_type in shape_sinks or c.op_type in _INT64_ARITHMETIC
               for cs in consumers.values() for c in cs)


def trtexec_command(onnx_path: str, engine_path: str, input_shape: tuple[int, ...], fp16: bool = True,
                    max_batch: int = 8, input_name: str = "input") -> str:
    """The command that builds a standalone engine on a Jetson (or any machine with TensorRT and a GPU),
    for runtimes other than sst-edge's. fp16 there is TensorRT's own mix: trtexec's --layerPrecisions takes
    layer names (or "*" for all), not patterns, so the LayerNorm protection of `tensorrt_options` is not
    expressible here; check such an engine's features before trusting it."""
    shape = "x".join(str(s) for s in input_shape[1:])
    cmd = [
        "/usr/src/tensorrt/bin/trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
        f"--minShapes={input_name}:1x{shape}", f"--optShapes={input_name}:1x{shape}",
        f"--maxShapes={input_name}:{max_batch}x{shape}",
    ]
    if fp16:
        cmd += ["--fp16"]
    return " ".join(cmd)
