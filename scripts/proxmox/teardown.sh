#!/bin/bash
# Stop the fakepve started by setup.sh (idempotent).
set -euo pipefail
STATE="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}/proxmox"
if [ -f "$STATE/fakepve.pid" ]; then
  pid="$(cat "$STATE/fakepve.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    echo "[proxmox teardown] stopped fakepve (pid $pid)"
  fi
  rm -f "$STATE/fakepve.pid"
fi
rm -f "${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}/proxmox.env"
