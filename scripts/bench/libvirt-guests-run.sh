#!/usr/bin/env bash
# Runs Debian's libvirt-guests (the libvirt-daemon-system package's /usr/lib/libvirt/libvirt-guests.sh)
# `stop` with ON_SHUTDOWN=shutdown against the named domains only, for the side-by-side benchmark.
#
# usage: VR_URI=qemu:///system VR_PARALLEL=0 VR_TIMEOUT=60 libvirt-guests-run.sh DOMAIN...
#
# The script is run unmodified except for two path variables: `sysconfdir` (so it reads our
# config instead of /etc/default/libvirt-guests) and `localstatedir` (so its list/lock files go to
# a private temp dir). A `virsh` shim on PATH restricts `virsh list` to the named domains, so other
# guests on the same libvirtd are not touched; every other virsh call goes through unchanged.
set -euo pipefail
SRC=/usr/lib/libvirt/libvirt-guests.sh
[ -r "$SRC" ] || { echo "libvirt-guests-run: $SRC missing (install libvirt-daemon-system)" >&2; exit 2; }
[ $# -gt 0 ] || { echo "libvirt-guests-run: no domains given" >&2; exit 2; }
VIRSH=$(command -v virsh)
T=$(mktemp -d /tmp/vr-libvirt-guests.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/etc/default" "$T/var/lib/libvirt" "$T/var/lock" "$T/bin"
cat > "$T/etc/default/libvirt-guests" <<EOF
URIS="${VR_URI:-qemu:///system}"
ON_BOOT=ignore
ON_SHUTDOWN=shutdown
PARALLEL_SHUTDOWN=${VR_PARALLEL:-0}
SHUTDOWN_TIMEOUT=${VR_TIMEOUT:-300}
EOF
: > "$T/allowed"
for d in "$@"; do "$VIRSH" -c "${VR_URI:-qemu:///system}" domuuid "$d" | grep . >> "$T/allowed"; done
cat > "$T/bin/virsh" <<EOF
#!/bin/sh
for a in "\$@"; do
  if [ "\$a" = list ]; then "$VIRSH" "\$@" | grep -F -x -f "$T/allowed"; exit 0; fi
done
exec "$VIRSH" "\$@"
EOF
chmod +x "$T/bin/virsh"
sed -e "s|^sysconfdir=.*|sysconfdir=\"$T/etc\"|" -e "s|^localstatedir=.*|localstatedir=\"$T/var\"|" \
  "$SRC" > "$T/libvirt-guests.sh"
PATH="$T/bin:$PATH" sh "$T/libvirt-guests.sh" stop
