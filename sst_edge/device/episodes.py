"""N-way K-shot Q-query episodes in numpy, reproducible: the sampler that training, evaluation and the
device share.

Episode i is drawn from a generator seeded with (seed, i) alone, so it is the same with 0 or 8 workers, in
any order, on the host or on the device, and a resumed run continues at an index (``start``). The sampler
opens its decoder lazily on first use, per process; nothing holding a file or a decord reader crosses a
process or thread boundary.

An unreadable clip does not stop training: it is replaced by another clip of the same class (or the
class by another class if too few of its clips are readable), and the episode lists what it skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import DatasetError, VideoError
from .datasets import ClipSet
from .decoders import VideoDecoder, make_decoder
from .preprocess import Preprocess, load_clip


@dataclass
class Episode:
    """One few-shot task. Labels 0..N-1 index ``classes``; support and query are class-major. numpy arrays
    from the sampler; `data.episodes.to_tensors` gives the same episode as torch tensors for training."""

    index: int
    support: Any                   # [N*K, T, 3, H, W] float32
    query: Any                     # [N*Q, T, 3, H, W] float32
    support_labels: Any            # [N*K] int64
    query_labels: Any              # [N*Q] int64
    classes: list[str]             # class name of each label
    support_paths: list[str]
    query_paths: list[str]
    skipped: list[str] = field(default_factory=list)  # "path: reason" of unreadable clips replaced here

    def pin_memory(self) -> Episode:
        """What torch's DataLoader(pin_memory=True) calls: the same episode with its tensors in page-locked
        memory (duck-typed, so this torch-free module needs no torch)."""
        return replace(self, **{k: getattr(self, k).pin_memory() for k in
                                ("support", "query", "support_labels", "query_labels")})


class EpisodeSampler:
    """``episodes`` episodes from ``clips``; item j is episode ``start + j`` (numpy arrays).

    ``train`` selects random temporal offsets and crops (True) or centres (False) when decoding.
    ``unreadable`` maps the clips this process found unreadable to the reason; ``skipped_count`` counts
    the replacements it made (per process: with workers, sum ``len(episode.skipped)`` instead).
    """

    def __init__(self, clips: ClipSet, preprocess: Preprocess, way: int = 5, shot: int = 1, query: int = 1,
                 episodes: int = 1000, seed: int = 0, train: bool = True, start: int = 0):
        if way < 1 or shot < 1 or query < 0 or episodes < 0 or start < 0 or seed < 0:
            raise ValueError("way and shot must be >= 1; query, episodes, start and seed >= 0")
        self.clips = clips
        self.preprocess = preprocess
        self.way, self.shot, self.query = way, shot, query
        self.episodes, self.seed, self.train, self.start = episodes, seed, train, start
        need = shot + query
        self.eligible = [c for c in clips.classes if len(clips.clips[c]) >= need]
        if len(self.eligible) < way:
            raise DatasetError(
                f"split '{clips.name}' has {len(self.eligible)} classes with >= {need} clips "
                f"({shot} shot + {query} query); a {way}-way episode needs {way}", clips.root)
        self.unreadable: dict[str, str] = {}
        self.skipped_count = 0
        self._decoder: VideoDecoder | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.episodes

    def __getitem__(self, j: int) -> Episode:
        if not 0 <= j < self.episodes:
            raise IndexError(j)
        return self.episode(self.start + j)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_decoder"], state["_pid"] = None, None  # each worker opens its own
        return state

    @property
    def decoder(self) -> VideoDecoder:
        """This process's decoder, opened on first use (in the worker, not in the parent)."""
        if self._decoder is None or self._pid != os.getpid():
            self._decoder = make_decoder(self.preprocess.decoder)
            self._pid = os.getpid()
        return self._decoder

    def episode(self, index: int) -> Episode:
        """Episode number ``index``: a function of (seed, index) only."""
        rng = np.random.default_rng([self.seed, index])
        need = self.shot + self.query
        chosen: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
        skipped: list[str] = []
        for c in rng.permutation(len(self.eligible)):
            cls = self.eligible[int(c)]
            got = self._draw_class(cls, need, rng, skipped)
            if got is not None:
                chosen.append((cls, got))
                if len(chosen) == self.way:
                    break
        if len(chosen) < self.way:
            raise DatasetError(f"episode {index}: only {len(chosen)} classes of split '{self.clips.name}' "
                               f"have {need} readable clips; {self.way} needed", self.clips.root,
                               skipped[:10])
        support, query, s_paths, q_paths = [], [], [], []
        for _, got in chosen:
            for path, clip in got[:self.shot]:
                support.append(clip)
                s_paths.append(path)
            for path, clip in got[self.shot:]:
                query.append(clip)
                q_paths.append(path)
        t, s = self.preprocess.frames, self.preprocess.size
        return Episode(
            index=index,
            support=np.stack(support),
            query=np.stack(query) if query else np.empty((0, t, 3, s, s), np.float32),
            support_labels=np.repeat(np.arange(self.way, dtype=np.int64), self.shot),
            query_labels=np.repeat(np.arange(self.way, dtype=np.int64), self.query),
            classes=[cls for cls, _ in chosen],
            support_paths=s_paths,
            query_paths=q_paths,
            skipped=skipped,
        )

    def _draw_class(self, cls: str, need: int, rng: np.random.Generator,
                    skipped: list[str]) -> list[tuple[str, np.ndarray]] | None:
        """``need`` decoded clips of ``cls`` in a random order, skipping unreadable ones; None if too few."""
        paths = self.clips.clips[cls]
        got: list[tuple[str, np.ndarray]] = []
        for k in rng.permutation(len(paths)):
            path = str(paths[int(k)])
            clip_seed = int(rng.integers(2**63))  # drawn even for a known-bad clip: same stream either way
            reason = self.unreadable.get(path)
            if reason is None:
                try:
                    clip = load_clip(path, self.preprocess, train=self.train,
                                     rng=np.random.default_rng(clip_seed), decoder=self.decoder)
                except VideoError as e:
                    reason = self.unreadable[path] = str(e)
                else:
                    got.append((path, clip))
                    if len(got) == need:
                        return got
                    continue
            skipped.append(reason if reason.startswith(path) else f"{path}: {reason}")
            self.skipped_count += 1
        return None
