"""Paths and loaders shared by the unit tests (no cluster, no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
INVALID = REPO / "tests" / "fixtures" / "invalid"
CRDS = REPO / "crds"


def load(path: Path) -> dict[str, Any]:
    """The single YAML document of ``path``."""
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path} does not hold one mapping"
    return doc


def expectations(path: Path) -> dict[str, str]:
    """The ``# expect-<key>: value`` header comments of an invalid fixture."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("# expect-"):
            key, _, value = line[len("# expect-"):].partition(":")
            found[key.strip()] = value.strip()
    return found
