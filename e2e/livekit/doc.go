// Package livekit tests the LiveKit Agents avatar end to end: the real
// control-plane and worker binaries (bin/), a real livekit-server (built by
// scripts/livekit.sh), a Go participant playing the voice agent's side of
// the data-stream avatar contract and a Go subscriber decoding the avatar's
// video; the session is created over the REST API.
package livekit
