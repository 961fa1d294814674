"""Text from documents and files made safe to print: documents are copied between devices and may be
hand-edited, so a label or a path must never reach a terminal raw (ANSI escapes can clear the screen, set
the window title or forge lines), nor flood it (a 10,000-character label)."""

from __future__ import annotations

LABEL_MAX = 200


def printable(text: object) -> str:
    """`text` with every non-printable character (control, escape, line or paragraph separator, bidi
    override...) written as a Python escape, so what is printed is what the document holds, on one line."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


def brief(text: object, limit: int = 80) -> str:
    """`printable(text)`, cut to `limit` characters with the full length said."""
    s = printable(text)
    return s if len(s) <= limit else f"{s[:limit]}... ({len(s)} characters)"


def is_label_text(text: object, limit: int = LABEL_MAX) -> bool:
    """Non-empty printable text of at most `limit` characters, no leading or trailing spaces."""
    return (isinstance(text, str) and 0 < len(text) <= limit and text == text.strip()
            and text.isprintable())


def duration(seconds: float) -> str:
    """A time span as a person reads it: '42 s', '12 min 5 s', '3 h 20 min', '6 d 4 h'."""
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    return f"{m} min {sec} s"


def redact_url(url: str) -> str:
    """`url` with the password of its user info hidden (rtsp://admin:secret@cam -> rtsp://admin:***@cam):
    what is printed or stored of a camera's or a broker's address. The authority ends at the first '/';
    its user info at its last '@' (a password may hold an '@')."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{head}{sep}{userinfo.partition(':')[0]}:***@{host}{slash}{path}"
