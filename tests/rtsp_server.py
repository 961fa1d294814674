"""An RTSP server on 127.0.0.1 serving one H.264 mp4 at its own frame rate (GStreamer's RTSP server).

Run by tests/live_servers.py under Debian's /usr/bin/python3, since `gi` is built for it and not for the
venv's Python; so this file imports nothing from sst_edge and nothing outside the standard library and
gi. Each client that connects gets its own pipeline from the file's first frame (the factory is not
shared), paced by the sink's clock at the file's timestamps, and the stream's end when the file ends.

    /usr/bin/python3 tests/rtsp_server.py --port PORT --mount /live --file seq.mp4

It prints "ready" on stdout once the server listens, and exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", default="/live")
    parser.add_argument("--file", required=True, help="an H.264 mp4")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = args.file.replace("\\", "\\\\").replace('"', '\\"')
    pipeline = f'filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96'
    factory.set_launch(f"( {pipeline} )")
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.mount, factory)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
