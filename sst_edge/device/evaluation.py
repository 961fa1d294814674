"""Few-shot accuracy on fixed, seeded episodes, as the literature reports it: the one protocol of
`sst-edge eval`, for PyTorch weights (host) and exported models (device) alike.

Fixed, seeded evaluation episodes (centre segments and crops) on held-out classes; accuracy per episode;
the mean with its 95% confidence interval 1.96 * std / sqrt(episodes). Several heads are scored on the
same features, so "alignment vs prototype" compares heads, not episodes. numpy only: the device scores an
exported model with `array_accuracies`, the host wraps the same episodes as torch tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import SSTEdgeError
from ..fileio import read_json
from .datasets import ClipSet
from .episodes import EpisodeSampler
from .heads import head_logits_np
from .preprocess import Preprocess
from .settings import HeadConfig

# (clips of one episode set, way, episodes, seed, description) -> accuracies [heads, episodes]
Scorer = Callable[[ClipSet, int, int, int, str], np.ndarray]

# The test protocol of the few-shot literature (TRX, OTAM, SST): 10,000 episodes of 1 query per class, the
# mean accuracy with its 95% interval. `sst-edge eval` defaults to it; fewer episodes are quicker.


def head_notes(trained: HeadConfig, used: Sequence[HeadConfig], owner: str,
               what: str = "the model was trained with") -> list[str]:
    """One line per way the heads `used` differ from the head the model was trained with (`trained`, as
    recorded in `owner`: a run.json or a model card): a mismatch is said, never used silently."""
    notes = []
    for name in ("kind", "tau", "window"):
        if name == "window" and not any(h.kind == "alignment" for h in used):
            continue  # the prototype head has no window
        values = sorted({repr(getattr(h, name)) for h in used} - {repr(getattr(trained, name))})
        if values:
            notes.append(f"head {name} {', '.join(values)} differs from the {name} "
                         f"{getattr(trained, name)!r} {what} ({owner})")
    return notes


def confidence_interval(accuracies: np.ndarray) -> float:
    """Half-width of the 95% interval of the mean episode accuracy (normal approximation)."""
    n = len(accuracies)
    return float(1.96 * np.std(accuracies) / math.sqrt(n)) if n else float("nan")


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of k successes in n (a rate of few trials: unknown spans, recall)."""
    if n == 0:
        return 0.0, 1.0
    z, p = 1.959963984540054, k / n
    mid, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (mid - half) / (1 + z * z / n), (mid + half) / (1 + z * z / n)


def paired_change(before: np.ndarray, after: np.ndarray, margin_points: float = 1.0) -> dict[str, Any]:
    """The accuracy change from `before` to `after`, scored on the same episodes (paired), in points:
    mean, 95% interval (normal approximation of the per-episode differences), whether it excludes 0
    (significant), and whether it lies above -`margin_points` (no worse than the margin, at 95%)."""
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if before.shape != after.shape or before.ndim != 1 or not before.size:
        raise SSTEdgeError(f"a paired change needs two equal-length 1-D episode accuracy arrays, got "
                           f"{before.shape} and {after.shape}")
    d = 100 * (after - before)
    mean, half = float(d.mean()), float(1.96 * d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.inf
    return {"episodes": int(d.size), "change_points": round(mean, 3), "ci95_points": round(half, 3),
            "significant": bool(abs(mean) > half), "margin_points": margin_points,
            "within_margin": bool(mean - half > -margin_points)}


def reversed_pair_sets(clips: ClipSet) -> list[ClipSet]:
    """One 2-class ClipSet per reversed pair of `clips` (from the dataset's classes.json)."""
    meta_path = clips.root / "classes.json"
    meta = read_json(meta_path, "synthetic dataset description")
    pairs = meta.get("reversed_pairs") if isinstance(meta, dict) else None
    if not isinstance(pairs, list):
        raise SSTEdgeError("lists no 'reversed_pairs' (only the synthetic dataset has them)", meta_path)
    sets = [ClipSet(f"{clips.name}:{a}|{b}", clips.root, {c: clips.clips[c] for c in sorted((a, b))})
            for a, b in pairs if a in clips.clips and b in clips.clips]
    if not sets:
        raise SSTEdgeError(f"no reversed pair has both classes in split '{clips.name}'", meta_path)
    return sets


@dataclass
class EvalResult:
    space: str
    weights: str
    sample: dict[str, Any]
    subnet_source: str
    split: str
    way: int
    shot: int
    query: int
    episodes: int
    seed: int
    accuracy: dict[str, float] = field(default_factory=dict)   # head -> mean episode accuracy
    ci95: dict[str, float] = field(default_factory=dict)       # head -> half-width of the 95% interval
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: list[str] = field(default_factory=list)             # reversed pairs evaluated, if any
    per_pair: dict[str, dict[str, float]] = field(default_factory=dict)  # pair -> head -> accuracy
    head_source: str = ""  # where the head settings came from (the run's run.json, the card, defaults)
    notes: list[str] = field(default_factory=list)  # e.g. a head that differs from the trained one
    per_episode: Any = field(default=None, repr=False)  # [heads, episodes] accuracies, not serialised

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "per_episode"}

    def lines(self) -> list[str]:
        what = (f"2-way {self.shot}-shot on {len(self.pairs)} reversed pairs" if self.pairs
                else f"{self.way}-way {self.shot}-shot")
        return [f"{what}, split '{self.split}', {self.episodes} episodes x {self.query} queries per class "
                f"(seed {self.seed}), subnet: {self.subnet_source}"] + [
            f"  {h:<10} accuracy {100 * a:.2f}% +- {100 * self.ci95[h]:.2f}% (95% CI)"
            for h, a in self.accuracy.items()] + [
            f"    {pair}: " + ", ".join(f"{h} {100 * a:.1f}%" for h, a in accs.items())
            for pair, accs in self.per_pair.items()] + (
            [f"  head: {self.head_source}"] if self.head_source else []) + [
            f"  note: {n}" for n in self.notes]


def array_accuracies(embed: Callable[[np.ndarray], np.ndarray], sampler: EpisodeSampler,
                     heads: Sequence[HeadConfig], progress: bool = False, desc: str = "eval") -> np.ndarray:
    """Accuracy of every episode of `sampler` with each head, ``[len(heads), episodes]``; `embed` maps
    clips ``[B, T, 3, H, W]`` to features ``[B, T, C]`` (an ONNX Runtime session, say)."""
    acc = np.zeros((len(heads), len(sampler)), np.float64)
    way, shot = sampler.way, sampler.shot
    for j in tqdm(range(len(sampler)), desc=desc, unit="ep", leave=False, disable=not progress):
        ep = sampler[j]
        feats = embed(np.concatenate([ep.support, ep.query]))
        s = way * shot
        query, support = feats[s:], feats[:s].reshape(way, shot, *feats.shape[1:])
        for h, head in enumerate(heads):
            acc[h, j] = (head_logits_np(query, support, head).argmax(1) == ep.query_labels).mean()
    return acc


def score_episodes(result: EvalResult, scorer: Scorer, clips: ClipSet, head_cfgs: Sequence[HeadConfig], *,
                   reversed_pairs: bool = False, tag: str = "") -> EvalResult:
    """Fill `result` (its split, way, shot, query, episodes and seed say which episodes) with the accuracy
    of each head from `scorer`: the one protocol of `sst-edge eval`, for PyTorch weights and exported
    models alike. Reversed pairs: 2-way episodes spread over the pairs, one seed each.
    `result.per_episode` keeps the accuracies ([heads, episodes]) for episode-by-episode comparisons."""
    r = result
    sets = reversed_pair_sets(clips) if reversed_pairs else [clips]
    n_way = 2 if reversed_pairs else r.way
    per_set = [r.episodes // len(sets) + (i < r.episodes % len(sets)) for i in range(len(sets))]
    acc, used = [], []
    for i, (cs, n) in enumerate(zip(sets, per_set, strict=True)):
        if n:
            desc = cs.name if reversed_pairs else f"eval {r.split}{tag}"
            acc.append(scorer(cs, n_way, n, r.seed + i, desc))
            used.append(cs)
    all_acc = np.concatenate(acc, axis=1)
    r.way, r.episodes = n_way, all_acc.shape[1]
    if reversed_pairs:
        r.pairs = [cs.name.split(":", 1)[1] for cs in sets]
        r.per_pair = {cs.name.split(":", 1)[1]: {head.kind: float(a[h].mean())
                                                 for h, head in enumerate(head_cfgs)}
                      for cs, a in zip(used, acc, strict=True)}
    for h, head in enumerate(head_cfgs):
        r.accuracy[head.kind] = float(all_acc[h].mean())
        r.ci95[head.kind] = confidence_interval(all_acc[h])
        r.heads[head.kind] = head.to_dict()
    r.per_episode = all_acc
    return r


def array_scorer(embed: Callable[[np.ndarray], np.ndarray], pre: Preprocess, result: EvalResult,
                 heads: Sequence[HeadConfig], progress: bool = True) -> Scorer:
    """A `Scorer` of `result`'s episodes (shot, query) with numpy features from `embed` (the device's)."""
    def scorer(clips: ClipSet, way: int, episodes: int, seed: int, desc: str) -> np.ndarray:
        sampler = EpisodeSampler(clips, pre, way=way, shot=result.shot, query=result.query, episodes=episodes,
                                 seed=seed, train=False)
        return array_accuracies(embed, sampler, heads, progress, desc)

    return scorer
