"""Redaction: planted secrets never survive, everything else is left exactly as it was.

Also: a Redactor learns and forgets literal secrets per owner (an execution), and
the process redactor SECRETS is what the log pipeline uses by default.
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.engine.redact import REDACTED, Redactor, redact, redact_text

CANARY = "CANARYc4n4ry9QZX"

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_like = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)

SENSITIVE_KEYS = ["password", "passwd", "token", "secret", "authorization", "api_key", "apikey",
                  "api-key", "cookie", "set-cookie", "private_key", "credential"]
sensitive_key = st.builds(
    lambda prefix, word, suffix, upper: (prefix + (word.upper() if upper else word) + suffix),
    st.sampled_from(["", "db_", "X-", "my."]), st.sampled_from(SENSITIVE_KEYS),
    st.sampled_from(["", "s", "_value", "-Header"]), st.booleans())

# Text that cannot look like a credential: no sensitive word, no separators.
SAFE_WORDS = ("hello", "world", "step", "drain", "node", "ok", "42", "ns", "job", "pod", "Job")
safe_text = st.lists(st.sampled_from(SAFE_WORDS) | st.text(string.digits + " _-.,/", max_size=6),
                     max_size=6).map(" ".join)
safe_key = st.sampled_from(["name", "step", "namespace", "phase", "count", "message", "items"])
safe_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | safe_text
safe_like = st.recursive(
    safe_leaf,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(safe_key, children, max_size=4),
    max_leaves=20,
)


def plant(tree: Any, path: list[int], item: Any) -> Any:
    """``tree`` with ``item`` placed somewhere inside (chosen by ``path``)."""
    if isinstance(tree, dict) and tree and path:
        keys = sorted(tree, key=repr)
        k = keys[path[0] % len(keys)]
        return {**tree, k: plant(tree[k], path[1:], item)}
    if isinstance(tree, list) and tree and path:
        i = path[0] % len(tree)
        return [*tree[:i], plant(tree[i], path[1:], item), *tree[i + 1:]]
    return [tree, item]


def dumps(value: Any) -> str:
    return json.dumps(value, default=repr)


@given(json_like)
def test_never_raises_and_is_idempotent(value: Any) -> None:
    once = redact(value)
    assert redact(once) == once or dumps(redact(once)) == dumps(once)


@given(st.text())
def test_text_never_raises_and_is_idempotent(text: str) -> None:
    once = redact_text(text)
    assert isinstance(once, str)
    assert redact_text(once) == once


@given(json_like, sensitive_key, st.lists(st.integers(0, 10), max_size=5),
       st.sampled_from([CANARY, [CANARY], {"nested": CANARY}, 12345]))
def test_values_under_sensitive_keys_never_survive(tree: Any, key: str, path: list[int],
                                                   secret: Any) -> None:
    result = redact(plant(tree, path, {key: secret}))
    assert CANARY not in dumps(result)
    assert REDACTED in dumps(result)


@given(st.text(max_size=20), st.text(max_size=20), sensitive_key,
       st.sampled_from(["{k}={v}", "{k}: {v}", '"{k}": "{v}"', "'{k}': '{v}'", "{k} = {v}",
                        '\\"{k}\\": \\"{v}\\"', "Authorization: Bearer {v}", "bearer {v}",
                        "Basic {v}==", "https://user:{v}@example.com/x",
                        "postgres://bob:{v}@db:5432/app"]))
def test_credentials_in_text_never_survive(before: str, after: str, key: str,
                                           shape: str) -> None:
    planted = shape.format(k=key, v=CANARY)
    text = f"{before} {planted} {after}"
    for result in (redact_text(text), redact({"message": text}), redact([text])):
        assert CANARY not in dumps(result)


@given(json_like, st.lists(st.integers(0, 10), max_size=5), st.text(max_size=8),
       st.text(max_size=8), st.text(string.ascii_letters + string.digits, min_size=3,
                                    max_size=24))
def test_literal_secrets_never_survive(tree: Any, path: list[int], before: str, after: str,
                                       tail: str) -> None:
    secret = "K" + tail  # a letter no JSON escape contains
    redactor = Redactor([secret, "ab"])
    result = redactor.value(plant(tree, path, f"{before}{secret}{after}"))
    assert secret not in dumps(result)
    assert redactor.value(result) == result or dumps(redactor.value(result)) == dumps(result)


@settings(max_examples=200)
@given(safe_like)
def test_non_sensitive_data_is_unchanged(value: Any) -> None:
    assert redact(value) == value or dumps(redact(value)) == dumps(value)
    assert Redactor(["s3cr3t-value"]).value(value) == value or \
        dumps(Redactor(["s3cr3t-value"]).value(value)) == dumps(value)


@pytest.mark.parametrize(("text", "expected"), [
    ("auth failed: password=hunter2", "auth failed: password=[REDACTED]"),
    ("Authorization: Bearer eyJhbGciOi.x.y", "Authorization: Bearer [REDACTED]"),
    ("header Basic dXNlcjpwYXNz", "header Basic [REDACTED]"),
    ('{"api_key": "k\\"x", "ok": 1}', '{"api_key": "[REDACTED]", "ok": 1}'),
    ("db_password: s3cret, user: bob", "db_password: [REDACTED], user: bob"),
    ("GET /x?X-Auth-Token=abc&page=2", "GET /x?X-Auth-Token=[REDACTED]&page=2"),
    ("fetch https://bob:pa55@git.example/repo failed",
     "fetch https://bob:[REDACTED]@git.example/repo failed"),
    ("Set-Cookie: session=abc", "Set-Cookie: [REDACTED]"),
    ("basic setup complete; 3 tokens left", "basic setup complete; 3 tokens left"),
    ("step drain finished in 3s", "step drain finished in 3s"),
])
def test_text_examples(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_structure_is_kept() -> None:
    value = {"a": ("x", ["Bearer t0k3n"]), "Token": {"deep": 1}, "n": 1.5,
             "s": frozenset({"ok"}), "apiKey": None}
    assert redact(value) == {"a": ("x", ["Bearer [REDACTED]"]), "Token": REDACTED, "n": 1.5,
                             "s": frozenset({"ok"}), "apiKey": REDACTED}


def test_cycles_and_odd_objects_do_not_raise() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert redact(cyclic) == REDACTED
    marker = object()
    assert redact({"x": marker})["x"] is marker


def test_redactor_literals() -> None:
    redactor = Redactor(["s3cr3tvalue", "abc", "s3cr3t", 12345])  # type: ignore[list-item]
    assert len(redactor) == 3  # "abc" is too short to be worth hiding
    assert redactor.text("x s3cr3tvalue abc s3cr3t 12345") == \
        "x [REDACTED] abc [REDACTED] [REDACTED]"
    assert redactor.value({"out": ["id 12345"], "password": "p"}) == \
        {"out": ["id [REDACTED]"], "password": REDACTED}
    assert Redactor([]).text("plain") == "plain"


def test_a_redactor_learns_and_forgets_per_owner() -> None:
    redactor = Redactor()
    redactor.learn(("ns", "a"), ["alpha-secret", 12345, "no"])  # "no": too short to hunt
    redactor.learn(("ns", "b"), ["beta-secret"])
    assert redactor.text("alpha-secret beta-secret 12345 no") == \
        f"{REDACTED} {REDACTED} {REDACTED} no"
    redactor.learn(("ns", "a"), ["alpha-2"])  # replaces what a had taught
    assert redactor.text("alpha-secret alpha-2") == f"alpha-secret {REDACTED}"
    redactor.forget(("ns", "b"))
    redactor.forget(("ns", "never"))
    assert redactor.text("beta-secret") == "beta-secret"
    assert len(redactor) == 1


def test_the_process_redactor_is_the_logs_default() -> None:
    import io

    from runbook_operator.observability.logs import configure_logging, get_logger
    from runbook_operator.observability.secrets import SECRETS

    buf = io.StringIO()
    configure_logging("json", stream=buf)
    SECRETS.learn("test-owner", ["learned-at-runtime"])
    try:
        get_logger("x").info("value learned-at-runtime", extra_field="learned-at-runtime")
    finally:
        SECRETS.forget("test-owner")
    assert "learned-at-runtime" not in buf.getvalue()
    assert REDACTED in buf.getvalue()
