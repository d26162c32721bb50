"""An MQTT broker process for tests, on 127.0.0.1 and a free port: Mosquitto where it is
installed, else amqtt (the `dev` extra's pure-Python broker). `kill()` and `start()` again
restart it on the same port, for outage tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_path() -> str | None:
    """Mosquitto's binary: on PATH, or where Debian puts it (/usr/sbin is not on every PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def amqtt_path() -> str | None:
    found = Path(sys.executable).parent / "amqtt"
    return str(found) if found.exists() else shutil.which("amqtt")


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (PEM)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """Made with the openssl command (RuntimeError where it is missing or fails)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")
    f = TlsFiles(*(folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    ca_key = folder / "ca.key"

    def run(*args: str) -> None:
        done = subprocess.run([openssl, *args], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"openssl {args[0]}: {done.stderr.strip()[-300:]}")

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(ca_key), "-out", str(f.ca))  # fmt: skip
    for cert, key, name, ext in (
        (f.server_cert, f.server_key, "server", "subjectAltName=IP:127.0.0.1"),
        (f.client_cert, f.client_key, "client", "extendedKeyUsage=clientAuth"),
    ):
        csr, extfile = folder / f"{name}.csr", folder / f"{name}.ext"
        extfile.write_text(ext + "\n")
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        )
        run("x509", "-req", "-in", str(csr), "-CA", str(f.ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(extfile), "-out", str(cert))  # fmt: skip
    return f


class Broker:
    """One broker process; `kind` is "mosquitto" or "amqtt". `start_s`: how long the last
    start took until the port answered."""

    def __init__(
        self,
        workdir: Path,
        kind: str | None = None,
        users: dict[str, str] | None = None,
        tls: TlsFiles | None = None,
        nice: int = 0,
    ) -> None:
        """`users` (name: password) turns anonymous access off; `tls` serves TLS only and asks
        every client for a certificate signed by its CA. Both need Mosquitto. `nice`: the
        broker's process runs that much lower (a benchmark's stand-in for another machine)."""
        self.workdir, self.port, self.users, self.tls = workdir, free_port(), users, tls
        self.nice = nice
        paths = {"mosquitto": mosquitto_path(), "amqtt": amqtt_path()}
        if kind is None:
            kind = "mosquitto" if paths["mosquitto"] else "amqtt"
        binary = paths[kind]
        if binary is None:
            hint = "apt-get install mosquitto" if kind == "mosquitto" else "pip install -e '.[dev]'"
            raise RuntimeError(f"{kind} is not installed ({hint})")
        if kind != "mosquitto" and (users or tls):
            raise RuntimeError("users and TLS are set up for Mosquitto only")
        self.kind, self._binary = kind, binary
        self._proc: subprocess.Popen[bytes] | None = None
        self.start_s = 0.0

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            return [self._binary, "-c", str(self._mosquitto_conf())]
        conf = self.workdir / "amqtt.yaml"
        conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        return [self._binary, "-c", str(conf)]

    def _mosquitto_conf(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "persistence false"]
        # As root, mosquitto would switch to its own user; `user root` keeps it ours.
        lines += ["user root"] if os.geteuid() == 0 else []
        if self.users:
            passwd = self.workdir / "passwd"
            passwd.write_text("")
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            for name, password in self.users.items():
                subprocess.run([tool, "-b", str(passwd), name, password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines += ["allow_anonymous true"]
        if self.tls:
            t = self.tls
            lines += [f"cafile {t.ca}", f"certfile {t.server_cert}", f"keyfile {t.server_key}"]
            lines += ["require_certificate true"]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker; returns once its port accepts connections."""
        if self._proc is not None:
            raise RuntimeError("broker already running")
        t0 = time.monotonic()
        log = open(self.workdir / f"{self.kind}.log", "ab")  # noqa: SIM115 - the process keeps it
        with log:
            self._proc = subprocess.Popen(self._command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        if self.nice:
            os.setpriority(os.PRIO_PROCESS, self._proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + self.nice)
        while time.monotonic() - t0 < timeout:
            if self._proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    self.start_s = time.monotonic() - t0
                    return
            except OSError:
                time.sleep(0.02)
        tail = (self.workdir / f"{self.kind}.log").read_text(errors="replace")[-600:]
        self.stop()
        raise RuntimeError(f"{self.kind} did not start on port {self.port}: {tail}")

    def pause(self) -> None:
        """SIGSTOP: the broker still holds its sockets but answers nothing (a hung broker)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: an outage, no clean goodbye to anyone."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)


class Listener:
    """A test subscriber: connects to `port`, subscribes to `topic` (QoS 1) and keeps every
    message it gets, in order. Use as a context manager; `wait_for` polls a condition."""

    def __init__(self, port: int, topic: str, client_id: str = "test-listener") -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self._subscribed = False
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self._client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, bool(m.retain)))
        self._client.on_subscribe = lambda c, u, mid, codes, props: setattr(self, "_subscribed", True)
        self._client.on_connect = lambda c, u, flags, rc, props: c.subscribe(topic, qos=1)
        self._client.connect("127.0.0.1", port, keepalive=10)
        self._client.loop_start()
        self.wait_for(lambda: self._subscribed, what=f"a subscription to {topic}")

    def wait_for(self, condition: object, timeout: float = 10.0, what: str = "the condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.01)

    def on(self, suffix: str) -> list[tuple[bytes, bool]]:
        """The payloads and retained flags received on topics ending with `/suffix`."""
        return [(p, r) for t, p, r in list(self.messages) if t.endswith("/" + suffix)]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
