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
from ..data.episodes import EpisodeDataset, EpisodeSubset, episode_loader
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
from .device import module_device, resolve_device
from .distributed import Dist, configure_threads

# Episodes embedded together on a GPU (one forward of EVAL_BATCH x N(K+Q) clips): enough work to fill it.
# On the CPU one episode at a time (a bigger batch gains nothing there and changes float rounding).
EVAL_BATCH_GPU = 16


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


def compare_embeddings(embeds: Sequence[Callable[[torch.Tensor], torch.Tensor]], dataset: Any,
                       heads: Sequence[HeadConfig], workers: int = 0, d: Dist | None = None,
                       progress: bool = False, desc: str = "eval", batch: int | None = None) -> np.ndarray:
    """Accuracies [len(embeds), len(heads), episodes] of several embeddings (fp32 vs int8, say) on the same
    episodes, each episode decoded once.

    A PyTorch module embeds on its own device (clips moved there); anything else (an ONNX Runtime session)
    takes CPU tensors. `batch` episodes go through each embedding in one call (default: EVAL_BATCH_GPU
    when an embedding is on a GPU, else 1); the heads and the accuracies are computed per episode."""
    d = d or Dist()
    n = len(dataset)
    devices = [module_device(e) if isinstance(e, nn.Module) else torch.device("cpu") for e in embeds]
    on_gpu = any(dev.type == "cuda" for dev in devices)  # batched, from pinned memory
    batch = batch or (EVAL_BATCH_GPU if on_gpu else 1)
    acc = np.zeros((len(embeds), len(heads), n), dtype=np.float64)
    share = range(d.rank, n, d.world)
    bar = tqdm(total=len(share), desc=desc, unit="ep", leave=False, disable=not (progress and d.is_main))
    pending: list[tuple[int, Any]] = []

    def flush() -> None:
        clips = torch.cat([torch.cat([ep.support, ep.query]) for _, ep in pending])
        sizes = [len(ep.support) + len(ep.query) for _, ep in pending]
        for e, (embed, dev) in enumerate(zip(embeds, devices, strict=True)):
            feats = embed(clips.to(dev, non_blocking=True))
            for (j, ep), f in zip(pending, torch.split(feats, sizes), strict=True):
                query, support = split_features(f.float(), dataset.way, dataset.shot)
                labels = ep.query_labels.to(f.device)
                for h, head in enumerate(heads):
                    hit = head_logits(query, support, head).argmax(1) == labels
                    acc[e, h, j] = hit.double().mean().item()
        bar.update(len(pending))
        pending.clear()

    with torch.no_grad():
        for j, ep in zip(share, episode_loader(EpisodeSubset(dataset, share), workers, pin_memory=on_gpu),
                         strict=True):
            pending.append((j, ep))
            if len(pending) == batch:
                flush()
        if pending:
            flush()
    bar.close()
    return d.sum(acc)


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(space: str | Path | SpaceConfig, weights: str | Path, data: str | Path, *,
             split_dir: str | Path | None = None, split: str = "test", subnet: str | Path | None = None,
             sample: dict[str, Any] | None = None, way: int = 5, shot: int = 1, query: int = 1,
             episodes: int = LITERATURE_EPISODES, seed: int = 0, heads: Sequence[str] | None = None,
             tau: float | None = None, window: int | None | str = FROM_RUN, reversed_pairs: bool = False,
             resize: int | None = None, workers: int = 1, threads: int | None = None,
             device: str = "auto", progress: bool = True) -> EvalResult:
    """Accuracy of a subnet of trained supernet weights on fixed episodes of held-out classes.

    The subnet: `subnet` (a subnet document), else `sample`, else the subnet of fine-tuned weights, else
    the largest (most FLOPs) subnet of the run's restriction (restriction.json beside the weights) or of the
    whole space. Fine-tuned weights hold one subnet: a `subnet` document must name that one.
    `reversed_pairs`: 2-way episodes, each of one pair of classes that are each other played backwards
    (synthetic dataset).

    The head: the run's (kind, tau, window from run.json beside the weights; `choose_head`), each setting
    overridden by an explicit `heads` / `tau` / `window`; the result says where it came from and notes
    any difference from the run's head. Default: the literature's 10,000 episodes of 1 query per class.
    `device` (train/device.py): where the supernet embeds, in fp32; episodes are batched on a GPU.
    """

    config = space if isinstance(space, SpaceConfig) else load_space(space)
    dev = resolve_device(device)
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
    supernet.to(dev).eval()
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
