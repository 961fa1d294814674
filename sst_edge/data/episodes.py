"""Episodes as torch tensors for training and PyTorch evaluation: `EpisodeDataset` wraps the device's
numpy `EpisodeSampler` (same episodes, same seeds) as a map-style torch Dataset.

Use it with ``DataLoader(batch_size=None)`` (see `episode_loader`): an episode is already a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import is_dataclass, replace
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..device.episodes import Episode, EpisodeSampler


def to_tensors(ep: Episode) -> Episode:
    """The same episode with torch tensors (shared memory, no copy) where the sampler gives arrays."""
    return replace(ep, support=torch.from_numpy(ep.support), query=torch.from_numpy(ep.query),
                   support_labels=torch.from_numpy(ep.support_labels),
                   query_labels=torch.from_numpy(ep.query_labels))


class EpisodeDataset(EpisodeSampler, Dataset):
    """`EpisodeSampler` whose items are torch `Episode`s (see `EpisodeSampler` for the arguments)."""

    def __getitem__(self, j: int) -> Episode:
        return to_tensors(super().__getitem__(j))


class EpisodeSubset(Dataset):
    """Items `indices` (any order) of an episode dataset (an `EpisodeDataset`, the search's cached
    episodes, or another subset), with its `way` and `shot`: one rank's share of an epoch or of an
    evaluation."""

    def __init__(self, dataset: Any, indices: Sequence[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> Any:
        return self.dataset[self.indices[j]]

    @property
    def way(self) -> int:
        return self.dataset.way

    @property
    def shot(self) -> int:
        return self.dataset.shot


def episode_loader(dataset: Dataset, num_workers: int = 0, prefetch_factor: int | None = 2,
                   persistent_workers: bool = False, pin_memory: bool = False) -> DataLoader:
    """A DataLoader that yields `Episode` objects one by one (no extra batch dimension).

    `pin_memory` (for a CUDA model): the loader thread copies each episode's tensors into page-locked
    memory, so the copy to the GPU can run asynchronously (`non_blocking=True`)."""
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers}
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                      collate_fn=_identity, pin_memory=pin_memory, **kw)


def _identity(x: Episode) -> Episode:
    return x


def to_device(ep: Any, device: torch.device) -> Any:
    """The episode (an `Episode`, or the search's cached one) with its tensors on `device`: asynchronous
    copies from pinned memory; on the CPU the episode itself."""
    if device.type == "cpu":
        return ep
    moved = {k: v.to(device, non_blocking=True) for k, v in vars(ep).items() if isinstance(v, torch.Tensor)}
    return replace(ep, **moved) if is_dataclass(ep) else SimpleNamespace(**{**vars(ep), **moved})
