"""Open set: does "unknown" fire for what the gallery does not hold, and what does it cost known actions?

Over --draws random galleries: --labels classes enrolled with --shots random clips each; their other clips
are the held-out known queries, every clip of --unknown further classes the never-enrolled queries. The
classes come from classes the model never trained on: --pool heldout takes the val and test splits of
--train-data (the dataset the model trained on); --pool fresh takes the classes of --data that
--train-data does not have at all (e.g. `sst-edge data synth --classes 48` next to the 24 of the demo:
the classes the open-set rule was tuned on, so that heldout stays a held-out figure).

Figures, each pooled over the draws with a 95% CI from a percentile bootstrap over the draws (2000
resamples of whole galleries, so that clips of one gallery move together; the draws share the pool's
classes, so no interval covers classes outside it):
- closed-set accuracy (the top label), open-set known accuracy (the answer is the right label, not
  "unknown") and the share of never-enrolled clips answered "unknown";
- the known-accuracy drop, paired on the same clips: exact McNemar test (binomial on the discordant
  pairs; a rule that only adds "unknown" can only lose, so one side is empty), and whether the drop's
  CI lies below the goal of 5 points; whether the unknown share's CI lies above the goal of 80%;
- the same for the softmax rule (max calibrated softmax, its threshold a balanced fit on leave-one-label-out
  queries, >= 3 labels: the kind of rule `--threshold` sets by hand), and the unknown shares of the two
  compared on the same clips (McNemar);
- out of domain: a grey clip, a black clip, a 1-frame grey clip, uniform noise, and, standing in for real
  camera footage (there is none offline, sst_edge/data/scenes.py), moving 1/f textures, camera pans over
  textures with natural-image statistics (1/f amplitude spectrum) and a moving object, and the
  gradient-and-disc video of the tests, each answered as `sst-edge classify` would (the content check
  included). Also: how many enrolled-class clips the content check (blank / noise) flagged (none, ideally);
- the check of clips unlike the training data (where the model card has training features): "this rule"
  is the distance rule and the check, as classify applies them, beside the distance rule alone; per kind
  the AUROC of the best logit, the energy (logsumexp of the logits), the max softmax, the check's score
  (Mahalanobis to the nearest label in the training within-action covariance) and the Mahalanobis
  distance to the training distribution itself; the check's cost per span against the head's.

Run: .venv/bin/python bench/open_set.py --model DEMO/models/sst_tiny --data DATA [--train-data DEMO/data]
     [--pool heldout|fresh] [--labels 6 --shots 5 --draws 20 --seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from sst_edge.data.encode import write_video
from sst_edge.data.scenes import gradient_frames, pan_frames, texture_frames
from sst_edge.device.datasets import load_splits, scan_class_folders
from sst_edge.device.ood import fit_distribution, pool
from sst_edge.device.settings import HeadConfig
from sst_edge.runtime.calibration import (
    UNKNOWN,
    calibrate,
    calibrate_ood,
    fit_temperature,
    fit_threshold,
    leave_one_out,
    softmax,
)
from sst_edge.runtime.classify import Classifier, content_problem
from sst_edge.runtime.engine import FewShotRuntime

GOAL_DROP = 0.05
GOAL_UNKNOWN = 0.80


# ------------------------------------------------------------------------------------ out of domain
def ood_videos(folder: Path, seed: int) -> dict[str, list[Path]]:
    rng = np.random.default_rng([seed, 99])
    grey = np.full((16, 64, 86, 3), 128, np.uint8)

    def many(name: str, frames, n: int) -> list[Path]:
        return [write_video(folder / f"{name}{i}.mp4", frames(i)) for i in range(n)]

    return {
        "grey": [write_video(folder / "grey.mp4", grey)],
        "grey, 1 frame": [write_video(folder / "grey1.mp4", grey[:1])],
        "black": [write_video(folder / "black.mp4", np.zeros_like(grey))],
        "uniform noise": many("noise", lambda i: rng.integers(0, 256, grey.shape, dtype=np.uint8), 10),
        "moving 1/f texture": many("tex", lambda i: texture_frames(seed * 1000 + i), 20),
        "pan over 1/f texture": many("pan", lambda i: pan_frames(seed * 1000 + i), 20),
        "gradient + disc": many("grad", lambda i: gradient_frames(seed * 1000 + i), 10),
    }


# ------------------------------------------------------------------------------------------ statistics
def boot_ci(num: np.ndarray, den: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    """95% percentile-bootstrap CI of sum(num) / sum(den), resampling draws (rows)."""
    idx = rng.integers(0, len(num), size=(n, len(num)))
    r = num[idx].sum(1) / np.maximum(den[idx].sum(1), 1)
    return float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney)."""
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="stable")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    for v in np.unique(allv):  # average ranks of ties
        ranks[allv == v] = ranks[allv == v].mean()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: binomial(b + c, 1/2) on the discordant pairs."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def sig(p: float) -> str:
    return f"p = {p:.2g}, {'significant' if p < 0.05 else 'not significant'} at 0.05"


# ------------------------------------------------------------------------------------------------ rules
def softmax_rule(sup: list[np.ndarray], head: HeadConfig) -> tuple[float, float]:
    """(temperature, confidence threshold) of the softmax rule, re-implemented: max calibrated
    softmax, balanced fit on leave-one-label-out keeping >= 90% of known, >= 3 labels (else 0: off)."""
    logits, ys, full = leave_one_out(sup, head)
    n = len(sup)
    if n < 3 or len(ys) < 2:
        return 1.0, 0.0
    others = np.ones_like(full, dtype=bool)
    others[np.arange(len(ys)), ys] = False
    unknown = full[others].reshape(len(ys), n - 1)
    t = fit_temperature(logits, ys, unknown)
    ok = logits.argmax(1) == ys
    if not ok.any():
        return t, 0.0
    known, unk = softmax(logits[ok], t).max(1), softmax(unknown, t).max(1)
    thr, _, rejected = fit_threshold(known, unk, 0.9)
    return t, thr if rejected > 0 else 0.0  # it had 0 among its candidates: when nothing beat accepting all


def pool_classes(args: argparse.Namespace) -> dict[str, list[Path]]:
    folders = scan_class_folders(args.data)
    train_root = args.train_data or args.data
    if args.pool == "heldout":
        splits = load_splits(train_root)
        names = sorted(set(splits["val"].classes) | set(splits["test"].classes))
    else:
        names = sorted(set(folders) - set(scan_class_folders(train_root)))
    missing = [c for c in names if c not in folders]
    if missing:
        raise SystemExit(f"{args.data} lacks classes {missing[:5]}")
    return {c: list(folders[c]) for c in names}


def energy(logits: np.ndarray) -> np.ndarray:
    """The energy score's negative, logsumexp of the logits (higher: more like a known clip)."""
    m = logits.max(1, keepdims=True)
    return (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]


def separation(cls: Classifier, known: tuple[np.ndarray, np.ndarray | None, np.ndarray], logits: np.ndarray,
               feats: np.ndarray) -> dict[str, float]:
    """AUROC of each score between correctly classified known clips (their logits, OOD scores and
    features) and other clips (`logits`, `feats`)."""
    kl, ko, kf = known
    pairs = {"best logit": (kl.max(1), logits.max(1)), "energy": (energy(kl), energy(logits)),
             "max softmax": (cls.probabilities(kl).max(1), cls.probabilities(logits).max(1))}
    if cls.ood is not None and ko is not None:
        pairs["OOD (label Mahalanobis)"] = (-ko, -cls.ood_score(feats))
        pairs["training Mahalanobis"] = (-cls.ood.training_distance(pool(kf)),
                                         -cls.ood.training_distance(pool(feats)))
    return {name: auroc(a, b) for name, (a, b) in pairs.items()}


def per_call_us(fn, x: np.ndarray, reps: int = 300) -> float:
    """Median microseconds of fn(x) over `reps` calls (one span each), after a warm-up."""
    for _ in range(20):
        fn(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e6)


def cost_per_span(cls: Classifier, span: np.ndarray) -> str:
    """The check's cost per span against the head's (both numpy, one span [1, T, C])."""
    head = per_call_us(cls.logits, span)
    check = per_call_us(cls.ood_score, span)
    return (f"head {head:.0f} us, the check {check:.0f} us ({100 * check / head:.0f}% of the head) per span "
            f"[1, {span.shape[1]}, {span.shape[2]}], {len(cls.labels)} labels x "
            f"{len(cls.supports[0])} clips")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="dataset the clips are drawn from")
    ap.add_argument("--train-data", help="the dataset the model trained on (default: --data)")
    ap.add_argument("--pool", choices=("heldout", "fresh"), default="heldout")
    ap.add_argument("--labels", type=int, default=6)
    ap.add_argument("--unknown", type=int, default=6, help="never-enrolled classes per draw")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head", default="alignment")
    args = ap.parse_args()

    rt = FewShotRuntime(args.model)
    pre = rt.card.preprocess
    head = HeadConfig(args.head, rt.card.head.tau, rt.card.head.window)
    classes = pool_classes(args)
    if len(classes) < args.labels + args.unknown:
        raise SystemExit(f"the pool has {len(classes)} classes, fewer than --labels + --unknown")
    dist = rt.ood
    if dist is None:
        print(f"note: no out-of-distribution check ({rt.ood_why})")

    def load(paths: list[Path]) -> tuple[np.ndarray, list[str]]:
        clips = [rt.load(p) for p in paths]
        return rt.embed(np.stack(clips)), [content_problem(c, pre) for c in clips]

    feats, flagged = {}, 0
    for c, paths in classes.items():
        feats[c], probs = load(paths)
        flagged += sum(bool(p) for p in probs)
    n_pool_clips = sum(len(v) for v in classes.values())
    with tempfile.TemporaryDirectory() as tmp:
        ood = {k: load(v) for k, v in ood_videos(Path(tmp), args.seed).items()}

    print(f"model {rt.card.name} ({args.model}), head {head.kind}; pool '{args.pool}': {len(classes)} "
          f"classes the model never trained on, {n_pool_clips} clips from {args.data}")
    print(f"{args.draws} draws (seed {args.seed}): {args.labels} labels x {args.shots} clips enrolled, their "
          f"other clips the known queries; {args.unknown} never-enrolled classes, every clip a query")
    print(f"content check (blank / noise) flagged {flagged} of {n_pool_clips} synthetic clips")
    twin = {}  # the synthetic set's time-reversed pairs: the same frames in the opposite order
    meta = Path(args.data) / "classes.json"
    if meta.is_file():
        for a, b in json.loads(meta.read_text()).get("reversed_pairs", []):
            twin[a], twin[b] = b, a

    names = list(classes)
    # "open"/"unk": the rule classify applies (distance + the check of clips unlike the training data);
    # "dist_*": the distance rule alone (without the check); "soft_*": max calibrated softmax
    rows: dict[str, list[int]] = {k: [] for k in
                                  ("n_known", "closed", "open", "dist_open", "soft_open", "n_unk", "unk",
                                   "dist_unk", "soft_unk", "b", "c", "ub", "uc", "ob", "db", "ob2")}
    ood_hits: dict[str, list[int]] = {k: [] for k in ood}
    ood_dist_hits: dict[str, list[int]] = {k: [] for k in ood}
    by_twin = {True: [0, 0], False: [0, 0]}  # twin enrolled -> [unknown, clips]
    scores = ("best logit", "energy", "max softmax", "OOD (label Mahalanobis)", "training Mahalanobis")
    sep: dict[str, dict[str, list[float]]] = {k: {s: [] for s in scores} for k in ["never-enrolled", *ood]}
    thresholds, ood_thresholds = [], []
    for d in range(args.draws):
        rng = np.random.default_rng([args.seed, d])
        perm = rng.permutation(len(names))
        enrolled = [names[i] for i in perm[:args.labels]]
        never = [names[i] for i in perm[args.labels:args.labels + args.unknown]]
        sup, kq, ky = [], [], []
        for c, name in enumerate(enrolled):
            idx = rng.permutation(len(feats[name]))
            sup.append(feats[name][idx[:args.shots]])
            kq.append(feats[name][idx[args.shots:]])
            ky += [c] * (len(idx) - args.shots)
        kq_all, ky_arr = np.concatenate(kq), np.asarray(ky)
        uq = np.concatenate([feats[n] for n in never])
        cal = calibrate(sup, head)
        thresholds.append(cal["score_threshold"])
        dist_cls = Classifier(enrolled, sup, head, cal["temperature"], cal["threshold"], cal, {},
                              cal["score_threshold"])
        ocal = calibrate_ood(sup, dist) if dist is not None else {"threshold": None}
        ood_thresholds.append(ocal["threshold"])
        cls = Classifier(enrolled, sup, head, cal["temperature"], cal["threshold"], {**cal, "ood": ocal}, {},
                         cal["score_threshold"], dist, ocal["threshold"])
        t_soft, thr_soft = softmax_rule(sup, head)
        kl, ul = cls.logits(kq_all), cls.logits(uq)
        ko, uo = cls.ood_score(kq_all), cls.ood_score(uq)
        truth = np.asarray(enrolled)[ky_arr]
        closed = kl.argmax(1) == ky_arr
        opened = np.array([p.label for p in cls.decide(kl, ood=ko)]) == truth
        dist_open = np.array([p.label for p in dist_cls.decide(kl)]) == truth
        soft_open = closed & (softmax(kl, t_soft).max(1) >= thr_soft)
        unk = np.array([p.label == UNKNOWN for p in cls.decide(ul, ood=uo)])
        dist_unk = np.array([p.label == UNKNOWN for p in dist_cls.decide(ul)])

        known = (kl[closed], ko[closed] if ko is not None else None, kq_all[closed])
        for name, v in separation(cls, known, ul, uq).items():
            sep["never-enrolled"][name].append(v)
        start = 0
        for name in never:
            k, start = len(feats[name]), start + len(feats[name])
            tally = by_twin[twin.get(name) in enrolled]
            tally[0], tally[1] = tally[0] + int(unk[start - k:start].sum()), tally[1] + k
        soft_unk = softmax(ul, t_soft).max(1) < thr_soft
        for k, v in (("n_known", len(ky)), ("closed", closed.sum()), ("open", opened.sum()),
                     ("dist_open", dist_open.sum()), ("soft_open", soft_open.sum()), ("n_unk", len(uq)),
                     ("unk", unk.sum()), ("dist_unk", dist_unk.sum()), ("soft_unk", soft_unk.sum()),
                     ("b", (closed & ~opened).sum()), ("c", (~closed & opened).sum()),
                     ("ob", (closed & ~soft_open).sum()), ("ub", (unk & ~soft_unk).sum()),
                     ("uc", (~unk & soft_unk).sum()), ("db", (dist_open & ~opened).sum()),
                     ("ob2", (dist_unk & ~unk).sum())):
            rows[k].append(int(v))
        for k, (f, probs) in ood.items():
            preds = [p.reject(w) if w else p for p, w in zip(cls.predict(f), probs, strict=True)]
            ood_hits[k].append(sum(p.label == UNKNOWN for p in preds))
            preds = [p.reject(w) if w else p for p, w in zip(dist_cls.predict(f), probs, strict=True)]
            ood_dist_hits[k].append(sum(p.label == UNKNOWN for p in preds))
            if not any(probs):  # the content check's clips (blank, noise) are not the scores' business
                for name, v in separation(cls, known, cls.logits(f), f).items():
                    sep[k][name].append(v)
    r = {k: np.asarray(v) for k, v in rows.items()}
    brng = np.random.default_rng(args.seed)

    def share(num: str, den: str) -> str:
        lo, hi = boot_ci(r[num], r[den], brng)
        return f"{r[num].sum() / r[den].sum():.3f} [{lo:.3f}, {hi:.3f}]"

    def drop(a: str, b: str) -> tuple[float, float, float]:
        x = (r[a] - r[b]).astype(float)
        lo, hi = boot_ci(x, r["n_known"], brng)
        return x.sum() / r["n_known"].sum(), lo, hi

    print(f"score threshold per draw: median {np.median(thresholds):.3f}, range {min(thresholds):.3f} .. "
          f"{max(thresholds):.3f}")
    if dist is not None:
        ot = [t for t in ood_thresholds if t is not None]
        print(f"OOD threshold per draw (squared Mahalanobis, {dist.dim} dimensions, training features of "
              f"{dist.clips} clips): median {np.median(ot):.1f}, range {min(ot):.1f} .. {max(ot):.1f}")
    print(f"\nknown queries: {r['n_known'].sum()} (clip x draw), never-enrolled queries: {r['n_unk'].sum()}")
    print(f"  closed-set accuracy                    {share('closed', 'n_known')}")
    print(f"  open-set known accuracy (this rule)    {share('open', 'n_known')}")
    print(f"  open-set known accuracy (distance only){share('dist_open', 'n_known')}")
    print(f"  never-enrolled answered unknown        {share('unk', 'n_unk')}")
    print(f"  never-enrolled unknown (distance only) {share('dist_unk', 'n_unk')}")
    print(f"  open-set known accuracy (softmax rule) {share('soft_open', 'n_known')}")
    print(f"  never-enrolled unknown (softmax rule)  {share('soft_unk', 'n_unk')}")
    for has, (u, n) in by_twin.items():
        if n and twin:
            print(f"    this rule, never-enrolled classes whose time-reversed twin is {'' if has else 'not '}"
                  f"enrolled: {u}/{n} = {u / n:.3f}")
    print("\nhow well a score separates correctly classified known clips from each kind (AUROC, mean over "
          "draws; higher: better)")
    for kind, per in sep.items():
        print(f"  {kind:<24} " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in per.items() if v))
    print("\ncomparisons (95% CIs: bootstrap over draws; McNemar: exact, pooled clips x draws)")
    for name, a in (("this rule", "open"), ("distance only", "dist_open"), ("softmax rule", "soft_open")):
        dv, lo, hi = drop("closed", a)
        b = int(r["b" if a == "open" else "ob"].sum()) if a != "dist_open" else int(
            (r["closed"] - r["dist_open"]).sum())
        within = "below" if hi < GOAL_DROP else ("above" if lo > GOAL_DROP else "not separable from")
        print(f"  known-accuracy drop, {name}: {100 * dv:.1f} points [{100 * lo:.1f}, {100 * hi:.1f}]; "
              f"McNemar {b} vs 0 discordant, {sig(mcnemar(b, 0))}; CI {within} the "
              f"{100 * GOAL_DROP:.0f}-point goal")
    dv, lo, hi = drop("dist_open", "open")
    db = int(r["db"].sum())
    print(f"  known accuracy the check costs (distance only - this rule): {100 * dv:.2f} points "
          f"[{100 * lo:.2f}, {100 * hi:.2f}], McNemar {db} vs 0, {sig(mcnemar(db, 0))}")
    lo, hi = boot_ci(r["unk"], r["n_unk"], brng)
    verdict = "above" if lo > GOAL_UNKNOWN else ("below" if hi < GOAL_UNKNOWN else "not separable from")
    print(f"  never-enrolled unknown share: CI {verdict} the {100 * GOAL_UNKNOWN:.0f}% goal")
    ub, uc = int(r["ub"].sum()), int(r["uc"].sum())
    print(f"  unknown share, this rule vs softmax rule: +{(ub - uc) / r['n_unk'].sum():.3f} ({ub} vs {uc} "
          f"discordant), {sig(mcnemar(ub, uc))}")
    print("\nout of domain (answered unknown, this rule and the content check; CI: bootstrap over draws; "
          "then the distance rule alone)")
    for k, hits in ood_hits.items():
        h, h0 = np.asarray(hits), np.asarray(ood_dist_hits[k])
        per = np.full(len(h), len(ood[k][1]))
        lo, hi = boot_ci(h, per, brng)
        note = f"; content check: {ood[k][1][0]}" if ood[k][1][0] else ""
        print(f"  {k:<22} {h.sum()}/{per.sum()} = {h.sum() / per.sum():.3f} [{lo:.3f}, {hi:.3f}]; distance "
              f"only {h0.sum() / per.sum():.3f}{note}")
    print("  (real camera footage: none offline; the textures, the pan and 'gradient + disc' stand in)")
    if dist is not None:
        print("\ncost per span (median of 300 calls, this CPU; decoding and the model not included)")
        print(f"  this model: {cost_per_span(cls, kq_all[:1])}")
        big = np.random.default_rng(0)  # sst_paper's output: T = 8 frames of C3 = 160 features
        x = big.normal(size=(600, 160))
        paper = fit_distribution(x, np.repeat(np.arange(60), 10).astype(str))
        sup_p = [big.normal(size=(args.shots, 8, 160)).astype(np.float32) for _ in range(args.labels)]
        cal_p = calibrate(sup_p, head)
        cls_p = Classifier([f"L{i}" for i in range(args.labels)], sup_p, head, 1.0, 0.0, cal_p, {},
                           cal_p["score_threshold"], paper, 1.0)
        print(f"  sst_paper's features (random): {cost_per_span(cls_p, sup_p[0][:1])}")


if __name__ == "__main__":
    main()
