"""Probe a video with PyAV before any decoder touches it.

decord prints to stderr and can abort on damaged input, so every clip first passes this check: open the
container, index every packet of the video stream (no decoding) and decode the first frame. A missing,
empty, foreign, truncated or zero-frame file becomes a `VideoError` that names it. The packet index is
also what the PyAV decoder seeks with: frame i is the packet with the i-th smallest presentation
timestamp, the same numbering decord uses, so both decoders agree on what "frame i" is.
"""

from __future__ import annotations

import bisect
import errno
from dataclasses import dataclass, field
from pathlib import Path

import av

from ..errors import VideoError
from ..fileio import FRAME_MAX_PIXELS, os_reason
from .avcompat import best_video_stream, frame_rotation


@dataclass(frozen=True)
class FrameIndex:
    """Presentation timestamps of a stream, sorted: frame i has ``pts[i]``."""

    pts: tuple[int, ...]
    keyframes: tuple[int, ...]  # sorted pts of the keyframe packets

    def keyframe_at_or_before(self, pts: int) -> int:
        """The pts to seek to so that decoding forward reaches ``pts`` (the first frame if none earlier)."""
        i = bisect.bisect_right(self.keyframes, pts)
        return self.keyframes[i - 1] if i else self.pts[0]


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder needs to know about a clip; sizes are as displayed (after rotation)."""

    path: Path
    width: int
    height: int
    num_frames: int
    fps: float
    codec: str
    rotation: int = 0  # counter-clockwise degrees the frames must turn to display upright: 0/90/180/270
    index: FrameIndex | None = field(default=None, repr=False, compare=False)  # None: timestamps unusable


def av_reason(e: BaseException) -> str:
    """A short reason from a PyAV error, without the errno and the file name PyAV appends."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text).strip()


def check_pixels(size: tuple[int, int] | None, path: Path, what: str = "video") -> None:
    """Refuse, before decoding, a frame of more than `FRAME_MAX_PIXELS` (a small file can claim a huge
    image) or of no pixels at all; `size` None: not known from the header."""
    if size is None:
        return
    w, h = size
    if w * h > FRAME_MAX_PIXELS:
        raise VideoError(f"{what}: {w}x{h} pixels, more than the {FRAME_MAX_PIXELS:,} a frame may have", path)
    if not w or not h:
        raise VideoError(f"{what}: its header gives {w}x{h} pixels", path)


def _open(path: Path) -> av.container.InputContainer:
    try:
        st = path.stat()
    except OSError as e:  # not found, a symlink loop, permission denied on a folder...
        raise VideoError("file not found" if e.errno == errno.ENOENT else os_reason(e), path) from None
    if not path.is_file():
        raise VideoError("not a file (video datasets hold one video file per clip)", path)
    if st.st_size == 0:
        raise VideoError("empty file (0 bytes)", path)
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, OSError) as e:
        if getattr(e, "errno", None) in (errno.EACCES, errno.EPERM):
            raise VideoError("permission denied", path) from None
        raise VideoError(f"not a readable video container ({av_reason(e)}): the file is damaged, "
                         "truncated, or not a video", path) from None


def probe_video(path: str | Path) -> VideoInfo:
    """Check that ``path`` is a decodable video and index its frames; raise `VideoError` if not."""
    path = Path(path)
    container = _open(path)
    with container:
        stream = best_video_stream(container)
        if stream is None:
            raise VideoError("zero frames: the file holds no video stream", path)
        ctx = stream.codec_context
        ctx.thread_count = 1
        check_pixels((ctx.width, ctx.height) if ctx.width and ctx.height else None, path)
        pts: list[int | None] = []
        keys: list[int] = []
        first = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe and packet.pts is not None:
                    keys.append(packet.pts)
                if first is None:
                    frames = ctx.decode(packet)
                    first = frames[0] if frames else None
            if first is None and pts:
                frames = ctx.decode(None)
                first = frames[0] if frames else None
        except av.FFmpegError as e:
            what = "decoding the first frame" if first is None else f"reading packet {len(pts)}"
            raise VideoError(f"damaged video: {what} failed ({av_reason(e)})", path) from None
        if not pts:
            raise VideoError("zero frames: the video stream holds no frames", path)
        listed = stream.frames
        if listed and len(pts) < listed:
            raise VideoError(f"truncated: the container lists {listed} frames but only {len(pts)} are in "
                             "the file", path)
        if first is None:
            raise VideoError(f"damaged video: none of its {len(pts)} packets decodes to a frame", path)
        rotation = int(round(frame_rotation(first) / 90.0)) * 90 % 360
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        index = None
        if all(p is not None for p in pts) and len(set(pts)) == len(pts):
            index = FrameIndex(pts=tuple(sorted(pts)), keyframes=tuple(sorted(set(keys))))  # type: ignore[arg-type]
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        return VideoInfo(path=path, width=width, height=height, num_frames=len(pts), fps=fps,
                         codec=ctx.name, rotation=rotation, index=index)


def decode_all(path: str | Path) -> int:
    """Decode every frame of ``path`` (nothing kept) and return the count: the thorough integrity check."""
    path = Path(path)
    info = probe_video(path)
    n = 0
    with _open(path) as container:
        stream = best_video_stream(container)
        stream.codec_context.thread_count = 1
        try:
            for _ in container.decode(stream):
                n += 1
        except av.FFmpegError as e:
            raise VideoError(f"damaged video: decoding failed after frame {n} of {info.num_frames} "
                             f"({av_reason(e)})", path) from None
    if n < info.num_frames:
        raise VideoError(f"damaged video: only {n} of {info.num_frames} frames decode", path)
    return n
