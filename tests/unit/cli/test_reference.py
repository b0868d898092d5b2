"""The generated reference pages under docs/reference/ are current.

Cases:
- rendering the pages now (cli.reference.render_all) gives exactly the files in
  docs/reference/, and that folder holds no other page (stale output tells to run
  `make docs-ref`), as tests/unit/api/test_crds.py does for crds/;
- every flag of `runbook-operator run` and every listed `kubectl runbook` command
  appears in its page (the stale README list lacked --leader-elect*, --log-level
  and --alerts-address);
- every field of OperatorSettings has a row, with its attribute docstring;
- every field of every CRD schema has a row in the API page;
- a help text with a pipe or a newline stays one table cell; pipes in code spans
  are kept (the tables extension does not split there), and ``<name>`` is text.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from runbook_operator.api.crdgen import KINDS, crd
from runbook_operator.cli import kubectl_plugin, reference
from runbook_operator.cli import operator as operator_cli
from runbook_operator.settings import OperatorSettings

REFERENCE = Path(__file__).resolve().parents[3] / "docs" / "reference"
RENDERED = reference.render_all()


def test_reference_pages_are_current() -> None:
    on_disk = {p.name for p in REFERENCE.glob("*.md")}
    assert on_disk == set(RENDERED), "docs/reference/ is stale: run `make docs-ref`"
    for name, text in RENDERED.items():
        assert (REFERENCE / name).read_text(encoding="utf-8") == text, (
            f"docs/reference/{name} differs from the code: run `make docs-ref`")


def _flags(parser: argparse.ArgumentParser, command: str) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices[command]
            return [s for a in sub._actions for s in a.option_strings if s.startswith("--")]
    raise AssertionError(command)


def test_every_operator_flag_is_documented() -> None:
    flags = _flags(operator_cli.build_parser(), "run")
    for needed in ("--leader-elect", "--leader-elect-namespace", "--leader-elect-name",
                   "--leader-elect-identity", "--log-level", "--alerts-address"):
        assert needed in flags
    page = RENDERED["operator.md"]
    for flag in flags:
        if flag != "--help":
            assert f"{flag}" in page, flag


def test_every_plugin_command_is_documented() -> None:
    parser = kubectl_plugin.build_parser()
    page = RENDERED["cli.md"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = [c.dest for c in action._choices_actions]
            assert "validate" in listed and "approve" in listed
            for name in listed:
                assert f"## kubectl runbook {name}\n" in page, name
            assert "__complete" not in page


def test_every_crd_field_has_a_row() -> None:
    page = RENDERED["api.md"]
    for kind in KINDS:
        schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for part in ("spec", "status"):
            for path, _, _ in reference._fields(schema["properties"][part], part):
                assert f"| `{path}` |" in page, (kind.kind, path)


def test_cells_stay_one_cell() -> None:
    assert reference.cell("a | b\n  c") == "a \\| b c"
    assert reference.cell("`x|y` or <name> | ``z|w``") == "`x|y` or &lt;name> \\| ``z|w``"
    assert reference.cell("n <= 5") == "n <= 5"
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers()
    cmd = sub.add_parser("cmd", help="do | it")
    cmd.add_argument("--mode", choices=["a", "b"], help="one\nof | these")
    page = reference.cli_reference(parser, "x", "intro", "a test")
    row = next(line for line in page.splitlines() if line.startswith("| `--mode"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 4 and "one of \\| these" in row


def test_every_operator_setting_is_documented_with_its_docstring() -> None:
    page = RENDERED["operator.md"]
    for item in dataclasses.fields(OperatorSettings):
        assert f"| `{item.name}` |" in page, item.name
    assert "| `job_ttl_seconds` | `3600` | ``ttlSecondsAfterFinished`` of step Jobs" in page
