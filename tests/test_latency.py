"""Latency tables on sst_tiny with real ONNX Runtime: structure, prediction, NNI expression, correction,
round trip and refusal of foreign tables. Timings are noisy: nothing here asserts a speed."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from sst_edge.cli import main
from sst_edge.cost.latency import (
    Correction,
    LatencyTable,
    check_table,
    fixed_keys,
    foreign_problems,
    load_table,
    load_table_for,
    read_table,
)
from sst_edge.cost.profile import draw_validation, profile_space, profile_to_file, random_subnets
from sst_edge.cost.validation import accuracy, fit_correction, leave_one_out
from sst_edge.device.targets import load_target
from sst_edge.device.timing import Timing, TimingPolicy, median_ci_halfwidth
from sst_edge.errors import SSTEdgeError
from sst_edge.space.config import load_space
from sst_edge.space.supernet import random_sample

QUICK = TimingPolicy.quick()


@pytest.fixture(scope="module")
def tiny():
    return load_space("sst_tiny")


@pytest.fixture(scope="module")
def table_path(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sst_tiny on cpu-fp32, a few runs per part, validated on 6 subnets (enough for an affine fit)."""
    out = tmp_path_factory.mktemp("tables") / "sst_tiny.cpu-fp32.json"
    _, path = profile_to_file(tiny, "cpu-fp32", out, validate=6, policy=QUICK, progress=False)
    return path


@pytest.fixture
def table(table_path: Path, tiny) -> LatencyTable:
    return load_table(table_path, config=tiny, target="cpu-fp32")


def samples(config, n: int = 10, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [random_sample(config, rng) for _ in range(n)]


# --------------------------------------------------------------------------------------------- contents
def test_table_has_every_part_with_spread(table: LatencyTable, tiny) -> None:
    assert list(table.fixed) == fixed_keys(tiny) == ["embed", "downsample2", "downsample3", "head"]
    assert table.fixed["embed"][0] == list(tiny.input_shape(1))
    assert [st.stage for st in table.stages] == [1, 2, 3]
    for st, cfg in zip(table.stages, tiny.stages, strict=True):
        assert st.depth == cfg.depth and st.input_shape[-1] == cfg.channels and st.input_shape[0] == 1
        assert set(st.blocks) == set(tiny.ops)
        for hs in st.blocks.values():
            assert set(hs) == set(tiny.heads)
    timings = [t for _, t in table.fixed.values()]
    timings += [t for st in table.stages for hs in st.blocks.values() for t in hs.values()]
    for t in timings:
        assert 0 < t.p10_ms <= t.median_ms <= t.p90_ms and t.count >= QUICK.min_runs


def test_fingerprint_and_settings_recorded(table: LatencyTable, tiny) -> None:
    fp = table.fingerprint
    assert fp["cpu_model"] and fp["cpu_count"] >= 1 and fp["threads"] == 1
    assert fp["execution_provider"] == "CPUExecutionProvider" and fp["precision"] == "fp32"
    assert fp["backend"] == "onnxruntime" and "onnxruntime" in fp["versions"] and "torch" in fp["versions"]
    assert table.space == "sst_tiny" and table.space_hash == tiny.hash
    assert table.target["name"] == "cpu-fp32" and table.target["hash"] == load_target("cpu-fp32").hash
    assert table.timing["policy"]["clock"] == "thread"  # one-thread CPU target
    assert table.timing["opset"] == 17 and table.timing["dynamic_batch"] is True
    bg = table.timing["background"]  # how loaded the machine was: parts and subnets share one pool
    assert bg["rounds"] == 22 + 6 and bg["mean_cores"] >= 0 and table.validation["background"] is None


# ------------------------------------------------------------------------------------------- prediction
def _raw_from_the_file(doc: dict, s: dict) -> float:
    """The document's own numbers summed here: every fixed part's median plus each chosen block's."""
    total = sum(entry["median_ms"] for entry in doc["fixed"].values())
    for st in doc["stages"]:
        for layer in range(1, st["depth"] + 1):
            op, heads = s[f"s{st['stage']}_l{layer}_op"], s[f"s{st['stage']}_l{layer}_heads"]
            total += st["blocks"][op][str(heads)]["median_ms"]
    return total


def test_predict_is_fixed_plus_sum_of_blocks(table: LatencyTable, table_path: Path, tiny) -> None:
    doc = json.loads(table_path.read_text())
    for s in samples(tiny):
        assert table.predict_ms(s, raw=True) == pytest.approx(_raw_from_the_file(doc, s), rel=1e-12)


def test_correction_is_applied(table: LatencyTable, table_path: Path, tiny) -> None:
    c = json.loads(table_path.read_text())["correction"]
    # affine, or scale only when a noisy quick profile gives no usable spread (see fit_correction)
    assert c is not None and c["kind"] in ("affine", "scale") and c["fitted_on"] == 6 and c["scale"] > 0
    assert c["kind"] == "affine" or c["offset_ms"] == 0
    doc = json.loads(table_path.read_text())
    for s in samples(tiny, 3):
        expected = _raw_from_the_file(doc, s) * c["scale"] + c["offset_ms"]
        assert table.predict_ms(s) == pytest.approx(expected, rel=1e-12)


def test_more_heads_never_predict_less_with_a_monotonic_table(tiny) -> None:
    """With block timings that grow with heads, so does the prediction (sanity of the lookup)."""
    blocks = {op: {h: Timing(h / 10, h / 10, h / 10, 1) for h in tiny.heads} for op in tiny.ops}
    from sst_edge.cost.latency import StageEntry

    t = LatencyTable("sst_tiny", tiny.hash, {"name": "x"}, "onnxruntime", "now", {}, {},
                     {"embed": ([1], Timing(1, 1, 1, 1))},
                     [StageEntry(s, st.depth, [1], blocks) for s, st in enumerate(tiny.stages, 1)])
    base = {k: (v[0] if k.endswith("_heads") else "tab") for k, v in tiny.choices().items()}
    bigger = dict(base, s2_l1_heads=16)
    assert t.predict_ms(bigger) > t.predict_ms(base)
    assert t.predict_ms(base) == pytest.approx(1 + 9 * 0.6)


def test_bad_sample_is_named(table: LatencyTable) -> None:
    with pytest.raises(SSTEdgeError, match="missing label 's1_l1_op'"):
        table.predict_ms({})


def test_expression_equals_predict(table: LatencyTable, tiny) -> None:
    expr, raw_expr = table.expression(), table.expression(raw=True)
    for s in samples(tiny, 20):
        assert expr.freeze(s) == table.predict_ms(s)
        assert raw_expr.freeze(s) == table.predict_ms(s, raw=True)


def test_profiler_and_constraint(table: LatencyTable, tiny) -> None:
    from nni.mutable import ExpressionConstraint, MutableDict
    from nni.nas.profiler import ExpressionProfiler

    from sst_edge.space.model import SSTSpace

    prof = table.profiler()
    assert isinstance(prof, ExpressionProfiler)
    s = samples(tiny, 1)[0]
    assert prof.profile(s) == table.predict_ms(s)
    ok = ExpressionConstraint(table.expression() <= table.predict_ms(s) + 1e-6, label="latency")
    tight = ExpressionConstraint(table.expression() <= table.predict_ms(s) - 1e-6, label="latency")
    assert ok.check_contains(s) is None
    assert tight.check_contains(s) is not None
    # Its Categoricals are the space's own: the constraint merges with the space's labels.
    merged = MutableDict({**SSTSpace(tiny).simplify(), "latency": ok}).simplify()
    assert set(merged) == set(tiny.choices()) | {"latency"}


def test_restricted_expression(table: LatencyTable, tiny) -> None:
    restriction = {"s1_l1_op": ["sab"], "s1_l1_heads": [6, 12]}
    s = dict(samples(tiny, 1)[0], s1_l1_op="sab", s1_l1_heads=6)
    assert table.expression(restriction=restriction).freeze(s) == table.predict_ms(s)


# --------------------------------------------------------------------------------------- file and checks
def test_round_trip_is_identical(table_path: Path, tmp_path: Path, tiny) -> None:
    a = read_table(table_path)
    b = read_table(a.save(tmp_path / "copy.json"))
    assert (tmp_path / "copy.json").read_bytes() == table_path.read_bytes()
    assert b.to_dict() == a.to_dict()
    for s in samples(tiny):
        assert b.predict_ms(s) == a.predict_ms(s) and b.predict_ms(s, raw=True) == a.predict_ms(s, raw=True)


def test_validation_record_and_plot(table: LatencyTable, table_path: Path, tmp_path: Path) -> None:
    v = table.validation
    assert v is not None and v["subnets"] == 6 and len(v["measurements"]) == 6
    for key in ("raw", "corrected_loo", "corrected_in_sample"):
        f = v["figures"][key]
        assert set(f) == {"within_5pct", "within_10pct", "rmspe_pct", "mean_error_pct", "kendall_tau"}
        assert 0 <= f["within_5pct"] <= f["within_10pct"] <= 1
    m = v["measurements"][0]
    assert m["predicted_raw_ms"] == pytest.approx(table.predict_ms(m["sample"], raw=True), abs=1e-4)
    png = table_path.with_name(v["plot"])
    assert png.name == "sst_tiny.cpu-fp32.validation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = draw_validation(table, tmp_path / "again.png")  # redrawn from the numbers in the file
    assert again.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_foreign_space_refused(table_path: Path, tiny) -> None:
    with pytest.raises(SSTEdgeError) as e:
        load_table(table_path, config=load_space("sst_paper"))
    assert str(table_path) in str(e.value) and "made for space 'sst_tiny', not 'sst_paper'" in str(e.value)
    changed = dataclasses.replace(tiny, mlp_ratio=3.0)  # same name, edited YAML
    with pytest.raises(SSTEdgeError, match="space hash"):
        load_table(table_path, config=changed)


def test_foreign_target_refused(table_path: Path, tiny) -> None:
    with pytest.raises(SSTEdgeError) as e:
        load_table(table_path, config=tiny, target="cpu-int8")
    msg = str(e.value)
    assert str(table_path) in msg and "made for target 'cpu-fp32', not 'cpu-int8'" in msg
    assert "precision: table has 'fp32', expected 'int8'" in msg and "--allow-foreign-table" in msg
    two = dataclasses.replace(load_target("cpu-fp32"), threads=2)
    problems = foreign_problems(read_table(table_path), tiny, two)
    assert any("threads: table has 1, expected 2" in p for p in problems)
    assert any("target 'cpu-fp32' changed" in p for p in problems)


def test_a_table_from_another_device_is_used_as_it_is_but_not_re_timed_here(
        table_path: Path, tmp_path: Path, tiny, capsys: pytest.CaptureFixture) -> None:
    doc = json.loads(table_path.read_text())
    doc["fingerprint"]["cpu_model"] = "ARMv8 Processor rev 1 (v8l)"
    doc["fingerprint"]["cpu_count"] = 6
    other = tmp_path / "jetson.json"
    other.write_text(json.dumps(doc))
    t = load_table_for(other, tiny)  # the training and search call: judged against its target, not this host
    assert t.foreign == [] and t.target_name == "cpu-fp32"
    s = samples(tiny, 1)[0]
    assert t.predict_ms(s) == load_table(table_path, config=tiny).predict_ms(s)
    assert main(["profile", "--table", str(other), "--validate", "2"]) == 2  # this host would re-time it
    err = capsys.readouterr().err
    assert str(other) in err and "which would re-time it" in err
    assert "device cpu_model: table has 'ARMv8 Processor rev 1 (v8l)'" in err
    assert "device cpu_count: table has 6" in err
    with pytest.raises(SSTEdgeError) as e:  # ...and its target still binds: another one is refused
        load_table_for(other, tiny, "cpu-int8")
    assert "made for target 'cpu-fp32', not 'cpu-int8'" in e.value.problems
    assert not any("cpu_model" in p for p in e.value.problems)
    with pytest.warns(UserWarning):
        check_table(read_table(other), tiny, "cpu-fp32", allow_foreign=True, retime=True)


def test_cli_refuses_and_allows(table_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["profile", "--table", str(table_path), "--target", "cpu-int8"]) == 2
    err = capsys.readouterr().err
    assert "sst-edge: error:" in err and str(table_path) in err and "not 'cpu-int8'" in err
    with pytest.warns(UserWarning):
        assert main(["profile", "--table", str(table_path), "--target", "cpu-int8",
                     "--allow-foreign-table"]) == 0
    assert "FOREIGN" in capsys.readouterr().out
    assert main(["profile", "--table", str(table_path)]) == 0
    assert "corrected_loo" in capsys.readouterr().out
    # an existing table is not overwritten by accident
    assert main(["profile", "--space", "sst_tiny", "--target", "cpu-fp32", "--out", str(table_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_invalid_table_lists_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "sst-edge/latency-table", "version": 1, "space": "sst_tiny"}))
    with pytest.raises(SSTEdgeError) as e:
        read_table(bad)
    assert str(bad) in str(e.value) and "'fixed' is a required property" in str(e.value)
    with pytest.raises(SSTEdgeError, match="no such table"):
        read_table("no_such_table")


# ------------------------------------------------------------------------------------- other backends
def test_torch_backend_profile(tiny) -> None:
    t = profile_space(tiny, load_target("cpu-fp32"), backend="torch", policy=QUICK, progress=False)
    assert t.backend == "torch" and t.fingerprint["execution_provider"] == "torch-cpu"
    assert "opset" not in t.timing and t.predict_ms(samples(tiny, 1)[0]) > 0


def test_int8_profile_and_torch_int8_refused(tiny) -> None:
    t = profile_space(tiny, load_target("cpu-int8"), policy=QUICK, progress=False)
    assert t.fingerprint["precision"] == "int8" and t.target["name"] == "cpu-int8"
    with pytest.raises(SSTEdgeError, match="int8"):
        profile_space(tiny, load_target("cpu-int8"), backend="torch", policy=QUICK, progress=False)


# ------------------------------------------------------------------------------------------ arithmetic
def test_correction_fit_recovers_scale_and_offset() -> None:
    raw = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]
    measured = [1.1 * r + 0.3 for r in raw]
    c = fit_correction(raw, measured)
    assert c is not None and c.kind == "affine"
    assert c.scale == pytest.approx(1.1, abs=1e-6) and c.offset_ms == pytest.approx(0.3, abs=1e-6)
    assert fit_correction(raw[:3], measured[:3]).kind == "scale"  # too few subnets for an offset
    assert fit_correction([1.0], [2.0]) is None
    loo = leave_one_out(raw, measured)
    assert loo == pytest.approx(measured, rel=1e-6)
    assert accuracy(loo, measured)["within_5pct"] == 1.0
    assert Correction.from_dict(c.to_dict()) == c


def test_timing_statistics() -> None:
    t = Timing.from_samples([float(i) for i in range(1, 101)])
    assert (t.p10_ms, t.median_ms, t.p90_ms, t.count) == (10.9, 50.5, 90.1, 100)
    assert median_ci_halfwidth([1.0] * 50) == 0
    assert median_ci_halfwidth([1.0, 2.0]) == float("inf")


def test_load_meter_reads_this_machine() -> None:
    import time

    from sst_edge.device.background import BackgroundLog, LoadMeter, wait_quiet

    # A child that spins for the whole window is background load: at least a good part of a core of it is
    # seen (the host is shared, so not exactly 1), and never more than the machine has.
    burn = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.6: pass"
    child = subprocess.Popen([sys.executable, "-c", burn])
    time.sleep(0.05)
    meter = LoadMeter()
    time.sleep(0.4)
    load = meter.cores()
    child.wait()
    if sys.platform == "linux":  # /proc/stat: the meter has something to read
        assert load is not None and 0.3 <= load <= os.cpu_count() + 0.5
    else:
        assert load is None or load >= 0
    assert wait_quiet(threshold=float("inf"), max_wait_s=0, window_s=0.01)
    log = BackgroundLog(0.25, loads=[0.1, 0.3], redone=1, disturbed=1)
    assert log.to_dict() == {"threshold_cores": 0.25, "rounds": 2, "redone": 1, "disturbed": 1,
                             "mean_cores": 0.2, "max_cores": 0.3}


def test_random_subnets_are_distinct(tiny) -> None:
    subs = random_subnets(tiny, 12, seed=0)
    assert len({tuple(s.items()) for s in subs}) == 12
