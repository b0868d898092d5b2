"""Registers ``kubectl runbook ui`` on the plugin's parser, without importing aiohttp.

Why it exists: the plugin's start-up time matters (every Tab press runs it), so the
server and its dependencies are imported only when ``ui`` actually runs.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO


def add_command(sub: Any) -> None:
    ui = sub.add_parser(
        "ui", help="a live web view of executions, served on this machine as you",
        description="Serve a live web view of executions, runbooks and circuits on "
        "127.0.0.1 (a free port by default), acting with your kubeconfig: every action is "
        "your own API call. Prints (and opens) a URL carrying a random token; every "
        "request needs it.")
    scope = ui.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="list executions, runbooks and circuits of every namespace")
    ui.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    ui.add_argument("--address", help="address to bind (default 127.0.0.1); anything but "
                    "loopback is reachable by others, and a warning says so")
    ui.add_argument("--no-browser", action="store_true", help="print the URL, open nothing")
    ui.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG)")
    ui.set_defaults(handler=cmd_ui)


def cmd_ui(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from runbook_operator.cli.ui.server import cmd_ui as serve

    return serve(args, out, err)
