// Package whepviewer is a real WHEP viewer for end-to-end tests and
// benchmarks: a Pion PeerConnection on loopback that offers to receive VP8
// and Opus, posts the offer to a session's WHEP endpoint with its viewer
// token, reassembles the VP8 frames from RTP and decodes them with libvpx
// (pion/mediadevices' vpx decoder, cgo: libvpx-dev), counts Opus packets,
// and records when each step of the connection happened. DELETE on the WHEP
// resource's Location hangs up.
package whepviewer
