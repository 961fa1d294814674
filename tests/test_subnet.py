"""The subnet document (best.json): round trip, and every malformation named."""

from __future__ import annotations

import json
import random

import pytest

from sst_edge.cli import main
from sst_edge.errors import SSTEdgeError
from sst_edge.space.config import load_space
from sst_edge.space.restriction import load_restriction
from sst_edge.space.subnet import load_subnet, make_subnet
from sst_edge.space.supernet import random_sample


@pytest.fixture
def tiny():
    return load_space("sst_tiny")


@pytest.fixture
def doc_path(tmp_path, tiny):
    sample = random_sample(tiny, random.Random(0))
    return make_subnet(tiny, sample, {"acc": 0.5}).save(tmp_path / "best.json")


def _edit(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))
    return path


def test_round_trip(doc_path, tiny):
    sub, config = load_subnet(doc_path)
    assert config == tiny and sub.space_hash == tiny.hash and sub.metrics == {"acc": 0.5}
    assert list(sub.sample) == tiny.labels()
    sub.save(doc_path.with_name("again.json"))
    assert json.loads(doc_path.read_text()) == json.loads(doc_path.with_name("again.json").read_text())


def test_every_problem_is_named(doc_path):
    def spoil(doc):
        doc["sample"]["s9_l1_op"] = "tab"          # unknown label
        del doc["sample"]["s1_l2_heads"]           # missing label
        doc["sample"]["s2_l1_heads"] = 7           # out of range
        doc["sample"]["s3_l1_op"] = "conv"         # out of range
    _edit(doc_path, spoil)
    with pytest.raises(SSTEdgeError) as e:
        load_subnet(doc_path)
    text = str(e.value)
    assert str(doc_path) in text
    for bit in ("unknown label 's9_l1_op'", "missing label 's1_l2_heads'", "'s2_l1_heads' = 7",
                "'s3_l1_op' = 'conv'"):
        assert bit in text


def test_other_space_is_refused(doc_path):
    with pytest.raises(SSTEdgeError, match="made for space 'sst_tiny', not 'sst_paper'"):
        load_subnet(doc_path, space="sst_paper")


def test_changed_space_yaml_is_detected(doc_path):
    _edit(doc_path, lambda d: d.update(space_hash="0" * 16))
    with pytest.raises(SSTEdgeError, match="the space YAML changed"):
        load_subnet(doc_path)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"format": "x"}'])
def test_garbage_is_refused_with_the_file_name(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SSTEdgeError, match="bad.json"):
        load_subnet(path)


def test_cli_check_exits_nonzero_and_lists_problems(doc_path, capsys):
    assert main(["space", "check", str(doc_path)]) == 0
    _edit(doc_path, lambda d: d["sample"].update(s1_l1_heads=99, extra=1))
    assert main(["space", "check", str(doc_path)]) == 2
    err = capsys.readouterr().err
    assert "'s1_l1_heads' = 99" in err and "unknown label 'extra'" in err and str(doc_path) in err


def test_cli_sample_writes_a_valid_document(tmp_path, tiny):
    out = tmp_path / "s.json"
    assert main(["space", "sample", "--space", "sst_tiny", "--seed", "4", "--out", str(out)]) == 0
    sub, _ = load_subnet(out)
    assert sub.sample == random_sample(tiny, random.Random(4))
    assert sub.metrics["gflops"] > 0


def test_restriction_is_validated_and_respected(tmp_path, tiny):
    restriction = {"s1_l1_op": ["sab"], "s2_l2_heads": [12]}
    path = tmp_path / "restriction.json"
    path.write_text(json.dumps({"format": "sst-edge/restriction", "space": "sst_tiny",
                                "space_hash": tiny.hash, "keep": restriction}))
    assert load_restriction(path, tiny).choices == restriction
    out = tmp_path / "s.json"
    for seed in range(5):
        assert main(["space", "sample", "--space", "sst_tiny", "--seed", str(seed), "--out", str(out),
                     "--restriction", str(path)]) == 0
        sample = json.loads(out.read_text())["sample"]
        assert sample["s1_l1_op"] == "sab" and sample["s2_l2_heads"] == 12
    _edit(path, lambda d: d["keep"].update(s1_l1_op=[], s1_l2_heads=[5]))
    with pytest.raises(SSTEdgeError) as e:
        load_restriction(path, tiny)
    assert "'s1_l1_op' keeps no value" in str(e.value) and "'s1_l2_heads': 5" in str(e.value)
