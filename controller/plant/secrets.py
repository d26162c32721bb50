"""Passwords the plant connections need, kept out of the cell config: each comes from a file
(its first line) or an environment variable, read when the connection starts. An inline
`password:` is refused, so a cell config can be shared or kept in version control."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from controller.config_base import Loc


class SecretError(ValueError):
    """A password the config names cannot be read (file missing or empty, variable unset)."""


class PasswordSource(BaseModel):
    """Where a password comes from: `password_file` or `password_env`, never the YAML."""

    password: str | None = Field(
        None, description="not allowed: the password is read from password_file or password_env"
    )
    password_file: str | None = Field(
        None, min_length=1, description="file holding the password (first line)"
    )
    password_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="environment variable holding the password"
    )

    def password_problems(self) -> list[tuple[Loc, str, str]]:
        """An inline password, or both sources at once, as (where, expected, found)."""
        bad: list[tuple[Loc, str, str]] = []
        if self.password is not None:
            bad.append((("password",), "password_file or password_env (a password is never kept in the "
                        "cell config)", repr(self.password)))  # fmt: skip
        if self.password_file is not None and self.password_env is not None:
            bad.append(
                (("password_env",), "password_file or password_env, not both", repr(self.password_env))
            )
        return bad

    def read_password(
        self, who: str, base: Path | None = None, env: Mapping[str, str] | None = None
    ) -> str | None:
        """The password from its variable or file (relative to `base`); None when neither is
        configured. Raises SecretError with a one-line reason naming `who` when it cannot be read."""
        environ: Mapping[str, str] = os.environ if env is None else env
        if self.password_env is not None:
            value = environ.get(self.password_env, "")
            if not value:
                raise SecretError(f"{who}: password_env {self.password_env} is not set (or empty)")
            return value
        if self.password_file is None:
            return None
        path = Path(self.password_file)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretError(f"{who}: password_file {path}: cannot read it: {exc.strerror or exc}") from None
        value = text.splitlines()[0].strip() if text.strip() else ""
        if not value:
            raise SecretError(f"{who}: password_file {path} is empty")
        return value
