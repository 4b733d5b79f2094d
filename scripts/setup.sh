#!/usr/bin/env bash
# Installs what the Makefile targets need on a fresh Debian machine that has
# only `make` and Go, then checks that every piece works. Idempotent: each step
# checks first and does nothing when its result is already there, so on a
# ready machine it only runs the self-check (a few seconds) and prints nothing.
#
#   scripts/setup.sh           system packages + Go tools + ONNX Runtime library + self-check
#   scripts/setup.sh tools     Go tools only (pinned versions, into .tools/bin)
#   scripts/setup.sh check     the self-check only
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools/bin"
mode=${1:-all}
case "$mode" in all | tools | check) ;; *)
  echo "usage: scripts/setup.sh [tools|check]" >&2
  exit 2
  ;;
esac

# Pinned generator and linter versions: `make proto` output depends on them.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
STATICCHECK_VERSION=v0.8.2
# ONNX Runtime shared library, taken from the onnxruntime-node npm package.
# It must match the C API of github.com/yalue/onnxruntime_go in worker/go.mod;
# worker/pkg/inference looks for .tools/onnxruntime/$ONNXRUNTIME_VERSION/.
ONNXRUNTIME_VERSION=1.24.1
# SHA-512 of the package tarball (the registry's dist.integrity for it, in
# hex) and of the library inside it. A download that does not match is refused.
ONNXRUNTIME_TGZ_SHA512=131fe851729d843a31be5371053de862d5b4307f3cc98a4f95741e550517a5c25098ddb8bac77ff110a83cb3799021f00ec899fa7aac9e3722c85465e36ddd43
ONNXRUNTIME_LIB_SHA512=9d2e4a118823eb5f2fa951ef13bcf04e14abde5d9ae46cb63637fe270014420017a21b2769a91d426b516eaab3ec71707cee68e51b16a1f78c01b45676738a0e
# The Kubernetes API server deploy/kubetest runs (scripts/kube-tools.sh).
KUBERNETES_VERSION=$(sed -n 's/^KUBERNETES_VERSION=//p' "$root/scripts/kube-tools.sh")
ort_dir="$root/.tools/onnxruntime/$ONNXRUNTIME_VERSION"
ort_lib="$ort_dir/libonnxruntime.so.1"

# protobuf-compiler + libprotobuf-dev: protoc and the well-known types
# (google/protobuf/timestamp.proto) that proto/ imports; protoc only
# recommends libprotobuf-dev, and recommends are not installed.
# gcc + libc6-dev: cgo (go turns cgo off when it finds no C compiler, and the
# codecs below are cgo). libvpx-dev, libopus-dev and pkg-config: the worker's
# VP8 and Opus encoders (through pion/mediadevices); libopusfile-dev: the
# SFU's Opus decoder (gopkg.in/hraban/opus.v2). espeak-ng: the worker's local
# text-to-speech engine (worker/pkg/tts runs it as a child process).
# chromium: the headless browser of the demo page's end-to-end test
# (e2e/browsertest, driven by chromedp). ca-certificates:
# TLS to the Go module proxy and the npm registry.
# debootstrap: the images' Debian root filesystem (scripts/rootfs.sh, `make images`).
# ffmpeg: ffprobe and ffmpeg check that recordings (worker/pkg/recording) decode.
apt_packages=(protobuf-compiler libprotobuf-dev gcc libc6-dev libvpx-dev libopus-dev libopusfile-dev
  pkg-config espeak-ng chromium ca-certificates debootstrap ffmpeg)
# npm fetches the ONNX Runtime package (nodejs comes with it).
command -v npm >/dev/null 2>&1 || apt_packages+=(npm)

install_apt() {
  local need=() p sudo_cmd=""
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  echo "setup: installing ${need[*]}"
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

install_go_tool() { # name module@version
  local name=$1 pkg=$2 stamp="$tools/.$1.version"
  if [ -x "$tools/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then return; fi
  echo "setup: go install $pkg"
  mkdir -p "$tools"
  GOBIN="$tools" GOWORK=off go install "$pkg"
  echo "$pkg" >"$stamp"
}

sha512_of() { sha512sum "$1" | cut -d ' ' -f 1; }

# ONNX Runtime: `npm pack` downloads the package tarball without running its
# install script (which fetches from elsewhere); only the library is kept.
install_onnxruntime() {
  local member="package/bin/napi-v6/linux/x64/libonnxruntime.so.1"
  if [ -s "$ort_lib" ] && [ "$(sha512_of "$ort_lib")" = "$ONNXRUNTIME_LIB_SHA512" ]; then return; fi
  if [ "$(uname -s)/$(uname -m)" != Linux/x86_64 ]; then
    echo "setup: no ONNX Runtime library for $(uname -s)/$(uname -m) in onnxruntime-node; set AVATARFLEET_ONNXRUNTIME_LIB" >&2
    return
  fi
  command -v npm >/dev/null 2>&1 || { echo "setup: npm is missing (apt-get install npm)" >&2; exit 1; }
  echo "setup: onnxruntime-node@$ONNXRUNTIME_VERSION -> $ort_lib"
  mkdir -p "$ort_dir"
  ( # subshell: its EXIT trap removes the scratch folder however it ends
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cd "$tmp"
    tgz="onnxruntime-node-$ONNXRUNTIME_VERSION.tgz"
    npm pack --silent "onnxruntime-node@$ONNXRUNTIME_VERSION" >/dev/null
    got=$(sha512_of "$tgz")
    if [ "$got" != "$ONNXRUNTIME_TGZ_SHA512" ]; then
      printf 'setup: SHA-512 MISMATCH for %s; refusing it\n  want %s\n  got  %s\n' \
        "$tgz" "$ONNXRUNTIME_TGZ_SHA512" "$got" >&2
      exit 1
    fi
    tar -xzf "$tgz" "$member"
    got=$(sha512_of "$member")
    if [ "$got" != "$ONNXRUNTIME_LIB_SHA512" ]; then
      printf 'setup: SHA-512 MISMATCH for %s in %s; refusing it\n  want %s\n  got  %s\n' \
        "$member" "$tgz" "$ONNXRUNTIME_LIB_SHA512" "$got" >&2
      exit 1
    fi
    # Move into place last, so an interrupted run leaves no half-written file.
    install -m 0644 "$member" "$ort_lib.tmp"
    mv "$ort_lib.tmp" "$ort_lib"
  )
}

# The self-check: each piece the targets use, tried for real. Every failure
# is named; the script fails when any piece is missing.
self_check() {
  local failed=() tmp out lib cc cgo=0
  tmp=$(mktemp -d)
  fail() { failed+=("$1"); }

  # protoc and the well-known types it must find.
  mkdir -p "$tmp/proto"
  printf 'syntax = "proto3";\npackage check;\nimport "google/protobuf/timestamp.proto";\nmessage M { google.protobuf.Timestamp t = 1; }\n' >"$tmp/proto/check.proto"
  if ! command -v protoc >/dev/null 2>&1; then
    fail "protoc is missing (Debian package protobuf-compiler)"
  elif ! out=$(protoc --proto_path="$tmp/proto" --descriptor_set_out=/dev/null "$tmp/proto/check.proto" 2>&1); then
    fail "protoc cannot compile a .proto importing google/protobuf/timestamp.proto (Debian package libprotobuf-dev): $out"
  fi
  for t in protoc-gen-go protoc-gen-go-grpc staticcheck; do
    [ -x "$tools/$t" ] || fail "$tools/$t is missing (scripts/setup.sh tools)"
  done
  for t in kube-apiserver etcd; do
    [ -x "$root/.tools/k8s/$KUBERNETES_VERSION/$t" ] || fail "$root/.tools/k8s/$KUBERNETES_VERSION/$t is missing (scripts/kube-tools.sh)"
  done
  # The S3-compatible server of the recording tests.
  out=$("$root/scripts/minio.sh" check 2>&1) || fail "$out"
  # The LiveKit server of the LiveKit Agents avatar tests.
  out=$("$root/scripts/livekit.sh" check 2>&1) || fail "$out"

  # C libraries for cgo.
  if ! command -v pkg-config >/dev/null 2>&1; then
    fail "pkg-config is missing (Debian package pkg-config)"
  else
    for m in vpx:libvpx-dev opus:libopus-dev opusfile:libopusfile-dev; do
      pkg-config --exists "${m%%:*}" || fail "pkg-config finds no ${m%%:*} (Debian package ${m#*:})"
    done
  fi

  # cgo: go enables it only when it finds the C compiler.
  cc=$(go env CC)
  if ! command -v "${cc%% *}" >/dev/null 2>&1; then
    fail "no C compiler ($cc) for cgo (Debian packages gcc, libc6-dev)"
  elif [ "$(go env CGO_ENABLED)" != 1 ]; then
    fail "cgo is off (go env CGO_ENABLED is $(go env CGO_ENABLED)); the codecs need CGO_ENABLED=1"
  else
    cgo=1
  fi

  # Programs the tests run.
  espeak-ng --version >/dev/null 2>&1 || fail "espeak-ng does not run (Debian package espeak-ng)"
  chromium --version >/dev/null 2>&1 || fail "chromium does not run (Debian package chromium; or set AVATARFLEET_CHROMIUM)"
  for t in ffmpeg ffprobe; do
    "$t" -version >/dev/null 2>&1 || fail "$t does not run (Debian package ffmpeg)"
  done

  # ONNX Runtime: the library the worker will load, loaded for real (a cgo
  # program, so this also proves the C compiler links).
  lib=${AVATARFLEET_ONNXRUNTIME_LIB:-$ort_lib}
  if [ ! -f "$lib" ]; then
    fail "no ONNX Runtime library at $lib"
  elif [ "$cgo" = 1 ]; then
    if ! out=$(cd "$root/scripts/ortcheck" && GOWORK=off go run main.go "$lib" "$ONNXRUNTIME_VERSION" 2>&1); then
      fail "the ONNX Runtime library does not load: ${out%$'\n'exit status *}"
    fi
  fi
  rm -rf "$tmp"

  if [ ${#failed[@]} -gt 0 ]; then
    echo "setup: self-check FAILED:" >&2
    printf '  - %s\n' "${failed[@]}" >&2
    return 1
  fi
}

case "$mode" in
tools)
  install_go_tool protoc-gen-go "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  install_go_tool protoc-gen-go-grpc "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  install_go_tool staticcheck "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
  ;;
all)
  install_apt
  install_go_tool protoc-gen-go "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  install_go_tool protoc-gen-go-grpc "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  install_go_tool staticcheck "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
  install_onnxruntime
  "$root/scripts/kube-tools.sh"
  "$root/scripts/minio.sh"
  "$root/scripts/livekit.sh"
  self_check
  ;;
check)
  self_check
  ;;
esac
