"""Publish events to an MQTT broker (`sst-edge watch --mqtt URL`) with QoS 1, through paho-mqtt 2.

The URL names the broker and the topic only: ``mqtt://host[:1883]/topic`` or ``mqtts://host[:8883]/topic``
(TLS). Everything secret or per-device comes from the environment, never from the command line (where
``ps`` and shell histories show it):

| variable | what |
|---|---|
| ``SST_EDGE_MQTT_CLIENT_ID`` | the client id (default ``sst-edge-HOST-PID``) |
| ``SST_EDGE_MQTT_USERNAME`` / ``SST_EDGE_MQTT_PASSWORD`` | credentials (a password needs a user name) |
| ``SST_EDGE_MQTT_CA`` | a CA bundle (PEM) to check the broker's certificate; the system's CAs when unset |
| ``SST_EDGE_MQTT_CERT`` / ``SST_EDGE_MQTT_KEY`` | a client certificate and key (PEM), if the broker asks |

The TLS variables need an ``mqtts://`` URL. paho-mqtt is an extra (``pip install 'sst-edge[mqtt]'``),
imported only when a sink is made, so the device half runs without it.

A camera must not stop because the broker did: `MqttSink.emit` never waits on the network (paho's
thread does the talking), the client reconnects by itself with exponential backoff (``min_backoff`` doubling
up to ``max_backoff``), and events emitted while the broker is away wait in paho's queue and go out when
it returns. That queue is bounded: at most ``max_pending`` events not yet acknowledged (PUBACK); past that,
the NEWEST events are dropped and counted as ``lost``. The newest, because the older ones are already
handed to paho, which cannot take a message back, and some of them may already be in flight to the broker.
The sink never prints: what the operator should know (the broker went away, came back, events lost) is
collected for `problems`, which the watch loop prints on stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ...errors import SSTEdgeError
from ...text import redact_url

ENV_CLIENT_ID = "SST_EDGE_MQTT_CLIENT_ID"
ENV_USERNAME = "SST_EDGE_MQTT_USERNAME"
ENV_PASSWORD = "SST_EDGE_MQTT_PASSWORD"
ENV_CA = "SST_EDGE_MQTT_CA"
ENV_CERT = "SST_EDGE_MQTT_CERT"
ENV_KEY = "SST_EDGE_MQTT_KEY"
QOS = 1
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
MAX_PROBLEMS = 100  # problems kept until read; a loop that never reads them must not grow without bound


@dataclass(frozen=True)
class MqttTarget:
    """Where events go: the broker and the topic, parsed from the URL."""

    scheme: str
    host: str
    port: int
    topic: str

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.topic}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://host[:port]/topic`` or ``mqtts://...`` -> an `MqttTarget`; other URLs refused, by name."""
    shown = redact_url(url)

    def bad(problem: str) -> SSTEdgeError:
        return SSTEdgeError(f"MQTT URL {shown!r}: {problem}")

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise bad("not an MQTT URL: expected mqtt://host[:port]/topic or mqtts://host[:port]/topic (TLS)")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise bad(f"the URL carries a user name or password: give them in the environment "
                  f"({ENV_USERNAME}, {ENV_PASSWORD}), never on the command line")
    if not parts.hostname:
        raise bad("no broker host")
    try:
        port = parts.port
    except ValueError:
        raise bad(f"the port {parts.netloc.rpartition(':')[2]!r} is not a number from 1 to 65535") from None
    if port == 0:
        raise bad("the port 0 is not a number from 1 to 65535")
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise bad("a topic URL has no query (?...) or fragment (#...): the topic is the path; a '?' in "
                  "a topic is written %3F")
    topic = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if not topic:
        raise bad("no topic: expected mqtt://host[:port]/topic")
    if "+" in topic or "#" in topic:
        raise bad(f"the topic {topic!r} has a wildcard ('+' or '#'): events are published to one topic")
    if "\0" in topic or len(topic.encode()) > 65535:
        raise bad("the topic has a NUL character or is longer than 65535 bytes")
    return MqttTarget(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], topic)


@dataclass(frozen=True)
class MqttSettings:
    """What comes from the environment: client id, credentials and TLS files."""

    client_id: str
    username: str | None
    password: str | None
    ca: Path | None
    cert: Path | None
    key: Path | None


def mqtt_settings(target: MqttTarget, environ: Mapping[str, str] | None = None) -> MqttSettings:
    """Read and check the SST_EDGE_MQTT_* variables for ``target`` (files exist, TLS ones only with mqtts)."""
    env = os.environ if environ is None else environ

    def value(name: str) -> str | None:
        return env.get(name) or None

    def file(name: str) -> Path | None:
        raw = value(name)
        if raw is None:
            return None
        path = Path(raw).expanduser()
        if not path.is_file():
            raise SSTEdgeError(f"{name} names no readable file", path)
        return path

    client_id = value(ENV_CLIENT_ID) or f"sst-edge-{socket.gethostname()}-{os.getpid()}"
    username, password = value(ENV_USERNAME), value(ENV_PASSWORD)
    if password is not None and username is None:
        raise SSTEdgeError(f"{ENV_PASSWORD} is set but {ENV_USERNAME} is not: a password needs a user name")
    ca, cert, key = file(ENV_CA), file(ENV_CERT), file(ENV_KEY)
    tls_set = [name for name, v in ((ENV_CA, ca), (ENV_CERT, cert), (ENV_KEY, key)) if v is not None]
    if tls_set and not target.tls:
        raise SSTEdgeError(f"{', '.join(tls_set)} set, but {target.url} is plain MQTT: use mqtts:// for TLS "
                           f"(or unset them)")
    if key is not None and cert is None:
        raise SSTEdgeError(f"{ENV_KEY} is set but {ENV_CERT} is not: a client key needs its certificate")
    return MqttSettings(client_id, username, password, ca, cert, key)


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """The TLS context of mqtts://: the broker checked against the CA (or the system's), a client cert."""
    try:
        context = ssl.create_default_context(cafile=str(settings.ca) if settings.ca else None)
    except (ssl.SSLError, OSError) as e:
        raise SSTEdgeError(f"{ENV_CA}: not a CA bundle in PEM ({e})", settings.ca) from None
    if settings.cert is not None:
        try:
            context.load_cert_chain(str(settings.cert), str(settings.key) if settings.key else None)
        except (ssl.SSLError, OSError) as e:
            raise SSTEdgeError(f"{ENV_CERT}/{ENV_KEY}: not a certificate and its key in PEM ({e})",
                               settings.cert) from None
    return context


def _paho() -> Any:
    """paho.mqtt.client, imported when a sink is made: it is the [mqtt] extra, not a device dependency."""
    try:
        client = importlib.import_module("paho.mqtt.client")
    except ImportError:
        raise SSTEdgeError("publishing events to MQTT needs paho-mqtt 2: "
                           "pip install 'sst-edge[mqtt]'") from None
    if not hasattr(client, "CallbackAPIVersion"):
        version = getattr(importlib.import_module("paho.mqtt"), "__version__", "?")
        raise SSTEdgeError(f"paho-mqtt {version} is installed; the MQTT sink needs paho-mqtt 2: "
                           f"pip install 'sst-edge[mqtt]'")
    return client


class MqttSink:
    """Events as JSON messages (keys sorted) on one topic, QoS 1, through a broker that may come and go.

    ``health()`` counts: ``emitted`` events given to `emit`; ``published`` those queued for the broker
    (the others were dropped, the queue being full); ``delivered`` those the broker acknowledged (PUBACK);
    ``pending`` those published, not yet delivered, not given up; ``lost`` the dropped ones plus those
    `close` gave up on; ``reconnects`` connections made again after one was lost. So emitted = published +
    dropped, published = delivered + pending + given up, lost = dropped + given up.
    """

    def __init__(self, url: str, max_pending: int = 1000, *, min_backoff: float = 0.5,
                 max_backoff: float = 30.0, keepalive: int = 30, connect_timeout: float = 3.0,
                 environ: Mapping[str, str] | None = None):
        if max_pending < 1:
            raise SSTEdgeError(f"max_pending must be at least 1, not {max_pending}")
        if not 0 < min_backoff <= max_backoff:
            raise SSTEdgeError(f"backoff must satisfy 0 < min ({min_backoff}) <= max ({max_backoff})")
        self.target = parse_mqtt_url(url)
        self.settings = mqtt_settings(self.target, environ)
        context = tls_context(self.settings) if self.target.tls else None
        mqtt = _paho()
        self._no_conn = int(mqtt.MQTT_ERR_NO_CONN)  # publish() while away: queued, sent when it is back
        self.max_pending = max_pending
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        # paho's reconnect() opens the socket before it queues CONNECT: a publish() from our thread in that
        # gap goes out first and the broker drops the connection. So events wait here, not in paho, until
        # the broker has accepted us (CONNACK); the choice and the publish are one step under _send_lock.
        self._send_lock = threading.Lock()
        self._held: deque[str] = deque()
        self._accepted = False
        self._problems: list[str] = []
        self._emitted = self._published = self._delivered = self._lost = self._reconnects = 0
        self._abandoned = 0  # published, then given up by close (also in lost)
        self._connected = self._ever_connected = self._closing = self._closed = False
        self._outage_since: float | None = time.monotonic()
        self._outage_reported = False
        self._lost_in_episode = 0
        self._last_error = ""

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.settings.client_id,
                             clean_session=True, protocol=mqtt.MQTTv311)
        client.max_queued_messages_set(0)  # unbounded in paho: the bound is ours (max_pending)
        client.reconnect_delay_set(min_backoff, max_backoff)
        client.connect_timeout = connect_timeout
        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self.settings.password)
            if not self.target.tls and self.target.host not in ("127.0.0.1", "localhost", "::1"):
                self._problem(f"{self.target.url}: the MQTT password goes unencrypted over mqtt://; "
                              f"use mqtts:// across a network")
        if context is not None:
            client.tls_set_context(context)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(self.target.host, self.target.port, keepalive=keepalive)
        client.loop_start()  # paho's thread connects, retries the first connection, reconnects

    # -- the caller's side -------------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Queue one event for the broker; returns at once, connected or not (lost when the queue is full)."""
        payload = json.dumps(event, sort_keys=True)
        with self._lock:
            if self._closed or self._closing:
                raise RuntimeError(f"{self.target.url}: emit after close")
            self._emitted += 1
            if self._pending() >= self.max_pending:
                self._lost += 1
                self._lost_in_episode += 1
                if self._lost_in_episode == 1:
                    self._error(f"{self.target.url}: {self.max_pending} events not yet delivered (the queue "
                                f"is full): new events are dropped and counted as lost")
                return
            if self._lost_in_episode:
                self._problem(f"{self.target.url}: the queue has room again; {self._lost_in_episode} events "
                              f"were lost while it was full ({self._lost} in all)")
                self._lost_in_episode = 0
            self._published += 1
        # Not under self._lock: paho calls on_publish holding its own lock, which publish() takes too.
        with self._send_lock:
            if self._accepted:
                self._publish(payload)
            else:
                self._held.append(payload)

    def _publish(self, payload: str) -> None:
        """Hand one event to paho (caller holds _send_lock, not _lock); a refusal counts it as lost."""
        info = self._client.publish(self.target.topic, payload, qos=QOS)
        if info.rc not in (0, self._no_conn):  # NO_CONN: paho keeps it and sends it after reconnecting
            with self._lock:
                self._published -= 1
                self._lost += 1
                self._error(f"{self.target.url}: paho refused an event (error {info.rc}); counted as lost")
                self._drained.notify_all()

    def health(self) -> dict[str, Any]:
        """The counters (see the class), whether connected now, and the last error ('' if none)."""
        with self._lock:
            return self._health()

    def problems(self) -> list[str]:
        """What happened since the last call (broker lost, back; events lost), oldest first; then cleared."""
        with self._lock:
            out, self._problems = self._problems, []
            return out

    def close(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait up to ``timeout`` s for the pending events' PUBACKs, disconnect; the final health.

        Events still pending then are counted as lost. Returns within about ``timeout`` + 2 s, broker or not.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            if self._closed:
                return self._health()
            self._closing = True
            while self._pending() > 0 and (left := deadline - time.monotonic()) > 0:
                self._drained.wait(left)
        with self._send_lock:
            self._accepted = False
            self._held.clear()  # still pending, so counted as given up below
        self._client.disconnect()
        stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
        stopper.start()
        stopper.join(2.0)  # paho's thread wakes at least once a second; a connect in progress may hold it
        with self._lock:
            abandoned = self._pending()
            if abandoned:
                self._lost += abandoned
                self._abandoned += abandoned
                self._error(f"{self.target.url}: closed with {abandoned} events not delivered "
                            f"(counted as lost)")
            self._connected = False
            self._closed = True
            return self._health()

    # -- paho's thread -------------------------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not reason.is_failure:
            with self._send_lock:  # accepted: what waited goes first, in order, then emit publishes directly
                while self._held:
                    self._publish(self._held.popleft())
                self._accepted = True
        with self._lock:
            if reason.is_failure:
                if not self._outage_reported:
                    self._outage_reported = True
                    self._error(f"{self.target.url}: the broker refused the connection ({reason}); "
                                f"check {ENV_USERNAME}/{ENV_PASSWORD} and {ENV_CLIENT_ID}; retrying")
                return
            self._connected = True
            if self._ever_connected:
                self._reconnects += 1
            if self._outage_reported:
                down = time.monotonic() - (self._outage_since or time.monotonic())
                self._problem(f"{self.target.url}: connected to the broker after {down:.1f} s; "
                              f"{self._pending()} events pending delivery")
            self._ever_connected = True
            self._outage_since = None
            self._outage_reported = False

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        with self._lock:
            if self._outage_reported or self._closing:
                return
            self._outage_reported = True
        why = self._diagnose()  # outside the lock: it opens a connection of its own
        with self._lock:
            self._error(f"{self.target.url}: cannot connect to the broker ({why}); retrying with backoff "
                        f"up to {self.max_backoff:g} s; up to {self.max_pending} events wait for it")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._send_lock:  # before paho's reconnect() opens the next socket
            self._accepted = False
        with self._lock:
            was = self._connected
            self._connected = False
            if self._closing:
                return
            why = "the connection closed" if str(reason) == "Unspecified error" else str(reason)
            if not was:  # closed before the broker accepted us (a TLS client certificate refused, say)
                if not self._outage_reported:
                    self._outage_reported = True
                    hint = f" ({why})" if why != "the connection closed" else ""
                    if self.target.tls and self.settings.cert is None:
                        hint += f"; does it want a client certificate ({ENV_CERT}, {ENV_KEY})?"
                    self._error(f"{self.target.url}: cannot connect to the broker: it closed the connection "
                                f"before accepting it{hint}; retrying with backoff up to "
                                f"{self.max_backoff:g} s")
                return
            self._outage_since = time.monotonic()
            self._outage_reported = True
            self._error(f"{self.target.url}: lost the broker ({why}); reconnecting with backoff up to "
                        f"{self.max_backoff:g} s; up to {self.max_pending} events wait for it")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            self._delivered += 1
            self._drained.notify_all()

    # -- helpers (callers hold self._lock unless said) ----------------------------------------------------

    def _health(self) -> dict[str, Any]:
        return {"url": self.target.url, "connected": self._connected, "emitted": self._emitted,
                "published": self._published, "delivered": self._delivered,
                "pending": self._pending(), "lost": self._lost,
                "reconnects": self._reconnects, "max_pending": self.max_pending,
                "last_error": self._last_error}

    def _pending(self) -> int:
        return self._published - self._delivered - self._abandoned

    def _problem(self, text: str) -> None:
        self._problems.append(text)
        del self._problems[:-MAX_PROBLEMS]

    def _error(self, text: str) -> None:
        self._last_error = text
        self._problem(text)

    def _diagnose(self) -> str:
        """Why connecting fails, in the system's words (paho's thread swallows the exception); unlocked."""
        try:
            context = tls_context(self.settings) if self.target.tls else None
        except SSTEdgeError as e:  # a TLS file changed since the start; raising would end paho's thread
            return str(e)
        try:
            with socket.create_connection((self.target.host, self.target.port), timeout=2.0) as sock:
                if context is None:
                    return "the port accepts TCP, but no MQTT connection was made"
                with context.wrap_socket(sock, server_hostname=self.target.host):
                    return "TLS works, but no MQTT connection was made"
        except (OSError, ValueError) as e:
            return str(e) or type(e).__name__
