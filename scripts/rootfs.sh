#!/usr/bin/env bash
# Makes the Debian root filesystem the container images are built on
# (deploy/images): `debootstrap --variant=minbase` plus the worker's runtime
# libraries (libvpx, libopus, libopusfile), espeak-ng and CA certificates,
# trimmed of caches, logs and documentation, with the images' non-root user.
#
#   scripts/rootfs.sh          builds (once) and prints the root's path
#
# The release is the host's (/etc/os-release), so the libraries are the ones
# the binaries were linked against; the runtime package names are read from
# the host's -dev packages (libvpx-dev depends on libvpx7 on bookworm). The
# mirror is the one the host's apt sources use (as scripts/cleanroom.sh).
# The root is cached under .cache/rootfs/<release>-<hash of the package
# list and this script>/root and made again only when that key changes.
# Needs root (debootstrap, chroot); debootstrap is installed with apt when
# missing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "rootfs: $*" >&2; }
die() { say "$*"; exit 1; }

# The images' user: numeric, no login, no home outside the data volume.
IMAGE_UID=65532
IMAGE_USER=avatarfleet
DATA_DIR=/var/lib/avatarfleet

# shellcheck disable=SC1091
release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$release" ] || die "no VERSION_CODENAME in /etc/os-release (not Debian?)"

# Runtime packages: what each -dev package the build uses depends on, minus
# other -dev packages (libopusfile-dev also pulls libogg-dev, libopus-dev).
runtime_of() { # dev-package
  local deps
  deps=$(dpkg-query -W -f='${Depends}' "$1" 2>/dev/null) ||
    die "$1 is not installed on this machine (run make setup): its runtime package names the image's library"
  echo "$deps" | tr ',' '\n' | sed -E 's/\(.*\)//; s/[[:space:]]//g' | grep -v -- '-dev$' | grep .
}
packages=(ca-certificates espeak-ng libstdc++6)
for dev in libvpx-dev libopus-dev libopusfile-dev; do
  while read -r p; do packages+=("$p"); done < <(runtime_of "$dev")
done
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)

key=$( (printf '%s\n' "$release" "${packages[@]}"; cat "$0") | sha256sum | cut -c 1-16)
cache="$repo/.cache/rootfs"
dir="$cache/$release-$key"
root="$dir/root"
if [ -f "$dir/.complete" ]; then
  echo "$root"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap and chroot): run make images as root (CI does)"

# shellcheck source=lib/apt-mirror.sh
. "$repo/scripts/lib/apt-mirror.sh"
mirror=$(host_mirror "$release")
[ -n "$mirror" ] || die "no apt source for $release in /etc/apt/sources.list(.d); cannot pick a mirror"

if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

mkdir -p "$cache"
grep -q " $dir/" /proc/mounts && die "$dir has mounts left by an interrupted debootstrap; unmount them first"
rm -rf "$dir"
mkdir -p "$dir"
include=$(IFS=,; echo "${packages[*]}")
say "debootstrap --variant=minbase $release + $include from $mirror (once; cached in $dir)"
start=$(date +%s)
debootstrap --variant=minbase --include="$include" "$release" "$root" "$mirror" \
  >"$dir/debootstrap.log" 2>&1 || die "debootstrap failed; see $dir/debootstrap.log"

# Every package and its version, for the image's record and for review.
chroot "$root" dpkg-query -W -f='${Package}\t${Version}\n' | sort >"$dir/packages.txt"

# Trim what a running container never reads and what differs run to run
# (logs, caches, apt lists, the host's name files, man pages and docs; the
# copyright files stay). Device nodes are made by the runtime, not shipped.
rm -rf "$root"/var/cache/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
  "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
  "$root"/tmp/* "$root"/var/tmp/* "$root"/run/* "$root"/dev/* "$root"/debootstrap
find "$root/usr/share/doc" -type f ! -name copyright -delete
find "$root/usr/share/doc" -type d -empty -delete
rm -f "$root"/etc/resolv.conf "$root"/etc/hostname "$root"/etc/machine-id "$root"/var/lib/dbus/machine-id \
  "$root"/etc/ssh/ssh_host_* "$root"/var/lib/dpkg/*-old "$root"/etc/*- 
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# The non-root user; its home is the data volume.
echo "$IMAGE_USER:x:$IMAGE_UID:$IMAGE_UID:AvatarFleet:$DATA_DIR:/usr/sbin/nologin" >>"$root/etc/passwd"
echo "$IMAGE_USER:x:$IMAGE_UID:" >>"$root/etc/group"
echo "$IMAGE_USER:!:::::::" >>"$root/etc/shadow"
# The date of the last password change is the day debootstrap ran: cleared
# (no ageing; every account is locked), so a rebuild on another day is equal.
sed -i -E 's/^([^:]*:[^:]*):[0-9]*:/\1::/' "$root/etc/shadow"
install -d -m 0755 -o "$IMAGE_UID" -g "$IMAGE_UID" "$root$DATA_DIR"
chmod 1777 "$root/tmp" "$root/var/tmp"

touch "$dir/.complete"
# Roots made for other package lists or versions of this script are stale.
for old in "$cache"/*/; do
  old=${old%/}
  [ "$old" = "$dir" ] && continue
  grep -q " $old/" /proc/mounts || rm -rf "$old"
done
say "made $root in $(($(date +%s) - start)) s ($(du -sh "$root" | cut -f 1))"
echo "$root"
