# Sourced by scripts/rootfs.sh and scripts/cleanroom.sh: the Debian mirror
# the host's apt already uses, so debootstrap reaches only what apt reaches.
#
# host_mirror RELEASE prints the first URI of the host's apt sources that
# serves RELEASE itself (not -updates or -security): deb822 *.sources files
# and one-line *.list files. It prints nothing when none does.
host_mirror() {
  local rel=$1 f
  {
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      awk -v rel="$rel" '
        /^[[:space:]]*$/ { if (uri != "" && ok) { print uri; exit } uri = ""; ok = 0; next }
        /^URIs:/   { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == rel) ok = 1 }
        END        { if (uri != "" && ok) print uri }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      awk -v rel="$rel" '$1 == "deb" {
          i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
          if ($(i + 1) == rel) { print $i; exit } }' "$f"
    done
    # awk, not head: head would leave early and fail the pipe with SIGPIPE.
  } | awk 'NR == 1'
}
