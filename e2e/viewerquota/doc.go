// Package viewerquota holds the end-to-end test of the pending-viewer
// limits: WHEP offers through a control plane to a worker whose signaling is
// the real embedded SFU (worker/pkg/rooms over sfu). It has no code of its
// own; the test lives apart so that other control-plane test binaries do
// not link the worker's media stack.
package viewerquota
