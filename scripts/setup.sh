#!/usr/bin/env bash
# Installs what the Makefile targets need on a fresh Debian machine. Idempotent:
# each step checks first and does nothing when its result is already there.
#
#   scripts/setup.sh           system packages + Go tools
#   scripts/setup.sh tools     Go tools only (pinned versions, into .tools/bin)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools/bin"
mkdir -p "$tools"

# Pinned generator and linter versions: `make proto` output depends on them.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
STATICCHECK_VERSION=v0.8.2

# libvpx-dev, libopus-dev and pkg-config: the worker's VP8 and Opus encoders
# (cgo, through pion/mediadevices).
apt_packages=(protobuf-compiler libvpx-dev libopus-dev pkg-config)

need_apt=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ "${1:-}" != tools ] && [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

install_go_tool() { # name module@version
  local name=$1 pkg=$2 stamp="$tools/.$1.version"
  if [ -x "$tools/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then return; fi
  echo "setup: go install $pkg"
  GOBIN="$tools" GOWORK=off go install "$pkg"
  echo "$pkg" >"$stamp"
}
install_go_tool protoc-gen-go "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
install_go_tool protoc-gen-go-grpc "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
install_go_tool staticcheck "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
