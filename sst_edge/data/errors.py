"""Errors of the data stage: subclasses of SSTEdgeError, so the CLI prints them and exits 2."""

from __future__ import annotations

from ..errors import SSTEdgeError


class VideoError(SSTEdgeError):
    """A clip cannot be read: missing, empty, not a video, truncated, or it fails to decode.

    Training catches it and replaces the clip; everywhere else it reaches the user with the path.
    """


class DatasetError(SSTEdgeError):
    """A dataset layout or split file is wrong: a missing clip, a bad line, overlapping splits."""
