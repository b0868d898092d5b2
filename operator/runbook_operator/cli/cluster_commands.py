"""``kubectl runbook run | retry | approve | reject | cancel``: the on-call engineer's verbs.

What an SRE types at 3 a.m. instead of hand-writing YAML: start an execution
with typed parameters and watch it to the end, retry a failed run from where it
failed, decide an approval, cancel a run.
Parameter values are converted to the types the Runbook declares (``-p
replicas=3`` becomes the integer 3 only if ``replicas`` is an integer), so the
operator's own parameter check stays the one source of truth.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, TextIO

from runbook_operator.cli.inspect_commands import CommandError
from runbook_operator.cli.inspect_commands import connect_kubernetes as connect
from runbook_operator.cli.views import GROUP, VERSION

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_commands(sub: Any) -> None:
    """Register the cluster subcommands on the plugin's subparsers."""
    run = sub.add_parser("run", help="start an execution of a runbook (and --watch it)")
    run.add_argument("runbook")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a parameter (repeatable); converted to its declared type")
    run.add_argument("-w", "--watch", action="store_true",
                     help="follow the execution to the end (as `watch`); exit status 0 "
                          "Succeeded, 1 Failed, 2 Cancelled, 3 timeout")
    run.add_argument("--timeout", type=float, default=3600.0,
                     help="seconds to --watch before giving up (default 3600)")
    _common(run)
    run.set_defaults(handler=cmd_run)
    for verb in ("approve", "reject"):
        decide = sub.add_parser(verb, help=f"{verb} an approval step of an execution")
        decide.add_argument("execution")
        decide.add_argument("step")
        decide.add_argument("-m", "--message", help="a comment recorded with the decision")
        _common(decide)
        decide.set_defaults(handler=cmd_decide, decision="Approve" if verb == "approve"
                            else "Reject")
    retry = sub.add_parser(
        "retry", help="run a finished execution again, reusing the steps that succeeded",
        description="Create a new execution with spec.resumeFrom: the source's frozen spec "
        "and params run again; the operator reuses the results of the steps that "
        "succeeded and do not depend on the failed step (or on --from STEP), and runs "
        "the rest. Steps with side effects that run again do so again.")
    retry.add_argument("execution")
    retry.add_argument("--from", dest="from_step", metavar="STEP",
                       help="run again from this step (it and every step after it)")
    retry.add_argument("--name", help="the new execution's name (default: generated)")
    retry.add_argument("-w", "--watch", action="store_true",
                       help="follow the new execution to the end (as `run --watch`)")
    retry.add_argument("--timeout", type=float, default=3600.0,
                       help="seconds to --watch before giving up (default 3600)")
    _common(retry)
    retry.set_defaults(handler=cmd_retry)
    cancel = sub.add_parser("cancel", help="cancel an execution (finally steps still run)")
    cancel.add_argument("execution")
    _common(cancel)
    cancel.set_defaults(handler=cmd_cancel)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
    parser.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG)")


def convert(declared: dict[str, Any] | None, name: str, text: str) -> Any:
    """A command-line value as the type the runbook declares for it."""
    kind = (declared or {}).get("type", "string")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
        if kind == "boolean":
            if text.lower() in ("true", "yes", "1"):
                return True
            if text.lower() in ("false", "no", "0"):
                return False
            raise ValueError(text)
        if kind in ("array", "object"):
            return json.loads(text)
    except ValueError:
        raise CommandError(f"parameter {name!r} is {kind}; {text!r} is not") from None
    return text


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        api, ns = connect(args)
        try:
            runbook = api.get_namespaced_custom_object(GROUP, VERSION, ns, "runbooks",
                                                       args.runbook)
        except ApiException as exc:
            raise CommandError(f"runbook {args.runbook!r} in {ns!r}: {exc.reason}") from None
        declared = {p["name"]: p for p in (runbook.get("spec") or {}).get("params") or []}
        params: dict[str, Any] = {}
        for item in args.param:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise CommandError(f"-p {item!r}: expected NAME=VALUE")
            params[name] = convert(declared.get(name), name, value)
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
                "metadata": {"generateName": f"{args.runbook}-"},
                "spec": {"runbookRef": {"name": args.runbook}, "params": params,
                         "triggeredBy": {"kind": "Manual"}}}
        created = api.create_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions",
                                                      body)
    except CommandError as exc:
        print(f"kubectl-runbook: {exc}", file=err)
        return EXIT_USAGE
    return _created(created, args, ns, out)


def retry_body(source: dict[str, Any], from_step: str | None, name: str | None
               ) -> dict[str, Any]:
    """The new execution resuming ``source``: same runbook and params, ``spec.resumeFrom``.

    What is reused is the operator's decision (engine/resume.py), not the plugin's.
    """
    spec = source.get("spec") or {}
    runbook = (spec.get("runbookRef") or {}).get("name", "")
    resume: dict[str, Any] = {"execution": source["metadata"]["name"]}
    if from_step:
        resume["step"] = from_step
    new_spec: dict[str, Any] = {"runbookRef": {"name": runbook},
                                "params": spec.get("params") or {},
                                "triggeredBy": {"kind": "Manual"}, "resumeFrom": resume}
    if spec.get("severity"):
        new_spec["severity"] = spec["severity"]
    metadata = {"name": name} if name else {"generateName": f"{runbook}-"}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
            "metadata": metadata, "spec": new_spec}


def cmd_retry(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        api, ns = connect(args)
        try:
            source = api.get_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions",
                                                      args.execution)
        except ApiException as exc:
            raise CommandError(f"execution {args.execution!r} in {ns!r}: "
                               f"{api_message(exc)}") from None
        body = retry_body(source, args.from_step, args.name)
        try:
            created = api.create_namespaced_custom_object(GROUP, VERSION, ns,
                                                          "runbookexecutions", body)
        except ApiException as exc:
            raise CommandError(api_message(exc)) from None
    except CommandError as exc:
        print(f"kubectl-runbook: {exc}", file=err)
        return EXIT_USAGE
    return _created(created, args, ns, out)


def _created(created: dict[str, Any], args: argparse.Namespace, ns: str, out: TextIO) -> int:
    """Say what was created; with ``--watch``, follow it (exit status = its outcome)."""
    from runbook_operator.cli.inspect_commands import watch

    name = created["metadata"]["name"]
    print(f"runbookexecution.{GROUP}/{name} created", file=out)
    if not args.watch:
        return EXIT_OK
    import kubernetes

    from runbook_operator.cli.rest import from_configuration

    # the kubeconfig as kubernetes loaded it above, for the watch API client
    cluster = from_configuration(kubernetes.client.Configuration.get_default_copy(), ns)
    return watch(cluster, ns, name, args.timeout, out)


def whoami() -> str:
    """The caller's user name as the API server authenticates it (SelfSubjectReview).

    An approval records this, never a name typed on the command line: admission
    refuses an approval whose ``by`` is not the requesting user.
    """
    import kubernetes

    review = kubernetes.client.AuthenticationV1Api().create_self_subject_review(
        kubernetes.client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1",
                                              kind="SelfSubjectReview"))
    username = review.status.user_info.username if review.status and \
        review.status.user_info else None
    if not username:
        raise CommandError("the API server did not say who you are (SelfSubjectReview "
                           "returned no user name); check your kubeconfig's credentials")
    return str(username)


def api_message(exc: ApiException) -> str:
    """The API server's own explanation of a refused request (admission's message)."""
    try:
        message = json.loads(exc.body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"{exc.status} {exc.reason}")


def cmd_decide(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        api, ns = connect(args)
        body = api.get_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions",
                                                args.execution)
        by = whoami()
    except CommandError as exc:
        print(f"kubectl-runbook: {exc}", file=err)
        return EXIT_USAGE
    except ApiException as exc:
        print(f"kubectl-runbook: {api_message(exc)}", file=err)
        return EXIT_USAGE
    steps = ((body.get("status") or {}).get("steps") or {})
    if steps.get(args.step, {}).get("phase") != "WaitingForApproval":
        waiting = [n for n, s in steps.items() if s.get("phase") == "WaitingForApproval"]
        print(f"kubectl-runbook: step {args.step!r} is not waiting for approval "
              f"(waiting: {', '.join(waiting) or 'none'})", file=err)
        return EXIT_USAGE
    done = "approved" if args.decision == "Approve" else "rejected"
    decision = {"step": args.step, "decision": args.decision, "by": by}
    if args.message:
        decision["comment"] = args.message
    approvals = [*(body["spec"].get("approvals") or []), decision]
    patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
             "spec": {"approvals": approvals}}
    try:
        api.patch_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions",
                                           args.execution, patch)
    except ApiException as exc:
        print(f"kubectl-runbook: {args.execution}: step {args.step} not {done}: "
              f"{api_message(exc)}", file=err)
        return EXIT_FAILED
    print(f"{args.execution}: step {args.step} {done} by {by}", file=out)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        api, ns = connect(args)
        api.patch_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions",
                                           args.execution, {"spec": {"cancel": True}})
    except (CommandError, ApiException) as exc:
        print(f"kubectl-runbook: {exc}", file=err)
        return EXIT_USAGE
    print(f"{args.execution}: cancel requested", file=out)
    return EXIT_OK
