#!/bin/bash
# Build the standalone CRD apiserver (k8s.io/apiextensions-apiserver: the same generic-apiserver code that serves
# CRDs inside kube-apiserver) from Debian *sid* Go source packages, without installing them on the system:
# an isolated apt configuration (its own sources.list, lists and cache under a private work dir) fetches the
# -dev source packages and a Go toolchain with `apt-get download`; they are unpacked with `dpkg -x` and built
# offline in GOPATH mode.
#
# Output: $KAS_BIN (default ${VIRTRIGAUD_CACHE:-$HOME/.cache/virtrigaud}/kubevirt/bin/apiextensions-apiserver).
# Built only when missing (pass --force to rebuild). Cold: ~5-6 min on 2 cores, ~2.3 GiB of sources (removed after
# a successful build unless KEEP_BUILD_TREE=1).
set -euo pipefail
CACHE=${VIRTRIGAUD_CACHE:-$HOME/.cache/virtrigaud}/kubevirt
KAS_BIN=${KAS_BIN:-$CACHE/bin/apiextensions-apiserver}
WORK=${KAS_BUILD_DIR:-$CACHE/build}
FORCE=0; [ "${1:-}" = "--force" ] && FORCE=1
log() { echo "[kubevirt/build-kas] $*"; }

if [ -x "$KAS_BIN" ] && [ $FORCE = 0 ]; then
  log "cached binary present: $KAS_BIN (skip build)"; exit 0
fi
for tool in apt-get apt-cache dpkg; do
  command -v $tool >/dev/null || { log "ERROR: $tool not found (Debian host required)"; exit 1; }
done

APT=$WORK/apt; ROOT=$WORK/root; DEBS=$WORK/debs
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$DEBS" "$(dirname "$KAS_BIN")"
# Same Debian mirror as the machine's own apt sources, suite sid (never added to the system's sources).
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
echo "deb $MIRROR sid main" > "$APT/sources.list"
A=(-o "Dir::Etc::sourcelist=$APT/sources.list" -o Dir::Etc::sourceparts=/nonexistent
   -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o APT::Default-Release=sid
   -o Dir::State::status=/dev/null)

t0=$(date +%s)
if ! ls -d "$ROOT"/usr/lib/go-1.*/bin/go >/dev/null 2>&1 \
   || [ ! -d "$ROOT/usr/share/gocode/src/k8s.io/apiextensions-apiserver" ]; then
  log "fetching sid package lists from $MIRROR (isolated apt config in $APT)"
  apt-get "${A[@]}" update -qq
  apt-cache "${A[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
      --no-enhances golang-k8s-apiextensions-apiserver-dev 2>/dev/null | grep -v '^ ' | grep -v '^<' | sort -u \
    | grep -E '^golang-.*-dev$' > "$DEBS/want.txt"
  GOVER=$(apt-cache "${A[@]}" depends golang-go | sed -n 's/.*Depends: \(golang-1\.[0-9]*-go\).*/\1/p' | head -1)
  [ -n "$GOVER" ] || { log "ERROR: could not resolve the Go toolchain package in sid"; exit 1; }
  echo "$GOVER" >> "$DEBS/want.txt"; echo "${GOVER%-go}-src" >> "$DEBS/want.txt"
  log "downloading $(wc -l < "$DEBS/want.txt") source/toolchain packages ($GOVER)"
  (cd "$DEBS" && apt-get "${A[@]}" download $(cat want.txt) 2>&1 | grep -v 'Download is performed unsandboxed' | tail -1) || true
  rm -rf "$ROOT"; mkdir -p "$ROOT"
  log "unpacking $(ls "$DEBS"/*.deb | wc -l) packages"
  for d in "$DEBS"/*.deb; do dpkg -x "$d" "$ROOT"; done
fi
t1=$(date +%s)
GOBIN_DIR=$(ls -d "$ROOT"/usr/lib/go-1.*/bin | sort -V | tail -1)
export PATH=$GOBIN_DIR:$PATH GOROOT=$(dirname "$GOBIN_DIR")
export GO111MODULE=off GOPATH=$ROOT/usr/share/gocode GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
export GOCACHE=$WORK/gocache CGO_ENABLED=0
log "building with $(go version)"
go build -trimpath -ldflags='-s -w' -o "$KAS_BIN.tmp" k8s.io/apiextensions-apiserver
mv "$KAS_BIN.tmp" "$KAS_BIN"
t2=$(date +%s)
log "fetch+unpack $((t1-t0))s, go build $((t2-t1))s, total $((t2-t0))s -> $KAS_BIN ($(du -h "$KAS_BIN" | cut -f1))"
echo "fetch_unpack_s=$((t1-t0)) go_build_s=$((t2-t1)) total_s=$((t2-t0)) built_at=$(date -u +%FT%TZ)" > "$CACHE/build-timing.txt"
if [ "${KEEP_BUILD_TREE:-0}" != 1 ]; then rm -rf "$WORK"; fi
