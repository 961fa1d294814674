"""Hostile input and faults (issue 18): every failure named with exit 2, no false success, nothing of the
user's lost. One regression test per defect found by the probe of the landed main (A to H and the smaller
ones); each failed there and passes here."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from sst_edge.cli import main
from sst_edge.device.card import CARD_FILE, MODEL_FILE, file_record
from sst_edge.device.datasets import load_splits
from sst_edge.runtime.gallery import FEATURES_DIR, INDEX_FILE


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (the lock file, which holds nothing, included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run `sst-edge ARGS` in this process: (exit status, stdout, stderr). argparse errors exit 2 too."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_named_error(code: int, err: str, *words: str) -> None:
    assert code == 2, f"expected exit 2, got {code}: {err}"
    assert "Traceback" not in err and "internal error" not in err, err
    for w in words:
        assert w in err, f"{w!r} not in: {err}"


@pytest.fixture(scope="module")
def clips(synth_dataset: Path) -> dict[str, list[Path]]:
    test = load_splits(synth_dataset)["test"]
    return {c: list(test.clips[c]) for c in test.classes}


@pytest.fixture
def gallery(exported_model: Path, clips: dict[str, list[Path]], tmp_path: Path,
            capsys: pytest.CaptureFixture[str]) -> Path:
    """A gallery of two labels x 2 clips, made through the CLI."""
    g = tmp_path / "g"
    for label in list(clips)[:2]:
        code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", g, "--label", label,
                           "--no-progress", *clips[label][:2])
        assert code == 0, err
    return g


# ---------------------------------------------------------------------- A: enroll fails, commits nothing
def test_a_failed_enroll_leaves_the_gallery_byte_identical(gallery: Path, exported_model: Path, clips,
                                                          capsys) -> None:
    victim = sorted((gallery / FEATURES_DIR).iterdir())[0]
    victim.unlink()
    before = snapshot(gallery)
    label = list(clips)[3]
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", gallery, "--label", label,
                       "--no-progress", *clips[label][:3])
    assert_named_error(code, err, "missing", "nothing was enrolled", victim.name)
    assert snapshot(gallery) == before


def test_a_a_failing_commit_deletes_its_new_files(gallery: Path, exported_model: Path, clips, capsys,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC on the second new feature file: exit 2, and the first one is gone again."""
    import sst_edge.runtime.gallery as gallery_mod

    real = gallery_mod.atomic_write_bytes
    calls = {"n": 0}

    def full_disk(path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    before = snapshot(gallery)
    monkeypatch.setattr(gallery_mod, "atomic_write_bytes", full_disk)
    label = list(clips)[3]
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", gallery, "--label", label,
                       "--no-progress", *clips[label][:3])
    assert_named_error(code, err, "no space left on the device", "nothing was enrolled")
    assert calls["n"] == 2 and snapshot(gallery) == before


def test_a_read_only_gallery_is_named(gallery: Path, exported_model: Path, clips, capsys,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import sst_edge.runtime.gallery as gallery_mod

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    before = snapshot(gallery)
    monkeypatch.setattr(gallery_mod, "atomic_write_bytes", read_only)
    label = list(clips)[3]
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", gallery, "--label", label,
                       "--no-progress", clips[label][0])
    assert_named_error(code, err, "read-only file system", str(gallery))
    monkeypatch.setattr(gallery_mod, "atomic_write_json", lambda p, d: read_only(p, d))
    code, _, err = cli(capsys, "gallery", "remove", gallery, "--label", list(clips)[0])
    assert_named_error(code, err, "read-only file system", INDEX_FILE)
    assert snapshot(gallery) == before


# --------------------------------------------------------------------------- B: non-finite features
@pytest.fixture(scope="module")
def nan_model(exported_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported model with its output multiplied by NaN (as an fp16 overflow would), card updated."""
    import onnx
    from onnx import helper, numpy_helper

    out = tmp_path_factory.mktemp("nan") / "model"
    shutil.copytree(exported_model, out)
    m = onnx.load(str(out / MODEL_FILE))
    y = m.graph.output[0].name
    m.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan_scale"))
    for node in m.graph.node:
        node.output[:] = [f"{o}_pre" if o == y else o for o in node.output]
    m.graph.node.append(helper.make_node("Mul", [f"{y}_pre", "nan_scale"], [y]))
    onnx.save(m, str(out / MODEL_FILE))
    card = json.loads((out / CARD_FILE).read_text())
    card["files"][MODEL_FILE] = file_record(out / MODEL_FILE)
    (out / CARD_FILE).write_text(json.dumps(card))
    return out


def test_b_nan_features_are_refused(nan_model: Path, gallery: Path, clips, capsys, tmp_path: Path) -> None:
    label = list(clips)[3]
    code, _, err = cli(capsys, "enroll", "--model", nan_model, "--gallery", tmp_path / "new", "--label",
                       label, "--no-progress", clips[label][0])
    assert_named_error(code, err, "non-finite", str(clips[label][0]))
    assert not (tmp_path / "new").exists()
    # classify with the NaN model against a gallery of its own would need NaN features enrolled: refused
    # above; against the good model's gallery it is refused as another model's
    code, _, err = cli(capsys, "classify", "--model", nan_model, "--gallery", gallery, clips[label][0])
    assert_named_error(code, err, "another model" if "another model" in err else "model")


def test_b_nan_in_a_feature_file_is_refused(gallery: Path, exported_model: Path, clips, capsys) -> None:
    import safetensors.numpy as stn

    index = json.loads((gallery / INDEX_FILE).read_text())
    rec = next(iter(index["labels"].values()))[0]
    f = gallery / rec["file"]
    arr = stn.load(f.read_bytes())["features"]
    arr[0, 0] = np.nan
    blob = stn.save({"features": arr}, metadata={"clip": rec["id"]})
    f.write_bytes(blob)
    import hashlib

    rec["features_sha256"] = hashlib.sha256(blob).hexdigest()
    (gallery / INDEX_FILE).write_text(json.dumps(index))
    code, _, err = cli(capsys, "classify", "--model", exported_model, "--gallery", gallery,
                       clips[list(clips)[0]][3])
    assert_named_error(code, err, "non-finite", rec["id"])


# ------------------------------------------------------------------- C: forged terminal output refused
@pytest.mark.parametrize("label", ["\x1b[2J\x1b]0;pwned\x07evil", "two\nlines", "bell\x07", "x" * 300,
                                   "\u202eright-to-left"])
def test_c_hostile_labels_in_an_edited_index_are_refused(gallery: Path, exported_model: Path, clips, capsys,
                                                         label: str) -> None:
    index = json.loads((gallery / INDEX_FILE).read_text())
    first = next(iter(index["labels"]))
    index["labels"][label] = index["labels"].pop(first)
    (gallery / INDEX_FILE).write_text(json.dumps(index))
    for args in (["gallery", "list", gallery],
                 ["classify", "--model", exported_model, "--gallery", gallery, clips[first][3]]):
        code, out, err = cli(capsys, *args)
        assert_named_error(code, err, "not a valid gallery index", "labels")
        assert "\x1b" not in out + err and "\x07" not in out + err and "\u202e" not in out + err
        assert label not in err  # escaped or cut, never raw
        assert max(len(line) for line in err.splitlines()) < 400


def test_c_hostile_source_is_refused(gallery: Path, capsys) -> None:
    index = json.loads((gallery / INDEX_FILE).read_text())
    next(iter(index["labels"].values()))[0]["source"] = "/v/clip.mp4\n  fake line\x1b[31m"
    (gallery / INDEX_FILE).write_text(json.dumps(index))
    code, out, err = cli(capsys, "gallery", "list", gallery)
    assert_named_error(code, err, "source")
    assert "\x1b" not in out + err


# ------------------------------------------------------------------------- D: the user's files survive
def test_d_user_files_in_features_are_never_deleted(exported_model: Path, clips, capsys,
                                                    tmp_path: Path) -> None:
    u = tmp_path / "u"
    (u / FEATURES_DIR).mkdir(parents=True)
    mine = {u / FEATURES_DIR / "my_embeddings.safetensors": b"mine",
            u / FEATURES_DIR / "0123456789ab.safetensors.bak": b"also mine"}
    for f, data in mine.items():
        f.write_bytes(data)
    label = list(clips)[0]
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", u, "--label", label,
                       "--no-progress", clips[label][0])
    assert_named_error(code, err, "not a gallery", "my_embeddings.safetensors")
    assert all(f.read_bytes() == data for f, data in mine.items())
    assert sorted(p.name for p in (u / FEATURES_DIR).iterdir()) == sorted(f.name for f in mine)


def test_d_a_file_left_in_an_existing_gallery_is_kept(gallery: Path, exported_model: Path, clips,
                                                      capsys) -> None:
    mine = gallery / FEATURES_DIR / "notes.txt"
    mine.write_text("my notes")
    before = snapshot(gallery)
    label = list(clips)[0]
    code, _, err = cli(capsys, "gallery", "remove", gallery, "--label", label)
    assert_named_error(code, err, "did not create", "notes.txt")
    assert snapshot(gallery) == before
    mine.unlink()
    code, _, err = cli(capsys, "gallery", "remove", gallery, "--label", label)
    assert code == 0, err


# ------------------------------------------------------------------------------ E: named, not traced
def test_e_unreadable_files_are_named(gallery: Path, exported_model: Path, clips, capsys,
                                      tmp_path: Path) -> None:
    index = gallery / INDEX_FILE
    index.unlink()
    os.symlink(index, index)  # a symlink loop
    code, _, err = cli(capsys, "gallery", "list", gallery)
    assert_named_error(code, err, "symbolic link loop", INDEX_FILE)
    index.unlink()
    index.mkdir()
    code, _, err = cli(capsys, "gallery", "list", gallery)
    assert_named_error(code, err, "not a regular file", INDEX_FILE)
    model = tmp_path / "m"
    shutil.copytree(exported_model, model)
    (model / MODEL_FILE).unlink()
    os.symlink(model / MODEL_FILE, model / MODEL_FILE)
    code, _, err = cli(capsys, "enroll", "--model", model, "--gallery", tmp_path / "g2", "--label", "a",
                       clips[list(clips)[0]][0])
    assert_named_error(code, err, "symbolic link loop", MODEL_FILE)


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["input"].__setitem__("shape", ["batch", "8", 3, 64, 64]), ["input.shape[1]", "integer"]),
    (lambda c: c["files"].__setitem__(MODEL_FILE, "abc"), ["files.model.onnx", "object"]),
    (lambda c: c["files"].__setitem__("../../etc/passwd", c["files"][MODEL_FILE]),
     ["files", "does not match"]),
    (lambda c: c["head"].__setitem__("tau", -1), ["head.tau"]),
    (lambda c: c.__setitem__("version", 3), ["version 3 is not supported", "1 or 2"]),
    (lambda c: c.__setitem__("lateness", {"ms": 1}), ["lateness"]),  # an unknown section is named
    (lambda c: c["cost"].pop("gflops"), ["cost", "gflops"]),
    (lambda c: c["latency"].__setitem__("measured", {"median_ms": 2.0}), ["latency.measured"]),
    (lambda c: c["preprocess"].__setitem__("frames", 8.0), ["preprocess.frames", "integer"]),
])
def test_e_wrong_types_in_a_card_are_named(exported_model: Path, tmp_path: Path, clips, capsys, edit,
                                           words) -> None:
    model = tmp_path / "m"
    shutil.copytree(exported_model, model)
    card = json.loads((model / CARD_FILE).read_text())
    edit(card)
    (model / CARD_FILE).write_text(json.dumps(card))
    code, _, err = cli(capsys, "enroll", "--model", model, "--gallery", tmp_path / "g", "--label", "a",
                       clips[list(clips)[0]][0])
    assert_named_error(code, err, CARD_FILE, *words)
    assert not (tmp_path / "g").exists()


def test_e_documents_nested_too_deep_or_non_finite(tmp_path: Path, capsys, tiny_subnet: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = cli(capsys, "space", "check", deep)
    assert_named_error(code, err, "nested too deeply", str(deep))
    doc = json.loads(tiny_subnet.read_text())
    doc["metrics"] = {"latency_ms": float("nan")}
    bad = tmp_path / "nan.json"
    bad.write_text(json.dumps(doc))  # Python writes NaN, which is not JSON
    code, _, err = cli(capsys, "space", "check", bad)
    assert_named_error(code, err, "metrics.latency_ms: nan is not a JSON number")
    doc = json.loads(tiny_subnet.read_text())
    doc["space"] = 7
    bad.write_text(json.dumps(doc))
    code, _, err = cli(capsys, "space", "check", bad)
    assert_named_error(code, err, "space", "string")


@pytest.mark.parametrize("opt", [["--span", "nan"], ["--stride", "inf"], ["--span", "-1"], ["--top", "0"],
                                 ["--top", "-1"], ["--threshold", "nan"], ["--smooth", "0"]])
def test_e_bad_numbers_on_the_command_line(gallery: Path, exported_model: Path, clips, capsys, opt) -> None:
    code, _, err = cli(capsys, "classify", "--model", exported_model, "--gallery", gallery, "--stream",
                       clips[list(clips)[0]][0], *opt)
    assert_named_error(code, err, opt[0])


def test_e_data_check_on_a_symlink_loop(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    os.symlink(data / "a" / "loop.mp4", data / "a" / "loop.mp4")
    code, out, err = cli(capsys, "data", "check", data)
    assert code in (1, 2) and "Traceback" not in err and "internal error" not in err
    assert "symbolic link loop" in out + err


# --------------------------------------------------------------- F: space check and export agree
@pytest.mark.parametrize("value", [12.0, True, "12"])
def test_f_space_check_is_strict_about_types(tiny_subnet: Path, tmp_path: Path, capsys, value) -> None:
    doc = json.loads(tiny_subnet.read_text())
    label = next(k for k in doc["sample"] if k.endswith("_heads"))
    doc["sample"][label] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, _, err = cli(capsys, "space", "check", bad)
    assert_named_error(code, err, label)


def test_f_a_newer_subnet_format_is_refused(tiny_subnet: Path, tmp_path: Path, capsys) -> None:
    doc = json.loads(tiny_subnet.read_text())
    doc["version"] = 2
    bad = tmp_path / "v2.json"
    bad.write_text(json.dumps(doc))
    code, _, err = cli(capsys, "space", "check", bad)
    assert_named_error(code, err, "version")


# --------------------------------------------------------------- G: tables finite and complete
@pytest.mark.parametrize("edit, words", [
    (lambda t: t.__setitem__("correction", {"kind": "affine", "scale": "NaN", "offset_ms": 0.0,
                                            "fitted_on": 3}), ["correction"]),
    (lambda t: t["stages"][0]["blocks"]["sab"].__setitem__("6", {"median_ms": 1e400, "p10_ms": 1,
                                                                  "p90_ms": 1, "count": 3}),
     ["stages[0].blocks.sab.6.median_ms: inf"]),
    (lambda t: t["stages"][0]["blocks"]["sab"].pop("6"), ["lacks", "stage 1 block sab/6"]),
    (lambda t: t["fixed"].pop("head"), ["lacks", "fixed part head"]),
])
def test_g_non_finite_or_incomplete_tables_are_refused(tmp_path: Path, capsys, edit, words) -> None:
    from sst_edge.resources import resolve

    table = json.loads(resolve("table", "sst_tiny.cpu-fp32").read_text())
    edit(table)
    bad = tmp_path / "bad.json"
    text = json.dumps(table).replace('"NaN"', "NaN").replace("1e400", "Infinity").replace("inf", "Infinity")
    bad.write_text(text)
    code, _, err = cli(capsys, "profile", "--table", bad, "--allow-foreign-table")
    assert_named_error(code, err, str(bad), *words)


def test_g_no_nan_is_ever_written(tmp_path: Path) -> None:
    from sst_edge.errors import SSTEdgeError
    from sst_edge.fileio import atomic_write_json

    with pytest.raises(SSTEdgeError, match="non-finite"):
        atomic_write_json(tmp_path / "card.json", {"latency": {"ms": float("nan")}})
    assert not (tmp_path / "card.json").exists()


# ------------------------------------------------------------ H: sizes are checked before reading
def test_h_a_huge_feature_file_is_refused_unread(gallery: Path, exported_model: Path, clips, capsys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import sst_edge.runtime.gallery as gallery_mod

    f = sorted((gallery / FEATURES_DIR).iterdir())[0]
    with open(f, "r+b") as h:
        h.truncate(2 << 30)  # sparse: 2 GiB on paper, nothing on disk
    reads: list[Path] = []
    real = gallery_mod.read_bytes
    monkeypatch.setattr(gallery_mod, "read_bytes",
                        lambda p, *a, **k: reads.append(Path(p)) or real(p, *a, **k))
    code, _, err = cli(capsys, "classify", "--model", exported_model, "--gallery", gallery,
                       clips[list(clips)[0]][3])
    assert_named_error(code, err, f.name, "2,147,483,648 bytes")
    assert f not in reads


# ------------------------------------------------------------------------------------------ smaller
def test_long_labels_are_cut_in_errors(exported_model: Path, clips, capsys, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", tmp_path / "g", "--label",
                       "y" * 10_000, clips[list(clips)[0]][0])
    assert_named_error(code, err, "10000 characters")
    assert len(err) < 1000


def test_missing_and_looping_videos_are_told_apart(exported_model: Path, capsys, tmp_path: Path) -> None:
    loop = tmp_path / "loop.mp4"
    os.symlink(loop, loop)
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", tmp_path / "g", "--label",
                       "a", loop)
    assert_named_error(code, err, "symbolic link loop")
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", tmp_path / "g", "--label",
                       "a", tmp_path / "nope.mp4")
    assert_named_error(code, err, "not found")


def test_a_bug_is_reported_as_one(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Anything that is not bad input is a bug: exit 1, no traceback unless --debug."""
    import sst_edge.cli as cli_mod

    def boom(_args):
        raise ZeroDivisionError("division by zero")

    parser = cli_mod.build_parser()
    monkeypatch.setattr(cli_mod, "build_parser", lambda: parser)
    for action in parser._subparsers._group_actions[0].choices["gallery"]._subparsers._group_actions[0] \
            .choices.values():
        action.set_defaults(func=boom)
    code, _, err = cli(capsys, "gallery", "list", "x")
    assert code == 1 and "internal error" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "gallery", "list", "x"])
