"""MqttSink (sst_edge/runtime/live/mqtt.py) against a real mosquitto on 127.0.0.1.

The expected payloads are written out by hand (JSON with sorted keys); what the broker delivered is what
a real subscriber received, with the QoS it came with. A subscriber asking for QoS 2 gets a message at
the QoS it was published with, so QoS 1 in hand means the sink published with QoS 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from live_servers import Mosquitto, MqttSubscriber, free_port, make_tls_files

from sst_edge.errors import SSTEdgeError
from sst_edge.runtime.live.mqtt import (
    ENV_CA,
    ENV_CERT,
    ENV_CLIENT_ID,
    ENV_KEY,
    ENV_PASSWORD,
    ENV_USERNAME,
    MqttSink,
    parse_mqtt_url,
)

FAST = {"min_backoff": 0.1, "max_backoff": 0.5}  # reconnect quickly: tests wait for it


@pytest.fixture(autouse=True)
def no_mqtt_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_CLIENT_ID, ENV_USERNAME, ENV_PASSWORD, ENV_CA, ENV_CERT, ENV_KEY):
        monkeypatch.delenv(name, raising=False)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


def unique(sub: MqttSubscriber) -> list[bytes]:
    """Payloads in arrival order without QoS 1's duplicates (at least once: a resend after a restart)."""
    seen: list[bytes] = []
    for p in sub.payloads():
        if p not in seen:
            seen.append(p)
    return seen


def test_events_arrive_with_qos_1(live_servers) -> None:
    broker = live_servers.mosquitto()
    sub = live_servers.subscriber(broker, "site/cam1/events", qos=2)
    sink = MqttSink(broker.url("site/cam1/events"))
    sink.emit({"label": "wave", "start": 12.0, "end": 15.5, "source": "cam1"})
    sink.emit({"b": [1, 2], "a": None})
    got = sub.wait_for(2, timeout=10)
    assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == [
        ("site/cam1/events", b'{"end": 15.5, "label": "wave", "source": "cam1", "start": 12.0}', 1, False),
        ("site/cam1/events", b'{"a": null, "b": [1, 2]}', 1, False)]
    wait_until(lambda: sink.health()["delivered"] == 2, 5, "two PUBACKs")
    health = sink.close()
    assert {k: health[k] for k in ("connected", "emitted", "published", "delivered", "pending", "lost",
                                   "reconnects", "last_error")} == {
        "connected": False, "emitted": 2, "published": 2, "delivered": 2, "pending": 0, "lost": 0,
        "reconnects": 0, "last_error": ""}
    assert sink.problems() == []


def test_events_emitted_while_the_connection_opens_wait_for_the_broker_to_accept_it(live_servers) -> None:
    """paho opens the socket, then queues CONNECT: an event published in that gap went out before CONNECT,
    and mosquitto dropped the connection (a CI failure). paho's own on_socket_open hook holds the gap open
    until the events are emitted, so they land in it every time."""
    port = free_port()  # no broker yet: the sink's first attempts are refused, the hook is set in time
    sink = MqttSink(f"mqtt://127.0.0.1:{port}/ev", **FAST)
    in_gap, emitted = threading.Event(), threading.Event()
    sockets: list[object] = []

    def hold_the_gap(client, userdata, sock) -> None:
        sockets.append(sock)
        in_gap.set()
        emitted.wait(10)

    sink._client.on_socket_open = hold_the_gap  # paho's thread calls it between socket and CONNECT
    broker = live_servers.mosquitto(port=port)
    sub = live_servers.subscriber(broker, "ev")
    assert in_gap.wait(10), "the sink never opened a socket to the broker"
    sink.problems()  # the refusals before the broker came up
    for i in range(3):
        sink.emit({"i": i})
    emitted.set()
    wait_until(lambda: sink.health()["delivered"] == 3, 10, "three PUBACKs")
    assert sub.wait_for(3, timeout=10) and unique(sub) == [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}']
    assert "protocol error" not in broker.broker_log(), broker.log_tail()
    assert len(sockets) == 1, "the broker dropped the first connection: the sink had to open another"
    health = sink.close()
    assert (health["reconnects"], health["lost"], health["pending"]) == (0, 0, 0), health


def test_events_emitted_while_the_broker_is_down_arrive_after_it_returns(live_servers) -> None:
    """A persistent subscriber session saved in mosquitto's database makes the order of reconnections moot."""
    broker = live_servers.mosquitto(persistence=True)
    sub = live_servers.subscriber(broker, "ev", persistent=True)
    sink = MqttSink(broker.url("ev"), **FAST)
    for i in range(3):
        sink.emit({"i": i})
    wait_until(lambda: len(unique(sub)) == 3 and sink.health()["delivered"] == 3, 10, "3 events before")
    broker.save()
    broker.kill()
    wait_until(lambda: not sink.health()["connected"], 5, "the sink sees the broker go")
    t0 = time.monotonic()
    for i in range(3, 8):
        sink.emit({"i": i})
    assert time.monotonic() - t0 < 0.5  # emit does not wait for the broker
    health = sink.health()
    assert (health["connected"], health["pending"], health["lost"]) == (False, 5, 0)
    time.sleep(1.0)  # the sink retries against a closed port meanwhile
    broker.restart()
    wait_until(lambda: len(unique(sub)) == 8, 15, "the 5 queued events after the restart")
    assert unique(sub) == [json.dumps({"i": i}).encode() for i in range(8)]
    assert all(m.qos == 1 for m in sub.messages)
    wait_until(lambda: sink.health()["delivered"] == 8, 5, "8 PUBACKs")
    health = sink.close()
    assert (health["delivered"], health["pending"], health["lost"], health["reconnects"]) == (8, 0, 0, 1)
    problems = sink.problems()
    assert any("lost the broker" in p for p in problems), problems
    assert any("connected to the broker after" in p and "5 events pending" in p for p in problems), problems


def test_past_max_pending_the_newest_events_are_lost_and_counted(live_servers) -> None:
    broker = live_servers.mosquitto(persistence=True)
    sub = live_servers.subscriber(broker, "ev", persistent=True)
    sink = MqttSink(broker.url("ev"), max_pending=3, **FAST)
    wait_until(lambda: sink.health()["connected"], 5, "connected")
    broker.save()
    broker.kill()
    wait_until(lambda: not sink.health()["connected"], 5, "the sink sees the broker go")
    for i in range(5):
        sink.emit({"i": i})
    health = sink.health()
    assert (health["emitted"], health["published"], health["pending"], health["lost"]) == (5, 3, 3, 2)
    assert "queue is full" in health["last_error"]
    broker.restart()
    wait_until(lambda: sink.health()["delivered"] == 3, 15, "the 3 kept events delivered")
    sink.emit({"i": 5})  # room again
    wait_until(lambda: len(unique(sub)) == 4, 10, "4 events")
    assert unique(sub) == [json.dumps({"i": i}).encode() for i in (0, 1, 2, 5)]
    problems = sink.problems()
    assert any("new events are dropped and counted as lost" in p for p in problems), problems
    assert any("2 events were lost while it was full" in p for p in problems), problems
    assert sink.close()["lost"] == 2


def test_a_broker_that_is_not_there(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    sink = MqttSink(f"mqtt://127.0.0.1:{port}/ev", max_pending=50, **FAST)
    for i in range(80):
        sink.emit({"i": i})
    assert time.monotonic() - t0 < 1.0
    problems: list[str] = []

    def reported() -> bool:
        problems.extend(sink.problems())
        return any(p.startswith(f"mqtt://127.0.0.1:{port}/ev: cannot connect to the broker")
                   for p in problems)

    wait_until(reported, 5, "the failure reported")
    assert any("refused" in p.lower() for p in problems), problems
    assert any("queue is full" in p for p in problems), problems
    health = sink.health()
    assert (health["connected"], health["pending"], health["lost"], health["delivered"]) == (False, 50, 30, 0)
    t0 = time.monotonic()
    final = sink.close(timeout=0.5)
    assert time.monotonic() - t0 < 3.5
    assert (final["emitted"], final["published"], final["pending"], final["lost"], final["delivered"]) == (
        80, 50, 0, 80, 0)
    assert any("closed with 50 events not delivered" in p for p in sink.problems())


def test_credentials_come_from_the_environment(live_servers, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = live_servers.mosquitto(users={"cam": "s3cret pass", "reader": "r"})
    sub = live_servers.subscriber(broker, "ev", username="reader", password="r")
    monkeypatch.setenv(ENV_USERNAME, "cam")
    monkeypatch.setenv(ENV_PASSWORD, "s3cret pass")
    monkeypatch.setenv(ENV_CLIENT_ID, "cam-17")
    sink = MqttSink(broker.url("ev"))
    sink.emit({"ok": True})
    assert [m.payload for m in sub.wait_for(1, timeout=10)] == [b'{"ok": true}']
    sink.close()
    assert "as cam-17 " in broker.broker_log() and "u'cam'" in broker.broker_log()

    monkeypatch.setenv(ENV_PASSWORD, "wrong")
    sink = MqttSink(broker.url("ev"), **FAST)
    sink.emit({"ok": False})
    wait_until(lambda: "refused the connection" in sink.health()["last_error"], 5, "the refusal")
    assert not sink.health()["connected"]
    assert sink.close(timeout=0.2)["lost"] == 1

    with pytest.raises(SSTEdgeError, match=f"give them in the environment .*{ENV_USERNAME}") as e:
        MqttSink(f"mqtt://cam:s3cret@127.0.0.1:{broker.port}/ev")
    assert "s3cret" not in str(e.value)
    with pytest.raises(SSTEdgeError, match="password needs a user name"):
        monkeypatch.delenv(ENV_USERNAME)
        MqttSink(broker.url("ev"))


def test_tls_with_a_client_certificate(live_servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = make_tls_files(tmp_path / "tls")
    broker = live_servers.mosquitto(tls=tls, require_certificate=True)
    url = broker.url("ev")
    assert url.startswith("mqtts://127.0.0.1:")
    sub = live_servers.subscriber(broker, "ev", tls=tls)
    monkeypatch.setenv(ENV_CA, str(tls.ca))
    monkeypatch.setenv(ENV_CERT, str(tls.client_cert))
    monkeypatch.setenv(ENV_KEY, str(tls.client_key))
    sink = MqttSink(url)
    sink.emit({"tls": 1})
    assert [m.payload for m in sub.wait_for(1, timeout=10)] == [b'{"tls": 1}']
    assert sink.close()["delivered"] == 1

    monkeypatch.delenv(ENV_CERT)  # the broker asks for a certificate
    monkeypatch.delenv(ENV_KEY)
    sink = MqttSink(url, **FAST)
    wait_until(lambda: "cannot connect" in sink.health()["last_error"], 5, "the handshake failure")
    assert not sink.health()["connected"]
    sink.close(timeout=0)

    other = make_tls_files(tmp_path / "other")  # a CA that did not sign the broker's certificate
    monkeypatch.setenv(ENV_CA, str(other.ca))
    sink = MqttSink(url, **FAST)
    wait_until(lambda: "certificate verify failed" in sink.health()["last_error"], 5, "the unknown CA")
    sink.close(timeout=0)

    monkeypatch.setenv(ENV_CA, str(tmp_path / "nope.pem"))
    with pytest.raises(SSTEdgeError, match=f"nope.pem: {ENV_CA} names no readable file"):
        MqttSink(url)
    monkeypatch.setenv(ENV_CA, str(tls.ca))
    with pytest.raises(SSTEdgeError, match="use mqtts:// for TLS"):
        MqttSink(f"mqtt://127.0.0.1:{broker.port}/ev")


@pytest.mark.parametrize(("url", "message"), [
    ("http://127.0.0.1/ev", "not an MQTT URL"),
    ("127.0.0.1:1883/ev", "not an MQTT URL"),
    ("mqtt:///ev", "no broker host"),
    ("mqtt://127.0.0.1:99999/ev", "'99999' is not a number from 1 to 65535"),
    ("mqtt://127.0.0.1:abc/ev", "'abc' is not a number"),
    ("mqtt://127.0.0.1:1883", "no topic"),
    ("mqtt://127.0.0.1:1883/", "no topic"),
    ("mqtt://127.0.0.1/site/+/events", "wildcard"),
    ("mqtt://127.0.0.1/ev?qos=0", "no query"),
    ("mqtt://user@127.0.0.1/ev", "user name or password"),
])
def test_bad_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(SSTEdgeError, match="MQTT URL .*" + message.replace("+", r"\+")):
        parse_mqtt_url(url)


def test_urls() -> None:
    assert parse_mqtt_url("mqtt://broker.local/a/b").url == "mqtt://broker.local:1883/a/b"
    assert parse_mqtt_url("MQTTS://10.0.0.2/a%20b").url == "mqtts://10.0.0.2:8883/a b"
    assert parse_mqtt_url("mqtt://[::1]:1884/t").url == "mqtt://[::1]:1884/t"
    assert parse_mqtt_url("mqtts://h:1/t").tls


def test_without_paho_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # import fails as if not installed
    with pytest.raises(SSTEdgeError, match=r"pip install 'sst-edge\[mqtt\]'"):
        MqttSink("mqtt://127.0.0.1/ev")


def test_importing_the_module_does_not_import_paho() -> None:
    code = "import sys, sst_edge.runtime.live.mqtt; print('paho' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_mosquitto_helper_rejects_without_credentials(live_servers) -> None:
    """The password file really is in force (else the credentials test above proves nothing)."""
    broker: Mosquitto = live_servers.mosquitto(users={"cam": "x"})
    sink = MqttSink(broker.url("ev"), **FAST)
    wait_until(lambda: "refused the connection" in sink.health()["last_error"], 5, "anonymous refused")
    sink.close(timeout=0)
