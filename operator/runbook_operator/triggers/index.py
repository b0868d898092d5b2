"""Which Runbooks an alert may start: their compiled triggers, indexed by alert name.

The receiver must answer in time that does not grow with the number of Runbooks,
so each Runbook's ``spec.triggers.alerts`` is compiled once per version (on its
watch event) and filed under the ``alertname`` its equality matcher pins; an alert
then looks at its own name's triggers and at the few that pin no name.

Only valid Runbooks are indexed: a Runbook whose spec (triggers included) does
not validate starts nothing; its ``Ready=False`` condition says why.

Writers (kopf's handlers, in threads) serialise on a lock and publish new maps;
the receiver reads the current maps without a lock (copy on write).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.alerts import CompiledTrigger, compile_triggers
from runbook_operator.engine.validation import validate_spec

log = logging.getLogger("runbook_operator.triggers")

Key = tuple[str, str]


class TriggerIndex:
    """The alert triggers of every valid Runbook the operator watches."""

    def __init__(self, is_valid: Callable[[RunbookSpec, str], bool] | None = None) -> None:
        """``is_valid(spec, namespace)``: whether a Runbook may run at all (default:
        :func:`validate_spec` finds no problem); the operator passes its own allowances."""
        self._is_valid = is_valid or (lambda spec, ns: not validate_spec(spec, namespace=ns))
        self._lock = threading.Lock()
        self._versions: dict[Key, str] = {}
        self._triggers: dict[Key, tuple[CompiledTrigger, ...]] = {}
        self._by_name: Mapping[str, tuple[CompiledTrigger, ...]] = {}
        self._unnamed: tuple[CompiledTrigger, ...] = ()

    def observe(self, body: Mapping[str, Any], deleted: bool = False,
                listed: bool = False) -> None:
        """Take in a Runbook's watch event (in the watch's order: each is newer).

        ``listed``: from the receiver's own listing at start, which races the watch; it
        only fills in Runbooks the watch has not brought yet (resourceVersions are
        opaque, so a listed version cannot be ordered against a watched one).
        """
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        version = str(meta.get("resourceVersion") or "")
        with self._lock:
            if deleted or meta.get("deletionTimestamp"):
                if self._triggers.pop(key, None) is not None:
                    self._publish()
                self._versions.pop(key, None)
                return
            if listed and key in self._versions:
                return  # the watch brought this Runbook: its version is the one to keep
            if version and version == self._versions.get(key):
                return  # the same version again (a re-list): nothing changed
            self._versions[key] = version
            triggers = _compile(key, body.get("spec"), self._is_valid)
            if not triggers and key not in self._triggers:
                return  # a Runbook without triggers, as most are: nothing to rebuild
            if triggers:
                self._triggers[key] = triggers
            else:
                self._triggers.pop(key, None)
            self._publish()

    def candidates(self, alertname: str, namespace: str | None = None
                   ) -> tuple[CompiledTrigger, ...]:
        """Triggers that may match an alert of this name (their matchers decide)."""
        found = self._by_name.get(alertname, ()) + self._unnamed
        if namespace is not None:
            found = tuple(t for t in found if t.namespace == namespace)
        return found

    def __len__(self) -> int:
        return len(self._triggers)

    def _publish(self) -> None:
        by_name: dict[str, list[CompiledTrigger]] = {}
        unnamed: list[CompiledTrigger] = []
        for key in sorted(self._triggers):
            for trigger in self._triggers[key]:
                name = trigger.alertname()
                if name is None:
                    unnamed.append(trigger)
                else:
                    by_name.setdefault(name, []).append(trigger)
        self._by_name = {k: tuple(v) for k, v in by_name.items()}
        self._unnamed = tuple(unnamed)


def _compile(key: Key, raw: Any, is_valid: Callable[[RunbookSpec, str], bool]
             ) -> tuple[CompiledTrigger, ...]:
    if not isinstance(raw, Mapping) or not (raw.get("triggers") or {}).get("alerts"):
        return ()
    try:
        spec = RunbookSpec.model_validate(raw)
    except (ValidationError, ValueError):
        return ()
    if spec.triggers is None or not is_valid(spec, key[0]):
        return ()
    triggers, problems = compile_triggers(key[0], key[1], spec.triggers.alerts,
                                          (p.name for p in spec.params))
    if problems:  # validate_spec reports these; belt and braces
        return ()
    return tuple(triggers)
