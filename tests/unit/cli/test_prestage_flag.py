"""``runbook-operator run --prestage``: true or false, anything else refused with a clear error.

Cases: ``--prestage=false`` reaches the settings as False, the default is True;
``--prestage=maybe`` (and an empty value) exits 2 with argparse's message naming
the flag, before any cluster is contacted.
"""

from __future__ import annotations

from typing import Any

import pytest

from runbook_operator.cli import operator
from runbook_operator.settings import OperatorSettings


def settings_for(monkeypatch: pytest.MonkeyPatch, *args: str) -> OperatorSettings:
    seen: list[OperatorSettings] = []

    def fake_run(settings: OperatorSettings) -> int:
        seen.append(settings)
        return 0
    monkeypatch.setattr(operator, "run_operator", fake_run)
    assert operator.main(["run", *args]) == 0
    return seen[0]


def test_prestage_is_on_by_default_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    assert settings_for(monkeypatch).prestage is True
    assert settings_for(monkeypatch, "--prestage=false").prestage is False
    assert settings_for(monkeypatch, "--prestage", "TRUE").prestage is True


@pytest.mark.parametrize("value", ["maybe", "", "0", "fals", "true\x00"])
def test_anything_else_is_refused(value: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as info:
        operator.main(["run", f"--prestage={value}"])
    assert info.value.code == 2
    assert "--prestage: expected true or false" in capsys.readouterr().err
