// Package mediabench measures media delivery end to end (`make bench`),
// against the built binaries (binfleet: bin/controlplane with embedded etcd
// and NATS, one bin/worker on the CPU with 4 slots and prewarmed inference
// contexts) with real Pion WHEP viewers decoding VP8 with libvpx
// (whepviewer): the time from POST /v1/sessions to the first decoded frame,
// split into its steps, and the time from POST /v1/sessions/{id}/audio to
// the first decoded frame whose mouth moves. The benchmarks print their
// figures as tables; run them once (-benchtime 1x).
package mediabench
