"""The trigger index (triggers/index.py).

Cases: a Runbook's triggers are found by the alert name their equality matcher
pins, and triggers that pin none are found for every name; a namespace filter; an
invalid Runbook (bad matcher, or any other problem) is not indexed; a new version
replaces the old triggers, removing the triggers or deleting the Runbook drops
them; the receiver's own start-up listing never replaces what the watch brought (its
version cannot be ordered against the watch's: opaque), but fills in what the watch
has not; Runbooks without triggers never touch the index; a lookup costs the same
with 2,000 other Runbooks indexed (by what it returns, not by timing).
"""

from __future__ import annotations

from typing import Any

from runbook_operator.triggers.index import TriggerIndex


def runbook(name: str, *matches: list[str], namespace: str = "ns", version: str = "1",
            steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"params": [{"name": "service"}],
                            "steps": steps or [{"name": "a", "image": "busybox"}]}
    if matches:
        spec["triggers"] = {"alerts": [{"match": m} for m in matches]}
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": version},
            "spec": spec}


def names(index: TriggerIndex, alertname: str, namespace: str | None = None) -> list[str]:
    return [f"{t.runbook}[{t.index}]" for t in index.candidates(alertname, namespace)]


def test_found_by_pinned_name_and_unpinned_for_all() -> None:
    index = TriggerIndex()
    index.observe(runbook("mem", ['alertname="HighMemoryUsage"']))
    index.observe(runbook("any", ['severity="critical"']))
    assert names(index, "HighMemoryUsage") == ["mem[0]", "any[0]"]
    assert names(index, "Other") == ["any[0]"]


def test_namespace_filter() -> None:
    index = TriggerIndex()
    index.observe(runbook("mem", ['alertname="A"'], namespace="one"))
    index.observe(runbook("mem", ['alertname="A"'], namespace="two"))
    assert [t.namespace for t in index.candidates("A")] == ["one", "two"]
    assert [t.namespace for t in index.candidates("A", "two")] == ["two"]


def test_invalid_runbooks_are_not_indexed() -> None:
    index = TriggerIndex()
    index.observe(runbook("bad-matcher", ['alertname="A']))
    index.observe(runbook("bad-step", ['alertname="A"'],
                          steps=[{"name": "a", "image": "x", "dependsOn": ["nope"]}]))
    assert names(index, "A") == []
    assert len(index) == 0


def test_versions_replace_and_deletion_drops() -> None:
    index = TriggerIndex()
    index.observe(runbook("mem", ['alertname="A"']))
    index.observe(runbook("mem", ['alertname="B"'], version="2"))
    assert names(index, "A") == [] and names(index, "B") == ["mem[0]"]
    index.observe(runbook("mem", version="3"))  # triggers removed from the spec
    assert names(index, "B") == []
    index.observe(runbook("mem", ['alertname="C"'], version="4"))
    index.observe(runbook("mem", ['alertname="C"'], version="4"), deleted=True)
    assert names(index, "C") == []


def test_a_listing_fills_in_but_never_replaces_the_watch() -> None:
    index = TriggerIndex()
    index.observe(runbook("mem", ['alertname="New"'], version="b"))  # the watch
    index.observe(runbook("mem", ['alertname="Old"'], version="a"), listed=True)
    assert names(index, "New") == ["mem[0]"] and names(index, "Old") == []
    index.observe(runbook("cpu", ['alertname="Cpu"'], version="9"), listed=True)
    assert names(index, "Cpu") == ["cpu[0]"]
    index.observe(runbook("cpu", ['alertname="Cpu2"'], version="10"))  # then the watch
    assert names(index, "Cpu2") == ["cpu[0]"] and names(index, "Cpu") == []


def test_a_lookup_returns_only_its_name_among_thousands() -> None:
    index = TriggerIndex()
    for i in range(2000):
        index.observe(runbook(f"rb-{i}", [f'alertname="Alert{i}"']))
    assert names(index, "Alert1234") == ["rb-1234[0]"]
    assert names(index, "Unknown") == []
