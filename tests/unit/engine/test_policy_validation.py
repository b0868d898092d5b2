"""engine.policy_validation and the CircuitPolicy status the registry publishes.

Cases:
- a valid policy (and an empty one: every default) has no problem;
- schema errors are InvalidSpec naming the field; a duration too long for
  arithmetic is InvalidSpec;
- contradictions are ContradictorySettings with a message saying what to change:
  maxOpenDuration shorter than openDuration, a slow-call rate without a
  slow-call duration, backoff initial above max (minimumCalls above a Count
  window is not one: the window's size is the minimum then);
- the registry: an invalid policy has no spec, is listed by invalid() with why,
  and its status carries Ready=False with the first reason and observedGeneration;
  fixing it publishes Ready=True; a new generation marks the status to be written
  again, and the written status itself does not.
"""

from __future__ import annotations

from typing import Any

from runbook_operator.controllers.circuits import CircuitRegistry
from runbook_operator.engine.policy_validation import validate_policy


def reasons(spec: Any) -> list[str]:
    return [p.reason for p in validate_policy(spec)]


def test_valid() -> None:
    assert validate_policy({}) == []
    assert validate_policy({"slidingWindow": {"type": "Count", "size": 4}, "minimumCalls": 2,
                            "openDuration": "1m", "maxOpenDuration": "10m",
                            "bulkhead": {"maxConcurrent": 2, "maxWait": "5m"}}) == []


def test_schema_and_durations() -> None:
    (problem,) = validate_policy({"minimumCalls": "many"})
    assert problem.reason == "InvalidSpec" and "minimumCalls" in problem.message
    assert reasons({"openDuration": "9" * 30 + "h"}) == ["InvalidSpec"]
    assert reasons({"nonsense": 1}) == ["InvalidSpec"]
    assert reasons("not an object") == ["InvalidSpec"]


def test_contradictions() -> None:
    cases = [
        ({"openDuration": "10m", "maxOpenDuration": "1m"}, "maxOpenDuration"),
        ({"slowCallRateThreshold": 50}, "slowCallDurationThreshold"),
        ({"retry": {"backoff": {"initial": "1m", "max": "1s"}}}, "retry.backoff"),
    ]
    for spec, words in cases:
        (problem,) = validate_policy(spec)
        assert problem.reason == "ContradictorySettings" and words in problem.message
    assert validate_policy({"slidingWindow": {"size": 4}, "minimumCalls": 100}) == []


def body(spec: dict[str, Any], generation: int = 1, status: Any = None) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "ai", "generation": generation},
            "spec": spec, **({"status": status} if status is not None else {})}


def test_registry_publishes_ready() -> None:
    reg = CircuitRegistry()
    bad = {"openDuration": "10m", "maxOpenDuration": "1m"}
    reg.observe_policy(body(bad))
    assert reg.specs("ns", ["ai"]) == {}
    assert "maxOpenDuration 1m" in reg.invalid("ns", ["ai"])["ai"]
    ((_, status),) = reg.take_dirty()
    (ready,) = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "ContradictorySettings")
    assert status["observedGeneration"] == 1
    # The written status comes back through the watch: nothing new to write.
    reg.observe_policy(body(bad, 1, status))
    assert reg.take_dirty() == []
    reg.observe_policy(body({"openDuration": "10m", "maxOpenDuration": "1h"}, 2, status))
    ((_, status),) = reg.take_dirty()
    assert status["conditions"][0]["status"] == "True"
    assert status["observedGeneration"] == 2
    assert reg.invalid("ns", ["ai"]) == {} and "ai" in reg.specs("ns", ["ai"])
