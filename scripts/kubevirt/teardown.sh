#!/bin/bash
# Stops the apiserver and etcd started by setup.sh (only the processes recorded in our pid files). Idempotent.
set -euo pipefail
STATE_ROOT=${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}
S=$STATE_ROOT/kubevirt
for p in kas etcd; do
  f=$S/$p.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "[kubevirt/teardown] stopped $p ($pid)"
  fi
  rm -f "$f"
done
rm -rf "$S/etcd-data"
[ "${1:-}" = "--keep-env" ] || rm -f "$STATE_ROOT/kubevirt.env"
