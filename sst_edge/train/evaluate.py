"""Few-shot accuracy of one subnet of a trained supernet, as the literature reports it.

The protocol (episodes, heads, confidence interval, reversed pairs) is `device.evaluation`'s, shared with
exported models; here the features come from the PyTorch supernet. The same code gives the per-epoch
validation accuracy in training (split over ranks under torchrun).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.episodes import EpisodeDataset, episode_loader
from ..device.datasets import load_splits
from ..device.evaluation import LITERATURE_EPISODES, EvalResult, Scorer, head_notes, score_episodes
from ..device.heads import HeadConfig
from ..device.preprocess import Preprocess
from ..errors import SSTEdgeError
from ..fewshot import head_logits
from ..fileio import read_json
from ..space.config import SpaceConfig, load_space
from ..space.supernet import activate, build_supernet, load_shared_weights
from .checkpoint import checkpoint_paths, complete_checkpoints, load_tensors, model_state
from .distributed import Dist, configure_threads

WEIGHTS_FILE = "supernet.safetensors"
RESTRICTION_FILE = "shrunk.json"
RUN_FILE = "run.json"  # train.loop's run record (its config.head is the head the run trained through)
FROM_RUN = "run"  # `window` argument: take it from the run (None already means "no window")
SUPERNET_FORMAT = "sst-edge/supernet"


def split_features(features: torch.Tensor, way: int, shot: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N*K + Q, T, C] features of an episode's support then query -> (query, support [N, K, T, C])."""
    s = way * shot
    return features[s:], features[:s].reshape(way, shot, *features.shape[1:])


def episode_accuracies(supernet: nn.Module, config: SpaceConfig, sample: dict[str, Any],
                       dataset: EpisodeDataset, heads: Sequence[HeadConfig], workers: int = 0,
                       d: Dist | None = None, progress: bool = False, desc: str = "eval") -> np.ndarray:
    """Accuracy of every episode of `dataset` with each head: [len(heads), episodes].

    With several ranks each evaluates a strided share and the shares are summed, so all ranks return the
    whole array. The supernet is left in eval mode, routed through `sample`.
    """
    activate(supernet, config, sample)
    supernet.eval()
    return embedded_episode_accuracies(supernet, dataset, heads, workers, d, progress, desc)


def embedded_episode_accuracies(embed: Callable[[torch.Tensor], torch.Tensor], dataset: EpisodeDataset,
                                heads: Sequence[HeadConfig], workers: int = 0, d: Dist | None = None,
                                progress: bool = False, desc: str = "eval") -> np.ndarray:
    """`episode_accuracies` for any embedding function (clips [B, T, 3, H, W] -> features [B, T, C]):
    a PyTorch module, or an ONNX Runtime session (deployed models are scored on the same episodes)."""
    return compare_embeddings([embed], dataset, heads, workers, d, progress, desc)[0]


def compare_embeddings(embeds: Sequence[Callable[[torch.Tensor], torch.Tensor]], dataset: EpisodeDataset,
                       heads: Sequence[HeadConfig], workers: int = 0, d: Dist | None = None,
                       progress: bool = False, desc: str = "eval") -> np.ndarray:
    """Accuracies [len(embeds), len(heads), episodes] of several embeddings (fp32 vs int8, say) on the same
    episodes, each episode decoded once."""
    d = d or Dist()
    n = len(dataset)
    acc = torch.zeros(len(embeds), len(heads), n, dtype=torch.float64)
    share = range(d.rank, n, d.world)
    part = _Strided(dataset, share)
    bar = tqdm(total=len(share), desc=desc, unit="ep", leave=False, disable=not (progress and d.is_main))
    with torch.no_grad():
        for j, ep in zip(share, episode_loader(part, workers), strict=True):
            clips = torch.cat([ep.support, ep.query])
            for e, embed in enumerate(embeds):
                query, support = split_features(embed(clips), dataset.way, dataset.shot)
                for h, head in enumerate(heads):
                    hit = head_logits(query, support, head).argmax(1) == ep.query_labels
                    acc[e, h, j] = hit.double().mean()
            bar.update()
    bar.close()
    return d.sum(acc).numpy()


class _Strided(torch.utils.data.Dataset):
    """Episodes `share` (a range) of an EpisodeDataset: one rank's part of an evaluation."""

    def __init__(self, dataset: EpisodeDataset, share: range):
        self.dataset, self.share = dataset, share

    def __len__(self) -> int:
        return len(self.share)

    def __getitem__(self, j: int):
        return self.dataset[self.share[j]]


# -------------------------------------------------------------------------------------------- weights
def resolve_weights(path: str | Path) -> Path:
    """A run folder -> its final supernet.safetensors, else its newest checkpoint; a file -> itself."""
    path = Path(path)
    if path.is_dir():
        if (path / WEIGHTS_FILE).is_file():
            return path / WEIGHTS_FILE
        epochs = complete_checkpoints(path)
        if epochs:
            return checkpoint_paths(path, epochs[-1])[0]
        raise SSTEdgeError(f"no {WEIGHTS_FILE} or checkpoint here (is it a training run folder?)", path)
    if not path.is_file():
        raise SSTEdgeError("weights not found (expected a run folder or a .safetensors file)", path)
    return path


def weights_problems(meta: dict[str, Any], config: SpaceConfig) -> list[str]:
    """Why weights with this metadata cannot belong to `config` (another space, or its YAML changed)."""
    problems = []
    if meta.get("space") != config.name:
        problems.append(f"trained for space {meta.get('space')!r}, not '{config.name}'")
    if meta.get("space_hash") != config.hash:
        problems.append(f"space hash {meta.get('space_hash')!r} does not match '{config.name}' "
                        f"({config.hash}): the space YAML changed since training")
    return problems


def load_weights(weights: str | Path,
                 config: SpaceConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Model state, metadata and file of a run folder or safetensors file, checked against `config`."""
    path = resolve_weights(weights)
    tensors, meta = load_tensors(path)
    problems = weights_problems(meta, config)
    if problems:
        raise SSTEdgeError("weights do not fit the space", path, problems)
    state = model_state(tensors) if any(k.startswith("model.") for k in tensors) else tensors
    return state, meta, path


def single_path(sample: dict[str, Any]) -> dict[str, list]:
    """The restriction holding exactly one subnet: what a fine-tuning run trains and saves."""
    return {label: [value] for label, value in sample.items()}


def load_supernet(weights: str | Path, config: SpaceConfig) -> tuple[nn.Module, dict[str, Any]]:
    """A supernet of `config` with the weights of a run folder or safetensors file (checked: space, hash).

    Built with the shapes the weights have: the whole space for a supernet run (shrinking drops no
    tensor, so subnets outside the shrunk space stay loadable), the one subnet for a fine-tuned run
    (metadata "subnet"). `supernet_choices` of the result says which; `activate` refuses the rest.
    """
    from ..space.subnet import sample_problems

    state, meta, path = load_weights(weights, config)
    tuned = meta.get("subnet")
    if tuned is not None:
        problems = sample_problems(config, tuned) if isinstance(tuned, dict) else ["not an object"]
        if problems:
            raise SSTEdgeError("the fine-tuned subnet in the metadata does not fit the space", path, problems)
        tuned = {k: tuned[k] for k in config.choices()}  # the metadata's JSON has its keys sorted
    supernet = build_supernet(config, single_path(tuned) if tuned else None)
    try:
        missing = load_shared_weights(supernet, state)
    except SSTEdgeError as e:
        raise SSTEdgeError(f"weights do not fit the supernet ({e})", path) from None
    if missing:
        raise SSTEdgeError(f"{len(missing)} supernet tensors missing from the weights", path, missing[:10])
    return supernet, {**meta, "subnet": tuned, "path": str(path)}


def run_restriction(weights: str | Path, config: SpaceConfig) -> dict[str, list] | None:
    """The shrunk space saved beside the weights (a run folder's shrunk.json), if any."""
    from ..space.restriction import load_restriction

    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    f = folder / RESTRICTION_FILE
    return load_restriction(f, config).keep if f.is_file() else None


# ------------------------------------------------------------------------------------------------ head
def trained_head(weights: str | Path) -> tuple[HeadConfig | None, Path]:
    """The head a run trained through: config.head of the run.json beside the weights (a run folder, or
    the folder of its .safetensors), and that file. (None, the path looked at) for bare weights with no
    run.json. A run.json that cannot be read or holds no valid head is an error naming the file."""
    path = Path(weights)
    run = (path if path.is_dir() else path.parent) / RUN_FILE
    if not run.is_file():
        return None, run
    doc = read_json(run, "run record")
    config = doc.get("config") if isinstance(doc, dict) else None
    head = config.get("head") if isinstance(config, dict) else None
    if not isinstance(head, dict):
        raise SSTEdgeError("holds no few-shot head (config.head): is it the run.json of `sst-edge train`?",
                           run)
    problems = [f"{k} must be a finite number, got {head[k]!r}" for k in ("tau",)
                if k in head and not (isinstance(head[k], int | float) and not isinstance(head[k], bool)
                                      and math.isfinite(head[k]))]
    if problems:
        raise SSTEdgeError("holds a bad few-shot head (config.head)", run, problems)
    try:
        return HeadConfig.from_dict(head), run
    except SSTEdgeError as e:
        raise SSTEdgeError(f"holds a bad few-shot head (config.head): {e.message}", run, e.problems) from None
    except (TypeError, ValueError) as e:
        raise SSTEdgeError(f"holds a bad few-shot head (config.head): {e}", run) from None


@dataclass
class HeadChoice:
    """The head a stage (eval, search, export) uses: the run's, unless a setting was given explicitly.

    `trained`: the run's head (None: no run.json, the defaults are used); `given`: the explicit settings;
    `notes`: every way the used head differs from the run's, or that there was no run to take it from."""

    head: HeadConfig
    trained: HeadConfig | None
    source: str
    given: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def configs(self, kinds: Sequence[str] | None = None) -> list[HeadConfig]:
        """The head for each of `kinds` (default: the chosen kind) with the chosen tau and window."""
        return [HeadConfig(k, self.head.tau, self.head.window) for k in (kinds or [self.head.kind])]

    def to_dict(self) -> dict[str, Any]:
        return {"used": self.head.to_dict(), "trained": self.trained.to_dict() if self.trained else None,
                "source": self.source, "given": dict(self.given), "notes": list(self.notes)}


def choose_head(weights: str | Path, kinds: Sequence[str] | None = None, tau: float | None = None,
                window: int | None | str = FROM_RUN, warn: bool = True) -> HeadChoice:
    """The head for `weights`: kind, tau and window from the run (run.json beside the weights), each
    overridden by an explicit value (`kinds` None, `tau` None, `window` FROM_RUN: from the run). A value
    that differs from the run's, or weights without a run.json (the defaults), is noted and, with `warn`,
    warned about."""
    trained, run = trained_head(weights)
    base = trained or HeadConfig()
    given: dict[str, Any] = {}
    if kinds:
        given["kind"] = list(kinds) if len(kinds) > 1 else kinds[0]
    if tau is not None:
        given["tau"] = tau
    if window != FROM_RUN:
        given["window"] = window
    head = HeadConfig(kinds[0] if kinds else base.kind, base.tau if tau is None else tau,
                      base.window if window == FROM_RUN else window)  # type: ignore[arg-type]
    used = [HeadConfig(k, head.tau, head.window) for k in (kinds or [head.kind])]
    if trained is None:
        source = f"defaults (no {RUN_FILE} beside {weights})"
        notes = [f"no {RUN_FILE} beside {weights}: the head the weights were trained with is unknown; using "
                 f"kind {head.kind}, tau {head.tau}, window {head.window}"
                 + (" (defaults apart from what was given)" if given else " (the defaults)")]
    else:
        source = str(run) + (" with " + ", ".join(f"{k} {v!r}" for k, v in given.items()) + " given"
                             if given else "")
        notes = head_notes(trained, used, str(run))
    if warn:
        for n in notes:
            warnings.warn(n, stacklevel=2)
    return HeadChoice(head, trained, source, given, notes)


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(space: str | Path | SpaceConfig, weights: str | Path, data: str | Path, *,
             split_dir: str | Path | None = None, split: str = "test", subnet: str | Path | None = None,
             sample: dict[str, Any] | None = None, way: int = 5, shot: int = 1, query: int = 1,
             episodes: int = LITERATURE_EPISODES, seed: int = 0, heads: Sequence[str] | None = None,
             tau: float | None = None, window: int | None | str = FROM_RUN, reversed_pairs: bool = False,
             resize: int | None = None, workers: int = 1, threads: int | None = None,
             progress: bool = True) -> EvalResult:
    """Accuracy of a subnet of trained supernet weights on fixed episodes of held-out classes.

    The subnet: `subnet` (a subnet document), else `sample`, else the subnet of fine-tuned weights, else
    the largest (most FLOPs) subnet of the run's shrunk space (shrunk.json beside the weights) or of the
    whole space. Fine-tuned weights hold one subnet: a `subnet` document must name that one.
    `reversed_pairs`: 2-way episodes, each of one pair of classes that are each other played backwards
    (synthetic dataset).

    The head: the run's (kind, tau, window from run.json beside the weights; `choose_head`), each setting
    overridden by an explicit `heads` / `tau` / `window`; the result says where it came from and notes
    any difference from the run's head. Default: the literature's 10,000 episodes of 1 query per class.
    """
    from ..space.report import extreme_sample
    from ..space.subnet import load_subnet, sample_problems

    config = space if isinstance(space, SpaceConfig) else load_space(space)
    configure_threads(threads, workers, 1)
    if episodes < 1 or way < 2 or shot < 1 or query < 1:
        raise SSTEdgeError("evaluation needs episodes >= 1, way >= 2, shot >= 1 and query >= 1")
    supernet, meta = load_supernet(weights, config)
    tuned = meta["subnet"]
    if subnet is not None:
        sample, source = load_subnet(subnet, config)[0].sample, str(subnet)
        if tuned is not None and sample != tuned:
            raise SSTEdgeError(f"is not the subnet that {meta['path']} was fine-tuned for (those weights "
                               "hold no other)", subnet, sample_problems(config, sample, single_path(tuned)))
    elif sample is not None:
        source = "given sample"
    elif tuned is not None:
        sample, source = tuned, "fine-tuned subnet"
    else:
        keep = run_restriction(weights, config)
        sample = extreme_sample(config, keep, largest=True)
        source = "largest of the shrunk space" if keep else "largest of the space"
    choice = choose_head(weights, heads, tau, window)
    head_cfgs = choice.configs(heads)
    pre = config.eval_preprocess(resize)
    result = EvalResult(config.name, meta["path"], dict(sample), source, split, way, shot, query, episodes,
                        seed, head_source=choice.source, notes=list(choice.notes))
    activate(supernet, config, sample)
    supernet.eval()
    scorer = torch_scorer(supernet, pre, result, head_cfgs, workers, progress)
    return score_episodes(result, scorer, load_splits(data, split_dir)[split], head_cfgs,
                          reversed_pairs=reversed_pairs)


def torch_scorer(embed: Callable[[torch.Tensor], torch.Tensor], pre: Preprocess, result: EvalResult,
                 heads: Sequence[HeadConfig], workers: int = 0, progress: bool = True) -> Scorer:
    """A `Scorer` of `result`'s episodes with features from a PyTorch embedding (DataLoader workers)."""
    def scorer(clips, way: int, episodes: int, seed: int, desc: str) -> np.ndarray:
        ds = EpisodeDataset(clips, pre, way=way, shot=result.shot, query=result.query, episodes=episodes,
                            seed=seed, train=False)
        return embedded_episode_accuracies(embed, ds, heads, workers, progress=progress, desc=desc)

    return scorer
