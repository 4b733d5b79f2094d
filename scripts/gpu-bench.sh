#!/usr/bin/env bash
# The GPU figures of the README in one command on a GPU machine: the
# inference benchmarks of worker/pkg/lipsync/batch with ONNX Runtime's CUDA
# execution provider (device_id 0) — ms per frame at batch 1, 4 and 16
# (BenchmarkRunBatch), the model's share of time to first frame cold and
# prewarmed (BenchmarkFirstFrame), GPU memory per context
# (BenchmarkContextMemory, read with nvidia-smi), and the 25 fps sessions one
# GPU sustains with one context per session against the cross-session
# batching executor (BenchmarkSessions), for the default and the
# Wav2Lip-shaped model.
#
# The GPU machine reaches no registry and takes at most 64 MiB per transfer,
# so ONNX Runtime's CUDA build travels in pieces (../shared/gpu/README.md):
#
#   scripts/gpu-bench.sh prepare [PREPARE_ORT_CUDA]
#       here, once: .gpu/a, .gpu/b, .gpu/c (the CUDA build in pieces, by
#       ../shared/gpu/prepare-ort-cuda.sh unless another path is given) and
#       .gpu/d (the last piece, the benchmark binary and this script).
#   then four device runs in a row, each within 30 s of the last, each
#   carrying one folder:
#       mkdir -p /tmp/ort && cp .gpu/a/* /tmp/ort/      (carry .gpu/a; then b, c)
#       bash .gpu/d/gpu-bench.sh run                   (carry .gpu/d)
#   The last one reassembles the CUDA provider, checks its sums, runs the
#   benchmarks (about 6 minutes at most) and writes $OUT/gpu-bench.txt.
set -euo pipefail

say() { echo "gpu-bench: $*" >&2; }
die() { say "$*"; exit 1; }

prepare() {
  local repo prep
  repo=$(cd "$(dirname "$0")/.." && pwd)
  prep=${1:-$repo/../shared/gpu/prepare-ort-cuda.sh}
  [ -x "$prep" ] || [ -f "$prep" ] || die "no $prep: pass the path of prepare-ort-cuda.sh"
  cd "$repo"
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  if [ ! -f .gpu/a/SHA256SUMS ]; then
    bash "$prep" .gpu
  fi
  # No cgo media libraries in this binary: it loads ONNX Runtime with dlopen.
  go test -c -tags dynamic -o .gpu/d/batch.test ./worker/pkg/lipsync/batch
  cp "$0" .gpu/d/gpu-bench.sh
  du -sh .gpu/*
  say "prepared; now the four device runs (see the head of this script)"
}

run() {
  local here out
  here=$(cd "$(dirname "$0")" && pwd)
  out=${OUT:-.}/gpu-bench.txt
  [ -d /tmp/ort ] || die "/tmp/ort is missing: the machine was replaced; start again from .gpu/a"
  cp "$here"/* /tmp/ort/
  cd /tmp/ort
  if [ ! -f libonnxruntime_providers_cuda.so ] || ! sha256sum -c --quiet SHA256SUMS 2>/dev/null; then
    cat cuda.xz.0[0-9] | { xz -d 2>/dev/null || python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.decompress(sys.stdin.buffer.read()))'; } > libonnxruntime_providers_cuda.so
    sha256sum -c SHA256SUMS || die "the reassembled libraries do not match their sums"
  fi
  LD_LIBRARY_PATH=/tmp/ort:$(find / -xdev \( -name 'libcudart.so.13*' -o -name 'libcublas.so.13*' \
    -o -name 'libcublasLt.so.13*' -o -name 'libcurand.so.10*' -o -name 'libcudnn.so.9*' \) \
    -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
  export LD_LIBRARY_PATH
  local cudnn
  cudnn=$(find / -xdev -name 'libcudnn.so.9' 2>/dev/null | awk 'NR==1')
  [ -n "$cudnn" ] && ln -sf "$cudnn" /tmp/ort/libcudnn.so
  local args=(-bench.device cuda:0 -bench.ortlib /tmp/ort/libonnxruntime.so)
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: exit $?"
    timeout 150 ./batch.test -test.run '^$' -test.bench RunBatch -test.benchtime 2s "${args[@]}" || echo "RunBatch: exit $?"
    timeout 120 ./batch.test -test.run '^$' -test.bench 'FirstFrame|ContextMemory' -test.benchtime 3x "${args[@]}" || echo "FirstFrame/ContextMemory: exit $?"
    timeout 60 ./batch.test -test.run '^$' -test.bench Sessions -test.benchtime 1x -test.v "${args[@]}" -bench.model default || echo "Sessions default: exit $?"
    timeout 60 ./batch.test -test.run '^$' -test.bench Sessions -test.benchtime 1x -test.v "${args[@]}" -bench.model wav2lip || echo "Sessions wav2lip: exit $?"
  } 2>&1 | tee "$out"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) run ;;
  *) die "usage: $0 prepare [PREPARE_ORT_CUDA] | run" ;;
esac
