# AvatarFleet — build, run and test targets. `make test` is the one CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO       ?= go
PKGS     := ./proto/... ./controlplane/... ./worker/... ./sfu/... ./e2e/... ./deploy/...
TOOLS    := $(CURDIR)/.tools/bin
# Tests start real etcd clusters, NATS servers and gRPC peers; on a 2-core
# machine running every package at once only makes them time out.
TESTFLAGS ?= -race -count=1 -p 2 -timeout 30m
FUZZTIME ?= 10s
# Build tags for every go command: `dynamic` makes pion/mediadevices' Opus
# encoder link the system libopus (libopus-dev) instead of its bundled copy.
GOTAGS ?= dynamic

.PHONY: all build images run test bench bench-inference models proto proto-check lint vet fuzz setup clean

all: build

setup:
	@scripts/setup.sh

build:
	@mkdir -p bin
	$(GO) build -tags '$(GOTAGS)' -o bin/controlplane ./controlplane/cmd/controlplane
	$(GO) build -tags '$(GOTAGS)' -o bin/worker ./worker/cmd/worker
	$(GO) build -tags '$(GOTAGS)' -o bin/avatarctl ./controlplane/cmd/avatarctl
	$(GO) build -tags '$(GOTAGS)' -o bin/avatarpack ./worker/cmd/avatarpack

# Container images as OCI layout tar files in out/images/ (controlplane,
# worker-cpu, worker-cuda), built without a container daemon on a Debian
# root filesystem (scripts/rootfs.sh: debootstrap, needs root, cached in
# .cache/rootfs/). See deploy/README.md "Images". Every time inside is
# SOURCE_DATE_EPOCH (default: the last commit's date), so a rebuild of the
# same inputs has the same digests.
IMAGES_VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGES_REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 1767225600)
images: setup build
	@rootfs=$$(scripts/rootfs.sh) && ortcuda=$$(scripts/ort-cuda.sh) && \
	$(GO) run -tags '$(GOTAGS)' ./deploy/cmd/mkimage -rootfs "$$rootfs" -bin bin -out out/images \
		-onnxruntime-cpu .tools/onnxruntime/1.24.1/libonnxruntime.so.1 -onnxruntime-cuda "$$ortcuda" \
		-created-epoch '$(SOURCE_DATE_EPOCH)' -version '$(IMAGES_VERSION)' -revision '$(IMAGES_REVISION)'

# The embedded default: control plane (embedded etcd + NATS) and one worker.
run: setup build
	@scripts/run.sh

proto: setup
	@scripts/genproto.sh

proto-check: setup
	@scripts/genproto.sh --check

vet:
	$(GO) vet -tags '$(GOTAGS)' $(PKGS)

lint: setup vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	if [ -n "$$unformatted" ]; then echo "lint: not gofmt-formatted (run gofmt -w):"; echo "$$unformatted"; exit 1; fi
	$(TOOLS)/staticcheck -tags '$(GOTAGS)' $(PKGS)

# Every test, with the race detector, then each fuzz target for $(FUZZTIME).
# One `go test` per module: go test keeps every package's objects in its work
# directory until it exits (gigabytes with -race), so one run over all
# modules at once needs that much more free disk. Every module runs even when
# one fails; the failures are named at the end.
test: setup proto-check lint build images
	@failed=""; for p in $(PKGS); do \
		echo "$(GO) test -tags '$(GOTAGS)' $(TESTFLAGS) $$p"; \
		$(GO) test -tags '$(GOTAGS)' $(TESTFLAGS) $$p || failed="$$failed $$p"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: tests failed in$$failed"; exit 1; fi
	@GOTAGS='$(GOTAGS)' scripts/fuzz.sh $(FUZZTIME)

fuzz: setup
	@GOTAGS='$(GOTAGS)' scripts/fuzz.sh $(FUZZTIME)

# Benchmarks print their figures; see the README's tables. The placement
# benchmark runs once (it is a whole scenario); the media stages repeat.
# The media-delivery benchmark runs against the built binaries; so does
# the worker-loss one (20 kill -9s of a watched session's worker, each
# followed by a restart of that worker: several minutes).
# mediaruntime's BenchmarkConcurrentSessions runs N real sessions on the real
# 25 fps clock (9 cases of 2 s warm-up, 5 s for the idle/shared ones, + 10 s
# each, about 2.5 min; idle sessions with the shared idle loop off and on);
# shorten it with BENCH_CONCURRENT=5s.
BENCH_CONCURRENT ?= 10s
# pipeline/avdrift's BenchmarkAVDrift runs one speaking session on the real
# clock and checks audio and video stay within 20 ms; BENCH_DRIFT=1h for the
# README's hour-long figure.
BENCH_DRIFT ?= 20s
bench: setup build
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench . -benchtime 1x -timeout 30m ./e2e/bench/
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench 'TimeToFirstFrame|AudioToLip' -benchtime 1x -timeout 10m ./e2e/mediabench/
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench WorkerLoss -benchtime 1x -timeout 30m ./e2e/mediabench/
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench . -benchmem -timeout 30m \
		./worker/pkg/melspec ./worker/pkg/resample ./worker/pkg/inference \
		./worker/pkg/composite ./worker/pkg/codec ./worker/pkg/frame \
		./worker/pkg/facedetect ./worker/pkg/avatar ./worker/pkg/pipeline
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench . -benchmem -timeout 10m ./worker/pkg/mediaruntime \
		-args -concurrent.duration=$(BENCH_CONCURRENT)
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench AVDrift -benchtime 1x -timeout 25h ./worker/pkg/pipeline/avdrift \
		-args -drift.duration=$(BENCH_DRIFT)
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench 'Sessions|FirstFrame|ContextMemory' -benchtime 1x -timeout 10m ./worker/pkg/lipsync/batch
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench 'Fanout|UDPBaseline' -benchtime 75x -timeout 15m ./sfu/
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench AutoSlots -benchtime 1x -timeout 5m ./worker/pkg/capacity

# Generated ONNX models (default lip-sync model and the Wav2Lip-shaped
# benchmark model, ~145 MB) into the git-ignored cache.
models:
	$(GO) run -tags '$(GOTAGS)' ./worker/cmd/genmodels -out .cache/models

# Per-frame inference cost on the CPU, one intra-op thread (needs setup's ONNX Runtime).
bench-inference: setup
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench . -timeout 30m ./worker/pkg/inference
	$(GO) test -tags '$(GOTAGS)' -run '^$$' -bench RunBatch -timeout 30m ./worker/pkg/lipsync/batch

clean:
	rm -rf bin
