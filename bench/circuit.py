"""Circuit breaker micro-benchmark: engine decisions per second, and status writes.

    python bench/circuit.py [--calls 100000] [--seconds 600] [--rate 1000]

No cluster needed; it exercises the pure engine only (engine/circuit.py) and
prints figures, never asserts.

1. Decisions per second: one decision is ``admit`` followed by ``record`` of the
   call it let through, with time advancing 1 ms per call (1,000 calls/s) and
   one failure in five (the circuit stays Closed), for Count windows of 20,
   1,000 and 10,000 calls and Time windows of 60 and 600 s; then the same with
   an outage (every call fails), where most calls are rejected while Open.
2. Status writes for ``--rate`` calls/s over ``--seconds`` of simulated traffic
   (2% failures drawn from a seeded generator, 90% from minute 2 to 5), counted
   three ways: one patch per recorded call (rejected calls change nothing);
   batched, one patch per second in which the status (``to_status`` +
   ``encode_window``) changed; and the transitions alone, which a batching
   operator would still write at once. Also the size of one circuit's status.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from runbook_operator.api.circuitpolicy import CircuitPolicySpec  # noqa: E402
from runbook_operator.engine.circuit import (  # noqa: E402
    Call,
    CircuitState,
    admit,
    record,
)
from runbook_operator.engine.circuit_status import (  # noqa: E402
    encode_window,
    to_status,
)

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {platform.python_implementation()} "
            f"{platform.python_version()}, {platform.system()} {platform.release()}")


def policy(window: str, size: int) -> CircuitPolicySpec:
    return CircuitPolicySpec.model_validate({
        "slidingWindow": {"type": window, "size": size},
        "minimumCalls": 10,
        "failureRateThreshold": 50,
        "slowCallDurationThreshold": "30s",
        "slowCallRateThreshold": 80,
        "openDuration": "5s",
        "maxOpenDuration": "1m",
        "halfOpen": {"permittedCalls": 3},
    })


def decisions(pol: CircuitPolicySpec, calls: int, fail_every: int) -> tuple[float, int, int]:
    """(decisions per second, allowed, transitions) for ``calls`` admit+record pairs."""
    state = CircuitState()
    allowed = transitions = 0
    now = T0
    started = time.perf_counter()
    for i in range(calls):
        now += MS
        state, decision = admit(state, pol, now, key="openai")
        transitions += len(decision.transitions)
        if decision.allowed:
            allowed += 1
            call = Call(at=now, failure=i % fail_every == 0, slow=False, trial=decision.trial,
                        admitted_at=now)
            state, moved = record(state, pol, call, now)
            transitions += len(moved)
    elapsed = time.perf_counter() - started
    return calls / elapsed, allowed, transitions


def failing(second: int, draw: float) -> bool:
    """Healthy (2% failures), an outage from 2 to 5 minutes (90%), then healthy again."""
    return draw < (0.9 if 120 <= second < 300 else 0.02)


def writes(pol: CircuitPolicySpec, seconds: int, rate: int) -> dict[str, int]:
    state = CircuitState()
    step = timedelta(seconds=1) / rate
    per_call = batched = transitions = recorded = 0
    last_written = (to_status("openai", state), encode_window(state))
    biggest = 0
    draws = random.Random(7)  # the traffic, not the engine: it reads no randomness
    for second in range(seconds):
        for i in range(rate):
            now = T0 + timedelta(seconds=second) + step * i
            state, decision = admit(state, pol, now, key="openai")
            transitions += len(decision.transitions)
            if not decision.allowed:
                continue
            call = Call(at=now, failure=failing(second, draws.random()), trial=decision.trial,
                        admitted_at=now)
            state, moved = record(state, pol, call, now)
            transitions += len(moved)
            recorded += 1
            per_call += 1
        current = (to_status("openai", state), encode_window(state))
        if current != last_written:
            batched += 1
            last_written = current
            size = len(json.dumps({**current[0].to_k8s(), "window": current[1]}))
            biggest = max(biggest, size)
    return {"calls": seconds * rate, "recorded": recorded, "per_call": per_call,
            "batched": batched, "transitions": transitions, "status_bytes": biggest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args()

    print(f"machine: {machine()}")
    print(f"\nadmit+record decisions per second ({args.calls:,} calls, 1 ms apart):")
    print(f"  {'window':<12} {'20% failures (Closed)':>22} {'100% failures':>30}")
    for window, size in [("Count", 20), ("Count", 1000), ("Count", 10_000),
                         ("Time", 60), ("Time", 600)]:
        pol = policy(window, size)
        ok_rate, _, _ = decisions(pol, args.calls, fail_every=5)
        bad_rate, allowed, moved = decisions(pol, args.calls, fail_every=1)
        label = f"{window} {size}{'s' if window == 'Time' else ''}"
        print(f"  {label:<12} {ok_rate:>18,.0f} /s {bad_rate:>14,.0f} /s "
              f"({allowed:,} allowed, {moved} transitions)")

    print(f"\nstatus writes for {args.rate:,} calls/s over {args.seconds} s "
          "(2% failures, 90% from 120 s to 300 s, random):")
    for window, size in [("Count", 100), ("Time", 60)]:
        w = writes(policy(window, size), args.seconds, args.rate)
        label = f"{window} {size}{'s' if window == 'Time' else ''}"
        print(f"  {label}: {w['calls']:,} calls, {w['recorded']:,} recorded (the rest rejected)")
        print(f"    one patch per call:         {w['per_call']:>9,} writes "
              f"({w['per_call'] / args.seconds:,.1f}/s)")
        print(f"    batched every 1 s:          {w['batched']:>9,} writes "
              f"({w['batched'] / args.seconds:,.2f}/s)")
        print(f"    transitions (write at once): {w['transitions']:>8,}")
        print(f"    largest circuit status:     {w['status_bytes']:>9,} bytes "
              "(JSON, with the window encoding)")


if __name__ == "__main__":
    main()
