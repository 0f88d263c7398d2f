#!/usr/bin/env bash
# Stops what scripts/libvirt/setup.sh started: test domains (virtrigaud-test-*), libvirtd (by pid file), virtlogd.
set -uo pipefail
STATE="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}/libvirt"
URI=qemu:///system
if command -v virsh >/dev/null && virsh -c "$URI" version >/dev/null 2>&1; then
  for d in $(virsh -c "$URI" list --all --name 2>/dev/null | grep '^vrt-' || true); do
    virsh -q -c "$URI" destroy "$d" >/dev/null 2>&1
    virsh -q -c "$URI" undefine "$d" --snapshots-metadata >/dev/null 2>&1
  done
fi
if [ -f "$STATE/libvirtd.pid" ]; then
  kill "$(cat "$STATE/libvirtd.pid")" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$(cat "$STATE/libvirtd.pid")" 2>/dev/null || break; sleep 0.1; done
  rm -f "$STATE/libvirtd.pid"
  pid=$(pgrep -x virtlogd) && kill "$pid"
fi
echo "[libvirt teardown] done"
