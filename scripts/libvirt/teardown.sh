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
  rm -f "$STATE"/pool/vrt-* "$STATE"/console/vrt-*
  virsh -q -c "$URI" pool-refresh virtrigaud >/dev/null 2>&1
fi
if [ -f "$STATE/libvirtd.pid" ]; then
  kill "$(cat "$STATE/libvirtd.pid")" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$(cat "$STATE/libvirtd.pid")" 2>/dev/null || break; sleep 0.1; done
  rm -f "$STATE/libvirtd.pid"
  for pid in $(ps -C virtlogd -o pid=,stat= 2>/dev/null | awk '$2 !~ /^Z/ {print $1}'); do kill "$pid"; done
fi
echo "[libvirt teardown] done"
