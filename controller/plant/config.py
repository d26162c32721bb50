"""The MQTT publisher's settings: the `mqtt:` section the cell config embeds (off by default).

Frozen and validated completely at load, like the rest of the cell config: unknown keys are
errors, ranges are checked where fields are declared. Secrets never sit in the YAML: the
password comes from a file or an environment variable, read when the publisher starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from controller.config_base import Invalid, StrictModel
from controller.plant.secrets import PasswordSource, SecretError

#: One level of the topic tree: no MQTT wildcards or separators, nothing a historian chokes on.
LEVEL = r"^[A-Za-z0-9_.-]{1,64}$"
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}(/[A-Za-z0-9_.-]{1,64}){0,7}$")


class MqttTls(StrictModel):
    """TLS to the broker. Without `ca_file` the system's trusted CAs check the broker."""

    ca_file: str | None = Field(
        None, description="CA certificate(s) (PEM) the broker's certificate must chain to"
    )
    cert_file: str | None = Field(None, description="client certificate (PEM), for brokers that ask for one")
    key_file: str | None = Field(None, description="the client certificate's private key (PEM)")

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise Invalid([((missing,), "cert_file and key_file together (give both or neither)", "nothing")])
        return self


class MqttSpool(StrictModel):
    """The disk queue events wait in until the broker acknowledged them."""

    path: str = Field(
        "var/mqtt-spool.sqlite",
        description="SQLite file (relative: the data folder); its id names the stream",
    )
    max_mb: float = Field(
        1024.0,
        gt=0,
        le=100_000,
        description="most message bytes queued (MB; the file is a little larger); the oldest go first",
    )
    max_age_h: float = Field(
        72.0, gt=0, le=24 * 365, description="queued messages older than this are dropped (hours)"
    )
    sync: Literal["full", "normal"] = Field(
        "full",
        description="full: every event is on disk (fsync) before the next one; normal: survives a crash of "
        "the process, a power cut may lose the last ones (the record store still has them)",
    )


class MqttConfig(StrictModel, PasswordSource):
    """The MQTT publisher: the cell's events, its state and status to a broker (contract: README)."""

    enabled: bool = Field(False, description="publish to an MQTT broker")
    host: str = Field("127.0.0.1", min_length=1, description="broker address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (TLS usually 8883)")
    client_id: str = Field(
        "", max_length=128, description="MQTT client id (empty: cell-<site>-<area>-<line>-<cell>)"
    )
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="MQTT keep-alive: a dead link is noticed within 1.5x"
    )
    qos: Literal[1, 2] = Field(
        1,
        description="QoS of event messages (0 is not offered: a result stays queued until acknowledged)",
    )
    tls: MqttTls | None = Field(None, description="TLS settings; none: plain TCP")
    username: str | None = Field(None, min_length=1, description="user name, if the broker asks for one")
    prefix: str = Field(
        "inspection", description="topic root before the version: one or more levels, '/' between"
    )
    site: str = Field("", description="ISA-95 site (a topic level); required when enabled")
    area: str = Field("", description="ISA-95 area (a topic level); required when enabled")
    line: str = Field("", description="ISA-95 line (a topic level); required when enabled")
    cell: str = Field("", description="ISA-95 work cell (a topic level); empty: the cell config's name")
    lot: str | None = Field(None, max_length=128, description="lot id written into every part message")
    status_interval_s: float = Field(
        10.0, ge=0.5, le=3600, description="a retained status message this often (s)"
    )
    reconnect_min_s: float = Field(1.0, ge=0.05, le=600, description="first wait before reconnecting (s)")
    reconnect_max_s: float = Field(30.0, ge=0.05, le=3600, description="longest wait between reconnects (s)")
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="TCP connect and CONNACK timeout (s)")
    max_inflight: int = Field(
        64, ge=1, le=65535, description="messages sent and not yet acknowledged, at most"
    )
    close_flush_s: float = Field(
        2.0, ge=0, le=60, description="at stop, time to send what is queued (the rest stays)"
    )
    spool: MqttSpool = MqttSpool()

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        bad = self.password_problems()
        if not _PREFIX.match(self.prefix):
            bad.append((("prefix",), "topic levels of letters, digits, '_', '.', '-' with '/' between "
                        "(at most 8)", repr(self.prefix)))  # fmt: skip
        for key in ("site", "area", "line", "cell"):
            value = getattr(self, key)
            if value and not re.match(LEVEL, value):
                bad.append(((key,), "one topic level: 1-64 letters, digits, '_', '.', '-'", repr(value)))
            elif not value and self.enabled and key != "cell":
                bad.append(((key,), "a topic level (required when mqtt is enabled)", "nothing"))
        if (self.password_file or self.password_env) and self.username is None:
            bad.append((("username",), "a username (a password needs one)", "nothing"))
        if self.reconnect_max_s < self.reconnect_min_s:
            bad.append((("reconnect_max_s",), f"at least reconnect_min_s ({self.reconnect_min_s:g})",
                        f"{self.reconnect_max_s:g}"))  # fmt: skip
        if bad:
            raise Invalid(bad)
        return self

    def levels(self, cell_name: str = "") -> tuple[str, str, str, str]:
        """Site, area, line and cell; `cell_name` (the cell config's) where `cell` is empty."""
        cell = self.cell or cell_name
        if not re.match(LEVEL, cell):
            raise ValueError(
                f"mqtt: cell {cell!r} is not a topic level: set mqtt.cell (letters, digits, _ . -)"
            )
        return self.site, self.area, self.line, cell

    def resolved_client_id(self, cell_name: str = "") -> str:
        """The client id: the configured one, or one made of the topic levels."""
        return self.client_id or "cell-" + "-".join(self.levels(cell_name))

    def resolve_password(self, environ: dict[str, str] | None = None, base: Path | None = None) -> str | None:
        """The password from its file or variable (None: none configured). Raises SecretError
        with a one-line reason when it cannot be read. `base`: folder relative files are in."""
        return self.read_password("mqtt", base, environ)


__all__ = ["LEVEL", "MqttConfig", "MqttSpool", "MqttTls", "SecretError"]
