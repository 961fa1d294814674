"""The check of clips unlike the training data (device/ood.py, calibration.py, classify.py, stream.py).

Expected values come from outside the code under test: scikit-learn's Ledoit-Wolf, Mahalanobis distances
by brute force (numpy.linalg.inv, np.delete), Student's t from scipy, the training split re-embedded
through the runtime; and background footage made here (data/scenes.py) streamed through `stream_video`.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.covariance import LedoitWolf

from sst_edge.data.encode import write_video
from sst_edge.data.scenes import pan_frames, texture_frames
from sst_edge.data.synth import render_clip, synth_classes
from sst_edge.device.card import CARD_FILE, MODEL_FILE, ModelCard, load_card, verify_files
from sst_edge.device.datasets import load_splits
from sst_edge.device.evaluation import wilson
from sst_edge.device.ood import (
    NO_CARD_RECORD,
    OOD_FILE,
    FeatureDistribution,
    fit_distribution,
    ledoit_wolf,
    load_distribution,
    pool,
)
from sst_edge.device.settings import HeadConfig
from sst_edge.errors import SSTEdgeError
from sst_edge.fileio import read_json, sha256_file
from sst_edge.runtime import verbs
from sst_edge.runtime.calibration import UNKNOWN, calibrate, calibrate_ood, ood_scores, white_means
from sst_edge.runtime.classify import Classifier
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.runtime.gallery import Gallery
from sst_edge.runtime.stream import stream_video

SHOTS = 5
HEAD = HeadConfig()


def random_distribution(rng: np.random.Generator, d: int = 12, n: int = 60, classes: int = 6):
    """A distribution fitted to pooled features of `classes` Gaussian clusters, and those features."""
    centres = rng.normal(size=(classes, d))
    y = np.repeat(np.arange(classes), n // classes)
    x = centres[y] + rng.normal(size=(len(y), d)) * rng.uniform(0.2, 2.0, d)  # anisotropic spread
    return fit_distribution(x, y.astype(str)), x, y


# ------------------------------------------------------------------------------------------ the maths
@pytest.mark.parametrize("n, d, centred", [(40, 12, False), (10, 30, False), (50, 8, True)])
def test_ledoit_wolf_matches_scikit_learn(n: int, d: int, centred: bool) -> None:
    x = np.random.default_rng(n).normal(size=(n, d)) * np.linspace(0.1, 3, d) + 2.0
    if centred:
        x = x - x.mean(0)
    cov, s = ledoit_wolf(x, centred=centred)
    ref = LedoitWolf(assume_centered=centred).fit(x)
    assert s == pytest.approx(ref.shrinkage_, abs=1e-10)
    np.testing.assert_allclose(cov, ref.covariance_, rtol=1e-10, atol=1e-12)
    assert np.linalg.eigvalsh(cov).min() > 0  # n < d too: shrinkage keeps it invertible


def test_the_score_is_the_squared_mahalanobis_distance_to_the_nearest_label() -> None:
    """Cholesky-whitened distances against (x - m)^T inv(W) (x - m) with the inverse formed by numpy,
    the label means and pooled features computed here by hand."""
    rng = np.random.default_rng(0)
    dist, _, _ = random_distribution(rng)
    d = dist.dim
    supports = [rng.normal(size=(k, 4, d)).astype(np.float32) for k in (3, 5, 1)]
    queries = rng.normal(size=(7, 4, d)).astype(np.float32)

    def pooled(f: np.ndarray) -> np.ndarray:
        f = f.astype(np.float64)
        return (f / np.linalg.norm(f, axis=-1, keepdims=True)).mean(-2)

    inv = np.linalg.inv(dist.within)
    means = [pooled(s).mean(0) for s in supports]
    want = np.array([min((pooled(q) - m) @ inv @ (pooled(q) - m) for m in means) for q in queries])
    got = ood_scores(queries, white_means(supports, dist), dist)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    total = np.linalg.inv(dist.covariance)
    want_t = np.array([(pooled(q) - dist.mean) @ total @ (pooled(q) - dist.mean) for q in queries])
    np.testing.assert_allclose(dist.training_distance(pool(queries)), want_t, rtol=1e-9)


def test_fit_distribution_is_mean_covariance_and_within_action_covariance() -> None:
    rng = np.random.default_rng(1)
    dist, x, y = random_distribution(rng)
    np.testing.assert_allclose(dist.mean, x.mean(0))
    np.testing.assert_allclose(dist.covariance, LedoitWolf().fit(x).covariance_, rtol=1e-10)
    centred = np.concatenate([x[y == c] - x[y == c].mean(0) for c in np.unique(y)])
    np.testing.assert_allclose(dist.within, LedoitWolf(assume_centered=True).fit(centred).covariance_,
                               rtol=1e-10)
    assert (dist.clips, dist.classes) == (60, 6)
    with pytest.raises(SSTEdgeError, match="2 training clips"):
        fit_distribution(x[:3], ["a", "b", "c"])  # one clip an action: no within-action spread


def test_the_threshold_is_the_prediction_bound_of_leave_one_out_distances() -> None:
    rng = np.random.default_rng(2)
    dist, _, _ = random_distribution(rng)
    supports = [rng.normal(size=(k, 4, dist.dim)).astype(np.float32) for k in (4, 2, 1, 5)]
    inv = np.linalg.inv(dist.within)
    own = []
    for s in supports:
        p = pool(s)
        for i in range(len(p)) if len(p) >= 2 else []:
            z = p[i] - np.delete(p, i, 0).mean(0)
            own.append(z @ inv @ z)
    logd = np.log(own)
    bound = math.exp(logd.mean() + stats.t.ppf(0.95, len(own) - 1) * logd.std(ddof=1)
                     * math.sqrt(1 + 1 / len(own)))
    cal = calibrate_ood(supports, dist, "k")
    assert cal["method"] == "mahalanobis" and cal["queries"] == 11 and cal["key"] == "k"
    assert cal["threshold"] == pytest.approx(bound, rel=1e-4)  # calibration.py's t table: 4 decimals
    assert cal["known_accepted"] == pytest.approx(np.mean(np.array(own) <= cal["threshold"]))
    single = calibrate_ood([s[:1] for s in supports], dist)
    assert single["threshold"] is None and "2 clips" in single["why"]


def test_classifier_says_unlike_the_training_data_first_and_only_beyond_the_threshold() -> None:
    rng = np.random.default_rng(3)
    dist, _, _ = random_distribution(rng)
    sup = [rng.normal(size=(4, 4, dist.dim)).astype(np.float32) for _ in range(2)]
    cal = calibrate(sup, HEAD)
    ocal = calibrate_ood(sup, dist)
    cls = Classifier(["a", "b"], sup, HEAD, cal["temperature"], 0.0, {**cal, "ood": ocal}, {}, -1e9, dist,
                     ocal["threshold"])
    thr = cls.ood_threshold
    assert cls.why_unknown(0.9, 0.0, thr * 0.99) == "" and cls.why_unknown(0.9, 0.0, None) == ""
    why = cls.why_unknown(0.9, -2e9, thr * 1.01)  # beyond both rules: the check speaks
    assert why.startswith("unlike the training data: squared Mahalanobis distance") and f"> {thr:.1f}" in why
    assert cls.why_unknown(0.9, -2e9, thr * 0.5).startswith("far from every label")
    q = rng.normal(size=(1, 4, dist.dim)).astype(np.float32)
    d = float(ood_scores(q, white_means(sup, dist), dist)[0])
    for thr_, unknown in ((d * 0.99, True), (d * 1.01, False)):
        c = Classifier(["a", "b"], sup, HEAD, cal["temperature"], 0.0, cal, {}, -1e9, dist, thr_)
        p = c.predict(q)[0]
        assert p.ood_score == pytest.approx(d) and p.unknown is unknown and p.ood_threshold == thr_
        assert p.why.startswith("unlike the training data") is unknown
    assert "unlike the training data: squared Mahalanobis distance >" in cls.open_set()
    far = q
    plain = Classifier(["a", "b"], sup, HEAD, cal["temperature"], 0.0, cal, {}, -1e9, None, None, "why not")
    assert plain.ood_score(far) is None and plain.predict(far)[0].ood_score is None
    assert "no check of clips unlike the training data (why not)" in plain.open_set()


def test_the_file_round_trips_and_refuses_what_it_is_not() -> None:
    dist, _, _ = random_distribution(np.random.default_rng(4))
    blob = dist.to_bytes()
    back = FeatureDistribution.from_bytes(blob, dist.dim)
    for name in ("mean", "covariance", "within"):
        np.testing.assert_allclose(getattr(back, name), getattr(dist, name), rtol=1e-6, atol=1e-7)
    assert (back.clips, back.classes, back.shrinkage) == (dist.clips, dist.classes, dist.shrinkage)
    with pytest.raises(SSTEdgeError, match="of 13 dimensions"):
        FeatureDistribution.from_bytes(blob, dist.dim + 1)
    with pytest.raises(SSTEdgeError):
        FeatureDistribution.from_bytes(blob[:-4], dist.dim)
    import safetensors.numpy as stn

    d = dist.dim
    foreign = stn.save({"a": np.zeros(d, np.float32), "b": np.eye(d, dtype=np.float32),
                        "c": np.eye(d, dtype=np.float32)}, metadata={"format": "x"})
    with pytest.raises(SSTEdgeError, match="not an sst-edge training-feature file"):
        FeatureDistribution.from_bytes(foreign, d)
    bad = stn.save({"mean": np.zeros(d, np.float32), "covariance": -np.eye(d, dtype=np.float32),
                    "within": np.eye(d, dtype=np.float32)},
                   metadata={"format": "sst-edge/train-features", "version": "1", "clips": "3",
                             "classes": "1"})
    with pytest.raises(SSTEdgeError, match="not positive definite"):
        FeatureDistribution.from_bytes(bad, d)


# ------------------------------------------------------------------------------------- a real model
@pytest.fixture(scope="module")
def rt(exported_model: Path) -> FewShotRuntime:
    return FewShotRuntime(exported_model)


@pytest.fixture(scope="module")
def gallery(rt: FewShotRuntime, synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 6 test classes of the synthetic set (never trained on), 5 clips each, enrolled."""
    g = tmp_path_factory.mktemp("ood") / "gallery"
    test = load_splits(synth_dataset).test
    for lb in test.classes:
        verbs.enroll(rt, g, lb, test.clips[lb][:SHOTS], progress=False)
    return g


def test_export_stores_the_training_features_of_the_shipped_model(exported_model: Path, rt: FewShotRuntime,
                                                                  synth_dataset: Path) -> None:
    """The card's record and file, against the training split embedded again through the runtime and
    summarised by scikit-learn."""
    card = load_card(exported_model)
    rec = card.ood
    assert rec is not None and rec["file"] == OOD_FILE and rec["version"] == 1
    assert card.files[OOD_FILE]["sha256"] == sha256_file(exported_model / OOD_FILE)
    train = load_splits(synth_dataset).train
    assert (rec["clips"], rec["classes"], rec["dim"]) == (len(train), len(train.classes), card.feature_dim)
    assert rec["source"].endswith("run.json") and rec["data"] == str(synth_dataset) and rec["skipped"] == 0
    paths, labels = zip(*train.items(), strict=True)
    x = pool(rt.embed_paths(list(paths)))
    y = np.asarray(labels)
    centred = np.concatenate([x[y == c] - x[y == c].mean(0) for c in train.classes])
    assert rt.ood is not None and rt.ood_why == ""
    np.testing.assert_allclose(rt.ood.mean, x.mean(0), atol=1e-5)
    np.testing.assert_allclose(rt.ood.covariance, LedoitWolf().fit(x).covariance_, atol=1e-6)
    np.testing.assert_allclose(rt.ood.within, LedoitWolf(assume_centered=True).fit(centred).covariance_,
                               atol=1e-6)
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))).ood == rec  # the card round-trips


def test_a_changed_training_feature_file_is_refused(exported_model: Path, tmp_path: Path) -> None:
    m = shutil.copytree(exported_model, tmp_path / "m")
    f = m / OOD_FILE
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x40  # one bit of the last tensor: the file still parses
    f.write_bytes(bytes(data))
    with pytest.raises(SSTEdgeError, match=f"{OOD_FILE} does not match the sha256"):
        FewShotRuntime(m)  # verify_files covers it
    with pytest.raises(SSTEdgeError, match="does not match the sha256"):
        load_distribution(load_card(m))  # and the reader checks the bytes it parses itself
    card = json.loads((m / CARD_FILE).read_text())
    del card["files"][OOD_FILE]  # named by the card, but covered by no sha256
    (m / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(SSTEdgeError, match="does not list it in `files`"):
        FewShotRuntime(m)


def test_a_card_without_training_features_still_classifies_and_says_so(exported_model: Path, gallery: Path,
                                                                      synth_dataset: Path,
                                                                      tmp_path: Path) -> None:
    """A card from before the check (no `ood` section, no file): the same answers as the distance rule
    gives, and classify says there is no check."""
    m = shutil.copytree(exported_model, tmp_path / "old")
    card = json.loads((m / CARD_FILE).read_text())
    del card["ood"], card["files"][OOD_FILE]
    (m / OOD_FILE).unlink()
    (m / CARD_FILE).write_text(json.dumps(card))
    old = FewShotRuntime(m)
    assert old.ood is None and old.ood_why == NO_CARD_RECORD
    clip = load_splits(synth_dataset).test.clips[load_splits(synth_dataset).test.classes[0]][-1]
    rep = verbs.classify(old, gallery, [clip], progress=False)
    assert f"no check of clips unlike the training data ({NO_CARD_RECORD})" in rep.lines()[0]
    assert rep.to_dict()["ood_threshold"] is None and rep.results[0][1].ood_score is None
    g = Gallery.open(gallery, old.card)
    plain = Classifier.from_gallery(g).predict(old.embed(old.load(clip)[None]))[0]
    assert rep.results[0][1].label == plain.label


def test_an_export_without_training_data_has_no_check_and_says_why(trained_run: Path, tiny_subnet: Path,
                                                                  tmp_path: Path) -> None:
    from sst_edge.deploy.export import export_model
    from sst_edge.train.artifacts import WEIGHTS_FILE

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(trained_run / WEIGHTS_FILE, bare / WEIGHTS_FILE)  # weights without their run.json
    with pytest.warns(UserWarning, match="no run.json"):
        card = export_model(tiny_subnet, bare / WEIGHTS_FILE, "cpu-fp32", tmp_path / "m", measure=False,
                            progress=False)
    assert sorted(card.files) == [MODEL_FILE] and "no training data" in card.ood["why"]
    verify_files(load_card(tmp_path / "m"))
    r = FewShotRuntime(tmp_path / "m")
    assert r.ood is None and "no training data" in r.ood_why and "no --data" in r.ood_why


def test_the_gallery_stores_the_threshold_and_older_galleries_get_it_computed(rt: FewShotRuntime,
                                                                             gallery: Path,
                                                                             tmp_path: Path) -> None:
    doc = read_json(gallery / "gallery.json")
    stored = doc["calibration"]["alignment"]["ood"]
    assert stored["method"] == "mahalanobis" and stored["threshold"] > 0 and stored["queries"] == 30
    assert rt.ood is not None and stored["distribution"] == rt.ood.digest[:16]
    cls = Classifier.from_gallery(Gallery.open(gallery, rt.card), ood=rt.ood)
    assert cls.ood_threshold == stored["threshold"] and "stored" not in cls.calibration["ood"]
    old = shutil.copytree(gallery, tmp_path / "old")  # a gallery made before the check: no "ood" record
    for cal in doc["calibration"].values():
        del cal["ood"]
    (old / "gallery.json").write_text(json.dumps(doc))
    again = Classifier.from_gallery(Gallery.open(old, rt.card), ood=rt.ood)
    assert again.calibration["ood"]["stored"] is False
    assert again.ood_threshold == pytest.approx(stored["threshold"])
    assert "out-of-distribution threshold" in "\n".join(verbs.gallery_list(gallery).lines())
    assert "ood" not in read_json(old / "gallery.json")["calibration"]["alignment"]  # read, not written


def test_background_footage_is_unknown_while_enrolled_actions_are_found(rt: FewShotRuntime, gallery: Path,
                                                                        synth_dataset: Path,
                                                                        tmp_path: Path) -> None:
    """One long video, its 16-frame segments in random order: held-out and new clips of the enrolled
    actions, moving 1/f textures, camera pans over 1/f textures, and every clip of the 6 synthetic
    classes never enrolled (and never trained on). Streamed with 16-frame spans, one span a segment,
    with the check and without it (the distance rule alone).

    Goal (issue 27): >= 80% of background spans "unknown". Reached for the textures and the pans; not
    for the never-enrolled synthetic classes, which are as like the training data as the enrolled ones
    (pooled features cannot tell a clip from its time-reversed twin, 2 of those 6 classes): measured
    32% of them unknown here (the distance rule alone: 27%); bench/open_set.py reports the AUROCs."""
    specs = {c.name: c for c in synth_classes(24)}
    splits = load_splits(synth_dataset)
    segments: list[tuple[str, str, np.ndarray]] = []  # (kind, the enrolled label or "", frames)
    for lb in splits.test.classes:  # clips 5-9 are the dataset's held-out ones, 10-19 new
        segments += [("enrolled", lb, render_clip(specs[lb], [0, specs[lb].unit, k], 16, 64))
                     for k in range(SHOTS, 20)]
    segments += [("moving texture", "", texture_frames(1000 + i, 16, 64, 86)) for i in range(30)]
    segments += [("camera pan", "", pan_frames(2000 + i, 16, 64, 86)) for i in range(30)]
    for lb in splits.val.classes:
        segments += [("never-enrolled synthetic class", "", render_clip(specs[lb], [0, specs[lb].unit, k],
                                                                       16, 64)) for k in range(10)]
    order = np.random.default_rng(0).permutation(len(segments))
    segments = [segments[i] for i in order]
    video = write_video(tmp_path / "camera.mp4", np.concatenate([f for _, _, f in segments]), fps=12)
    g = Gallery.open(gallery, rt.card)
    with_check = Classifier.from_gallery(g, ood=rt.ood, ood_why=rt.ood_why)
    without = Classifier.from_gallery(g)
    alone = Classifier.from_gallery(g, threshold=0.0, ood=rt.ood)  # a confidence of 0 replaces the distance
    assert with_check.ood_threshold is not None and without.ood_threshold is None
    assert alone.score_threshold is None and alone.ood_threshold == with_check.ood_threshold
    spans = list(stream_video(rt, with_check, video, 16, 16, "frames"))
    base = list(stream_video(rt, without, video, 16, 16, "frames"))
    check = list(stream_video(rt, alone, video, 16, 16, "frames"))
    assert len(spans) == len(base) == len(check) == len(segments)
    assert [(s.start_frame, s.end_frame) for s in spans] == [(16 * i, 16 * i + 16) for i in range(len(spans))]

    rates, alone_rates = {}, {}
    print(f"\n{len(segments)} spans of 16 frames ({len(segments) * 16 / 12:.0f} s at 12 fps); OOD threshold "
          f"{with_check.ood_threshold:.1f}")
    for kind in ("moving texture", "camera pan", "never-enrolled synthetic class"):
        idx = [i for i, (k, _, _) in enumerate(segments) if k == kind]
        k, n = sum(spans[i].label == UNKNOWN for i in idx), len(idx)
        k0 = sum(base[i].label == UNKNOWN for i in idx)
        k1 = sum(check[i].label == UNKNOWN for i in idx)
        lo, hi = wilson(k, n)
        rates[kind], alone_rates[kind] = k / n, k1 / n
        print(f"  {kind:<32} unknown {k}/{n} = {k / n:.2f} [{lo:.2f}, {hi:.2f}] (the distance rule alone "
              f"{k0 / n:.2f}, the check alone {k1 / n:.2f})")
    known = [i for i, (k, _, _) in enumerate(segments) if k == "enrolled"]
    hit = sum(spans[i].label == segments[i][1] for i in known)
    hit0 = sum(base[i].label == segments[i][1] for i in known)
    lost = sum(base[i].label == segments[i][1] and spans[i].label != segments[i][1] for i in known)
    lost_alone = sum(check[i].label == UNKNOWN for i in known)
    lo, hi = wilson(hit, len(known))
    print(f"  enrolled actions found (recall) {hit}/{len(known)} = {hit / len(known):.2f} [{lo:.2f}, "
          f"{hi:.2f}]; without the check {hit0}/{len(known)}; lost to the check {lost} (the check alone "
          f"rejects {lost_alone})")
    assert rates["moving texture"] >= 0.8 and rates["camera pan"] >= 0.8
    assert alone_rates["moving texture"] >= 0.8 and alone_rates["camera pan"] >= 0.8  # not the distance's
    assert rates["never-enrolled synthetic class"] >= 0.15  # a regression guard, not the goal (see above)
    assert lost <= 0.05 * len(known) and lost_alone <= 0.08 * len(known)  # recall the check costs
    assert lo >= 0.45  # this briefly trained model's recall: its closed-set accuracy is ~0.7
    # the check is applied at the stream's call site: it turns spans the distance rule let through
    added = [i for i in range(len(spans)) if spans[i].label == UNKNOWN and base[i].label != UNKNOWN]
    assert added
