"""`kubectl runbook ui` in a real browser (Debian's Chromium through Selenium) on the
real local control plane with the real operator.

Each case starts the plugin's own process (`kubectl-runbook ui --no-browser`) with a
user's kubeconfig, reads the URL it prints, and drives Chromium; every wait is on
the page's DOM (or the API) with a deadline, never a sleep.

Cases:
- the executions list shows a run that starts after the page opened (a watch
  event, nothing polled);
- a step's phase on the execution page goes Running -> Succeeded when its pod ends
  (kwok ends it after 3 s), and the next step's phase follows;
- with the chart's admission policies in force: mallory (may read and patch runs,
  not an approver) clicks Approve and the API server's refusal is shown on the
  page, nothing recorded; carol (group sre-oncall) approves with a comment, the
  page shows the gate Succeeded and the run Succeeded, and the API records the
  decision by carol with her comment. Screenshots: the execution page mid-run
  (waiting for approval) and after the approval;
- the run form of a runbook (integer, enum with a default, secret) starts a run with
  the typed value, the enum's default preselected and the secret shown redacted;
  Cancel cancels it; Retry from a step creates the resumed run; the circuits page
  lists a CircuitPolicy;
- a step's message `<img src=x onerror=alert(1)>` appears on the page as those
  characters: no img element, no alert;
- without the token the page, an asset and an event stream are 401 (the browser
  sees the refusal text, not the app); with the token but a foreign Host (DNS
  rebinding) it is 403.

Screenshots go to $RBO_ARTIFACTS/ui/ (default .artifacts/ui/ in the repository,
gitignored). Chromium: hack/install-browser.sh (`make browser`, part of `make test`).
"""

from __future__ import annotations

import http.client
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kube import GROUP, Kube, step
from test_admission import grant, policies, users  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("RBO_ARTIFACTS") or REPO / ".artifacts") / "ui"
XSS = "<img src=x onerror=alert(1)>"
WAIT = 90.0
RBX = "runbookexecutions"
UI_RIGHTS = [
    {"apiGroups": [GROUP], "resources": [RBX], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [GROUP], "resources": ["runbooks", "circuitpolicies"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events", "pods"], "verbs": ["get", "list", "watch"]}]


@contextmanager
def ui_process(kubeconfig: Path, namespace: str) -> Iterator[str]:
    """`kubectl-runbook ui -n NS --no-browser` as its own process; its printed URL."""
    binary = Path(sys.executable).parent / "kubectl-runbook"
    proc = subprocess.Popen([str(binary), "ui", "-n", namespace, "--no-browser",
                             "--kubeconfig", str(kubeconfig)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []],
                     daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise AssertionError(f"no URL from `kubectl runbook ui` (exit {proc.poll()}): "
                                     f"{proc.stderr.read() if proc.poll() is not None else ''}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line.startswith("http://127.0.0.1:"):
                yield line.strip()
                return
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium is not installed: run `make browser` (hack/install-browser.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def on_page(driver: Any, what: str, probe: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Wait for the DOM to satisfy ``probe``; fail naming ``what`` and the page's text."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def check(_: Any) -> Any:
        try:
            return probe()
        except StaleElementReferenceException:  # redrawn by a live update meanwhile
            return None
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check)
    except Exception as exc:
        body = driver.find_element("tag name", "body").text
        raise AssertionError(f"the page never showed {what}; it shows:\n{body}") from exc


def text_of(driver: Any, css: str) -> str | None:
    found = driver.find_elements("css selector", css)
    return found[0].text if found else None


def no_alert(driver: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert  # noqa: B018  (raises when there is none)
    except NoAlertPresentException:
        return True
    return False


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), path
    return path


def test_the_list_updates_when_a_run_starts(kube: Kube, cluster: Any, browser: Any) -> None:
    kube.ready_runbook("listed", {"steps": [step("only", duration="2s")]})
    with ui_process(cluster.kubeconfig, kube.ns) as url:
        browser.get(url + "#/executions")
        on_page(browser, "the executions table", lambda: browser.find_elements(
            "css selector", "#executions"))
        assert not browser.find_elements("css selector", 'tr[data-name="listed-1"]')
        kube.execute("listed-1", "listed")
        on_page(browser, "the new run in the list", lambda: text_of(
            browser, 'tr[data-name="listed-1"] .phase') in ("Pending", "Running"))
        on_page(browser, "the run Succeeded in the list", lambda: text_of(
            browser, 'tr[data-name="listed-1"] .phase') == "Succeeded")
        assert no_alert(browser)


def test_a_steps_phase_changes_on_the_page_when_its_pod_ends(kube: Kube, cluster: Any,
                                                             browser: Any) -> None:
    kube.ready_runbook("phased", {"steps": [step("probe", duration="3s"),
                                            step("after", after=["probe"])]})
    with ui_process(cluster.kubeconfig, kube.ns) as url:
        browser.get(url + f"#/execution/{kube.ns}/phased-1")  # before it exists
        on_page(browser, "that the run does not exist yet",
                lambda: "No execution phased-1" in browser.find_element("id", "main").text)
        kube.execute("phased-1", "phased")
        on_page(browser, "probe Running", lambda: text_of(
            browser, '[data-phase="probe"]') == "Running")
        assert text_of(browser, '[data-phase="after"]') == "Pending"
        on_page(browser, "probe Succeeded after its pod ended", lambda: text_of(
            browser, '[data-phase="probe"]') == "Succeeded")
        pods = kube.core.list_namespaced_pod(
            kube.ns, label_selector="runbooks.dev/step=probe").items
        assert pods and pods[0].status.phase == "Succeeded"  # the pod did end
        on_page(browser, "the run Succeeded", lambda: text_of(browser, "#phase") ==
                "Succeeded" and text_of(browser, '[data-phase="after"]') == "Succeeded")
        assert browser.find_elements("css selector", "#history tr")  # the history, live


def test_a_step_message_with_markup_is_inert(kube: Kube, cluster: Any, browser: Any) -> None:
    kube.ready_runbook("hostile", {"steps": [step("probe", exit_code=3, message=XSS)]})
    kube.execute("hostile-1", "hostile")
    body = kube.wait_finished("hostile-1")
    assert XSS in body["status"]["steps"]["probe"]["message"]
    with ui_process(cluster.kubeconfig, kube.ns) as url:
        browser.get(url + f"#/execution/{kube.ns}/hostile-1")
        shown = on_page(browser, "the step's message", lambda: text_of(
            browser, '[data-message="probe"]'))
        assert XSS in shown
        assert not browser.find_elements("css selector", "#main img")
        assert no_alert(browser)
        markup = browser.execute_script(
            "return document.querySelector('[data-message=\"probe\"]').innerHTML")
        assert "&lt;img" in markup and "<img" not in markup


def test_no_token_is_401_and_a_foreign_host_is_refused(kube: Kube, cluster: Any,
                                                        browser: Any) -> None:
    with ui_process(cluster.kubeconfig, kube.ns) as url:
        parts = urlsplit(url)
        token = parse_qs(parts.query)["token"][0]
        browser.get(f"http://{parts.netloc}/")
        on_page(browser, "the refusal", lambda: "token is required" in
                browser.find_element("tag name", "body").text)
        assert not browser.find_elements("id", "main")

        def status(path: str, host: str = parts.netloc) -> int:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
            try:
                conn.request("GET", path, headers={"Host": host})
                return conn.getresponse().status
            finally:
                conn.close()
        for path in ("/", "/static/app.js", "/api/stream/executions",
                     f"/api/stream/execution/{kube.ns}/x", "/?token=wrong"):
            assert status(path) == 401, path
        for host in ("evil.example", f"evil.example:{parts.port}",
                     f"rebind.evil.example:{parts.port}"):
            assert status(f"/?token={token}", host) == 403, host
            assert status(f"/api/stream/executions?token={token}", host) == 403, host
        assert status(f"/?token={token}") == 200


def test_run_from_the_form_then_cancel_and_retry_from_a_step(kube: Kube, cluster: Any,
                                                              browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    kube.ready_runbook("formed", {
        "params": [{"name": "replicas", "type": "integer", "required": True},
                   {"name": "mode", "enum": ["fast", "safe"], "default": "safe"},
                   {"name": "key", "secret": True}],
        "steps": [step("work", duration="10m")]})
    kube.circuit_policy("ui-policy")
    with ui_process(cluster.kubeconfig, kube.ns) as url:
        browser.get(url + "#/runbooks")
        form = on_page(browser, "the run form", lambda: browser.find_element(
            "css selector", 'form[data-runbook="formed"]'))
        form.find_element("css selector", '[data-param="replicas"]').send_keys("3")
        secret = form.find_element("css selector", '[data-param="key"]')
        assert secret.get_attribute("type") == "password"
        secret.send_keys("hunter22-secret")
        form.find_element("css selector", 'button[type="submit"]').click()
        name = on_page(browser, "the new run's page", lambda: (text_of(browser, "#name") or "")
                       .startswith("formed-") and text_of(browser, "#name"))
        on_page(browser, "its parameters", lambda: text_of(
            browser, '[data-param="replicas"]') == "3")
        assert text_of(browser, '[data-param="key"]') == "[REDACTED]"
        assert "hunter22-secret" not in browser.page_source
        body = kube.get(RBX, name) or {}
        assert body["spec"]["params"]["replicas"] == 3  # the declared type, as the CLI sends
        assert body["spec"]["params"]["mode"] == "safe"  # the enum's default, preselected
        on_page(browser, "work Running", lambda: text_of(
            browser, '[data-phase="work"]') == "Running")
        browser.find_element("id", "cancel").click()
        browser.switch_to.alert.accept()  # "Cancel NAME? finally steps still run."
        on_page(browser, "the run Cancelled", lambda: text_of(browser, "#phase") == "Cancelled")
        assert (kube.get(RBX, name) or {})["spec"]["cancel"] is True
        Select(browser.find_element("id", "retry-from")).select_by_value("work")
        browser.find_element("id", "retry").click()
        retried = on_page(browser, "the retry's page", lambda: text_of(browser, "#name") not in
                          (None, name) and text_of(browser, "#name"))
        assert (kube.get(RBX, retried) or {})["spec"]["resumeFrom"] == {"execution": name,
                                                                       "step": "work"}
        browser.get(url + "#/circuits")
        on_page(browser, "the CircuitPolicy", lambda: "ui-policy" in (
            text_of(browser, "#circuits") or ""))
        assert no_alert(browser)


@pytest.mark.usefixtures("policies")
def test_carol_approves_from_the_page_and_mallorys_approve_is_refused(
        kube: Kube, cluster: Any, browser: Any) -> None:
    grant(kube, "carol", UI_RIGHTS)
    grant(kube, "mallory", UI_RIGHTS)
    kube.ready_runbook("gated", {"steps": [
        step("probe", message='{"healthy": false}'),
        {"name": "gate", "type": "approval", "dependsOn": ["probe"],
         "approval": {"timeout": "10m", "approvers": {"groups": ["sre-oncall"]}}},
        step("deploy", after=["gate"], duration="2s")]})
    kube.execute("gated-1", "gated")
    page = f"#/execution/{kube.ns}/gated-1"

    with ui_process(cluster.user_kubeconfig("mallory"), kube.ns) as url:
        browser.get(url + page)
        button = on_page(browser, "mallory's Approve button", lambda: browser.find_element(
            "css selector", '[data-approve="gate"]'))
        assert "as mallory" in on_page(browser, "who is acting", lambda: text_of(
            browser, "#who"))
        button.click()
        flash = on_page(browser, "the API server's refusal", lambda: text_of(
            browser, "#flash.error"))
        assert "not approved" in flash and "user mallory is not an approver of step gate" \
            in flash, flash
    assert not (kube.get(RBX, "gated-1") or {})["spec"].get("approvals")

    with ui_process(cluster.user_kubeconfig("carol", ["sre-oncall"]), kube.ns) as url:
        browser.get(url + page)
        on_page(browser, "the gate waiting", lambda: text_of(
            browser, '[data-phase="gate"]') == "WaitingForApproval")
        assert text_of(browser, '[data-phase="probe"]') == "Succeeded"
        assert 'outputs {"healthy": false}' in (text_of(browser, '[data-step="probe"]') or "")
        mid = screenshot(browser, "execution-mid-run.png")
        browser.find_element("css selector", '[data-comment="gate"]').send_keys("go ahead")
        browser.find_element("css selector", '[data-approve="gate"]').click()
        flash = on_page(browser, "carol's approval confirmed", lambda: text_of(
            browser, "#flash.ok"))
        assert "step gate approved by carol" in flash, flash
        on_page(browser, "the gate Succeeded", lambda: text_of(
            browser, '[data-phase="gate"]') == "Succeeded")
        on_page(browser, "the run Succeeded", lambda: text_of(browser, "#phase") ==
                "Succeeded" and text_of(browser, '[data-phase="deploy"]') == "Succeeded")
        assert "Approve by carol: go ahead" in (text_of(browser, '[data-step="gate"]') or "")
        after = screenshot(browser, "execution-after-approval.png")
        assert no_alert(browser)
    body = kube.get(RBX, "gated-1") or {}
    assert body["spec"]["approvals"] == [{"step": "gate", "decision": "Approve", "by": "carol",
                                          "comment": "go ahead"}]
    assert body["status"]["phase"] == "Succeeded"
    assert mid.stat().st_size > 0 and after.stat().st_size > 0
    print(f"screenshots: {mid} {after}")
