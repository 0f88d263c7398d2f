#!/usr/bin/env bash
# Builds the tiny test guest from Debian packages: usage build-guest.sh OUT_DIR WORK_DIR
#   OUT_DIR/vmlinuz     Debian cloud kernel (apt-get download, extracted, not installed)
#   OUT_DIR/initrd.img  busybox-static initramfs + virtio/button modules + qemu-ga
# Personality from the kernel command line: vr.mode=acpi|ignore, vr.agent=0|1, vr.delay=N (with
# vr.mode=acpi: power off N s after the first ACPI button press instead of at once); vr.seed=1 mounts
# the cloud-init NoCloud seed cdrom and prints its user-data on the console (SEED: lines).
set -euo pipefail
OUT="$1"; WORK="$2"
mkdir -p "$OUT" "$WORK/debs"
KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KPKG" ]; then apt-get -q update >/dev/null; KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); fi
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
KVER=${KPKG#linux-image-}
KROOT="$WORK/kernel-$KVER"
if [ ! -f "$KROOT/boot/vmlinuz-$KVER" ]; then
  (cd "$WORK/debs" && apt-get download -q "$KPKG" >/dev/null)
  rm -rf "$KROOT"; mkdir -p "$KROOT"
  dpkg-deb -x "$WORK"/debs/"${KPKG}"_*.deb "$KROOT"
  busybox depmod -b "$KROOT" "$KVER"
fi
MODDIR="$KROOT/lib/modules/$KVER"

declare -A SEEN=(); ORDER=()
modpath() { awk -F: -v m="/$1.ko" 'index($1, m) && substr($1, length($1)-length(m)+1) == m {print $1; exit}' "$MODDIR/modules.dep"; }
add_mod() {
  local p="$1" d
  [ -n "${SEEN[$p]:-}" ] && return 0
  SEEN[$p]=1
  for d in $(awk -F: -v p="$p" '$1 == p {print $2}' "$MODDIR/modules.dep"); do add_mod "$d"; done
  ORDER+=("$p")
}
for m in virtio_pci virtio_blk virtio_balloon virtio_console evdev button ata_piix sr_mod isofs; do
  p=$(modpath "$m"); [ -n "$p" ] && add_mod "$p"
done

R="$WORK/initramfs"; rm -rf "$R"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc/acpi/PWRF,lib/modules,lib64}
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
: > "$R/lib/modules/order"
for p in "${ORDER[@]}"; do cp "$MODDIR/$p" "$R/lib/modules/"; basename "$p" >> "$R/lib/modules/order"; done

QGA=$(command -v qemu-ga || echo /usr/sbin/qemu-ga)
cp "$QGA" "$R/usr/sbin/qemu-ga"
for lib in $(ldd "$QGA" | awk '/=>/ {print $3} /^[ \t]*\/lib/ {print $1}'); do
  mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"

# qemu-ga's guest-shutdown runs /sbin/shutdown -P|-H|-r +0 "msg"
cat > "$R/sbin/shutdown" <<'S'
#!/bin/sh
# qemu-ga runs: shutdown -h -P|-H|-r +0 "hypervisor initiated shutdown"
echo "VR: shutdown $* (guest agent)" > /dev/console
for a in "$@"; do [ "$a" = -r ] && exec reboot -f; done
poweroff -f
S
# vr.delay=N (seconds, default 0): the guest honours the button only N s after the FIRST press
# (later presses while it waits change nothing), like a guest whose own shutdown takes N s.
cat > "$R/etc/acpi/PWRF/00000080" <<'S'
#!/bin/sh
D=0
for w in $(cat /proc/cmdline); do case "$w" in vr.delay=*) D="${w#*=}";; esac; done
case "$D" in ''|*[!0-9.]*) D=0;; esac
if [ "$D" = 0 ]; then
  echo "VR: ACPI power button -> poweroff" > /dev/console
  poweroff -f
fi
mkdir /run/vr-button 2>/dev/null || exit 0
echo "VR: ACPI power button -> poweroff in ${D}s" > /dev/console
(sleep "$D"; echo "VR: delayed ACPI poweroff now" > /dev/console; poweroff -f) </dev/null >/dev/null 2>&1 &
S
chmod +x "$R/sbin/shutdown" "$R/etc/acpi/PWRF/00000080"

cat > "$R/init" <<'S'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev 2>/dev/null
log() { echo "VR[$(cut -d' ' -f1 /proc/uptime)]: $*" > /dev/console; }
opt() { for w in $(cat /proc/cmdline); do case "$w" in "$1"=*) echo "${w#*=}"; return;; esac; done; }
MODE=$(opt vr.mode); MODE=${MODE:-acpi}; AGENT=$(opt vr.agent); SEED=$(opt vr.seed)
for m in $(cat /lib/modules/order); do
  case "$m" in button.ko|evdev.ko) [ "$MODE" = ignore ] && continue;; esac
  case "$m" in scsi_common.ko|scsi_mod.ko|libata.ko|ata_piix.ko|cdrom.ko|sr_mod.ko|isofs.ko) [ "$SEED" = 1 ] || continue;; esac
  insmod "/lib/modules/$m" 2>/dev/null
done
if [ "$MODE" != ignore ]; then
  i=0; while ! ls /dev/input/event* >/dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  acpid -d -c /etc/acpi > /tmp/acpid.log 2>&1 &
fi
if [ "$AGENT" = 1 ]; then
  PORT=""; i=0
  while [ -z "$PORT" ] && [ $i -lt 50 ]; do
    for n in /sys/class/virtio-ports/*/name; do
      [ -f "$n" ] && [ "$(cat "$n")" = org.qemu.guest_agent.0 ] && PORT=$(basename "$(dirname "$n")")
    done
    [ -z "$PORT" ] && sleep 0.1; i=$((i+1))
  done
  [ -n "$PORT" ] && qemu-ga -m virtio-serial -p "/dev/$PORT" -t /run > /tmp/qga.log 2>&1 &
fi
if [ "$SEED" = 1 ]; then
  mkdir -p /seed; i=0
  while [ ! -e /dev/sr0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  if mount -t iso9660 -o ro /dev/sr0 /seed; then
    for f in /seed/*; do log "SEED file $(basename "$f")"; done
    sed 's/^/SEED user-data: /' /seed/user-data > /dev/console
  else
    log "SEED mount failed"
  fi
fi
log "READY mode=$MODE delay=$(opt vr.delay) agent=${AGENT:-0} cpus=$(nproc)"
while :; do
  for c in /sys/devices/system/cpu/cpu*/online; do [ "$(cat "$c")" = 0 ] && echo 1 > "$c" && log "cpus=$(nproc)"; done
  sleep 1
done
S
chmod +x "$R/init"
(cd "$R" && find . -print0 | cpio --null -o -H newc --quiet | gzip -6) > "$OUT/initrd.img.tmp"
cp "$KROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"; mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
echo "$KVER" > "$OUT/kernel-version"
echo "${GUEST_VERSION:-0}" > "$OUT/guest-version"
echo "guest built: kernel $KVER, modules ${ORDER[*]##*/}"
