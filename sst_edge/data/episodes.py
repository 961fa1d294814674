"""Episodes as torch tensors for training and PyTorch evaluation: `EpisodeDataset` wraps the device's
numpy `EpisodeSampler` (same episodes, same seeds) as a map-style torch Dataset.

Use it with ``DataLoader(batch_size=None)`` (see `episode_loader`): an episode is already a batch.
"""

from __future__ import annotations

from dataclasses import replace
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


def episode_loader(dataset: EpisodeDataset, num_workers: int = 0, prefetch_factor: int | None = 2,
                   persistent_workers: bool = False) -> DataLoader:
    """A DataLoader that yields `Episode` objects one by one (no extra batch dimension)."""
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers}
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                      collate_fn=_identity, **kw)


def _identity(x: Episode) -> Episode:
    return x
