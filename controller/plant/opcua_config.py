"""The OPC UA server's settings: the `opcua:` section the cell config embeds (off by default).

Frozen and validated completely at load, like the rest of the cell config. Security None is
allowed only on a loopback endpoint; users' passwords never sit in the YAML: each comes from a
file or an environment variable, read when the server starts (`read_password`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from controller.config_base import Invalid, Loc, StrictModel
from controller.plant.secrets import PasswordSource, SecretError

Role = Literal["viewer", "operator", "engineer"]

#: Each role may do what the roles before it may: a viewer reads, browses and subscribes; an
#: operator also commands the cell; an engineer also selects recipes.
ROLES: tuple[Role, ...] = ("viewer", "operator", "engineer")

#: Endpoint hosts that reach only this machine: the one place security None is allowed.
LOCAL_HOSTS = ("localhost",)


class OpcUaUser(StrictModel, PasswordSource):
    """One user of the OPC UA server, with a role and a password kept outside the config."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="user name the client logs in with")
    role: Role = Field(description="viewer: read; operator: also Command; engineer: also SelectRecipe")

    @model_validator(mode="after")
    def _one_source(self) -> OpcUaUser:
        bad = self.password_problems()
        if self.password_file is None and self.password_env is None:
            bad.append((("password_file",), f"password_file or password_env for user {self.name}", "nothing"))
        if bad:
            raise Invalid(bad)
        return self


class OpcUaConfig(StrictModel):
    """The OPC UA server: the cell's state, results and recipe selection for the plant (README)."""

    enabled: bool = Field(False, description="serve the cell over OPC UA")
    endpoint: str = Field(
        "opc.tcp://127.0.0.1:4840/inspection-cell/",
        description="opc.tcp://host:port/path the server listens on and announces (host 0.0.0.0: all)",
    )
    security: Literal["none", "basic256sha256"] = Field(
        "basic256sha256",
        description="basic256sha256: signed and encrypted with the cell's certificate; "
        "none: plain, allowed only on a loopback endpoint (localhost, 127.0.0.1, ::1)",
    )
    certificate: str = Field(
        "var/opcua/server-cert.der",
        description="the cell's certificate (DER; relative: the data folder); made on first start if missing",
    )
    private_key: str = Field(
        "var/opcua/server-key.pem",
        description="its private key (PEM), made with it; readable by the owner only",
    )
    trusted_clients: str | None = Field(
        None,
        description="folder of the client certificates (DER or PEM, or their CAs) the encrypted endpoint "
        "accepts (relative: the data folder); none: any client certificate, passwords still guard sessions",
    )
    application_uri: str = Field(
        "urn:inspection-cell:opcua",
        min_length=1,
        description="the server's ApplicationUri (in its certificate)",
    )
    namespace_uri: str = Field(
        "urn:inspection-cell:machine-vision", min_length=1, description="namespace of the cell's nodes"
    )
    users: tuple[OpcUaUser, ...] = Field((), description="who may log in, and with which role")
    anonymous: bool = Field(False, description="also accept anonymous sessions, as viewers")
    simulated: bool = Field(
        False, description="results come from a simulated line (IsSimulated in result events)"
    )
    status_interval_s: float = Field(
        1.0,
        ge=0.1,
        le=60,
        description="the status and admin variables follow the cell's status this often (s)",
    )
    recent_results: int = Field(
        1000, ge=1, le=100_000, description="results GetResultById can find (the newest; older are forgotten)"
    )
    queue_size: int = Field(
        1024, ge=1, le=100_000, description="events waiting for the server's loop; more are dropped, counted"
    )
    process_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="the server's process runs this much nicer than the cell, so its CPU gives way",
    )
    max_clients: int = Field(16, ge=1, le=1000, description="TCP connections accepted at once")
    call_timeout_s: float = Field(
        5.0, gt=0, le=60, description="longest wait for the cell to answer a command or a status read (s)"
    )
    recipe_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="longest wait for a recipe change (validation, model load, warm-up)"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "opc.tcp" or not parts.hostname or port is None or not 1 <= port <= 65535:
            raise Invalid([((), "opc.tcp://host:port/path with a port 1-65535", repr(value))])
        return value

    @model_validator(mode="after")
    def _check(self) -> OpcUaConfig:
        bad: list[tuple[Loc, str, str]] = []
        if self.security == "none" and not is_local_host(self.host):
            bad.append((("security",), f"basic256sha256 on {self.host} (none is allowed only on a loopback "
                        "endpoint: localhost, 127.0.0.1, ::1)", "none"))  # fmt: skip
        if self.trusted_clients is not None and self.security == "none":
            bad.append((("trusted_clients",), "no trusted_clients with security none (it has no client "
                        "certificates; use basic256sha256)", repr(self.trusted_clients)))  # fmt: skip
        names = [u.name for u in self.users]
        for i, u in enumerate(self.users):
            if names.index(u.name) != i:
                bad.append((("users", i, "name"), "a name no other user has", repr(u.name)))
        if self.enabled and not self.users and not self.anonymous:
            bad.append((("users",), "users, or anonymous: true (viewers only): else no one could log in",
                        "none"))  # fmt: skip
        if bad:
            raise Invalid(bad)
        return self

    @property
    def host(self) -> str:
        """The endpoint's host."""
        return urlsplit(self.endpoint).hostname or ""

    @property
    def port(self) -> int:
        """The endpoint's port."""
        return urlsplit(self.endpoint).port or 0


def is_local_host(host: str) -> bool:
    """Whether `host` names this machine only: localhost or a loopback address."""
    if host.lower() in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_password(user: OpcUaUser, base: Path, env: Mapping[str, str] | None = None) -> str:
    """The user's password from its file (first line; relative to `base`) or its variable."""
    value = user.read_password(f"opcua user {user.name}", base, env)
    if value is None:  # the model requires one source; kept for the type
        raise SecretError(f"opcua user {user.name}: no password_file or password_env")
    return value


__all__ = ["ROLES", "OpcUaConfig", "OpcUaUser", "Role", "SecretError", "is_local_host", "read_password"]
