"""Multi-head attention over already projected q, k, v: SDPA, or ORT's fused kernel in an exported graph.

PyTorch always computes it with `scaled_dot_product_attention`. Export normally traces that into plain
MatMul/Softmax/Transpose nodes (standard opset 17, what TensorRT and every runtime read). Inside
`fused_attention_export()` the exporter instead writes one `com.microsoft::MultiHeadAttention` node per
attention, ONNX Runtime's fused CPU/CUDA kernel: it drops the head-splitting Transposes and the scale Mul,
and lets int8 quantization keep only the weight MatMuls (bench/export.py measures both graphs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

ORT_DOMAIN = "com.microsoft"
_FUSED = {"on": False}


@contextlib.contextmanager
def fused_attention_export() -> Iterator[None]:
    """While tracing for export: attention becomes one com.microsoft MultiHeadAttention node."""
    before = _FUSED["on"]
    _FUSED["on"] = True
    try:
        yield
    finally:
        _FUSED["on"] = before


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, s, width = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, s, heads, -1).transpose(1, 2)  # -1: no int64 Div in the graph (TensorRT)

    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, s, width)


class _MultiHeadAttention(torch.autograd.Function):
    """SDPA when run; ORT's MultiHeadAttention (same math: softmax(q k^T / sqrt(d)) v) when exported."""

    @staticmethod
    def forward(ctx: object, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        return _sdpa(q, k, v, heads)

    @staticmethod
    def symbolic(g: object, q: object, k: object, v: object, heads: int) -> object:
        out = g.op(f"{ORT_DOMAIN}::MultiHeadAttention", q, k, v, num_heads_i=heads)  # type: ignore[attr-defined]
        out.setType(q.type())  # same shape and type as q: the exporter's shape inference needs no schema
        return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """q, k, v: [batch, seq, heads * head_dim] -> [batch, seq, heads * head_dim]. `heads` must be a
    Python int (from a weight's shape, not a traced size) so the exported node carries it as a constant."""
    if _FUSED["on"] and torch.onnx.is_in_onnx_export():
        return _MultiHeadAttention.apply(q, k, v, heads)
    return _sdpa(q, k, v, heads)
