"""The README and the docs site keep their shape and their examples stay valid.

Cases:
- README.md is at most 300 lines (issue 20: what it is, the two commands, an
  example, where to go next; the rest lives in docs/);
- every relative link of README.md names a file that exists (MkDocs checks the
  links inside docs/, not the README's);
- every page under docs/ is in mkdocs.yml's nav, and the nav names no missing
  page (`mkdocs build --strict` in `make docs` checks the same; this fails fast
  in the unit run);
- every complete manifest in a ```yaml block of the README or the docs (one with
  apiVersion runbooks.dev/v1alpha1 and a kind) is accepted by its kind's model,
  and a Runbook by the operator's validator: a copied example cannot drift from
  the API unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_operator.api import CircuitPolicy, Runbook, RunbookExecution
from runbook_operator.engine.validation import validate_spec

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"
MODELS: dict[str, Any] = {"Runbook": Runbook, "RunbookExecution": RunbookExecution,
                          "CircuitPolicy": CircuitPolicy}


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_links_exist() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        assert (REPO / link).exists(), f"README.md links to missing {link}"


def _nav_pages(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def test_nav_covers_every_page() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = set(_nav_pages(config["nav"]))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == nav, f"not in nav: {pages - nav}; missing: {nav - pages}"


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in [README, *sorted(DOCS.rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            for doc in yaml.safe_load_all(block):
                if (isinstance(doc, dict) and doc.get("kind") in MODELS
                        and doc.get("apiVersion") == "runbooks.dev/v1alpha1"):
                    found.append((f"{path.relative_to(REPO)}:{doc['kind']}", doc))
    return found


MANIFESTS = _manifests()


def test_docs_hold_manifests_of_every_kind() -> None:
    assert {doc["kind"] for _, doc in MANIFESTS} == set(MODELS)


@pytest.mark.parametrize(("where", "doc"), MANIFESTS, ids=[w for w, _ in MANIFESTS])
def test_manifest_is_valid(where: str, doc: dict[str, Any]) -> None:
    obj = MODELS[doc["kind"]].model_validate(doc)
    if doc["kind"] == "Runbook":
        problems = validate_spec(obj.spec)
        assert not problems, f"{where}: {problems}"
