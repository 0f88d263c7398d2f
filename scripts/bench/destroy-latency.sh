#!/usr/bin/env bash
# How long libvirt's hard power-off (`virsh destroy` = virDomainDestroy) takes on a running tiny
# guest, and when the QEMU process is actually gone. Evidence for the fleet comparison's "forced
# past deadline" margin (docs/BENCHMARKS.md, section 2).
#
#   sudo bash scripts/bench/destroy-latency.sh [ROUNDS] [CONCURRENT]     (defaults 5 and 3)
#
# Needs scripts/libvirt/setup.sh to have run (reads ${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}/libvirt.env).
# Boots transient guests named vrdl-<pid>-<k> (vr.mode=ignore), waits for their READY line, then:
#   sequential: ROUNDS destroys of one guest each;  concurrent: CONCURRENT guests destroyed at once.
# Per destroy it prints: destroy_ms (virsh destroy wall time, including virsh's own connect, ~10-30 ms),
# qemu_gone_ms (when the QEMU process exited: /proc/<pid> gone or a zombie, polled every ~1 ms).
# libvirt 9.0 (src/util/virprocess.c, virProcessKillPainfullyDelay) sends SIGTERM, then checks for
# the process every 200 ms (SIGKILL at 10 s): a destroy cannot return before ~200 ms even when QEMU
# exits at once, and returns at the first 200 ms tick after QEMU is gone.
set -euo pipefail
ROUNDS=${1:-5}; CONC=${2:-3}
STATE_ROOT="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}"
# shellcheck disable=SC1091
source "$STATE_ROOT/libvirt.env"
URI=$VIRTRIGAUD_LIBVIRT_URI
CON=$VIRTRIGAUD_LIBVIRT_CONSOLE_DIR
P="vrdl-$$"
now_ms() { date +%s%3N; }

boot() { # name
  local n=$1
  rm -f "$CON/$n.console.log"
  virsh -q -c "$URI" create /dev/stdin >/dev/null <<XML
<domain type='${VIRTRIGAUD_LIBVIRT_DOMAIN_TYPE:-qemu}'>
  <name>$n</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>$VIRTRIGAUD_LIBVIRT_KERNEL</kernel>
    <initrd>$VIRTRIGAUD_LIBVIRT_INITRD</initrd>
    <cmdline>console=ttyS0 panic=-1 loglevel=4 vr.mode=ignore vr.agent=0</cmdline></os>
  <features><acpi/></features><on_poweroff>destroy</on_poweroff>
  <devices><controller type='usb' model='none'/>
    <serial type='file'><source path='$CON/$n.console.log'/><target port='0'/></serial>
    <memballoon model='none'/></devices>
</domain>
XML
}
wait_ready() { # names...
  local n t=0
  for n in "$@"; do
    until grep -q READY "$CON/$n.console.log" 2>/dev/null; do
      sleep 0.2; t=$((t + 1)); [ $t -lt 900 ] || { echo "$n: not READY after 180 s" >&2; return 1; }
    done
  done
  sleep 0.5
}
pid_of() { cat "/run/libvirt/qemu/$1.pid" 2>/dev/null || cat "/var/run/libvirt/qemu/$1.pid"; }
# destroy_one NAME: runs virsh destroy, records "name destroy_ms qemu_gone_ms"
destroy_one() {
  local n=$1 pid t0 gone="" d
  pid=$(pid_of "$n")
  t0=$(now_ms)
  virsh -q -c "$URI" destroy "$n" >/dev/null &
  local vp=$!
  # exited = gone or a zombie (libvirt's kill(pid, 0) check also sees a zombie until it is reaped)
  local st=R
  while [ "$st" != Z ] && read -r _ _ st _ 2>/dev/null < "/proc/$pid/stat"; do sleep 0.001; done
  gone=$(( $(now_ms) - t0 ))
  wait "$vp"
  d=$(( $(now_ms) - t0 ))
  echo "$n destroy_ms=$d qemu_gone_ms=$gone"
}
cleanup() {
  for d in $(virsh -q -c "$URI" list --all --name 2>/dev/null | grep "^$P-" || true); do
    virsh -q -c "$URI" destroy "$d" >/dev/null 2>&1 || true
    rm -f "$CON/$d.console.log"
  done
}
trap cleanup EXIT

echo "libvirt $(virsh -c "$URI" version 2>/dev/null | awk '/Running hypervisor|Using library/ {print}' | tr '\n' ' ')"
t=$(now_ms); virsh -q -c "$URI" list >/dev/null; echo "virsh's own overhead (connect + one call): $(( $(now_ms) - t )) ms"
echo "== sequential: $ROUNDS destroys of one running guest"
for r in $(seq 1 "$ROUNDS"); do
  boot "$P-s$r"; wait_ready "$P-s$r"
  destroy_one "$P-s$r"
  rm -f "$CON/$P-s$r.console.log"
done
echo "== concurrent: $CONC guests destroyed at once"
names=()
for k in $(seq 1 "$CONC"); do names+=("$P-c$k"); boot "$P-c$k"; done
wait_ready "${names[@]}"
for n in "${names[@]}"; do destroy_one "$n" & done
wait
for n in "${names[@]}"; do rm -f "$CON/$n.console.log"; done
