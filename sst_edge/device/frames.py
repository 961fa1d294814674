"""Clips stored as folders of extracted frames (``root/<class>/<clip>/00000001.jpg``), read like videos.

The few-shot action-recognition code (TRX, STRM, HyRSM) keeps its datasets as numbered JPEG frames. A
frame folder is probed into the same `VideoInfo` a video gets and read through the same
`VideoDecoder.read`, so segment sampling, the reduced size and the preprocessing are the video path's.
Images are decoded with PyAV (FFmpeg's mjpeg and png decoders: already a dependency, on every device) and
scaled + converted to RGB in one libswscale bilinear pass, the library and filter the video decoders use;
so the PNG frames of a video read back as its decoded frames (exactly at native size; at another size the
video path scales its 4:2:0 YUV and this one RGB: on the synthetic set 2 levels on average, more at sharp
colour edges). PyAV rather than Pillow: no new dependency on the device, and the same scaler as the videos.

Frame order is the number in the file name (the last run of digits), whatever its zero-padding; names
that do not say the order unambiguously (no number, two numbering patterns, one number twice) are refused.
A frame folder may also lie inside a zip archive (archive.py): it is listed and read in place.
"""

from __future__ import annotations

import errno
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import VideoError
from ..fileio import IMAGE_MAX_BYTES, os_reason, sha256_file
from . import archive
from .probe import VideoInfo, av_reason, check_pixels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_CODECS = ((b"\xff\xd8\xff", "mjpeg"), (b"\x89PNG\r\n\x1a\n", "png"))
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # JPEG frame headers
_NUMBER = re.compile(r"(\d+)(?!.*\d)")  # the last run of digits
_SHOWN = 3


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def frame_number(name: str) -> tuple[str, int] | None:
    """(pattern, number) of a frame file name: ``img_00012.JPG`` -> (``img_#.jpg``, 12); None if no digits."""
    stem, dot, ext = name.rpartition(".")
    m = _NUMBER.search(stem)
    if m is None:
        return None
    return f"{stem[:m.start()]}#{stem[m.end():]}{dot}{ext.lower()}", int(m.group(1))


@dataclass(frozen=True)
class FrameFolderInfo(VideoInfo):
    """A frame folder as a clip: ``names[i]`` is frame i (numeric order), ``numbers[i]`` its number."""

    names: tuple[str, ...] = field(default=(), repr=False, compare=False)
    numbers: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def file(self, i: int) -> Path:
        return self.path / self.names[i]

    def gaps(self) -> list[tuple[int, int]]:
        """Missing runs of frame numbers between the first and the last, as (first missing, last missing)."""
        return [(a + 1, b - 1) for a, b in zip(self.numbers, self.numbers[1:], strict=False) if b - a > 1]


def _several(items: list[str]) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def list_frames(folder: Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The image names of ``folder`` in frame order and their numbers; `VideoError` if there are none or
    their names do not give one order."""
    try:
        entries = [e.name for e in archive.scandir(folder) if not e.name.startswith(".") and e.is_file]
    except OSError as e:
        raise VideoError("folder not found" if e.errno == errno.ENOENT else os_reason(e), folder) from None
    images = sorted(n for n in entries if is_image(n))
    if not images:
        others = f" (it holds {_several(sorted(entries))})" if entries else ""
        raise VideoError(f"empty frame folder: no {'/'.join(IMAGE_EXTENSIONS)} images{others}", folder)
    parsed = {n: frame_number(n) for n in images}
    unnumbered = [n for n, p in parsed.items() if p is None]
    if unnumbered:
        raise VideoError(f"frame names must hold the frame number; {_several(unnumbered)} hold none", folder)
    patterns: dict[str, list[str]] = {}
    by_number: dict[int, list[str]] = {}
    for n, p in parsed.items():
        assert p is not None
        patterns.setdefault(p[0], []).append(n)
        by_number.setdefault(p[1], []).append(n)
    if len(patterns) > 1:
        kinds = [f"{pat} ({len(v)}, e.g. {v[0]})" for pat, v in sorted(patterns.items())]
        raise VideoError(f"frame names follow {len(patterns)} patterns, so the frame order is ambiguous: "
                         f"{_several(kinds)}", folder)
    twice = [" and ".join(v) for v in by_number.values() if len(v) > 1]
    if twice:
        raise VideoError(f"frame numbers given twice (ambiguous order): {_several(twice)}", folder)
    numbers = sorted(by_number)
    return tuple(by_number[k][0] for k in numbers), tuple(numbers)


def _context(codec: str) -> av.CodecContext:
    """A fresh decoder per image: FFmpeg's png decoder keeps state between packets (reused, it returned
    each PNG blended with the one before), and a fresh one costs well under a millisecond."""
    ctx = av.CodecContext.create(codec, "r")
    ctx.thread_count = 1
    ctx.options = {"err_detect": "explode"}  # a truncated JPEG is an error, not a grey bottom half
    return ctx


class ImageReader:
    """Decodes frame images with PyAV and scales them; holds a scaler (its cached libswscale context), so
    one per thread (a decoder's)."""

    def __init__(self) -> None:
        self._scaler = VideoReformatter()

    def decode(self, path: Path) -> tuple[av.VideoFrame, str]:
        """One image as a PyAV frame and its codec ('mjpeg' or 'png', from its bytes, not its name);
        `VideoError` naming the file if it cannot be read or decoded. Its size in bytes and in pixels
        is checked before it is decoded (`IMAGE_MAX_BYTES`, `FRAME_MAX_PIXELS`)."""
        data = read_image(path)
        if not data:
            raise VideoError("unreadable image: empty file (0 bytes)", path)
        codec = next((c for magic, c in _CODECS if data.startswith(magic)), None)
        if codec is None:
            raise VideoError("unreadable image: not a JPEG or PNG file", path)
        check_pixels(image_size(data, codec), path, "unreadable image")
        try:
            ctx = _context(codec)
            frames = ctx.decode(av.Packet(data)) or ctx.decode(None)
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(f"unreadable image: damaged {'JPEG' if codec == 'mjpeg' else 'PNG'} "
                             f"({av_reason(e)})", path) from None
        if not frames:
            raise VideoError("unreadable image: it decodes to nothing", path)
        return frames[0], codec

    def checked(self, info: FrameFolderInfo, i: int) -> av.VideoFrame:
        """Frame ``i`` of ``info``, refused if its size is not the first frame's."""
        path = info.file(i)
        frame = self.decode(path)[0]
        if (frame.width, frame.height) != (info.width, info.height):
            raise VideoError(f"frame {i} is {frame.width}x{frame.height}, the clip's first frame "
                             f"{info.width}x{info.height}: frames of one clip must have one size", path)
        return frame

    def read(self, info: FrameFolderInfo, positions: list[int], height: int, width: int) -> np.ndarray:
        """Frames at ``positions`` as uint8 RGB ``[N, height, width, 3]`` (bilinear, like the videos)."""
        out = np.empty((len(positions), height, width, 3), np.uint8)
        for k, p in enumerate(positions):
            frame = self.checked(info, p)
            out[k] = self._scaler.reformat(frame, width=width, height=height, format="rgb24",
                                           interpolation="BILINEAR").to_ndarray()
        return out


def read_image(path: Path) -> bytes:
    """An image's bytes, at most `IMAGE_MAX_BYTES` of them (on the disk or in a zip archive, declared and
    decompressed); `VideoError` naming it otherwise."""
    try:
        return archive.read_bytes(path, IMAGE_MAX_BYTES)
    except VideoError as e:
        raise VideoError(f"unreadable image: {e.message}", path) from None
    except OSError as e:
        raise VideoError(f"unreadable image: {os_reason(e)}", path) from None


def image_size(data: bytes, codec: str) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's frame header (SOFn), read without decoding; None
    when the header is not where the format puts it (the decoder then names what is wrong)."""
    if codec == "png":
        if data[12:16] != b"IHDR" or len(data) < 24:
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    pos = 2  # after SOI
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if marker in _SOF and pos + 9 <= len(data):
            return int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


def probe_frames(folder: str | Path, reader: ImageReader | None = None) -> FrameFolderInfo:
    """List a frame folder and decode its first image; `VideoError` naming the folder or image if either
    fails. No frame rate: frame folders carry none (stream them with window and stride in frames)."""
    folder = Path(folder)
    names, numbers = list_frames(folder)
    first, codec = (reader or ImageReader()).decode(folder / names[0])
    return FrameFolderInfo(path=folder, width=first.width, height=first.height, num_frames=len(names),
                           fps=0.0, codec=codec, names=names, numbers=numbers)


def is_folder(path: str | Path) -> bool:
    """True for a directory (following symlinks) or a folder inside a zip archive; False for anything else,
    a missing path included."""
    return archive.is_dir(path)


def decode_all_frames(info: FrameFolderInfo, reader: ImageReader | None = None) -> int:
    """Decode every image of a frame folder (nothing kept): the thorough check. Returns the count."""
    reader = reader or ImageReader()
    for i in range(info.num_frames):
        reader.checked(info, i)
    return info.num_frames


def frames_sha256(info: FrameFolderInfo) -> str:
    """One digest of a frame folder's images in frame order (names left out: a copy renumbered with
    another padding is the same clip)."""
    h = hashlib.sha256(b"sst-edge frame folder v1\n")
    for i in range(info.num_frames):
        h.update(hashlib.sha256(read_image(info.file(i))).digest())
    return h.hexdigest()


def clip_sha256(info: VideoInfo) -> str:
    """The digest that identifies a clip: of the video file, or of a frame folder's images in order."""
    return frames_sha256(info) if isinstance(info, FrameFolderInfo) else sha256_file(info.path)
