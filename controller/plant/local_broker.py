"""A local MQTT broker for the demo (`cellctl demo --mqtt`): Mosquitto where it is installed,
else amqtt (the `dev` extra's pure-Python broker), on 127.0.0.1, anonymous, no persistence.

Not for a plant: a plant has its own broker, and `cellctl run` only connects to it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from controller.plant.links import PlantStartError


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether `port` on 127.0.0.1 can be bound now (as a server binds it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a broker binds it
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _binaries() -> dict[str, str]:
    found = {}
    debian = "/usr/sbin/mosquitto"  # not on every PATH
    mosquitto = shutil.which("mosquitto") or (debian if os.access(debian, os.X_OK) else None)
    if mosquitto:
        found["mosquitto"] = mosquitto
    amqtt = Path(sys.executable).parent / "amqtt"
    if amqtt.exists() or shutil.which("amqtt"):
        found["amqtt"] = str(amqtt) if amqtt.exists() else str(shutil.which("amqtt"))
    return found


def broker_problem() -> str | None:
    """Why no local broker can run here, naming what to install; None when one can."""
    if _binaries():
        return None
    return (
        "no MQTT broker for the demo: install Mosquitto (apt-get install mosquitto) or amqtt "
        "(pip install -e '.[dev]')"
    )


class LocalBroker:
    """One broker process on 127.0.0.1:`port` (0: a free one); its config and log in `folder`."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        found = _binaries()
        if not found:
            raise PlantStartError(str(broker_problem()))
        self.kind = "mosquitto" if "mosquitto" in found else "amqtt"
        self._binary, self.folder = found[self.kind], folder
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "mosquitto":
            lines = [f"listener {self.port} 127.0.0.1", "persistence false", "allow_anonymous true"]
            lines += ["user root"] if os.geteuid() == 0 else []  # as root it would switch users
            conf = self.folder / "mosquitto.conf"
            conf.write_text("\n".join(lines) + "\n")
            return [self._binary, "-c", str(conf)]
        conf = self.folder / "amqtt.yaml"
        conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        return [self._binary, "-c", str(conf)]

    def start(self, timeout_s: float = 15.0) -> None:
        """Start it; returns once its port accepts connections (`PlantStartError` if it does not)."""
        if self._proc is not None:
            raise RuntimeError("the local broker is running already")
        # Taken (another demo's broker): the broker would fail, and the check below would find
        # the other one answering. Refused in one line, as OPC UA refuses a taken port.
        if not port_free(self.port):
            raise PlantStartError(f"mqtt: cannot listen on 127.0.0.1:{self.port}: address already in use")
        command = self._command()
        log = self.folder / f"{self.kind}.log"
        with open(log, "ab") as out:  # the process keeps its own copy of the descriptor
            # A session of its own: a terminal's Ctrl-C goes to the demo's process group, and the
            # broker must outlive the demo's drain (the demo stops it last, on every path).
            self._proc = subprocess.Popen(
                command, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if self._proc.poll() is None:  # ours answered, not one that took the port meanwhile
                return
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        self.stop()
        why = " ".join(tail) or "no output"
        raise PlantStartError(f"{self.kind} did not start on 127.0.0.1:{self.port}: {why}")

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)


def start_local_broker(folder: Path, port: int = 0) -> LocalBroker:
    """A local broker, started (`PlantStartError` with a one-line reason if none can start);
    the caller stops it. For the demo: `broker = start_local_broker(data_dir / "broker")`, then
    `with_local_plant(cell, mqtt_port=broker.port)` (`controller.assembly`)."""
    broker = LocalBroker(folder, port)
    broker.start()
    return broker


__all__ = ["LocalBroker", "broker_problem", "start_local_broker"]
