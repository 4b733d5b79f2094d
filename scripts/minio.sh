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

# shellcheck source=lib/go-server.sh
. "$(dirname "$0")/lib/go-server.sh"
go_server "${1:-}" minio "$MINIO_VERSION" github.com/minio/minio minio "the MinIO server"
