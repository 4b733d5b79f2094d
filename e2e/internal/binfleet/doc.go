// Package binfleet starts the built binaries — a control plane with
// embedded etcd and NATS (bin/controlplane), and workers on the CPU
// (bin/worker) — as child processes on free loopback ports, for end-to-end
// tests and benchmarks. It stops them as an operator would (SIGTERM and a
// wait, SIGKILL after 30 s) and logs the tails of their output when a test
// fails. It also holds small REST helpers for talking to that control
// plane. The binaries come from `make build`.
package binfleet
