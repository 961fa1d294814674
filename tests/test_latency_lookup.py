"""Latency tables without profiling: prediction from a table written here by hand (its medians chosen so
that p10 and p90 differ from them), the correction, the NNI expression, the document's checks, and the
refusal of a foreign table, all against sums and strings worked out in this file. Fast: no model runs."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from sst_edge.cost import latency
from sst_edge.cost.latency import (
    FORMAT,
    Correction,
    LatencyTable,
    check_table,
    fixed_keys,
    foreign_problems,
    load_table,
    missing_entries,
    read_table,
    target_record,
)
from sst_edge.device.fingerprint import device_fingerprint
from sst_edge.device.targets import load_target
from sst_edge.errors import SSTEdgeError
from sst_edge.resources import resolve
from sst_edge.space.config import load_space


def timing(median: float) -> dict:
    """A timing whose p10 and p90 are far from its median: reading either gives another total."""
    return {"median_ms": median, "p10_ms": median / 4, "p90_ms": median * 8, "count": 7}


def hand_doc(correction: dict | None = None) -> dict:
    """Two stages (depth 2 and 1), ops tab/sab, heads 1/2; fixed parts 0.5 + 0.25 + 0.125 = 0.875 ms."""
    blocks1 = {"tab": {"1": timing(1.0), "2": timing(2.0)}, "sab": {"1": timing(4.0), "2": timing(8.0)}}
    blocks2 = {"tab": {"1": timing(16.0), "2": timing(32.0)}, "sab": {"1": timing(64.0), "2": timing(128.0)}}
    return {
        "format": FORMAT, "version": 1, "space": "hand", "space_hash": "abc", "target": {"name": "cpu-fp32"},
        "backend": "onnxruntime", "unit": "ms per clip (batch 1)", "created": "2026-01-01T00:00:00+00:00",
        "fingerprint": {"cpu_model": "X"}, "timing": {"policy": "p"},
        "fixed": {"embed": {"input_shape": [1, 3], **timing(0.5)},
                  "downsample2": {"input_shape": [1, 8], **timing(0.25)},
                  "head": {"input_shape": [], **timing(0.125)}},
        "stages": [{"stage": 1, "depth": 2, "input_shape": [1, 8], "blocks": blocks1},
                   {"stage": 2, "depth": 1, "input_shape": [1, 16], "blocks": blocks2}],
        "correction": correction, "validation": None}


def sample(s1l1=("tab", 1), s1l2=("tab", 1), s2l1=("tab", 1)) -> dict:
    return {"s1_l1_op": s1l1[0], "s1_l1_heads": s1l1[1], "s1_l2_op": s1l2[0], "s1_l2_heads": s1l2[1],
            "s2_l1_op": s2l1[0], "s2_l1_heads": s2l1[1]}


# Hand sums: fixed 0.875 + the medians of the chosen blocks.
CASES = [
    (sample(), 0.875 + 1 + 1 + 16),
    (sample(("sab", 2), ("tab", 2), ("sab", 1)), 0.875 + 8 + 2 + 64),
    (sample(("sab", 1), ("sab", 2), ("sab", 2)), 0.875 + 4 + 8 + 128),
]


@pytest.fixture
def table() -> LatencyTable:
    return LatencyTable.from_dict(hand_doc(), "hand.json")


# ------------------------------------------------------------------------------------------- prediction
def test_prediction_is_the_fixed_medians_plus_the_block_medians(table: LatencyTable) -> None:
    assert table.fixed_ms == 0.875
    for s, expected in CASES:
        assert table.predict_ms(s) == expected  # no correction in this table
        assert table.predict_ms(s, raw=True) == expected
    assert table.block_ms(1, "sab", 2) == 8.0 and table.block_ms(2, "tab", "1") == 16.0
    assert table.layers() == [(1, 1), (1, 2), (2, 1)] and table.target_name == "cpu-fp32"


def test_the_correction_is_scale_times_raw_plus_offset(table: LatencyTable) -> None:
    t = LatencyTable.from_dict(hand_doc({"kind": "affine", "scale": 1.5, "offset_ms": -0.25, "fitted_on": 9}))
    for s, raw in CASES:
        assert t.predict_ms(s, raw=True) == raw
        assert t.predict_ms(s) == pytest.approx(1.5 * raw - 0.25, rel=1e-15)
    assert t.correction == Correction("affine", 1.5, -0.25, 9)
    assert Correction("scale", 2.0, 0.0, 3).apply(3.5) == 7.0 and Correction("affine", 1, 2, 3).apply(1) == 3
    assert Correction.from_dict({"kind": "scale", "scale": "2", "offset_ms": 0, "fitted_on": "4"}) == \
        Correction("scale", 2.0, 0.0, 4)
    assert Correction("affine", 1.5, -0.25, 9).to_dict() == {"kind": "affine", "scale": 1.5,
                                                              "offset_ms": -0.25, "fitted_on": 9}


def test_the_expression_freezes_to_the_same_sums() -> None:
    t = LatencyTable.from_dict(hand_doc({"kind": "affine", "scale": 1.5, "offset_ms": -0.25, "fitted_on": 9}),
                               "hand.json")
    expr, raw = t.expression(), t.expression(raw=True)
    for s, expected in CASES:
        assert raw.freeze(s) == expected
        assert expr.freeze(s) == pytest.approx(1.5 * expected - 0.25, rel=1e-15)
    restricted = t.expression(raw=True, restriction={"s1_l1_op": ["sab"], "s1_l1_heads": [2]})
    assert restricted.freeze(CASES[1][0]) == CASES[1][1]
    labels = {k: list(v.values) for k, v in restricted.simplify().items()}
    assert labels["s1_l1_op"] == ["sab"] and labels["s1_l1_heads"] == [2]
    assert labels["s1_l2_op"] == ["tab", "sab"] and labels["s1_l2_heads"] == [1, 2]
    with pytest.raises(SSTEdgeError, match=r"no timing for \(1, 'tab', 3\) \(s1_l1_op, s1_l1_heads\)") as e:
        t.expression(restriction={"s1_l1_heads": [1, 3]})
    assert e.value.path == Path("hand.json")
    assert t.profiler().profile(CASES[2][0]) == pytest.approx(1.5 * CASES[2][1] - 0.25, rel=1e-15)
    prof = t.profiler(raw=True)
    assert prof.profile(CASES[2][0]) == CASES[2][1] and type(prof).__name__ == "LatencyProfiler"
    assert latency.LatencyProfiler is type(prof)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        latency.Nope  # noqa: B018


def test_a_sample_it_cannot_price_is_refused_naming_each_problem(table: LatencyTable) -> None:
    bad = dict(sample(), s1_l2_heads=3)
    del bad["s2_l1_op"]
    assert table.sample_problems(bad) == ["no timing for s1_l2_op='tab', s1_l2_heads=3",
                                          "missing label 's2_l1_op'"]
    no_heads = dict(sample())
    del no_heads["s1_l1_heads"]
    assert table.sample_problems(no_heads) == ["missing label 's1_l1_heads'"]
    assert table.sample_problems(sample()) == []
    with pytest.raises(SSTEdgeError) as e:
        table.predict_ms(bad)
    assert e.value.path == Path("hand.json") and e.value.message == "cannot predict this sample with the " \
        "table for 'hand'" and e.value.problems == table.sample_problems(bad)
    with pytest.raises(SSTEdgeError):
        table.predict_ms(dict(sample(), s1_l1_heads=[1]))  # unhashable: TypeError, named too


# ---------------------------------------------------------------------------------------- the document
def test_round_trip_keeps_every_field_and_unknown_keys(tmp_path: Path) -> None:
    doc = hand_doc({"kind": "scale", "scale": 1.25, "offset_ms": 0.0, "fitted_on": 2})
    doc["validation"] = {"subnets": 2}
    doc["extra_key"] = {"kept": True}
    t = LatencyTable.from_dict(copy.deepcopy(doc))
    assert t.to_dict() == doc
    assert list(t.fixed) == ["embed", "downsample2", "head"] and t.fixed["embed"][0] == [1, 3]
    assert t.fixed["head"][0] == [] and t.fixed["downsample2"][0] == [1, 8]
    assert t.stages[1].input_shape == [1, 16] and t.stages[0].depth == 2
    with pytest.raises(SSTEdgeError, match="no path yet"):
        t.save()
    path = t.save(tmp_path / "t.json")
    assert path == tmp_path / "t.json" == t.path and json.loads(path.read_text()) == doc
    again = read_table(path)
    assert again.to_dict() == doc and again.path == path
    again.correction = None
    assert again.save() == path and json.loads(path.read_text())["correction"] is None


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda d: d["fixed"]["head"].update(median_ms=0), "fixed.head.median_ms"),
    (lambda d: d["stages"][0]["blocks"]["tab"].update({"x": timing(1.0)}), "stages[0].blocks.tab"),
    (lambda d: d["stages"][1]["blocks"]["sab"]["2"].pop("p90_ms"), "stages[1].blocks.sab.2"),
    (lambda d: d.update(correction={"kind": "affine", "scale": 1.0}), "correction"),
    (lambda d: d["stages"][0].pop("depth"), "stages[0]"),
])
def test_invalid_documents_name_the_entry(edit, problem: str) -> None:
    doc = hand_doc()
    edit(doc)
    with pytest.raises(SSTEdgeError) as e:
        LatencyTable.from_dict(doc, "bad.json")
    assert e.value.path == Path("bad.json") and problem in str(e.value)


def test_problems_found_after_the_schema_are_each_named() -> None:
    doc = hand_doc()
    doc["stages"][0]["blocks"]["tab"]["x"] = timing(1.0)
    doc["stages"][0]["blocks"]["sab"]["1"]["median_ms"] = 0.0
    with pytest.raises(SSTEdgeError) as e:
        LatencyTable.from_dict(doc, "bad.json")
    text = str(e.value)
    assert "'x' does not match" in text or "heads key 'x' is not an integer" in text or "x" in text


# -------------------------------------------------------------------------------------- foreign tables
@pytest.fixture
def tiny():
    return load_space("sst_tiny")


@pytest.fixture
def shipped() -> dict:
    """The shipped sst_tiny table, its device made this machine's (so nothing here depends on the host)."""
    doc = json.loads(resolve("table", "sst_tiny.cpu-fp32").read_text())
    doc["fingerprint"].update(device_fingerprint(uses_gpu=False))
    return doc


def write(doc: dict, path: Path) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_the_shipped_table_covers_its_space_and_is_accepted_here(shipped: dict, tiny, tmp_path: Path) -> None:
    path = write(shipped, tmp_path / "t.json")
    t = load_table(path, "sst_tiny", "cpu-fp32")
    assert t.foreign == [] and missing_entries(t, tiny) == []
    assert fixed_keys(tiny) == ["embed", "downsample2", "downsample3", "head"]
    # the prediction from the file's own numbers, summed here
    s = {k: v[-1] for k, v in tiny.choices().items()}
    raw = sum(e["median_ms"] for e in shipped["fixed"].values())
    for st in shipped["stages"]:
        for layer in range(1, st["depth"] + 1):
            op, heads = s[f"s{st['stage']}_l{layer}_op"], s[f"s{st['stage']}_l{layer}_heads"]
            raw += st["blocks"][op][str(heads)]["median_ms"]
    c = shipped["correction"]
    assert t.predict_ms(s, raw=True) == pytest.approx(raw, rel=1e-12)
    assert t.predict_ms(s) == pytest.approx(raw * c["scale"] + c["offset_ms"], rel=1e-12)
    assert target_record(load_target("cpu-fp32")) == {k: shipped["target"][k] for k in ("name", "hash",
                                                                                           "settings")}


def test_missing_entries_are_listed(shipped: dict, tiny, tmp_path: Path) -> None:
    del shipped["fixed"]["downsample3"]
    del shipped["stages"][1]["blocks"]["sab"]["12"]
    shipped["stages"][2]["depth"] = 2
    t = LatencyTable.from_dict(shipped)
    assert missing_entries(t, tiny) == ["fixed part downsample3", "stage 2 block sab/12 heads",
                                        "stage 3: depth 2, the space has 3"]
    shipped["stages"].pop(0)
    assert "stage 1" in missing_entries(LatencyTable.from_dict(shipped), tiny)
    with pytest.raises(SSTEdgeError, match="lacks 4 of the entries of space 'sst_tiny'") as e:
        load_table(write(shipped, tmp_path / "t.json"), tiny)
    assert e.value.path == tmp_path / "t.json" and e.value.problems[0] == "fixed part downsample3"


def test_every_kind_of_foreign_table_is_named(shipped: dict, tiny) -> None:
    t = LatencyTable.from_dict(shipped)
    here = device_fingerprint(uses_gpu=False)
    fp32, int8 = load_target("cpu-fp32"), load_target("cpu-int8")
    assert foreign_problems(t, tiny, fp32, here=here) == []
    assert foreign_problems(t, load_space("sst_paper"), here=here) == \
        ["made for space 'sst_tiny', not 'sst_paper'"]
    edited = dataclasses.replace(tiny, mlp_ratio=3.0)
    (p,) = foreign_problems(t, edited, here=here)
    assert p.startswith(f"space hash {tiny.hash} does not match 'sst_tiny' ({edited.hash})")
    assert foreign_problems(t, tiny, int8, here=here) == [
        "made for target 'cpu-fp32', not 'cpu-int8'", "precision: table has 'fp32', expected 'int8'"]
    two = dataclasses.replace(fp32, threads=2)
    assert foreign_problems(t, tiny, two, here=here) == [
        "target 'cpu-fp32' changed since the table was measured (settings now differ: threads)",
        "threads: table has 1, expected 2"]
    assert foreign_problems(t, tiny, fp32, backend="torch", here=here) == [
        "backend: table has 'onnxruntime', expected 'torch'",
        "execution_provider: table has 'CPUExecutionProvider', expected 'torch-cpu'"]
    assert foreign_problems(t, backend="torch", here=here) == ["backend: table has 'onnxruntime', expected "
                                                               "'torch'"]
    assert foreign_problems(t, backend="onnxruntime", here=here) == []
    other = dict(here, cpu_model="Other", cpu_count=here["cpu_count"] + 1)
    assert foreign_problems(t, tiny, fp32, here=other) == [
        f"device cpu_model: table has {here['cpu_model']!r}, this machine has 'Other'",
        f"device cpu_count: table has {here['cpu_count']}, this machine has {here['cpu_count'] + 1}"]
    t.target["settings"] = {}
    t.target["hash"] = "x"
    assert "settings now differ: " in foreign_problems(t, tiny, fp32, here=here)[0]


def test_a_table_timed_elsewhere_is_refused_only_by_a_machine_that_would_re_time_it(
        shipped: dict, tiny, tmp_path: Path) -> None:
    shipped["fingerprint"]["cpu_model"] = "Other CPU"
    path = write(shipped, tmp_path / "other.json")
    assert load_table(path, tiny, "cpu-fp32").foreign == []  # a search or a training run predicts with it
    with pytest.raises(SSTEdgeError) as e:
        check_table(read_table(path), tiny, "cpu-fp32", retime=True)
    assert e.value.path == path and "--allow-foreign-table" in e.value.message
    assert "than this machine, which would re-time it" in e.value.message
    assert e.value.problems == [f"device cpu_model: table has 'Other CPU', this machine has "
                                f"{device_fingerprint(False)['cpu_model']!r}"]
    with pytest.warns(UserWarning, match=f"{path}: using a foreign latency table: device cpu_model"):
        t = check_table(read_table(path), tiny, "cpu-fp32", allow_foreign=True, retime=True)
    assert t.foreign == e.value.problems
    with pytest.warns(UserWarning, match="^using a foreign latency table"):  # no path: no prefix
        check_table(LatencyTable.from_dict(shipped), tiny, load_target("cpu-fp32"), allow_foreign=True,
                    retime=True)
    with pytest.raises(SSTEdgeError, match="no such table"):
        read_table("no_such_table")
    path.write_text("{")
    with pytest.raises(SSTEdgeError) as e:
        read_table(path)
    assert e.value.path == path and e.value.message.startswith("not a valid latency table: Expecting")


def test_an_unhashable_choice_is_named_not_a_crash(table: LatencyTable) -> None:
    assert table.sample_problems(dict(sample(), s1_l1_heads=[1])) == ["no timing for s1_l1_op='tab', "
                                                                      "s1_l1_heads=[1]"]


def test_to_dict_is_a_deep_copy() -> None:
    doc = hand_doc()
    doc["validation"] = {"figures": {"raw": 1}}
    doc["extra_key"] = {"nested": [1]}
    doc["target"]["settings"] = {"threads": 1}
    doc["fingerprint"]["versions"] = {"onnx": "1"}
    doc["timing"] = {"policy": {"runs": 3}}
    t = LatencyTable.from_dict(doc)
    d = t.to_dict()
    d["target"]["settings"]["threads"] = d["fingerprint"]["versions"]["onnx"] = 9
    d["timing"]["policy"]["runs"] = 9
    d["validation"]["figures"]["raw"] = 2
    d["extra_key"]["nested"].append(2)
    assert t.target == {"name": "cpu-fp32", "settings": {"threads": 1}}
    assert t.fingerprint == {"cpu_model": "X", "versions": {"onnx": "1"}}
    assert t.timing == {"policy": {"runs": 3}} and t.validation == {"figures": {"raw": 1}}
    assert t.extra == {"extra_key": {"nested": [1]}}


def test_save_names_the_file_and_the_kind(tmp_path: Path) -> None:
    t = LatencyTable.from_dict(hand_doc())
    with pytest.raises(SSTEdgeError) as e:
        t.save()
    assert e.value.message == "this latency table has no path yet: give one to save()"
    assert e.value.path is None
    t.backend = "tensorflow"  # not one the schema allows
    with pytest.raises(SSTEdgeError) as e:
        t.save(tmp_path / "t.json")
    assert e.value.message == "not a valid latency table" and e.value.path == tmp_path / "t.json"
    assert not (tmp_path / "t.json").exists()


def test_check_table_checks_entries_only_for_its_own_space(shipped: dict, tiny, tmp_path: Path) -> None:
    """Entries are counted against the space only when the table is that space's (name and hash); another
    space's table is refused as foreign, not as incomplete."""
    t = LatencyTable.from_dict(copy.deepcopy(shipped))
    with pytest.raises(SSTEdgeError) as e:
        check_table(t, "sst_paper", "cpu-fp32")
    assert e.value.problems == ["made for space 'sst_tiny', not 'sst_paper'"]
    renamed = copy.deepcopy(shipped)
    renamed["space"] = "other"  # same hash, another name, and incomplete for sst_tiny
    del renamed["fixed"]["embed"]
    with pytest.raises(SSTEdgeError) as e:
        check_table(LatencyTable.from_dict(renamed), tiny)
    assert e.value.problems == ["made for space 'other', not 'sst_tiny'"]
    # more than 20 missing entries: the first 20 are listed
    sparse = copy.deepcopy(shipped)
    sparse["fixed"] = {"head": sparse["fixed"]["head"]}  # 3 fixed parts missing
    for st in sparse["stages"]:  # per stage: a wrong depth and 5 of 6 blocks missing
        st["blocks"] = {"tab": {"6": st["blocks"]["tab"]["6"]}}
        st["depth"] = 2
    with pytest.raises(SSTEdgeError, match="lacks 21 of the entries") as e:
        check_table(LatencyTable.from_dict(sparse), tiny)
    assert len(e.value.problems) == 20 and e.value.problems[0] == "fixed part embed"
    assert "stage 1 block sab/6 heads" in e.value.problems  # an op with no entry at all


def test_check_and_load_pass_the_target_and_backend_on(shipped: dict, tiny, tmp_path: Path) -> None:
    path = write(shipped, tmp_path / "t.json")
    t = LatencyTable.from_dict(shipped)
    with pytest.raises(SSTEdgeError) as e:
        check_table(t, tiny, "cpu-int8")  # not allowed by default
    assert "made for target 'cpu-fp32', not 'cpu-int8'" in e.value.problems
    with pytest.raises(SSTEdgeError) as e:
        load_table(path, tiny, "cpu-int8")
    assert "made for target 'cpu-fp32', not 'cpu-int8'" in e.value.problems
    for call in (lambda: check_table(t, tiny, "cpu-fp32", backend="torch"),
                 lambda: load_table(path, tiny, "cpu-fp32", backend="torch")):
        with pytest.raises(SSTEdgeError) as e:
            call()
        assert e.value.problems[0] == "backend: table has 'onnxruntime', expected 'torch'"


def test_the_warning_joins_every_problem(shipped: dict, tiny) -> None:
    shipped["fingerprint"]["cpu_model"] = "Other CPU"
    shipped["fingerprint"]["cpu_count"] = 999
    with pytest.warns(UserWarning) as record:
        check_table(LatencyTable.from_dict(shipped), tiny, allow_foreign=True, retime=True)
    (w,) = record
    here = device_fingerprint(False)
    assert str(w.message) == (f"using a foreign latency table: device cpu_model: table has 'Other CPU', this "
                              f"machine has {here['cpu_model']!r}; device cpu_count: table has 999, this "
                              f"machine has {here['cpu_count']}")


def test_target_changes_and_the_space_hash_are_spelled_out(shipped: dict, tiny) -> None:
    t = LatencyTable.from_dict(shipped)
    here = device_fingerprint(uses_gpu=False)
    fp32 = load_target("cpu-fp32")
    t.target["hash"] = "x"  # another hash, the same settings: nothing to name
    assert foreign_problems(t, tiny, fp32, here=here)[0] == ("target 'cpu-fp32' changed since the table was "
                                                             "measured (settings now differ: unknown)")
    t.target["settings"] = {"threads": 1, "old_key": 1}  # keys on either side count
    expected = sorted({k for k, v in fp32.canonical().items() if v is not None} - {"threads"} | {"old_key"})
    assert foreign_problems(t, tiny, fp32, here=here)[0] == ("target 'cpu-fp32' changed since the table was "
                                                             f"measured (settings now differ: "
                                                             f"{', '.join(expected)})")
    edited = dataclasses.replace(tiny, mlp_ratio=3.0)
    assert foreign_problems(t, edited, here=here) == [
        f"space hash {tiny.hash} does not match 'sst_tiny' ({edited.hash}): the space YAML changed since the "
        "table was measured"]


def test_the_device_is_fingerprinted_with_its_gpu_when_the_table_used_one(
        shipped: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def fingerprint(uses_gpu: bool) -> dict:
        asked.append(uses_gpu)
        return device_fingerprint(uses_gpu=False)

    monkeypatch.setattr(latency, "device_fingerprint", fingerprint)
    assert foreign_problems(LatencyTable.from_dict(shipped)) == [] and asked == []  # nobody re-times it
    check_table(LatencyTable.from_dict(shipped), retime=True)
    shipped["fingerprint"]["gpu"] = "Orin (nvgpu)"
    with pytest.warns(UserWarning):
        t = check_table(LatencyTable.from_dict(shipped), retime=True, allow_foreign=True)
    assert t.foreign[-1] == "device gpu: table has 'Orin (nvgpu)', this machine has None"
    assert asked == [False, True]
