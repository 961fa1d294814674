"""Property-based hostile input (Hypothesis): malformed documents, odd labels, odd numbers, damaged files and
failing disks against every reader. The property, for each generated case: `sst-edge` exits 0, or exits 2
with one named error; never a traceback or an internal error; and a gallery it failed to change is
byte-identical. Each reader runs a bounded number of examples (see `EXAMPLES`) so the suite fits CI; the
counts actually run are printed by the last test (run with -s to see them)."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import stat
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_edits import external_data, extra_input, flat_output, renamed_input, variant

from sst_edge.cli import main
from sst_edge.device.card import CARD_FILE
from sst_edge.device.datasets import load_splits
from sst_edge.resources import resolve
from sst_edge.runtime import verbs
from sst_edge.runtime.gallery import FEATURES_DIR, INDEX_FILE

EXAMPLES = 60
CASES: Counter[str] = Counter()
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


# ----------------------------------------------------------------------------------------- strategies
ODD_TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", " ", "unknown", "UNKNOWN", "\x1b[2J", "a\nb", "\u202e", "x" * 300, "../../etc", "\x00", "😀"])
ODD_NUMBERS = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([0, -1, 1e308, -0.0, 12.0, True, False]))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | ODD_NUMBERS | ODD_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
    max_leaves=8)


def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) into a JSON document, the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def damaged(draw: st.DrawFn, doc: Any) -> bytes:
    """`doc` with one random edit (a value replaced, a key removed or added), or its bytes damaged."""
    doc = json.loads(json.dumps(doc))
    how = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "truncate", "bytes"]))
    text = json.dumps(doc)
    if how == "truncate":
        return text.encode()[:draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "bytes":
        raw = bytearray(text.encode())
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    where = draw(st.sampled_from(paths(doc)))
    if not where:
        return json.dumps(draw(JSON_VALUES), allow_nan=True).encode()
    parent = doc
    for k in where[:-1]:
        parent = parent[k]
    key = where[-1]
    if how == "delete" and isinstance(parent, dict):
        del parent[key]
    elif how == "add" and isinstance(parent, dict):
        parent[draw(ODD_TEXT)] = draw(JSON_VALUES)
    else:
        parent[key] = draw(JSON_VALUES)
    return json.dumps(doc, allow_nan=True).encode()  # NaN/Infinity as a careless writer would


# --------------------------------------------------------------------------------------------- helpers
def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.err


def holds(code: int, err: str) -> None:
    """The property: success, or exit 2 with one named error; never a traceback or an internal error."""
    assert code in (0, 2), f"exit {code}: {err}"
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 2:
        assert "error:" in err, err
        assert "\x1b" not in err and "\x07" not in err, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sst-prop-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def small_gallery(exported_model: Path, synth_dataset: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    test = load_splits(synth_dataset)["test"]
    g = tmp_path_factory.mktemp("prop") / "g"
    for c in test.classes[:3]:
        verbs.enroll(exported_model, g, c, test.clips[c][:2], progress=False)
    return g


@pytest.fixture(scope="module")
def query_clip(synth_dataset: Path) -> Path:
    test = load_splits(synth_dataset)["test"]
    return test.clips[test.classes[0]][5]


# ------------------------------------------------------------------------------------ one per reader
@SETTINGS
@given(data=st.data())
def test_subnet_documents(data: st.DataObject, tiny_subnet: Path, capsys) -> None:
    blob = data.draw(damaged(json.loads(tiny_subnet.read_text())))
    with scratch() as d:
        (d / "s.json").write_bytes(blob)
        holds(*run(capsys, "space", "check", d / "s.json"))
    CASES["subnet (space check)"] += 1


@SETTINGS
@given(data=st.data())
def test_restrictions(data: st.DataObject, trained_run: Path, capsys) -> None:
    blob = data.draw(damaged(json.loads((trained_run / "restriction.json").read_text())))
    with scratch() as d:
        (d / "r.json").write_bytes(blob)
        holds(*run(capsys, "space", "sample", "--space", "sst_tiny", "--restriction", d / "r.json", "--out",
                   d / "out.json"))
    CASES["restriction (space sample --restriction)"] += 1


@SETTINGS
@given(data=st.data())
def test_latency_tables(data: st.DataObject, capsys) -> None:
    blob = data.draw(damaged(json.loads(resolve("table", "sst_tiny.cpu-fp32").read_text())))
    with scratch() as d:
        (d / "t.json").write_bytes(blob)
        holds(*run(capsys, "profile", "--table", d / "t.json", "--allow-foreign-table"))
    CASES["latency table (profile --table)"] += 1


@SETTINGS
@given(data=st.data())
def test_model_cards(data: st.DataObject, exported_model: Path, small_gallery: Path, capsys) -> None:
    blob = data.draw(damaged(json.loads((exported_model / CARD_FILE).read_text())))
    with scratch() as d:
        shutil.copytree(exported_model, d / "m")
        (d / "m" / CARD_FILE).write_bytes(blob)
        holds(*run(capsys, "gallery", "list", small_gallery, "--model", d / "m"))
    CASES["model card (gallery list --model)"] += 1


@SETTINGS
@given(data=st.data())
def test_gallery_indexes(data: st.DataObject, small_gallery: Path, capsys) -> None:
    """Read (list) and write (rename) a gallery with a damaged index: a failed write changes nothing."""
    blob = data.draw(damaged(json.loads((small_gallery / INDEX_FILE).read_text())))
    with scratch() as d:
        g = d / "g"
        shutil.copytree(small_gallery, g)
        (g / INDEX_FILE).write_bytes(blob)
        holds(*run(capsys, "gallery", "list", g))
        before = snapshot(g)
        first = next(iter(json.loads((small_gallery / INDEX_FILE).read_text())["labels"]))
        code, err = run(capsys, "gallery", "rename", g, first, "renamed")
        holds(code, err)
        if code != 0:
            assert snapshot(g) == before
    CASES["gallery index (gallery list, gallery rename)"] += 1


@SETTINGS
@given(data=st.data())
def test_feature_files(data: st.DataObject, exported_model: Path, small_gallery: Path, query_clip: Path,
                       capsys) -> None:
    """A damaged feature file (truncated, grown, bytes changed) is refused by name when classifying."""
    with scratch() as d:
        g = d / "g"
        shutil.copytree(small_gallery, g)
        files = sorted((g / FEATURES_DIR).iterdir())
        f = files[data.draw(st.integers(0, len(files) - 1))]
        raw = bytearray(f.read_bytes())
        how = data.draw(st.sampled_from(["truncate", "grow", "bytes"]))
        if how == "truncate":
            raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
        elif how == "grow":
            raw += bytes(data.draw(st.integers(1, 1 << 20)))
        else:
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        f.write_bytes(bytes(raw))
        code, err = run(capsys, "classify", "--model", exported_model, "--gallery", g, query_clip)
        holds(code, err)
        assert code == 2 and f.name in err  # a damaged file is never used
    CASES["feature file (classify)"] += 1


@SETTINGS
@given(label=ODD_TEXT)
def test_odd_labels(label: str, small_gallery: Path, capsys) -> None:
    with scratch() as d:
        g = d / "g"
        shutil.copytree(small_gallery, g)
        before = snapshot(g)
        first = next(iter(json.loads((g / INDEX_FILE).read_text())["labels"]))
        code, err = run(capsys, "gallery", "rename", g, first, label)
        holds(code, err)
        if code == 0:
            assert label in json.loads((g / INDEX_FILE).read_text())["labels"]
            holds(*run(capsys, "gallery", "list", g))
        else:
            assert snapshot(g) == before
    CASES["label (gallery rename)"] += 1


NUMBER_TEXT = ODD_NUMBERS.map(str) | st.sampled_from(["nan", "inf", "-inf", "1e309", "0x10", "", " 2", "1_0"])


@settings(SETTINGS, max_examples=EXAMPLES // 3)
@given(opt=st.sampled_from(["--span", "--stride", "--top", "--threshold", "--smooth", "--min-shots",
                            "--threads"]), value=NUMBER_TEXT)
def test_odd_numbers(opt: str, value: str, exported_model: Path, small_gallery: Path, query_clip: Path,
                     capsys) -> None:
    code, err = run(capsys, "classify", "--model", exported_model, "--gallery", small_gallery, "--stream",
                    "--unit", "frames", query_clip, f"{opt}={value}")
    holds(code, err)
    if code == 0 and opt in ("--span", "--stride"):
        assert math.isfinite(float(value)) and float(value) > 0
    CASES["number option (classify --stream)"] += 1


@settings(SETTINGS, max_examples=EXAMPLES // 2)
@given(fail_at=st.integers(1, 6), code=st.sampled_from([errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EIO]),
       verb=st.sampled_from(["enroll", "remove", "rename"]))
def test_failing_disk(fail_at: int, code: int, verb: str, exported_model: Path, small_gallery: Path,
                      synth_dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The fault-th file operation of a gallery write fails with ENOSPC, EACCES, EROFS or EIO (patched at
    the OS call: this machine has no small tmpfs to fill): the write reports it and changes nothing."""
    import sst_edge.fileio as fileio

    test = load_splits(synth_dataset)["test"]
    with scratch() as d:
        g = d / "g"
        shutil.copytree(small_gallery, g)
        before = snapshot(g)
        calls = {"n": 0}
        real_replace, real_mkstemp = os.replace, tempfile.mkstemp

        def faulty(real):
            def call(*a, **k):
                calls["n"] += 1
                if calls["n"] == fail_at:
                    raise OSError(code, os.strerror(code), str(a[0]) if a else None)
                return real(*a, **k)
            return call

        with monkeypatch.context() as m:
            m.setattr(fileio.os, "replace", faulty(real_replace))
            m.setattr(fileio.tempfile, "mkstemp", faulty(real_mkstemp))
            first = next(iter(json.loads((g / INDEX_FILE).read_text())["labels"]))
            args = {"enroll": ["enroll", "--model", exported_model, "--gallery", g, "--label", "new",
                               "--no-progress", *test.clips[test.classes[4]][:2]],
                    "remove": ["gallery", "remove", g, "--label", first],
                    "rename": ["gallery", "rename", g, first, "other"]}[verb]
            result, err = run(capsys, *args)
        holds(result, err)
        if result != 0:
            assert snapshot(g) == before
        else:
            assert calls["n"] < fail_at  # the fault never came: the write was done in fewer calls
    CASES["failing disk (enroll / remove / rename)"] += 1


# --------------------------------------------------------------------------------------- zip archives
def _png(level: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (level, level, level)).save(buf, "PNG")
    return buf.getvalue()


FRAME_NAMES = st.builds(lambda c, k, i: f"{c}/{k}/{i:08d}.png", st.sampled_from(["walk", "run"]),
                        st.sampled_from(["c1", "c2"]), st.integers(1, 4))
ODD_MEMBER_NAMES = st.sampled_from(["/abs/c1/00000001.png", "../up/c1/00000001.png",
                                    "walk/../c1/00000001.png", "walk/c1/", "walk\\c1\\00000001.png",
                                    "C:/walk/c1/00000001.png",
                                    "walk/c1/.hidden.png", "walk/c1/notes.txt", "walk/c1/00000001.PNG",
                                    "walk/c1/1.png", "walk\nc1/00000001.png", "walk/c\u202e1/00000001.png"])
RANDOM_NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=24)
MEMBER_BOUND = 1 << 16  # the frame-image bound of these examples, so that sizes cross it cheaply


@st.composite
def zip_members(draw: st.DrawFn) -> list[tuple[str, bytes, int, bool]]:
    """Members (name, content, compression, is a symbolic link): frame images of small clips, odd names,
    random names, contents from real PNGs to zeros that deflate a thousandfold, duplicates, symlinks."""
    n = draw(st.integers(1, 8))
    out = []
    for _ in range(n):
        name = draw(FRAME_NAMES | ODD_MEMBER_NAMES | RANDOM_NAMES)
        kind = draw(st.sampled_from(["png", "png", "zeros", "random", "png header", "empty", "link"]))
        size = draw(st.integers(0, 3 * MEMBER_BOUND))
        content = {"png": _png(draw(st.integers(0, 255))), "zeros": bytes(size),
                   "random": draw(st.binary(min_size=0, max_size=512)) * (size // 512 + 1),
                   "png header": b"\x89PNG\r\n\x1a\n" + bytes(size), "empty": b"",
                   "link": b"../../../../etc/passwd"}[kind]
        method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
        out.append((name, content, method, kind == "link"))
        if draw(st.booleans()) and draw(st.booleans()):  # a quarter of them given twice
            out.append((name, draw(st.sampled_from([content, _png(7)])), method, False))
    return out


def write_zip(path: Path, members: list[tuple[str, bytes, int, bool]]) -> None:
    import warnings

    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as z:
        warnings.simplefilter("ignore")  # "Duplicate name": the point of some examples
        for name, content, method, link in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            if link:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, content)


def unusable_names(members: list[tuple[str, bytes, int, bool]]) -> list[str]:
    """The member names no folder tree can hold, worked out here: absolute ones (a leading slash or
    backslash, a drive), those with a '..' part, symbolic links, and names given twice."""
    out, seen = [], set()
    for name, _, _, link in members:
        parts = name.replace("\\", "/").split("/")
        if (name[:1] in ("/", "\\") or (len(parts[0]) == 2 and parts[0][1] == ":") or ".." in parts or link
                or name.rstrip("/") in seen):
            out.append(name)
        seen.add(name.rstrip("/"))
    return out


@settings(SETTINGS, max_examples=EXAMPLES // 2)
@given(members=zip_members(), clip=st.sampled_from(["walk/c1", "run/c2", "walk", "abs/c1", "up/c1", ""]))
def test_zip_archives(members: list[tuple[str, bytes, int, bool]], clip: str, exported_model: Path,
                      monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A dataset zip of random members: enrolling a clip from it, and checking it, exits 0 (or 1: data
    check's problems found, listed) or 2 with a named error; the archive is never changed."""
    from sst_edge.device import frames

    monkeypatch.setattr(frames, "IMAGE_MAX_BYTES", MEMBER_BOUND)
    with scratch() as d:
        write_zip(d / "data.zip", members)
        before = snapshot(d)
        code, err = run(capsys, "enroll", "--model", exported_model, "--gallery", d / "g", "--label", "x",
                        "--no-progress", d / "data.zip" / clip)
        holds(code, err)
        assert code == 0 or not (d / "g").exists()
        code, err = run(capsys, "data", "check", d / "data.zip")
        assert code in (0, 1, 2) and "Traceback" not in err and "internal error" not in err, err
        if unusable_names(members):  # an archive that cannot be read as a folder tree is refused whole
            holds(code, err)
            assert code == 2 and "refusing this zip archive" in err, err
        assert {k: v for k, v in snapshot(d).items() if not k.startswith("g/")} == before
    CASES["zip archive (enroll from it, data check)"] += 1


# -------------------------------------------------------------------------------------- model folders
VARIANTS = {"as exported": None, "extra input": extra_input, "renamed input": renamed_input,
            "2-D output": flat_output, "external data, listed": external_data(True),
            "external data, unlisted": external_data(False)}
CARD_EDITS = st.sampled_from([
    ("input", "shape", 0), ("input", "shape", 1), ("input", "shape", 3), ("input", "shape", 4),
    ("output", "shape", 0), ("output", "shape", 1), ("output", "shape", 2), ("input", "dtype"),
    ("output", "dtype"), ("input", "name"), ("output", "name"), ("preprocess", "frames"),
    ("preprocess", "size"), ("preprocess", "resize")])
CARD_VALUES = st.sampled_from([1, 2, 3, 4, 8, 32, 63, 64, 96, 200, "batch", "float16", "int64", "float32",
                               "input", "output", "clips", 0, -1, None])


@pytest.fixture(scope="module")
def model_variants(exported_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("variants")
    return {k: exported_model if f is None else variant(exported_model, tmp / k.replace(" ", "_"), f)
            for k, f in VARIANTS.items()}


@settings(SETTINGS, max_examples=EXAMPLES // 2)
@given(variant=st.sampled_from(list(VARIANTS)), verb=st.sampled_from(["enroll", "classify", "eval"]),
       edits=st.lists(st.tuples(CARD_EDITS, CARD_VALUES), max_size=3))
def test_model_folders(variant: str, edits: list[tuple[tuple, Any]], verb: str,
                       model_variants: dict[str, Path], small_gallery: Path, query_clip: Path,
                       synth_dataset: Path, capsys) -> None:
    """A model folder whose card and model disagree (an edited card, an extra or renamed input, a 2-D
    output, external data listed or not): every runtime verb exits 0 or 2 with a named error, and
    nothing outside its output folder changes (the model, the gallery it reads, the clip)."""
    with scratch() as d:
        m = d / "m"
        shutil.copytree(model_variants[variant], m)
        card = json.loads((m / CARD_FILE).read_text())
        for (*where, key), value in edits:
            target = card
            for k in where:
                target = target[k]
            target[key] = value
        (m / CARD_FILE).write_text(json.dumps(card))
        before, gallery_before = snapshot(d), snapshot(small_gallery)
        args = {"enroll": ["enroll", "--model", m, "--gallery", d / "g", "--label", "x", "--no-progress",
                           query_clip],
                "classify": ["classify", "--model", m, "--gallery", small_gallery, query_clip],
                "eval": ["eval", "--model", m, "--data", synth_dataset, "--episodes", "2",
                         "--no-progress"]}[verb]
        code, err = run(capsys, *args)
        holds(code, err)
        if variant in ("extra input", "renamed input", "2-D output", "external data, unlisted"):
            assert code == 2, f"{variant}: exit {code}"
        assert {k: v for k, v in snapshot(d).items() if not k.startswith("g/")} == before
        assert snapshot(small_gallery) == gallery_before
        assert code == 0 or not (d / "g").exists()
    CASES["model folder, card vs model (enroll / classify / eval --model)"] += 1


def test_zz_report_cases() -> None:
    """Prints how many generated cases each reader took (run with -s)."""
    print("\nHypothesis cases per reader: " + ", ".join(f"{k}: {v}" for k, v in sorted(CASES.items())))
    assert not CASES or all(v >= 1 for v in CASES.values())
