#!/usr/bin/env bash
# The one reproducible command for virtrigaud's side-by-side benchmarks: regenerates docs/BENCHMARKS.md.
#
#   sudo scripts/bench.sh            # full run (a few minutes: real QEMU guests + simulator + placement)
#   scripts/bench.sh --smoke         # harness check only (tiny sizes; writes nothing unless --out is given)
#
# Steps: 1. scripts/libvirt/setup.sh (libvirtd + QEMU + the tiny guest; cached, seconds when warm) and its .env;
#        2. the criterion placement benchmark at 5,000 hosts (benches/benches/placement.rs);
#        3. the comparison binary (benches/src/bin/side_by_side: one module per comparison under comparisons/,
#           each measure -> check -> render), which runs comparisons 1-4, reads comparison 5 (placement) from
#           criterion's output and writes the report with the machine and versions; the report's prose is in
#           benches/templates/*.md (the golden files in benches/golden/ pin the rendering).
# Environment: CARGO_TARGET_DIR (default: <repo>/target), VIRTRIGAUD_STATE_DIR, BENCH_RUNS (latency rounds,
# default 10), BENCH_FLEET (fleet size, default 6), BENCH_FLEET_ROUNDS (virtrigaud fleet rounds, default 3),
# BENCH_OUT (default docs/BENCHMARKS.md), BENCH_SKIP_LIBVIRT=1 (simulator and placement only),
# BENCH_SKIP_PROVIDERS=1 (no Proxmox / vSphere / KubeVirt API-call comparison; built without feature
# `providers`), BENCH_SKIP_PROXMOX=1, BENCH_SKIP_VSPHERE=1, BENCH_SKIP_KUBEVIRT=1 (one backend left out).
# Step 1b: scripts/{proxmox,vsphere,kubevirt}/setup.sh (fakepve, vcsim, kube-apiserver; cached) and their
# .env files, for comparison 4 on the real provider backends (feature `providers`).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
STATE_ROOT="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}"
OUT="${BENCH_OUT:-$ROOT/docs/BENCHMARKS.md}"
log() { echo "[bench $(date +%T)] $*"; }
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1

ARGS=()
if [ "${BENCH_SKIP_LIBVIRT:-0}" = 1 ]; then
  ARGS+=(--no-libvirt)
else
  [ "$(id -u)" = 0 ] || { echo "bench.sh: the real-guest comparisons need root (libvirtd, QEMU); set BENCH_SKIP_LIBVIRT=1 to skip them" >&2; exit 1; }
  log "libvirt backend setup"
  bash "$ROOT/scripts/libvirt/setup.sh"
  # shellcheck disable=SC1091
  source "$STATE_ROOT/libvirt.env"
  [ -r /usr/lib/libvirt/libvirt-guests.sh ] || { echo "bench.sh: /usr/lib/libvirt/libvirt-guests.sh missing" >&2; exit 1; }
fi

FEATURES=()
if [ "${BENCH_SKIP_PROVIDERS:-0}" != 1 ]; then
  FEATURES=(--features providers)
  for b in proxmox vsphere kubevirt; do
    skip="BENCH_SKIP_$(echo "$b" | tr '[:lower:]' '[:upper:]')"
    if [ "${!skip:-0}" = 1 ]; then log "$b: skipped ($skip=1)"; continue; fi
    log "$b backend setup"
    bash "$ROOT/scripts/$b/setup.sh"
    # shellcheck disable=SC1090
    source "$STATE_ROOT/$b.env"
  done
fi

log "building the comparison binary (release)"
cargo build --release -q -p virtrigaud-benches --bin side_by_side "${FEATURES[@]}"
BIN="$CARGO_TARGET_DIR/release/side_by_side"

if [ "$SMOKE" = 1 ]; then
  log "smoke run (harness correctness only)"
  exec "$BIN" --smoke "${ARGS[@]}"
fi

log "placement benchmark at 5,000 hosts (criterion)"
# Same features as the comparison binary: cargo bench rebuilds the package's binaries into the same place.
cargo bench -q -p virtrigaud-benches --bench placement "${FEATURES[@]}" -- --noplot placement_5000_hosts

log "side-by-side comparisons"
mkdir -p "$(dirname "$OUT")"
"$BIN" "${ARGS[@]}" --runs "${BENCH_RUNS:-10}" --fleet "${BENCH_FLEET:-6}" --fleet-rounds "${BENCH_FLEET_ROUNDS:-3}" \
  --criterion "$CARGO_TARGET_DIR/criterion" --out "$OUT"
log "report: $OUT"
