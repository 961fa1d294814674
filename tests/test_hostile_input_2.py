"""Hostile input, round 2 (issue 25): one test (or a few) per defect of the second probe, numbered as the
issue numbers them; each failed on 52d1702 and passes here. Hostile inputs that could exhaust memory run
in a child process under an address-space limit this file sets (`resource.setrlimit(RLIMIT_AS)`), and
every test that feeds the user's files checks that no byte of them changed."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hostless import hostless_code
from model_edits import external_data, extra_input, flat_output, variant
from PIL import Image
from test_hostile_input import cli

import sst_edge
from sst_edge.device.card import CARD_FILE, MODEL_FILE, file_record, load_card, verify_files
from sst_edge.device.datasets import load_splits
from sst_edge.device.ood import OOD_FILE
from sst_edge.runtime.gallery import INDEX_FILE

ROOT = Path(sst_edge.__file__).resolve().parent.parent
DEVICE_LIMIT = 1536 << 20  # address space of a device verb's process (enroll peaks near 600 MiB here)
HOST_LIMIT = 3 << 30  # of a host verb's (torch: about 1.3 GiB)
CHILD_ENV = {**os.environ, "PYTHONWARNINGS": "ignore",  # a child imports this very sst_edge
             "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


# --------------------------------------------------------------------------------------------- helpers
def limited(args: Sequence[object], limit: int, hostless: bool = False,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`sst-edge ARGS` in a child process whose address space is limited to `limit` bytes (and, with
    `hostless`, where the host's libraries cannot be imported: the device half as a Jetson has it)."""
    code = f"import sys\nfrom sst_edge.cli import main\nsys.exit(main({[str(a) for a in args]!r}))\n"

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-c", hostless_code(code) if hostless else code], preexec_fn=cap,
                          capture_output=True, text=True, timeout=timeout, env=CHILD_ENV, check=False)


def named_error(code: int, err: str, *words: str) -> None:
    assert code == 2, f"expected exit 2, got {code}: {err[-3000:]}"
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    for w in words:
        assert w in err, f"{w!r} not in: {err[-3000:]}"


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `folder`: size, mtime and sha256 (of the first 64 MiB: the sparse giants of these
    tests are never read whole), symbolic links by their target."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = os.fsdecode(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = (-1, 0, os.readlink(p))
        elif p.is_file():
            st = p.stat()
            with open(p, "rb") as f:
                out[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha256(f.read(64 << 20)).hexdigest())
    return out


def png(w: int = 64, h: int = 48, level: int = 90) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (level, level, level)).save(buf, "PNG")
    return buf.getvalue()


def frame_folder(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (folder / f"{i:08d}.png").write_bytes(png(level=40 * i))
    return folder


@pytest.fixture(scope="module")
def clips(synth_dataset: Path) -> dict[str, list[Path]]:
    test = load_splits(synth_dataset)["test"]
    return {c: list(test.clips[c]) for c in test.classes}


def copy_model(exported_model: Path, dest: Path) -> Path:
    shutil.copytree(exported_model, dest)
    return dest


def edit_card(model: Path, edit) -> None:
    card = json.loads((model / CARD_FILE).read_text())
    edit(card)
    (model / CARD_FILE).write_text(json.dumps(card))


def export_args(tiny_subnet: Path, trained_run: Path, out: Path, *extra: str) -> list[object]:
    return ["export", "--subnet", tiny_subnet, "--weights", trained_run, "--target", "cpu-fp32", "--out", out,
            "--no-measure", "--no-progress", *extra]


# ----------------------------------------------------------- 1: --overwrite replaces only our models
def _folder_with_empty_card(out: Path, model: Path) -> None:
    out.mkdir()
    (out / CARD_FILE).write_text("{}")
    (out / "notes.txt").write_text("my notes")
    (out / "calibration").mkdir()
    (out / "calibration" / "clips.bin").write_bytes(b"\x01" * 1000)


def _model_with_notes(out: Path, model: Path) -> None:
    shutil.copytree(model, out)
    (out / "notes.txt").write_text("how I calibrated it")


def _model_with_a_folder(out: Path, model: Path) -> None:
    shutil.copytree(model, out)
    (out / "calib").mkdir()
    (out / "calib" / "set.npy").write_bytes(b"\x93NUMPY")


def _a_link_to_a_model(out: Path, model: Path) -> None:
    shutil.copytree(model, out.parent / "real")
    out.symlink_to(out.parent / "real")


@pytest.mark.parametrize("make, words", [
    (_folder_with_empty_card, ["notes.txt", "calibration", "card.json"]),
    (_model_with_notes, ["notes.txt"]),
    (_model_with_a_folder, ["calib"]),
    (_a_link_to_a_model, ["symbolic link"]),
])
def test_1_overwrite_never_replaces_a_folder_sst_edge_did_not_write(
        make, words, exported_model: Path, tiny_subnet: Path, trained_run: Path, tmp_path: Path,
        capsys) -> None:
    out = tmp_path / "out"
    make(out, exported_model)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, *export_args(tiny_subnet, trained_run, out, "--overwrite"))
    named_error(code, err, str(out), "refusing to replace it", "another --out", *words)
    assert snapshot(tmp_path) == before


def test_1_the_refusal_reads_nothing_large_and_changes_nothing(
        exported_model: Path, tiny_subnet: Path, trained_run: Path, tmp_path: Path) -> None:
    """The probe's case, as a user runs it, under a memory limit: a folder with card.json '{}' and the
    user's files (one of them 2 GiB, sparse) is refused by name with exit 2, every byte kept."""
    out = tmp_path / "out"
    _folder_with_empty_card(out, exported_model)
    big = out / "calibration" / "frames.raw"
    big.write_bytes(b"")
    os.truncate(big, 2 << 30)
    before = snapshot(tmp_path)
    r = limited(export_args(tiny_subnet, trained_run, out, "--overwrite"), HOST_LIMIT)
    named_error(r.returncode, r.stderr, "notes.txt", "calibration", "nothing was deleted")
    assert snapshot(tmp_path) == before


def test_1_overwrite_replaces_a_model_sst_edge_wrote(
        exported_model: Path, tiny_subnet: Path, trained_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, _, err = cli(capsys, *export_args(tiny_subnet, trained_run, out))
    assert code == 0, err
    old = (out / CARD_FILE).read_bytes()
    code, _, err = cli(capsys, *export_args(tiny_subnet, trained_run, out))
    named_error(code, err, "already exists", "--overwrite")
    assert (out / CARD_FILE).read_bytes() == old
    code, _, err = cli(capsys, *export_args(tiny_subnet, trained_run, out, "--overwrite"))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [CARD_FILE, MODEL_FILE, OOD_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no old copy, staging or lock left
    verify_files(load_card(out))


@pytest.mark.parametrize("verb", ["train", "search", "bundle"])
def test_1_run_search_and_bundle_folders_hold_only_what_we_wrote(
        verb: str, synth_dataset: Path, trained_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "old_results").mkdir()
    before = snapshot(tmp_path)
    args = {"train": ["train", "--space", "sst_tiny", "--data", synth_dataset, "--out", out, "--epochs", "1",
                      "--episodes", "2", "--no-progress"],
            "search": ["search", "--space", "sst_tiny", "--weights", trained_run, "--data", synth_dataset,
                       "--out", out, "--budget-gflops", "0.02", "--trials", "2"],
            "bundle": ["profile", "--space", "sst_tiny", "--target", "cpu-fp32", "--bundle", out]}[verb]
    code, _, err = cli(capsys, *args)
    named_error(code, err, "did not write", "notes.txt", "old_results", str(out))
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------ 2: no input can exhaust memory
@pytest.fixture(scope="module")
def giants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Clips that would make a reader allocate gigabytes: a 3 GiB image (sparse), a zip member that
    declares and holds 1.5 GiB (zeros, deflated to 7 MB) and starts like a PNG, and a small PNG whose
    header claims 15000 x 15000 pixels."""
    tmp = tmp_path_factory.mktemp("giants")
    disk = frame_folder(tmp / "data" / "big" / "disk")
    huge = disk / "00000001.png"
    huge.write_bytes(png()[:33])  # signature and IHDR of a real PNG, then nothing: 3 GiB of zeros
    os.truncate(huge, 3 << 30)
    claim = frame_folder(tmp / "data" / "big" / "claim")
    data = bytearray(png(15000, 1))
    data[20:24] = (15000).to_bytes(4, "big")  # IHDR height: 15000 x 15000 pixels, in a few hundred bytes
    (claim / "00000001.png").write_bytes(bytes(data))
    archive = tmp / "frames.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for i in range(2, 5):
            z.writestr(f"big/bomb/{i:08d}.png", png(level=30 * i))
        with z.open("big/bomb/00000001.png", "w", force_zip64=True) as f:
            f.write(png()[:33])
            zeros = bytes(1 << 20)
            for _ in range(1536):
                f.write(zeros)
    return {"disk": disk, "image": huge, "claim": claim, "zip": archive / "big" / "bomb",
            "member": archive / "big" / "bomb" / "00000001.png", "archive": archive,
            "data": tmp / "data", "tmp": tmp}


@pytest.mark.parametrize("which, shown, words", [
    ("disk", "image", ["3,221,225,472 bytes, more than the 67,108,864"]),
    ("zip", "member", ["declares 1,610,612,769 bytes"]),
    ("claim", "claim", ["15000x15000 pixels, more than the 67,108,864"]),
])
def test_2_huge_images_and_zip_members_are_refused_unread(
        which: str, shown: str, words: list[str], giants: dict[str, Path], exported_model: Path,
        tmp_path: Path) -> None:
    before = snapshot(giants["tmp"])
    r = limited(["enroll", "--model", exported_model, "--gallery", tmp_path / "g", "--label", "a",
                 "--no-progress", giants[which]], DEVICE_LIMIT, hostless=True)
    named_error(r.returncode, r.stderr, *words)
    target = giants[shown] if shown != "claim" else giants["claim"] / "00000001.png"
    assert str(target) in r.stderr
    assert snapshot(giants["tmp"]) == before and not (tmp_path / "g").exists()


def test_2_data_check_names_them_under_the_same_limit(giants: dict[str, Path]) -> None:
    before = snapshot(giants["tmp"])
    r = limited(["data", "check", giants["data"], "--json"], HOST_LIMIT)
    assert r.returncode == 1, r.stderr[-3000:]  # problems found and listed, the check went through
    report = json.loads(r.stdout)
    bad = {u["clip"]: u["reason"] for u in report["unreadable"]["big"]}
    assert "more than the 67,108,864" in bad[str(giants["image"])]
    assert "15000x15000 pixels" in bad[str(giants["claim"] / "00000001.png")]
    r = limited(["data", "check", giants["archive"], "--json"], HOST_LIMIT)
    assert r.returncode == 1, r.stderr[-3000:]
    bad = {u["clip"]: u["reason"] for u in json.loads(r.stdout)["unreadable"]["big"]}
    assert "declares 1,610,612,769 bytes" in bad[str(giants["member"])]
    assert snapshot(giants["tmp"]) == before


def test_2_a_normal_enrollment_fits_under_the_limit(exported_model: Path, clips, tmp_path: Path) -> None:
    """The control: the limit is not what refuses the giants."""
    r = limited(["enroll", "--model", exported_model, "--gallery", tmp_path / "g", "--label", "a",
                 "--no-progress", clips[next(iter(clips))][0], frame_folder(tmp_path / "frames")],
                DEVICE_LIMIT, hostless=True)
    assert r.returncode == 0, r.stderr[-3000:]


def test_2_documents_are_bounded_before_they_are_read(exported_model: Path, clips, tmp_path: Path,
                                                      capsys) -> None:
    """A 100 MB gallery index that is otherwise valid, and a 2 GiB space YAML (sparse), refused by their
    size under a memory limit; the README states the bounds."""
    g = tmp_path / "g"
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", g, "--label", "a",
                       "--no-progress", clips[next(iter(clips))][0])
    assert code == 0, err
    index = json.loads((g / INDEX_FILE).read_text())
    (g / INDEX_FILE).write_text(json.dumps({**index, "padding": "y" * (100 << 20)}))
    space = tmp_path / "space.yaml"
    space.write_text("name: huge\n")
    os.truncate(space, 2 << 30)
    before = snapshot(tmp_path)
    r = limited(["gallery", "list", g], DEVICE_LIMIT, hostless=True)
    named_error(r.returncode, r.stderr, str(g / INDEX_FILE), "more than the 67,108,864")
    r = limited(["space", "show", "--space", space], HOST_LIMIT)
    named_error(r.returncode, r.stderr, str(space), "more than the 1,048,576")
    assert snapshot(tmp_path) == before
    readme = (ROOT / "docs" / "troubleshooting.md").read_text()
    for bound in ("64 MiB", "1 MiB", "32 MiB", "1,000,000 lines", "8192 x 8192", "64 levels"):
        assert bound in readme, bound


# --------------------------------------------------------- 3: integrity covers external data
def test_3_external_data_the_card_does_not_list_is_refused(exported_model: Path, clips, tmp_path: Path,
                                                           capsys) -> None:
    m = variant(exported_model, tmp_path / "m", external_data(listed=False))
    clip = clips[next(iter(clips))][0]
    code, _, err = cli(capsys, "enroll", "--model", m, "--gallery", tmp_path / "g", "--label", "a", clip)
    named_error(code, err, "weights.bin", "not listed in the card", str(m / MODEL_FILE))
    assert not (tmp_path / "g").exists()
    edit_card(m, lambda c: c["files"].__setitem__("weights.bin", file_record(m / "weights.bin")))
    code, _, err = cli(capsys, "enroll", "--model", m, "--gallery", tmp_path / "g", "--label", "a", clip)
    assert code == 0, err
    raw = bytearray((m / "weights.bin").read_bytes())
    raw[100] ^= 0xFF  # one weight changed: every answer would change
    (m / "weights.bin").write_bytes(bytes(raw))
    code, _, err = cli(capsys, "classify", "--model", m, "--gallery", tmp_path / "g", clip)
    named_error(code, err, "weights.bin does not match the sha256")


def test_3_every_external_tensor_is_found_as_onnx_finds_it(tmp_path: Path) -> None:
    """The device half reads the locations from the protobuf itself: they must be onnx's own, for
    initializers, Constant attributes and tensors inside subgraphs (If branches)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import _get_all_tensors, set_external_data, uses_external_data

    from sst_edge.device.onnx_files import external_files, unlisted_external_data

    def const(name: str, out: str) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [out], value=numpy_helper.from_array(np.ones(4, np.float32),
                                                                                      name))

    sub = helper.make_graph([const("deep", "s")], "sub", [], [helper.make_tensor_value_info("s", 1, [4])])
    g = helper.make_graph(
        [const("top", "c"), helper.make_node("If", ["cond"], ["y"], then_branch=sub, else_branch=sub),
         helper.make_node("Add", ["x", "c"], ["z"])], "g", [helper.make_tensor_value_info("x", 1, [4])],
        [helper.make_tensor_value_info("z", 1, [4]), helper.make_tensor_value_info("y", 1, [4])],
        [numpy_helper.from_array(np.array(True), "cond"),
         numpy_helper.from_array(np.ones(4, np.float32), "w")])
    model = helper.make_model(g)
    where = {"w": "w.bin", "top": "sub/top.bin", "deep": "../deep.bin"}
    for t in _get_all_tensors(model):
        if t.name in where:
            set_external_data(t, where[t.name])
            t.data_location = TensorProto.EXTERNAL
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())  # as a hostile writer would: no files
    saved = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    expected = {e.value for t in _get_all_tensors(saved) if uses_external_data(t) for e in t.external_data
                if e.key == "location"}
    assert expected == {"w.bin", "sub/top.bin", "../deep.bin"}
    assert external_files(tmp_path / "m.onnx") == expected
    assert unlisted_external_data(tmp_path / "m.onnx", {"w.bin"}) == [
        "'../deep.bin': outside the model's folder", "'sub/top.bin': outside the model's folder"]
    assert unlisted_external_data(tmp_path / "m.onnx", set()) == [
        "'../deep.bin': outside the model's folder", "'sub/top.bin': outside the model's folder",
        "'w.bin': not listed in the card"]


# ------------------------------------------------------------------ 4: concurrent exports
def test_4_two_exports_into_one_new_folder_at_once(tiny_subnet: Path, trained_run: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "models" / "tiny"
    cmd = [sys.executable, "-m", "sst_edge.cli",
           *map(str, export_args(tiny_subnet, trained_run, out, "--json"))]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    winner = next(r for r in results if r[0] == 0)
    loser = next(r for r in results if r[0] == 2)
    named_error(2, loser[2], str(out))
    assert "another sst-edge export is writing" in loser[2] or "already exists" in loser[2]
    card = load_card(out)
    verify_files(card)
    assert card.sha256 == json.loads(winner[1])["files"][MODEL_FILE]["sha256"]  # the winner's, whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_4_an_export_while_another_holds_the_folder_fails_cleanly(
        tiny_subnet: Path, trained_run: Path, tmp_path: Path, capsys) -> None:
    """Deterministic: the lock beside --out is held (as a running export holds it); the export fails at
    once, names the folder, and writes nothing."""
    out = tmp_path / "tiny"
    with open(tmp_path / ".tiny.export.lock", "w") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        code, _, err = cli(capsys, *export_args(tiny_subnet, trained_run, out))
    named_error(code, err, "another sst-edge export is writing", str(out))
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny.export.lock"]  # the holder's, untouched


# ----------------------------------------------------------- 5: datasets stay inside their root
@pytest.fixture
def escaping(synth_dataset: Path, tmp_path: Path) -> dict[str, Path]:
    """A dataset whose split files name clips outside its root: by '..', by an absolute path and
    through a symbolic link, beside good entries; and one clip in a nested class folder that is broken."""
    full = load_splits(synth_dataset)
    root, outside = tmp_path / "data", tmp_path / "outside"
    for split in ("train", "val", "test"):
        for c in full[split].classes[:5]:
            (root / c).mkdir(parents=True)
            for p in full[split].clips[c][:3]:
                shutil.copy(p, root / c / p.name)
    (outside / "secret").mkdir(parents=True)
    victim = next(iter(full.test.clips.values()))[0]
    shutil.copy(victim, outside / "secret" / "clip.mp4")
    os.symlink(outside / "secret", root / "linked")
    (root / "deep" / "er").mkdir(parents=True)
    (root / "deep" / "er" / "broken.mp4").write_bytes(b"not a video")
    splits = root / "splits"
    splits.mkdir()
    for split in ("train", "val", "test"):
        good = [f"{c}/{p.stem}" for c in full[split].classes[:5] for p in full[split].clips[c][:3]]
        extra = (["../outside/secret/clip", f"{outside}/secret/clip", "linked/clip", "deep/er/broken"]
                 if split == "test" else [])
        (splits / f"{split}.txt").write_text("\n".join(good + extra) + "\n")
    return {"root": root, "outside": outside}


def test_5_entries_that_leave_the_root_are_refused_by_name(escaping: dict[str, Path], exported_model: Path,
                                                          capsys) -> None:
    root = escaping["root"]
    before = snapshot(root.parent)
    code, _, err = cli(capsys, "eval", "--model", exported_model, "--data", root, "--episodes", "2",
                       "--no-progress")
    named_error(code, err, "test.txt", "../outside/secret/clip", f"{escaping['outside']}/secret/clip",
                "linked/clip", "leaves the dataset root", "resolves outside the dataset root")
    code, out, err = cli(capsys, "data", "check", root, "--json")
    assert code == 1, err
    report = json.loads(out)
    problems = "\n".join(report["split_problems"])
    for entry in ("line 16: ../outside/secret/clip", "line 17:", "line 18: linked/clip"):
        assert entry in problems and "refused" in problems, problems
    # data check checks every clip a split names, also one no class folder scan finds
    assert [u["clip"] for u in report["unreadable"]["deep/er"]] == [str(root / "deep" / "er" / "broken.mp4")]
    assert snapshot(root.parent) == before


# ------------------------------------------------------------------ 6: any file name works or is named
@pytest.fixture
def odd_names(clips, tmp_path: Path) -> dict[str, Path]:
    """A clip and a broken clip whose names are not UTF-8 (bytes 0xff, 0xfe), in a class folder."""
    first = clips[next(iter(clips))][0]
    folder = tmp_path / "data" / "waves"
    folder.mkdir(parents=True)
    good = Path(os.fsdecode(os.fsencode(folder) + b"/good\xff.mp4"))
    bad = Path(os.fsdecode(os.fsencode(folder) + b"/bad\xfe.mp4"))
    shutil.copy(first, good)
    bad.write_bytes(first.read_bytes()[:300])
    for c in list(clips)[1:3]:
        shutil.copytree(first.parent.parent / c, tmp_path / "data" / c)
    return {"good": good, "bad": bad, "data": tmp_path / "data"}


def test_6_data_check_names_non_utf8_files_escaped(odd_names: dict[str, Path], capsys) -> None:
    code, out, err = cli(capsys, "data", "check", odd_names["data"], "--decoder", "auto")
    assert code == 1 and "internal error" not in err and "Traceback" not in err, err
    assert "bad\\udcfe.mp4: " in out  # the broken one, named, escaped
    code, out, err = cli(capsys, "data", "check", odd_names["data"], "--json")
    assert code == 1 and json.loads(out)["clips"]["waves"] == 2


@pytest.mark.parametrize("hostless", [False, True])
def test_6_enroll_and_classify_with_non_utf8_names(hostless: bool, odd_names: dict[str, Path], exported_model,
                                                   clips, tmp_path: Path, capsys) -> None:
    """Both installs: classify takes the clip and names it escaped; enroll refuses it by name, since the
    gallery records paths as text, and creates nothing."""
    g = tmp_path / "g"
    labels = list(clips)[:2]
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", g, "--label", labels[0],
                       "--no-progress", *clips[labels[0]][:2])
    assert code == 0, err

    def run(*args: object) -> tuple[int, str, str]:
        if not hostless:
            return cli(capsys, *args)
        r = limited(args, DEVICE_LIMIT, hostless=True)
        return r.returncode, r.stdout, r.stderr

    code, out, err = run("classify", "--model", exported_model, "--gallery", g, odd_names["good"])
    assert code == 0, err
    assert "good\\udcff.mp4: " in out
    code, out, err = run("enroll", "--model", exported_model, "--gallery", tmp_path / "g2", "--label", "w",
                         "--no-progress", odd_names["good"])
    named_error(code, err, "good\\udcff.mp4", "not UTF-8", "nothing was enrolled")
    assert not (tmp_path / "g2").exists()


# ---------------------------------------------------------- 7: the model is checked against its card
def _set(path: tuple, value):
    def edit(card: dict) -> None:
        d = card
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return edit


MISMATCHES = {
    "size": (lambda c: (_set(("input", "shape", 3), 96)(c), _set(("input", "shape", 4), 96)(c),
                        _set(("preprocess", "size"), 96)(c), _set(("preprocess", "resize"), 110)(c)), None,
             ["card says 96x96, model.onnx expects 64x64"]),
    "frames": (lambda c: (_set(("input", "shape", 1), 8)(c), _set(("output", "shape", 1), 8)(c),
                          _set(("preprocess", "frames"), 8)(c)), None,
               ["card says 8 frames, model.onnx expects 4"]),
    "features": (_set(("output", "shape", 2), 32), None, ["card says 32 features, model.onnx gives 64"]),
    "dtype": (_set(("input", "dtype"), "float16"), None,
              ["card says a float16 input, model.onnx's is float32"]),
    "name": (_set(("input", "name"), "clips"), None,
             ["card says input 'clips', model.onnx names it 'input'"]),
    "extra input": (None, extra_input, ["card says one input, model.onnx has 2 ('input', 'mask')"]),
    "2-D output": (None, flat_output, ["card says output [batch, 4, 64] (3 dimensions)",
                                         "[batch, 64] (2 dimensions)"]),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_7_a_model_that_is_not_its_card_is_named_in_every_verb(case: str, exported_model: Path, clips,
                                                               synth_dataset: Path, tmp_path: Path,
                                                               capsys) -> None:
    card_edit, onnx_edit, words = MISMATCHES[case]
    g = tmp_path / "g"
    labels = list(clips)[:2]
    for lb in labels:
        code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", g, "--label", lb,
                           "--no-progress", *clips[lb][:2])
        assert code == 0, err
    m = (variant(exported_model, tmp_path / "m", onnx_edit) if onnx_edit else
         copy_model(exported_model, tmp_path / "m"))
    if card_edit:
        edit_card(m, card_edit)
    before = snapshot(tmp_path)
    clip = clips[labels[0]][4]
    for args in (["enroll", "--model", m, "--gallery", tmp_path / "new", "--label", "a", clip],
                 ["enroll", "--model", m, "--gallery", g, "--label", labels[0], clip],
                 ["classify", "--model", m, "--gallery", g, clip],
                 ["classify", "--model", m, "--gallery", g, "--stream", clip, "--span", "1", "--stride", "1"],
                 ["eval", "--model", m, "--data", synth_dataset, "--episodes", "2", "--no-progress"]):
        code, _, err = cli(capsys, *args)
        named_error(code, err, str(m / CARD_FILE), "the model card does not describe model.onnx", *words)
        assert INDEX_FILE not in err and "gallery" not in err.split("\n")[0].replace(str(g), ""), err
    assert snapshot(tmp_path) == before and not (tmp_path / "new").exists()


# -------------------------------------------------------------------------- 8: split files are bounded
@pytest.mark.parametrize("line, n, words", [
    ("class_a/clip_0001\n", 10_000_000, ["bytes, more than the 33,554,432"]),
    ("a/b\n", 1_500_000, ["1,500,000 lines, more than the 1,000,000"])])
def test_8_a_huge_split_file_is_refused_fast(line: str, n: int, words: list[str], synth_dataset: Path,
                                             exported_model: Path, tmp_path: Path) -> None:
    splits = tmp_path / "splits"
    shutil.copytree(synth_dataset / "splits", splits)
    with open(splits / "test.txt", "w") as f:
        f.write(line * n)
    before = snapshot(tmp_path)
    t0 = time.monotonic()
    r = limited(["eval", "--model", exported_model, "--data", synth_dataset, "--split", splits, "--episodes",
                 "2", "--no-progress"], DEVICE_LIMIT, hostless=True)
    took = time.monotonic() - t0
    named_error(r.returncode, r.stderr, str(splits / "test.txt"), *words)
    assert took < 30, f"{took:.1f} s"  # the probe's 10-million-line split took 57 s and 2.9 GB
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------- 9: schemas refuse unknown keys
SHIPPED_HASHES = {"sst_tiny": "9e95b30cb538962a", "sst_paper": "226fde1d1e901b42",  # as 52d1702 computed them
                  "sst_plus": "ff00ad2deee3101f", "sst_plus_tiny": "c3fb8fd7966522de"}


@pytest.mark.parametrize("typo, words", [("mlp_ration: 4\n", ["unknown key 'mlp_ration'"]),
                                         ("stage", ["stages[2]: unknown key 'hed_dim'"]),
                                         ("input", ["input: unknown key 'fps'"])])
def test_9_a_typo_in_a_space_yaml_is_named(typo: str, words: list[str], tmp_path: Path, capsys) -> None:
    text = (ROOT / "search_spaces" / "sst_tiny.yaml").read_text()
    if typo == "stage":
        lines = text.splitlines(keepends=True)
        k = [i for i, s in enumerate(lines) if s.lstrip().startswith("- {channels")][1]
        lines[k] = lines[k].replace("head_dim", "hed_dim")
        text = "".join(lines)
    elif typo == "input":
        text = text.replace("input:\n", "input:\n  fps: 25\n")
    else:
        text += typo
    bad = tmp_path / "typo.yaml"
    bad.write_text(text)
    code, _, err = cli(capsys, "space", "show", "--space", bad)
    named_error(code, err, str(bad), "invalid search space", *words)


def test_9_shipped_spaces_keep_their_hashes() -> None:
    from sst_edge.space.config import load_space

    assert {n: load_space(n).hash for n in SHIPPED_HASHES} == SHIPPED_HASHES


@pytest.mark.parametrize("where", ["top", "model"])
def test_9_an_unknown_key_in_a_gallery_index_is_named(where: str, exported_model: Path, clips, tmp_path: Path,
                                                      capsys) -> None:
    g = tmp_path / "g"
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", g, "--label", "a",
                       "--no-progress", clips[next(iter(clips))][0])
    assert code == 0, err
    index = json.loads((g / INDEX_FILE).read_text())
    (index if where == "top" else index["model"])["labelz"] = {}
    (g / INDEX_FILE).write_text(json.dumps(index))
    before = snapshot(g)
    code, _, err = cli(capsys, "gallery", "list", g)
    named_error(code, err, str(g / INDEX_FILE), "not a valid gallery index", "'labelz' was unexpected")
    assert snapshot(g) == before


# --------------------------------------------------------------- 10: messages at their one boundary
@pytest.mark.parametrize("name", ["two\nlines.mp4", "evil\u202e4pm.mp4", "tab\tand\x1b[31mred.mp4"])
def test_10_a_clip_path_the_gallery_cannot_record_is_refused_before_embedding(
        name: str, exported_model: Path, clips, tmp_path: Path, capsys,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sst_edge.runtime.engine import FewShotRuntime

    odd = tmp_path / name
    shutil.copy(clips[next(iter(clips))][0], odd)
    embedded: list[object] = []
    real = FewShotRuntime.embed
    monkeypatch.setattr(FewShotRuntime, "embed", lambda self, x: embedded.append(1) or real(self, x))
    code, _, err = cli(capsys, "enroll", "--model", exported_model, "--gallery", tmp_path / "g", "--label",
                       "a", "--no-progress", odd)
    named_error(code, err, "clip path", "not printable", "nothing was enrolled")
    assert "gallery index" not in err and not embedded and not (tmp_path / "g").exists()
    assert "\n" not in err.strip() and "\u202e" not in err and "\x1b" not in err


def test_10_a_full_disk_names_the_file(tiny_subnet: Path, trained_run: Path, tmp_path: Path, capsys,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC comes from fsync (or write), which name no file: the message still names it."""
    import sst_edge.fileio as fileio

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    code, _, err = cli(capsys, *export_args(tiny_subnet, trained_run, tmp_path / "m"))
    named_error(code, err, "no space left on the device", str(tmp_path))
    assert not (tmp_path / "m").exists() and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["space", "target"])
def test_10_a_document_nested_too_deeply_is_named(kind: str, tiny_subnet: Path, trained_run: Path,
                                                  tmp_path: Path, capsys) -> None:
    deep = tmp_path / f"deep-{kind}.yaml"
    deep.write_text("name: deep\nchoices: " + "[" * 5000 + "]" * 5000 + "\n")
    args = (["space", "show", "--space", deep] if kind == "space" else
            ["export", "--subnet", tiny_subnet, "--weights", trained_run, "--target", deep, "--out",
             tmp_path / "m"])
    code, _, err = cli(capsys, *args)
    named_error(code, err, str(deep), "nested too deeply")


def test_10_data_check_escapes_a_newline_in_a_class_name(clips, tmp_path: Path, capsys) -> None:
    first = clips[next(iter(clips))][0]
    for c in ("two\nlines", "plain"):
        (tmp_path / "d" / c).mkdir(parents=True)
        shutil.copy(first, tmp_path / "d" / c / "c1.mp4")
    code, out, err = cli(capsys, "data", "check", tmp_path / "d")
    assert code == 0, err
    rows = [line for line in out.splitlines() if "two" in line or "lines" in line]
    assert len(rows) == 1 and "two\\nlines" in rows[0], out


def test_10_a_zip_member_with_an_absolute_name_is_named(tmp_path: Path, capsys) -> None:
    archive = tmp_path / "frames.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(zipfile.ZipInfo("/abs/clip/00000001.png"), png())
        z.writestr("walk/clip/00000001.png", png())
    before = snapshot(tmp_path)
    code, out, err = cli(capsys, "data", "check", archive)
    named_error(code, err, str(archive), "member '/abs/clip/00000001.png' has an absolute name")
    assert "abs" not in out
    assert snapshot(tmp_path) == before


# ----------------------------------------------- 11: Ctrl-C after the model is complete is not a failure
def test_11_sigint_after_the_export_has_finished(tiny_subnet: Path, trained_run: Path,
                                                 tmp_path: Path) -> None:
    """Ctrl-C from the moment the model is in place until the process ends (a burst, every 2 ms): the
    export reports success and exits 0, never killed by the signal."""
    out = tmp_path / "m"
    p = subprocess.Popen([sys.executable, "-m", "sst_edge.cli",
                          *map(str, export_args(tiny_subnet, trained_run, out))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV)
    deadline = time.monotonic() + 600
    while not (out / CARD_FILE).exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    sent = 0
    while p.poll() is None:
        p.send_signal(signal.SIGINT)
        sent += 1
        time.sleep(0.002)
    stdout, stderr = p.communicate()
    assert sent > 0, "the export ended before its model appeared"
    assert p.returncode == 0, f"exit {p.returncode} after {sent} SIGINTs: {stderr[-2000:]}"
    assert "parity" in stdout and "sha256" in stdout
    verify_files(load_card(out))
