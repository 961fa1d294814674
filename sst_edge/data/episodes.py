"""Episodes as torch tensors for training and PyTorch evaluation: `EpisodeDataset` wraps the device's
numpy `EpisodeSampler` (same episodes, same seeds) as a map-style torch Dataset.

Use it with ``DataLoader(batch_size=None)`` (see `episode_loader`): an episode is already a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..device.episodes import Episode as ArrayEpisode
from ..device.episodes import EpisodeSampler


@dataclass
class Episode:
    """One few-shot task as torch tensors. Labels 0..N-1 index ``classes``; class-major."""

    index: int
    support: torch.Tensor          # [N*K, T, 3, H, W] float32
    query: torch.Tensor            # [N*Q, T, 3, H, W] float32
    support_labels: torch.Tensor   # [N*K] int64
    query_labels: torch.Tensor     # [N*Q] int64
    classes: list[str]
    support_paths: list[str]
    query_paths: list[str]
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def from_arrays(cls, ep: ArrayEpisode) -> Episode:
        return cls(ep.index, torch.from_numpy(ep.support), torch.from_numpy(ep.query),
                   torch.from_numpy(ep.support_labels), torch.from_numpy(ep.query_labels), ep.classes,
                   ep.support_paths, ep.query_paths, ep.skipped)


class EpisodeDataset(EpisodeSampler, Dataset):
    """`EpisodeSampler` whose items are torch `Episode`s (see `EpisodeSampler` for the arguments)."""

    def __getitem__(self, j: int) -> Episode:  # type: ignore[override]
        return Episode.from_arrays(super().__getitem__(j))


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
