"""``kubectl runbook list | get | watch | logs | graph | circuits | circuit``.

Why it exists: at 3 a.m. the on-call engineer needs to see what a run did without
reading ``-o yaml``: which step failed, after how many attempts, through which
circuit, who approved what; and to follow a run live. These are the I/O halves
of the commands; what they print is computed by ``cli.views`` from plain dicts.
They talk to the API server through ``cli.rest`` (the standard library), not the
kubernetes client, and import rich only when they draw: ``--help``, completion
and ``list`` must start fast.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from runbook_operator.cli import graphs, rest, views
from runbook_operator.cli.rest import ApiError, Cluster, custom_path

if TYPE_CHECKING:
    from rich.console import Console

EXECUTIONS = "runbookexecutions"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MODES = {"reset": "Normal", "force-open": "ForcedOpen", "disable": "Disabled",
         "metrics-only": "MetricsOnly"}


class CommandError(Exception):
    """A failure to report in one line (exit status 2)."""


def add_commands(sub: Any) -> None:
    """Register the inspecting subcommands on the plugin's subparsers."""
    ls = sub.add_parser("list", aliases=["ls"], help="list executions")
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    ls.add_argument("--runbook", help="only executions of this runbook")
    ls.add_argument("--phase", help="only executions in this phase (e.g. Failed)")
    ls.add_argument("-o", "--output", choices=["wide", "json", "yaml"])
    _common(ls)
    ls.set_defaults(handler=cmd_list)

    get = sub.add_parser("get", aliases=["describe"],
                         help="an execution's step tree, history and Events")
    get.add_argument("execution")
    get.add_argument("-o", "--output", choices=["json", "yaml"])
    _common(get)
    get.set_defaults(handler=cmd_get)

    watch = sub.add_parser("watch", help="follow an execution live; exit status = outcome")
    watch.add_argument("execution")
    watch.add_argument("--timeout", type=float, default=3600.0,
                       help="seconds before giving up with exit status 3 (default 3600)")
    _common(watch)
    watch.set_defaults(handler=cmd_watch)

    logs = sub.add_parser("logs", help="the logs of a step's pods, prefixed [step/attempt]")
    logs.add_argument("execution")
    logs.add_argument("step", nargs="?")
    logs.add_argument("--attempt", type=int, help="only this attempt (default: all)")
    logs.add_argument("-f", "--follow", action="store_true")
    _common(logs)
    logs.set_defaults(handler=cmd_logs)

    graph = sub.add_parser("graph", help="the DAG of a runbook or an execution")
    graph.add_argument("name", help="a RunbookExecution, else a Runbook, of that name")
    graph.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    _common(graph)
    graph.set_defaults(handler=cmd_graph)

    circuits = sub.add_parser("circuits", help="every circuit of every CircuitPolicy")
    circuits.add_argument("-A", "--all-namespaces", action="store_true")
    _common(circuits)
    circuits.set_defaults(handler=cmd_circuits)

    circuit = sub.add_parser("circuit", help="set a CircuitPolicy's manual mode")
    circuit.add_argument("action", choices=list(MODES),
                         help="reset: Normal; force-open: ForcedOpen; disable: Disabled; "
                              "metrics-only: MetricsOnly")
    circuit.add_argument("policy")
    circuit.add_argument("key", nargs="?", help="not supported: modes are per policy")
    _common(circuit)
    circuit.set_defaults(handler=cmd_circuit)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
    parser.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG)")


def connect(args: argparse.Namespace) -> tuple[Cluster, str]:
    """The API server of the kubeconfig's current context and the namespace to use."""
    try:
        cluster = rest.load(args.kubeconfig, args.namespace)
    except rest.ConfigError as exc:
        raise CommandError(str(exc)) from None
    return cluster, cluster.namespace


def connect_kubernetes(args: argparse.Namespace) -> tuple[Any, str]:
    """A kubernetes CustomObjectsApi and the namespace (run, approve, cancel use it)."""
    import kubernetes

    try:
        kubernetes.config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
        _, context = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig)
    except Exception as exc:
        raise CommandError(f"no usable kubeconfig: {exc}") from None
    namespace = args.namespace or (context or {}).get("context", {}).get("namespace") or "default"
    return kubernetes.client.CustomObjectsApi(), namespace


def guarded(run: Callable[[argparse.Namespace, TextIO, TextIO], int]
            ) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    """Report a CommandError or an API error in one line, exit status 2."""
    def handler(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        try:
            return run(args, out, err)
        except CommandError as exc:
            print(f"kubectl-runbook: {exc}", file=err)
        except ApiError as exc:
            print(f"kubectl-runbook: {exc.message}", file=err)
        return EXIT_USAGE
    handler.__doc__ = run.__doc__
    return handler


def make_console(out: TextIO) -> Console:
    """Colour and redraw only on a terminal; plain text when piped or NO_COLOR is set."""
    from rich.console import Console

    terminal = out.isatty()
    return Console(file=out, highlight=False, soft_wrap=not terminal,
                   width=None if terminal else 200)


def now() -> datetime:
    return datetime.now(UTC)


def _dump(obj: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        json.dump(obj, out, indent=2, sort_keys=False)
        out.write("\n")
    else:
        import yaml

        yaml.safe_dump(obj, out, sort_keys=False)


def _get_execution(api: Cluster, ns: str, name: str) -> dict[str, Any]:
    try:
        return api.get(custom_path(EXECUTIONS, ns, name))
    except ApiError as exc:
        if exc.status == 404:
            raise CommandError(f"execution {name!r} not found in namespace {ns!r}") from None
        raise


# --- list --------------------------------------------------------------------------------


@guarded
def cmd_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    api, ns = connect(args)
    selector = None
    if args.runbook:
        from runbook_operator.engine.names import label_value

        selector = f"runbooks.dev/runbook={label_value(args.runbook)}"
    result = api.get(custom_path(EXECUTIONS, None if args.all_namespaces else ns),
                     labelSelector=selector)
    items = filter_executions(result.get("items") or [], args.runbook, args.phase)
    if args.output in ("json", "yaml"):
        _dump({"apiVersion": "v1", "kind": "List", "items": items}, args.output, out)
        return EXIT_OK
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {ns}"
        print(f"No executions found in {where}.", file=err)
        return EXIT_OK
    print(views.execution_table(items, now(), all_namespaces=args.all_namespaces,
                                wide=args.output == "wide").text(), file=out)
    return EXIT_OK


def filter_executions(items: Iterable[Mapping[str, Any]], runbook: str | None,
                      phase: str | None) -> list[dict[str, Any]]:
    """By runbookRef (executions created before the label existed lack it) and phase."""
    kept = []
    for body in items:
        if runbook and views._get(body, "spec", "runbookRef", "name") != runbook:
            continue
        if phase and str(views._get(body, "status", "phase") or "Pending").lower() \
                != phase.lower():
            continue
        kept.append(dict(body))
    return kept


# --- get -----------------------------------------------------------------------------------


@guarded
def cmd_get(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    api, ns = connect(args)
    body = _get_execution(api, ns, args.execution)
    if args.output:
        _dump(body, args.output, out)
        return EXIT_OK
    events: list[dict[str, Any]] = []
    try:
        events = api.get(f"/api/v1/namespaces/{ns}/events",
                         fieldSelector=f"involvedObject.name={args.execution},"
                                       "involvedObject.kind=RunbookExecution").get("items") or []
    except ApiError as exc:
        print(f"kubectl-runbook: Events not readable: {exc.message}", file=err)
    live_spec = None
    if not views._get(body, "status", "runbookSpec"):  # not started: draw the Runbook's DAG
        try:
            ref = str(views._get(body, "spec", "runbookRef", "name"))
            live_spec = api.get(custom_path("runbooks", ns, ref)).get("spec")
        except ApiError:
            live_spec = None
    console = make_console(out)
    for part in views.describe(body, events, now(), live_spec):
        console.print(part)
    return EXIT_OK


# --- watch ---------------------------------------------------------------------------------


@guarded
def cmd_watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    api, ns = connect(args)
    _get_execution(api, ns, args.execution)  # a clear "not found" before watching
    return watch(api, ns, args.execution, args.timeout, out)


def execution_events(api: Cluster, namespace: str, name: str, deadline: float
                     ) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, body) of one execution from the watch API until ``deadline``.

    Reopened where it left off when the server ends a watch; from scratch after
    410 Gone (the first events of a fresh watch are the object as it is).
    """
    version: str | None = None
    while time.monotonic() < deadline:
        seconds = max(1, min(300, int(deadline - time.monotonic()) + 1))
        opened = time.monotonic()
        try:
            for line in api.lines(custom_path(EXECUTIONS, namespace), timeout=seconds + 30,
                                  watch="1", fieldSelector=f"metadata.name={name}",
                                  timeoutSeconds=seconds, resourceVersion=version):
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":  # 410 Gone: our version is too old
                    version = None
                    break
                version = views._get(obj, "metadata", "resourceVersion") or version
                yield str(event.get("type")), obj
                if time.monotonic() >= deadline:
                    return
        except ApiError as exc:
            if exc.status != 410:
                raise
            version = None
        if time.monotonic() - opened < 1:  # a server that ends watches at once: no busy loop
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def watch(api: Cluster | None, namespace: str, name: str, timeout: float, out: TextIO,
          events: Iterable[tuple[str, dict[str, Any]]] | None = None) -> int:
    """Follow one execution to its end; the exit status is its outcome.

    On a terminal the step tree is redrawn in place (rich Live, refreshed 4 times a
    second so the elapsed time moves between events); otherwise one plain line per
    change. 0 Succeeded, 1 Failed (or deleted), 2 Cancelled, 3 still running at
    ``timeout``.
    """
    started = time.monotonic()
    if events is None:
        assert api is not None
        events = execution_events(api, namespace, name, started + timeout)
    stream = events
    if out.isatty():
        return _watch_live(name, stream, started, timeout, out)
    return watch_plain(name, stream, timeout, out)


def watch_plain(name: str, stream: Iterable[tuple[str, dict[str, Any]]], timeout: float,
                out: TextIO) -> int:
    last: dict[str, Any] | None = None
    hinted: set[str] = set()
    for kind, body in stream:
        if kind == "DELETED":
            print(f"{name}: deleted", file=out, flush=True)
            return views.EXIT_FAILED
        for line in views.step_transitions(last, body, now()):
            print(line, file=out, flush=True)
        for hint in views.approve_hints(body):
            if hint not in hinted:
                hinted.add(hint)
                print(hint, file=out, flush=True)
        last = body
        phase = views._get(body, "status", "phase")
        if phase in views.FINISHED:
            return views.exit_code_of(phase)
    phase = views._get(last, "status", "phase") or "Pending"
    print(f"{name}: still {phase} after {timeout:.0f}s", file=out, flush=True)
    return views.EXIT_TIMEOUT


def _watch_live(name: str, stream: Iterable[tuple[str, dict[str, Any]]], started: float,
                timeout: float, out: TextIO) -> int:
    from rich.live import Live
    from rich.text import Text

    console = make_console(out)
    current: dict[str, Any] = {"metadata": {"name": name}}

    def screen() -> Any:
        return views.live_view(current, now(), time.monotonic() - started)

    with Live(get_renderable=screen, console=console, refresh_per_second=4):
        for kind, body in stream:
            if kind == "DELETED":
                console.print(Text(f"{name}: deleted", style="bold red"))
                return views.EXIT_FAILED
            current = body
            phase = views._get(body, "status", "phase")
            if phase in views.FINISHED:
                break
    phase = views._get(current, "status", "phase")
    if phase in views.FINISHED:
        message = views._get(current, "status", "message") or ""
        console.print(Text(f"{name}: {phase} {message}".rstrip(),
                           style=views.PHASE_STYLE.get(str(phase), "")))
        return views.exit_code_of(phase)
    console.print(f"{name}: still {phase or 'Pending'} after {timeout:.0f}s")
    return views.EXIT_TIMEOUT


# --- logs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str
    step: str
    attempt: int


class LogSource(Protocol):
    """Where pod logs come from: the API server, or a stand-in in tests."""

    def pods(self, execution: str, step: str, attempt: int) -> list[Pod]: ...

    def lines(self, pod: Pod, follow: bool) -> Iterator[str]: ...


class ApiLogs:
    """Pods by the operator's labels; logs through the API server (``pods/log``)."""

    def __init__(self, api: Cluster, namespace: str) -> None:
        self.api = api
        self.base = f"/api/v1/namespaces/{namespace}/pods"

    def pods(self, execution: str, step: str, attempt: int) -> list[Pod]:
        from runbook_operator.engine.names import label_value

        selector = (f"runbooks.dev/execution={label_value(execution)},"
                    f"runbooks.dev/step={step},runbooks.dev/attempt={attempt}")
        found = self.api.get(self.base, labelSelector=selector).get("items") or []
        found.sort(key=lambda p: str(views._get(p, "metadata", "creationTimestamp")))
        return [Pod(str(p["metadata"]["name"]), step, attempt) for p in found]

    def lines(self, pod: Pod, follow: bool) -> Iterator[str]:
        path = f"{self.base}/{pod.name}/log"
        if not follow:
            text = self.api.open("GET", path).read().decode("utf-8", "replace")
            yield from text.splitlines()
            return
        for raw in self.api.lines(path, timeout=24 * 3600, follow="true"):
            yield raw.decode("utf-8", "replace").rstrip("\n")


@guarded
def cmd_logs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    api, ns = connect(args)
    body = _get_execution(api, ns, args.execution)
    return print_logs(body, args.step, args.attempt, args.follow, ApiLogs(api, ns), out, err)


def print_logs(body: Mapping[str, Any], step: str | None, attempt: int | None, follow: bool,
               source: LogSource, out: TextIO, err: TextIO) -> int:
    """Every selected attempt's pod logs, each line prefixed ``[step/attempt]``.

    A step that never ran, an approval or wait step, and a pod that is gone get one
    line on stderr each. Exit 0 if any log was read, 1 if none, 2 for an unknown step.
    """
    name = str(views._get(body, "metadata", "name"))
    steps: Mapping[str, Any] = views._get(body, "status", "steps") or {}
    kinds = {str(s.get("name")): str(s.get("type") or "run")
             for s in (views._get(body, "status", "runbookSpec", "steps") or []) +
             (views._get(body, "status", "runbookSpec", "finally") or [])
             if isinstance(s, Mapping)}
    if step is not None and step not in steps and step not in kinds:
        known = ", ".join(sorted(set(steps) | set(kinds))) or "none"
        print(f"kubectl-runbook: execution {name} has no step {step!r} (steps: {known})",
              file=err)
        return EXIT_USAGE
    chosen = [step] if step else sorted(
        (s for s in steps if (steps[s] or {}).get("attempts")),
        key=lambda s: str((steps[s] or {}).get("startedAt") or ""))
    if not chosen:
        print(f"kubectl-runbook: no step of {name} has run yet", file=err)
        return EXIT_FAILED
    read_any = False
    for current in chosen:
        st = steps.get(current) or {}
        attempts = int(st.get("attempts") or 0)
        if kinds.get(current, "run") != "run":
            article = "an" if kinds[current][0] in "aeiou" else "a"
            print(f"{current}: {article} {kinds[current]} step runs in the operator: no pod, "
                  "no logs", file=err)
            continue
        if attempts == 0:
            why = ": ".join(str(p) for p in (st.get("phase") or "Pending", st.get("reason"))
                            if p)
            print(f"{current}: never ran ({why}): no pod, no logs", file=err)
            continue
        if attempt is not None and not 1 <= attempt <= attempts:
            print(f"{current}: no attempt {attempt} (it has {attempts})", file=err)
            continue
        for n in [attempt] if attempt is not None else range(1, attempts + 1):
            pods = source.pods(name, current, n)
            if not pods:
                print(f"{current}/{n}: the pod is gone (deleted with its Job, or never "
                      f"created); its exit code and outputs are in `kubectl runbook get "
                      f"{name}`", file=err)
                continue
            for pod in pods:
                prefix = f"[{current}/{n}] "
                try:
                    for line in pod_lines(source, pod, follow):
                        print(prefix + line, file=out, flush=follow)
                        read_any = True
                except LogsUnavailable as exc:
                    print(f"{current}/{n}: pod {pod.name}: logs unavailable: {exc}", file=err)
    return EXIT_OK if read_any else EXIT_FAILED


class LogsUnavailable(Exception):
    """The API server has no logs for a pod (gone, not started, or no kubelet to ask)."""


def pod_lines(source: LogSource, pod: Pod, follow: bool) -> Iterator[str]:
    try:
        yield from source.lines(pod, follow)
    except LogsUnavailable:
        raise
    except Exception as exc:
        raise LogsUnavailable(exc.message if isinstance(exc, ApiError) else
                              f"{type(exc).__name__}: {exc}") from None


# --- graph ---------------------------------------------------------------------------------


@guarded
def cmd_graph(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    api, ns = connect(args)
    steps: dict[str, Any] | None
    try:
        body = api.get(custom_path(EXECUTIONS, ns, args.name))
        spec = views._get(body, "status", "runbookSpec")
        steps = views._get(body, "status", "steps") or {}
        if not spec:  # not started yet: the live Runbook's DAG, all Pending
            ref = views._get(body, "spec", "runbookRef", "name")
            spec = api.get(custom_path("runbooks", ns, ref))["spec"]
    except ApiError as exc:
        if exc.status != 404:
            raise
        try:
            spec = api.get(custom_path("runbooks", ns, args.name))["spec"]
        except ApiError as inner:
            if inner.status == 404:
                raise CommandError(f"no execution or runbook {args.name!r} in namespace "
                                   f"{ns!r}") from None
            raise
        steps = None
    if args.format == "dot":
        out.write(graphs.graph_dot(spec, steps, args.name))
    else:
        out.write(graphs.graph_mermaid(spec, steps))
    return EXIT_OK


# --- circuits ------------------------------------------------------------------------------


@guarded
def cmd_circuits(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    api, ns = connect(args)
    items = api.get(custom_path("circuitpolicies",
                                None if args.all_namespaces else ns)).get("items") or []
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {ns}"
        print(f"No CircuitPolicies found in {where}.", file=err)
        return EXIT_OK
    print(views.circuit_table(items, now(), all_namespaces=args.all_namespaces).text(),
          file=out)
    return EXIT_OK


@guarded
def cmd_circuit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.key:
        raise CommandError(
            f"modes apply to the whole policy {args.policy!r}, not to one key: run "
            f"`kubectl runbook circuit {args.action} {args.policy}` (it affects every key)")
    api, ns = connect(args)
    mode = MODES[args.action]
    api.merge_patch(custom_path("circuitpolicies", ns, args.policy), {"spec": {"mode": mode}})
    note = {"Normal": " (an Open circuit still waits out its openDuration)",
            "ForcedOpen": ": every guarded step is rejected",
            "Disabled": ": every guarded call is admitted, nothing recorded",
            "MetricsOnly": ": calls are recorded, never rejected"}[mode]
    print(f"circuitpolicy.{views.GROUP}/{args.policy} mode {mode}{note}", file=out)
    return EXIT_OK
