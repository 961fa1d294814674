"""An MPEG-TS stream of one H.264 mp4 on 127.0.0.1, paced at its frame rate (PyAV/FFmpeg's muxer).

Run by tests/live_servers.py as a child process. The packets are remuxed, not re-encoded, so a reader
decodes the file's own frames, each sent when the wall clock reaches its decode time.

- ``--transport tcp``: a TCP server; every client that connects (one after another, or several at once)
  gets the stream from the file's first frame and the end of the stream when the file ends. The server
  accepts again after each client, so a reader that reconnects is served anew. (FFmpeg's own
  ``tcp://...?listen=1`` serves one client and then stops, and refuses readers that come before it
  listens; here the socket listens before "ready" is printed.)
- ``--transport udp``: sends the stream once to udp://127.0.0.1:PORT, where the reader listens.

``--fps`` paces (and stamps) the frames at another rate than the file's. Prints "ready" on stdout.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from fractions import Fraction
from typing import Any

import av


class SocketFile:
    """The file-like object PyAV writes to: each write goes straight to the client's socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def write(self, data: bytes) -> int:
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


def stream_file(path: str, target: Any, fps: float | None, fmt_options: dict[str, str]) -> None:
    """Remux ``path``'s video packets as MPEG-TS to ``target`` (a URL or a file-like), paced in real time."""
    with av.open(path) as source:
        src = source.streams.video[0]
        rate = src.average_rate or src.guessed_rate
        scale = Fraction(rate) / Fraction(fps) if fps else Fraction(1)
        with av.open(target, "w", format="mpegts", options=fmt_options) as out:
            dst = out.add_stream_from_template(src)
            start = None
            for packet in source.demux(src):
                if packet.dts is None:  # the demuxer's end-of-stream packet
                    continue
                packet.pts = round(packet.pts * scale)
                packet.dts = round(packet.dts * scale)
                packet.duration = round(packet.duration * scale)
                due = float(packet.dts * src.time_base)
                if start is None:
                    start = time.monotonic() - due
                delay = start + due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                packet.stream = dst
                out.mux(packet)


def serve_client(conn: socket.socket, path: str, fps: float | None) -> None:
    try:
        with conn:
            stream_file(path, SocketFile(conn), fps, {"flush_packets": "1"})
    except (OSError, av.error.FFmpegError):
        pass  # the client went away: serve the next one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["tcp", "udp"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--fps", type=float, default=None)
    args = parser.parse_args()
    if args.transport == "udp":
        print("ready", flush=True)
        stream_file(args.file, f"udp://127.0.0.1:{args.port}?pkt_size=1316", args.fps, {"flush_packets": "1"})
        return 0
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", args.port))
    except OSError as e:
        print(f"cannot listen on 127.0.0.1:{args.port}: {e}", file=sys.stderr, flush=True)
        return 1
    listener.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_client, args=(conn, args.file, args.fps), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
