"""The SST search space on NNI: labels, freezing, the supernet, and the cost of subnets."""

from __future__ import annotations

import random

import pytest
import torch

from sst_edge.cost.flops import extreme_sample, predicted_cost, subnet_cost
from sst_edge.errors import SSTEdgeError
from sst_edge.space.config import load_space, parse_space
from sst_edge.space.model import SSTSpace
from sst_edge.space.supernet import (
    activate,
    build_supernet,
    freeze_subnet,
    load_shared_weights,
    random_sample,
)

SPACES = ["sst_tiny", "sst_paper"]


@pytest.mark.parametrize("name", SPACES)
def test_labels_follow_design(name):
    config = load_space(name)
    simple = SSTSpace(config).simplify()
    assert list(simple) == config.labels()
    for (s, l) in config.layers():
        assert simple[f"s{s}_l{l}_op"].values == ["tab", "sab"]
        assert simple[f"s{s}_l{l}_heads"].values == [6, 12, 16]


def test_paper_space_is_table_1():
    config = load_space("sst_paper")
    assert (config.frames, config.size) == (8, 224)
    assert [st.depth for st in config.stages] == [8, 8, 8]
    assert len(config.patch_channels) == 4 and config.downsample_heads == 12
    widths = [st.channels for st in config.stages]
    assert widths == sorted(widths) and len(set(widths)) == 3  # C1 < C2 < C3


@pytest.mark.parametrize("name", SPACES)
def test_frozen_subnet_matches_activated_supernet(name):
    config = load_space(name)
    supernet = build_supernet(config).eval()
    rng = random.Random(7)
    x = torch.randn(1 if name == "sst_paper" else 3, *config.input_shape(1)[1:])
    for _ in range(2):
        sample = random_sample(config, rng)
        activate(supernet, config, sample)
        subnet = freeze_subnet(supernet, config, sample).eval()
        with torch.no_grad():
            a, b = supernet(x), subnet(x)
        assert a.shape == (x.shape[0], config.frames, config.out_channels)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        # The frozen subnet is a plain module of the chosen width: fewer params than the supernet.
        assert sum(p.numel() for p in subnet.parameters()) < sum(p.numel() for p in supernet.parameters())


def test_space_freeze_gives_a_plain_model_with_the_chosen_widths():
    config = load_space("sst_tiny")
    sample = random_sample(config, random.Random(0))
    sample["s1_l1_op"], sample["s1_l1_heads"] = "tab", 12
    model = SSTSpace(config).freeze(sample)
    block = model.stages[0][0]
    assert block.mode == "tab" and block.q.out_features == 12 * config.stages[0].head_dim
    assert model(torch.randn(2, *config.input_shape(1)[1:])).shape == (2, config.frames, config.out_channels)


@pytest.mark.parametrize("name", SPACES)
def test_nni_flops_expression_agrees_with_fvcore(name):
    config = load_space(name)
    rng = random.Random(3)
    samples = [random_sample(config, rng) for _ in range(2)] + [extreme_sample(config, largest=True)]
    for sample in samples:
        ref, expr = subnet_cost(config, sample), predicted_cost(config, sample)
        assert abs(expr.flops - ref.flops) / ref.flops < 0.02, (ref, expr)
        assert expr.params == ref.params


def test_fvcore_counts_attention():
    """fvcore skips SDPA by default; our count must include QK^T and AV."""
    from fvcore.nn import FlopCountAnalysis

    config = load_space("sst_tiny")
    sample = {k: ("sab" if k.endswith("_op") else 16) for k in config.choices()}
    model = SSTSpace(config).freeze(sample).eval()
    x = torch.zeros(config.input_shape(1))
    analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    plain = analysis.total()
    ours = subnet_cost(config, sample).flops
    t, n1 = config.frames, (config.size // 16) ** 2
    width = 16 * config.stages[0].head_dim
    first_stage_attention = config.stages[0].depth * 2 * t * n1 * n1 * width
    assert ours - plain >= first_stage_attention


def test_paper_space_contains_the_papers_8_frame_model():
    """SST's searched 8-frame model: 8.89M params, 13.64 GFLOPs (multiply-adds)."""
    config = load_space("sst_paper")
    lo = predicted_cost(config, extreme_sample(config))
    hi = predicted_cost(config, extreme_sample(config, largest=True))
    assert lo.gflops < 13.64 < hi.gflops
    assert lo.mparams < 8.89 < hi.mparams


def test_restricted_supernet_shares_the_full_supernets_weights():
    config = load_space("sst_tiny")
    restriction = {"s1_l1_op": ["sab"], "s1_l1_heads": [6, 12], "s3_l3_heads": [6]}
    full, small = build_supernet(config).eval(), build_supernet(config, restriction).eval()
    assert load_shared_weights(small, full.state_dict()) == []
    sample = random_sample(config, random.Random(2), restriction)
    activate(full, config, sample)
    activate(small, config, sample, restriction)
    x = torch.randn(2, *config.input_shape(1)[1:])
    with torch.no_grad():
        torch.testing.assert_close(full(x), small(x), rtol=0, atol=1e-6)
    with pytest.raises(SSTEdgeError, match="s1_l1_op"):
        activate(small, config, {**sample, "s1_l1_op": "tab"}, restriction)


def test_activation_refuses_incomplete_samples():
    """NNI would silently draw a missing label at random; we refuse."""
    config = load_space("sst_tiny")
    supernet = build_supernet(config)
    sample = random_sample(config, random.Random(0))
    del sample["s2_l2_heads"]
    with pytest.raises(SSTEdgeError, match="missing label 's2_l2_heads'"):
        activate(supernet, config, sample)


def test_bad_space_yaml_names_every_problem():
    with pytest.raises(SSTEdgeError) as e:
        parse_space({"name": "x", "input": {"frames": 4, "size": 60}, "patch_embed": {"channels": [8, 8]},
                     "choices": {"ops": ["tab", "conv"], "heads": [6]}, "stages": [{"channels": 8}]},
                    "x.yaml")
    text = str(e.value)
    for bit in ("x.yaml", "input.size", "patch_embed.channels", "choices.ops", "stages[1]: missing 'depth'"):
        assert bit in text


def test_shipped_paper_cost_subnet_has_the_papers_flops_and_both_blocks():
    from sst_edge.resources import data_dirs
    from sst_edge.space.subnet import load_subnet

    sub, config = load_subnet(data_dirs("space")[-1] / "sst_paper.paper_cost.json")
    cost = predicted_cost(config, sub.sample)
    # FLOPs of the paper's model; params 9.39 M (the paper: 8.89 M): a stage-1 TAB costs params here
    assert abs(cost.gflops / 13.64 - 1) < 0.005 and abs(cost.mparams / 8.89 - 1) < 0.06
    for s in (1, 2, 3):
        assert {sub.sample[f"s{s}_l{i}_op"] for i in range(1, 9)} == {"tab", "sab"}
