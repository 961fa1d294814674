"""Few-shot accuracy of one subnet of a trained supernet, as the literature reports it.

The protocol (episodes, heads, confidence interval, reversed pairs) is `device.evaluation`'s, shared with
exported models; here the features come from the PyTorch supernet. The same code gives the per-epoch
validation accuracy in training (split over ranks under torchrun).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..cost.flops import extreme_sample
from ..data.episodes import EpisodeDataset, episode_loader
from ..device.datasets import load_splits
from ..device.evaluation import EvalResult, Scorer, score_episodes
from ..device.preprocess import Preprocess
from ..device.settings import LITERATURE_EPISODES, HeadConfig
from ..errors import SSTEdgeError
from ..fewshot import head_logits
from ..space.config import SpaceConfig, load_space
from ..space.subnet import load_subnet, sample_problems
from ..space.supernet import activate
from .artifacts import FROM_RUN, choose_head, load_supernet, run_restriction, single_path
from .distributed import Dist, configure_threads


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
    the largest (most FLOPs) subnet of the run's restriction (restriction.json beside the weights) or of the
    whole space. Fine-tuned weights hold one subnet: a `subnet` document must name that one.
    `reversed_pairs`: 2-way episodes, each of one pair of classes that are each other played backwards
    (synthetic dataset).

    The head: the run's (kind, tau, window from run.json beside the weights; `choose_head`), each setting
    overridden by an explicit `heads` / `tau` / `window`; the result says where it came from and notes
    any difference from the run's head. Default: the literature's 10,000 episodes of 1 query per class.
    """

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
        restriction = run_restriction(weights, config)
        sample = extreme_sample(config, restriction, largest=True)
        source = "largest of the restriction" if restriction else "largest of the space"
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
