"""big_little (bLVNet's big-little split as a per-stage structure label) in sst_plus_bl_tiny / sst_plus_bl.

The stage's forward is checked against a second implementation written here (loops over frame pairs and
2x2 token cells, not the reshapes under test); then NNI (labels, nested LayerChoice in the one-shot
supernet and freeze), FLOPs (fvcore vs NNI's expression), latency-table rows and prediction, shrinking's
costs, subnet documents, export parity and the TensorRT op check. Tiny shapes: seconds each.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sst_edge.cost.flops import extreme_sample, predicted_cost, subnet_cost
from sst_edge.cost.latency import LatencyTable, StageEntry, missing_entries, read_table
from sst_edge.cost.parts import space_parts, stage_block_keys
from sst_edge.device.timing import Timing
from sst_edge.errors import SSTEdgeError
from sst_edge.space.big_little import BigLittleStage, little_depth, little_heads
from sst_edge.space.config import load_space, parse_space, structure_label
from sst_edge.space.model import SSTSpace
from sst_edge.space.subnet import make_subnet, sample_problems
from sst_edge.space.supernet import (
    activate,
    build_supernet,
    freeze_subnet,
    load_shared_weights,
    random_sample,
)


@pytest.fixture(scope="module")
def bl():
    return load_space("sst_plus_bl_tiny")


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _sample(config, structures: dict[int, str], ops: list[str] | None = None, heads: int = 12) -> dict:
    """Every layer's op from `ops` (cycled over what the layer allows), the given structures."""
    out = {}
    ops = ops or ["tab"]
    for i, (s, l) in enumerate(config.layers()):
        allowed = config.layer_ops(s, l)
        want = ops[i % len(ops)]
        if l == 1 and config.structures(s):
            out[structure_label(s)] = structures.get(s, "plain")
        out[f"s{s}_l{l}_op"] = want if want in allowed else allowed[-1]
        out[f"s{s}_l{l}_heads"] = heads
    return out


# ------------------------------------------------------------------------------------- labels, YAML
def test_labels_first_value_and_old_hashes(bl) -> None:
    assert structure_label(2) == "s2_structure"
    ch = bl.choices()
    assert ch["s1_structure"] == ch["s2_structure"] == ["big_little", "plain"]  # cheapest first
    assert "s3_structure" not in ch  # 1x1 grid: plain only, no label
    assert list(ch)[:2] == ["s1_structure", "s1_l1_op"] and list(SSTSpace(bl).simplify()) == bl.labels()
    paper = load_space("sst_plus_bl").choices()
    assert "s1_structure" in paper and "s2_structure" not in paper and "s3_structure" in paper  # 7x7 is odd
    # Spaces that predate structures keep their hashes (subnets, weights and tables made for them).
    assert load_space("sst_tiny").hash == "9e95b30cb538962a"
    assert load_space("sst_paper").hash == "226fde1d1e901b42"
    assert load_space("sst_plus").hash == "ff00ad2deee3101f"
    assert load_space("sst_plus_tiny").hash == "c3fb8fd7966522de"
    # NNI's default sample (first values) is the cheapest structure.
    first = {k: v[0] for k, v in ch.items()}
    assert predicted_cost(bl, first).flops < predicted_cost(bl, {**first, "s1_structure": "plain"}).flops


def _doc(frames: int = 4, size: int = 64, structures: object = ("big_little", "plain"), ops=("tab", "msq")):
    return {"name": "x", "input": {"frames": frames, "size": size}, "patch_embed": {"channels": [8, 8, 8, 8]},
            "choices": {"ops": list(ops), "heads": [2]},
            "stages": [{"channels": 8, "depth": 2, "structures": list(structures)},
                       {"channels": 8, "depth": 2}]}


def test_validation_names_every_problem() -> None:
    plain_only = parse_space({**_doc(), "stages": [{"channels": 8, "depth": 2, "structures": ["plain"]},
                                                   {"channels": 8, "depth": 2}]})
    assert plain_only.hash == parse_space({**_doc(), "stages": [{"channels": 8, "depth": 2},
                                                                {"channels": 8, "depth": 2}]}).hash
    assert not plain_only.choices().get("s1_structure")
    with pytest.raises(SSTEdgeError) as e:
        parse_space(_doc(frames=3))
    assert any("even number of frames" in p and "3" in p for p in e.value.problems)
    with pytest.raises(SSTEdgeError) as e:
        parse_space(_doc(size=48))  # 3x3 tokens
    assert any("even token grid" in p and "3x3" in p for p in e.value.problems)
    with pytest.raises(SSTEdgeError) as e:
        parse_space(_doc(frames=2, size=16))  # 1x1 tokens, and msq on 1 big frame: both named
    assert len(e.value.problems) == 2 and any("msq" in p for p in e.value.problems)
    with pytest.raises(SSTEdgeError) as e:
        parse_space(_doc(structures=["big_little", "huge"]))
    assert "stages[1].structures" in str(e.value.problems)


# ---------------------------------------------------------------------------------- the forward pass
def _reference_stage(stage: BigLittleStage, x: torch.Tensor, grid: int) -> torch.Tensor:
    """bLVNet's split written out: loops over frame pairs (frame 2i even -> little, 2i+1 odd -> big) and
    over 2x2 token cells; the branches' blocks are the stage's own modules."""
    b, t, n, c = x.shape
    h = grid // 2
    odd_pooled = torch.zeros(b, t // 2, h * h, c)
    for i in range(t // 2):
        frame = x[:, 2 * i + 1]
        for r in range(h):
            for q in range(h):
                cell = [(2 * r + dr) * grid + 2 * q + dq for dr in (0, 1) for dq in (0, 1)]
                odd_pooled[:, i, r * h + q] = frame[:, cell].sum(1) / 4
    big = stage.big(odd_pooled)
    merge = stage.merge
    even = torch.stack([x[:, 2 * i] for i in range(t // 2)], dim=1)
    little = merge.up(merge.little(merge.down(even)))
    up = torch.zeros(b, t // 2, n, c)
    for p in range(n):
        up[:, :, p] = big[:, :, (p // grid // 2) * h + (p % grid) // 2]
    fused = merge.fusion(up + little)
    out = torch.zeros(b, t, n, c)
    for i in range(t // 2):
        out[:, 2 * i] = out[:, 2 * i + 1] = fused[:, i]
    return out


@pytest.mark.parametrize("ops", [["tab", "sab", "tam"], ["msq", "tps", "tps"]])
def test_big_little_stage_equals_reference_forward(bl, ops) -> None:
    torch.manual_seed(0)
    sample = _sample(bl, {1: "big_little", 2: "big_little"}, ops)
    model = SSTSpace(bl).freeze(sample).eval()
    for s, grid in ((1, 4), (2, 2)):
        stage = model.stages[s - 1]
        assert isinstance(stage, BigLittleStage)
        st = bl.stages[s - 1]
        assert [blk.mode for blk in stage.big] == [sample[f"s{s}_l{l}_op"] for l in (1, 2, 3)]
        assert len(stage.merge.little) == little_depth(st.depth) == 1  # max(1, 3 // 4 - 1)
        assert stage.merge.little[0].q.out_features == little_heads(st.channels, st.head_dim) * st.head_dim
        assert stage.merge.down.out_features == st.channels // 2
        x = _rand(2, bl.frames, grid * grid, st.channels, seed=s)
        with torch.no_grad():
            got, want = stage(x), _reference_stage(stage, x, grid)
        assert got.shape == x.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        assert torch.equal(got[:, 0], got[:, 1]) and not torch.equal(got[:, 1], got[:, 2])
    with torch.no_grad():
        assert model(_rand(2, *bl.input_shape(1)[1:])).shape == (2, bl.frames, bl.out_channels)


# ----------------------------------------------------------------------------------- NNI, weights
def test_supernet_freeze_and_weight_sharing(bl) -> None:
    supernet = build_supernet(bl).eval()
    x = _rand(2, *bl.input_shape(1)[1:], seed=5)
    rng = random.Random(1)
    samples = [_sample(bl, {1: "big_little", 2: "plain"}, ["tps", "sab", "tab"], 16),
               _sample(bl, {1: "plain", 2: "big_little"}, ["msq", "tam", "sab"], 6)]
    samples += [{**random_sample(bl, rng), "s1_structure": "big_little", "s2_structure": "big_little"}]
    for sample in samples:
        activate(supernet, bl, sample)
        sub = freeze_subnet(supernet, bl, sample).eval()
        with torch.no_grad():
            a, b = supernet(x), sub(x)
        assert torch.equal(a, b)
        # The frozen subnet's weights load into space.freeze of a fresh space: the same plain model.
        plain = SSTSpace(bl).freeze(sample).eval()
        plain.load_state_dict(sub.state_dict())
        with torch.no_grad():
            assert torch.equal(plain(x), b)
        # One sample decides the big branch's blocks too (the same op and heads labels).
        stage = sub.stages[1] if sample["s2_structure"] == "big_little" else sub.stages[0]
        s = 2 if stage is sub.stages[1] else 1
        assert stage.big[0].mode == sample[f"s{s}_l1_op"]
        if sample[f"s{s}_l2_op"] in ("tab", "sab", "tps"):
            assert stage.big[1].q.out_features == sample[f"s{s}_l2_heads"] * bl.stages[s - 1].head_dim
    with pytest.raises(SSTEdgeError, match="s1_structure"):
        activate(supernet, bl, {k: v for k, v in samples[0].items() if k != "s1_structure"})
    # A supernet restricted to one structure takes the full supernet's weights (shrinking's restart).
    narrow = build_supernet(bl, {"s1_structure": ["big_little"]})
    assert load_shared_weights(narrow, supernet.state_dict()) == []


# ------------------------------------------------------------------------------------------- FLOPs
def test_fvcore_equals_nni_expression(bl) -> None:
    rng = random.Random(3)
    samples = [_sample(bl, {1: "big_little", 2: "big_little"}, ["msq", "tps", "tab", "sab", "tam"]),
               _sample(bl, {1: "big_little", 2: "plain"}, ["tps", "tab"], 16),
               {**random_sample(bl, rng), "s1_structure": "plain", "s2_structure": "big_little"},
               extreme_sample(bl), extreme_sample(bl, largest=True)]
    for sample in samples:
        ref, expr = subnet_cost(bl, sample), predicted_cost(bl, sample)
        assert (ref.flops, ref.params) == (expr.flops, expr.params), sample
    assert extreme_sample(bl)["s1_structure"] == "big_little"
    assert extreme_sample(bl, largest=True)["s1_structure"] == "plain"
    # big_little is cheaper than plain for the same layer choices (bLVNet's point).
    for s in (1, 2):
        heavy = _sample(bl, {}, ["tab"], 16)
        assert predicted_cost(bl, {**heavy, structure_label(s): "big_little"}).flops < \
            predicted_cost(bl, heavy).flops


def test_paper_scale_space_fvcore_equals_expression() -> None:
    """sst_plus_bl (8 frames of 224x224): big_little in stages 1 (14x14 -> 7x7 big) and 3 (4x4 -> 2x2)."""
    paper = load_space("sst_plus_bl")
    sample = _sample(paper, {1: "big_little", 3: "big_little"}, ["msq", "tps", "sab", "tab", "tam"], 16)
    ref, expr = subnet_cost(paper, sample), predicted_cost(paper, sample)
    assert (ref.flops, ref.params) == (expr.flops, expr.params)
    assert expr.flops < predicted_cost(paper, {**sample, "s1_structure": "plain"}).flops


# ------------------------------------------------------------------------------------ latency table
def _table(config) -> tuple[LatencyTable, dict]:
    ms: dict = {}
    stages = []
    for s, st in enumerate(config.stages, 1):
        blocks: dict = {}
        part_ms: dict[str, float] = {}
        for op, h, key in stage_block_keys(config, s):
            v = part_ms.setdefault(key, float(len(part_ms) + 1) / 8)
            blocks.setdefault(op, {})[h] = Timing(v, v, v, 1)
            ms[(s, op, h)] = v
        stages.append(StageEntry(s, st.depth, [1], blocks))
    fixed = {k: ([1], Timing(2, 2, 2, 1)) for k in ("embed", "downsample2", "downsample3", "head")}
    return LatencyTable(config.name, config.hash, {"name": "x"}, "onnxruntime", "now", {}, {}, fixed,
                        stages), ms


def test_table_rows_and_prediction(bl) -> None:
    parts = {p.key: p for p in space_parts(bl)}
    shapes = {k: p.input_shape for k, p in parts.items()}
    assert shapes["s1.big.tab.h6"] == (1, 2, 4, 32) and shapes["s1.tab.h6"] == (1, 4, 16, 32)
    assert shapes["s2.big.msq"] == (1, 2, 1, 48) and shapes["s1.little"] == (1, 4, 16, 32)
    assert "s3.little" not in parts and not any(k.startswith("s3.big") for k in parts)
    table, ms = _table(bl)
    assert missing_entries(table, bl) == []
    sample = _sample(bl, {1: "big_little", 2: "plain"}, ["msq", "tps", "tab", "tam"], 6)
    want = 8.0 + ms[(1, "little", 6)]
    for s, l in bl.layers():
        prefix = "big." if s == 1 else ""
        want += ms[(s, prefix + sample[f"s{s}_l{l}_op"], 6)]
    assert table.predict_ms(sample) == pytest.approx(want, rel=1e-12)
    ch = bl.choices()
    expr = table.expression(restriction={k: v for k, v in ch.items() if k.endswith(("_op", "_structure"))})
    assert expr.freeze(sample) == table.predict_ms(sample)
    for s in (sample, {**sample, "s2_structure": "big_little"}, {**sample, "s1_structure": "plain"}):
        assert expr.freeze(s) == table.predict_ms(s)
    with pytest.raises(SSTEdgeError) as e:
        table.predict_ms({k: v for k, v in sample.items() if k != "s1_structure"})
    assert "missing label 's1_structure'" in e.value.problems
    del table.stages[0].blocks["little"], table.stages[0].blocks["big.tab"]
    table._reindex()
    missing = missing_entries(table, bl)
    assert "stage 1 block little/6 heads" in missing and "stage 1 block big.tab/16 heads" in missing


def test_shipped_tables_still_load_and_cover_their_spaces() -> None:
    folder = Path(__file__).resolve().parents[1] / "latency_tables"
    paths = sorted(folder.glob("*.json"))
    assert paths
    for path in paths:
        table = read_table(path)
        config = load_space(table.space)
        assert table.space_hash == config.hash and missing_entries(table, config) == []
        sample = random_sample(config, random.Random(0))
        assert table.expression().freeze(sample) == table.predict_ms(sample)


# --------------------------------------------------------------------------------------- shrinking
def test_shrink_costs_of_structures_are_the_stages_expected_cost(bl) -> None:
    """With a few labels left open, every subnet can be enumerated: the mean subnet cost is exact, and
    a structure's cost is the difference of the stage's expected cost under uniform draws."""
    from sst_edge.train.shrink import candidate_costs

    restriction = {k: v[:1] for k, v in bl.choices().items()}
    restriction.update({"s1_structure": ["big_little", "plain"], "s1_l1_op": ["tam", "tab"],
                        "s1_l1_heads": [6, 16], "s1_l2_op": ["sab", "tps"]})

    def cost(sample: dict) -> float:
        return predicted_cost(bl, sample).flops

    costs = candidate_costs(restriction, cost, "flops")
    open_labels = [k for k, v in restriction.items() if len(v) > 1]
    every = [{**{k: v[0] for k, v in restriction.items()}, **dict(zip(open_labels, combo, strict=True))}
             for combo in itertools.product(*(restriction[k] for k in open_labels))]
    flops = [cost(s) for s in every]
    assert costs.mean_subnet == pytest.approx(sum(flops) / len(flops), rel=1e-9)
    by = {v: [f for s, f in zip(every, flops, strict=True) if s["s1_structure"] == v]
          for v in ("big_little", "plain")}
    expected_gap = sum(by["plain"]) / len(by["plain"]) - sum(by["big_little"]) / len(by["big_little"])
    assert costs.extra[("s1_structure", "big_little")] == 0.0
    assert costs.extra[("s1_structure", "plain")] == pytest.approx(expected_gap, rel=1e-9)


# ------------------------------------------------------------------------------- subnet documents
def test_subnet_documents_and_trials_read_structures(bl) -> None:
    from sst_edge.search.trials import sample_of

    sample = _sample(bl, {1: "big_little"}, ["tab", "sab"], 12)
    sub = make_subnet(bl, sample)
    assert list(sub.sample)[0] == "s1_structure"
    problems = sample_problems(bl, {**{k: v for k, v in sample.items() if k != "s2_structure"},
                                    "s1_structure": "huge"})
    assert "missing label 's2_structure'" in problems
    assert any(p.startswith("'s1_structure' = 'huge' is not one of") for p in problems)
    model = SSTSpace(bl).freeze(sample)
    del model.frozen_sample  # read the architecture back from the blocks
    assert sample_of(model, bl) == sample


# ------------------------------------------------------------------------------- export, TensorRT
def test_big_little_subnet_exports_with_parity_and_tensorrt_ops(bl, tmp_path) -> None:
    import onnx

    from sst_edge.cost.onnx_export import export_onnx
    from sst_edge.deploy.export import pin_output_shape
    from sst_edge.deploy.tensorrt import check_graph
    from sst_edge.device.session import make_session
    from sst_edge.device.targets import load_target

    torch.manual_seed(0)
    sample = _sample(bl, {1: "big_little", 2: "big_little"}, ["msq", "tps", "tab", "sab", "tam"], 6)
    model = SSTSpace(bl).freeze(sample).eval()
    path = export_onnx(model, _rand(1, *bl.input_shape(1)[1:], seed=2), tmp_path / "bl.onnx")
    pin_output_shape(path, bl.frames, bl.out_channels)  # as `sst-edge export` does
    report = check_graph(path)
    assert report.ok, report.problems()
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"ScatterND", "Resize", "Upsample"}, ops
    session = make_session(path, load_target("cpu-fp32"))
    for batch in (1, 2):
        x = _rand(batch, *bl.input_shape(1)[1:], seed=10 + batch)
        with torch.no_grad():
            ref = model(x).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], ref, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------- training
def test_supernet_trains_a_few_steps_through_the_cli(synth_dataset: Path, tmp_path: Path) -> None:
    import json

    from sst_edge.cli import main
    from sst_edge.space.restriction import load_restriction

    out = tmp_path / "run"
    assert main(["train", "--space", "sst_plus_bl_tiny", "--data", str(synth_dataset), "--out", str(out),
                 "--episodes", "12", "--epochs", "2", "--query", "2", "--lr-warmup", "4", "--warmup", "1",
                 "--shrink-period", "1", "--val-episodes", "2", "--no-progress"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished"
    restriction = load_restriction(out / "restriction.json", load_space("sst_plus_bl_tiny")).choices
    assert restriction["s1_structure"] and restriction["s2_structure"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    shrink = [r for r in rows if r["kind"] == "shrink"]
    kinds = {c["label"]: c["kind"] for e in shrink for c in e["candidates"]}
    assert kinds["s1_structure"] == "structure"
    # the progressive search on this supernet: phase 1 moves only the structure labels, every layer at the
    # cheapest subnet's op; best.json carries the structures phase 1 fixed (phase 2 does not move them)
    found = tmp_path / "search"
    assert main(["search", "--space", "sst_plus_bl_tiny", "--weights", str(out), "--data", str(synth_dataset),
                 "--out", str(found), "--budget-gflops", "10", "--trials", "6", "--population", "3",
                 "--sample-size", "2", "--episodes", "3", "--rescore-top", "2", "--rescore-episodes", "4",
                 "--progressive", "--no-baseline"]) == 0
    summary = json.loads((found / "search.json").read_text())
    phases = {p["phase"]: p for p in summary["progressive"]["phases"]}
    assert phases["structure"]["skipped"] is None and phases["structure"]["trials"] >= 2
    assert phases["structure"]["free_labels"] == ["s1_structure", "s2_structure"]
    trials = [json.loads(p.read_text()) for p in (found / "trials").glob("*.json")]
    first = [t["sample"] for t in trials if t["kind"] == "progressive-structure"]
    assert len({(s["s1_structure"], s["s2_structure"]) for s in first}) == len(first) >= 2
    cheapest_ops = {k: v for k, v in first[0].items() if k.endswith("_op")}
    assert all({k: v for k, v in s.items() if k.endswith("_op")} == cheapest_ops for s in first)
    fixed = phases["structure"]["winner"]["sample"]
    best = json.loads((found / "best.json").read_text())["sample"]
    assert (best["s1_structure"], best["s2_structure"]) == (fixed["s1_structure"], fixed["s2_structure"])
