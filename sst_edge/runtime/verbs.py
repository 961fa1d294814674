"""One library function per runtime CLI verb; each returns a result with `lines()` and `to_dict()`.

`enroll`, `classify`, `stream`, `gallery_list`, `gallery_remove`, `gallery_rename` and `eval_model`. The CLI
only parses arguments, calls one of these and prints `lines()` (or `to_dict()` as JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..device.card import load_card
from ..device.cca import card_head
from ..device.datasets import load_splits
from ..device.evaluation import EvalResult, array_scorer, head_notes, score_episodes
from ..device.preprocess import Preprocess
from ..device.settings import LITERATURE_EPISODES, HeadConfig
from ..errors import SSTEdgeError
from .classify import Classifier, Prediction
from .engine import FewShotRuntime
from .gallery import EnrollReport, Gallery
from .stream import stream_video


def _runtime(model: str | Path | FewShotRuntime, threads: int | None = None, decoder: str | None = None,
             providers: Sequence[str] | None = None) -> FewShotRuntime:
    if isinstance(model, FewShotRuntime):
        return model
    return FewShotRuntime(model, threads=threads, providers=providers, decoder=decoder)


def enroll(model: str | Path | FewShotRuntime, gallery: str | Path, label: str,
           clips: Sequence[str | Path], *, min_shots: int = 1, threads: int | None = None,
           decoder: str | None = None, progress: bool = True) -> EnrollReport:
    """`sst-edge enroll`: add clips to a label of a gallery (created on first use) for this model."""
    rt = _runtime(model, threads, decoder)
    g = Gallery.open_or_create(gallery, rt.card)
    report = g.enroll(rt, label, clips, progress=progress)
    short = [f"'{lb}' has {n} clip{'s' * (n != 1)}, fewer than --min-shots {min_shots}: classify leaves "
             "it out" for lb, n in report.counts.items() if n < min_shots]
    report.notes.extend(short)
    return report


@dataclass
class ClassifyReport:
    gallery: str
    model: str
    classifier: dict[str, Any]
    results: list[tuple[str, Prediction]] = field(default_factory=list)
    top: int = 5

    def to_dict(self) -> dict[str, Any]:
        return {"gallery": self.gallery, "model": self.model, **self.classifier,
                "results": [{"clip": c, **p.to_dict(), "ranking": p.to_dict()["ranking"][:self.top]}
                            for c, p in self.results]}

    def lines(self) -> list[str]:
        cal = self.classifier
        out = [f"head {cal['head']['kind']}, {len(cal['labels'])} labels, {cal['open_set']}"]
        out += [f"  left out '{lb}': {why}" for lb, why in cal["excluded"].items()]
        for clip, p in self.results:
            rest = ", ".join(f"{lb} {c:.2f}" for lb, _, c in p.ranking[(not p.unknown):self.top])
            answer = f"{p.label}  [{p.why}]" if p.unknown else f"{p.label} ({p.confidence:.2f})"
            out.append(f"{clip}: {answer}"
                       + (f"  [{'nearest' if p.unknown else 'then'} {rest}]" if rest else ""))
            out += [f"  note: {n}" for n in p.notes]
        return out


def classify(model: str | Path | FewShotRuntime, gallery: str | Path, clips: Sequence[str | Path], *,
             head: str | None = None, threshold: float | None = None, min_shots: int = 1, top: int = 5,
             threads: int | None = None, decoder: str | None = None, progress: bool = True) -> ClassifyReport:
    """`sst-edge classify`: the ranked labels and calibrated confidence of each clip ("unknown" below the
    threshold). An unreadable clip stops with an error naming it before any clip is classified."""
    rt = _runtime(model, threads, decoder)
    g = Gallery.open(gallery, rt.card)
    cls = Classifier.from_gallery(g, head, min_shots, threshold, ood=rt.ood, ood_why=rt.ood_why)
    dec = rt.decoder()
    frames = [dec.info(c).num_frames for c in clips]  # probe all first: a bad clip is reported before work
    report = ClassifyReport(str(g.path), rt.card.name, cls.describe(), top=top)
    for c, n in tqdm(list(zip(clips, frames, strict=True)), desc="classify", unit="clip",
                     disable=not progress or len(clips) < 2, leave=False):
        clip = rt.load(c, dec)  # Classifier.logits refuses non-finite features
        pred = cls.predict(rt.embed(clip[None]))[0]
        report.results.append((str(c), pred.check_clip(clip, rt.card.preprocess, n)))
    return report


@dataclass
class StreamReport:
    video: str
    classifier: dict[str, Any]
    spans: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"video": self.video, **self.classifier, "spans": [w.to_dict() for w in self.spans]}

    def lines(self) -> list[str]:
        return [f"{w.start_s:8.2f} - {w.end_s:8.2f} s  {w.label} ({w.confidence:.2f})" for w in self.spans]


def stream(model: str | Path | FewShotRuntime, gallery: str | Path, video: str | Path, *, span: float = 2.0,
           stride: float = 1.0, unit: str = "seconds", smooth: int = 1, head: str | None = None,
           threshold: float | None = None, min_shots: int = 1, threads: int | None = None,
           decoder: str | None = None) -> StreamReport:
    """Sliding-window classification of a long video (see stream.py); `stream_video` yields the same
    spans one at a time for live output."""
    rt = _runtime(model, threads, decoder)
    cls = Classifier.from_gallery(Gallery.open(gallery, rt.card), head, min_shots, threshold, ood=rt.ood,
                                  ood_why=rt.ood_why)
    report = StreamReport(str(video), cls.describe())
    report.spans = list(stream_video(rt, cls, video, span, stride, unit, smooth))
    return report


# ------------------------------------------------------------------------------------------- gallery
@dataclass
class GalleryResult:
    summary: dict[str, Any]
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary, **({"message": self.message} if self.message else {})}

    def lines(self) -> list[str]:
        s = self.summary
        out = [self.message] if self.message else []
        out.append(f"{s['gallery']}: model '{s['model']['name']}' (sha256 {s['model']['sha256'][:12]}), "
                   f"{len(s['labels'])} labels, {sum(len(v) for v in s['labels'].values())} clips")
        for lb, recs in s["labels"].items():
            out.append(f"  {lb}  ({len(recs)} clip{'s' * (len(recs) != 1)})")
            out += [f"    {r['id']}  {r['source']}  added {r['added']}" for r in recs]
        for kind, cal in s.get("calibration", {}).items():
            extra = f", leave-one-out accuracy {cal['loo_accuracy']:.2f}" if "loo_accuracy" in cal else ""
            thr, why = cal.get("score_threshold"), cal.get("why", "older rule: recomputed when classifying")
            rule = f"score threshold {thr:.3f}" if thr is not None else f"no score threshold ({why})"
            ood = cal.get("ood")
            if isinstance(ood, dict):
                extra += (f", out-of-distribution threshold {ood['threshold']:.1f}" if isinstance(
                    ood.get("threshold"), int | float) else f", no out-of-distribution threshold "
                    f"({ood.get('why', 'not calibrated')})")
            out.append(f"  calibration {kind}: {cal.get('method')}, temperature "
                       f"{cal.get('temperature'):.3g}, {rule}{extra}")
        return out


def _open(gallery: str | Path, model: str | Path | None) -> Gallery:
    return Gallery.open(gallery, load_card(model) if model is not None else None)


def gallery_list(gallery: str | Path, model: str | Path | None = None) -> GalleryResult:
    """`sst-edge gallery list`: labels, clips (id, source, when) and calibration; with `model`, also
    checks that the gallery belongs to it."""
    return GalleryResult(_open(gallery, model).summary())


def gallery_remove(gallery: str | Path, label: str | None = None, clip: str | None = None,
                   model: str | Path | None = None) -> GalleryResult:
    """`sst-edge gallery remove`: a whole label, or one clip by id (or a unique prefix of it)."""
    if (label is None) == (clip is None):
        raise SSTEdgeError("give a label or a clip id to remove (one of them)")
    g = _open(gallery, model)
    if label is not None:
        recs = g.remove_label(label)
        msg = f"removed label '{label}' ({len(recs)} clip{'s' * (len(recs) != 1)})"
    else:
        lb, rec = g.remove_clip(str(clip))
        msg = f"removed clip {rec.id} ({rec.source}) from '{lb}'"
    return GalleryResult(g.summary(), msg)


def gallery_rename(gallery: str | Path, old: str, new: str, model: str | Path | None = None) -> GalleryResult:
    """`sst-edge gallery rename`: give a label another name (its clips stay)."""
    g = _open(gallery, model)
    n = g.rename_label(old, new)
    return GalleryResult(g.summary(), f"renamed '{old}' to '{new}' ({n} clip{'s' * (n != 1)})")


# ---------------------------------------------------------------------------------------------- eval
def eval_model(model: str | Path | FewShotRuntime, data: str | Path, *, split_dir: str | Path | None = None,
               split: str = "test", way: int = 5, shot: int = 1, query: int = 1,
               episodes: int = LITERATURE_EPISODES, seed: int = 0, heads: Sequence[str] | None = None,
               tau: float | None = None,
               window: int | None | str = "card", reversed_pairs: bool = False, threads: int | None = None,
               decoder: str | None = None, progress: bool = True) -> EvalResult:
    """`sst-edge eval --model`: `train.evaluate.evaluate`'s protocol (the same seeded episodes, centre
    segments and crops of the card's preprocessing, the same heads and interval) with the features
    computed by ONNX Runtime from the exported model. Returns an `EvalResult`.

    heads / tau / window default to the card's head (heads None, tau None, window="card"); pass window
    None for an unwindowed alignment head. A value that differs from the card's is noted in the result.
    """
    return eval_model_episodes(model, data, split_dir=split_dir, split=split, way=way, shot=shot, query=query,
                               episodes=episodes, seed=seed, heads=heads, tau=tau, window=window,
                               reversed_pairs=reversed_pairs, threads=threads, decoder=decoder,
                               progress=progress)[0]


def eval_model_episodes(model: str | Path | FewShotRuntime, data: str | Path, *,
                        split_dir: str | Path | None = None, split: str = "test", way: int = 5, shot: int = 1,
                        query: int = 1, episodes: int = LITERATURE_EPISODES, seed: int = 0,
                        heads: Sequence[str] | None = None, tau: float | None = None,
                        window: int | None | str = "card", reversed_pairs: bool = False,
                        threads: int | None = None, decoder: str | None = None,
                        progress: bool = True) -> tuple[EvalResult, np.ndarray]:
    """`eval_model` and the accuracy of every episode with each head, ``[len(heads), episodes]`` (to
    compare with PyTorch episode by episode)."""
    if episodes < 1 or way < 2 or shot < 1 or query < 1:
        raise SSTEdgeError("evaluation needs episodes >= 1, way >= 2, shot >= 1 and query >= 1")
    rt = _runtime(model, threads, decoder)
    card = rt.card
    bases = [card_head(card, h) for h in (heads or [card.head.kind])]  # cca: the model's weights
    head_cfgs = [HeadConfig(b.kind, b.tau if tau is None else tau, b.window if window == "card" else window,
                            b.params) for b in bases]
    clips = load_splits(data, split_dir)[split]
    pre = card.preprocess if decoder is None else _with_decoder(card.preprocess, rt.decoder_name)
    sample = card.subnet.get("sample", card.subnet) if isinstance(card.subnet, dict) else {}
    runs_on = f"{rt.runtime_name}, {', '.join(rt.session.get_providers())}"
    result = EvalResult(card.space, str(rt.model_dir), dict(sample),
                        f"exported model '{card.name}' ({runs_on})", split, way, shot, query,
                        episodes, seed, head_source=f"the model card ({card.path})",
                        notes=head_notes(card.head, head_cfgs, str(card.path), "the model was exported with"))
    scorer = array_scorer(rt.embed, pre, result, head_cfgs, progress)
    score_episodes(result, scorer, clips, head_cfgs, reversed_pairs=reversed_pairs,
                   tag=" (OpenVINO)" if rt.backend == "openvino" else " (ORT)")
    return result, result.per_episode


def _with_decoder(pre: Preprocess, name: str) -> Preprocess:
    return replace(pre, decoder=name)
