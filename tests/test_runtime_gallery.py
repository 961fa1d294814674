"""Galleries: enroll and classify, calibration, edits, refusals, and crash safety (including kill -9)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sst_edge.device.card import CARD_FILE, MODEL_FILE, file_record, load_card
from sst_edge.device.datasets import load_splits
from sst_edge.device.heads import head_logits_np
from sst_edge.device.settings import HeadConfig
from sst_edge.errors import SSTEdgeError
from sst_edge.runtime import verbs
from sst_edge.runtime.calibration import UNKNOWN, calibrate, support_logits
from sst_edge.runtime.classify import Classifier
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.runtime.gallery import FEATURES_DIR, INDEX_FILE, Gallery


@pytest.fixture(scope="module")
def rt(exported_model: Path) -> FewShotRuntime:
    return FewShotRuntime(exported_model)


@pytest.fixture(scope="module")
def enrolled(rt: FewShotRuntime, synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every test-split class enrolled with its first 5 clips; the other clips held out as queries."""
    test = load_splits(synth_dataset)["test"]
    path = tmp_path_factory.mktemp("gallery") / "g"
    for c in test.classes:
        verbs.enroll(rt, path, c, test.clips[c][:5], progress=False)
    held_out = [(p, c) for c in test.classes for p in test.clips[c][5:]]
    return path, held_out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def random_feats(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------------------------ classification
def test_enrolled_classes_are_recognised_far_above_chance(rt: FewShotRuntime, enrolled) -> None:
    path, held_out = enrolled
    g = Gallery.open(path, rt.card)
    assert {lb: len(r) for lb, r in g.labels.items()} == {c: 5 for _, c in held_out}
    rep = verbs.classify(rt, path, [p for p, _ in held_out], progress=False)
    preds = [p for _, p in rep.results]
    top1 = np.mean([p.ranking[0][0] == c for p, (_, c) in zip(preds, held_out, strict=True)])
    chance = 1 / len(g.labels)
    print(f"closed-set top-1 {top1:.2f} (chance {chance:.2f}), calibration {rep.classifier}")
    assert top1 >= 2.5 * chance
    for p in preds:
        confs = [c for _, _, c in p.ranking]
        assert confs == sorted(confs, reverse=True) and sum(confs) == pytest.approx(1, abs=1e-6)
        assert p.label == (UNKNOWN if p.why else p.ranking[0][0]) and p.unknown == bool(p.why)
    json.dumps(rep.to_dict())  # --json output
    assert rep.lines()[0].startswith("head alignment")
    proto = verbs.classify(rt, path, [held_out[0][0]], head="prototype", threshold=0.0, progress=False)
    assert proto.results[0][1].label != UNKNOWN and proto.classifier["head"]["kind"] == "prototype"


def test_calibration_is_stored_and_follows_changes(rt: FewShotRuntime, enrolled, tmp_path: Path) -> None:
    path = shutil.copytree(enrolled[0], tmp_path / "g")
    g = Gallery.open(path, rt.card)
    cal = g.doc["calibration"]["alignment"]
    assert cal["method"] == "leave-one-out" and 0.1 <= cal["temperature"] <= 100
    assert 0 <= cal["threshold"] <= 1 and cal["queries"] == 30 and g.calibration_current()
    cls = Classifier.from_gallery(g)
    assert cls.temperature == cal["temperature"] and cls.threshold == cal["threshold"]
    assert Classifier.from_gallery(g, threshold=0.0).threshold == 0.0
    lb, rec = g.remove_clip(g.labels[next(iter(g.labels))][0].id)
    assert g.doc["calibration"]["alignment"]["key"] != cal["key"] and g.calibration_current()
    assert g.doc["calibration"]["alignment"]["queries"] == 29
    # min_shots leaves the 4-clip label out, and the calibration is computed for what remains
    cls = Classifier.from_gallery(g, min_shots=5)
    assert lb not in cls.labels and lb in cls.excluded and "fewer than the minimum of 5" in cls.excluded[lb]
    assert cls.calibration["stored"] is False and cls.calibration["queries"] == 25
    with pytest.raises(SSTEdgeError, match="fewer than 6 clips"):
        Classifier.from_gallery(g, min_shots=6)


def test_open_set_unknown(rt: FewShotRuntime, tmp_path: Path) -> None:
    """Clips of an action the gallery does not hold come out "unknown"; enrolled actions do not."""
    rng = np.random.default_rng(4)
    t, c = rt.feature_shape
    centres = rng.normal(size=(5, c)).astype(np.float32)

    def clip(k: int) -> np.ndarray:  # the frames of one clip of action k: its centre plus noise
        return (centres[k] + 0.7 * rng.normal(size=(t, c))).astype(np.float32)

    g = Gallery.create(tmp_path / "g", rt.card)
    for k in range(4):
        for j in range(4):
            g.add(f"action{k}", clip(k), f"/v/{k}_{j}.mp4", f"{k:032x}{j:032x}")
    cal = g.doc["calibration"]["alignment"]
    assert cal["method"] == "leave-one-out" and cal["score_threshold"] < 0 and cal["unknown_rejected"] > 0.5
    cls = Classifier.from_gallery(g)
    known = cls.predict(np.stack([clip(k) for k in range(4) for _ in range(3)]))
    assert [p.label for p in known] == [f"action{k}" for k in range(4) for _ in range(3)]
    unknown = cls.predict(np.stack([clip(4) for _ in range(6)]))
    assert sum(p.label == UNKNOWN and p.unknown for p in unknown) >= 5
    assert all(p.ranking[0][0] != UNKNOWN for p in unknown)  # the ranking still lists the nearest


def test_default_calibration_when_the_gallery_cannot_tell() -> None:
    rng = np.random.default_rng(0)
    head = HeadConfig()
    one_shot = [rng.normal(size=(1, 4, 8)).astype(np.float32) for _ in range(3)]
    cal = calibrate(one_shot, head)
    assert cal["method"] == "default" and cal["score_threshold"] is None and "2 clips" in cal["why"]
    one = calibrate([rng.normal(size=(3, 4, 8)).astype(np.float32)], head)  # 1 label: the floor alone
    assert one["method"] == "leave-one-out" and one["fit"] is None and one["score_threshold"] == one["floor"]
    two = calibrate([rng.normal(size=(3, 4, 8)).astype(np.float32) for _ in range(2)], head)
    assert two["method"] == "leave-one-out" and two["threshold"] == 0.0 and two["score_threshold"] < 0


def test_unequal_shots_match_the_heads() -> None:
    """Grouping labels by shot count gives the heads' own logits: exactly with equal shots, and per label
    (each label with its own K) otherwise."""
    rng = np.random.default_rng(1)
    q = rng.normal(size=(6, 4, 16)).astype(np.float32)
    for head in (HeadConfig("alignment"), HeadConfig("prototype"), HeadConfig("alignment", 0.2, None)):
        equal = [rng.normal(size=(3, 4, 16)).astype(np.float32) for _ in range(5)]
        np.testing.assert_array_equal(support_logits(q, equal, head),
                                      head_logits_np(q, np.stack(equal), head))
        unequal = [rng.normal(size=(k, 4, 16)).astype(np.float32) for k in (1, 3, 2, 3, 5)]
        got = support_logits(q, unequal, head)
        for c, s in enumerate(unequal):
            np.testing.assert_allclose(got[:, c], head_logits_np(q, s[None], head)[:, 0], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------- edits
def test_list_rename_remove(rt: FewShotRuntime, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    g = Gallery.create(tmp_path / "g", rt.card)
    assert not (tmp_path / "g").exists()  # nothing is written before the first clip
    for i, label in enumerate(["wave", "wave", "clap", "jump", "jump", "jump"]):
        assert g.add(label, random_feats(rng, rt.feature_shape), f"/videos/{i}.mp4", f"{i:064x}") is not None
    assert g.add("wave", random_feats(rng, rt.feature_shape), "/videos/0-copy.mp4", f"{0:064x}") is None
    listing = verbs.gallery_list(g.path, rt.model_dir)
    assert {lb: len(r) for lb, r in listing.summary["labels"].items()} == {"wave": 2, "clap": 1, "jump": 3}
    assert any("jump  (3 clips)" in line for line in listing.lines())
    res = verbs.gallery_rename(g.path, "clap", "applause")
    assert list(res.summary["labels"]) == ["wave", "applause", "jump"] and "renamed" in res.message
    with pytest.raises(SSTEdgeError, match="exists already"):
        verbs.gallery_rename(g.path, "wave", "jump")
    with pytest.raises(SSTEdgeError, match="no label 'clap'"):
        verbs.gallery_rename(g.path, "clap", "x")
    with pytest.raises(SSTEdgeError, match="reserved"):
        verbs.gallery_rename(g.path, "wave", "Unknown")
    clip = res.summary["labels"]["jump"][1]["id"]
    res = verbs.gallery_remove(g.path, clip=clip[:6])
    assert [r["id"] for r in res.summary["labels"]["jump"]] == [
        r["id"] for r in listing.summary["labels"]["jump"] if r["id"] != clip]
    res = verbs.gallery_remove(g.path, label="wave")
    assert list(res.summary["labels"]) == ["applause", "jump"]
    files = {p.name for p in (g.path / FEATURES_DIR).iterdir()}
    assert files == {Path(r["file"]).name for recs in res.summary["labels"].values() for r in recs}
    with pytest.raises(SSTEdgeError, match="no clip has the id"):
        verbs.gallery_remove(g.path, clip="ffffffffffff")
    with pytest.raises(SSTEdgeError, match="one of them"):
        verbs.gallery_remove(g.path)


def test_duplicate_videos_are_skipped(rt: FewShotRuntime, synth_dataset: Path, tmp_path: Path) -> None:
    clips = sorted(synth_dataset.glob("*/*.mp4"))[:2]
    r = verbs.enroll(rt, tmp_path / "g", "a", [clips[0], clips[1], clips[0]], progress=False)
    assert len(r.added) == 2 and len(r.skipped) == 1 and "given twice" in r.skipped[0]
    r = verbs.enroll(rt, tmp_path / "g", "a", [clips[1]], progress=False)
    assert not r.added and "already enrolled in 'a'" in r.skipped[0]
    r = verbs.enroll(rt, tmp_path / "g", "b", [clips[1]], progress=False, min_shots=2)
    assert len(r.added) == 1 and any("also enrolled as 'a'" in n for n in r.notes)
    assert any("fewer than --min-shots 2" in n for n in r.notes)


# -------------------------------------------------------------------------------------------- refusals
def other_model(exported_model: Path, out: Path) -> Path:
    """The same network saved with another doc string: another file, another sha256, another model."""
    import onnx

    model = shutil.copytree(exported_model, out)
    m = onnx.load(str(model / MODEL_FILE))
    m.doc_string = "another model"
    onnx.save(m, str(model / MODEL_FILE))
    card = load_card(model)
    card.files[MODEL_FILE] = file_record(model / MODEL_FILE)
    card.name = "other"
    card.save(model / CARD_FILE)
    return model


def test_gallery_of_another_model_is_refused(rt: FewShotRuntime, exported_model: Path, enrolled,
                                             synth_dataset: Path, tmp_path: Path) -> None:
    other = other_model(exported_model, tmp_path / "other")
    before = snapshot(enrolled[0])
    for call in (lambda: verbs.classify(other, enrolled[0], [enrolled[1][0][0]], progress=False),
                 lambda: verbs.enroll(other, enrolled[0], "x", [enrolled[1][0][0]], progress=False),
                 lambda: verbs.gallery_list(enrolled[0], other)):
        with pytest.raises(SSTEdgeError, match="enrolled with model") as e:
            call()
        text = str(e.value)
        assert str(enrolled[0] / INDEX_FILE) in text and "'other'" in text and f"'{rt.card.name}'" in text
        assert rt.card.sha256[:12] in text and load_card(other).sha256[:12] in text
    assert snapshot(enrolled[0]) == before


def test_corrupt_index_and_features_are_reported(rt: FewShotRuntime, synth_dataset: Path,
                                                 tmp_path: Path) -> None:
    g = tmp_path / "g"
    verbs.enroll(rt, g, "a", sorted(synth_dataset.glob("*/*.mp4"))[:2], progress=False)
    index = g / INDEX_FILE
    good = index.read_text()
    index.write_text(good[: len(good) // 2])
    with pytest.raises(SSTEdgeError, match="not a valid gallery index") as e:
        Gallery.open(g, rt.card)
    assert e.value.path == index
    doc = json.loads(good)
    doc["labels"]["a"][0].pop("sha256")
    doc["feature_shape"] = [4]
    index.write_text(json.dumps(doc))
    with pytest.raises(SSTEdgeError, match="corrupt") as e:
        Gallery.open(g, rt.card)
    assert len(e.value.problems) == 2
    index.write_text(good)
    feature = g / json.loads(good)["labels"]["a"][1]["file"]
    feature.write_bytes(feature.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(SSTEdgeError, match="does not match its sha256") as e:
        verbs.classify(rt, g, [sorted(synth_dataset.glob("*/*.mp4"))[5]], progress=False)
    assert e.value.path == feature
    with pytest.raises(SSTEdgeError, match="not a gallery"):
        Gallery.open(tmp_path / "nothing", rt.card)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SSTEdgeError, match="refusing to write into it"):
        verbs.enroll(rt, tmp_path / "busy", "a", [feature], progress=False)


def test_unreadable_video_leaves_the_gallery_unchanged(rt: FewShotRuntime, synth_dataset: Path,
                                                       tmp_path: Path) -> None:
    clips = sorted(synth_dataset.glob("*/*.mp4"))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clips[3].read_bytes()[:1500])
    g = tmp_path / "g"
    with pytest.raises(SSTEdgeError) as e:
        verbs.enroll(rt, g, "a", [clips[0], truncated], progress=False)
    assert e.value.path == truncated and "nothing was enrolled" in str(e.value)
    assert not g.exists()  # a new gallery is not even created
    verbs.enroll(rt, g, "a", clips[:2], progress=False)
    before = snapshot(g)
    with pytest.raises(SSTEdgeError) as e:
        verbs.enroll(rt, g, "a", [clips[2], truncated, tmp_path / "missing.mp4"], progress=False)
    assert "2 of 3 clips cannot be read" in str(e.value) and len(e.value.problems) == 2
    assert str(truncated) in e.value.problems[0] and "missing.mp4" in e.value.problems[1]
    assert snapshot(g) == before
    with pytest.raises(SSTEdgeError) as e:
        verbs.classify(rt, g, [clips[2], truncated], progress=False)
    assert e.value.path == truncated


# ------------------------------------------------------------------------------------------------ crashes
def test_crash_between_feature_file_and_index(rt: FewShotRuntime, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """The index is the commit point: a feature file written before a crash is a stray, ignored, and
    deleted by the next write. A failure that is not a kill cleans up at once: nothing is left."""
    import sst_edge.runtime.gallery as gallery_mod

    def crash(*_a, **_k):
        raise KeyboardInterrupt("power cut")

    rng = np.random.default_rng(3)
    g = Gallery.create(tmp_path / "g", rt.card)
    with monkeypatch.context() as m:  # an interrupted first commit leaves no folder behind
        m.setattr(gallery_mod, "atomic_write_json", crash)
        with pytest.raises(KeyboardInterrupt):
            g.add("a", random_feats(rng, rt.feature_shape), "/v/0.mp4", "0" * 64)
    assert not g.path.exists()
    with monkeypatch.context() as m:  # a kill: the clean-up never runs (unlink does nothing)
        m.setattr(gallery_mod, "atomic_write_json", crash)
        m.setattr(Path, "unlink", lambda self, missing_ok=False: None)
        with pytest.raises(KeyboardInterrupt):
            g.add("a", random_feats(rng, rt.feature_shape), "/v/0.mp4", "0" * 64)
    assert not (g.path / INDEX_FILE).exists() and len(list((g.path / FEATURES_DIR).iterdir())) == 1
    g = Gallery.open_or_create(g.path, rt.card)  # still a place for a new gallery
    g.add("a", random_feats(rng, rt.feature_shape), "/v/0.mp4", "0" * 64)
    assert len(list((g.path / FEATURES_DIR).iterdir())) == 1
    before = (g.path / INDEX_FILE).read_bytes()
    with monkeypatch.context() as m:
        m.setattr(gallery_mod, "atomic_write_json", crash)
        m.setattr(Path, "unlink", lambda self, missing_ok=False: None)
        with pytest.raises(KeyboardInterrupt):
            g.add("a", random_feats(rng, rt.feature_shape), "/v/1.mp4", "1" * 64)
    assert (g.path / INDEX_FILE).read_bytes() == before
    assert len(list((g.path / FEATURES_DIR).iterdir())) == 2  # the stray
    g2 = Gallery.open(g.path, rt.card)
    assert sum(len(r) for r in g2.labels.values()) == 1 and g2.supports()["a"].shape == (1, *rt.feature_shape)
    g2.add("b", random_feats(rng, rt.feature_shape), "/v/2.mp4", "2" * 64)
    assert len(list((g.path / FEATURES_DIR).iterdir())) == 2  # stray gone, two clips


KILL_SCRIPT = """
import sys, time
import sst_edge.runtime.gallery as gallery_mod
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.runtime.gallery import Gallery
model, gallery, *clips = sys.argv[1:]
rt = FewShotRuntime(model)
write = gallery_mod.atomic_write_bytes
def slow_write(path, data):  # slow enough to be killed between feature files and the index
    write(path, data)
    time.sleep(0.05)
gallery_mod.atomic_write_bytes = slow_write
Gallery.open_or_create(gallery, rt.card).enroll(rt, "action", clips, progress=False)
print("finished", flush=True)
"""


def test_kill_9_during_enrollment_loses_nothing_committed(rt: FewShotRuntime, exported_model: Path,
                                                          synth_dataset: Path, tmp_path: Path) -> None:
    """A real enrollment killed while it writes its feature files: the gallery is the old one (all or
    nothing), every clip it names loads, and the next write deletes the strays and enrolls again."""
    clips = sorted(synth_dataset.glob("*/*.mp4"))[:30]
    g = tmp_path / "g"
    verbs.enroll(rt, g, "first", clips[:3], progress=False)
    before = (g / INDEX_FILE).read_bytes()
    old_files = {p.name for p in (g / FEATURES_DIR).iterdir()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", KILL_SCRIPT, str(exported_model), str(g), *map(str, clips[3:])]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len({p.name for p in (g / FEATURES_DIR).iterdir()} - old_files) >= 3:
                break  # in the middle of writing the new clips' feature files
            time.sleep(0.005)
        assert proc.poll() is None, f"enrollment ended before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (g / INDEX_FILE).read_bytes() == before  # nothing of the killed enrollment was committed
    strays = {p.name for p in (g / FEATURES_DIR).iterdir()} - old_files
    assert len(strays) >= 3
    after = Gallery.open(g, rt.card)
    assert list(after.labels) == ["first"] and after.supports()["first"].shape == (3, *rt.feature_shape)
    # enrolling again commits the whole batch and deletes the killed enrollment's strays
    r = verbs.enroll(rt, g, "action", clips[3:8], progress=False)
    assert len(r.added) == 5
    named = {Path(x.file).name for recs in Gallery.open(g).labels.values() for x in recs}
    assert {p.name for p in (g / FEATURES_DIR).iterdir()} == named and not strays & named
    assert not list(g.glob(".*.tmp")) and Gallery.open(g).calibration_current()


CONCURRENT_SCRIPT = """
import sys, time
from pathlib import Path
import numpy as np
from sst_edge.device.card import load_card
from sst_edge.runtime.gallery import Gallery
model, gallery, who, n, go = sys.argv[1:]
card = load_card(model)
rng = np.random.default_rng(int(who))
while not Path(go).exists():
    time.sleep(0.001)
for j in range(int(n)):
    g = Gallery.open_or_create(gallery, card)
    t, c = g.feature_shape
    g.add(f"writer{who}", rng.normal(size=(t, c)).astype(np.float32), f"/v/{who}/{j}.mp4",
          f"{int(who):032x}{j:032x}")
print("done", flush=True)
"""


def test_concurrent_enrollments_lose_nothing(rt: FewShotRuntime, exported_model: Path,
                                             tmp_path: Path) -> None:
    """README: the writer lock serialises enrollments. Four processes add eight clips each to one gallery,
    all at once: every one of the 32 clips is in the index afterwards, and no file is left over."""
    import sst_edge

    g = tmp_path / "g"
    Gallery.create(g, rt.card).add("seed", random_feats(np.random.default_rng(0), rt.feature_shape),
                                   "/v/seed.mp4", "f" * 64)
    go = tmp_path / "go"
    root = str(Path(sst_edge.__file__).resolve().parent.parent)  # the children run this very sst_edge
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_SCRIPT, str(exported_model), str(g), str(i),
                               "8", str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for i in range(4)]
    time.sleep(1.0)  # let them all import and wait at the start line
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    after = Gallery.open(g, rt.card)
    counts = {label: len(recs) for label, recs in after.labels.items()}
    assert counts == {"seed": 1, **{f"writer{i}": 8 for i in range(4)}}
    sources = sorted(r.source for recs in after.labels.values() for r in recs)
    assert sources == sorted(["/v/seed.mp4", *[f"/v/{i}/{j}.mp4" for i in range(4) for j in range(8)]])
    named = {Path(r.file).name for recs in after.labels.values() for r in recs}
    assert {p.name for p in (g / FEATURES_DIR).iterdir()} == named and len(named) == 33
    assert not list(g.glob(".*.tmp")) and after.calibration_current()


def test_a_temp_file_renamed_during_the_unlocked_scan_is_not_foreign(tmp_path: Path, monkeypatch) -> None:
    """The foreign-file scan runs before the writer lock: another writer's temporary file can be listed and
    renamed into place before it is looked at. Found by the concurrent-enrollment test under load (one of
    four writers refused "files sst-edge did not create", naming such a temp file). Simulated here: the
    listing names a temporary file that no longer exists."""
    from sst_edge.runtime.gallery import _foreign_files

    g = tmp_path / "g"
    (g / FEATURES_DIR).mkdir(parents=True)
    (g / FEATURES_DIR / "0123456789ab.safetensors").write_bytes(b"x")
    (g / FEATURES_DIR / "notes.txt").write_text("a user's file")
    gone = g / FEATURES_DIR / ".32f446e067a4.safetensors.arxw608z.tmp"
    real_iterdir = Path.iterdir

    def listing(self: Path):
        yield from real_iterdir(self)
        if self.name == FEATURES_DIR:
            yield gone  # listed, then renamed by its writer before the scan looks at it

    monkeypatch.setattr(Path, "iterdir", listing)
    assert _foreign_files(g, indexed=False) == [str(g / FEATURES_DIR / "notes.txt")]
