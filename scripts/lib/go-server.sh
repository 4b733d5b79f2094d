# go_server builds a server program from its Go source through the Go module
# proxy into .tools/<dir>/<version>/<name>, once (keyed by version); with
# "check" as the mode it only says whether it is there. Sourced by
# scripts/minio.sh and scripts/livekit.sh.
#
#   go_server MODE DIR VERSION PACKAGE NAME WHAT
#     MODE     "check" or "" (build if missing)
#     DIR      folder under .tools/ (minio, livekit)
#     VERSION  the module version to build
#     PACKAGE  the main package's import path (built as PACKAGE@VERSION)
#     NAME     the file name to install it as
#     WHAT     what setup prints while it builds
go_server() {
  local mode=$1 dir=$2 version=$3 pkg=$4 name=$5 what=$6
  local root out tmp
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  out="$root/.tools/$dir/$version"
  built() { [ -x "$out/$name" ] && "$out/$name" --version >/dev/null 2>&1; }
  if [ "$mode" = check ]; then
    built && return 0
    echo "$dir: $out/$name is missing (run scripts/$dir.sh)" >&2
    return 1
  fi
  built && return 0
  echo "setup: building $what $version from source (a few minutes, once)"
  mkdir -p "$out"
  tmp=$(mktemp -d)
  # A build cache and module cache of their own, removed with $tmp: the
  # server's build shares next to nothing with the fleet's (no cgo,
  # -trimpath) and would keep gigabytes. Module files are read-only.
  local ok=0
  (cd "$tmp" && GOWORK=off CGO_ENABLED=0 GOBIN="$tmp" GOCACHE="$tmp/cache" GOMODCACHE="$tmp/mod" \
    go install -trimpath "$pkg@$version") && mv "$tmp/$(basename "$pkg")" "$out/$name" || ok=1
  chmod -R u+w "$tmp" 2>/dev/null || true
  rm -rf "$tmp"
  return $ok
}
