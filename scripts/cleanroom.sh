#!/usr/bin/env bash
# Clean-room check of the set-up: runs a make target (default `test`) as root
# in a fresh Debian root that has nothing but a minimal base system, `make`,
# CA certificates, the host's Go and a clone of the current commit. Proves the
# README's promise that `make` and Go are the only prerequisites.
#
#   scripts/cleanroom.sh [target...]    (default: test)
#
# Needs root (debootstrap, chroot, mounts) and is not part of `make test`.
# The Debian release is the host's (/etc/os-release); the mirror is the one
# the host's apt sources use. A pristine root is cached under
# .cache/cleanroom/ (keyed by release) and copied for each run, so only the
# first run pays for debootstrap. Only committed files are tested (a clone of
# HEAD). The host's CA bundle, proxy, Go proxy and npm registry settings are
# carried in, as a corporate network would need. Set CLEANROOM_KEEP=1 to keep
# the root of the last run (otherwise it is removed on exit), and
# CLEANROOM_REUSE=1 to run again in that kept root (warm, so not a fresh
# test; the root is kept again).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(test)
start=$(date +%s)

say() { echo "cleanroom: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot and mounts); run it with sudo"

# --- what to build: the host's release and mirror -----------------------------
# shellcheck disable=SC1091
release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$release" ] || die "no VERSION_CODENAME in /etc/os-release (not Debian?)"

# shellcheck source=lib/apt-mirror.sh
. "$repo/scripts/lib/apt-mirror.sh"
mirror=$(host_mirror "$release")
[ -n "$mirror" ] || die "no apt source for $release in /etc/apt/sources.list(.d); cannot pick a mirror"

cache="$repo/.cache/cleanroom"
pristine="$cache/$release-minbase"
work="$cache/run"
mkdir -p "$cache"

# --- the pristine root, made once per release ----------------------------------
if [ ! -f "$pristine/.complete" ]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  say "debootstrap --variant=minbase $release from $mirror (once; cached in $pristine)"
  grep -q " $pristine/" /proc/mounts && die "$pristine has mounts left by an interrupted debootstrap; unmount them first"
  rm -rf "$pristine"
  # make and CA certificates are the only packages added to the base system.
  debootstrap --variant=minbase --include=make,ca-certificates "$release" "$pristine" "$mirror" \
    >"$cache/debootstrap.log" 2>&1 || die "debootstrap failed; see $cache/debootstrap.log"
  touch "$pristine/.complete"
fi

# --- this run's root -----------------------------------------------------------
mounts=()
cleanup() {
  local rc=$? i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || say "could not unmount ${mounts[i]}"
  done
  if [ "${CLEANROOM_KEEP:-0}" != 1 ] && [ "${CLEANROOM_REUSE:-0}" != 1 ] && [ -d "$work" ]; then
    # Only after every mount is gone: never delete through a bind mount.
    if ! grep -q " $work/" /proc/mounts; then rm -rf "$work"; fi
  fi
  local elapsed=$(($(date +%s) - start))
  local verdict=FAIL
  [ "$rc" -eq 0 ] && verdict=PASS
  printf 'cleanroom: %s: make %s in %s (exit %d, %dm%02ds)\n' \
    "$verdict" "${targets[*]}" "${kind:-a $release minbase root}" "$rc" $((elapsed / 60)) $((elapsed % 60)) >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

grep -q " $work/" /proc/mounts && die "$work still has mounts from an earlier run; unmount them first"
head=$(git -C "$repo" rev-parse HEAD)
ca_bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$ca_bundle" ] || die "no CA bundle at $ca_bundle"
if [ "${CLEANROOM_REUSE:-0}" = 1 ]; then
  # Rerun in the root a run with CLEANROOM_KEEP=1 left: its packages, module
  # and build caches stay, so this is no fresh machine any more; it is for
  # rerunning a failed step and for proving that set-up is idempotent.
  [ -f "$work/.cleanroom-commit" ] || die "no kept root at $work (run once with CLEANROOM_KEEP=1)"
  kind="the kept root of an earlier run (not fresh; commit $(cut -c 1-12 "$work/.cleanroom-commit"))"
  say "reusing $kind"
else
  kind="a fresh $release minbase root"
  rm -rf "$work"
  cp -a "$pristine" "$work"

  # Name resolution and the host's apt sources (with their keyrings) and apt
  # settings (proxy, validity checks): the same network view as the host.
  cp -L /etc/resolv.conf "$work/etc/resolv.conf"
  cp -L /etc/hosts "$work/etc/hosts"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    install -D -m 0644 "$f" "$work$f"
    for key in $(grep -oE 'signed-by=[^] ]+|^Signed-By: *[^ ]+' "$f" | sed -E 's/^[Ss]igned-[Bb]y[=:] *//'); do
      [ -f "$key" ] && [ ! -e "$work$key" ] && install -D -m 0644 "$key" "$work$key"
    done
  done
  [ -f /etc/apt/sources.list ] || rm -f "$work/etc/apt/sources.list"
  for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && grep -qi 'Acquire::' "$f" && install -D -m 0644 "$f" "$work$f"
  done

  # The host's CA bundle, so TLS through a corporate proxy works in the root too.
  install -D -m 0644 "$ca_bundle" "$work/etc/ssl/certs/ca-certificates.crt"
  [ "$ca_bundle" = /etc/ssl/certs/ca-certificates.crt ] || install -D -m 0644 "$ca_bundle" "$work$ca_bundle"

  # Go: the host's toolchain, as the README asks a user to install it.
  goroot=$(go env GOROOT) || die "no Go on the host"
  mkdir -p "$work/usr/local"
  cp -a "$goroot" "$work/usr/local/go"

  # The repository: a clone of the current commit, so only committed files.
  if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
    say "warning: uncommitted changes are not tested; testing commit ${head:0:12}"
  fi
  git clone --quiet --no-checkout "$repo" "$work/src"
  git -C "$work/src" -c advice.detachedHead=false checkout --quiet --detach "$head"
  rm -rf "$work/src/.git" # a fresh download need not be a git checkout; make must not care
  echo "$head" >"$work/.cleanroom-commit"
fi

# npm's registry configuration (the host's ~/.npmrc and registry).
[ -f "$HOME/.npmrc" ] && install -D -m 0600 "$HOME/.npmrc" "$work/root/.npmrc"
npm_registry=${npm_config_registry:-}
if [ -z "$npm_registry" ] && command -v npm >/dev/null 2>&1; then
  npm_registry=$(npm config get registry 2>/dev/null || true)
fi

# The environment inside: a plain login's, plus the carried network settings.
envs=(HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8
  PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY ALL_PROXY all_proxy \
  SSL_CERT_DIR NODE_EXTRA_CA_CERTS GRPC_DEFAULT_SSL_ROOTS_FILE_PATH; do
  [ -n "${!v:-}" ] && envs+=("$v=${!v}")
done
envs+=("SSL_CERT_FILE=$ca_bundle")
for v in GOPROXY GOFLAGS GOSUMDB GONOSUMDB GONOPROXY GOPRIVATE GOINSECURE GOTOOLCHAIN; do
  val=$(go env "$v")
  [ -n "$val" ] && envs+=("$v=$val")
done
[ -n "$npm_registry" ] && envs+=("npm_config_registry=$npm_registry")

# Kernel file systems: processes, devices, shared memory for Chromium.
mountfs() { # type source target [options]
  mount -t "$1" ${4:+-o "$4"} "$2" "$work$3"
  mounts+=("$work$3")
}
mountfs proc proc /proc
mountfs sysfs sysfs /sys
mount --bind /dev "$work/dev" && mounts+=("$work/dev")
mount --bind /dev/pts "$work/dev/pts" && mounts+=("$work/dev/pts")
mountfs tmpfs tmpfs /dev/shm mode=1777

say "make ${targets[*]} in $work ($kind; host commit ${head:0:12}, mirror $mirror)"
chroot "$work" /usr/bin/env -i "${envs[@]}" /bin/bash -c 'cd /src && exec make "$@"' make "${targets[@]}"
