//go:build tools

// Package tools pins the Kubernetes commands that hack/build-controlplane.sh builds.
// k8s.io/kubernetes replaces its staging modules with local paths, so it cannot be
// `go install`ed directly; this module requires it and points every staging module
// at its published version instead.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
