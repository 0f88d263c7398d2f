#!/usr/bin/env bash
# virtrigaud-libvirt backend setup (idempotent, run as root on Debian 12):
#  1. installs libvirt-dev/pkg-config (build) and libvirtd + QEMU (TCG) + guest-building packages;
#  2. builds a tiny direct-kernel guest (Debian cloud kernel + busybox initramfs with qemu-ga) into
#     ${VIRTRIGAUD_CACHE:-$HOME/.cache/virtrigaud}/libvirt (rebuilt only when missing);
#  3. starts virtlogd + libvirtd (under `tini -s`) unless a healthy one answers already;
#  4. defines a directory storage pool `virtrigaud` and writes the test env to
#     ${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}/libvirt.env.
# Guest personalities (kernel command line): vr.mode=acpi (acpid powers off on the ACPI button),
# vr.mode=ignore (no button driver: ACPI is ignored), vr.agent=1 (runs qemu-ga on its virtio port),
# vr.delay=N with vr.mode=acpi (powers off N s after the first button press).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive CI=${CI:-true}
CACHE="${VIRTRIGAUD_CACHE:-$HOME/.cache/virtrigaud}/libvirt"
STATE_ROOT="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}"
STATE="$STATE_ROOT/libvirt"
URI=qemu:///system
log() { echo "[libvirt setup $(date +%T)] $*"; }
die() { echo "[libvirt setup] ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$CACHE" "$STATE"

# ---------- 1. packages
PKGS=(libvirt-dev pkg-config libvirt0 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
      libvirt-daemon-system libvirt-daemon-system-sysv qemu-system-x86 qemu-utils busybox-static cpio
      qemu-guest-agent tini)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v qemu-img >/dev/null || missing+=(qemu-utils)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
  # installing qemu-system-x86 (7.2) can remove a newer qemu-utils from backports: put qemu-img back
  command -v qemu-img >/dev/null || apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 qemu-utils >/dev/null
else
  log "packages already installed"
fi
command -v qemu-img >/dev/null || die "qemu-img missing after install"
command -v libvirtd >/dev/null || die "libvirtd missing after install"

# ---------- 2. guest (cached)
GUEST="$CACHE/guest"
# Cache key: the recipe itself (a hash of build-guest.sh, in guest-recipe), so any change to it
# rebuilds the guest. guest-version stays 3: setups from before the recipe hash compare it and
# reuse this guest (its personalities are a superset of theirs) instead of rebuilding theirs.
RECIPE=$(sha256sum "$(dirname "$0")/build-guest.sh" | cut -c1-16)
export GUEST_VERSION=3
if [ -s "$GUEST/vmlinuz" ] && [ -s "$GUEST/initrd.img" ] \
   && [ "$(cat "$GUEST/guest-recipe" 2>/dev/null)" = "$RECIPE" ]; then
  log "guest cached in $GUEST (recipe $RECIPE)"
else
  log "building guest into $GUEST (recipe $RECIPE)"
  bash "$(dirname "$0")/build-guest.sh" "$GUEST" "$CACHE/build"
  echo "$RECIPE" > "$GUEST/guest-recipe"
fi
# libvirt-qemu must be able to read the kernel/initrd: copy them to a world-readable place
PUB="$STATE/guest"; mkdir -p "$PUB"
# (replaced atomically: a guest starting right now reads either the old file or the new one)
for f in vmlinuz initrd.img; do
  cmp -s "$GUEST/$f" "$PUB/$f" 2>/dev/null || { cp "$GUEST/$f" "$PUB/$f.tmp.$$" && mv -f "$PUB/$f.tmp.$$" "$PUB/$f"; }
done
POOL_DIR="$STATE/pool"; LOG_DIR="$STATE/console"; mkdir -p "$POOL_DIR" "$LOG_DIR"
chmod 755 "$STATE_ROOT" "$STATE" "$PUB" "$POOL_DIR" "$LOG_DIR"; chmod 644 "$PUB"/*

# ---------- 3. daemons
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then chgrp kvm /dev/kvm; chmod 0660 /dev/kvm; fi
# virtlogd collects QEMU's output; a domain cannot start without it. (pgrep would also match a
# not-yet-reaped zombie, so look at the process state.)
virtlogd_alive() { ps -C virtlogd -o stat= 2>/dev/null | grep -qv '^Z'; }
mkdir -p /var/run/libvirt /var/log/libvirt
if ! virtlogd_alive; then log "starting virtlogd"; virtlogd -d; fi
if virsh -c "$URI" version >/dev/null 2>&1; then
  log "libvirtd already running and healthy"
else
  if ! pgrep -x libvirtd >/dev/null; then
    log "starting libvirtd (under tini -s)"
    setsid nohup tini -s -- libvirtd > "$STATE/libvirtd.log" 2>&1 < /dev/null &
    echo $! > "$STATE/libvirtd.pid"
  fi
  for _ in $(seq 1 300); do virsh -c "$URI" version >/dev/null 2>&1 && break; sleep 0.1; done
  virsh -c "$URI" version >/dev/null 2>&1 || die "libvirtd did not answer on $URI within 30 s (log: $STATE/libvirtd.log)"
  log "libvirtd ready"
fi

# ---------- 4. storage pool
if ! virsh -q -c "$URI" pool-info virtrigaud >/dev/null 2>&1; then
  virsh -q -c "$URI" pool-define-as virtrigaud dir --target "$POOL_DIR" >/dev/null
fi
virsh -q -c "$URI" pool-start virtrigaud >/dev/null 2>&1 || true
virsh -q -c "$URI" pool-refresh virtrigaud >/dev/null 2>&1 || true
[[ "$(virsh -c "$URI" pool-info virtrigaud)" == *running* ]] || die "storage pool virtrigaud is not running"

cat > "$STATE_ROOT/libvirt.env" <<ENV
export VIRTRIGAUD_LIBVIRT_URI=$URI
export VIRTRIGAUD_LIBVIRT_DOMAIN_TYPE=qemu
export VIRTRIGAUD_LIBVIRT_POOL=virtrigaud
export VIRTRIGAUD_LIBVIRT_KERNEL=$PUB/vmlinuz
export VIRTRIGAUD_LIBVIRT_INITRD=$PUB/initrd.img
export VIRTRIGAUD_LIBVIRT_CONSOLE_DIR=$LOG_DIR
ENV
log "wrote $STATE_ROOT/libvirt.env"
