"""hack/cluster.py issues client certificates for named users and groups.

Cases: ``user_kubeconfig("alice", ["sre", "oncall"])`` writes a kubeconfig whose
client certificate is signed by the cluster CA with CN=alice and one O per group
(what the API server reads as user and groups); asking again reuses it; names
that cannot go into a certificate subject are refused. Offline: no API server.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "hack"))

from cluster import ClusterError, LocalCluster


def test_user_certificates(tmp_path: Path) -> None:
    cluster = LocalCluster(state_dir=tmp_path, bin_dir=tmp_path)
    cluster.certs_dir.mkdir(parents=True)
    cluster._ensure_certs()
    cluster._write_kubeconfig("https://127.0.0.1:6443")
    path = cluster.user_kubeconfig("alice", ["sre", "oncall"])
    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    (user,) = config["users"]
    assert user["name"] == "alice"
    crt = tmp_path / "alice.crt"
    crt.write_bytes(base64.b64decode(user["user"]["client-certificate-data"]))
    subject = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-subject",
                              "-nameopt", "RFC2253"], capture_output=True, text=True,
                             check=True).stdout
    assert "CN=alice" in subject and "O=sre" in subject and "O=oncall" in subject
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(cluster.certs_dir / "ca.crt"),
                               str(crt)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    before = user["user"]["client-certificate-data"]
    again = yaml.safe_load(cluster.user_kubeconfig("alice", ["sre", "oncall"]).read_text())
    assert again["users"][0]["user"]["client-certificate-data"] == before
    with pytest.raises(ClusterError, match="unusable"):
        cluster.user_kubeconfig("eve/O=system:masters")
