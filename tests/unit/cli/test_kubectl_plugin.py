"""kubectl-runbook validate: offline validation of Runbook manifests.

Cases:
- `validate -f examples/` exits 0 and checks the seven runbooks (other kinds ignored);
- `validate -f tests/fixtures/invalid/` exits 1 and prints one line per case:
  `FILE: runbook NAME: step STEP: REASON: message` (no step part for parameter
  problems), then `8 runbook(s) checked, 8 invalid`;
- multi-line compiler messages are folded onto the problem's line;
- a YAML syntax error gives `FILE: InvalidYAML: line L, column C: ...`, exit 1;
- multi-document files: each Runbook checked, other kinds and empty documents
  ignored, Runbooks of another group ignored, a Runbook without spec reported;
- several -f, files given twice, *.yml, recursion into subdirectories, stdin (-f -);
- usage errors exit 2: no subcommand, no -f, a path that does not exist;
- --quiet drops the summary; --help exits 0;
- the installed console script `kubectl-runbook` works (subprocess).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_operator.cli.kubectl_plugin import main

from ..support import EXAMPLES, INVALID, expectations

VALID = """\
apiVersion: runbooks.dev/v1alpha1
kind: Runbook
metadata: {name: %s}
spec:
  steps:
    - {name: probe, image: "curlimages/curl:8.11.0", command: [curl, -sf, "http://app/health"]}
"""


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run_cli(capsys, "validate", "-f", str(EXAMPLES))
    assert (code, err) == (0, "")
    assert lines == ["8 runbook(s) checked, 0 invalid"]  # examples/demo/ included


def test_invalid_fixtures(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_cli(capsys, "validate", "-f", str(INVALID))
    assert code == 1
    *problems, summary = lines
    assert summary == "8 runbook(s) checked, 8 invalid"
    files = sorted(INVALID.glob("*.yaml"))
    assert len(problems) == len(files)
    for line, path in zip(problems, files, strict=True):
        expected = expectations(path)
        prefix = f"{path}: runbook {path.stem}: "
        if expected["step"] != "none":
            prefix += f"step {expected['step']}: "
        assert line.startswith(prefix + f"{expected['reason']}: "), line
        assert expected["message"] in line


def test_cycle_line(capsys: pytest.CaptureFixture[str]) -> None:
    path = INVALID / "dependency-cycle.yaml"
    _, lines, _ = run_cli(capsys, "validate", "-f", str(path))
    assert lines[0] == (f"{path}: runbook dependency-cycle: step restart: DependencyCycle: "
                        "restart -> verify -> drain -> restart")


def test_compiler_message_stays_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_cli(capsys, "validate", "-f", str(INVALID / "invalid-when.yaml"))
    assert code == 1
    assert len(lines) == 2
    assert "step clear-cache: InvalidExpression: when 'steps.probe.outputs.healthy ==' " \
           "does not compile" in lines[0]


def test_yaml_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("apiVersion: runbooks.dev/v1alpha1\nkind: Runbook\nspec:\n  steps: [\n")
    good = tmp_path / "good.yaml"
    good.write_text(VALID % "good")
    code, lines, _ = run_cli(capsys, "validate", "-f", str(tmp_path))
    assert code == 1
    assert lines[0].startswith(f"{bad}: InvalidYAML: line 5, column 1: not valid YAML: ")
    assert lines[-1] == "1 runbook(s) checked, 0 invalid, 1 file(s) not valid YAML"


def test_multi_document_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "all.yaml"
    path.write_text("\n---\n".join([
        VALID % "first",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}",
        "",
        "apiVersion: example.com/v1\nkind: Runbook\nmetadata: {name: other-group}\nspec: 3",
        "apiVersion: runbooks.dev/v1alpha1\nkind: Runbook\nmetadata: {name: nospec}",
        "apiVersion: runbooks.dev/v1alpha1\nkind: Runbook\nmetadata: {name: listspec}\nspec: []",
        VALID % "last",
    ]))
    code, lines, _ = run_cli(capsys, "validate", "-f", str(path))
    assert code == 1
    assert lines == [
        f"{path}: runbook nospec: InvalidSpec: the Runbook has no spec",
        f"{path}: runbook listspec: InvalidSpec: spec must be a mapping, not list",
        "4 runbook(s) checked, 2 invalid",
    ]


def test_schema_problem_names_the_step_index(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rb.yaml"
    path.write_text((VALID % "typo").replace("command:", "comand:"))
    code, lines, _ = run_cli(capsys, "validate", "-f", str(path))
    assert code == 1
    assert lines[0].startswith(f"{path}: runbook typo: step steps[0]: InvalidSpec: ")
    assert "comand" in lines[0]


def test_paths_recursion_yml_and_repeats(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.yml").write_text(VALID % "deep")
    (tmp_path / "top.yaml").write_text(VALID % "top")
    (tmp_path / "notes.txt").write_text("kind: Runbook\nnot: yaml: at: all")
    code, lines, _ = run_cli(capsys, "validate", "-f", str(tmp_path),
                             "--filename", str(tmp_path / "top.yaml"))
    assert code == 0
    assert lines == ["3 runbook(s) checked, 0 invalid"]


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO((INVALID / "unknown-fallback.yaml").read_text()))
    code, lines, _ = run_cli(capsys, "validate", "-f", "-")
    assert code == 1
    assert lines[0].startswith("<stdin>: runbook unknown-fallback: step probe: UnknownFallback: ")


def test_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "validate", "-q", "-f", str(EXAMPLES))[:2] == (0, [])


@pytest.mark.parametrize("argv", [[], ["validate"], ["frobnicate"],
                                  ["validate", "-f", "/does/not/exist.yaml"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_cli(capsys, "validate", "--help")
    assert code == 0
    assert any("-f" in line for line in lines)


def test_console_script() -> None:
    script = shutil.which("kubectl-runbook", path=str(Path(sys.executable).parent))
    assert script, "the kubectl-runbook console script is not installed next to python"
    ok = subprocess.run([script, "validate", "-f", str(EXAMPLES)],
                        capture_output=True, text=True, timeout=60, check=False)
    assert (ok.returncode, ok.stdout) == (0, "8 runbook(s) checked, 0 invalid\n")
    bad = subprocess.run([script, "validate", "-f", str(INVALID)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert bad.stdout.endswith("8 runbook(s) checked, 8 invalid\n")
