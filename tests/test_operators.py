"""The operators of issue 16 (tps, tam, msq) against independent implementations, and downstream.

Each op is checked against a brute-force loop written here from the papers' descriptions (not the code
under test): the patch and channel shifts element by element, TPS attention as explicit softmax(QK^T)V
with the block's weights, TAM as a loop over t, MotionSqueeze's correlation, window, Gaussian
soft-argmax and confidence by loops over tokens and displacements. Then: FLOPs formulas vs fvcore, the
NNI space and supernet, latency-table rows, export parity and the TensorRT op list. sst_plus_tiny, tiny
shapes (about 20 s on 2 cores).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sst_edge.cost.flops import fvcore_cost, predicted_cost, subnet_cost
from sst_edge.cost.latency import LatencyTable, StageEntry, missing_entries
from sst_edge.cost.parts import stage_block_keys
from sst_edge.device.timing import Timing
from sst_edge.errors import SSTEdgeError
from sst_edge.space.blocks import SpaceTimeBlock
from sst_edge.space.config import load_space, parse_space
from sst_edge.space.ops import MotionSqueeze, TemporalAggregation, make_block
from sst_edge.space.shift import channel_shift, gather_tokens, patch_shift_index

# Written out here from the paper (pattern C) and our docstring (2x2, below 9 frames).
PATTERN_C = [[-4, 1, 2], [-1, 0, 3], [-2, -3, 4]]
PATTERN_2 = [[0, 1], [-1, 2]]


@pytest.fixture(scope="module")
def plus():
    return load_space("sst_plus_tiny")


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ spaces
def test_old_spaces_keep_their_hash_and_new_ones_say_which_ops_where(plus) -> None:
    assert load_space("sst_tiny").hash == "9e95b30cb538962a"
    assert load_space("sst_paper").hash == "226fde1d1e901b42"
    ch = plus.choices()
    assert ch["s1_l1_op"] == ["tam", "msq", "tab", "sab", "tps"]  # cheapest first: NNI's default sample
    assert ch["s1_l2_op"] == ch["s2_l3_op"] == ["tam", "tab", "sab", "tps"]
    assert ch["s3_l1_op"] == ["tam", "tab", "sab"]
    assert plus.stage_ops(1) == ("tab", "sab", "tps", "tam", "msq")
    full = load_space("sst_plus").choices()
    assert "msq" in full["s2_l1_op"] and "msq" not in full["s2_l2_op"] and "tps" in full["s3_l8_op"]


def test_bad_stage_ops_are_named() -> None:
    doc = {"name": "x", "input": {"frames": 4, "size": 64}, "patch_embed": {"channels": [8, 8, 8, 8]},
           "choices": {"ops": ["tab"], "heads": [2]},
           "stages": [{"channels": 8, "depth": 2, "ops": ["sab", "conv"], "layer_ops": {3: ["tam"]}}]}
    with pytest.raises(SSTEdgeError) as e:
        parse_space(doc)
    assert "stages[1].ops" in str(e.value.problems) and "layer 3 is not in 1..2" in str(e.value.problems)


# --------------------------------------------------------------------------------------------- tps
@pytest.mark.parametrize(("frames", "grid", "pattern"), [(4, 4, PATTERN_2), (8, 2, PATTERN_2),
                                                          (9, 3, PATTERN_C), (10, 5, PATTERN_C)])
def test_patch_shift_is_the_mosaic(frames: int, grid: int, pattern: list) -> None:
    x = _rand(2, frames, grid * grid, 3)
    got = gather_tokens(x, patch_shift_index(frames, grid), frames, grid * grid, 3)
    back = gather_tokens(got, patch_shift_index(frames, grid, inverse=True), frames, grid * grid, 3)
    p = len(pattern)
    want = torch.empty_like(x)
    for t in range(frames):
        for h in range(grid):
            for w in range(grid):
                want[:, t, h * grid + w] = x[:, (t + pattern[h % p][w % p]) % frames, h * grid + w]
    assert torch.equal(got, want)
    assert torch.equal(back, x)


def _tsm_loop(x: torch.Tensor, fold: int) -> torch.Tensor:
    """TSM by hand: channels [0, fold) from frame t-1, [fold, 2 fold) from t+1, zeros past the ends."""
    t_len = x.shape[1]
    want = x.clone()
    for t in range(t_len):
        for c in range(fold):
            want[:, t, :, c] = x[:, t - 1, :, c] if t > 0 else 0.0
            want[:, t, :, fold + c] = x[:, t + 1, :, fold + c] if t < t_len - 1 else 0.0
    return want


def test_channel_shift_is_tsm() -> None:
    x = _rand(2, 4, 3, 16)
    assert torch.equal(channel_shift(x, 2), _tsm_loop(x, 2))


def _attention(block: SpaceTimeBlock, h: torch.Tensor) -> torch.Tensor:
    """Per-frame multi-head attention written out: softmax(q k^T / sqrt(d)) v, then the projection."""
    b, t, n, _ = h.shape
    d = block.head_dim
    q, k, v = (lin(h).reshape(b, t, n, -1, d) for lin in (block.q, block.k, block.v))
    out = torch.empty_like(q)
    for i in range(q.shape[3]):
        a = torch.softmax(q[..., i, :] @ k[..., i, :].transpose(-1, -2) / math.sqrt(d), dim=-1)
        out[..., i, :] = a @ v[..., i, :]
    return block.proj(out.reshape(b, t, n, -1))


@pytest.mark.parametrize("layer", [1, 2])
def test_tps_block_is_shifted_attention(layer: int) -> None:
    torch.manual_seed(0)
    frames, grid = 4, 4
    block = SpaceTimeBlock(16, 2, 8, 2.0, "tps", frames, grid, layer).eval()
    x = _rand(2, frames, grid * grid, 16, seed=1)
    with torch.no_grad():
        h = block.norm1(x)
        if layer == 1:  # patch shift, attention, shift back
            src = [[(t + PATTERN_2[i // grid % 2][i % grid % 2]) % frames for i in range(grid * grid)]
                   for t in range(frames)]
            shifted = torch.stack([torch.stack([h[:, src[t][i], i] for i in range(grid * grid)], 1)
                                   for t in range(frames)], 1)
            a = _attention(block, shifted)
            back = torch.empty_like(a)
            for t in range(frames):
                for i in range(grid * grid):
                    back[:, src[t][i], i] = a[:, t, i]
        else:
            back = _attention(block, _tsm_loop(h, 2))  # 16 channels: 1/8 = 2 each way
        y = x + back
        want = y + block.fc2(F.gelu(block.fc1(block.norm2(y))))
        got = block(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- tam
def test_tam_is_a_weighted_sum_over_neighbouring_frames() -> None:
    torch.manual_seed(0)
    block = TemporalAggregation(6, 2.0).eval()
    with torch.no_grad():
        block.aggregate.weight.normal_()
    h = _rand(2, 5, 3, 6)
    w = block.aggregate.weight.detach()[:, 0, :, 0]  # [C, 3]: offsets -1, 0, +1
    want = torch.zeros_like(h)
    for t in range(5):
        acc = torch.zeros_like(h[:, 0])
        for j, k in enumerate((-1, 0, 1)):
            if 0 <= t + k < 5:
                acc += w[:, j] * h[:, t + k]
        want[:, t] = torch.relu(acc)
    with torch.no_grad():
        torch.testing.assert_close(block.mix(h), want, atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------------------------- msq
@pytest.mark.parametrize("temperature", [100.0, 1.0])  # the paper's, and one where the Gaussian shows
def test_msq_motion_features_by_loops(temperature: float) -> None:
    torch.manual_seed(0)
    frames, grid = 3, 4
    block = MotionSqueeze(8, 2.0, frames, grid, temperature=temperature).eval()
    h = _rand(1, frames, grid * grid, 8, seed=2)
    with torch.no_grad():
        got = block.motion(h)
        f = block.reduce(h)[0].numpy().astype(np.float64)
    f /= np.sqrt((f * f).sum(-1, keepdims=True) + 1e-6)
    r = 1  # (4 + 2) // 4: a 3x3 window at a 4x4 grid
    sigma = 5 * r / 7
    want = np.zeros((frames, grid * grid, 3))
    for t in range(frames - 1):
        for p in range(grid * grid):
            py, px = divmod(p, grid)
            window = [(q, qx - px, qy - py) for q in range(grid * grid) for qy, qx in [divmod(q, grid)]
                      if abs(qx - px) <= r and abs(qy - py) <= r]
            corr = {q: float(f[t, p] @ f[t + 1, q]) for q, _, _ in window}
            best = max(corr, key=corr.get)
            by, bx = divmod(best, grid)
            logits = {q: max(corr[q], 0.0) * math.exp(-((q % grid - bx) ** 2 + (q // grid - by) ** 2)
                                                      / (2 * sigma ** 2)) * temperature for q, _, _ in window}
            z = sum(math.exp(v - max(logits.values())) for v in logits.values())
            prob = {q: math.exp(v - max(logits.values())) / z for q, v in logits.items()}
            u = sum(prob[q] * dx for q, dx, _ in window) / r
            v = sum(prob[q] * dy for q, _, dy in window) / r
            want[t, p] = (u, v, max(corr[best], 0.0))
    want[frames - 1] = want[frames - 2]  # the last pair's features, repeated to keep T
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-4)


def test_msq_finds_a_translation() -> None:
    """Frame t+1 is frame t moved one token right: the soft-argmax says u ~ +1/r, v ~ 0 inside."""
    block = MotionSqueeze(8, 2.0, 2, 4).eval()
    with torch.no_grad():  # reduce keeps the first two input channels
        block.reduce.weight.zero_()
        block.reduce.weight[0, 0] = block.reduce.weight[1, 1] = 1.0
        block.reduce.bias.zero_()
    angle = torch.arange(16, dtype=torch.float32)  # distinct unit features per token
    feat = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    f0 = torch.zeros(16, 8)
    f0[:, :2] = feat
    f1 = torch.zeros(16, 8)
    f1[::4, 2] = 1.0  # column x = 0 of frame t+1: a channel reduce drops (no match for anyone)
    for i in range(16):
        y, x = divmod(i, 4)
        if x < 3:
            f1[y * 4 + x + 1, :2] = feat[i]
    h = torch.stack([f0, f1])[None]  # reduce sees exactly these features
    with torch.no_grad():
        m = block.motion(h)[0, 0]
    inner = [y * 4 + x for y in range(4) for x in range(3)]
    assert torch.allclose(m[inner, 0], torch.ones(len(inner)), atol=0.05)
    assert torch.allclose(m[inner, 1], torch.zeros(len(inner)), atol=0.05)
    assert torch.allclose(m[inner, 2], torch.ones(len(inner)), atol=1e-3)


# ------------------------------------------------------------------------------------- FLOPs, NNI
@pytest.mark.parametrize("op", ["tps", "tam", "msq"])
def test_block_flops_formula_equals_fvcore(op: str) -> None:
    frames, grid, dim = 4, 4, 32
    block = make_block(op, dim, 6, 8, 2.0, frames, grid, 1)
    shape = (1, frames, grid * grid, dim)
    formula = block._count_flops((shape,), shape)
    ref = fvcore_cost(block, shape)
    assert formula.flops == ref.flops and formula.params == ref.params
    if op == "tam":  # by hand: 2 LayerNorms, 3 taps per channel, the MLP (ratio 2)
        t_n = frames * grid * grid
        assert ref.flops == 2 * 5 * t_n * dim + 3 * t_n * dim + 2 * t_n * dim * 2 * dim


def test_space_expression_equals_fvcore_and_supernet_runs_every_op(plus) -> None:
    from sst_edge.space.supernet import activate, build_supernet, freeze_subnet, supernet_choices

    ops = ["msq", "tps", "tam", "tps", "sab", "tab", "tam", "tab", "sab"]  # s1_l2: channel-shift tps
    sample = {}
    for (s, l), op in zip(plus.layers(), ops, strict=True):
        sample[f"s{s}_l{l}_op"], sample[f"s{s}_l{l}_heads"] = op, 12
    ref, expr = subnet_cost(plus, sample), predicted_cost(plus, sample)
    assert (ref.flops, ref.params) == (expr.flops, expr.params)
    supernet = build_supernet(plus)
    assert supernet_choices(supernet)["s1_l1_op"] == plus.choices()["s1_l1_op"]
    x = _rand(*plus.input_shape(2))
    for s in (sample, dict(sample, s1_l1_op="tps", s2_l1_op="msq", s3_l1_op="sab")):
        activate(supernet, plus, s)
        supernet.eval()
        with torch.no_grad():
            a = supernet(x)
            b = freeze_subnet(supernet, plus, s).eval()(x)
        assert a.shape == (2, plus.frames, plus.out_channels) and torch.equal(a, b)
    with pytest.raises(SSTEdgeError, match="s1_l2_op"):
        activate(supernet, plus, dict(sample, s1_l2_op="msq"))  # msq is not offered at layer 2


# ----------------------------------------------------------------------------------- latency table
def test_table_rows_per_stage_op_heads(plus) -> None:
    """Headless ops are one part per stage, filed under every heads value; a budget narrows per layer."""
    keys = {k for s in (1, 2, 3) for _, _, k in stage_block_keys(plus, s)}
    assert {"s1.tam", "s1.msq", "s2.msq", "s3.tam", "s1.tps.h16"} <= keys
    assert "s3.msq" not in keys and not any(k.startswith("s3.tps") for k in keys)
    ms = {}
    stages = []
    for s, st in enumerate(plus.stages, 1):
        blocks: dict = {}
        part_ms: dict[str, float] = {}  # one timing per part, as profiling has
        for op, h, key in stage_block_keys(plus, s):
            v = part_ms.setdefault(key, float(len(part_ms) + 1))
            blocks.setdefault(op, {})[h] = Timing(v, v, v, 1)
            ms[(s, op, h)] = v
        stages.append(StageEntry(s, st.depth, [1], blocks))
    table = LatencyTable("sst_plus_tiny", plus.hash, {"name": "x"}, "onnxruntime", "now", {}, {},
                         {"embed": ([1], Timing(2, 2, 2, 1))}, stages)
    assert len({k for op, _, k in stage_block_keys(plus, 1) if op == "tam"}) == 1  # timed once
    assert missing_entries(table, plus) == [f"fixed part {k}" for k in ("downsample2", "downsample3", "head")]
    sample = {k: (v[-1] if k.endswith("_op") else 6) for k, v in plus.choices().items()}
    want = 2 + sum(ms[(s, sample[f"s{s}_l{l}_op"], 6)] for s, l in plus.layers())
    assert table.predict_ms(sample) == want
    layers = {k: v for k, v in plus.choices().items() if k.endswith("_op")}
    expr = table.expression(restriction=layers)
    assert expr.freeze(sample) == want
    assert {m.label: m.values for m in expr.leaf_mutables(lambda _: True)}["s1_l2_op"] == layers["s1_l2_op"]


# --------------------------------------------------------------------------------- export, TensorRT
@pytest.mark.parametrize(("op", "layer"), [("tps", 1), ("tps", 2), ("tam", 1), ("msq", 1)])
def test_block_exports_with_parity_and_tensorrt_ops(plus, tmp_path, op: str, layer: int) -> None:
    """Each op as a stage-1 block of sst_plus_tiny: ORT output within 1e-4 of PyTorch at batch 1 and 2
    (dynamic batch), and every ONNX op one TensorRT's parser takes, with static T, N, C."""
    import onnx

    from sst_edge.cost.onnx_export import export_onnx
    from sst_edge.deploy.tensorrt import check_graph
    from sst_edge.device.session import make_session
    from sst_edge.device.targets import load_target

    torch.manual_seed(0)
    st = plus.stages[0]
    block = make_block(op, st.channels, 6, st.head_dim, plus.mlp_ratio, plus.frames, 4, layer).eval()
    path = export_onnx(block, _rand(1, plus.frames, 16, st.channels, seed=3), tmp_path / f"{op}.onnx")
    report = check_graph(path)
    assert report.ok, report.problems()
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "ScatterND" not in ops
    assert {"tps": "Gather" if layer == 1 else "Pad", "tam": "Conv", "msq": "ArgMax"}[op] in ops
    session = make_session(path, load_target("cpu-fp32"))
    x = _rand(2, plus.frames, 16, st.channels, seed=4)
    with torch.no_grad():
        ref = block(x).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], ref, atol=1e-4, rtol=0)


def test_random_subnets_cover_the_new_ops(plus) -> None:
    from sst_edge.space.supernet import random_sample

    rng = random.Random(0)
    seen = {v for _ in range(30) for k, v in random_sample(plus, rng).items() if k.endswith("_op")}
    assert seen == {"tab", "sab", "tps", "tam", "msq"}
