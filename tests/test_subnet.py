"""The subnet document (best.json): round trip, and every malformation named."""

from __future__ import annotations

import json
import random

import pytest

from sst_edge.cli import main
from sst_edge.errors import SSTEdgeError
from sst_edge.space.config import load_space
from sst_edge.space.restriction import load_restriction
from sst_edge.space.subnet import Subnet, load_subnet, make_subnet
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


# ------------------------------------------------------------------------- sample_problems, directly
def _largest(tiny) -> dict:
    return {k: v[-1] for k, v in tiny.choices().items()}


def test_sample_problems_honours_its_restriction(tiny):
    from sst_edge.space.subnet import sample_problems

    s = _largest(tiny)  # s1_l1_op = 'sab', s1_l1_heads = 16
    assert s["s1_l1_op"] == "sab" and s["s1_l1_heads"] == 16
    assert sample_problems(tiny, s) == []
    assert sample_problems(tiny, s, {"s1_l1_op": ["sab"], "s1_l1_heads": [12, 16]}) == []
    assert sample_problems(tiny, s, {"s1_l1_op": ["tab"], "s1_l1_heads": [6, 12]}) == [
        "'s1_l1_op' = 'sab' is not one of ['tab']", "'s1_l1_heads' = 16 is not one of [6, 12]"]
    # a restriction cannot add labels the space does not have, nor widen a label's values: an unknown
    # label in it is ignored; a sample's value outside the restriction is refused even if the space has it
    assert sample_problems(tiny, s, {"s9_l9_op": ["tab"]}) == []
    assert sample_problems(tiny, dict(s, s9_l9_op="tab"), {"s9_l9_op": ["tab"]}) == [
        "unknown label 's9_l9_op'"]
    assert sample_problems(tiny, s, {}) == [] and sample_problems(tiny, s, None) == []


def test_sample_problems_names_each_problem_in_forward_order(tiny):
    from sst_edge.space.subnet import is_choice, sample_problems

    s = _largest(tiny)
    s["s1_l1_heads"] = 16.0  # same value, not the same type: not a choice
    s["s2_l1_heads"] = True
    del s["s3_l3_op"]
    s["zzz"] = 1
    assert sample_problems(tiny, s) == [
        "unknown label 'zzz'", "'s1_l1_heads' = 16.0 is not one of [6, 12, 16]",
        "'s2_l1_heads' = True is not one of [6, 12, 16]", "missing label 's3_l3_op'"]
    assert is_choice(12, [6, 12]) and not is_choice(12.0, [6, 12]) and not is_choice(True, [1])
    assert not is_choice(7, [6, 12]) and is_choice("tab", ["tab"])


def test_make_subnet_orders_labels_and_refuses_a_restricted_value(tiny):
    s = _largest(tiny)
    shuffled = dict(reversed(list(s.items())))
    sub = make_subnet(tiny, shuffled, {"gflops": 1.5})
    assert list(sub.sample) == tiny.labels() and sub.sample == s and sub.metrics == {"gflops": 1.5}
    assert (sub.space, sub.space_hash) == ("sst_tiny", tiny.hash)
    assert make_subnet(tiny, s).metrics == {}
    with pytest.raises(SSTEdgeError) as e:
        make_subnet(tiny, s, restriction={"s1_l1_op": ["tab"]})
    assert e.value.message == "not a subnet of space 'sst_tiny'"
    assert e.value.problems == ["'s1_l1_op' = 'sab' is not one of ['tab']"]
    assert sub.to_dict() == {"format": "sst-edge/subnet", "version": 1, "space": "sst_tiny",
                             "space_hash": tiny.hash, "sample": s, "metrics": {"gflops": 1.5}}


def test_load_subnet_honours_its_restriction(doc_path, tiny):
    sample = json.loads(doc_path.read_text())["sample"]
    ok = {"s1_l1_op": [sample["s1_l1_op"]]}
    sub, config = load_subnet(doc_path, tiny, restriction=ok)
    assert sub.sample == sample and config is tiny
    other = "tab" if sample["s1_l1_op"] == "sab" else "sab"
    with pytest.raises(SSTEdgeError) as e:
        load_subnet(doc_path, "sst_tiny", restriction={"s1_l1_op": [other]})
    assert e.value.problems == [f"'s1_l1_op' = {sample['s1_l1_op']!r} is not one of [{other!r}]"]
    assert e.value.path == doc_path


def test_a_document_naming_a_space_that_cannot_be_loaded(doc_path):
    _edit(doc_path, lambda d: d.update(space="no_such_space"))
    with pytest.raises(SSTEdgeError, match="names space 'no_such_space', which cannot be loaded") as e:
        load_subnet(doc_path)
    assert e.value.path == doc_path


# --------------------------------------------------------------------------------------- restrictions
def test_restriction_round_trip_and_every_problem(tmp_path, tiny):
    from sst_edge.space.restriction import Restriction, full_restriction, restriction_problems

    full = full_restriction(tiny)
    assert (full.space, full.space_hash, full.history) == ("sst_tiny", tiny.hash, [])
    assert full.choices == tiny.choices()
    r = Restriction("sst_tiny", tiny.hash, {"s1_l1_op": ["sab"], "s1_l1_heads": [6, 16]}, [{"epoch": 1}])
    path = r.save(tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"format": "sst-edge/restriction", "space": "sst_tiny",
                                            "space_hash": tiny.hash, "keep": r.choices,
                                            "history": [{"epoch": 1}]}
    assert load_restriction(path, tiny) == r
    assert restriction_problems(tiny, {"s1_l1_op": ["sab", "conv"], "nope": [1], "s1_l1_heads": [],
                                "s2_l1_heads": 6, "s2_l1_op": ["tab"]}) == [
        "'s1_l1_op': 'conv' is not one of ['tab', 'sab']", "unknown label 'nope'",
        "'s1_l1_heads' keeps no value (every label needs at least one)",
        "'s2_l1_heads' keeps no value (every label needs at least one)"]
    _edit(path, lambda d: d.update(space="sst_paper", space_hash="0" * 16))
    with pytest.raises(SSTEdgeError) as e:
        load_restriction(path, tiny)
    assert e.value.path == path and e.value.message == "restriction does not fit space 'sst_tiny'"
    assert e.value.problems == ["made for space 'sst_paper', not 'sst_tiny'",
                                f"space hash {'0' * 16} does not match 'sst_tiny' ({tiny.hash})"]
    _edit(path, lambda d: d.pop("history") and d.update(space="sst_tiny", space_hash=tiny.hash))
    assert load_restriction(path, tiny).history == []


# ------------------------------------------------------------------------------------------ space_hash
def test_space_hash_ignores_comments_and_formatting(tmp_path, tiny):
    """README: the hash is of the parsed space, so comments, key order, quoting and layout do not change
    it, and any value does."""
    import yaml

    from sst_edge.resources import resolve

    text = resolve("space", "sst_tiny").read_text()
    doc = yaml.safe_load(text)
    reworded = tmp_path / "sst_tiny.yaml"
    def noted(line: str) -> str:  # a trailing comment where YAML allows one
        plain = line.strip() and not line.lstrip().startswith(("#", "-", "|", ">")) \
            and not line.rstrip().endswith((":", "|", ">"))
        return f"{line}   # note" if plain else line

    reworded.write_text("# a comment on top\n\n" + "\n".join(map(noted, text.splitlines())) + "\n")
    assert yaml.safe_load(reworded.read_text()) == doc  # same content, other text
    assert load_space(reworded).hash == tiny.hash
    flow = tmp_path / "flow.yaml"  # flow style, keys reversed, every string quoted
    flow.write_text(json.dumps(dict(reversed(list(doc.items()))), indent=None))
    assert yaml.safe_load(flow.read_text()) == doc and load_space(flow).hash == tiny.hash
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**doc, "mlp_ratio": float(doc.get("mlp_ratio", 4)) + 1}))
    assert load_space(changed).hash != tiny.hash


def test_each_refusal_says_what_the_file_was_meant_to_be(tmp_path, doc_path, tiny):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SSTEdgeError) as e:
        load_subnet(bad)
    assert e.value.path == bad and e.value.message.startswith("not a valid subnet document: ")
    bad.write_text(json.dumps({"format": "sst-edge/subnet", "version": 1, "space": "sst_tiny"}))
    with pytest.raises(SSTEdgeError) as e:
        load_subnet(bad)
    assert e.value.path == bad and e.value.message == "not a valid subnet document"
    out = tmp_path / "long.json"
    with pytest.raises(SSTEdgeError) as e:
        Subnet("sst_tiny", tiny.hash, {"x" * 300: 1}).save(out)
    assert e.value.path == out and e.value.message == "not a valid subnet document" and not out.exists()
    _edit(doc_path, lambda d: d.update(space_hash="0" * 16))
    with pytest.raises(SSTEdgeError) as e:
        load_subnet(doc_path, tiny)
    assert e.value.message == "subnet does not fit space 'sst_tiny'" and e.value.path == doc_path
    assert e.value.problems == [f"space hash {'0' * 16} does not match 'sst_tiny' ({tiny.hash}): the space "
                                "YAML changed since this subnet was made"]


def test_restriction_refusals_name_the_file_and_its_kind(tmp_path, tiny):
    from sst_edge.space.restriction import Restriction

    bad = tmp_path / "restriction.json"
    bad.write_text("[")
    with pytest.raises(SSTEdgeError) as e:
        load_restriction(bad, tiny)
    assert e.value.path == bad and e.value.message.startswith("not a valid restriction file: ")
    bad.write_text(json.dumps({"format": "sst-edge/restriction", "space": "sst_tiny"}))
    with pytest.raises(SSTEdgeError) as e:
        load_restriction(bad, tiny)
    assert e.value.path == bad and e.value.message == "not a valid restriction file"
    out = tmp_path / "out.json"
    with pytest.raises(SSTEdgeError) as e:
        Restriction("sst_tiny", tiny.hash, {"s1_l1_op": "sab"}).save(out)  # a value, not a list of them
    assert e.value.path == out and e.value.message == "not a valid restriction file" and not out.exists()


def test_restricted_choices_and_space_size_by_hand(tiny) -> None:
    """sst_tiny: 9 layers of 2 ops x 3 head counts. Narrowing one op label to 1 value and one heads label to
    2 values leaves 6^9 / 2 / 3 * 2 architectures; labels the restriction does not name keep every value,
    and labels of no layer are ignored."""
    from sst_edge.space.restriction import restricted_choices, space_size

    assert space_size(tiny) == 6 ** 9 == space_size(tiny, {})
    r = {"s1_l1_op": ["sab"], "s2_l3_heads": [6, 16], "not_a_label": [1]}
    ch = restricted_choices(tiny, r)
    assert ch["s1_l1_op"] == ["sab"] and ch["s2_l3_heads"] == [6, 16] and "not_a_label" not in ch
    assert ch["s1_l2_op"] == ["tab", "sab"] and ch["s3_l3_heads"] == [6, 12, 16]
    assert space_size(tiny, r) == 6 ** 9 // 2 // 3 * 2 == 3_359_232


def test_a_run_folders_restriction_file(tmp_path) -> None:
    """restriction.json, else the older name shrunk.json, else none."""
    from sst_edge.space.restriction import run_restriction_file

    assert run_restriction_file(tmp_path) is None
    (tmp_path / "shrunk.json").write_text("{}")
    assert run_restriction_file(tmp_path) == tmp_path / "shrunk.json"
    (tmp_path / "restriction.json").write_text("{}")
    assert run_restriction_file(tmp_path) == tmp_path / "restriction.json"
