"""``kubectl runbook graph``: a Runbook's or an execution's DAG as mermaid or dot.

Why it exists apart from ``views``: the two graph languages have their own escaping
rules and are drawn from the raw spec (dependencies, circuit fallbacks, the finally
barrier), nothing the tree and tables share. Plain functions from dicts to text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook_operator.cli.views import PHASE_FILL, _get, _one_line


def _edges(spec: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(from, to, label, kind) for dependencies, fallbacks and the finally barrier."""
    edges = []
    steps = [s for s in spec.get("steps") or [] if isinstance(s, Mapping)]
    for s in steps:
        when = _one_line(s.get("when"), 60) if s.get("when") else ""
        for dep in s.get("dependsOn") or []:
            edges.append((str(dep), str(s.get("name")), when, "dep"))
        fallback = _get(s, "circuit", "fallback")
        if fallback:
            edges.append((str(s.get("name")), str(fallback), "circuit open", "fallback"))
    depended = {str(d) for s in steps for d in s.get("dependsOn") or []}
    leaves = [str(s.get("name")) for s in steps if str(s.get("name")) not in depended]
    for f in spec.get("finally") or []:
        for leaf in leaves:
            edges.append((leaf, str(f.get("name")), "finally", "finally"))
    return edges


def _all_steps(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in [*(spec.get("steps") or []), *(spec.get("finally") or [])]
            if isinstance(s, Mapping)]


def graph_mermaid(spec: Mapping[str, Any], steps: Mapping[str, Any] | None = None) -> str:
    """A mermaid flowchart; with an execution's ``steps``, nodes are classed by phase."""
    ids = {str(s.get("name")): f"s{i}" for i, s in enumerate(_all_steps(spec))}
    lines = ["flowchart TD"]
    for s in _all_steps(spec):
        name = str(s.get("name"))
        kind = s.get("type") or "run"
        label = name if kind == "run" else f"{name} ({kind})"
        phase = _get(steps, name, "phase") if steps is not None else None
        if phase:
            label += f"<br/>{phase}"
        shape = ('{{"%s"}}' if kind == "approval" else '["%s"]') % _mermaid_text(label)
        lines.append(f"  {ids[name]}{shape}")
    for src, dst, label, kind in _edges(spec):
        if src not in ids or dst not in ids:
            continue
        arrow = {"dep": "-->", "fallback": "-.->", "finally": "-.->"}[kind]
        text = f'|"{_mermaid_text(label)}"|' if label else ""
        lines.append(f"  {ids[src]} {arrow}{text} {ids[dst]}")
    if steps is not None:
        used = sorted({str(_get(steps, n, "phase") or "Pending") for n in ids})
        for phase in used:
            members = [ids[n] for n in ids if str(_get(steps, n, "phase") or "Pending") == phase]
            lines.append(f"  classDef {phase} fill:{PHASE_FILL.get(phase, '#ffffff')}")
            lines.append(f"  class {','.join(members)} {phase}")
    return "\n".join(lines) + "\n"


def graph_dot(spec: Mapping[str, Any], steps: Mapping[str, Any] | None = None,
              title: str = "runbook") -> str:
    """A Graphviz digraph; with an execution's ``steps``, nodes are filled by phase."""
    lines = [f"digraph {_dot_id(title)} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fillcolor="#ffffff"];']
    for s in _all_steps(spec):
        name = str(s.get("name"))
        attrs = {"label": name}
        if s.get("type") == "approval":
            attrs["shape"] = "hexagon"
        if steps is not None:
            phase = str(_get(steps, name, "phase") or "Pending")
            attrs["label"] = f"{name}\\n{phase}"
            attrs["fillcolor"] = PHASE_FILL.get(phase, "#ffffff")
        lines.append(f"  {_dot_id(name)} [{_dot_attrs(attrs)}];")
    for src, dst, label, kind in _edges(spec):
        attrs = {"label": label} if label else {}
        if kind != "dep":
            attrs["style"] = "dashed"
        suffix = f" [{_dot_attrs(attrs)}]" if attrs else ""
        lines.append(f"  {_dot_id(src)} -> {_dot_id(dst)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_attrs(attrs: Mapping[str, str]) -> str:
    return ", ".join(f'{k}={_dot_id(v) if k != "label" else _dot_label(v)}'
                     for k, v in attrs.items())


def _dot_label(text: str) -> str:
    # keep the \n line break dot understands, escape quotes
    return '"' + text.replace('"', '\\"') + '"'


# --- helpers ---------------------------------------------------------------------------
