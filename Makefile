PYTHON ?= python3

.PHONY: cluster-up cluster-down

# Local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok);
# see hack/README.md. Builds the binaries into ~/.cache/runbook-operator on first use.
cluster-up:
	$(PYTHON) hack/cluster.py up

cluster-down:
	$(PYTHON) hack/cluster.py down
