// Package kubescale tests `avatarctl workers scale` end to end: the real
// command (package cli, run in-process) against a real kube-apiserver and
// its etcd (deploy/kubetest) holding the worker StatefulSet, and a real
// fleet (e2e/internal/testfleet: embedded etcd and NATS, a control plane,
// worker agents over mutual-TLS gRPC) whose workers are named after the
// StatefulSet's pods.
//
// The pods are simulated: no controller-manager, scheduler or kubelet runs,
// so nothing creates or deletes pods. The test plays the kubelet instead:
// when the StatefulSet's replicas shrink it stops the worker agents of the
// pods that went (as SIGTERM would), and when they grow it starts the agent
// of the new pod. Everything on the fleet's side (drain, migration,
// registration, the REST API) is the real thing.
package kubescale
