"""Who may do what on the OPC UA server, and the cell's certificate: asyncua's hooks, filled in.

`CellUsers` checks a user name and password against the config's users (passwords read at
start); `RoleRules` lets every role read, browse and subscribe, refuses writes and address-space
changes to all, and lets a method be called only by the role it names or a higher one
(viewer < operator < engineer). A refused call answers BadUserAccessDenied.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import USER_TYPES, SimpleRoleRuleset, User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import (
    CertificateValidator,
    CertificateValidatorMethod,
    CertificateValidatorOptions,
)
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.ua_binary import struct_from_binary
from cryptography.x509.oid import ExtendedKeyUsageOID

from controller.plant.opcua_config import ROLES, Role

log = logging.getLogger(__name__)

_WRITE = ua.NodeId(ua.Int32(ObjectIds.WriteRequest_Encoding_DefaultBinary))
_CALL = ua.NodeId(ua.Int32(ObjectIds.CallRequest_Encoding_DefaultBinary))
#: Every session service but Write (the cell's variables are read-only) and Call (checked per method).
_ALLOWED = frozenset(ua.NodeId(ua.Int32(t)) for t in USER_TYPES) - {_WRITE, _CALL}


class CellUsers(UserManager):
    """asyncua's user manager: the config's users with their passwords, and anonymous viewers
    where the config allows them. The user's name is the key `RoleRules` looks its role up by."""

    def __init__(self, passwords: Mapping[str, str], anonymous: bool) -> None:
        self._passwords = {name: pw.encode() for name, pw in passwords.items()}
        self._anonymous = anonymous

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        """The user for a session's identity token, or None to refuse it."""
        if username is None:
            # Anonymous: the server offers no X509 identity tokens (refused before this), and
            # `certificate` is the secure channel's peer certificate (b"" without security).
            return User(role=UserRole.Anonymous) if self._anonymous else None
        expected = self._passwords.get(username)
        given = (password or "").encode()
        # compare_digest on the stored password either way: the time taken says nothing
        if not hmac.compare_digest(expected or b"\0" * 32, given) or expected is None:
            log.warning("opcua: login refused for user %r", username)
            return None
        return User(role=UserRole.User, name=username)


class RoleRules(SimpleRoleRuleset):
    """asyncua's permission check, asked for every request of an activated session."""

    def __init__(self, roles: Mapping[str, Role], anonymous_role: Role | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # asyncua leaves it unannotated
        self._roles = dict(roles)
        self._anonymous_role = anonymous_role
        self._required: dict[ua.NodeId, Role] = {}

    def require(self, method: ua.NodeId, role: Role) -> None:
        """Let only `role` and the roles above it call `method`."""
        self._required[method] = role

    def role_of(self, user: User | None) -> Role | None:
        """The role of a session's user (None: none, refuse everything)."""
        if user is None:
            return None
        if user.role is UserRole.Anonymous or user.name is None:
            return self._anonymous_role
        return self._roles.get(user.name)

    def check_validity(self, user: User | None, action_type_id: ua.NodeId, body: Any) -> bool:
        role = self.role_of(user)
        if role is None:
            return False
        if action_type_id in _ALLOWED:
            return True
        if action_type_id != _CALL:
            return False
        # A copy: the request's own reader must still find the whole body.
        params = struct_from_binary(ua.CallParameters, body.copy())
        rank = ROLES.index(role)
        for call in params.MethodsToCall:
            need = self._required.get(call.MethodId)
            if need is not None and rank < ROLES.index(need):
                log.warning(
                    "opcua: %s (%s) may not call %s (needs %s)", user.name if user else "?", role,
                    call.MethodId.to_string(), need,
                )  # fmt: skip
                return False
        return True


async def ensure_certificate(cert: Path, key: Path, application_uri: str) -> None:
    """Make the server's self-signed certificate and key where missing (or the certificate no
    longer fits the URI and host name); the key readable by the owner only."""
    existed = cert.is_file() and key.is_file()
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    before = cert.stat().st_mtime_ns if cert.is_file() else None
    await setup_self_signed_certificate(
        key, cert, application_uri, socket.gethostname(), [ExtendedKeyUsageOID.SERVER_AUTH],
        {"organizationName": "inspection cell"},
    )  # fmt: skip
    os.chmod(key, 0o600)
    if not existed or cert.stat().st_mtime_ns != before:
        log.info("opcua: made the server certificate %s (key %s)", cert, key)
    else:
        log.info("opcua: server certificate %s", cert)


async def client_validator(folder: Path) -> CertificateValidatorMethod:
    """A check of client certificates: each must be in `folder` (or be signed by a CA there),
    within its validity, and name the client's ApplicationUri."""
    if not folder.is_dir():
        raise FileNotFoundError(f"the trusted client certificates folder {folder} does not exist")
    store = TrustStore([folder], [])
    await store.load()
    options = (
        CertificateValidatorOptions.BASIC_VALIDATION
        | CertificateValidatorOptions.TRUSTED
        | CertificateValidatorOptions.PEER_CLIENT
    )
    validator = CertificateValidator(options, store)  # type: ignore[no-untyped-call]  # unannotated
    log.info("opcua: client certificates must be trusted in %s", folder)
    return validator.validate  # type: ignore[no-any-return]


__all__ = ["CellUsers", "RoleRules", "client_validator", "ensure_certificate"]
