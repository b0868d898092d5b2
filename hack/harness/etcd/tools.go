//go:build tools

// Package tools pins etcd's server, built by hack/build-controlplane.sh. etcd's own
// go.mod has replace lines, so it is built from this module, which requires it.
package tools

import _ "go.etcd.io/etcd/server/v3"
