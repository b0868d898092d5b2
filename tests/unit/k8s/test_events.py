"""k8s.events: Events aggregated like Kubernetes' event recorder, written off the hot path.

Cases:
- four occurrences of one reason on one object before a write: one POST with
  count 4, the latest message marked "(combined from similar events)";
- a later occurrence patches that Event's count and lastTimestamp (no new POST);
  the same message repeated is not marked combined;
- another reason, type or object is its own Event;
- a patch answered 404 (the Event expired) creates a new Event;
- bounded: beyond ``max_pending`` waiting Events new ones are dropped and
  counted; the memory of written Events keeps at most ``cache_size``;
- ``enabled=False`` writes nothing; the background thread writes what is posted.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

from kubernetes.client.exceptions import ApiException

from runbook_operator.k8s.client import Clients
from runbook_operator.k8s.events import EventPoster


class FakeCore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.gone: set[str] = set()

    def create_namespaced_event(self, namespace: str, body: dict[str, Any]) -> Any:
        name = f"ev-{len(self.calls)}"
        self.calls.append(("POST", name, dict(body)))
        return SimpleNamespace(metadata=SimpleNamespace(name=name))

    def patch_namespaced_event(self, name: str, namespace: str, body: dict[str, Any]) -> Any:
        if name in self.gone:
            raise ApiException(status=404)
        self.calls.append(("PATCH", name, dict(body)))
        return None


def poster(**kwargs: Any) -> tuple[EventPoster, FakeCore]:
    core = FakeCore()
    clients = cast(Clients, SimpleNamespace(core=core))
    return EventPoster(clients, start=False, **kwargs), core


def execution(name: str = "run-1") -> dict[str, Any]:
    return {"apiVersion": "runbooks.dev/v1alpha1", "kind": "RunbookExecution",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"}}


def test_a_burst_is_one_event_with_a_count_and_later_ones_patch_it() -> None:
    events, core = poster()
    for i in range(4):
        events.post(execution(), "StepRunning", f"step b{i}: attempt 1 started")
    events.flush()
    ((verb, name, body),) = core.calls
    assert verb == "POST" and body["count"] == 4 and body["reason"] == "StepRunning"
    assert body["message"] == "(combined from similar events): step b3: attempt 1 started"
    events.post(execution(), "StepRunning", "step join: attempt 1 started")
    events.flush()
    verb, patched, patch = core.calls[-1]
    assert (verb, patched, patch["count"]) == ("PATCH", name, 5)
    assert patch["message"].endswith("step join: attempt 1 started") and patch["lastTimestamp"]


def test_the_same_message_repeated_is_not_marked_combined() -> None:
    events, core = poster()
    events.post(execution(), "CircuitOpen", "circuit ai/default opened")
    events.post(execution(), "CircuitOpen", "circuit ai/default opened")
    events.flush()
    events.post(execution(), "CircuitOpen", "circuit ai/default opened")
    events.flush()
    assert core.calls[0][2]["message"] == "circuit ai/default opened"
    assert core.calls[0][2]["count"] == 2
    assert core.calls[1][2] == {"count": 3, "lastTimestamp": core.calls[1][2]["lastTimestamp"],
                                "message": "circuit ai/default opened"}


def test_reason_type_and_object_keep_events_apart() -> None:
    events, core = poster()
    events.post(execution(), "StepRunning", "a")
    events.post(execution(), "StepSucceeded", "a")
    events.post(execution(), "StepSucceeded", "a", warning=True)
    events.post(execution("run-2"), "StepRunning", "a")
    events.flush()
    assert [c[0] for c in core.calls] == ["POST"] * 4
    assert {(c[2]["involvedObject"]["name"], c[2]["reason"], c[2]["type"])
            for c in core.calls} == {("run-1", "StepRunning", "Normal"),
                                     ("run-1", "StepSucceeded", "Normal"),
                                     ("run-1", "StepSucceeded", "Warning"),
                                     ("run-2", "StepRunning", "Normal")}


def test_an_expired_event_is_created_again() -> None:
    events, core = poster()
    events.post(execution(), "StepRunning", "a")
    events.flush()
    core.gone.add(core.calls[0][1])
    events.post(execution(), "StepRunning", "b")
    events.flush()
    assert [c[0] for c in core.calls] == ["POST", "POST"]
    assert core.calls[1][2]["count"] == 1 and core.calls[1][2]["message"] == "b"


def test_bounded_backlog_and_memory() -> None:
    events, core = poster(max_pending=3, cache_size=2)
    for i in range(5):
        events.post(execution(f"run-{i}"), "StepRunning", "a")
    assert events.pending() == 3 and events.dropped == 2
    events.post(execution("run-0"), "StepRunning", "b")  # merges: no room needed
    assert events.pending() == 3 and events.dropped == 2
    events.flush()
    assert len(core.calls) == 3 and len(events._written) == 2


def test_disabled_writes_nothing_and_the_thread_writes_the_rest() -> None:
    events, core = poster(enabled=False)
    events.post(execution(), "StepRunning", "a")
    assert events.pending() == 0
    core = FakeCore()
    live = EventPoster(cast(Clients, SimpleNamespace(core=core)), linger=0.0)
    live.post(execution(), "StepRunning", "a")
    deadline = time.monotonic() + 10
    while not core.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    live.close()
    assert [c[0] for c in core.calls] == ["POST"]
