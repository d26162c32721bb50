"""The MQTT publisher: a subscriber of the cell's event outlet that sends to a broker.

Lifecycle: `MqttPublisher(config, spool_path, ...)`, `start()`, then
`outlet.subscribe("mqtt", p.on_event, on_close=p.close)`; `figures()` at any time.

The cell's status is pushed, never pulled: the one who owns the cell calls `set_status` with a
plain copy of its snapshot from the cell's loop (the daemon, every `status_interval_s`), and
the connection thread only sends the latest copy, so it never reads the service's state.

`on_event` runs on the outlet's delivery thread and only appends the event's message to the
disk spool (never the network), so a broker outage costs the control loop nothing and loses
no result: the spool keeps each message until the broker acknowledged it (QoS 1 or 2). One
thread of its own, `mqtt:<client id>`, owns the connection: it connects (and reconnects with
back-off), sends what the spool holds in order, at most `max_inflight` unacknowledged, removes
each once acknowledged, and publishes the retained `online` and periodic `status` messages.
After a reconnect it sends again from the oldest unacknowledged message, so a message the
broker took before the link broke may arrive twice: delivery is at least once, and each event
message's `stream` and `seq` let a consumer drop the repeat.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from controller.events import Event
from controller.plant.config import MqttConfig
from controller.plant.messages import (
    Message,
    Topics,
    event_message,
    event_route,
    online_message,
    status_message,
)
from controller.plant.spool import Spool

log = logging.getLogger(__name__)

#: The connection thread's longest wait for the network; a new spooled message waits at most this.
_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class MqttFigures:
    """The publisher's counts for the status and the console.

    `sent`: event messages the broker acknowledged (repeats after a reconnect counted again);
    `queued`: in the spool, not yet acknowledged; `inflight`: of those, sent on this connection
    and awaiting the broker's acknowledgement; `dropped`: lost to the spool's size or age
    limit; `failed`: events that could not be spooled (a disk or encoding error);
    `connects` / `connect_failures`: connections made and attempts that failed;
    `last_error`: the latest connection or spool problem ("" if none yet)."""

    enabled: bool
    connected: bool
    sent: int
    queued: int
    inflight: int
    dropped: int
    failed: int
    connects: int
    connect_failures: int
    last_error: str
    stream: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def off() -> MqttFigures:
        """The figures of a cell with MQTT off (for a status that always has the section)."""
        return MqttFigures(False, False, 0, 0, 0, 0, 0, 0, 0, "", "")


class MqttPublisher:
    """Publishes the cell's events to one MQTT broker (see the module docstring).

    `spool_path`: the disk queue's file; `cell_name`: the cell level when the config leaves it
    empty; `files_dir`: the folder relative TLS and password files are in. The periodic status
    message carries what `set_status` was last given."""

    def __init__(
        self,
        config: MqttConfig,
        spool_path: Path,
        cell_name: str = "",
        files_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self._clock = config, clock
        self._status: Mapping[str, Any] | None = None  # the latest pushed, replaced whole
        self._files_dir = files_dir
        self.topics = Topics(config.prefix, *config.levels(cell_name))
        self.client_id = config.resolved_client_id(cell_name)
        # Read now, so a missing secret is a clear error at start, not a failing reconnect.
        self._password = config.resolve_password(base=files_dir)
        self._spool_path = spool_path
        self._spool: Spool | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._connected = False
        self._sent = self._failed = self._connects = self._connect_failures = 0
        self._last_error = ""
        self._error_logged = False
        # Per connection, touched only by the connection thread (paho calls back from loop()).
        self._inflight: dict[int, int] = {}
        self._acked: list[int] = []
        self._connack: ReasonCode | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Open the spool and start the connection thread (connects in the background)."""
        if self._thread is not None:
            raise RuntimeError("mqtt publisher already started")
        s = self.config.spool
        self._spool = Spool(self._spool_path, int(s.max_mb * 1e6), s.max_age_h * 3600.0, s.sync, self._clock)
        self._thread = threading.Thread(target=self._run, name=f"mqtt:{self.client_id}", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (up to `close_flush_s`, the rest stays in the spool for the next
        start), mark the cell offline, disconnect and close the spool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            limit = self.config.close_flush_s + self.config.connect_timeout_s + 1.0
            self._thread.join(limit if timeout is None else timeout)
            if self._thread.is_alive():
                log.warning("mqtt: publisher thread still busy at close; the spool keeps what was queued")
                return  # the thread still uses the spool; a daemon, it ends with the process
        if self._spool is not None:
            self._spool.close()

    # ------------------------------------------------------------------ events
    def on_event(self, event: Event) -> None:
        """Spool `event`'s message (the outlet's delivery thread calls this). Never raises."""
        spool = self._spool
        if spool is None or self._closed:
            self._failed += 1
            return
        try:
            kind, retain = event_route(event)
            topic = self.topics.of(kind)
            now = self._clock()
            spool.append(
                topic,
                retain,
                lambda seq: (
                    event_message(self.topics, event, spool.stream, seq, self.config.lot, now).payload
                ),
            )
        except Exception as exc:  # a full disk, a bug: counted and logged, the outlet keeps going
            self._failed += 1
            self._error(f"spool: {type(exc).__name__}: {exc}")
            return

    def set_status(self, cell: Mapping[str, Any]) -> None:
        """The cell's status for the next status messages: a plain mapping (the snapshot as
        JSON-able values), copied here, so the caller's later changes are not sent. Call it
        where the cell's state may be read (its loop); the connection thread reads only this."""
        self._status = json.loads(json.dumps(cell, default=str))

    def status_message(self) -> Message:
        """The periodic status message now: the latest status pushed and the figures."""
        return status_message(self.topics, self._clock(), self._status, self.figures().to_dict())

    def figures(self) -> MqttFigures:
        """The current counts (any thread)."""
        spool = self._spool
        return MqttFigures(
            enabled=True,
            connected=self._connected,
            sent=self._sent,
            queued=spool.depth if spool is not None else 0,
            inflight=len(self._inflight),
            dropped=spool.dropped if spool is not None else 0,
            failed=self._failed,
            connects=self._connects,
            connect_failures=self._connect_failures,
            last_error=self._last_error,
            stream=spool.stream if spool is not None else "",
        )

    # -------------------------------------------------------------- connection
    def _run(self) -> None:
        delay = self.config.reconnect_min_s
        while not self._stop.is_set():
            client = self._connect()
            if client is None:
                self._expire()  # while the broker is away, too
                self._connect_failures += 1
                self._stop.wait(delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
                continue
            delay = self.config.reconnect_min_s
            self._connects += 1
            self._connected = True
            if self._error_logged:
                log.info("mqtt: connected to %s:%d again", self.config.host, self.config.port)
            self._error_logged = False
            try:
                self._serve(client)
            except Exception as exc:  # a bug must not end the publisher: reconnect
                self._error(f"{type(exc).__name__}: {exc}")
            finally:
                self._connected = False
                self._inflight = {}  # sent again from the spool on the next connection
                self._drop_socket(client)

    def _client(self) -> paho.Client:
        c = self.config
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            reconnect_on_failure=False,
        )
        client.connect_timeout = c.connect_timeout_s
        client.max_inflight_messages_set(c.max_inflight)
        stream = self._spool.stream if self._spool is not None else ""
        will = online_message(self.topics, False, "connection lost", None, stream)
        client.will_set(will.topic, will.payload, qos=1, retain=True)
        if c.username is not None:
            client.username_pw_set(c.username, self._password)
        if c.tls is not None:
            client.tls_set(
                ca_certs=self._file(c.tls.ca_file),
                certfile=self._file(c.tls.cert_file),
                keyfile=self._file(c.tls.key_file),
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        return client

    def _file(self, name: str | None) -> str | None:
        if name is None:
            return None
        path = Path(name)
        return str(self._files_dir / path if self._files_dir is not None and not path.is_absolute() else path)

    def _connect(self) -> paho.Client | None:
        """A connected client (CONNACK accepted), or None with the reason recorded."""
        c = self.config
        self._inflight, self._acked, self._connack = {}, [], None
        client: paho.Client | None = None
        try:
            client = self._client()
            client.connect(c.host, c.port, keepalive=c.keepalive_s)
            deadline = time.monotonic() + c.connect_timeout_s
            while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
                if client.loop(_POLL_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        except Exception as exc:  # refused, unreachable, TLS: all the same to us, try again later
            self._error(f"connect {c.host}:{c.port}: {type(exc).__name__}: {exc}")
            if client is not None:
                self._drop_socket(client)
            return None
        if self._connack is None or self._connack.is_failure:
            why = str(self._connack) if self._connack is not None else "no answer (CONNACK)"
            self._error(f"connect {c.host}:{c.port}: {why}")
            self._drop_socket(client)
            return None
        return client

    def _serve(self, client: paho.Client) -> None:
        """Send the spool's messages while connected; at stop, flush and go offline cleanly."""
        spool = self._spool
        assert spool is not None
        c = self.config
        self._publish(client, online_message(self.topics, True, "connected", self._clock(), spool.stream))
        handed = 0  # the newest seq handed to this connection: after a reconnect, from the oldest
        next_status = next_expire = time.monotonic()  # the first loop drops what is too old, then sends
        flush_until: float | None = None
        while True:
            rc = client.loop(_POLL_S)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._error(f"connection to {c.host}:{c.port} lost ({rc.name})")
                return
            if self._acked:
                self._sent += len(self._acked)
                spool.remove(self._acked)
                self._acked = []
            now = time.monotonic()
            if now >= next_expire:
                self._expire()
                next_expire = now + 1.0
            room = c.max_inflight - len(self._inflight)
            if room > 0 and spool.last_seq > handed:
                for m in spool.peek(handed, room):
                    info = client.publish(m.topic, m.payload, qos=c.qos, retain=m.retain)
                    self._inflight[info.mid] = m.seq
                    handed = m.seq
            if now >= next_status:
                self._publish_status(client)
                next_status = now + c.status_interval_s
            if self._stop.is_set():
                flush_until = now + c.close_flush_s if flush_until is None else flush_until
                if (not self._inflight and spool.last_seq <= handed) or now >= flush_until:
                    self._go_offline(client)
                    return

    def _expire(self) -> None:
        if self._spool is not None:
            try:
                self._spool.expire()
            except Exception as exc:  # a disk error: the next append or reconnect reports it again
                self._error(f"spool: {type(exc).__name__}: {exc}")

    def _go_offline(self, client: paho.Client) -> None:
        """A clean stop: the retained `online` set false (the broker sends no will then)."""
        stream = self._spool.stream if self._spool is not None else ""
        info = self._publish(client, online_message(self.topics, False, "stopped", self._clock(), stream))
        deadline = time.monotonic() + 0.5
        while not info.is_published() and time.monotonic() < deadline:
            if client.loop(_POLL_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
        client.disconnect()

    def _publish(self, client: paho.Client, m: Message) -> paho.MQTTMessageInfo:
        return client.publish(m.topic, m.payload, qos=1, retain=m.retain)

    def _publish_status(self, client: paho.Client) -> None:
        self._publish(client, self.status_message())

    @staticmethod
    def _drop_socket(client: paho.Client) -> None:
        try:
            sock = client.socket()
            if sock is not None:
                sock.close()
        except OSError:
            pass

    # ---------------------------------------------------------- paho callbacks
    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._connack = reason

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is not None:
            self._acked.append(seq)

    def _error(self, text: str) -> None:
        """Record a problem; logged once until the next successful connect."""
        self._last_error = text
        if not self._error_logged:
            self._error_logged = True
            log.warning("mqtt: %s (queuing on disk; logged again only after it recovers)", text)


__all__ = ["MqttFigures", "MqttPublisher"]
