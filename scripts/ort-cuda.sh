#!/usr/bin/env bash
# Fetches ONNX Runtime 1.29.0 built for CUDA 13 for the worker's CUDA image
# (deploy/images): the core library from npm com.github.asus4.onnxruntime and
# the CUDA execution provider from com.github.asus4.onnxruntime.linux-x64-gpu,
# both 0.4.9. `npm pack` downloads the tarballs without running any install
# script; each tarball and each library is checked against a pinned SHA-512
# (the tarball's is the registry's dist.integrity, in hex) and a mismatch is
# refused. The libraries are cached in .cache/onnxruntime-cuda/1.29.0/ and the
# script prints that folder; a second run with a complete cache fetches nothing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "ort-cuda: $*" >&2; }
die() { say "$*"; exit 1; }

NPM_VERSION=0.4.9 # ONNX Runtime 1.29.0
ORT_VERSION=1.29.0
CORE_TGZ_SHA512=064cf176e499f4891e0cfe90f25cf64c553689eee1492bd2ed921fccca28131a2ad02373267bae19a509ec8b288c182a3b8a2e0f58d76a1f0e63225b08ddbd16
GPU_TGZ_SHA512=168a4884d13f360fafd97eb9c1573d7253c2042be1bc0e771f1a3653429fe5f19d56c0bb88203e999d0a2d6820710023ed3219ea9362751e000b5d20ef85e8eb
declare -A LIB_SHA512=(
  [libonnxruntime.so]=ec19f794af282b525c7055f08e43fb15da3b478595c8ee53653731e7816ed4ba4e8b8acb2dd24e852cea0e0d67030334943733aad1f87c840f2c80ddbbb5c73e
  [libonnxruntime_providers_shared.so]=4853ca81d40f90cdc6369ff5cc1a78f028f2201db77bf4fca43196c6004993f93a5ad80c0ef53f5554a0c99b6654dc896697a700e3bfdf58cbc8f54902d0e6ac
  [libonnxruntime_providers_cuda.so]=f6e7f79df6dc0781bcbf0c9397c506147453eebe355e436339377e466f9919f7bd79349471932f04e4bd1bc058a80d6ad08f852966c944cd3619bcf882f5de63
)
dir="$repo/.cache/onnxruntime-cuda/$ORT_VERSION"
sha512_of() { sha512sum "$1" | cut -d ' ' -f 1; }

complete() {
  local f
  for f in "${!LIB_SHA512[@]}"; do
    [ -s "$dir/$f" ] && [ "$(sha512_of "$dir/$f")" = "${LIB_SHA512[$f]}" ] || return 1
  done
  [ -s "$dir/LICENSE" ]
}
if complete; then
  echo "$dir"
  exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm is missing (make setup installs it)"
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
fetch() { # package sha512
  local tgz="$1-$NPM_VERSION.tgz" got
  say "npm pack $1@$NPM_VERSION"
  npm pack --silent "$1@$NPM_VERSION" >/dev/null || die "npm pack $1@$NPM_VERSION failed"
  got=$(sha512_of "$tgz")
  [ "$got" = "$2" ] || die "SHA-512 MISMATCH for $tgz; refusing it (want $2, got $got)"
  echo "$tgz"
}
core=$(fetch com.github.asus4.onnxruntime "$CORE_TGZ_SHA512")
gpu=$(fetch com.github.asus4.onnxruntime.linux-x64-gpu "$GPU_TGZ_SHA512")
lib=package/Plugins/Linux/x64
tar -xzf "$core" "$lib/libonnxruntime.so" "$lib/libonnxruntime_providers_shared.so" package/LICENSE
tar -xzf "$gpu" "$lib/libonnxruntime_providers_cuda.so"
for f in "${!LIB_SHA512[@]}"; do
  got=$(sha512_of "$lib/$f")
  [ "$got" = "${LIB_SHA512[$f]}" ] || die "SHA-512 MISMATCH for $f; refusing it (want ${LIB_SHA512[$f]}, got $got)"
done
# Into place last (the check above passed), so an interrupted run leaves no half file.
for f in "${!LIB_SHA512[@]}"; do install -m 0644 "$lib/$f" "$dir/$f.tmp" && mv "$dir/$f.tmp" "$dir/$f"; done
install -m 0644 package/LICENSE "$dir/LICENSE"
say "ONNX Runtime $ORT_VERSION (CUDA 13) in $dir"
echo "$dir"
