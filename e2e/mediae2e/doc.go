// Package mediae2e is the end-to-end test of media delivery without a
// browser: it starts the built binaries (binfleet: bin/controlplane with
// embedded etcd and NATS, bin/worker on the CPU) and watches sessions with
// real Pion WHEP viewers (whepviewer) that reassemble VP8 from RTP and decode
// it with libvpx. It checks the frame rate, the picture, Opus, the session's
// viewer stats, fan-out to a second viewer, and the idle_timeout and
// viewer_gone endings. It needs `make build` and libvpx-dev.
package mediae2e
