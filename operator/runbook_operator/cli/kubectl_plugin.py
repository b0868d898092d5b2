"""``kubectl-runbook``: the kubectl plugin of the Runbook Operator.

Why it exists: a Runbook that the CRD schema accepts can still be broken (a
dependency cycle, a ``when`` that does not compile, a default outside its enum);
the operator then reports it on ``status.conditions[Ready]`` only after it was
applied. ``kubectl runbook validate`` runs the very validator the operator uses
(``engine.validation.validate_spec``) on files, offline, so a pre-commit hook or a
CI job catches the mistake before Argo CD or Flux applies it. No cluster needed.

    kubectl runbook validate -f FILE|DIR [-f FILE|DIR ...]
    kubectl runbook run RUNBOOK [-p NAME=VALUE ...] [--watch]   (cluster_commands)
    kubectl runbook retry EXECUTION [--from STEP] [--name NAME] [--watch]
    kubectl runbook approve|reject EXECUTION STEP [-m COMMENT]
    kubectl runbook cancel EXECUTION
    kubectl runbook list|get|watch|logs|graph|circuits|circuit  (inspect_commands)
    kubectl runbook completion bash|zsh                          (completion)
    kubectl runbook ui [-n NS | -A] [--port 0] [--no-browser]    (ui: a live web view)

Startup matters (every Tab press runs it): the kubernetes client, rich, pydantic
and the validator are imported by the handlers that need them, not here.

Output: one line per problem, ``FILE: runbook NAME: step STEP: REASON: message``
(``FILE: InvalidYAML: line L, column C: ...`` for a file that is not YAML), then
``N runbook(s) checked, M invalid``. Exit status: 0 all valid, 1 some invalid or
not YAML, 2 usage or I/O errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from runbook_operator.cli import inspect_commands
from runbook_operator.cli.cluster_commands import add_commands
from runbook_operator.cli.ui.command import add_command as add_ui_command
from runbook_operator.cli.views import GROUP

if TYPE_CHECKING:
    import yaml

    from runbook_operator.engine.validation import Problem

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

YAML_SUFFIXES = (".yaml", ".yml")


class UsageError(Exception):
    """A path that does not exist or cannot be read: exit status 2."""


@dataclass(frozen=True)
class Finding:
    """One problem of one runbook (or of a file that holds no readable YAML)."""

    file: str
    runbook: str | None
    step: str | None
    reason: str
    message: str

    def __str__(self) -> str:
        """One line: multi-line messages (CEL compiler output) are folded."""
        parts = [self.file]
        if self.runbook is not None:
            parts.append(f"runbook {self.runbook}")
        if self.step is not None:
            parts.append(f"step {self.step}")
        parts.append(self.reason)
        parts.append(" ".join(line.strip() for line in self.message.splitlines() if line.strip()))
        return ": ".join(parts)


@dataclass
class Report:
    """What ``validate`` found over all files."""

    checked: int = 0
    """Runbook documents validated."""
    invalid: int = 0
    """Runbook documents with at least one problem."""
    broken_files: int = 0
    """Files that are not YAML at all."""
    findings: list[Finding] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.checked} runbook(s) checked, {self.invalid} invalid"
        if self.broken_files:
            text += f", {self.broken_files} file(s) not valid YAML"
        return text


Handler = Callable[[argparse.Namespace, TextIO, TextIO], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl runbook",
        description="Work with runbooks.dev Runbooks and RunbookExecutions.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate = sub.add_parser(
        "validate",
        help="check Runbook manifests offline with the operator's validator",
        description="Check Runbook manifests offline, with the validator the operator uses. "
        "Directories are searched recursively for *.yaml and *.yml; documents of "
        "other kinds are ignored.",
    )
    validate.add_argument(
        "-f", "--filename", action="append", required=True, metavar="FILE|DIR",
        help="a manifest file or a directory of them (repeatable); - reads stdin",
    )
    validate.add_argument("-q", "--quiet", action="store_true",
                          help="print problems only, no summary line")
    validate.set_defaults(handler=cmd_validate)
    add_commands(sub)
    inspect_commands.add_commands(sub)
    add_ui_command(sub)
    completion = sub.add_parser("completion", help="print a bash or zsh completion script")
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(handler=cmd_completion)
    hidden = sub.add_parser("__complete")  # the shells' callback; no help=, so not listed
    hidden.add_argument("words", nargs=argparse.REMAINDER)
    hidden.set_defaults(handler=cmd_complete)
    return parser


def cmd_completion(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from runbook_operator.cli.completion import script

    out.write(script(args.shell))
    return EXIT_OK


def cmd_complete(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from runbook_operator.cli.completion import cluster_names, complete

    for candidate in complete(build_parser(), args.words, cluster_names):
        print(candidate, file=out)
    return EXIT_OK


def kubectl_complete_main() -> int:
    """``kubectl_complete-runbook``: what kubectl runs to complete ``kubectl runbook ...``.

    Prints one candidate a line, then cobra's directive ``:4`` (no file completion).
    """
    from runbook_operator.cli.completion import cluster_names, complete

    for candidate in complete(build_parser(), sys.argv[1:], cluster_names):
        print(candidate)
    print(":4")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    return handler(args, sys.stdout, sys.stderr)


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        files = list(expand_paths(args.filename))
    except UsageError as exc:
        print(f"kubectl-runbook: {exc}", file=err)
        return EXIT_USAGE
    report = Report()
    for name, text in files:
        validate_text(name, text, report)
    for finding in report.findings:
        print(finding, file=out)
    if not args.quiet:
        print(report.summary(), file=out)
    return EXIT_INVALID if report.invalid or report.broken_files else EXIT_OK


def expand_paths(paths: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(display name, text) of every file named or found under a named directory."""
    for raw in paths:
        if raw == "-":
            yield "<stdin>", sys.stdin.read()
            continue
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix in YAML_SUFFIXES)
            for file in found:
                yield str(file), _read(file)
        elif path.exists():
            yield str(path), _read(path)
        else:
            raise UsageError(f"{raw}: no such file or directory")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None


def validate_text(name: str, text: str, report: Report) -> None:
    """Validate every Runbook document of one file into ``report``."""
    import yaml

    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        report.broken_files += 1
        report.findings.append(Finding(name, None, None, "InvalidYAML", _yaml_message(exc)))
        return
    for index, doc in enumerate(documents):
        if not _is_runbook(doc):
            continue
        report.checked += 1
        runbook = _runbook_name(doc, index)
        problems = _problems(doc)
        if problems:
            report.invalid += 1
        for problem in problems:
            report.findings.append(
                Finding(name, runbook, problem.step, problem.reason, problem.message))


def _is_runbook(doc: object) -> bool:
    if not isinstance(doc, dict) or doc.get("kind") != "Runbook":
        return False
    api_version = doc.get("apiVersion")
    return isinstance(api_version, str) and api_version.split("/")[0] == GROUP


def _runbook_name(doc: dict[str, Any], index: int) -> str:
    metadata = doc.get("metadata")
    if isinstance(metadata, dict):
        name = metadata.get("name") or metadata.get("generateName")
        if isinstance(name, str) and name:
            return name
    return f"<document {index + 1}>"


def _problems(doc: dict[str, Any]) -> list[Problem]:
    from runbook_operator.engine.validation import Problem, validate_spec

    spec = doc.get("spec")
    if spec is None:
        return [Problem("InvalidSpec", "the Runbook has no spec")]
    if not isinstance(spec, dict):
        return [Problem("InvalidSpec", f"spec must be a mapping, not {type(spec).__name__}")]
    try:
        return validate_spec(spec)
    except Exception as exc:  # a validator bug must not hide the other files' results
        return [Problem("ValidatorError", f"the validator failed: {type(exc).__name__}: {exc}")]


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = problem or str(exc).splitlines()[0]
    return f"{where}not valid YAML: {what}"


if __name__ == "__main__":
    sys.exit(main())
