"""The operator process: kopf embedded in our own asyncio loop, with its handlers.

One process serves kopf's watches, the work queue's workers, ``/healthz`` and
``/metrics``, the scheduler of Runbook schedules, and on a port of its own the
Alertmanager receiver, in one event loop; reconciles run in worker threads because
the kubernetes client blocks. With ``--leader-elect`` several replicas run: all of
them watch and serve, and only the holder of the Lease acts (workers, Runbook
status, circuits, schedules, notifications; see :func:`lead`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import kubernetes
from aiohttp import web

from runbook_operator.api.common import GROUP, VERSION
from runbook_operator.api.execution import FINISHED_EXECUTION_PHASES
from runbook_operator.controllers import circuits, runbooks, watches
from runbook_operator.controllers.circuits import CircuitRegistry
from runbook_operator.controllers.executions import PLURAL, ExecutionReconciler
from runbook_operator.controllers.leader import LeaderElector
from runbook_operator.controllers.takeover import Caches, sync_caches, take_over
from runbook_operator.controllers.workqueue import WorkQueue
from runbook_operator.engine import failures
from runbook_operator.engine.params import secret_literals as param_secret_literals
from runbook_operator.engine.validation import validate_spec
from runbook_operator.k8s.client import (
    Clients,
    NotLeading,
    is_transient,
    load_config,
    make_clients,
    observe_api_errors,
)
from runbook_operator.k8s.events import EventPoster
from runbook_operator.k8s.jobs import (
    LABEL_EXECUTION,
    job_finished,
    pod_outcome,
    pod_terminated,
)
from runbook_operator.k8s.store import Key, Store
from runbook_operator.notify.deliver import Notifier
from runbook_operator.observability.logs import log_context
from runbook_operator.observability.metrics import Metrics, metrics_handler
from runbook_operator.observability.secrets import SECRETS
from runbook_operator.observability.tracing import configure_tracing
from runbook_operator.settings import OperatorSettings
from runbook_operator.triggers.alertmanager import AlertReceiver, ReceiverSettings, start_receiver
from runbook_operator.triggers.index import TriggerIndex
from runbook_operator.triggers.schedule import Scheduler

log = logging.getLogger("runbook_operator")

SWITCH_INTERVAL = 0.0005
"""Seconds a thread holds the GIL while another waits for it (see :func:`serve`)."""


class ClusterUnreachable(Exception):
    """No usable Kubernetes API: no config, or the server does not answer."""


def check_cluster(settings: OperatorSettings) -> kubernetes.client.Configuration:
    """Load the config and ask the server its version, failing fast with a reason."""
    try:
        configuration = load_config(settings.kubeconfig)
    except Exception as exc:
        raise ClusterUnreachable(f"no cluster configuration ({exc})") from None
    api = kubernetes.client.VersionApi(kubernetes.client.ApiClient(configuration))
    try:
        api.get_code(_request_timeout=5)
    except Exception as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ClusterUnreachable(f"{configuration.host} did not answer ({reason})") from None
    return configuration


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff-base storage, for an operator without change handlers.

    kopf builds every event's "essence" (a deep copy of the whole body, status
    included, before it drops the status) to detect create/update/delete causes.
    Only ``on.event`` handlers are registered here, so no cause needs it: building
    nothing saves a deep copy of every execution, Job and pod event (10 % of the
    operator's busy samples in the engine benchmark).
    """

    def build(  # type: ignore[override]  # None: kopf then skips the diff
            self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence | None:
        return None

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch,
              essence: kopf.BodyEssence) -> None:
        pass


class Operator:
    """The pieces one operator process shares: clients, store, queue, reconcilers."""

    def __init__(self, clients: Clients, settings: OperatorSettings,
                 acting: Clients | None = None) -> None:
        """``clients`` serve what every replica does (election, alert receiver, reads);
        ``acting`` (fenced by :meth:`may_act`, see :func:`serve`) what only the leader
        does. Without ``acting``, ``clients`` serve both."""
        self.watching = clients
        clients = acting or clients
        self.clients = clients
        self.settings = settings
        self.store = Store()
        self.queue: WorkQueue[Key] = WorkQueue()
        self.events = EventPoster(clients, enabled=settings.events)
        self.metrics = Metrics()
        observe_api_errors(self.metrics.api_error)
        self.tracer = configure_tracing()
        self.circuits = CircuitRegistry()
        self.executions = ExecutionReconciler(clients, self.store, self.events,
                                              job_ttl_seconds=settings.job_ttl_seconds,
                                              metrics=self.metrics, tracer=self.tracer,
                                              circuits=self.circuits,
                                              security=settings.security(),
                                              prestage=settings.prestage)
        self.executions.query_sources = settings.sources()
        self._secrets_learned: dict[Key, tuple[str, str, bool]] = {}
        """Per execution: the (uid, generation, started) whose secrets were learned."""
        self.failures: dict[Key, failures.Streak] = {}
        """Per execution: the last reconcile error's summary, and how often in a row
        (also in its status: a new leader starts from there)."""
        self._failed_generation: dict[Key, Any] = {}
        """Per failing execution: the generation that failed. Its own status writes
        (the streak) do not queue it again ahead of its backoff; a spec change does."""
        self.triggers = TriggerIndex(
            lambda spec, ns: not validate_spec(spec, settings.security(), ns))
        self.notifier = Notifier(clients, self.metrics, self.events, may_act=self.may_act)
        self.scheduler = Scheduler(
            clients, self.store, self.metrics, self.events,
            lambda spec, ns: not validate_spec(spec, settings.security(), ns))
        self.elector = LeaderElector(
            self.watching, settings.leader_elect_namespace, settings.leader_elect_name,
            settings.leader_elect_identity or f"{socket.gethostname()}-{os.getpid()}",
        ) if settings.leader_elect else None
        self.caches = Caches(self.watching, self.store, self.circuits,
                             tuple(settings.namespaces), self.learn_secrets)
        """What a fresh listing is checked against (``controllers.takeover``)."""
        self.synced = asyncio.Event()
        """Set once the watches have caught up with a fresh listing (``/readyz``)."""
        self.leading = self.elector.leading if self.elector else asyncio.Event()
        """Set while this replica may act: always without leader election."""
        if self.elector is None:
            self.leading.set()
        self.receiver = AlertReceiver(self.watching, self.store, self.triggers, self.metrics,
                                      self.tracer, ReceiverSettings(
                                          address=settings.alerts_address,
                                          port=settings.alerts_port,
                                          token_file=settings.alerts_token_file,
                                          max_body_bytes=settings.alerts_max_body_bytes,
                                          namespaces=tuple(settings.namespaces)))

    def learn_secrets(self, key: Key, body: dict[str, Any]) -> None:
        """Teach the redactor a running execution's secret values (once per generation).

        From the raw watch body, whatever its shape: never raises."""
        meta = _mapping(body.get("metadata"))
        status = _mapping(body.get("status"))
        spec = _mapping(body.get("spec"))
        phase = status.get("phase")
        if isinstance(phase, str) and phase in FINISHED_EXECUTION_PHASES:
            self._secrets_learned.pop(key, None)
            return
        frozen = status.get("runbookSpec")
        mark = (str(meta.get("uid")), str(meta.get("generation")), frozen is not None)
        if self._secrets_learned.get(key) == mark:
            return
        if frozen is None:  # not started yet: the Runbook it will freeze
            runbook = _mapping(spec.get("runbookRef")).get("name")
            frozen = _mapping(self.store.runbooks.get((key[0], str(runbook)))).get("spec")
        declared = _mapping(frozen).get("params")
        SECRETS.learn(key, param_secret_literals(declared, spec.get("params")))
        self._secrets_learned[key] = mark

    def wanted(self, key: Key, body: dict[str, Any]) -> bool:
        """Whether an execution's watch event queues it now. Not while its passes fail and
        its spec is unchanged (the event is its own streak being written): the backoff's
        timer queues it; a spec change (a cancel, an approval) does at once."""
        generation = (body.get("metadata") or {}).get("generation")
        return key not in self.failures or generation != self._failed_generation.get(key)

    def may_act(self) -> bool:
        """Whether this replica may write now: the fence every acting write passes."""
        return self.elector.may_act() if self.elector is not None else True

    async def handle(self, key: Key) -> None:
        """One pass over one execution, in a thread (the kubernetes client blocks).

        A pass that raises is retried with backoff (the queue's other keys go on
        meanwhile); what to do is :mod:`engine.failures`' decision, and the streak is
        kept in the execution's status so a new leader continues it.
        """
        try:
            # to_thread copies the context: the log fields bound here reach the thread.
            with self.metrics.time_reconcile("RunbookExecution"), \
                    log_context(namespace=key[0], execution=key[1]):
                outcome = await asyncio.to_thread(self.executions.reconcile, key)
        except NotLeading:
            return  # this replica stopped leading: the one that leads now handles it
        except Exception as exc:
            await self._failed(key, exc)
            return
        self.failures.pop(key, None)
        if self._recorded_streak(key) is not None:
            await self._write_streak(key, None)
        for other in outcome.others:
            self.queue.add(other)
        if outcome.again:
            self.queue.add(key)
        elif outcome.wake_at is not None:
            delay = (outcome.wake_at - datetime.now(UTC)).total_seconds()
            self.queue.add_after(key, delay + 0.01)

    async def _failed(self, key: Key, exc: BaseException) -> None:
        previous = self.failures.get(key) or self._recorded_streak(key)
        streak = failures.next_streak(previous, error_summary(exc))
        self.failures[key] = streak
        self._failed_generation[key] = (
            (self.store.executions.get(key) or {}).get("metadata") or {}).get("generation")
        delay = failures.retry_delay(streak)
        log.exception("reconcile of %s/%s failed (%d in a row); again in %.1fs",
                      *key, streak.count, delay)
        if failures.verdict(streak, self.settings.max_reconcile_failures,
                            is_transient(exc)) == "fail":
            try:
                written = await asyncio.to_thread(self.executions.fail_internal, key,
                                                  streak.summary, streak.count)
            except Exception:
                log.exception("could not mark %s/%s as failed", *key)
                written = False
            if written:
                self.failures.pop(key, None)
                return
        elif not is_transient(exc):
            await self._write_streak(key, streak)
        self.queue.add_after(key, delay)

    def _recorded_streak(self, key: Key) -> failures.Streak | None:
        return failures.recorded((self.store.executions.get(key) or {}).get("status"))

    async def _write_streak(self, key: Key, streak: failures.Streak | None) -> None:
        """Record the streak in the execution's status (None: clear it). Best effort:
        the count in memory goes on if the write fails."""
        try:
            await asyncio.to_thread(self.executions.record_failures, key,
                                    streak.to_status() if streak else None)
        except Exception as exc:
            log.warning("could not record the reconcile failures of %s/%s: %s", *key, exc)

    def register(self, registry: kopf.OperatorRegistry) -> None:
        """Attach the handlers to a kopf registry."""
        clients, store, queue = self.clients, self.store, self.queue

        @kopf.on.startup(registry=registry)
        def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.peering.standalone = True
            settings.posting.level = logging.WARNING
            settings.watching.server_timeout = 300
            settings.watching.inactivity_timeout = self.settings.watch_inactivity_timeout
            settings.watching.chunk_size = self.settings.list_chunk_size or None
            # kopf keeps a worker, holding the object's last body, per object for this
            # long after its last event. Our handlers only store and enqueue, so a
            # short wait costs nothing, while kopf's 5 s held every listed Job, pod and
            # execution at once at startup (1,000 finished runs: 220 MiB against 124).
            settings.queueing.idle_timeout = 0.5
            watches.install(self.metrics.watch_restarted, self.settings.log_level)
            settings.batching.batch_window = 0.01
            # Server-side filtering: the cluster's other Jobs and pods never reach us.
            settings.watching.label_selectors["batch", "jobs"] = LABEL_EXECUTION
            settings.watching.label_selectors["v1", "pods"] = LABEL_EXECUTION
            # Namespaced installs have no cluster-wide grants: kopf serves the
            # namespaces named and the resources found at start, without watching
            # CRDs and namespaces.
            settings.scanning.disabled = bool(self.settings.namespaces)
            settings.persistence.diffbase_storage = NoDiffBase()
            # One line per handled watch event is noise at our event rates; failures
            # are still logged at ERROR.
            logging.getLogger("kopf.objects").setLevel(logging.WARNING)

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            # kopf's watches use exactly the credentials our own client uses
            # (--kubeconfig, $KUBECONFIG or the pod's service account).
            return connection_info(clients.api_client.configuration)

        @kopf.on.event(GROUP, VERSION, runbooks.PLURAL, registry=registry)
        def runbook_event(type: str, event: kopf.RawEvent, **_: Any) -> None:
            body = _body(event)
            deleted = type == "DELETED"
            store.put_runbook(body, deleted)
            self.triggers.observe(body, deleted)
            self.scheduler.wake()
            if self.leading.is_set() and not deleted and \
                    not body.get("metadata", {}).get("deletionTimestamp"):
                runbooks.reconcile(clients, body, security=self.settings.security())

        @kopf.on.event(GROUP, VERSION, circuits.PLURAL, registry=registry)
        async def policy_event(type: str, event: kopf.RawEvent, **_: Any) -> None:
            # A standby follows the leader's writes; the leader keeps its own picture.
            self.circuits.observe_policy(_body(event), deleted=type == "DELETED",
                                         follow_status=not self.leading.is_set())

        @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
        async def execution_event(type: str, event: kopf.RawEvent, **_: Any) -> None:
            body = _body(event)
            # Off the reconcile path: only starts delivery tasks for new events.
            if self.leading.is_set():
                self.notifier.observe(body, deleted=type == "DELETED")
            key = store.put_execution(body, deleted=type == "DELETED")
            if type != "DELETED":
                # Every replica knows every running execution's secrets before it could
                # log anything about it (a standby's receiver, a new leader's first pass).
                self.learn_secrets(key, body)
            if type == "DELETED":
                queue.forget(key)
                SECRETS.forget(key)  # a run deleted while running is never reconciled again
                self._secrets_learned.pop(key, None)
                self.failures.pop(key, None)
            elif self.wanted(key, body):
                queue.add(key)

        @kopf.on.event("batch", "v1", "jobs", labels={LABEL_EXECUTION: kopf.PRESENT},
                       registry=registry)
        async def job_event(type: str, event: kopf.RawEvent, **_: Any) -> None:
            body = _body(event)
            key = store.put_job(body, deleted=type == "DELETED")
            # Only an ending or a vanishing Job changes a plan; the rest is noise. A Job
            # whose pod has ended on its own was acted on when the pod's update came.
            if key is not None and key in store.executions and \
                    (type == "DELETED" or (job_finished(body) and pod_outcome(
                        store.pods.get(key, {}).get(body["metadata"]["name"])) is None)):
                queue.add(key)

        @kopf.on.event("", "v1", "pods", labels={LABEL_EXECUTION: kopf.PRESENT},
                       registry=registry)
        async def pod_event(type: str, event: kopf.RawEvent, **_: Any) -> None:
            body = _body(event)
            key = store.put_pod(body, deleted=type == "DELETED")
            # A step's pod ending is its attempt's end (k8s.jobs.observe_job): plan now,
            # not seconds later when the Job controller marks the Job.
            # A staged pod whose gate was to be lifted before it existed: lift it now.
            if key is not None and key in store.executions and (
                    pod_terminated(body) or store.awaited(body)):
                queue.add(key)


def error_summary(exc: BaseException) -> str:
    """An error in one line: its type and the first line of its message."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def connection_info(config: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """kopf's view of a kubernetes client configuration."""
    token = (config.api_key or {}).get("authorization") or (config.api_key or {}).get(
        "BearerToken")
    if token and token.lower().startswith("bearer "):
        token = token[7:]
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        scheme="Bearer" if token else None,
        token=token or None,
    )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _body(event: kopf.RawEvent) -> dict[str, Any]:
    """The object of a raw watch event: a fresh dict per event, safe to keep."""
    return cast(dict[str, Any], event["object"])


async def refresh_gauges(operator: Operator, every: float = 5.0) -> None:
    """Gauges come from what is stored, not from counting: right after any restart."""
    await asyncio.sleep(1.0)
    while True:
        operator.metrics.rebuild_from(list(operator.store.executions.values()),
                                      operator.circuits.bodies())
        await asyncio.sleep(every)


async def flush_circuits(operator: Operator, every: float = 1.0) -> None:
    """Circuit states to CircuitPolicy status, batched: at most one write per policy a second.

    A crash loses at most the last second of calls (the circuit then decides on a
    slightly shorter window); a graceful stop writes them (:func:`flush_circuits_once`).
    """
    while True:
        await asyncio.sleep(every)
        await flush_circuits_once(operator)


async def flush_circuits_once(operator: Operator) -> None:
    """Write every CircuitPolicy status that changed since the last write."""
    for (namespace, name), status in operator.circuits.take_dirty():
        try:
            await asyncio.to_thread(circuits.write_status, operator.clients, namespace,
                                    name, status)
        except Exception as exc:  # written again with the next change
            log.warning("could not write status of CircuitPolicy %s/%s: %s",
                        namespace, name, exc)
            operator.circuits.mark_dirty((namespace, name))


async def start_http(operator: Operator, settings: OperatorSettings,
                     kopf_task: asyncio.Task[None]) -> web.AppRunner:
    """``/healthz`` and ``/metrics`` on one port, in the operator's event loop."""
    async def healthz(_: web.Request) -> web.Response:
        if kopf_task.done():
            return web.json_response({"status": "kopf stopped"}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if kopf_task.done():
            return web.json_response({"status": "kopf stopped"}, status=503)
        if not operator.synced.is_set():
            return web.json_response({"status": "caches not synced"}, status=503)
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(operator.metrics))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.health_address, settings.health_port).start()
    return runner


async def lead(operator: Operator) -> None:
    """Everything that acts, started once this replica leads (at once without election).

    A standby has watched all along: its queue holds every execution it saw, and the
    Runbooks and executions it stored are caught up on here.
    """
    await operator.leading.wait()
    settings = operator.settings
    listed = await take_over(operator.caches, operator.metrics) \
        if operator.elector is not None else None
    # Whole bodies: the store keeps finished executions slimmed, without the frozen
    # spec and the ledger a notification owed after a takeover is computed from.
    for body in listed if listed is not None else list(operator.store.executions.values()):
        operator.notifier.observe(body)
    await asyncio.to_thread(_reconcile_runbooks, operator)
    await asyncio.gather(
        *(operator.queue.work(operator.handle) for _ in range(settings.workers)),
        flush_circuits(operator), operator.scheduler.run())


def _reconcile_runbooks(operator: Operator) -> None:
    for body in list(operator.store.runbooks.values()):
        if not (body.get("metadata") or {}).get("deletionTimestamp"):
            try:
                runbooks.reconcile(operator.clients, body,
                                   security=operator.settings.security())
            except Exception as exc:  # the next event of that Runbook tries again
                log.warning("could not reconcile Runbook %s: %s",
                            (body.get("metadata") or {}).get("name"), exc)


def leadership_lost() -> None:
    """Stop at once: a standby may take over soon, and two leaders could run a step twice.

    The process exits (Kubernetes restarts it, as a standby); threads in the middle of
    a write finish it or not, and every write is guarded by a resourceVersion.
    """
    log.critical("lost the leader Lease; exiting so that another replica takes over")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(70)


async def serve(settings: OperatorSettings, configuration: kubernetes.client.Configuration,
                stop: asyncio.Event | None = None) -> None:
    """Run the operator until ``stop`` is set (or forever)."""
    # The event loop (watches, /healthz, /metrics) shares the GIL with the reconcile
    # threads: a thread waiting for it gets it after this interval (default 5 ms,
    # paid again after every socket call), so a short one keeps the loop's answers
    # quick while the workers plan.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Reconciles and kopf's sync handlers run in threads; the default pool has only
    # cpu+4 of them, fewer than the workers on a small node.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=settings.workers + 4, thread_name_prefix="reconcile"))
    operator: Operator | None = None

    def may_act() -> bool:
        return operator is not None and operator.may_act()

    # Two pools: what every replica does (election, alert receiver), and what only the
    # leader does, every write of which passes the fence first.
    operator = Operator(make_clients(configuration, pool=4), settings,
                        acting=make_clients(configuration, pool=settings.workers + 4,
                                            may_act=may_act))
    registry = kopf.OperatorRegistry()
    operator.register(registry)
    kopf_task = asyncio.create_task(kopf.operator(
        registry=registry,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        stop_flag=stop,
    ), name="kopf")
    tasks = [asyncio.create_task(refresh_gauges(operator), name="gauges"),
             asyncio.create_task(sync_caches(operator.caches, operator.synced), name="sync"),
             asyncio.create_task(lead(operator), name="lead")]
    if operator.elector is not None:
        tasks.append(asyncio.create_task(operator.elector.run(leadership_lost), name="elector"))
    runner = await start_http(operator, settings, kopf_task)
    alerts = await start_receiver(operator.receiver)
    try:
        await kopf_task
    finally:
        for task in tasks:
            task.cancel()
        if operator.leading.is_set():
            await flush_circuits_once(operator)
        await runner.cleanup()
        if alerts is not None:
            await alerts.cleanup()
        await operator.notifier.drain()
        operator.events.close()
        await asyncio.to_thread(operator.tracer.shutdown)
