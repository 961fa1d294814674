"""Open set: the calibrated score threshold (floor + fit), the content check, and what classify says.

Expected values come from outside the code under test: geometry built by hand (unit vectors whose aligned
distances are known), Student's t from scipy, and brute-force re-derivations of the rule.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sst_edge.data.encode import write_video
from sst_edge.device.datasets import load_splits
from sst_edge.device.heads import head_logits_np
from sst_edge.device.preprocess import Preprocess, frames_to_array
from sst_edge.device.settings import HeadConfig
from sst_edge.runtime import verbs
from sst_edge.runtime.calibration import (
    MIN_ACCEPT,
    UNKNOWN,
    calibrate,
    calibration_key,
    distance_floor,
    fit_threshold,
    support_logits,
    t95,
)
from sst_edge.runtime.classify import Classifier, content_problem

HEAD = HeadConfig()  # alignment, tau 0.1, window 1
T, C = 4, 8


def unit(i: int) -> np.ndarray:
    return np.eye(C, dtype=np.float32)[i]


def label_clips(axis: int, k: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """k clips whose every frame points along basis vector `axis`, slightly perturbed."""
    return (unit(axis) + noise * rng.normal(size=(k, T, C))).astype(np.float32)


def classifier(supports: list[np.ndarray]) -> Classifier:
    cal = calibrate(supports, HEAD)
    return Classifier([f"L{i}" for i in range(len(supports))], supports, HEAD, cal["temperature"],
                      cal["threshold"], cal, {}, cal["score_threshold"])


# ------------------------------------------------------------------------------------ the rule itself
def test_t_quantiles_match_scipy() -> None:
    for df in [*range(1, 41), 60, 100, 1000]:
        assert t95(df) == pytest.approx(stats.t.ppf(0.95, df), abs=1e-4)


def test_floor_is_the_log_normal_prediction_bound() -> None:
    # distances 1, 2, 4: logs 0, ln2, 2 ln2 -> mean ln2, sd ln2; bound exp(ln2 + t(2) ln2 sqrt(4/3))
    t2 = 2.919986  # Student's t, 95%, 2 degrees of freedom (tables)
    assert distance_floor(np.array([-1.0, -2.0, -4.0])) == pytest.approx(-2 * 2 ** (t2 * math.sqrt(4 / 3)),
                                                                         rel=1e-4)
    assert distance_floor(np.array([-3.0, -3.0])) == pytest.approx(-3.0)  # no spread: the distance itself


def test_fit_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        known = np.round(rng.normal(0, 1, rng.integers(3, 30)), 1)  # ties on purpose
        unknown = np.round(rng.normal(-1.5, 1, rng.integers(1, 30)), 1)
        thr, acc, rej = fit_threshold(known, unknown, MIN_ACCEPT)
        assert acc == (known >= thr).mean() and rej == (unknown < thr).mean()
        values = np.unique(np.concatenate([known, unknown]))
        cands = np.concatenate([[values[0] - 1], (values[1:] + values[:-1]) / 2, [values[-1] + 1]])
        best = max((((known >= c).mean() + (unknown < c).mean()) / 2 for c in cands
                    if (known >= c).mean() >= MIN_ACCEPT), default=None)
        assert best is not None and (acc + rej) / 2 == pytest.approx(best)
        assert acc >= MIN_ACCEPT


def test_calibrate_matches_a_brute_force_rederivation() -> None:
    """Leave each clip out by hand, then floor and fit as the module docstring states them."""
    rng = np.random.default_rng(3)
    sup = [(rng.normal(size=(1, T, C)) + 0.8 * rng.normal(size=(k, T, C))).astype(np.float32)
           for k in (3, 4, 2, 5)]  # unequal shots
    own, unk, correct = [], [], []
    for c, s in enumerate(sup):
        for i in range(len(s)):
            q = s[i:i + 1]
            rest = [np.delete(s, i, 0) if d == c else sup[d] for d in range(len(sup))]
            row = np.array([head_logits_np(q, r[None], HEAD)[0, 0] for r in rest], np.float64)
            own.append(row[c])
            unk.append(max(head_logits_np(q, sup[d][None], HEAD)[0, 0] for d in range(len(sup)) if d != c))
            correct.append(row.argmax() == c)
    own, unk, correct = np.array(own), np.array(unk), np.array(correct)
    logd = np.log(-own)
    floor = -np.exp(logd.mean() + stats.t.ppf(0.95, len(own) - 1) * logd.std(ddof=1)
                    * np.sqrt(1 + 1 / len(own)))
    k = own[correct]
    values = np.unique(np.concatenate([k, unk]))
    cands = np.concatenate([[values[0] - 1], (values[1:] + values[:-1]) / 2])
    score = [((k >= c).mean() + (unk < c).mean()) / 2 if (k >= c).mean() >= MIN_ACCEPT else -1 for c in cands]
    fit = cands[int(np.argmax(score))]  # the lowest of the best
    cal = calibrate(sup, HEAD)
    assert cal["queries"] == 14 and cal["labels"] == 4
    assert cal["floor"] == pytest.approx(floor, abs=2e-4) and cal["fit"] == pytest.approx(fit, abs=2e-4)
    assert cal["score_threshold"] == pytest.approx(max(floor, fit), abs=2e-4)
    json.dumps(cal)  # stored in gallery.json


# ------------------------------------------------------------------------------- hand-built geometry
def test_two_labels_get_a_threshold_that_rejects_a_far_query() -> None:
    rng = np.random.default_rng(1)
    cls = classifier([label_clips(0, 3, rng), label_clips(1, 3, rng)])
    assert cls.score_threshold is not None and -20 < cls.score_threshold < 0
    assert "unknown when the best score <" in cls.describe()["open_set"]
    far = np.tile(unit(2), (T, 1))  # orthogonal to both labels: squared distance 2, logit -2 / tau = -20
    assert cls.logits(far).max() == pytest.approx(-20, abs=0.5)
    p = cls.predict(far)[0]
    assert p.label == UNKNOWN and p.unknown and "far from every label" in p.why and p.ranking[0][0] != UNKNOWN
    near = cls.predict(label_clips(1, 4, rng))
    assert [q.label for q in near] == ["L1"] * 4


def test_the_floor_rejects_what_a_fit_on_far_apart_labels_lets_through() -> None:
    """Labels 20 apart put the fitted threshold near -10; a query at 45 degrees to a label (logit
    -(2 - 2 cos 45) / tau = -5.86) is far outside that label's own clips, and only the floor says so."""
    rng = np.random.default_rng(2)
    cls = classifier([label_clips(0, 4, rng, 0.01), label_clips(1, 4, rng, 0.01)])
    assert cls.calibration["fit"] < -8 and cls.calibration["floor"] > -3
    between = np.tile((unit(0) + unit(2)) / np.sqrt(2), (T, 1))
    assert cls.logits(between).max() == pytest.approx(-(2 - np.sqrt(2)) / 0.1, abs=0.3)
    assert cls.predict(between)[0].label == UNKNOWN


def test_one_label_is_calibrated_by_the_floor_alone() -> None:
    """A 95% prediction bound from 3 clips: over many galleries, about 95% of fresh clips of the label
    pass it (one gallery can be unlucky: its 3 clips may happen to lie close together)."""
    accepted = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        cls = classifier([label_clips(0, 3, rng)])
        assert cls.calibration["fit"] is None and cls.score_threshold == cls.calibration["floor"] < 0
        assert cls.predict(np.tile(unit(5), (T, 1)))[0].label == UNKNOWN
        accepted += [p.label == "L0" for p in cls.predict(label_clips(0, 10, rng))]
    assert np.mean(accepted) >= 0.92


def test_a_constant_feature_query_is_unknown() -> None:
    rng = np.random.default_rng(4)
    cls = classifier([label_clips(a, 5, rng) for a in range(3)])
    const = np.full((T, C), 0.3, np.float32)  # every frame the same, no label's direction
    assert cls.predict(const)[0].label == UNKNOWN


def test_known_queries_keep_the_promised_share_and_unknown_clusters_are_rejected() -> None:
    """6 labels x 5 clips from Gaussian clusters; fresh clips of the same clusters (not the ones the
    threshold saw) keep >= 95% of the correctly classified, and clips of 6 other clusters are rejected."""
    kept, total, rejected = 0, 0, []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(12, T, 16))

        def clips(k: int, n: int, mu: np.ndarray = centres, rng: np.random.Generator = rng) -> np.ndarray:
            return (mu[k] + 0.6 * rng.normal(size=(n, T, 16))).astype(np.float32)

        sup = [clips(k, 5) for k in range(6)]
        cal = calibrate(sup, HEAD)
        assert cal["known_accepted"] >= 0.9  # on its own leave-one-out queries
        q, y = np.concatenate([clips(k, 30) for k in range(6)]), np.repeat(np.arange(6), 30)
        lg = support_logits(q, sup, HEAD)
        ok = lg.argmax(1) == y
        kept += int((lg.max(1)[ok] >= cal["score_threshold"]).sum())
        total += int(ok.sum())
        u = support_logits(np.concatenate([clips(k, 30) for k in range(6, 12)]), sup, HEAD)
        rejected.append((u.max(1) < cal["score_threshold"]).mean())
    assert kept / total >= MIN_ACCEPT and min(rejected) >= 0.9


def test_a_gallery_without_two_clips_in_a_label_says_it_is_not_calibrated() -> None:
    rng = np.random.default_rng(5)
    cls = classifier([label_clips(0, 1, rng), label_clips(1, 1, rng)])
    assert cls.score_threshold is None and cls.calibration["method"] == "default"
    far = cls.predict(np.tile(unit(4), (T, 1)))[0]
    report = verbs.ClassifyReport("g", "m", cls.describe(), [("far.mp4", far)])
    head = report.lines()[0]
    assert "NOT calibrated" in head and "2 clips" in head and "every clip gets its nearest label" in head
    out = report.to_dict()
    assert out["calibrated"] is False and out["score_threshold"] is None
    assert out["results"][0]["label"] != UNKNOWN
    json.dumps(out)


def test_a_caller_threshold_replaces_the_score_rule() -> None:
    rng = np.random.default_rng(6)
    cal = calibrate([label_clips(0, 3, rng), label_clips(1, 3, rng)], HEAD)
    sup = [label_clips(0, 3, rng), label_clips(1, 3, rng)]
    cls = Classifier(["a", "b"], sup, HEAD, cal["temperature"], 0.0, cal, {}, None)
    assert cls.predict(np.tile(unit(2), (T, 1)))[0].label in ("a", "b")
    assert "set by the caller" in cls.open_set()


def test_the_key_changes_with_the_rule_version() -> None:
    """A calibration stored by the old rule (key without a version) is never taken for a current one."""
    groups = [["a1", "a2"], ["b1"]]
    old = hashlib.sha256(json.dumps({"groups": sorted(sorted(g) for g in groups), "head": HEAD.to_dict()},
                                    sort_keys=True).encode()).hexdigest()[:16]
    assert calibration_key(groups, HEAD) != old


# -------------------------------------------------------------------------------------- content check
def test_content_check_flags_blank_and_noise_only() -> None:
    pre = Preprocess(frames=4, size=64, resize=73)
    rng = np.random.default_rng(0)
    grey = frames_to_array(np.full((4, 64, 86, 3), 128, np.uint8), pre)
    assert content_problem(grey, pre).startswith("blank")
    noise = frames_to_array(rng.integers(0, 256, (4, 64, 86, 3), dtype=np.uint8), pre)
    assert content_problem(noise, pre).startswith("noise")
    yy, xx = np.mgrid[0:64, 0:86]
    scene = np.zeros((4, 64, 86, 3), np.uint8)
    for t in range(4):  # a gradient with a disc moving across it, and sensor noise
        scene[t] = np.stack([xx * 2, yy * 3, np.full_like(xx, 60)], -1)
        scene[t][(xx - 20 - 10 * t) ** 2 + (yy - 32) ** 2 < 80] = 250
    scene = np.clip(scene + rng.normal(0, 4, scene.shape), 0, 255).astype(np.uint8)
    assert content_problem(frames_to_array(scene, pre), pre) == ""


# --------------------------------------------------------------------------------------- a real model
def test_classify_notes_short_clips_and_rejects_blank_and_noise(exported_model: Path, synth_dataset: Path,
                                                                tmp_path: Path) -> None:
    from sst_edge.data.synth import render_clip, synth_classes
    from sst_edge.runtime.engine import FewShotRuntime

    rt = FewShotRuntime(exported_model)
    test = load_splits(synth_dataset).test
    labels = test.classes[:2]
    for lb in labels:
        verbs.enroll(rt, tmp_path / "g", lb, test.clips[lb][:3], progress=False)
    spec = next(c for c in synth_classes(24) if c.name == labels[0])
    short = write_video(tmp_path / "short.mp4", render_clip(spec, [0, spec.unit, 99], 2, 64))
    grey = write_video(tmp_path / "grey.mp4", np.full((16, 64, 86, 3), 128, np.uint8))
    grey1 = write_video(tmp_path / "grey1.mp4", np.full((1, 64, 86, 3), 128, np.uint8))
    noise = write_video(tmp_path / "noise.mp4", np.random.default_rng(0).integers(0, 256, (16, 64, 86, 3),
                                                                                   dtype=np.uint8))
    held_out = test.clips[labels[0]][-1]
    rep = verbs.classify(rt, tmp_path / "g", [short, grey, grey1, noise, held_out], progress=False)
    assert rep.classifier["calibrated"] and rep.classifier["score_threshold"] < 0  # 2 labels, calibrated
    res = {Path(c).name: p for c, p in rep.results}
    assert any("2 frames, fewer than the model's" in n for n in res["short.mp4"].notes)
    assert any("1 frame, fewer" in n for n in res["grey1.mp4"].notes)
    assert not res[Path(held_out).name].notes
    for name, why in (("grey.mp4", "blank"), ("grey1.mp4", "blank"), ("noise.mp4", "noise")):
        assert res[name].label == UNKNOWN and res[name].why.startswith(why)
    text = "\n".join(rep.lines())
    assert "unknown when the best score <" in rep.lines()[0] and "note: the video has 2 frames" in text
    doc = json.loads(json.dumps(rep.to_dict()))
    assert doc["results"][0]["notes"] and doc["results"][1]["why"].startswith("blank")
