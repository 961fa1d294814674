"""Profiling a device without torch: the host writes a bundle, the device times it, the host builds the table.

One bundle (sst_tiny on cpu-fp32, 3 validation subnets, quick policy) is written once through the CLI; each
test times or tampers with its own copy. Timings are noisy: nothing here asserts a speed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hostless import run_hostless

from sst_edge.cli import main
from sst_edge.cost.flops import extreme_sample
from sst_edge.cost.latency import check_table, fixed_keys, load_table
from sst_edge.cost.parts import block_key, space_parts
from sst_edge.cost.profile import describe, random_subnets, table_from_bundle
from sst_edge.device.bundle import make_input, read_bundle, read_timings, run_bundle
from sst_edge.device.targets import load_target, parse_target
from sst_edge.device.timing import Timing
from sst_edge.errors import SSTEdgeError
from sst_edge.fileio import sha256_file
from sst_edge.space.config import load_space
from sst_edge.space.subnet import load_subnet
from sst_edge.train.artifacts import run_restriction

JETSON = {"cpu_model": "ARMv8 Processor rev 1 (v8l)", "cpu_count": 6, "gpu": "Orin", "machine": "aarch64"}


@pytest.fixture(scope="module")
def tiny():
    return load_space("sst_tiny")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written once by the host verb; tests copy it before changing anything."""
    d = tmp_path_factory.mktemp("bundle") / "B"
    assert main(["profile", "--space", "sst_tiny", "--target", "cpu-fp32", "--bundle", str(d),
                 "--validate", "3", "--seed", "0", "--quick", "--no-progress"]) == 0
    return d


@pytest.fixture(scope="module")
def timed_dir(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundle, timed in this process (the device step; hostless below)."""
    d = tmp_path_factory.mktemp("timed") / "B"
    shutil.copytree(bundle_dir, d)
    run_bundle(d, progress=False)
    return d


def copy(src: Path, tmp_path: Path, name: str = "B") -> Path:
    return Path(shutil.copytree(src, tmp_path / name))


def timing_of(doc: dict, key: str) -> Timing:
    return Timing.from_dict(doc["timings"][key])


# ------------------------------------------------------------------------------------------- manifest
def test_manifest_describes_every_item(bundle_dir: Path, tiny) -> None:
    doc = json.loads((bundle_dir / "bundle.json").read_text())
    assert doc["format"] == "sst-edge/profile-bundle" and doc["version"] == 1
    assert doc["space"] == "sst_tiny" and doc["space_hash"] == tiny.hash and doc["backend"] == "onnxruntime"
    assert doc["seed"] == 0 and doc["opset"] == 17 and doc["policy"]["clock"] == "thread"
    # the device rebuilds exactly the host's target from the canonical settings
    assert parse_target(doc["target"]["settings"]).canonical() == load_target("cpu-fp32").canonical()
    assert doc["target"]["hash"] == load_target("cpu-fp32").hash
    parts = {p.key: p.input_shape for p in space_parts(tiny)}
    items = doc["items"]
    assert [i["key"] for i in items if i["kind"] == "part"] == list(parts)
    subnets = [i for i in items if i["kind"] == "subnet"]
    assert [i["sample"] for i in subnets] == random_subnets(tiny, 3, seed=0)
    assert all(tuple(i["input_shape"]) == tiny.input_shape(1) for i in subnets)
    for n, it in enumerate(items):
        f = bundle_dir / it["file"]
        assert it["sha256"] == sha256_file(f) and it["bytes"] == f.stat().st_size
        assert it["input_seed"] == n and ("sample" in it) == (it["kind"] == "subnet")
        if it["kind"] == "part":
            assert tuple(it["input_shape"]) == parts[it["key"]]
    assert not list(bundle_dir.glob("*.npy")) and not (bundle_dir / "timings.json").exists()


def test_inputs_are_made_from_the_seed() -> None:
    x = make_input([1, 4, 3, 8, 8], 7)
    assert x.dtype == np.float32 and x.shape == (1, 4, 3, 8, 8)
    assert np.array_equal(x, np.random.default_rng(7).standard_normal((1, 4, 3, 8, 8), dtype=np.float32))


# ------------------------------------------------------------------------------------------ round trip
def test_round_trip_table_has_the_device_timings(timed_dir: Path, tmp_path: Path, tiny) -> None:
    doc = json.loads((timed_dir / "timings.json").read_text())
    assert doc["manifest_sha256"] == read_bundle(timed_dir).sha256
    out = tmp_path / "t.json"
    assert main(["profile", "--from-bundle", str(timed_dir), "--out", str(out), "--no-progress"]) == 0
    table = load_table(out, config=tiny, target="cpu-fp32")  # native here: this machine timed it
    assert table.foreign == []
    # every entry of the space, each with the timing the device measured for that very part
    assert list(table.fixed) == fixed_keys(tiny)
    shapes = {it.key: list(it.input_shape) for it in read_bundle(timed_dir).items}  # checked above
    for key, (shape, t) in table.fixed.items():
        assert t == timing_of(doc, key) and shape == shapes[key]
    for st in table.stages:
        assert st.input_shape == shapes[block_key(st.stage, tiny.ops[0], tiny.heads[0])]
        for op, hs in st.blocks.items():
            assert set(hs) == set(tiny.heads)
            for h, t in hs.items():
                assert t == timing_of(doc, block_key(st.stage, op, h))
    assert table.fingerprint == doc["fingerprint"]
    assert table.timing["bundle"]["manifest_sha256"] == doc["manifest_sha256"]
    assert table.timing["background"] == doc["background"] and table.timing["policy"] == doc["policy"]
    v = table.validation
    assert v["subnets"] == 3 and [m["measured"] for m in v["measurements"]] == \
        [doc["timings"][f"subnet{i:03d}"] for i in range(3)]
    assert (tmp_path / v["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "measured on this machine (native here" in describe(table)


def test_a_jetson_table_drives_a_search_here_and_binds_its_target_and_space(
        timed_dir: Path, tmp_path: Path, tiny, trained_run: Path, synth_dataset: Path,
        capsys: pytest.CaptureFixture) -> None:
    """The device-then-host workflow: the bundle timed "on an Orin" (its fingerprint rewritten), the table
    built here and searched with here, with no --allow-foreign-table. Foreign only to what it does not
    describe."""
    d = copy(timed_dir, tmp_path)
    doc = json.loads((d / "timings.json").read_text())
    doc["fingerprint"].update(JETSON)  # as if a Jetson had run the bundle
    (d / "timings.json").write_text(json.dumps(doc))
    out = tmp_path / "jetson.json"
    assert main(["profile", "--from-bundle", str(d), "--out", str(out), "--no-progress"]) == 0
    table = load_table(out, config=tiny)
    assert table.fingerprint == doc["fingerprint"] and table.foreign == []  # the device it records
    text = describe(table)
    assert "measured on another machine" in text and "ARMv8 Processor rev 1 (v8l)" in text
    assert "drives a search here as it is" in text
    budget = 1.05 * table.predict_ms(extreme_sample(tiny, run_restriction(trained_run, tiny)))
    search = ["search", "--space", "sst_tiny", "--weights", str(trained_run), "--data", str(synth_dataset),
              "--budget-ms", f"{budget:.6f}", "--latency-table", str(out), "--trials", "2",
              "--population", "2", "--sample-size", "2", "--episodes", "3", "--no-baseline",
              "--rescore-top", "1", "--rescore-episodes", "2"]
    assert main([*search, "--out", str(tmp_path / "s")]) == 0
    best = load_subnet(tmp_path / "s" / "best.json")[0]
    assert best.metrics["latency_ms"] == table.predict_ms(best.sample) <= budget
    rec = json.loads((tmp_path / "s" / "search.json").read_text())["latency_table"]
    assert rec["target"] == "cpu-fp32" and rec["foreign"] == []
    assert rec["timed_on"] == {k: JETSON.get(k) for k in ("cpu_model", "cpu_count", "gpu", "machine")}
    assert "timed on ARMv8 Processor rev 1 (v8l), Orin" in capsys.readouterr().out
    assert main([*search, "--out", str(tmp_path / "int8"), "--target", "cpu-int8"]) == 2  # another target
    err = capsys.readouterr().err
    assert str(out) in err and "made for target 'cpu-fp32', not 'cpu-int8'" in err and "cpu_model" not in err
    assert not (tmp_path / "int8" / "best.json").exists()
    with pytest.raises(SSTEdgeError) as e:  # another space
        check_table(table, load_space("sst_plus_tiny"), "cpu-fp32")
    assert e.value.problems == ["made for space 'sst_tiny', not 'sst_plus_tiny'"]
    with pytest.raises(SSTEdgeError) as e:  # this host re-timing it: there the device counts
        check_table(table, tiny, "cpu-fp32", retime=True)
    assert "device cpu_model: table has 'ARMv8 Processor rev 1 (v8l)'" in str(e.value)
    assert "device gpu" in str(e.value)
    with pytest.warns(UserWarning, match="foreign latency table"):
        check_table(table, tiny, "cpu-fp32", allow_foreign=True, retime=True)
    assert any("cpu_model" in p for p in table.foreign)


# ------------------------------------------------------------------------------------------- refusals
def test_tampered_or_missing_file_is_named(bundle_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    d = copy(bundle_dir, tmp_path)
    f = d / "s2.sab.h12.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(SSTEdgeError) as e:
        read_bundle(d)
    assert str(f) in str(e.value) and "sha256" in str(e.value)
    assert main(["profile", "--run-bundle", str(d), "--quick", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "sst-edge: error:" in err and str(f) in err and "does not match the manifest" in err
    assert not (d / "timings.json").exists()
    (d / "embed.onnx").unlink()
    with pytest.raises(SSTEdgeError, match="embed.onnx: missing"):
        read_bundle(d)


def test_timings_of_another_bundle_refused(bundle_dir: Path, timed_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    other = copy(bundle_dir, tmp_path, "other")
    manifest = json.loads((other / "bundle.json").read_text())
    manifest["seed"] = 1  # another bundle (same files, other round order)
    (other / "bundle.json").write_text(json.dumps(manifest))
    shutil.copy(timed_dir / "timings.json", other / "timings.json")
    out = tmp_path / "t.json"
    assert main(["profile", "--from-bundle", str(other), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(other / "timings.json") in err and "belong to another bundle" in err and not out.exists()
    # a timing missing for one item
    d = copy(timed_dir, tmp_path, "incomplete")
    doc = json.loads((d / "timings.json").read_text())
    del doc["timings"]["s3.tab.h16"]
    (d / "timings.json").write_text(json.dumps(doc))
    with pytest.raises(SSTEdgeError, match="s3.tab.h16: no timing"):
        read_timings(read_bundle(d))


def test_changed_space_refused(timed_dir: Path, tmp_path: Path, tiny) -> None:
    yaml_text = Path(tiny.source).read_text().replace("mlp_ratio: 2", "mlp_ratio: 3")
    assert yaml_text != Path(tiny.source).read_text()
    edited = tmp_path / "sst_tiny.yaml"
    edited.write_text(yaml_text)
    with pytest.raises(SSTEdgeError, match="the space YAML changed"):
        table_from_bundle(timed_dir, space=edited)


def test_steps_refuse_options_they_do_not_take(bundle_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    assert main(["profile", "--run-bundle", str(bundle_dir), "--space", "sst_tiny"]) == 2
    assert "--run-bundle does not take --space" in capsys.readouterr().err
    assert main(["profile", "--from-bundle", str(bundle_dir), "--validate", "3"]) == 2
    assert "--from-bundle does not take --validate" in capsys.readouterr().err
    assert main(["profile", "--space", "sst_tiny", "--target", "cpu-fp32", "--bundle", str(bundle_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", "--bundle", str(tmp_path), "--run-bundle", str(bundle_dir)])


# ------------------------------------------------------------------------------------- the device half
def test_run_bundle_without_host_libraries(bundle_dir: Path, tmp_path: Path) -> None:
    d = copy(bundle_dir, tmp_path)
    r = run_hostless(["profile", "--run-bundle", str(d), "--quick", "--no-progress"], timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads((d / "timings.json").read_text())
    bundle = read_bundle(d)
    assert doc["manifest_sha256"] == bundle.sha256 and list(doc["timings"]) == bundle.item_keys()
    assert doc["policy"]["rounds"] == 1 and doc["policy"]["clock"] == "thread"
    assert "timings.json: 25 items of sst_tiny on cpu-fp32" in r.stdout
