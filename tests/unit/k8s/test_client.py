"""The API-call wrapper: which errors are retried, and that every error is reported.

Cases: a 409 is raised at once (not retried) and reported; a 503 is retried until
it succeeds, each failure reported; connection errors count as transient, 4xx do
not; retry_conflicts runs a read-decide-write step again after each 409 only, and
says what kept changing when every try lost. Also the kubectl plugin's conversion of
`-p NAME=VALUE` to declared types.
"""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from runbook_operator.cli.cluster_commands import CommandError, convert
from runbook_operator.k8s import client


def test_conflict_is_not_retried_and_is_reported() -> None:
    seen: list[int] = []
    client.observe_api_errors(seen.append)
    calls = []

    @client.retrying
    def create() -> None:
        calls.append(1)
        raise ApiException(status=409, reason="Conflict")

    with pytest.raises(ApiException):
        create()
    assert len(calls) == 1
    assert seen[-1] == 409


def test_unavailable_is_retried_until_it_works() -> None:
    seen: list[int] = []
    client.observe_api_errors(seen.append)
    calls = []

    @client.retrying
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ApiException(status=503, reason="Unavailable")
        return "ok"

    assert flaky() == "ok"
    assert len(calls) == 3
    assert seen[-2:] == [503, 503]


def _answer(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="scripted")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return exc


@pytest.mark.parametrize(("exc", "transient"), [
    (ApiException(status=500), True), (ApiException(status=429), True),
    (ApiException(status=404), False), (ApiException(status=422), False),
    (ConnectionResetError(), True), (ValueError(), False),
    # What the API server answers for an object etcd cannot take (seen on ours).
    (_answer(500, "etcdserver: request is too large"), False),
    (_answer(500, "rpc error: code = ResourceExhausted desc = trying to send message "
                  "larger than max (3072730 vs. 2097152)"), False),
    (_answer(413, "Request entity too large"), False),
    (_answer(500, "Internal error occurred: resource quota evaluation timed out"), True),
])
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert client.is_transient(exc) is transient


@pytest.mark.parametrize(("declared", "text", "value"), [
    ({"type": "integer"}, "3", 3), ({"type": "number"}, "0.5", 0.5),
    ({"type": "boolean"}, "yes", True), ({"type": "boolean"}, "False", False),
    ({"type": "array"}, '["a", 1]', ["a", 1]), ({"type": "string"}, "007", "007"),
    (None, "007", "007"),
])
def test_convert_to_declared_type(declared: dict[str, str] | None, text: str,
                                  value: object) -> None:
    assert convert(declared, "p", text) == value


@pytest.mark.parametrize(("kind", "text"), [("integer", "three"), ("boolean", "maybe"),
                                            ("object", "{nope")])
def test_convert_refuses_wrong_types(kind: str, text: str) -> None:
    with pytest.raises(CommandError, match=f"is {kind}"):
        convert({"type": kind}, "p", text)


def test_retry_conflicts_runs_the_step_again_after_each_409_only() -> None:
    from runbook_operator.k8s.client import StillConflicting, retry_conflicts

    answers: list[BaseException | str] = [ApiException(status=409), ApiException(status=409),
                                          "written"]

    def step() -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert retry_conflicts(step, 3, "x") == "written"
    answers[:] = [ApiException(status=409)] * 3
    with pytest.raises(StillConflicting, match="x kept changing"):
        retry_conflicts(step, 3, "x")
    answers[:] = [ApiException(status=422)]
    with pytest.raises(ApiException):
        retry_conflicts(step, 3, "x")
