"""`make demo` end to end: hack/demo.sh tells its story, and the cluster shows it happened.

The script runs as `make demo` runs it (``hack/demo.sh up``), on a control plane of
its own (``RBO_CLUSTER_DIR`` in a temporary directory, not the session's: the demo
applies cluster-wide admission policies and a CircuitPolicy whose circuit it leaves
Open), twice: as `make demo` runs (through Alertmanager when it is cached) and with
``RBO_DEMO_ALERTMANAGER=0`` (the webhook payload posted by the script, as when
Alertmanager is not cached); ``hack/demo.sh down`` stops each. The
tests then read what it left behind through the API server, the sink's record and
Alertmanager's API, not only what it printed:

- the story: one execution, started by the alert AIResponseSlow{provider=openai}
  through the operator's receiver, Succeeded; its probe failed more than once
  (attempts > 1, retried with backoff) and ended Skipped with reason CircuitOpen;
  probe-fallback Succeeded; the CircuitPolicy's status has the openai circuit
  Open; approve-failover was approved by carol (``spec.approvals[].by``, filled by
  ``kubectl runbook approve`` from the API server's view of her certificate, and the
  step's message); the local sink received the Slack message of the Succeeded run
  and the execution records it Delivered;
- what it printed: the narration, the notification, the ``kubectl runbook get``
  tree (plain, no colour), the ``circuits`` table with the Open circuit, the time;
- the alert went through the real Alertmanager: it holds the alert whose
  fingerprint the execution records, and the receiver named in the execution is
  Alertmanager's. Skipped, with the reason, when the Alertmanager binary is not
  cached (the demo then posts the webhook payload itself and says so);
- without Alertmanager the demo says so, and the receiver answered its payload;
- it ends by printing the web view's URL (``kubectl runbook ui`` as carol), which
  answers with the token and 401 without;
- ``hack/demo.sh down`` (``make demo-down``) leaves no process of the demo (operator,
  sink, Alertmanager, web view) nor of the control plane running, and no demo state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster import LocalCluster

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "hack" / "demo.sh"
RBX = "runbookexecution.runbooks.dev"


@dataclass
class Demo:
    state: Path
    output: str
    cluster: LocalCluster
    execution: str
    mode: str  # alertmanager (when cached) or payload

    @property
    def dir(self) -> Path:
        return self.state / "demo"

    def get(self, *args: str) -> dict[str, Any]:
        out = self.cluster.kubectl("get", "-n", "default", *args, "-o", "json")
        return dict(json.loads(out.stdout))


def run_demo(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(DEMO), command], cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module", params=["alertmanager", "payload"])
def demo(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    state = tmp_path_factory.mktemp("demo-cluster")
    env = dict(os.environ, RBO_CLUSTER_DIR=str(state), PYTHON=sys.executable,
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if request.param == "payload":
        env["RBO_DEMO_ALERTMANAGER"] = "0"
    env.pop("KUBECONFIG", None)
    try:
        done = run_demo("up", env, timeout=400)  # a loaded machine: minutes
        if done.returncode != 0:
            log = state / "demo" / "operator.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) \
                if log.exists() else "(no operator log)"
            pytest.fail(f"hack/demo.sh up exited {done.returncode}:\n{done.stdout[-6000:]}\n"
                        f"--- operator log (last 30 lines)\n{tail}")
        yield Demo(state, done.stdout, LocalCluster(state_dir=state),
                   (state / "demo" / "execution").read_text().strip(), request.param)
    finally:
        pids = {p.stem: int(p.read_text()) for p in (state / "demo").glob("*.pid")}
        cluster = LocalCluster(state_dir=state)
        stopped = run_demo("down", env, timeout=60)
        assert stopped.returncode == 0, stopped.stdout
        # make demo-down leaves nothing running: its processes and the control plane
        assert not (state / "demo").exists()
        assert not [name for name, pid in pids.items() if alive(pid)], pids
        assert not any(cluster.status().values()), cluster.status()


def alertmanager_cached() -> bool:
    if os.environ.get("RBO_ALERTING_BIN"):
        return True
    return subprocess.run(["bash", str(REPO / "hack" / "build-alerting.sh"), "--cached"],
                          capture_output=True, check=False).returncode == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_story_happened(demo: Demo) -> None:
    body = demo.get(RBX, demo.execution)
    status, spec = body["status"], body["spec"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert spec["triggeredBy"]["kind"] == "Alert"
    assert spec["triggeredBy"]["alert"]["name"] == "AIResponseSlow"
    assert spec["params"]["provider"] == "openai"
    steps = status["steps"]
    probe = steps["probe"]
    assert probe["attempts"] > 1, probe
    assert (probe["phase"], probe["reason"]) == ("Skipped", "CircuitOpen"), probe
    assert "fallback probe-fallback runs instead" in probe["message"]
    assert steps["probe-fallback"]["phase"] == "Succeeded"
    assert steps["probe-fallback"]["outputs"]["healthy"] is True
    retried = [h for h in status["history"]
               if h["event"] == "StepRetrying" and h.get("step") == "probe"]
    assert len(retried) >= 2, retried  # each failed attempt waited its backoff
    # the circuit, as the policy's status has it
    policy = demo.get("circuitpolicy.runbooks.dev", "ai-providers")
    circuits = {c["key"]: c for c in policy["status"]["circuits"]}
    assert circuits["openai"]["state"] == "Open", circuits
    # the approval, recorded as the user the API server authenticated
    assert [(a["step"], a["decision"], a["by"]) for a in spec["approvals"]] == \
        [("approve-failover", "Approve", "carol")]
    approval = steps["approve-failover"]
    assert approval["phase"] == "Succeeded"
    assert "approved by carol" in approval["message"]
    assert steps["failover"]["phase"] == steps["verify"]["phase"] == "Succeeded"
    # the notification, on both sides
    received = [json.loads(line)["body"] for line in
                (demo.dir / "sink.jsonl").read_text().splitlines()]
    texts = [b["text"] for b in received]
    assert f"Runbook ai-service-recovery: {demo.execution} succeeded" in texts, texts
    delivered = {(n["event"], n["state"]) for n in status["notifications"]}
    assert ("Succeeded", "Delivered") in delivered, status["notifications"]


def test_what_it_printed(demo: Demo) -> None:
    out = demo.output
    narration = [line for line in out.splitlines() if line.startswith("==> ")]
    assert len(narration) >= 8, narration
    assert "\x1b[" not in out  # plain text: no colour codes
    assert f"Runbook ai-service-recovery: {demo.execution} succeeded" in out
    assert "step approve-failover approved by carol" in out
    tree = out[out.index(f"==> kubectl runbook get {demo.execution}"):]
    assert f"{demo.execution}  Succeeded" in tree
    assert "- probe  Skipped" in tree
    assert "CircuitOpen: ai-providers: circuit openai is Open" in tree
    assert "✔ probe-fallback  Succeeded" in tree
    assert "approved by carol at " in tree
    circuits = tree[tree.index("==> kubectl runbook circuits"):].splitlines()
    assert any(line.split()[:4] == ["ai-providers", "Normal", "openai", "Open"]
               for line in circuits), circuits
    assert narration[-1].startswith("==> Done in "), narration[-1]


def test_it_prints_the_web_views_url_and_serves_it(demo: Demo) -> None:
    urls = [line.strip() for line in demo.output.splitlines()
            if line.strip().startswith("http://127.0.0.1:") and "token=" in line]
    assert len(urls) == 1, demo.output[-2000:]
    assert urls[0].endswith(f"#/execution/default/{demo.execution}"), urls
    page = urls[0].split("#")[0]
    with urllib.request.urlopen(page, timeout=30) as response:  # as carol, with the token
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(page.split("?")[0], timeout=30)
    assert refused.value.code == 401


def test_the_alert_came_through_alertmanager(demo: Demo) -> None:
    source = (demo.dir / "alert-source").read_text().strip()
    if demo.mode == "alertmanager" and alertmanager_cached():
        assert source == "alertmanager", "Alertmanager is cached, yet the demo did not use it"
    if source != "alertmanager":
        pytest.skip("this run had no Alertmanager (RBO_DEMO_ALERTMANAGER=0, or its binary "
                    "is not cached: hack/build-alerting.sh, make tools); the demo posted "
                    "Alertmanager's webhook payload to the receiver itself")
    assert "amtool alert add alertname=AIResponseSlow" in demo.output
    alert = demo.get(RBX, demo.execution)["spec"]["triggeredBy"]["alert"]
    url = (demo.dir / "alertmanager.url").read_text().strip()
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as response:
        held = json.loads(response.read())
    fingerprints = {a["fingerprint"]: a for a in held}
    assert alert["fingerprint"] in fingerprints, (alert, held)
    assert fingerprints[alert["fingerprint"]]["labels"]["provider"] == "openai"
    assert alert["receiver"] == "runbook-operator"
    assert alert["groupKey"].startswith("{}:"), alert  # Alertmanager's own group key


def test_without_alertmanager_it_says_so(demo: Demo) -> None:
    if (demo.dir / "alert-source").read_text().strip() != "direct":
        pytest.skip("this run went through Alertmanager")
    assert "the demo posts its webhook payload itself" in demo.output
    assert '"outcomes": {"created": 1}' in demo.output  # the receiver's answer, printed
    alert = demo.get(RBX, demo.execution)["spec"]["triggeredBy"]["alert"]
    assert alert["receiver"] == "runbook-operator"
