"""hack/cluster.py passes extra kube-controller-manager flags from the environment.

Cases: unset ``RBO_CONTROLLER_MANAGER_FLAGS`` starts the controller-manager with
the defaults (no ``--concurrent-job-syncs``); set to
``--concurrent-job-syncs=50 --v=2`` both flags are appended after the defaults.
Offline: the process start is captured, nothing runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "hack"))

from cluster import LocalCluster


def controller_manager_argv(tmp_path: Path) -> list[str]:
    cluster = LocalCluster(state_dir=tmp_path, bin_dir=tmp_path)
    started: list[list[str]] = []

    def spawn(name: str, argv: Sequence[str]) -> None:
        started.append(list(argv))

    cluster._spawn = spawn  # type: ignore[method-assign]
    cluster._start_controller_manager(tmp_path)
    (argv,) = started
    return argv


def test_default_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RBO_CONTROLLER_MANAGER_FLAGS", raising=False)
    argv = controller_manager_argv(tmp_path)
    assert not any(a.startswith("--concurrent-job-syncs") for a in argv)
    assert "--kube-api-qps=500" in argv


def test_extra_flags_are_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBO_CONTROLLER_MANAGER_FLAGS", "--concurrent-job-syncs=50 --v=2")
    argv = controller_manager_argv(tmp_path)
    assert argv[-2:] == ["--concurrent-job-syncs=50", "--v=2"]
