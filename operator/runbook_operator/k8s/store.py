"""What the operator has seen: executions, runbooks, and step Jobs and pods by execution.

Filled from kopf's watch events (no polling LISTs) and from the objects the
operator's own writes (and direct reads) return, so a pass never plans from a
status older than one this process wrote or read itself.

``resourceVersion`` is opaque: it is compared for equality only, never ordered.
What orders versions is the watch: it delivers every version of an object in the
order they were written. So a body from a write or a read is kept until the watch
delivers that same version (everything the watch brings before it is older), or a
newer generation (a spec change, which no write of ours makes). The last versions
the watch delivered are remembered per execution, so a body the watch already
passed is recognised as not newer, and :meth:`Store.caught_up` tells whether the
watch has reached a fresh listing.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict, deque
from typing import Any

from runbook_operator.api.execution import FINISHED_EXECUTION_PHASES
from runbook_operator.engine.staging import GATE
from runbook_operator.k8s.jobs import (
    ANNOTATION_EXECUTION,
    LABEL_EXECUTION,
    controlled_by,
    is_staged,
    pod_gated,
)

Key = tuple[str, str]
Body = dict[str, Any]


def key_of(body: Body) -> Key:
    meta = body.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def slim_job(job: Body) -> Body:
    """The parts of a Job the planner reads: a few hundred bytes instead of kilobytes."""
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    slim = {
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "labels", "ownerReferences") if k in meta},
        "status": {k: status[k] for k in ("conditions", "startTime", "completionTime")
                   if k in status},
    }
    if is_staged(job):
        slim["spec"] = {"template": {"spec": {"schedulingGates": [{"name": GATE}]}}}
    return slim


def slim_pod(pod: Body) -> Body:
    """The parts of a step pod the planner reads: its phase, the step's termination, and
    whether it is being deleted (a killed pod's ending is not the attempt's outcome)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "uid", "deletionTimestamp",
                                          "ownerReferences") if k in meta},
        "spec": {"schedulingGates": [{"name": GATE}]} if pod_gated(pod) else {},
        "status": {"phase": status.get("phase"), "startTime": status.get("startTime"),
                   "containerStatuses": [
                       {"name": cs.get("name"), "state": cs.get("state")}
                       for cs in status.get("containerStatuses") or []
                       if cs.get("name") == "step"]},
    }


FINISHED = FINISHED_EXECUTION_PHASES
SEEN_VERSIONS = 16
SEEN_DELETED = 10_000
"""Versions of an execution the watch delivered that are remembered (see the docstring)."""


def slim_finished_execution(body: Body) -> Body:
    """What is read of a finished execution: enough for retention, metrics and identity.

    A finished execution is never planned again, but it stays in the store until it
    is deleted (retention counts it, the metrics gauges skip it). Its frozen runbook
    spec, step statuses and history are most of its size: a thousand finished runs
    would otherwise hold tens of megabytes nobody reads.
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "generation", "creationTimestamp",
                                          "deletionTimestamp") if k in meta},
        "spec": {**{k: spec[k] for k in ("runbookRef",) if k in spec},
                 **_trigger_identity(spec)},
        "status": {k: status[k] for k in ("phase", "reason", "startedAt", "finishedAt",
                                          "concurrencyKey", "traceID") if k in status},
    }


def _trigger_identity(spec: Body) -> Body:
    """What says which alert occurrence started a run (not its labels, which may be
    large): the receiver tells its own runs from a same-named object by it."""
    triggered = spec.get("triggeredBy") if isinstance(spec, dict) else None
    if not isinstance(triggered, dict):
        return {}
    alert = triggered.get("alert")
    identity: Body = {"kind": triggered.get("kind")}
    if isinstance(alert, dict):
        identity["alert"] = {k: alert[k] for k in ("fingerprint", "startsAt") if k in alert}
    return {"triggeredBy": identity}


def _version(body: Body | None) -> str:
    return str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")


def _generation(body: Body | None) -> int:
    generation = ((body or {}).get("metadata") or {}).get("generation")
    return generation if isinstance(generation, int) else 0


class Store:
    def __init__(self) -> None:
        self.executions: dict[Key, Body] = {}
        self.runbooks: dict[Key, Body] = {}
        self.jobs: dict[Key, dict[str, Body]] = defaultdict(dict)
        self.pods: dict[Key, dict[str, Body]] = defaultdict(dict)
        """Pods by execution, then by the name of their Job."""
        self._pending: dict[Key, str] = {}
        """Executions held from a write or read, by the version the watch has yet to bring."""
        self._seen: dict[Key, deque[str]] = {}
        """The last versions of each execution the watch delivered."""
        self._runbooks_seen: dict[Key, deque[str]] = {}
        self._deleted: OrderedDict[Key, None] = OrderedDict()
        """Executions whose deletion the watch delivered (the latest, bounded)."""
        self._shadow: dict[Key, Body] = {}
        """The watch's latest body of an execution held back by ``_pending``."""
        self.awaiting: set[Key] = set()
        """(namespace, Job name) of staged Jobs whose gate is to be lifted once their pod
        is seen (``JobActions.lift_gate``)."""

    def put_execution(self, body: Body, deleted: bool = False) -> Key:
        """An execution from the watch (in order: each event is newer than the last)."""
        key = key_of(body)
        if deleted:
            self.executions.pop(key, None)
            self.jobs.pop(key, None)
            self.pods.pop(key, None)
            self._pending.pop(key, None)
            self._shadow.pop(key, None)
            self._seen.pop(key, None)
            self._deleted[key] = None
            while len(self._deleted) > SEEN_DELETED:
                self._deleted.popitem(last=False)
            return key
        version = _version(body)
        self._seen.setdefault(key, deque(maxlen=SEEN_VERSIONS)).append(version)
        pending = self._pending.get(key)
        if pending is not None:
            if version != pending and \
                    _generation(body) <= _generation(self.executions.get(key)):
                self._shadow[key] = body  # older than the body a write or read brought
                return key
            del self._pending[key]
            self._shadow.pop(key, None)
        self._keep(key, body)
        return key

    def put_fresh_execution(self, body: Body) -> Key:
        """An execution as a write of ours, or a direct read, returned it."""
        key = key_of(body)
        version = _version(body)
        if version and version in self._seen.get(key, ()):
            # The watch reached this version already: what it brought last is as new.
            self._pending.pop(key, None)
            latest = self._shadow.pop(key, None)
            if latest is not None:
                self._keep(key, latest)
            elif key not in self.executions:
                self._keep(key, body)
            return key
        if version:
            self._pending[key] = version
        self._shadow.pop(key, None)
        self._keep(key, body)
        return key

    def caught_up(self, key: Key, version: str) -> bool:
        """Whether the watch has delivered ``version`` of the execution (then what is
        stored is that version or newer), or its deletion."""
        return version in self._seen.get(key, ()) or \
            (key in self._deleted and key not in self.executions)

    def _keep(self, key: Key, body: Body) -> None:
        finished = (body.get("status") or {}).get("phase") in FINISHED
        self.executions[key] = slim_finished_execution(body) if finished else body

    def put_runbook(self, body: Body, deleted: bool = False) -> Key:
        """A Runbook from the watch (in order: each event is newer than the last)."""
        key = key_of(body)
        if deleted:
            self.runbooks.pop(key, None)
            self._runbooks_seen[key] = deque(["<deleted>"], maxlen=SEEN_VERSIONS)
        else:
            self.runbooks[key] = body
            self._runbooks_seen.setdefault(key, deque(maxlen=SEEN_VERSIONS)).append(
                _version(body))
        return key

    def runbook_seen(self, key: Key, version: str) -> bool:
        """Whether the watch has delivered ``version`` of the Runbook (then the stored
        body is that version or a newer one), or its deletion since."""
        seen = self._runbooks_seen.get(key)
        return seen is not None and (version in seen or seen[-1] == "<deleted>")

    @staticmethod
    def owner_key(body: Body) -> Key | None:
        meta = body.get("metadata") or {}
        # The annotation holds the full name; the label may be shortened with a hash.
        execution = (meta.get("annotations") or {}).get(ANNOTATION_EXECUTION) or \
            (meta.get("labels") or {}).get(LABEL_EXECUTION)
        return (meta.get("namespace", ""), execution) if execution else None

    def finished(self, key: Key) -> bool:
        phase = ((self.executions.get(key) or {}).get("status") or {}).get("phase")
        return phase in FINISHED

    def put_job(self, body: Body, deleted: bool = False) -> Key | None:
        key = self.owner_key(body)
        if key is None:
            return None
        name = body["metadata"]["name"]
        if deleted:
            self.jobs.get(key, {}).pop(name, None)
        elif self.finished(key):
            pass  # nothing reads the Jobs of a finished execution again
        else:  # the watch brings a Job's versions in order: the last one is the newest
            self.jobs[key][name] = slim_job(body)
        return key

    def put_pod(self, body: Body, deleted: bool = False) -> Key | None:
        key = self.owner_key(body)
        meta = body.get("metadata") or {}
        job = (meta.get("labels") or {}).get("job-name") or \
            (meta.get("labels") or {}).get("batch.kubernetes.io/job-name")
        if key is None or not job:
            return None
        if self.finished(key):
            return key
        job_uid = ((self.jobs.get(key, {}).get(job) or {}).get("metadata") or {}).get("uid")
        if job_uid and not controlled_by(body, job_uid):
            return key  # not the Job's pod: a copy of its labels must not replace it
        # A deleted pod is kept: its last state may hold the exit code and message the
        # planner still needs (the Job controller deletes pods of timed-out Jobs).
        if not deleted or job not in self.pods[key]:
            self.pods[key][job] = slim_pod(body)
        return key

    def awaited(self, body: Body) -> bool:
        """Whether ``body`` is the pod of a staged Job waiting for it to be lifted."""
        meta = body.get("metadata") or {}
        job = (meta.get("labels") or {}).get("batch.kubernetes.io/job-name") or \
            (meta.get("labels") or {}).get("job-name")
        entry = (meta.get("namespace", ""), job or "")
        if entry in self.awaiting:
            self.awaiting.discard(entry)
            return True
        return False

    def forget_children(self, key: Key) -> None:
        """Drop the Jobs and pods of a finished execution: nothing will read them again."""
        self.jobs.pop(key, None)
        self.pods.pop(key, None)
