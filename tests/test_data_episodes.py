"""Episodes from the synthetic dataset: shapes, labels, reproducibility, DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sst_edge.data.episodes import Episode, EpisodeDataset, episode_loader
from sst_edge.device.datasets import load_splits
from sst_edge.device.preprocess import Preprocess
from sst_edge.errors import DatasetError

PRE = Preprocess(frames=8, size=56, resize=64)


@pytest.fixture(scope="module")
def splits(synth_dataset):
    return load_splits(synth_dataset)


def same(a: Episode, b: Episode) -> bool:
    return (a.index == b.index and a.classes == b.classes and a.support_paths == b.support_paths
            and a.query_paths == b.query_paths and torch.equal(a.support, b.support)
            and torch.equal(a.query, b.query) and torch.equal(a.support_labels, b.support_labels)
            and torch.equal(a.query_labels, b.query_labels))


def test_episode_shapes_labels_and_classes(splits):
    ds = EpisodeDataset(splits.train, PRE, way=5, shot=2, query=3, episodes=4, seed=0)
    ep = ds[0]
    assert ep.support.shape == (10, 8, 3, 56, 56) and ep.support.dtype == torch.float32
    assert ep.query.shape == (15, 8, 3, 56, 56)
    assert ep.support_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert ep.query_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert len(set(ep.classes)) == 5 and set(ep.classes) <= set(splits.train.classes)
    for path, label in zip(ep.support_paths + ep.query_paths,
                           ep.support_labels.tolist() + ep.query_labels.tolist(), strict=True):
        assert Path(path).parent.name == ep.classes[label]
    assert not set(ep.support_paths) & set(ep.query_paths)
    assert len(set(ep.support_paths + ep.query_paths)) == 25
    assert ep.skipped == [] and ds.skipped_count == 0
    assert torch.isfinite(ep.support).all() and ep.support.std() > 0.1


def test_val_and_test_splits_give_five_way_episodes(splits):
    for clips in (splits.val, splits.test):
        ep = EpisodeDataset(clips, PRE, way=5, shot=1, query=1, episodes=1, seed=3, train=False)[0]
        assert set(ep.classes) <= set(clips.classes) and ep.support.shape[0] == 5


def test_episodes_reproducible_for_a_seed_and_resumable(splits):
    a = EpisodeDataset(splits.train, PRE, way=5, shot=1, query=2, episodes=6, seed=11)
    b = EpisodeDataset(splits.train, PRE, way=5, shot=1, query=2, episodes=6, seed=11)
    assert same(a[2], b[2])
    assert same(a[4], a[4])
    assert a[0].classes != a[1].classes or a[0].support_paths != a[1].support_paths
    resumed = EpisodeDataset(splits.train, PRE, way=5, shot=1, query=2, episodes=3, seed=11, start=3)
    assert same(resumed[0], a[3]) and resumed[0].index == 3
    other = EpisodeDataset(splits.train, PRE, way=5, shot=1, query=2, episodes=6, seed=12)
    assert not same(other[2], a[2])


def test_training_episodes_jitter_evaluation_episodes_do_not(splits):
    train = EpisodeDataset(splits.train, PRE, way=5, shot=1, query=1, episodes=2, seed=5, train=True)
    evaluation = EpisodeDataset(splits.train, PRE, way=5, shot=1, query=1, episodes=2, seed=5, train=False)
    t, e = train[0], evaluation[0]
    assert t.support_paths == e.support_paths, "the draw of classes and clips does not depend on train"
    assert not torch.equal(t.support, e.support)


def test_dataloader_workers_give_the_same_episodes(splits):
    ds = EpisodeDataset(splits.train, PRE, way=5, shot=1, query=1, episodes=4, seed=7)
    serial = list(episode_loader(ds, num_workers=0))
    parallel = list(episode_loader(ds, num_workers=2))
    assert len(serial) == len(parallel) == 4
    assert all(isinstance(ep, Episode) for ep in parallel)
    for s, p in zip(serial, parallel, strict=True):
        assert same(s, p)
    assert ds._decoder is not None  # the parent opened its own for num_workers=0 ...
    assert EpisodeDataset.__getstate__(ds)["_decoder"] is None  # ... and never ships it to workers


def test_impossible_episode_is_refused_up_front(splits):
    with pytest.raises(DatasetError, match="a 7-way episode needs 7"):
        EpisodeDataset(splits.test, PRE, way=7, shot=1, query=1)
    with pytest.raises(DatasetError, match=r">= 11 clips \(6 shot \+ 5 query\)"):
        EpisodeDataset(splits.train, PRE, way=5, shot=6, query=5)


def test_device_sampler_gives_the_training_tensors(synth_dataset):
    """The device's numpy episodes are the training path's torch episodes, value for value."""
    from sst_edge.device.episodes import EpisodeSampler

    test = load_splits(synth_dataset)["test"]
    pre = Preprocess(frames=8, size=56, resize=64)
    host = EpisodeDataset(test, pre, way=3, shot=2, query=1, episodes=2, seed=5, train=False)
    device = EpisodeSampler(test, pre, way=3, shot=2, query=1, episodes=2, seed=5, train=False)
    for j in range(2):
        a, b = host[j], device[j]
        assert isinstance(b.support, np.ndarray) and a.support_paths == b.support_paths
        assert np.abs(a.support.numpy() - b.support).max() <= 1e-6
        assert np.abs(a.query.numpy() - b.query).max() <= 1e-6
        assert np.array_equal(a.query_labels.numpy(), b.query_labels)
