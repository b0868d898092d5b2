"""The operator as a real process against a cluster, for integration tests and benchmarks.

A subprocess (not an in-process task) so tests can SIGKILL it at any moment and
start a new one, exactly as a crashed pod would be replaced.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """Start, kill and restart ``runbook-operator run``; its output goes to a log file."""

    def __init__(self, kubeconfig: Path, log_dir: Path, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, alerts_token: str | None = None):
        """``alerts_token``: serve the Alertmanager receiver (at :attr:`alerts_url`) with
        this bearer token, written to a file in ``log_dir``."""
        self.kubeconfig = kubeconfig
        self.alerts_token = alerts_token
        self.alerts_port = free_port() if alerts_token else None
        self.env = env or {}
        self.log_dir = log_dir
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.port = free_port()

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    @property
    def alerts_url(self) -> str:
        """``http://127.0.0.1:<port>/alerts``: where Alertmanager posts."""
        if self.alerts_port is None:
            raise RuntimeError("this operator was started without an alerts token")
        return f"http://127.0.0.1:{self.alerts_port}/alerts"

    @property
    def alerts_token_file(self) -> Path:
        return self.log_dir / "alerts-token"

    def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        alerts: list[str] = []
        if self.alerts_token is not None:
            self.alerts_token_file.write_text(self.alerts_token + "\n")
            alerts = [f"--alerts-port={self.alerts_port}", "--alerts-address=127.0.0.1",
                      f"--alerts-token-file={self.alerts_token_file}"]
        out = self.log_path.open("wb")
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1",
                   **self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runbook_operator.cli.operator", "run",
             "--kubeconfig", str(self.kubeconfig), "--health-port", str(self.port),
             *alerts, *self.extra_args],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}; "
                                   f"see {self.log_path}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"operator not healthy within {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last status write, like a node dying."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
