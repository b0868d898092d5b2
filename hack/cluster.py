#!/usr/bin/env python3
"""Start and stop a real, local Kubernetes control plane for development and tests.

Why this exists: the operator's behaviour depends on real API-server semantics
(admission webhooks, RBAC, the Job and garbage-collector controllers, watch
semantics) that fakes get subtly wrong, but a kind/Docker cluster is too heavy and
not always available. This runs the genuine upstream binaries (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler) as plain local processes
and uses kwok instead of a kubelet, so pods are "run" by rules in hack/kwok/
rather than by containers. A warm start takes a few seconds.

The same code serves humans and pytest:

    python hack/cluster.py up       # start (idempotent), print the KUBECONFIG
    python hack/cluster.py env      # eval "$(python hack/cluster.py env)"
    python hack/cluster.py status
    python hack/cluster.py down     # stop what `up` started, wipe etcd data
    python hack/cluster.py user alice --group sre   # a kubeconfig acting as alice

    from cluster import LocalCluster   # tests/integration/conftest.py
    c = LocalCluster(); c.up(); c.kubectl("get", "nodes"); c.down()

Environment:
    RBO_CLUSTER_DIR       state dir (default <repo>/.cluster): certs, kubeconfig,
                          pid files, logs/, etcd data.
    RBO_CONTROLPLANE_BIN  directory with prebuilt binaries; otherwise
                          hack/build-controlplane.sh is run when any is missing.
    RBO_CONTROLLER_MANAGER_FLAGS
                          extra kube-controller-manager flags, space-separated,
                          appended at `up` (e.g. "--concurrent-job-syncs=50", as a
                          large cluster would set it); unset: the defaults below.

Dependencies: the Python standard library, PyYAML and the `openssl` CLI.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HACK_DIR = Path(__file__).resolve().parent
REPO_ROOT = HACK_DIR.parent
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
TOOLS = ("kubectl",)
# Start order; `down` stops in reverse so clients go before the servers they use.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

NODE_NAME = "kwok-node-0"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service

# kwok's shipped stages (copied next to the binaries by build-controlplane.sh),
# relative to <bin>/../kwok-stages, plus our own from hack/kwok/. Standalone kwok
# does nothing to objects unless it is given stages.
KWOK_DEFAULT_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
KWOK_OWN_STAGES_DIR = HACK_DIR / "kwok"


class ClusterError(RuntimeError):
    """The control plane could not be started, or did not become ready."""


def _free_port() -> int:
    # Bind to port 0 and let the kernel pick; the tiny race until the component
    # binds it is acceptable for a developer/test cluster.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (HACK_DIR / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def default_bin_dir() -> Path:
    """Where build-controlplane.sh puts the binaries (mirrors its cache key)."""
    v = _read_versions()
    cache_root = os.environ.get("RBO_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runbook-operator"
    )
    key = f"k8s-{v['K8S_VERSION']}-etcd-{v['ETCD_VERSION']}-kwok-{v['KWOK_VERSION']}"
    return Path(cache_root) / key / "bin"


def _missing(bin_dir: Path) -> list[str]:
    return [b for b in (*BINARIES, *TOOLS) if not os.access(bin_dir / b, os.X_OK)]


def _pid_runs(pid: int, binary: str) -> bool:
    """Whether live process `pid` runs the executable named `binary`.

    Checks /proc/<pid>/exe, which fails for gone and zombie processes, and the
    cmdline's argv[0]. The cmdline alone is not enough: right after exec() it can
    still read empty (Popen returns before the kernel has filled it in).
    """
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return False
    if Path(exe.removesuffix(" (deleted)")).name != binary:
        return False
    return not argv0 or Path(argv0).name == binary


@dataclass(frozen=True)
class _Certs:
    ca_crt: Path
    ca_key: Path
    serving_crt: Path
    serving_key: Path
    admin_crt: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


class LocalCluster:
    """A local control plane whose state lives in one directory.

    Processes are started in their own session, so they outlive the Python
    process that started them (the CLI returns after `up`); `down` finds them
    again through pid files.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        bin_dir: Path | str | None = None,
        *,
        ready_timeout: float = 120.0,
    ) -> None:
        self.state_dir = Path(
            state_dir or os.environ.get("RBO_CLUSTER_DIR") or REPO_ROOT / ".cluster"
        ).resolve()
        bin_dir = bin_dir or os.environ.get("RBO_CONTROLPLANE_BIN")
        self._bin_dir: Path | None = Path(bin_dir).resolve() if bin_dir else None
        self.ready_timeout = ready_timeout
        self._server = ""  # https://127.0.0.1:<port>, known once up or read from kubeconfig
        # Popen handles of what this process started: kept so they are reaped, not
        # reported as leaked; other processes (the CLI's `down`) go by pid files.
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.logs_dir = self.state_dir / "logs"
        self.run_dir = self.state_dir / "run"
        self.etcd_dir = self.state_dir / "etcd"
        self.certs_dir = self.state_dir / "certs"
        self._certs = _Certs(
            ca_crt=self.certs_dir / "ca.crt",
            ca_key=self.certs_dir / "ca.key",
            serving_crt=self.certs_dir / "apiserver.crt",
            serving_key=self.certs_dir / "apiserver.key",
            admin_crt=self.certs_dir / "admin.crt",
            admin_key=self.certs_dir / "admin.key",
            sa_key=self.certs_dir / "sa.key",
            sa_pub=self.certs_dir / "sa.pub",
        )

    # ------------------------------------------------------------------ binaries

    @property
    def bin_dir(self) -> Path:
        """Directory holding the control-plane binaries, building them if needed."""
        if self._bin_dir is None:
            candidate = default_bin_dir()
            if _missing(candidate):
                candidate = self._build()
            self._bin_dir = candidate
        if missing := _missing(self._bin_dir):
            raise ClusterError(f"missing binaries in {self._bin_dir}: {', '.join(missing)}")
        return self._bin_dir

    def _build(self) -> Path:
        print(
            ">> control-plane binaries missing; running hack/build-controlplane.sh", file=sys.stderr
        )
        proc = subprocess.run(
            [str(HACK_DIR / "build-controlplane.sh")], stdout=subprocess.PIPE, text=True, check=True
        )
        return Path(proc.stdout.strip().splitlines()[-1])

    @property
    def kwok_stages_dir(self) -> Path:
        return self.bin_dir.parent / "kwok-stages"

    # ------------------------------------------------------------------ public API

    def up(self) -> None:
        """Start the control plane and wait until pods can be scheduled and run.

        Idempotent: if every component is already running and the API server is
        ready, this only returns.
        """
        if self.is_up():
            return
        # Leftovers of a crashed or half-started cluster would make ports and
        # etcd data inconsistent: start from a clean slate (certs are kept).
        self.down()
        bin_dir = self.bin_dir
        if shutil.which("openssl") is None:
            raise ClusterError("the `openssl` CLI is needed to generate certificates")
        for d in (self.logs_dir, self.run_dir, self.certs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._ensure_certs()

        etcd_port, etcd_peer_port, api_port = _free_port(), _free_port(), _free_port()
        self._server = f"https://127.0.0.1:{api_port}"
        self._write_kubeconfig(self._server)
        try:
            self._start_etcd(bin_dir, etcd_port, etcd_peer_port)
            self._start_apiserver(bin_dir, etcd_port, api_port)
            self._wait_for("kube-apiserver /readyz", self._apiserver_ready)
            self._start_controller_manager(bin_dir)
            self._start_scheduler(bin_dir)
            self._start_kwok(bin_dir)
            self._ensure_node()
            self._wait_for("node Ready", self._node_ready)
            self._wait_for("default ServiceAccount", self._default_sa_exists)
        except BaseException:
            self._report_dead()
            self.down()
            raise

    def down(self) -> None:
        """Stop every process `up` started and wipe etcd data (certs are kept)."""
        for name in reversed(COMPONENTS):
            self._stop(name)
        shutil.rmtree(self.etcd_dir, ignore_errors=True)
        self.kubeconfig.unlink(missing_ok=True)

    def is_up(self) -> bool:
        """True if all components run and the API server answers /readyz."""
        if not all(self._pid(name) for name in COMPONENTS) or not self.kubeconfig.exists():
            return False
        try:
            self._server = self._server_from_kubeconfig()
            return self._apiserver_ready()
        except (OSError, KeyError, ValueError, yaml.YAMLError):
            return False

    def status(self) -> dict[str, int | None]:
        """Pid of each component, or None if it is not running."""
        return {name: self._pid(name) for name in COMPONENTS}

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached kubectl against this cluster; raises on failure if check."""
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=check,
            input=input,
        )

    def controller_manager_args(self) -> list[str] | None:
        """The running kube-controller-manager's flags (argv without the program), or None.

        Read from the live process, so what a benchmark prints is what runs.
        """
        pid = self._pid("kube-controller-manager")
        if pid is None:
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return [a.decode() for a in argv[1:] if a]

    def log_tails(self, lines: int = 30) -> dict[str, str]:
        """The last `lines` lines of each component log (for failure reports)."""
        out: dict[str, str] = {}
        for name in COMPONENTS:
            path = self.logs_dir / f"{name}.log"
            if path.exists():
                with path.open("rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - 256 * lines))
                    tail = f.read().decode(errors="replace").splitlines()[-lines:]
                out[name] = "\n".join(tail)
        return out

    def env_lines(self) -> list[str]:
        return [
            f"export KUBECONFIG={self.kubeconfig}",
            f'export PATH="{self.bin_dir}:$PATH"',
        ]

    # ------------------------------------------------------------------ certificates

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    def _ensure_certs(self) -> None:
        c = self._certs
        if all(p.exists() for p in vars(c).values()):
            return  # reusing certs keeps `up` fast and existing kubeconfigs valid
        days = "3650"
        self._openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", days,
            "-keyout", str(c.ca_key), "-out", str(c.ca_crt), "-subj", "/CN=rbo-local-ca",
        )  # fmt: skip

        issue = self._issue
        sans = ",".join(
            [
                "IP:127.0.0.1",
                f"IP:{SERVICE_IP}",
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
            ]
        )
        issue(
            c.serving_crt, c.serving_key, "/CN=kube-apiserver",
            f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n",
        )  # fmt: skip
        # O=system:masters makes this identity cluster-admin without any RBAC binding.
        issue(
            c.admin_crt, c.admin_key, "/O=system:masters/CN=rbo-admin",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
        )  # fmt: skip
        self._openssl("genrsa", "-out", str(c.sa_key), "2048")
        self._openssl("rsa", "-in", str(c.sa_key), "-pubout", "-out", str(c.sa_pub))
        for key in (c.ca_key, c.serving_key, c.admin_key, c.sa_key):
            key.chmod(0o600)

    def _issue(self, crt: Path, key: Path, subj: str, ext: str, days: str = "3650") -> None:
        """A key and a certificate for `subj`, signed by the cluster CA."""
        c = self._certs
        csr, extfile = crt.with_suffix(".csr"), crt.with_suffix(".ext")
        extfile.write_text(ext)
        self._openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", subj,
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(c.ca_crt), "-CAkey", str(c.ca_key),
            "-CAcreateserial", "-days", days, "-out", str(crt), "-extfile", str(extfile),
        )  # fmt: skip
        csr.unlink()
        extfile.unlink()
        key.chmod(0o600)

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as `user` in `groups` with a client certificate.

        The API server reads the certificate's CN as the user name and each O as a
        group, so tests (and people) can act as real, non-admin users whose rights
        come from RBAC alone. Written under <state dir>/users/; issued once per
        (user, groups), reused afterwards. Needs the cluster CA's key, so only for a
        cluster this class started.
        """
        for part in (user, *groups):
            if not part or any(ch in part for ch in "/\\=+,\n"):
                raise ClusterError(f"unusable user or group name for a certificate: {part!r}")
        if not self._certs.ca_key.exists():
            raise ClusterError(
                f"no cluster CA key in {self.certs_dir}: start the cluster with `up`")
        users = self.certs_dir / "users"
        users.mkdir(parents=True, exist_ok=True)
        stem = "_".join([user, *groups]).replace(":", "-")
        crt, key = users / f"{stem}.crt", users / f"{stem}.key"
        if not (crt.exists() and key.exists()):
            subj = "".join(f"/O={g}" for g in groups) + f"/CN={user}"
            self._issue(
                crt, key, subj,
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=clientAuth\n",
            )  # fmt: skip
        out = self.state_dir / "users" / f"{stem}.kubeconfig"
        out.parent.mkdir(parents=True, exist_ok=True)
        self._write_kubeconfig(self._server_from_kubeconfig(), out, user, crt, key)
        return out

    def _write_kubeconfig(
        self, server: str, path: Path | None = None, user: str = "rbo-admin",
        crt: Path | None = None, key: Path | None = None,
    ) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        c = self._certs
        path = path or self.kubeconfig
        crt, key = crt or c.admin_crt, key or c.admin_key
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "rbo-local",
                    "cluster": {"server": server, "certificate-authority-data": b64(c.ca_crt)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(crt),
                        "client-key-data": b64(key),
                    },
                }
            ],
            "contexts": [
                {"name": "rbo-local", "context": {"cluster": "rbo-local", "user": user}}
            ],
            "current-context": "rbo-local",
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)

    def _server_from_kubeconfig(self) -> str:
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        return str(cfg["clusters"][0]["cluster"]["server"])

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        path = self.logs_dir / f"{name}.log"
        # One log per run, plus the previous run's for post-mortems of a crash.
        if path.exists():
            path.replace(path.with_suffix(".log.prev"))
        log = path.open("wb")
        log.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        # A new session detaches the process from our terminal and process group,
        # so Ctrl-C in the shell (or pytest exiting) does not take it down half-way.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.state_dir,
        )  # fmt: skip
        log.close()
        self._procs[name] = proc
        (self.run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")

    def _pid(self, name: str) -> int | None:
        """Pid of a running component we started, verified against its executable."""
        try:
            pid = int((self.run_dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        # Pids get reused: only trust the file if that pid still runs our binary.
        return pid if _pid_runs(pid, name) else None

    def _stop(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; only ever the pid we recorded."""
        pid = self._pid(name)
        if pid is not None:
            for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                if self._wait_gone(name, pid, wait_s):
                    break
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.poll()  # reap, if it was our child
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)

    def _wait_gone(self, name: str, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._pid(name) == pid:
            proc = self._procs.get(name)
            if proc is not None and proc.pid == pid:
                proc.poll()  # reap our own child rather than leave a zombie
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _report_dead(self) -> None:
        dead = [n for n in COMPONENTS if (self.run_dir / f"{n}.pid").exists() and not self._pid(n)]
        if dead:
            print(f"!! exited early: {', '.join(dead)}; logs in {self.logs_dir}", file=sys.stderr)
            for name, tail in self.log_tails(15).items():
                if name in dead:
                    print(f"--- {name}.log (tail)\n{tail}", file=sys.stderr)

    def _start_etcd(self, bin_dir: Path, port: int, peer_port: int) -> None:
        client, peer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
        self._spawn("etcd", [
            str(bin_dir / "etcd"),
            "--name=rbo",
            f"--data-dir={self.etcd_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=rbo={peer}",
            "--initial-cluster-state=new",
            # Throwaway data: skipping fsync makes etcd (and so everything) much faster.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ])  # fmt: skip

    def _start_apiserver(self, bin_dir: Path, etcd_port: int, port: int) -> None:
        c = self._certs
        self._spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.certs_dir / 'apiserver-generated'}",
            f"--tls-cert-file={c.serving_crt}",
            f"--tls-private-key-file={c.serving_key}",
            f"--client-ca-file={c.ca_crt}",
            "--authorization-mode=Node,RBAC",
            # Both are in the default set; naming them guards against that changing.
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook,"
            # As OpenShift does: blockOwnerDeletion needs update on the owner's finalizers.
            "OwnerReferencesPermissionEnforcement",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={c.sa_pub}",
            f"--service-account-signing-key-file={c.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # No real network behind 127.0.0.1: don't publish it as `kubernetes` endpoints.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ])  # fmt: skip

    def _start_controller_manager(self, bin_dir: Path) -> None:
        c = self._certs
        self._spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            # '*' = every default-on controller (job, garbagecollector, namespace,
            # serviceaccount, ...); we rely on job and garbagecollector.
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--root-ca-file={c.ca_crt}",
            f"--service-account-private-key-file={c.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--secure-port=0",  # no metrics/health endpoint needed; avoids port clashes
            # The default client-side rate limit (20 qps) dominates start-up time.
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
            "--profiling=false",
            "--v=1",
            *shlex.split(os.environ.get("RBO_CONTROLLER_MANAGER_FLAGS", "")),
        ])  # fmt: skip

    def _start_scheduler(self, bin_dir: Path) -> None:
        self._spawn("kube-scheduler", [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
            "--profiling=false",
            "--v=1",
        ])  # fmt: skip

    def _start_kwok(self, bin_dir: Path) -> None:
        configs = [self.kwok_stages_dir / s for s in KWOK_DEFAULT_STAGES]
        configs += sorted(KWOK_OWN_STAGES_DIR.glob("*.yaml"))
        if missing := [str(p) for p in configs if not p.exists()]:
            raise ClusterError(f"kwok stage files missing: {', '.join(missing)}")
        self._spawn("kwok", [
            str(bin_dir / "kwok"),
            f"--kubeconfig={self.kubeconfig}",
            *(f"--config={p}" for p in configs),
            # Only nodes we mark as fake: never touch anything else.
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            # kwok renews the node's Lease, so the node lifecycle controller keeps it Ready.
            "--node-lease-duration-seconds=40",
        ])  # fmt: skip

    # ------------------------------------------------------------------ API calls

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self._certs.ca_crt))
        ctx.load_cert_chain(str(self._certs.admin_crt), str(self._certs.admin_key))
        return ctx

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any] | str]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self._server + path, data=data, method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=5) as resp:
                status, raw = resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read().decode()
        try:
            return status, json.loads(raw)
        except json.JSONDecodeError:
            return status, raw

    def _apiserver_ready(self) -> bool:
        try:
            status, _ = self._request("GET", "/readyz")
        except (OSError, ssl.SSLError):
            return False
        return status == 200

    def _ensure_node(self) -> None:
        # Capacity is generous so the scheduler never becomes the bottleneck in tests.
        resources = {"cpu": "32", "memory": "256Gi", "pods": "1000"}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/role": "agent",
                    "node-role.kubernetes.io/agent": "",
                },
            },
            "status": {"allocatable": resources, "capacity": resources},
        }
        status, body = self._request("POST", "/api/v1/nodes", node)
        if status not in (201, 409):
            raise ClusterError(f"creating node {NODE_NAME}: HTTP {status}: {body}")

    def _node_ready(self) -> bool:
        status, body = self._request("GET", f"/api/v1/nodes/{NODE_NAME}")
        if status != 200 or not isinstance(body, dict):
            return False
        conditions = body.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _default_sa_exists(self) -> bool:
        status, _ = self._request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
        return status == 200

    def _wait_for(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            dead = [
                n for n in COMPONENTS if (self.run_dir / f"{n}.pid").exists() and not self._pid(n)
            ]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}")
            try:
                if check():
                    return
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.1)
        raise ClusterError(f"timed out after {self.ready_timeout:.0f}s waiting for {what}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("command", choices=("up", "down", "status", "env", "user"))
    parser.add_argument("user", nargs="?", help="user: the user name (certificate CN)")
    parser.add_argument("--group", action="append", default=[],
                        help="user: a group (certificate O), repeatable")
    args = parser.parse_args(argv)
    cluster = LocalCluster()

    if args.command == "up":
        already = cluster.is_up()
        started = time.monotonic()
        try:
            cluster.up()
        except ClusterError as e:
            print(f"!! {e}", file=sys.stderr)
            return 1
        took = "already running" if already else f"up in {time.monotonic() - started:.1f}s"
        print(f">> control plane {took}; logs in {cluster.logs_dir}", file=sys.stderr)
        print(f"KUBECONFIG={cluster.kubeconfig}")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
    elif args.command == "down":
        cluster.down()
        print(">> control plane stopped", file=sys.stderr)
    elif args.command == "status":
        pids = cluster.status()
        for name, pid in pids.items():
            print(f"{name:24} {'running pid ' + str(pid) if pid else 'stopped'}")
        ready = cluster.is_up()
        print(f"{'ready':24} {ready}")
        if ready:
            print(f"{'kubeconfig':24} {cluster.kubeconfig}")
        return 0 if ready else 1
    elif args.command == "env":
        print("\n".join(cluster.env_lines()))
    elif args.command == "user":
        if not args.user:
            parser.error("user needs a user name: cluster.py user alice --group sre")
        try:
            print(cluster.user_kubeconfig(args.user, args.group))
        except ClusterError as e:
            print(f"!! {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
