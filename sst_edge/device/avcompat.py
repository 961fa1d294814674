"""The two PyAV calls that changed between PyAV 12 (the lowest pyproject.toml allows) and today's.

Everything else the device half asks of PyAV is the same from 12 to 18, and so are the pixels: the same
clips (plain and rotated, videos and frame folders) decode to identical frames with PyAV 12.0, 13.0,
14.0, 14.1, 15.0 and 18.1 (`make device-check-lowest` runs the device verbs at the lowest versions). Without
these two, every probe failed on PyAV 12 (`container.streams.best`, from 13) and on 12 to 14.0
(`VideoFrame.rotation`, from 14.1).
"""

from __future__ import annotations

import math
import struct
from typing import Any


def best_video_stream(container: Any) -> Any:
    """The container's video stream as FFmpeg picks it (`av_find_best_stream`, PyAV >= 13); on PyAV 12
    the first video stream (the two differ only in files with several, such as cover art beside the
    video: PyAV 12 does not say which is which); None if there is none."""
    best = getattr(container.streams, "best", None)
    if best is not None:
        return best("video")
    videos = container.streams.video
    return videos[0] if videos else None


def frame_rotation(frame: Any) -> float:
    """Counter-clockwise degrees the frame must turn to display upright: `VideoFrame.rotation` where PyAV
    has it (>= 14.1), else the same number from the frame's display matrix (`display_matrix_rotation`)."""
    rotation = getattr(frame, "rotation", None)
    if rotation is not None:
        return float(rotation)
    return display_matrix_rotation(frame)


def display_matrix_rotation(frame: Any) -> float:
    """FFmpeg's `av_display_rotation_get` on the frame's DISPLAYMATRIX side data (nine 16.16 fixed-point
    int32 in the machine's byte order, 2.30 in the last column), written out for PyAV < 14.1; 0 when the
    frame has none or it holds no rotation (a zero scale, where FFmpeg gives NaN)."""
    data = frame.side_data.get("DISPLAYMATRIX")
    if data is None:
        return 0.0
    raw = bytes(data)
    if len(raw) != 36:
        return 0.0
    m = [v / 65536.0 for v in struct.unpack("=9i", raw)]
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0.0 or scale1 == 0.0:
        return 0.0
    return -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))
