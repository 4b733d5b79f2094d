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

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.tools/livekit/$LIVEKIT_VERSION"

built() { [ -x "$out/livekit-server" ] && "$out/livekit-server" --version >/dev/null 2>&1; }

if [ "${1:-}" = check ]; then
  built && exit 0
  echo "livekit: $out/livekit-server is missing (run scripts/livekit.sh)" >&2
  exit 1
fi
built && exit 0

echo "setup: building livekit-server $LIVEKIT_VERSION from source (a few minutes, once)"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && GOWORK=off CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_VERSION")
mv "$tmp/server" "$out/livekit-server"
