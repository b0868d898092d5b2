"""How fast ``kubectl runbook`` starts: the figure behind the 300 ms target of issue #13.

Why it exists: every Tab press runs the plugin, and an on-call engineer notices a
slow one. Runs each command ``--runs`` times as a fresh process (what the shell
does) and prints median and p90 wall time; with ``--kubeconfig`` it also times
commands that talk to the cluster (those import the kubernetes client).

    python bench/cli_startup.py [--runs 20] [--kubeconfig PATH -n NAMESPACE [--execution X]]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = str(Path(sys.executable).parent / "kubectl-runbook")


def timed(argv: list[str], runs: int, env: dict[str, str]) -> list[float]:
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   check=False)  # warm-up: writes bytecode unless PYTHONDONTWRITEBYTECODE
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        # no timeout=: with one, Popen.wait polls in steps of up to 50 ms
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                       check=False)
        took.append((time.perf_counter() - start) * 1000)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--kubeconfig")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--execution", help="also time `get` of this execution")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE (compile sources on every start); "
                             "by default it is unset, as for an installed package")
    args = parser.parse_args()
    env = dict(os.environ)
    if not args.no_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    commands = [
        ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
        ("--help", [PLUGIN, "--help"]),
        ("__complete g (no cluster)", [PLUGIN, "__complete", "g"]),
        ("completion bash", [PLUGIN, "completion", "bash"]),
        ("validate -f examples/", [PLUGIN, "validate", "-f", str(ROOT / "examples")]),
    ]
    if args.kubeconfig:
        env["KUBECONFIG"] = args.kubeconfig
        ns = ["-n", args.namespace]
        commands += [("list", [PLUGIN, "list", *ns]),
                     ("__complete get '' (names)", [PLUGIN, "__complete", "get", ""])]
        if args.execution:
            commands.append(("get EXECUTION", [PLUGIN, "get", args.execution, *ns]))
    print(f"{'command':32s} {'median':>8s} {'p90':>8s}  ({args.runs} runs)")
    for label, argv in commands:
        took = sorted(timed(argv, args.runs, env))
        p90 = took[min(len(took) - 1, int(len(took) * 0.9))]
        print(f"{label:32s} {statistics.median(took):6.0f}ms {p90:6.0f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
