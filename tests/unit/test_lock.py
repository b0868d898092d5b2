"""requirements.lock pins what pyproject.toml asks for.

Cases: every runtime dependency of pyproject.toml is pinned (==) in the lock, at a
version its specifier allows; every pin carries at least one sha256 hash (so
`pip install --require-hashes` works, as the Dockerfile does); the lock names no
package index or local path (it must install the same anywhere).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = (REPO / "requirements.lock").read_text()
PINS = {canonicalize_name(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", LOCK, re.M)}


def test_every_dependency_is_pinned_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in PINS, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(PINS[name], prereleases=True), (
            f"{name}=={PINS[name]} is outside {requirement.specifier}: run `make lock`")


def test_every_pin_has_a_hash() -> None:
    blocks = re.split(r"^(?=[A-Za-z0-9_.\-]+==)", LOCK, flags=re.M)[1:]
    assert len(blocks) == len(PINS) > 10
    for block in blocks:
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_no_index_or_local_path() -> None:
    for line in LOCK.splitlines():
        assert not line.startswith(("--index-url", "--extra-index-url", "--find-links",
                                    "-f ", "-e ")), line
