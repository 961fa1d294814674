"""One exception type for bad user input, so the CLI can print it plainly and exit non-zero."""

from __future__ import annotations

from pathlib import Path

PROBLEM_SEP = "\n  - "  # how an error lists its problems, one per line


class SSTEdgeError(Exception):
    """A problem with something the user handed us (a file, a name, an option).

    The message must name the file (when there is one) and say what is wrong.
    """

    def __init__(self, message: str, path: str | Path | None = None, problems: list[str] | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.problems = list(problems or [])
        text = f"{path}: {message}" if path is not None else message
        if self.problems:
            text += "".join(f"{PROBLEM_SEP}{p}" for p in self.problems)
        super().__init__(text)


class VideoError(SSTEdgeError):
    """A clip cannot be read: missing, empty, not a video, truncated, or it fails to decode.

    Training catches it and replaces the clip; everywhere else it reaches the user with the path.
    """


class DatasetError(SSTEdgeError):
    """A dataset layout or split file is wrong: a missing clip, a bad line, overlapping splits."""
