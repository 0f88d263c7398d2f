#!/usr/bin/env bash
# The project's full test suite, from a fresh Debian 12 machine (run as root):
#   bash scripts/test.sh
# 1. sets up every real backend idempotently (scripts/<backend>/setup.sh: Debian packages, a
#    Python venv, test servers built once and cached under ~/.cache/virtrigaud);
# 2. builds the workspace (target dir cached under ~/.cache/virtrigaud/targets/<checkout>, one per
#    checkout path: tests read files through the CARGO_MANIFEST_DIR baked in at build time, and
#    cargo does not rebuild a moved checkout, so two checkouts sharing one dir read each other's);
# 3. runs fmt, clippy -D warnings, every test (nextest) and every doctest with
#    VIRTRIGAUD_REQUIRE_BACKENDS=1, so a missing backend is a failure, never a skip;
# 4. stops the servers it started.
# Environment: VIRTRIGAUD_BACKENDS="libvirt proxmox vsphere kubevirt" limits the backends set up
# (tests of the others then FAIL under VIRTRIGAUD_REQUIRE_BACKENDS=1; set it to 0 to skip them);
# VIRTRIGAUD_KEEP_BACKENDS=1 leaves the servers running afterwards (faster reruns, or servers
# shared with other work).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export VIRTRIGAUD_CACHE="${VIRTRIGAUD_CACHE:-$HOME/.cache/virtrigaud}"
export VIRTRIGAUD_STATE_DIR="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}"
CHECKOUT_KEY="$(basename "$ROOT")-$(printf %s "$ROOT" | sha256sum | cut -c1-12)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$VIRTRIGAUD_CACHE/targets/$CHECKOUT_KEY}"
# No incremental compilation: a test run builds each crate once, and incremental state would
# double the cached target dir (the machine's disk is the limit, not the compile time).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export VIRTRIGAUD_REQUIRE_BACKENDS="${VIRTRIGAUD_REQUIRE_BACKENDS:-1}"
export CARGO_TERM_COLOR=never
BACKENDS="${VIRTRIGAUD_BACKENDS:-libvirt proxmox vsphere kubevirt}"
# Optional features whose code must be built, linted and tested too: the HTTP image downloader, the
# mock provider, the model's JSON Schema and the side-by-side harness's provider comparison.
FEATURES="--features virtrigaud-core/image-http,virtrigaud-core/mock,virtrigaud-core/schema,virtrigaud-benches/providers"
mkdir -p "$VIRTRIGAUD_CACHE" "$VIRTRIGAUD_STATE_DIR"
LOGS="$VIRTRIGAUD_STATE_DIR/logs"
mkdir -p "$LOGS"
T0=$(date +%s)
step() { echo; echo "==== [test.sh +$(( $(date +%s) - T0 ))s] $*"; }

teardown() {
  if [ "${VIRTRIGAUD_KEEP_BACKENDS:-0}" = 1 ]; then
    echo "VIRTRIGAUD_KEEP_BACKENDS=1: leaving the backends running"
    return
  fi
  for b in $BACKENDS; do
    if [ -x "scripts/$b/teardown.sh" ] || [ -f "scripts/$b/teardown.sh" ]; then
      bash "scripts/$b/teardown.sh" >"$LOGS/teardown-$b.log" 2>&1 || echo "teardown of $b failed (see $LOGS/teardown-$b.log)"
    fi
  done
}
trap teardown EXIT

command -v cargo >/dev/null || { echo "cargo is required (rustup toolchain)"; exit 1; }

# libvirt's setup installs libvirt-dev, which the workspace build needs: it goes first.
setup_backend() {
  local b="$1"
  if [ ! -f "scripts/$b/setup.sh" ]; then
    echo "no setup script for backend $b"; return 1
  fi
  local t=$(date +%s)
  if bash "scripts/$b/setup.sh" >"$LOGS/setup-$b.log" 2>&1; then
    echo "backend $b ready in $(( $(date +%s) - t ))s"
  else
    echo "backend $b setup FAILED after $(( $(date +%s) - t ))s; last lines of $LOGS/setup-$b.log:"
    tail -n 40 "$LOGS/setup-$b.log"
    return 1
  fi
}

failed_setup=()
if [[ " $BACKENDS " == *" libvirt "* ]]; then
  step "setting up libvirt (Debian packages, libvirtd, guest images)"
  setup_backend libvirt || failed_setup+=(libvirt)
else
  # The workspace still needs libvirt's C headers to build.
  if ! pkg-config --exists libvirt 2>/dev/null; then
    step "installing libvirt-dev (build dependency)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 libvirt-dev pkg-config >/dev/null
  fi
fi

step "building the workspace and its tests in the background (log: $LOGS/build.log)"
( cargo build --workspace --all-targets $FEATURES >"$LOGS/build.log" 2>&1; echo $? >"$LOGS/build.rc" ) &
BUILD_PID=$!

for b in $BACKENDS; do
  [ "$b" = libvirt ] && continue
  step "setting up $b"
  setup_backend "$b" || failed_setup+=("$b")
done

step "waiting for the build"
wait "$BUILD_PID" || true
if [ "$(cat "$LOGS/build.rc" 2>/dev/null || echo 1)" != 0 ]; then
  tail -n 80 "$LOGS/build.log"
  echo "BUILD FAILED"; exit 1
fi
echo "build ok"

if [ ${#failed_setup[@]} -gt 0 ]; then
  echo "backend setup failed for: ${failed_setup[*]} — their real-server tests will fail loudly"
fi
for b in $BACKENDS; do
  if [ -f "$VIRTRIGAUD_STATE_DIR/$b.env" ]; then
    # shellcheck disable=SC1090
    source "$VIRTRIGAUD_STATE_DIR/$b.env"
  fi
done

status=0
step "cargo fmt --check"
cargo fmt --all -- --check || { echo "fmt check FAILED"; status=1; }

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets $FEATURES -q -- -D warnings || { echo "clippy FAILED"; status=1; }

# Each published crate as a dependent gets it: its own default features (no unification with the
# rest of the workspace), docs without warnings, and a package with its README and licenses.
# virtrigaud-kubevirt leaves the Kubernetes version to binaries (k8s-openapi's rule); here it
# comes from K8S_OPENAPI_ENABLED_VERSION in .cargo/config.toml (docs.rs uses k8s-openapi/latest).
PUBLISHED="virtrigaud-core virtrigaud-libvirt virtrigaud-vsphere virtrigaud-proxmox virtrigaud-kubevirt virtrigaud"
step "published crates on their own: cargo check, cargo doc -D warnings, cargo package (log: $LOGS/package.log)"
t=$(date +%s)
package_args=()
for p in $PUBLISHED; do
  cargo check -q -p "$p" || { echo "cargo check -p $p FAILED"; status=1; }
  RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps -p "$p" || { echo "cargo doc -p $p FAILED"; status=1; }
  files="$(cargo package --list -q -p "$p" --allow-dirty --offline)" || { echo "cargo package --list -p $p FAILED"; status=1; }
  for f in README.md LICENSE-MIT LICENSE-APACHE; do
    grep -qx "$f" <<<"$files" || { echo "$p: $f is not in the package"; status=1; }
  done
  package_args+=(-p "$p")
done
# One multi-package run (cargo >= 1.90): the crates depend on each other and are not on
# crates.io yet, so each is resolved against the others' local packages. --offline: every
# dependency is in the local cache after the build.
if cargo package "${package_args[@]}" --no-verify --allow-dirty --offline >"$LOGS/package.log" 2>&1; then
  grep -E '^ *Packaged' "$LOGS/package.log"
else
  tail -n 40 "$LOGS/package.log"; echo "cargo package FAILED"; status=1
fi
echo "published crates checked in $(( $(date +%s) - t ))s"

step "tests (nextest, VIRTRIGAUD_REQUIRE_BACKENDS=$VIRTRIGAUD_REQUIRE_BACKENDS)"
# Every conformance run records itself here; the table of backends x checks is printed below.
export VIRTRIGAUD_CONFORMANCE_DIR="$LOGS/conformance"
rm -rf "$VIRTRIGAUD_CONFORMANCE_DIR"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace $FEATURES --profile ci || status=1
else
  cargo test --workspace $FEATURES --lib --bins --tests || status=1
fi

step "conformance: backends x checks (also in $LOGS/conformance.md)"
python3 scripts/conformance_table.py "$VIRTRIGAUD_CONFORMANCE_DIR" | tee "$LOGS/conformance.md"

step "doctests"
cargo test --workspace $FEATURES --doc || status=1

step "benchmarks compile and run once (criterion --test mode: correctness, not timings)"
cargo bench -p virtrigaud-benches --no-run -q || { echo "benchmarks do not build"; status=1; }
cargo bench -p virtrigaud-benches -q -- --test || { echo "benchmark smoke run failed"; status=1; }

step "side-by-side benchmark harness smoke run (correctness only; the report is scripts/bench.sh)"
cargo run -q -p virtrigaud-benches $FEATURES --bin side_by_side -- --smoke >"$LOGS/bench-smoke.log" 2>&1 \
  && tail -n 5 "$LOGS/bench-smoke.log" || { tail -n 40 "$LOGS/bench-smoke.log"; echo "benchmark harness smoke FAILED"; status=1; }

step "quickstart (simulated clock)"
cargo run -q -p virtrigaud-examples --bin quickstart -- --fast >"$LOGS/quickstart.log" 2>&1 \
  && tail -n 14 "$LOGS/quickstart.log" || { cat "$LOGS/quickstart.log"; echo "quickstart FAILED"; status=1; }

step "reconcile: the seed documents through the reconcilers (simulated clock)"
cargo run -q -p virtrigaud-examples --bin reconcile -- --fast >"$LOGS/reconcile.log" 2>&1 \
  && tail -n 20 "$LOGS/reconcile.log" || { cat "$LOGS/reconcile.log"; echo "reconcile FAILED"; status=1; }

if [ ${#failed_setup[@]} -gt 0 ]; then
  echo "FAILED: backend setup failed for ${failed_setup[*]}"; status=1
fi
step "done: $([ $status = 0 ] && echo PASSED || echo FAILED) in $(( $(date +%s) - T0 ))s"
exit $status
