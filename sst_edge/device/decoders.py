"""Two video decoders with one interface: decord (fast, x86 only) and PyAV (everywhere, e.g. Jetson).

Both return the same pixels for the same frame indices, at native size and at a reduced size:
- frame i is the i-th frame in presentation order (both number frames by sorted packet timestamps);
- both resize and convert to RGB in one libswscale pass with bilinear filtering (decord's ffmpeg 4
  `scale` filter default; PyAV is given the same filter graph), so reduced-size decodes match too.
Decoding straight to the reduced size is cheaper than decoding full frames and shrinking them.

A path that is a folder is a clip of extracted frames (frames.py): every decoder reads those the same
way, with PyAV's image decoders, so a dataset may mix videos and frame folders.

A decoder holds no open file between calls, only a cache of probes, so one instance per DataLoader
worker (or thread) is all that is needed; `get_decoder` hands out one per thread.
"""

from __future__ import annotations

import os
import stat
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from ..errors import SSTEdgeError, VideoError
from . import archive
from .avcompat import best_video_stream
from .frames import FrameFolderInfo, ImageReader, probe_frames
from .probe import VideoInfo, av_reason, probe_video

DECODERS = ("auto", "decord", "pyav")


def decord_available() -> bool:
    """decord has no wheel for aarch64 (Jetson): there PyAV does the work."""
    try:
        import decord  # noqa: F401  (optional: no aarch64 wheel)
    except (ImportError, OSError):
        return False
    return True


def resolve_decoder_name(name: str) -> str:
    """'auto' -> 'pyav'; other names are checked.

    PyAV, because it is maintained and at least as fast: decord has had no release since 2022 and is
    reported to leak memory in long runs, and PyAV's keyframe-seek-then-decode reads clips as fast or
    faster (bench/decode.py: PyAV / decord 1.03 to 1.15; bench/train_step.py: the training loader). Both
    give the same pixels; 'decord' stays available by name."""
    if name not in DECODERS:
        raise SSTEdgeError(f"unknown video decoder {name!r} (choose from {', '.join(DECODERS)})")
    if name == "auto":
        return "pyav"
    if name == "decord" and not decord_available():
        raise SSTEdgeError("decoder 'decord' is not installed (it has no aarch64 wheel): use 'pyav' or "
                           "'auto'")
    return name


def _member_key(path: Path) -> tuple[str, int, int]:
    """The cache key of a frame folder inside a zip archive (the archive's size and mtime); a `VideoError`
    for anything else that is not on the disk."""
    hit = archive.locate(path)
    if hit is None:
        probe_video(path)  # raises with the right message
        raise AssertionError("unreachable")
    arc, inner = hit
    if inner not in arc.folders:
        if inner.rpartition("/")[2] in arc.folders.get(inner.rpartition("/")[0], {}):
            raise VideoError(f"is a file inside the zip archive {arc.path}: only frame folders are read from "
                             "an archive (extract videos first)", path)
        raise VideoError(f"not found in the zip archive {arc.path}", path)
    return (str(path), *arc.stamp)


FOLDER_CACHE = 512  # frame-folder probes kept: each holds every frame name, so fewer than video probes


class VideoDecoder(ABC):
    """Reads chosen frames of a clip (a video file or a folder of frames) as uint8 RGB ``[N, H, W, 3]``."""

    name: str = ""

    def __init__(self, threads: int = 1, cache_size: int = 4096):
        self.threads = int(threads)
        self._cache: OrderedDict[tuple[str, int, int], VideoInfo] = OrderedDict()
        self._folders: OrderedDict[tuple[str, int, int], VideoInfo] = OrderedDict()
        self._cache_size = cache_size
        self._images = ImageReader()

    def info(self, path: str | Path) -> VideoInfo:
        """Probe ``path`` (cached by path, size and mtime; a folder's mtime changes when frames are added
        or removed); raises `VideoError` for an unreadable clip."""
        path = Path(path)
        try:
            st = path.stat()
            key = (str(path), st.st_size, st.st_mtime_ns)
            folder = stat.S_ISDIR(st.st_mode)
        except OSError:
            key, folder = _member_key(path), True  # a folder inside a zip archive, or an error
        cache, limit = (self._folders, min(FOLDER_CACHE, self._cache_size)) if folder else \
            (self._cache, self._cache_size)
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        info = probe_frames(path, self._images) if folder else probe_video(path)
        cache[key] = info
        if len(cache) > limit:
            cache.popitem(last=False)
        return info

    def read(self, path: str | Path, indices: Sequence[int],
             size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) of ``path``, resized to ``size`` = (height, width).

        ``size`` None keeps the native (displayed) size. Raises `VideoError` if the clip cannot be read.
        """
        info = self.info(path)
        wanted = [int(i) for i in indices]
        if not wanted:
            raise ValueError("no frame indices given")
        bad = [i for i in wanted if not 0 <= i < info.num_frames]
        if bad:
            raise ValueError(f"{path}: frame indices {bad[:5]} out of range 0..{info.num_frames - 1}")
        height, width = size if size is not None else (info.height, info.width)
        unique = sorted(set(wanted))
        if isinstance(info, FrameFolderInfo):
            frames = self._images.read(info, unique, int(height), int(width))
        else:
            frames = self._read_unique(info, unique, int(height), int(width))
        order = {pos: k for k, pos in enumerate(unique)}
        return frames[[order[i] for i in wanted]]

    @abstractmethod
    def _read_unique(self, info: VideoInfo, positions: list[int], height: int, width: int) -> np.ndarray:
        """Frames at sorted, unique ``positions`` as ``[len(positions), height, width, 3]`` uint8."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads})"


def _filter_chain(rotation: int, height: int, width: int) -> list[tuple[str, str]]:
    """Rotate upright as decord intends (transpose filters), then scale+convert like decord's ffmpeg 4."""
    turn = {90: [("transpose", "cclock")], 180: [("hflip", ""), ("vflip", "")], 270: [("transpose", "clock")]}
    return [*turn.get(rotation, []), ("scale", f"{width}:{height}:flags=bilinear"), ("format", "rgb24")]


class PyAVDecoder(VideoDecoder):
    """PyAV (FFmpeg) decoder: seeks to the keyframe before each wanted frame and decodes forward."""

    name = "pyav"

    def _read_unique(self, info: VideoInfo, positions: list[int], height: int, width: int) -> np.ndarray:
        try:
            with av.open(str(info.path), metadata_errors="ignore") as container:
                stream = best_video_stream(container)
                stream.codec_context.thread_count = self.threads
                graph = _Converter(stream, info.rotation, height, width)
                if info.index is None:
                    got = self._sequential(container, stream, positions, graph)
                else:
                    got = self._seeking(container, stream, info, positions, graph)
        except av.FFmpegError as e:
            raise VideoError(f"decoding failed ({av_reason(e)})", info.path) from None
        missing = [p for p in positions if p not in got]
        if missing:
            raise VideoError(f"frames {missing[:5]} of {info.num_frames} could not be decoded", info.path)
        return np.stack([got[p] for p in positions])

    @staticmethod
    def _sequential(container, stream, positions: list[int], graph: _Converter) -> dict[int, np.ndarray]:
        """Count frames from the start: for streams without usable timestamps."""
        wanted, last, got = set(positions), positions[-1], {}
        for n, frame in enumerate(container.decode(stream)):
            if n in wanted:
                got[n] = graph(frame)
            if n >= last:
                break
        return got

    @staticmethod
    def _seeking(container, stream, info: VideoInfo, positions: list[int],
                 graph: _Converter) -> dict[int, np.ndarray]:
        """Visit targets in order; seek only when the next target lies past a keyframe not yet decoded."""
        index = info.index
        assert index is not None
        pos_of = {index.pts[p]: p for p in positions}
        got: dict[int, np.ndarray] = {}
        frames = None
        last_pts: int | None = None
        for target in sorted(pos_of):
            if pos_of[target] in got:
                continue
            key = index.keyframe_at_or_before(target)
            if frames is None or last_pts is None or key > last_pts or target <= last_pts:
                frames = _decode_from(container, stream, key, target)
            for frame in frames:
                if frame.pts is None:
                    continue
                last_pts = frame.pts
                p = pos_of.get(frame.pts)
                if p is not None and p not in got:
                    got[p] = graph(frame)
                if frame.pts >= target:
                    break
            else:
                break  # end of stream: whatever is missing is reported by the caller
        return got


def _decode_from(container, stream, key_pts: int, target: int):
    """Frames from the keyframe at ``key_pts``; if the seek lands past ``target``, decode from the start."""
    container.seek(key_pts, stream=stream, backward=True, any_frame=False)
    frames = container.decode(stream)
    first = next(frames, None)
    if first is not None and first.pts is not None and first.pts > target:
        container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
        frames = container.decode(stream)
        first = next(frames, None)

    def chain():
        if first is not None:
            yield first
        yield from frames

    return chain()


class _Converter:
    """One filter graph per clip: rotate, scale to (height, width) and convert to RGB24."""

    def __init__(self, stream, rotation: int, height: int, width: int):
        self.graph = av.filter.Graph()
        node = self.graph.add_buffer(template=stream)
        for name, args in _filter_chain(rotation, height, width):
            nxt = self.graph.add(name, args) if args else self.graph.add(name)
            node.link_to(nxt)
            node = nxt
        node.link_to(self.graph.add("buffersink"))
        self.graph.configure()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        self.graph.push(frame)
        return self.graph.pull().to_ndarray()


class DecordDecoder(VideoDecoder):
    """decord decoder: ``VideoReader(width, height)`` decodes straight to the wanted size.

    Every clip is probed with PyAV first, so decord only opens files that PyAV could decode. Clips with
    a rotation flag go to PyAV: decord 0.6.0 fails on them (its buffer and filter sizes disagree); so do
    clips whose file names are not UTF-8 (decord's C API takes UTF-8 names only; PyAV takes any).
    """

    name = "decord"

    def __init__(self, threads: int = 1, cache_size: int = 4096):
        super().__init__(threads, cache_size)
        import decord  # optional: no aarch64 wheel; PyAV decodes the same frames

        decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg would print to stderr
        self._decord = decord
        self._rotated = PyAVDecoder(threads, cache_size=0)

    def _read_unique(self, info: VideoInfo, positions: list[int], height: int, width: int) -> np.ndarray:
        if info.rotation or not _utf8(str(info.path)):
            return self._rotated._read_unique(info, positions, height, width)
        decord = self._decord
        try:
            reader = decord.VideoReader(str(info.path), ctx=decord.cpu(0), width=width, height=height,
                                        num_threads=self.threads)
            try:
                count = len(reader)
                if positions[-1] >= count:
                    raise VideoError(f"decord sees {count} frames, PyAV {info.num_frames}: frame "
                                     f"{positions[-1]} is out of its range", info.path)
                return reader.get_batch(positions).asnumpy()
            finally:
                del reader
        except (decord.DECORDError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise VideoError(f"decord failed: {first}", info.path) from None


def _utf8(name: str) -> bool:
    """Whether a file name (as `os.fsdecode` made it) is valid UTF-8: not one with undecodable bytes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def make_decoder(name: str = "auto", threads: int = 1) -> VideoDecoder:
    """A new decoder by name: 'decord', 'pyav' or 'auto' (PyAV: resolve_decoder_name)."""
    resolved = resolve_decoder_name(name)
    return DecordDecoder(threads) if resolved == "decord" else PyAVDecoder(threads)


_local = threading.local()


def get_decoder(name: str = "auto") -> VideoDecoder:
    """This thread's (and process's) decoder for ``name``, created on first use.

    decord misbehaves when a reader is shared across threads; a decoder opens one reader per call, and
    keeping one decoder per thread and process also keeps each probe cache private.
    """
    cache = getattr(_local, "decoders", None)
    if cache is None or getattr(_local, "pid", None) != os.getpid():
        cache = _local.decoders = {}
        _local.pid = os.getpid()
    decoder = cache.get(name)
    if decoder is None:
        decoder = cache[name] = make_decoder(name)
    return decoder
