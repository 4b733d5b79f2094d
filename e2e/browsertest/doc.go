// Package browsertest is the end-to-end test of the demo page in a real
// browser. It starts the built binaries (bin/controlplane with embedded etcd
// and NATS, bin/worker on the CPU) on ephemeral ports, drives headless
// Chromium through the page with chromedp, and checks what arrives over
// WebRTC: the frame rate and audio of the WHEP stream, the avatar's mouth
// moving while it speaks, and the microphone's WHIP publisher.
//
// It needs `make build` (bin/) and Debian's chromium package
// (scripts/setup.sh installs it); `make test` provides both. Set
// AVATARFLEET_CHROMIUM to use another Chromium or Chrome binary.
package browsertest
