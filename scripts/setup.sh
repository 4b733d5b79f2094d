#!/usr/bin/env bash
# Installs what the Makefile targets need on a fresh Debian machine. Idempotent:
# each step checks first and does nothing when its result is already there.
#
#   scripts/setup.sh           system packages + Go tools + ONNX Runtime library
#   scripts/setup.sh tools     Go tools only (pinned versions, into .tools/bin)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools/bin"
mkdir -p "$tools"

# Pinned generator and linter versions: `make proto` output depends on them.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
STATICCHECK_VERSION=v0.8.2
# ONNX Runtime shared library, taken from the onnxruntime-node npm package.
# It must match the C API of github.com/yalue/onnxruntime_go in worker/go.mod;
# worker/pkg/inference looks for .tools/onnxruntime/$ONNXRUNTIME_VERSION/.
ONNXRUNTIME_VERSION=1.24.1

# libvpx-dev, libopus-dev and pkg-config: the worker's VP8 and Opus encoders
# (cgo, through pion/mediadevices); libopusfile-dev: the SFU's Opus decoder
# (gopkg.in/hraban/opus.v2, cgo). espeak-ng: the worker's local
# text-to-speech engine (worker/pkg/tts runs it as a child process).
# chromium: the headless browser of the demo page's end-to-end test
# (controlplane/internal/browsertest, driven by chromedp).
apt_packages=(protobuf-compiler libvpx-dev libopus-dev libopusfile-dev pkg-config espeak-ng chromium)
# npm fetches the ONNX Runtime package (nodejs comes with it).
command -v npm >/dev/null 2>&1 || apt_packages+=(npm)

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

# ONNX Runtime: `npm pack` downloads the package tarball without running its
# install script (which fetches from elsewhere); only the library is kept.
install_onnxruntime() {
  local dir="$root/.tools/onnxruntime/$ONNXRUNTIME_VERSION"
  local lib="$dir/libonnxruntime.so.1"
  local member="package/bin/napi-v6/linux/x64/libonnxruntime.so.1"
  if [ -s "$lib" ]; then return; fi
  if [ "$(uname -s)/$(uname -m)" != Linux/x86_64 ]; then
    echo "setup: no ONNX Runtime library for $(uname -s)/$(uname -m) in onnxruntime-node; set AVATARFLEET_ONNXRUNTIME_LIB" >&2
    return
  fi
  command -v npm >/dev/null 2>&1 || { echo "setup: npm is missing (apt-get install npm)" >&2; exit 1; }
  echo "setup: onnxruntime-node@$ONNXRUNTIME_VERSION -> $lib"
  mkdir -p "$dir"
  ( # subshell: its EXIT trap removes the scratch folder however it ends
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cd "$tmp"
    npm pack --silent "onnxruntime-node@$ONNXRUNTIME_VERSION" >/dev/null
    tar -xzf onnxruntime-node-"$ONNXRUNTIME_VERSION".tgz "$member"
    size=$(stat -c %s "$member")
    if [ "$size" -lt 1000000 ]; then
      echo "setup: $member is only $size bytes; not a usable library" >&2
      exit 1
    fi
    if [ "$(head -c 4 "$member" | tail -c 3)" != ELF ]; then
      echo "setup: $member is not an ELF shared library" >&2
      exit 1
    fi
    # Move into place last, so an interrupted run leaves no half-written file.
    install -m 0644 "$member" "$lib.tmp"
    mv "$lib.tmp" "$lib"
  )
}
if [ "${1:-}" != tools ]; then
  install_onnxruntime
fi
