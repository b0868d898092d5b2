#!/usr/bin/env python3
"""The demo's notification sink: a Slack incoming webhook (or any JSON webhook) on 127.0.0.1.

`make demo` (hack/demo.sh) points the demo Runbook's Slack notifications at it
through a Secret, so the story ends with a message delivered without any
network. Every POST is answered 200, appended as one JSON line ``{"path",
"idempotencyKey", "body"}`` to ``--out``, and summarised on stdout (the Slack
``text``, else the webhook's event).

    python hack/demo_sink.py serve --port-file PATH --out sink.jsonl   # any free port
    python hack/demo_sink.py show sink.jsonl --event succeeded           # print a message

Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def summary(body: Any) -> str:
    """One line for a received body: Slack's ``text``, a webhook's event, or the JSON."""
    if isinstance(body, dict):
        if isinstance(body.get("text"), str):
            return " ".join(body["text"].split())
        execution = body.get("execution")
        if isinstance(execution, dict) and "event" in body:
            return f"{body['event']}: {execution.get('name')} {execution.get('phase')}"
    return json.dumps(body)[:200]


def serve(port: int, out: Path, port_file: Path | None) -> None:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            record = {"path": self.path, "idempotencyKey": self.headers.get("Idempotency-Key"),
                      "body": body}
            with lock, out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{time.strftime('%H:%M:%S')} {self.path} {summary(body)}", flush=True)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(f"{server.server_address[1]}\n")
        tmp.replace(port_file)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def render(body: Any) -> str:
    """A Slack Block Kit message as plain text: header, fields, sections, context."""
    if not isinstance(body, dict) or not isinstance(body.get("blocks"), list):
        return json.dumps(body, indent=2)
    lines: list[str] = []
    for block in body["blocks"]:
        if not isinstance(block, dict):
            continue
        texts = [block.get("text")] if block.get("text") else []
        texts += block.get("fields") or []
        texts += block.get("elements") or []
        for item in texts:
            text = item.get("text") if isinstance(item, dict) else None
            if isinstance(text, str):
                lines.append(text.replace("*", "").replace("```", "").replace("\n", ": ", 1)
                             if block.get("type") == "section" and "fields" in block
                             else text.replace("```", ""))
    return "\n".join(lines)


def show(out: Path, event: str) -> int:
    """Print the last received message whose summary contains ``event``."""
    found = None
    if out.exists():
        for line in out.read_text().splitlines():
            record = json.loads(line)
            if event.lower() in summary(record["body"]).lower():
                found = record
    if found is None:
        print(f"no message about {event!r} in {out}", file=sys.stderr)
        return 1
    print(f"POST {found['path']}  (Idempotency-Key {found['idempotencyKey']})")
    print(render(found["body"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="receive notifications")
    run.add_argument("--port", type=int, default=0, help="default: any free port")
    run.add_argument("--port-file", type=Path, help="write the port here once listening")
    run.add_argument("--out", type=Path, required=True, help="JSON lines of what arrived")
    look = sub.add_parser("show", help="print the last message about an event")
    look.add_argument("out", type=Path)
    look.add_argument("--event", default="succeeded", help="text its summary contains")
    args = parser.parse_args(argv)
    if args.command == "show":
        return show(args.out, args.event)
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port, args.out, args.port_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
