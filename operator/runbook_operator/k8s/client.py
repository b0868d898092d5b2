"""Configured Kubernetes API clients, and retries of transient errors."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from runbook_operator.api.common import GROUP, VERSION

P = ParamSpec("P")
T = TypeVar("T")

FIELD_MANAGER = "runbook-operator"
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Errors of the cluster, not of the request: overload, apiserver hiccups, no answer
    (status 0 or none: the connection failed), dropped connections. Worth retrying, and
    never a reason to fail a run. Too large is final whatever its status."""
    if isinstance(exc, ApiException):
        return (exc.status in TRANSIENT_STATUS or not exc.status) and not is_too_large(exc)
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


_TOO_LARGE = ("request is too large", "larger than max")


def is_too_large(exc: BaseException) -> bool:
    """The API server cannot store the object: over etcd's request limit it answers 500
    ("etcdserver: request is too large", or gRPC's "larger than max"), over its own 413.
    Sending the same object again can never work, so this is not transient."""
    if not isinstance(exc, ApiException):
        return False
    body = str(exc.body or "")
    return exc.status == 413 or (exc.status == 500 and any(t in body for t in _TOO_LARGE))


_error_observers: list[Callable[[int], None]] = []


def observe_api_errors(callback: Callable[[int], None]) -> None:
    """Call ``callback(status)`` for every error response the operator's calls get."""
    _error_observers.append(callback)


def _observed(func: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(func)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except ApiException as exc:
            for observer in _error_observers:
                observer(int(exc.status or 0))
            raise
    return call


def retrying(func: Callable[P, T]) -> Callable[P, T]:
    """Retry ``func`` on transient errors (5 attempts, jittered exponential wait).

    Every error response, retried or not, is reported to the API-error observers.
    """
    wrapped = retry(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(5),
        wait=wait_exponential_jitter(multiplier=0.1, max=3.0, jitter=0.1),
        reraise=True,
    )(_observed(func))
    return functools.wraps(func)(wrapped)


@dataclass
class Clients:
    """The API groups the operator uses, sharing one connection pool.

    Typed as ``Any`` on purpose: the operator passes and receives plain dicts
    (manifests as the API spells them), which the client's model stubs do not
    describe.
    """

    api_client: kubernetes.client.ApiClient

    @functools.cached_property
    def custom(self) -> Any:
        return kubernetes.client.CustomObjectsApi(self.api_client)

    @functools.cached_property
    def batch(self) -> Any:
        return kubernetes.client.BatchV1Api(self.api_client)

    @functools.cached_property
    def core(self) -> Any:
        return kubernetes.client.CoreV1Api(self.api_client)

    @functools.cached_property
    def coordination(self) -> Any:
        return kubernetes.client.CoordinationV1Api(self.api_client)


def load_config(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster config when running in a pod, else the kubeconfig (``$KUBECONFIG``)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig,
                                           client_configuration=configuration)
    return configuration


class NotLeading(Exception):
    """A write refused before it was sent: this replica may not act (the fence said no).

    Not an error of the object being written: the replica that leads now writes it.
    """


WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def fence_writes(api_client: kubernetes.client.ApiClient, may_act: Callable[[], bool]) -> None:
    """Ask ``may_act()`` before every write ``api_client`` sends; refuse it when false.

    At the last moment before the request, in the one place every API call passes, so
    no write path of a leader can forget it.
    """
    rest: Any = api_client.rest_client
    send = rest.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() in WRITES and not may_act():
            raise NotLeading(f"{method} {url.split('?')[0]}: this replica does not lead "
                             "(or could not renew its Lease in time)")
        return send(method, url, *args, **kwargs)

    rest.request = request


def make_clients(configuration: kubernetes.client.Configuration, pool: int = 16,
                 may_act: Callable[[], bool] | None = None) -> Clients:
    """Clients sharing one pool; with ``may_act``, every write is fenced by it."""
    configuration.connection_pool_maxsize = pool
    api_client = kubernetes.client.ApiClient(configuration)
    if may_act is not None:
        fence_writes(api_client, may_act)
    # The field manager name in managedFields: shows what the operator wrote.
    api_client.user_agent = FIELD_MANAGER
    clients = Clients(api_client)
    # Built (and their modules imported) now, not by the first reconciles: those
    # would all wait on cached_property's lock while one thread imports, holding
    # the GIL the event loop needs.
    for api in (clients.custom, clients.batch, clients.core, clients.coordination):
        assert api is not None
    return clients


@retrying
def patch_status(clients: Clients, plural: str, namespace: str, name: str,
                 status: dict[str, Any], resource_version: str | None = None
                 ) -> dict[str, Any]:
    """Merge-patch ``status`` of a custom object through the status subresource.

    With ``resource_version``, only if the object is still at that version (else 409).
    """
    body: dict[str, Any] = {"status": status}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    result = clients.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, body,
    )
    return cast(dict[str, Any], result)


@retrying
def read_raw(read: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
    """A direct read, ``read(*args)``, as the API server answers it; None on 404.

    Raw JSON rather than the client's models, which drop fields they do not know
    (a newer API server's) and which a comparison or a round trip must keep.
    """
    try:
        response = read(*args, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], json.loads(response.data))


def read_object(clients: Clients, plural: str, namespace: str, name: str
                ) -> dict[str, Any] | None:
    """A direct read of one of our custom objects; None when it does not exist."""
    try:
        result = clients.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], result)


def list_raw(clients: Clients, plural: str, namespaces: list[str] | None = None,
             page: int = 500) -> list[dict[str, Any]]:
    """Every object of one of our kinds, by a consistent (quorum) read, as raw JSON.

    No ``resourceVersion`` is given, so the API server answers from etcd, not from its
    watch cache: nothing written before the call is missing.
    """
    items: list[dict[str, Any]] = []
    scopes: list[str | None] = list(namespaces) if namespaces else [None]
    for namespace in scopes:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            if namespace is None:
                response = clients.custom.list_cluster_custom_object(
                    GROUP, VERSION, plural, **kwargs)
            else:
                response = clients.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, **kwargs)
            listing = json.loads(response.data)
            items += listing.get("items") or []
            token = (listing.get("metadata") or {}).get("continue")
            if not token:
                break
    return items


class StillConflicting(Exception):
    """An object kept changing between our read and our guarded write."""


def retry_conflicts(step: Callable[[], T], tries: int, what: str) -> T:
    """Run ``step`` (it reads an object, decides, and writes guarded by the version it
    read) again after each 409, at most ``tries`` times in all: the one read-decide-write
    loop of the operator's guarded writes. Raises :class:`StillConflicting` naming
    ``what`` when every try lost its race."""
    for _ in range(tries):
        try:
            return step()
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise StillConflicting(f"{what} kept changing; {tries} guarded writes lost their race")
