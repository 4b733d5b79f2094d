#!/usr/bin/env bash
# Builds livekit-server, the LiveKit SFU the LiveKit Agents avatar tests
# (worker/pkg/livekit, e2e/livekit) join, from its Go source fetched through
# the Go module proxy, into .tools/livekit/$LIVEKIT_VERSION/. No prebuilt
# binary is downloaded. Idempotent: a finished build is kept (keyed by
# version) and this script then does nothing.
#
#   scripts/livekit.sh           build it if missing (a few minutes, once)
#   scripts/livekit.sh check     exit 1 and say what is missing
set -euo pipefail

# Must match worker/pkg/livekit/livekittest's Version.
LIVEKIT_VERSION=v1.13.5

# shellcheck source=lib/go-server.sh
. "$(dirname "$0")/lib/go-server.sh"
go_server "${1:-}" livekit "$LIVEKIT_VERSION" github.com/livekit/livekit-server/cmd/server livekit-server livekit-server
