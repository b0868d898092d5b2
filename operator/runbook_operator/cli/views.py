"""What the plugin shows, computed from plain dicts: tables, the step tree, graphs.

Why it exists: every inspecting command (``list``, ``get``, ``watch``, ``graph``,
``circuits``) turns an API object into text. Keeping that pure (a body and ``now``
in, rows or text out; no client, no clock) lets unit tests pin the output with
plain dicts, and keeps the import cheap: rich is imported only by the functions
that build rich renderables, the kubernetes client never.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbook_operator.engine.redact import REDACTED, redact
from runbook_operator.engine.severity import severity_of
from runbook_operator.engine.timeutil import parse

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.tree import Tree

# Also in api.common; repeated so that the plugin starts without importing pydantic
# (a unit test keeps them equal).
GROUP = "runbooks.dev"
VERSION = "v1alpha1"

FINISHED = ("Succeeded", "Failed", "Cancelled")
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT = 0, 1, 2, 3

PHASE_STYLE = {
    "Succeeded": "green", "Failed": "bold red", "Cancelled": "yellow",
    "Running": "cyan", "Retrying": "yellow", "Waiting": "magenta",
    "WaitingForApproval": "bold magenta", "Queued": "magenta",
    "Pending": "dim", "Skipped": "dim",
}
PHASE_MARK = {
    "Succeeded": "✔", "Failed": "✖", "Cancelled": "⊘", "Running": "●", "Retrying": "↻",
    "Waiting": "◷", "WaitingForApproval": "?", "Queued": "◷", "Pending": "○", "Skipped": "-",
}
# Graph fill colours by phase (mermaid classDef / dot fillcolor).
PHASE_FILL = {
    "Succeeded": "#b7e1a1", "Failed": "#f4a6a6", "Running": "#a6d8f4", "Retrying": "#f4e1a6",
    "Waiting": "#e1c6f4", "WaitingForApproval": "#e1c6f4", "Skipped": "#e0e0e0",
    "Pending": "#ffffff", "Cancelled": "#f4e1a6",
}


def exit_code_of(phase: str | None) -> int:
    """The ``watch`` exit status for a finished execution's phase."""
    return {"Succeeded": EXIT_SUCCEEDED, "Failed": EXIT_FAILED,
            "Cancelled": EXIT_CANCELLED}.get(phase or "", EXIT_TIMEOUT)


# --- times -----------------------------------------------------------------------------


def parse_time(text: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime, or None (also for a non-string)."""
    return parse(text) if isinstance(text, str) else None


def human_duration(seconds: float | None) -> str:
    """kubectl's style: 45s, 3m12s, 2h5m, 3d4h."""
    if seconds is None:
        return ""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def span(start: Any, end: Any, now: datetime) -> float | None:
    """Seconds from ``start`` to ``end`` (or to ``now`` while it runs)."""
    began = parse_time(start)
    if began is None:
        return None
    return ((parse_time(end) or now) - began).total_seconds()


def age(body: Mapping[str, Any], now: datetime) -> str:
    return human_duration(span(_get(body, "metadata", "creationTimestamp"), None, now))


# --- list ------------------------------------------------------------------------------


def trigger_of(spec: Mapping[str, Any] | None) -> str:
    """Manual, ``Alert <alertname>``, Schedule or GitOps."""
    triggered = _get(spec, "triggeredBy") or {}
    kind = str(triggered.get("kind") or "Manual")
    if kind == "Alert":
        name = _get(triggered, "alert", "name")
        return f"Alert {name}" if name else "Alert"
    return kind


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]

    def text(self) -> str:
        """Left-aligned columns, two spaces apart, as ``kubectl get`` prints them."""
        widths = [max(len(row[i]) for row in [self.headers, *self.rows])
                  for i in range(len(self.headers))]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                 for row in [self.headers, *self.rows]]
        return "\n".join(lines)


def execution_table(items: Iterable[Mapping[str, Any]], now: datetime, *,
                    all_namespaces: bool = False, wide: bool = False) -> Table:
    """``kubectl runbook list``: newest first."""
    headers = ["NAME", "RUNBOOK", "PHASE", "PROGRESS", "SEVERITY", "TRIGGER", "AGE",
               "DURATION"]
    if wide:
        headers += ["REASON", "MESSAGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    ordered = sorted(items, key=lambda b: str(_get(b, "metadata", "creationTimestamp") or ""),
                     reverse=True)
    for body in ordered:
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        row = [str(_get(body, "metadata", "name") or ""),
               str(_get(spec, "runbookRef", "name") or ""),
               str(status.get("phase") or "Pending"),
               str(status.get("progress") or ""),
               severity_of(spec) or "",
               trigger_of(spec),
               age(body, now),
               human_duration(span(status.get("startedAt"), status.get("finishedAt"), now))]
        if wide:
            row += [str(status.get("reason") or ""), _one_line(status.get("message"), 60)]
        if all_namespaces:
            row.insert(0, str(_get(body, "metadata", "namespace") or ""))
        rows.append(row)
    return Table(headers, rows)


def circuit_table(policies: Iterable[Mapping[str, Any]], now: datetime, *,
                  all_namespaces: bool = False) -> Table:
    """``kubectl runbook circuits``: one row per circuit (a policy without any: one row)."""
    headers = ["POLICY", "MODE", "KEY", "STATE", "FAILURE", "SLOW", "CALLS", "RETRY"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for body in sorted(policies, key=lambda b: (str(_get(b, "metadata", "namespace")),
                                                str(_get(b, "metadata", "name")))):
        name = str(_get(body, "metadata", "name") or "")
        mode = str(_get(body, "spec", "mode") or "Normal")
        circuits = _get(body, "status", "circuits") or []
        entries = [c for c in circuits if isinstance(c, Mapping)] or [{}]
        for circuit in sorted(entries, key=lambda c: str(c.get("key") or "")):
            row = [name, mode, str(circuit.get("key") or "<none>"),
                   str(circuit.get("state") or ("" if not circuit else "Closed")),
                   _percent(circuit.get("failureRate")), _percent(circuit.get("slowCallRate")),
                   str(circuit.get("calls", 0)) if circuit else "",
                   _retry_in(circuit, now)]
            if all_namespaces:
                row.insert(0, str(_get(body, "metadata", "namespace") or ""))
            rows.append(row)
    return Table(headers, rows)


def _percent(value: Any) -> str:
    return f"{value:g}%" if isinstance(value, int | float) else ""


def _retry_in(circuit: Mapping[str, Any], now: datetime) -> str:
    """When an Open circuit lets a trial call through: ``in 40s`` (``due`` once past)."""
    if circuit.get("state") != "Open":
        return ""
    at = parse_time(circuit.get("nextAttemptAt"))
    if at is None:
        return ""
    left = (at - now).total_seconds()
    return f"in {human_duration(left)}" if left > 0 else "due"


# --- the DAG ---------------------------------------------------------------------------


@dataclass
class Node:
    """One step of the DAG as the tree shows it."""

    name: str
    step: Mapping[str, Any]
    deps: list[str]
    is_finally: bool = False
    children: list[Node] = field(default_factory=list)


def dag(spec: Mapping[str, Any] | None) -> tuple[list[Node], list[Node]]:
    """The steps as a forest in dependency order, and the ``finally`` steps.

    A step with exactly one dependency is drawn under it; a join (several
    dependencies) or a root sits at the top level after all its dependencies, and
    says what it waits for. Unknown dependencies and cycles (a runbook the
    validator refused) degrade to the declared order rather than failing.
    """
    steps = [s for s in (_get(spec, "steps") or []) if isinstance(s, Mapping)]
    nodes = {str(s.get("name")): Node(str(s.get("name")), s,
                                      [str(d) for d in s.get("dependsOn") or []])
             for s in steps}
    order = topological([(n.name, n.deps) for n in nodes.values()])
    roots: list[Node] = []
    placed: set[str] = set()
    for name in order:
        node = nodes[name]
        known = [d for d in node.deps if d in nodes]
        if len(known) == 1 and known[0] in placed:  # placed first: no loop through a cycle
            nodes[known[0]].children.append(node)
        else:
            roots.append(node)
        placed.add(name)
    finals = [Node(str(s.get("name")), s, [], is_finally=True)
              for s in (_get(spec, "finally") or []) if isinstance(s, Mapping)]
    return roots, finals


def topological(edges: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Names in dependency order, stable in declaration order (Kahn's algorithm)."""
    names = [name for name, _ in edges]
    known = set(names)
    waiting = {name: {d for d in deps if d in known and d != name} for name, deps in edges}
    done: list[str] = []
    placed: set[str] = set()
    while len(done) < len(names):
        ready = [n for n in names if n not in placed and waiting[n] <= placed]
        if not ready:  # a cycle: place the rest as declared
            ready = [n for n in names if n not in placed]
        for name in ready:
            done.append(name)
            placed.add(name)
    return done


def step_line(name: str, st: Mapping[str, Any], now: datetime) -> str:
    """``probe  Succeeded  12s  attempt 2  exit 1``: the plain text of a step's node."""
    phase = str(st.get("phase") or "Pending")
    parts = [f"{PHASE_MARK.get(phase, '·')} {name}", phase]
    took = span(st.get("startedAt"), st.get("finishedAt"), now)
    if took is not None:
        parts.append(human_duration(took))
    attempts = st.get("attempts") or 0
    if attempts > 1:
        parts.append(f"attempt {attempts}")
    if st.get("exitCode") is not None:
        parts.append(f"exit {st['exitCode']}")
    return "  ".join(parts)


def step_details(node: Node, st: Mapping[str, Any], spec: Mapping[str, Any],
                 status: Mapping[str, Any]) -> list[str]:
    """The lines under a step: what it waits for, why, outputs, circuit, approvals."""
    lines: list[str] = []
    if len(node.deps) > 1:
        lines.append("after " + ", ".join(node.deps))
    when = node.step.get("when")
    if when:
        lines.append(f"when {_one_line(when, 80)}")
    reason, message = st.get("reason"), _one_line(st.get("message"), 160)
    if reason or message:
        lines.append(": ".join(str(p) for p in (reason, message) if p))
    if st.get("outputs"):
        lines.append("outputs " + fold_outputs(st["outputs"]))
    if st.get("circuit"):
        trial = " (HalfOpen trial)" if st.get("circuitTrial") else ""
        lines.append(f"circuit {st['circuit']}{trial}")
    elif isinstance(node.step.get("circuit"), Mapping):
        lines.append(f"circuit {node.step['circuit'].get('policy')}")
    if st.get("nextAttemptAt") and st.get("phase") == "Retrying":
        lines.append(f"next attempt at {st['nextAttemptAt']}")
    lines += approval_lines(node.name, spec, status)
    return lines


def fold_outputs(outputs: Any, limit: int = 100) -> str:
    """Outputs on one line, cut to ``limit`` characters with the count of keys."""
    text = json.dumps(outputs, separators=(", ", ": "), sort_keys=True, ensure_ascii=False)
    if len(text) <= limit:
        return text
    count = len(outputs) if isinstance(outputs, Mapping) else 0
    return f"{text[: limit - 1]}… ({count} keys, {len(text)} chars)"


def approval_lines(step: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> list[str]:
    """Who decided an approval step and when (the time is the history's)."""
    decided = [h for h in status.get("history") or []
               if isinstance(h, Mapping) and h.get("step") == step
               and str(h.get("message") or "").startswith(("approved", "rejected"))]
    lines = []
    for i, decision in enumerate(a for a in spec.get("approvals") or []
                                 if isinstance(a, Mapping) and a.get("step") == step):
        verb = "approved" if decision.get("decision") == "Approve" else "rejected"
        text = f"{verb} by {decision.get('by') or '?'}"
        if i < len(decided):
            text += f" at {decided[i].get('time')}"
        if decision.get("comment"):
            text += f": {_one_line(decision['comment'], 80)!r}"
        lines.append(text)
    return lines


def approve_hints(body: Mapping[str, Any]) -> list[str]:
    """The command to run for every step that waits for approval."""
    name = _get(body, "metadata", "name")
    ns = _get(body, "metadata", "namespace")
    flag = f" -n {ns}" if ns else ""
    return [f"step {step} waits for approval: kubectl runbook approve {name} {step}{flag}"
            f" -m COMMENT   (or: reject)"
            for step, st in sorted((_get(body, "status", "steps") or {}).items())
            if isinstance(st, Mapping) and st.get("phase") == "WaitingForApproval"]


def step_transitions(before: Mapping[str, Any] | None, after: Mapping[str, Any],
                     now: datetime) -> list[str]:
    """Plain ``watch`` lines: each step whose phase or attempt changed, then the run's."""
    old = _get(before, "status", "steps") or {}
    lines = []
    for name, st in (_get(after, "status", "steps") or {}).items():
        if not isinstance(st, Mapping):
            continue
        prev = old.get(name) or {}
        if (st.get("phase"), st.get("attempts")) == (prev.get("phase"), prev.get("attempts")):
            continue
        if st.get("phase", "Pending") == "Pending" and not prev:
            continue
        line = f"{name:24s} {st.get('phase')!s:18s}"
        extra = [f"attempt {st['attempts']}" if (st.get("attempts") or 0) > 1 else "",
                 str(st.get("reason") or ""), _one_line(st.get("message"), 120)]
        lines.append((line + " " + "  ".join(e for e in extra if e)).rstrip())
    phase = _get(after, "status", "phase")
    if phase != _get(before, "status", "phase") and phase:
        status = after.get("status") or {}
        took = human_duration(span(status.get("startedAt"), status.get("finishedAt"), now))
        line = f"{_get(after, 'metadata', 'name')}: {phase} ({status.get('progress') or ''})"
        if phase in FINISHED:
            line += f" in {took}"
        if status.get("message"):
            line += f" {_one_line(status['message'], 160)}"
        lines.append(line)
    return lines


def header_lines(body: Mapping[str, Any], now: datetime) -> list[tuple[str, str]]:
    """The key/value lines above the tree."""
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    rows = [("Name", str(_get(body, "metadata", "name"))),
            ("Namespace", str(_get(body, "metadata", "namespace") or "")),
            ("Runbook", str(_get(spec, "runbookRef", "name") or "")),
            ("Phase", str(status.get("phase") or "Pending")),
            ("Progress", str(status.get("progress") or "")),
            ("Severity", severity_of(spec) or ""),
            ("Trigger", trigger_of(spec) + _trigger_detail(spec)),
            ("Started", str(status.get("startedAt") or "")),
            ("Duration", human_duration(span(status.get("startedAt"),
                                             status.get("finishedAt"), now)))]
    if spec.get("resumeFrom"):
        rows.append(("Resumed from", resumed_from(spec, status)))
    if status.get("reason") or status.get("message"):
        rows.append(("Reason", ": ".join(str(p) for p in (status.get("reason"),
                                                          _one_line(status.get("message"), 200))
                                         if p)))
    if isinstance(spec.get("params"), Mapping) and spec["params"]:
        rows.append(("Params", fold_outputs(shown_params(spec["params"], status), 120)))
    return [(k, v) for k, v in rows if v]


def shown_params(params: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """The run's parameters as a screen may show them: those its frozen Runbook declares
    ``secret: true`` are ``[REDACTED]``, and so are values under sensitive keys."""
    frozen = status.get("runbookSpec")
    declared = frozen.get("params") if isinstance(frozen, Mapping) else None
    secret = {p.get("name") for p in declared or [] if isinstance(p, Mapping)
              and p.get("secret") is True} if isinstance(declared, list) else set()
    shown = redact(dict(params))
    return {k: REDACTED if k in secret else v for k, v in shown.items()}


def resumed_from(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """``SOURCE [at step STEP]; reused A, B`` (what the operator reused, once it started)."""
    resume = spec.get("resumeFrom") or {}
    text = str(resume.get("execution") or "")
    if resume.get("step"):
        text += f" at step {resume['step']}"
    applied = status.get("resumedFrom")
    if applied is not None:
        text += f"; reused: {', '.join(applied.get('reused') or []) or 'none'}"
    return _one_line(text, 200)


def _trigger_detail(spec: Mapping[str, Any]) -> str:
    triggered = spec.get("triggeredBy") or {}
    if triggered.get("user"):
        return f" by {triggered['user']}"
    if _get(triggered, "schedule", "scheduledTime"):
        return f" at {triggered['schedule']['scheduledTime']}"
    if _get(triggered, "alert", "fingerprint"):
        return f" ({triggered['alert']['fingerprint']})"
    return ""


# --- rich renderables ------------------------------------------------------------------


def step_tree(body: Mapping[str, Any], now: datetime,
              live_spec: Mapping[str, Any] | None = None) -> Tree:
    """The execution's DAG as a rich Tree, phases styled (the console decides colour).

    Before the run starts there is no frozen spec: ``live_spec`` (the Runbook as it
    is now) is drawn instead, and says so.
    """
    from rich.text import Text
    from rich.tree import Tree

    spec = body.get("spec") or {}
    status = body.get("status") or {}
    runbook_spec = status.get("runbookSpec") or live_spec or {}
    steps = status.get("steps") or {}
    phase = str(status.get("phase") or "Pending")
    root = Tree(Text.assemble((str(_get(body, "metadata", "name")), "bold"), "  ",
                              (phase, PHASE_STYLE.get(phase, ""))))

    def add(parent: Tree, node: Node) -> None:
        st = steps.get(node.name) or {}
        line = step_line(node.name, st, now)
        step_phase = str(st.get("phase") or "Pending")
        label = Text(line)
        label.highlight_words([step_phase], PHASE_STYLE.get(step_phase, ""))
        branch = parent.add(label)
        for detail in step_details(node, st, spec, status):
            branch.add(Text(detail, style="dim" if detail.startswith(("after", "when"))
                            else ""))
        for child in node.children:
            add(branch, child)

    roots, finals = dag(runbook_spec)
    if not status.get("runbookSpec") and live_spec:
        root.add(Text("not started: the Runbook's steps as they are now", style="dim"))
    for node in roots:
        add(root, node)
    if finals:
        final = root.add(Text("finally", style="bold"))
        for node in finals:
            add(final, node)
    if not roots and steps:  # no frozen spec yet: the steps as they come
        for name in steps:
            add(root, Node(name, {}, []))
    return root


def describe(body: Mapping[str, Any], events: Sequence[Mapping[str, Any]],
             now: datetime, live_spec: Mapping[str, Any] | None = None
             ) -> list[RenderableType]:
    """``kubectl runbook get``: header, tree, history, Events."""
    from rich.text import Text

    out: list[RenderableType] = []
    for key, value in header_lines(body, now):
        style = PHASE_STYLE.get(value, "") if key == "Phase" else ""
        out.append(Text.assemble((f"{key + ':':14}", "bold"), (value, style)))
    out += [Text(""), step_tree(body, now, live_spec)]
    status = body.get("status") or {}
    history = [h for h in status.get("history") or [] if isinstance(h, Mapping)]
    if history:
        dropped = status.get("historyDropped") or 0
        title = f"History ({len(history)}" + (f", {dropped} older dropped)" if dropped else ")")
        out += [Text(""), Text(title, style="bold")]
        out.append(Text("\n".join(
            "  ".join(str(p) for p in (h.get("time"), h.get("event"), h.get("step") or "-",
                                       _one_line(h.get("message"), 140)) if p is not None)
            for h in history)))
    out += [Text(""), Text("Events", style="bold")]
    if events:
        out.append(Text(event_table(events, now).text()))
    else:
        out.append(Text("<none>"))
    hints = approve_hints(body)
    if hints:
        out += [Text(""), *(Text(h, style="bold magenta") for h in hints)]
    return out


def event_table(events: Sequence[Mapping[str, Any]], now: datetime) -> Table:
    def when(e: Mapping[str, Any]) -> str:
        return str(e.get("lastTimestamp") or e.get("eventTime") or
                   _get(e, "metadata", "creationTimestamp") or "")

    rows = [[human_duration(span(when(e), None, now)), str(e.get("type") or ""),
             str(e.get("reason") or ""), _one_line(e.get("message"), 140)]
            for e in sorted(events, key=when)]
    return Table(["AGE", "TYPE", "REASON", "MESSAGE"], rows)


def progress_of(body: Mapping[str, Any]) -> tuple[int, int]:
    """(finished, total) steps from ``status.progress`` (``3/5``), else counted."""
    status = body.get("status") or {}
    done, _, total = str(status.get("progress") or "").partition("/")
    if done.isdigit() and total.isdigit():
        return int(done), int(total)
    steps = [s for s in (status.get("steps") or {}).values() if isinstance(s, Mapping)]
    return (sum(1 for s in steps if s.get("phase") in ("Succeeded", "Failed", "Skipped")),
            len(steps))


def live_view(body: Mapping[str, Any], now: datetime, elapsed: float) -> RenderableType:
    """The redrawn ``watch`` screen: the tree, a progress bar, the elapsed time, hints."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table as RichTable
    from rich.text import Text

    done, total = progress_of(body)
    bar = RichTable.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(total, 1), completed=done, width=30),
                Text(f"{done}/{total} steps"), Text(f"elapsed {human_duration(elapsed)}"))
    parts: list[RenderableType] = [step_tree(body, now), bar]
    parts += [Text(h, style="bold magenta") for h in approve_hints(body)]
    return Group(*parts)


def _get(value: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _one_line(text: Any, limit: int) -> str:
    if not text:
        return ""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
