// Package kubernetes holds kindling's Kubernetes manifests: the
// RuntimeClass whose handler selects the kindling shim, the DaemonSet that
// installs the shim and its containerd runtime on nodes, and an example
// Deployment. They are embedded so tools can print or apply them; the
// installation is described in docs/kubernetes.md.
package kubernetes

import "embed"

// Manifests holds runtimeclass.yaml, installer.yaml and
// example-deployment.yaml.
//
//go:embed runtimeclass.yaml installer.yaml example-deployment.yaml
var Manifests embed.FS
