#!/bin/bash
# Stops the vcsim started by scripts/vsphere/setup.sh (idempotent). Keeps the cached binary.
set -euo pipefail
STATE="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}"
RUN="$STATE/vsphere"
if [ -f "$RUN/vcsim.pid" ]; then
  pid="$(cat "$RUN/vcsim.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    echo "[vsphere teardown] stopping vcsim pid $pid"
    kill "$pid" || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" || true
  fi
  rm -f "$RUN/vcsim.pid"
fi
rm -f "$STATE/vsphere.env"
echo "[vsphere teardown] done"
