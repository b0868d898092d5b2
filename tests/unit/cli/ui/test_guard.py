"""The web view's request checks (cli/ui/guard.py) against hostile headers and names.

Token, Host and Origin come from any web page the user has open: each check is
tested on ordinary values and, with hypothesis, on arbitrary text (it never
raises, and never lets through anything but the exact allowed values).
"""

from __future__ import annotations

import ipaddress
import string

from hypothesis import given
from hypothesis import strategies as st

from runbook_operator.cli.ui import guard

HOSTS = guard.allowed_hosts("127.0.0.1", 8123)


def test_tokens_are_long_random_and_url_safe() -> None:
    tokens = {guard.new_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert len(token) >= 43 and set(token) <= set(string.ascii_letters + string.digits + "-_")


def test_only_the_exact_token_passes() -> None:
    token = guard.new_token()
    assert guard.token_ok(token, token)
    for wrong in (None, "", token[:-1], token + "x", token.upper(), " " + token):
        assert not guard.token_ok(token, wrong)
    assert not guard.token_ok("", "")


ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()))


@given(ANY_TEXT, ANY_TEXT)
def test_token_check_never_raises_and_needs_equality(expected: str, given_: str) -> None:
    # lone surrogates included: a query string may decode to anything
    assert guard.token_ok(expected, given_) == (bool(expected) and expected == given_)


def test_loopback_hosts_with_our_port_pass() -> None:
    for host in ("127.0.0.1:8123", "localhost:8123", "LOCALHOST:8123", "[::1]:8123"):
        assert guard.host_ok(host, HOSTS), host


def test_foreign_hosts_are_refused() -> None:
    for host in (None, "", "evil.example:8123", "127.0.0.1", "127.0.0.1:8124",
                 "127.0.0.1:8123.evil.example", "localhost.evil.example:8123",
                 "127.0.0.1:8123 ", "0.0.0.0:8123", "[::ffff:127.0.0.1]:8123"):
        assert not guard.host_ok(host, HOSTS), host


def test_an_explicit_address_is_allowed_too() -> None:
    assert guard.host_ok("10.1.2.3:80", guard.allowed_hosts("10.1.2.3", 80))
    assert guard.host_ok("[fd00::1]:80", guard.allowed_hosts("fd00::1", 80))
    assert not guard.host_ok("10.1.2.4:80", guard.allowed_hosts("10.1.2.3", 80))


def test_on_a_wildcard_address_any_ip_literal_passes_but_no_dns_name() -> None:
    hosts = guard.allowed_hosts("0.0.0.0", 80)
    for host in ("10.1.2.3:80", "[fd00::1]:80", "127.0.0.1:80", "localhost:80"):
        assert guard.host_ok(host, hosts), host
    for host in ("evil.example:80", "10.1.2.3:81", "10.1.2.3", "fd00::1:80", "[10.1.2.3]:80",
                 "10.1.2.3:080", "10.1.2.3:+80", "1.2.3.4.evil:80", "*ip*:80"):
        assert not guard.host_ok(host, hosts), host
    assert guard.origin_ok("http://10.1.2.3:80", hosts)
    assert not guard.origin_ok("http://evil.example:80", hosts)


def test_origin_absent_or_ours_passes_foreign_or_null_is_refused() -> None:
    assert guard.origin_ok(None, HOSTS)
    assert guard.origin_ok("http://127.0.0.1:8123", HOSTS)
    assert guard.origin_ok("http://localhost:8123", HOSTS)
    for origin in ("null", "", "https://127.0.0.1:8123", "http://evil.example",
                   "http://127.0.0.1:8123/", "http://127.0.0.1:8124",
                   "http://127.0.0.1:8123.evil.example", "file://", "127.0.0.1:8123"):
        assert not guard.origin_ok(origin, HOSTS), origin


@given(st.one_of(st.none(), st.text(max_size=200)))
def test_host_and_origin_checks_accept_only_allowed_values(value: str | None) -> None:
    if guard.host_ok(value, HOSTS):
        assert value is not None and value.lower() in HOSTS
    if guard.origin_ok(value, HOSTS):
        assert value is None or value.lower() in {f"http://{h}" for h in HOSTS}


@given(st.one_of(st.none(), st.text(max_size=200)))
def test_on_a_wildcard_only_ip_literals_with_our_port_pass(value: str | None) -> None:
    if guard.host_ok(value, guard.allowed_hosts("0.0.0.0", 8123)):
        assert value is not None
        name, _, port = value.lower().rpartition(":")
        assert port == "8123"
        assert name in ("localhost", "[::1]") or ipaddress.ip_address(name.strip("[]"))


@given(st.text(max_size=300))
def test_names_that_pass_are_safe_in_a_path_and_a_selector(value: str) -> None:
    for check in (guard.object_name, guard.namespace_name, guard.step_name):
        if check(value):
            assert value and set(value) <= set(string.ascii_lowercase + string.digits + "-.")
            assert "/" not in value and ".." not in value and "," not in value
            assert "\n" not in value and len(value) <= 253


def test_hostile_names_are_refused() -> None:
    for value in ("../secrets", "a/b", "a,b=c", "A", "", "-a", "a-", "a\n", "x" * 254,
                  "a..b", "%2e%2e", None, 3):
        assert not guard.object_name(value), value
    assert not guard.step_name("a.b") and not guard.step_name("x" * 64)
    assert guard.object_name("gated-1.x") and guard.step_name("approve-failover")
