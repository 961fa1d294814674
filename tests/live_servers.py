"""Real servers on 127.0.0.1 for the live tests: RTSP, MPEG-TS over TCP/UDP, an MQTT broker and a subscriber.

Each server is a child process on a free loopback port, started with a bounded wait until it serves, and
ended (killed and reaped) by `stop`, by its context manager, by the `live_servers` fixture's teardown
even when the test fails, and, should pytest itself die, by the kernel (PR_SET_PDEATHSIG). The servers
need Debian packages that `make system-packages` installs (`make test` does it).

    with RtspServer([clip_a, clip_b]) as rtsp:      # rtsp.url == "rtsp://127.0.0.1:PORT/live"
        ...; rtsp.kill(); rtsp.restart()
    with Mosquitto() as broker, MqttSubscriber(broker, "events") as sub:
        ...; sub.wait_for(3, timeout=5)

Or, in a test, the `live_servers` fixture (registered in conftest.py): ``live_servers.rtsp(clips)``,
``.mpegts(clips, transport="tcp")``, ``.mosquitto()``, ``.subscriber(broker, topic)`` start one and
stop it at the end of the test.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: python3-gi and GStreamer's introspection data are built for it
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0  # seconds for a server to serve; generous: the test machine has 2 shared cores


class ServerError(RuntimeError):
    """A server did not start (or its packages are missing); the message has the tail of its log."""


# -- ports, processes ----------------------------------------------------------------------------------------

def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 free now (for TCP by default; ``socket.SOCK_DGRAM`` for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_LIVE: set[subprocess.Popen] = set()  # every child still running, for the atexit net below
_LIVE_LOCK = threading.Lock()


def _kill_all() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        _reap(proc, signal.SIGKILL)


def _reap(proc: subprocess.Popen, sig: int, grace: float = 5.0) -> None:
    """Send ``sig`` (unless it has exited), wait for it, SIGKILL if it ignores a gentler signal."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with _LIVE_LOCK:
        _LIVE.discard(proc)


atexit.register(_kill_all)


class ChildServer:
    """One server process and its log: start (a bounded wait until it serves), kill, stop, restart."""

    name = "server"

    def __init__(self, workdir: Path | None = None, ready_timeout: float = READY_TIMEOUT):
        self._own_dir = workdir is None
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix=f"sst-{self.name}-"))
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / f"{self.name}.log"
        self.starts = 0

    # subclasses: the command line, and what "serving" means
    def command(self) -> list[str]:
        raise NotImplementedError

    def serving(self, deadline: float) -> bool:
        """True once the server serves; called repeatedly until ``deadline`` (time.monotonic)."""
        raise NotImplementedError

    def start(self) -> ChildServer:
        if self.running:
            return self
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it; closed below
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         preexec_fn=_die_with_parent, cwd=self.workdir)
        finally:
            log.close()
        with _LIVE_LOCK:
            _LIVE.add(self.proc)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                _reap(self.proc, signal.SIGKILL)
                self.proc = None
                raise ServerError(f"{self.name} exited with {code} before serving:\n{self.log_tail()}")
            if self.serving(deadline):
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(f"{self.name} not serving within {self.ready_timeout:g} s:\n"
                                  f"{self.log_tail()}")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def kill(self) -> None:
        """SIGKILL (the server dies mid-stream, as a crash or a pulled cable does), and reap it."""
        if self.proc is not None:
            _reap(self.proc, signal.SIGKILL)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; reaped."""
        if self.proc is not None:
            _reap(self.proc, signal.SIGTERM)
            self.proc = None

    def restart(self) -> ChildServer:
        """Stop it (if running) and start it again on the same port."""
        self.kill()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _printed_ready(self) -> bool:
        return "ready" in self.log_text().splitlines()


# -- clips ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipSequence:
    """An H.264 mp4 holding clips one after another, remuxed (the clips' own packets, not re-encoded)."""

    path: Path
    frames: int
    fps: Fraction
    size: tuple[int, int]  # (height, width)

    @property
    def duration(self) -> float:
        return float(self.frames / self.fps)


def clip_sequence(clips: Sequence[str | Path], out: str | Path, loops: int = 1) -> ClipSequence:
    """Concatenate H.264 mp4s (``loops`` times over) into ``out`` without re-encoding.

    Remuxing keeps every frame bit-exact, so a frame read from the stream equals the file's. The clips
    must share their encoding (the stream's SPS/PPS, size and time base), as `write_video` with one set
    of options gives; an mp4 track has one of each.
    """
    clips = [Path(c) for c in clips]
    if not clips or loops < 1:
        raise ValueError(f"need at least one clip and loops >= 1, got {len(clips)} clips, loops={loops}")
    out = Path(out)
    frames = 0
    first: dict[str, Any] = {}
    with av.open(str(out), "w", format="mp4") as oc:
        dst = None
        offset = 0
        for clip in clips * loops:
            with av.open(str(clip)) as ic:
                src = ic.streams.video[0]
                cc = src.codec_context
                key = {"codec": cc.name, "extradata": bytes(cc.extradata or b""),
                       "size": (cc.height, cc.width), "time_base": src.time_base}
                if dst is None:
                    if key["codec"] != "h264":
                        raise ValueError(f"{clip}: {key['codec']}, not H.264")
                    first = key
                    first["fps"] = src.average_rate or src.guessed_rate
                    dst = oc.add_stream_from_template(src)
                elif key != {k: first[k] for k in key}:
                    bad = [k for k in key if key[k] != first[k]]
                    raise ValueError(f"{clip}: encoded unlike {clips[0]} ({', '.join(bad)} differ): write "
                                     f"the clips of one sequence with the same options")
                end = 0
                for packet in ic.demux(src):
                    if packet.dts is None:
                        continue
                    end = max(end, packet.pts + packet.duration)
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = dst
                    oc.mux(packet)
                    frames += 1
                offset += end
    return ClipSequence(out, frames, Fraction(first["fps"]), first["size"])


def decode_file(path: str | Path) -> np.ndarray:
    """Every frame of a video file as RGB ``[N, H, W, 3]`` (the reference a stream is compared with)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def read_stream(url: str, timeout: float = 30.0, max_frames: int | None = None,
                options: dict[str, str] | None = None) -> tuple[np.ndarray, list[float]]:
    """Read a stream with PyAV until it ends: RGB frames and each one's arrival (s after opening began).

    Bounded: the stream must open and deliver within ``timeout`` s; a UDP stream has no end, so its
    reader stops at the first read timeout (``udp://...?timeout=`` in microseconds) as the end.
    """
    opts = {"rtsp_transport": "tcp"} if url.startswith("rtsp") else {}
    opts.update(options or {})
    t0 = time.monotonic()
    frames: list[np.ndarray] = []
    arrivals: list[float] = []
    with av.open(url, options=opts, timeout=(timeout, 5.0)) as c:
        try:
            for frame in c.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                arrivals.append(time.monotonic() - t0)
                if max_frames is not None and len(frames) >= max_frames:
                    break
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"{url}: still streaming after {timeout:g} s")
        except av.error.OSError:
            if not url.startswith("udp"):
                raise
    return (np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)), arrivals


def first_frame(url: str, timeout: float) -> bool:
    """Whether the stream at ``url`` gives a decoded frame within ``timeout`` s (the readiness probe)."""
    try:
        frames, _ = read_stream(url, timeout=max(timeout, 0.5), max_frames=1,
                                options={"analyzeduration": "0", "probesize": "32768"})
        return len(frames) == 1
    except (av.error.FFmpegError, OSError, TimeoutError):
        return False


# -- the video servers ---------------------------------------------------------------------------------------

class _ClipServer(ChildServer):
    def __init__(self, clips: Sequence[str | Path], port: int | None, loops: int, workdir: Path | None,
                 ready_timeout: float):
        super().__init__(workdir, ready_timeout)
        self.port = port or free_port()
        self.loops = loops
        self._built = 0
        self.sequence = self._build(clips)

    def _build(self, clips: Sequence[str | Path]) -> ClipSequence:
        self._built += 1
        return clip_sequence(clips, self.workdir / f"sequence-{self._built}.mp4", self.loops)

    @property
    def frames(self) -> int:
        """Frames served in one run (the clips' frames x loops)."""
        return self.sequence.frames

    @property
    def fps(self) -> float:
        return float(self.sequence.fps)

    def restart(self, clips: Sequence[str | Path] | None = None) -> Any:
        """Kill it and serve again on the same port, from the first frame (of new ``clips`` if given)."""
        self.kill()
        if clips is not None:
            self.sequence = self._build(clips)
        return self.start()


class RtspServer(_ClipServer):
    """GStreamer's RTSP server (under /usr/bin/python3) serving clips in sequence at their frame rate.

    Every client gets its own stream from the first frame and the end of the stream after the last
    (``loops`` passes over the clips). ``url`` is ``rtsp://127.0.0.1:PORT/MOUNT``; ready means the port
    accepts and a first frame is readable.
    """

    name = "rtsp"

    def __init__(self, clips: Sequence[str | Path], port: int | None = None, mount: str = "/live",
                 loops: int = 1, workdir: Path | None = None, ready_timeout: float = READY_TIMEOUT):
        if not os.path.exists(SYSTEM_PYTHON):
            raise ServerError(f"{SYSTEM_PYTHON} is missing: the RTSP server runs under Debian's python3 "
                              f"(run `make system-packages`)")
        self.mount = "/" + mount.lstrip("/")
        super().__init__(clips, port, loops, workdir, ready_timeout)

    @property
    def url(self) -> str:
        return f"rtsp://{HOST}:{self.port}{self.mount}"

    def command(self) -> list[str]:
        return [SYSTEM_PYTHON, str(TESTS / "rtsp_server.py"), "--port", str(self.port), "--mount", self.mount,
                "--file", str(self.sequence.path)]

    def serving(self, deadline: float) -> bool:
        return (self._printed_ready() and port_accepts(self.port)
                and first_frame(self.url, deadline - time.monotonic()))

    def start(self) -> RtspServer:
        try:
            super().start()
        except ServerError as e:
            if "No module named 'gi'" in str(e) or "Namespace GstRtspServer not available" in str(e):
                raise ServerError(f"{e}\nthe RTSP server needs python3-gi and gir1.2-gst-rtsp-server-1.0: "
                                  f"run `make system-packages`") from None
            raise
        return self


class MpegTsServer(_ClipServer):
    """MPEG-TS of clips in sequence from PyAV/FFmpeg's muxer, paced at the clips' rate (or ``fps``).

    ``transport="tcp"``: ``url`` is ``tcp://127.0.0.1:PORT``; each client that connects (several may)
    gets the stream from the first frame and its end after the last; ready means a first frame is readable.
    ``transport="udp"``: the server sends once to ``udp://127.0.0.1:PORT``, where the reader must listen
    BEFORE `start` (UDP has no connection: what is sent before is gone); ready means it began.
    """

    name = "mpegts"

    def __init__(self, clips: Sequence[str | Path], transport: str = "tcp", fps: float | None = None,
                 port: int | None = None, loops: int = 1, workdir: Path | None = None,
                 ready_timeout: float = READY_TIMEOUT):
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be 'tcp' or 'udp', not {transport!r}")
        self.transport = transport
        self.fps_override = fps
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        super().__init__(clips, port or free_port(kind), loops, workdir, ready_timeout)

    @property
    def url(self) -> str:
        return f"{self.transport}://{HOST}:{self.port}"

    @property
    def fps(self) -> float:
        return float(self.fps_override or self.sequence.fps)

    def command(self) -> list[str]:
        cmd = [sys.executable, str(TESTS / "mpegts_server.py"), "--transport", self.transport,
               "--port", str(self.port), "--file", str(self.sequence.path)]
        return cmd + (["--fps", str(self.fps_override)] if self.fps_override else [])

    def serving(self, deadline: float) -> bool:
        if not self._printed_ready():
            return False
        return self.transport == "udp" or first_frame(self.url, deadline - time.monotonic())

    def start(self) -> MpegTsServer:
        super().start()
        return self


# -- MQTT ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 signed by it, and a client certificate (PEM)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(folder: str | Path) -> TlsFiles:
    """Write a CA and certificates with openssl (EC P-256: quick), valid for a day."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)

    def ssl_(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl_("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=sst test CA")
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                     ("client", "extendedKeyUsage=clientAuth")):
        ssl_("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN=sst-edge test {who}")
        (d / f"{who}.ext").write_text(ext + "\n")
        ssl_("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{who}.crt", "-days", "1", "-extfile", f"{who}.ext")
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


class Mosquitto(ChildServer):
    """Debian's mosquitto on 127.0.0.1:PORT with its config, log and database in ``workdir``.

    ``persistence=True`` keeps sessions (a subscriber's subscription and its queued QoS 1 messages)
    across `kill` + `restart`: the database is saved every second and by `save`. ``users`` {name:
    password} turns anonymous access off (a password file made by mosquitto_passwd). ``tls`` makes the
    listener TLS-only (``url`` gives mqtts://); ``require_certificate`` asks clients for a certificate.
    """

    name = "mosquitto"

    def __init__(self, port: int | None = None, persistence: bool = False,
                 users: dict[str, str] | None = None, tls: TlsFiles | None = None,
                 require_certificate: bool = False, workdir: Path | None = None,
                 ready_timeout: float = READY_TIMEOUT):
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(self.binary):
            raise ServerError("mosquitto is not installed: run `make system-packages`")
        super().__init__(workdir, ready_timeout)
        self.port = port or free_port()
        self.persistence = persistence
        self.users = dict(users or {})
        self.tls = tls
        self.config = self.workdir / "mosquitto.conf"
        self.db = self.workdir / "mosquitto.db"
        self._write_config(require_certificate)

    def _write_config(self, require_certificate: bool) -> None:
        lines = [f"listener {self.port} {HOST}", f"log_dest file {self.workdir / 'broker.log'}",
                 "log_type error", "log_type warning", "log_type notice", "log_type information",
                 "connection_messages true", f"persistence {'true' if self.persistence else 'false'}"]
        if os.getuid() == 0:  # mosquitto run as root drops to user 'mosquitto', who cannot read workdir
            lines.append(f"user {pwd.getpwuid(0).pw_name}")
        if self.persistence:
            lines += [f"persistence_location {self.workdir}/", "persistence_file mosquitto.db",
                      "autosave_interval 1"]
        if self.users:
            passwd = self.workdir / "passwd"
            passwd.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True,
                               capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}",
                      f"keyfile {self.tls.server_key}",
                      f"require_certificate {'true' if require_certificate else 'false'}"]
        self.config.write_text("\n".join(lines) + "\n")

    def url(self, topic: str) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self.port}/{topic}"

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.config)]

    def serving(self, deadline: float) -> bool:
        return port_accepts(self.port)

    def broker_log(self) -> str:
        try:
            return (self.workdir / "broker.log").read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        both = (self.log_text() + self.broker_log()).splitlines()
        return "\n".join(both[-lines:]) or "(empty log)"

    def save(self, timeout: float = 5.0) -> None:
        """Write the persistence database now (SIGUSR1) and wait until it is on disk: a kill then keeps it."""
        if not self.persistence or self.proc is None:
            raise ServerError("save() needs a running broker with persistence=True")
        before = self.db.stat().st_mtime_ns if self.db.exists() else 0
        time.sleep(0.02)  # a coarse file-system clock must move between two saves
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not (self.db.exists() and self.db.stat().st_mtime_ns != before):
            if time.monotonic() > deadline:
                raise ServerError(f"mosquitto did not save {self.db} within {timeout:g} s:\n"
                                  f"{self.log_tail()}")
            time.sleep(0.02)
        time.sleep(0.05)  # the rename has happened; let the broker finish writing

    def start(self) -> Mosquitto:
        super().start()
        return self


@dataclass(frozen=True)
class Received:
    """One message as the subscriber got it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    at: float  # time.monotonic() of arrival


class MqttSubscriber:
    """A paho subscriber collecting a topic's messages with their QoS; reconnects by itself.

    ``persistent=True`` makes a persistent session (clean_session false, a fixed client id): with a
    `Mosquitto` of ``persistence=True`` the subscription survives a broker kill + restart, and the broker
    keeps QoS >= 1 messages published while the subscriber is away, which makes delivery after a restart
    independent of who reconnects first.
    """

    def __init__(self, broker: Mosquitto | int, topic: str, qos: int = 2, persistent: bool = False,
                 client_id: str | None = None, username: str | None = None, password: str | None = None,
                 tls: TlsFiles | None = None, ready_timeout: float = 10.0):
        import paho.mqtt.client as mqtt

        self.port = broker.port if isinstance(broker, Mosquitto) else int(broker)
        self.topic, self.qos, self.ready_timeout = topic, qos, ready_timeout
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.subscribed = 0  # connections on which the subscription held (made, or kept by the broker)
        self.client_id = client_id or f"sst-test-sub-{os.getpid()}-{id(self):x}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(0.1, 0.5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert),
                                keyfile=str(tls.client_key))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            return
        if flags.session_present:  # the broker remembers the subscription
            self._count_subscribed()
        else:
            client.subscribe(self.topic, qos=self.qos)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        if all(not r.is_failure for r in reasons):
            self._count_subscribed()

    def _count_subscribed(self) -> None:
        with self._cond:
            self.subscribed += 1
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                                          bool(msg.dup), time.monotonic()))
            self._cond.notify_all()

    def start(self) -> MqttSubscriber:
        self.client.connect_async(HOST, self.port, keepalive=10)
        self.client.loop_start()
        self.wait_subscribed(self.ready_timeout)
        return self

    def wait_subscribed(self, timeout: float, times: int = 1) -> None:
        """Block until subscribed on ``times`` connections (2: again, after one broker restart)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.subscribed < times:
                if (left := deadline - time.monotonic()) <= 0:
                    raise ServerError(f"subscriber on 127.0.0.1:{self.port} not subscribed to {self.topic!r} "
                                      f"(connection {times}) within {timeout:g} s")
                self._cond.wait(left)

    def wait_for(self, n: int, timeout: float) -> list[Received]:
        """The messages once there are at least ``n`` (or all there are after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return list(self.messages)

    def payloads(self) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> MqttSubscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the fixture ---------------------------------------------------------------------------------------------

class LiveServers:
    """Starts servers for one test and stops every one of them at its end (newest first)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self._stack = contextlib.ExitStack()
        self._n = 0

    def _dir(self, kind: str) -> Path:
        self._n += 1
        return self.workdir / f"{kind}-{self._n}"

    def rtsp(self, clips: Sequence[str | Path], **kwargs: Any) -> RtspServer:
        server = RtspServer(clips, workdir=self._dir("rtsp"), **kwargs)
        self._stack.callback(server.close)
        return server.start()

    def mpegts(self, clips: Sequence[str | Path], transport: str = "tcp", start: bool = True,
               **kwargs: Any) -> MpegTsServer:
        """``start=False`` for UDP: start the reader, then `MpegTsServer.start`."""
        server = MpegTsServer(clips, transport, workdir=self._dir("mpegts"), **kwargs)
        self._stack.callback(server.close)
        return server.start() if start else server

    def mosquitto(self, **kwargs: Any) -> Mosquitto:
        broker = Mosquitto(workdir=self._dir("mosquitto"), **kwargs)
        self._stack.callback(broker.close)
        return broker.start()

    def subscriber(self, broker: Mosquitto | int, topic: str, **kwargs: Any) -> MqttSubscriber:
        sub = MqttSubscriber(broker, topic, **kwargs)
        self._stack.callback(sub.stop)
        return sub.start()

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def live_servers(tmp_path: Path) -> Iterator[LiveServers]:
    """`LiveServers` for this test; everything it started is stopped at teardown, pass or fail."""
    servers = LiveServers(tmp_path / "live")
    try:
        yield servers
    finally:
        servers.close()


class Sshd(ChildServer):
    """Debian's OpenSSH server on 127.0.0.1:PORT for one test: its own host key, a throwaway client key
    (``key``) authorised for the current user (root in CI), config and log in ``workdir``.

    ``kill`` ends the listener and every session it forked (NNI keeps one SSH connection per machine
    open), so the "machine" is gone as a crashed host is. ``logins()`` counts the key logins in its log.
    """

    name = "sshd"

    def __init__(self, port: int | None = None, workdir: Path | None = None,
                 ready_timeout: float = READY_TIMEOUT):
        self.binary = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.path.exists(self.binary):
            raise ServerError("openssh-server is not installed: run `make system-packages`")
        super().__init__(workdir, ready_timeout)
        self.port = port or free_port()
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.key = self.workdir / "client_key"
        for key in (self.workdir / "host_key", self.key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sst-edge test",
                                "-f", str(key)], check=True, capture_output=True, timeout=30)
        (self.workdir / "authorized_keys").write_text((self.workdir / "client_key.pub").read_text())
        self.config = self.workdir / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", f"ListenAddress {HOST}", f"HostKey {self.workdir / 'host_key'}",
            f"PidFile {self.workdir / 'sshd.pid'}", f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "LogLevel VERBOSE",
            "MaxStartups 50", "MaxSessions 50"]) + "\n")
        if os.getuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # its privilege-separation directory

    def command(self) -> list[str]:
        return [self.binary, "-D", "-e", "-f", str(self.config)]

    def serving(self, deadline: float) -> bool:
        return port_accepts(self.port)

    def logins(self) -> int:
        return self.log_text().count("Accepted publickey")

    def sessions(self) -> list[int]:
        """Pids of the processes this server forked (its sessions and what they run), from /proc."""
        if self.proc is None:
            return []
        children: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(d.name))
        out, todo = [], list(children.get(self.proc.pid, []))
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    def _with_sessions(self, end: Any) -> None:
        sessions = self.sessions()
        end()
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        self._with_sessions(super().kill)

    def stop(self) -> None:
        self._with_sessions(super().stop)
