#!/usr/bin/env bash
# Builds the real Kubernetes API server and etcd that deploy/kubetest runs
# (through controller-runtime's envtest) from their Go sources, fetched
# through the Go module proxy, into .tools/k8s/$KUBERNETES_VERSION/. No
# prebuilt binaries are downloaded. Idempotent: a finished build is kept
# (keyed by version) and this script then does nothing.
#
#   scripts/kube-tools.sh           build what is missing
#   scripts/kube-tools.sh check     exit 1 and say what is missing
set -euo pipefail

# Must match deploy/kubetest.KubernetesVersion. The k8s.io staging modules
# (k8s.io/api, k8s.io/apiserver, ...) of a Kubernetes release vX.Y.Z are
# tagged v0.Y.Z.
KUBERNETES_VERSION=v1.37.2
STAGING_VERSION=v0.${KUBERNETES_VERSION#v1.}

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.tools/k8s/$KUBERNETES_VERSION"
src="$root/.tools/k8s/src-$KUBERNETES_VERSION"

# The version a built kube-apiserver reports (empty when there is none).
# No pipes into head or grep -q: under pipefail a writer cut off early
# fails the script with SIGPIPE.
apiserver_version() { [ -x "$out/kube-apiserver" ] && "$out/kube-apiserver" --version 2>/dev/null || true; }
built() { [ "$(apiserver_version)" = "Kubernetes $KUBERNETES_VERSION" ] && [ -x "$out/etcd" ]; }

if [ "${1:-}" = check ]; then
  built && exit 0
  echo "kube-tools: kube-apiserver or etcd missing from $out (run scripts/kube-tools.sh)" >&2
  exit 1
fi
built && exit 0

mkdir -p "$out" "$src"
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
# A build cache and module cache of their own, removed after: these builds
# share next to nothing with the fleet's (no cgo, -trimpath), and the
# apiserver's caches alone are gigabytes of a CI machine's disk. Module
# files are read-only, hence the chmod.
work=$(mktemp -d)
export GOCACHE="$work/cache" GOMODCACHE="$work/mod"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

if [ "$(apiserver_version)" != "Kubernetes $KUBERNETES_VERSION" ]; then
  echo "setup: building kube-apiserver $KUBERNETES_VERSION from source (several minutes, once)"
  # k8s.io/kubernetes points its staging modules at ./staging with replace
  # directives, which `go install pkg@version` refuses; a small module of
  # our own requires it and replaces each staging module by its release.
  kmod=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  [ -s "$kmod" ] || { echo "kube-tools: no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION" >&2; exit 1; }
  {
    printf 'module avatarfleet.local/kubetools\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBERNETES_VERSION"
    awk -v v="$STAGING_VERSION" '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }' "$kmod"
    printf ')\n'
  } >"$src/go.mod"
  # Stamp the version as Kubernetes' own release build does, so that the
  # server reports it (Helm checks a chart's kubeVersion against it).
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  vpkg=k8s.io/component-base/version
  version_ldflags="-X $vpkg.gitVersion=$KUBERNETES_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
  printf '//go:build tools\n\npackage kubetools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' >"$src/tools.go"
  (cd "$src" && go mod tidy && go build -trimpath -ldflags "$version_ldflags" -o "$out/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
fi

if [ ! -x "$out/etcd" ]; then
  etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }' "$root/proto/go.mod")
  [ -n "$etcd_version" ] || { echo "kube-tools: proto/go.mod requires no go.etcd.io/etcd/server/v3" >&2; exit 1; }
  echo "setup: building etcd $etcd_version (the release the fleet embeds) for kube-apiserver"
  # The etcd server module's main package is the etcd binary.
  esrc="$root/.tools/k8s/src-etcd-$etcd_version"
  mkdir -p "$esrc"
  printf 'module avatarfleet.local/etcdtool\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$etcd_version" >"$esrc/go.mod"
  printf '//go:build tools\n\npackage etcdtool\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$esrc/tools.go"
  (cd "$esrc" && go mod tidy && go build -trimpath -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$out/etcd.tmp" "$out/etcd"
fi
"$out/kube-apiserver" --version
etcd_banner=$("$out/etcd" --version)
echo "${etcd_banner%%$'\n'*}"
