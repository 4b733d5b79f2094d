#!/usr/bin/env bash
# Builds the MinIO server, the S3-compatible object store the recording
# tests (worker/pkg/recording) upload to, from its Go source fetched
# through the Go module proxy, into .tools/minio/$MINIO_VERSION/. No
# prebuilt binary is downloaded. Idempotent: a finished build is kept (keyed
# by version) and this script then does nothing.
#
#   scripts/minio.sh           build it if missing (several minutes, once)
#   scripts/minio.sh check     exit 1 and say what is missing
set -euo pipefail

# MinIO tags no semantic versions: a commit's pseudo-version. Must match
# worker/pkg/recording's minioVersion.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.tools/minio/$MINIO_VERSION"

built() { [ -x "$out/minio" ] && "$out/minio" --version >/dev/null 2>&1; }

if [ "${1:-}" = check ]; then
  built && exit 0
  echo "minio: $out/minio is missing (run scripts/minio.sh)" >&2
  exit 1
fi
built && exit 0

echo "setup: building the MinIO server $MINIO_VERSION from source (several minutes, once)"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && GOWORK=off CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath "github.com/minio/minio@$MINIO_VERSION")
mv "$tmp/minio" "$out/minio"
