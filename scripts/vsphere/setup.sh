#!/bin/bash
# Sets up the vSphere test backend: vcsim (govmomi's simulator) built from Debian packages with the
# project's own small main (scripts/vsphere/vcsim-main/main.go), served over SOAP on 127.0.0.1.
# Idempotent: the binary is cached under ${VIRTRIGAUD_CACHE:-$HOME/.cache/virtrigaud}/vsphere and a
# healthy running vcsim is reused. Writes ${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}/vsphere.env.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${VIRTRIGAUD_CACHE:-$HOME/.cache/virtrigaud}/vsphere"
STATE="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}"
RUN="$STATE/vsphere"
ENVF="$STATE/vsphere.env"
PORT="${VIRTRIGAUD_VSPHERE_PORT:-18989}"
USER_NAME="virtrigaud"
PASSWORD="vcsim-test-password"
BIN="$CACHE/vcsim"
SRC_SUM="$(sha256sum "$HERE/vcsim-main/main.go" | cut -c1-16)"
log() { echo "[vsphere setup] $*"; }
die() { echo "[vsphere setup] ERROR: $*" >&2; exit 1; }
mkdir -p "$CACHE" "$RUN"

# 1. Debian packages (Go 1.19 + govmomi 0.24.2 sources with the simulator library).
if dpkg -s golang-go golang-github-vmware-govmomi-dev >/dev/null 2>&1; then
  log "golang-go and golang-github-vmware-govmomi-dev already installed"
else
  log "installing golang-go golang-github-vmware-govmomi-dev"
  ok=0
  for i in 1 2 3 4 5 6 7 8 9 10; do
    if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
         golang-go golang-github-vmware-govmomi-dev; then ok=1; break; fi
    if [ "$i" = 1 ]; then apt-get update || true; fi
    log "apt-get failed (busy lock?), retry $i in 15s"; sleep 15
  done
  [ "$ok" = 1 ] || die "could not install golang-go golang-github-vmware-govmomi-dev"
fi

# 2. Build vcsim (cached; rebuilt when main.go changes).
if [ -x "$BIN" ] && [ "$(cat "$CACHE/vcsim.src" 2>/dev/null)" = "$SRC_SUM" ]; then
  log "using cached $BIN"
else
  log "building vcsim (GOPATH mode, offline) into $BIN"
  W="$CACHE/gopath"
  rm -rf "$W"; mkdir -p "$W/src/virtrigaud/vcsim"
  cp "$HERE/vcsim-main/main.go" "$W/src/virtrigaud/vcsim/"
  start=$(date +%s)
  ( cd "$W/src/virtrigaud/vcsim" && \
    env GO111MODULE=off GOPATH="$W:/usr/share/gocode" GOPROXY=off GOFLAGS= \
        GOCACHE="$CACHE/gocache" CGO_ENABLED=0 go build -o "$BIN.tmp" . ) \
    || die "go build of vcsim failed"
  mv "$BIN.tmp" "$BIN"
  echo "$SRC_SUM" > "$CACHE/vcsim.src"
  rm -rf "$W"
  log "built vcsim in $(( $(date +%s) - start ))s"
fi

# 2b. A test CA and a P-256 server certificate for 127.0.0.1 (cached). Clients pin the CA.
PKI="$CACHE/pki"
if [ ! -s "$PKI/server.pem" ] || [ ! -s "$PKI/ca.pem" ]; then
  log "creating a test CA and server certificate in $PKI"
  rm -rf "$PKI"; mkdir -p "$PKI"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=virtrigaud vcsim test CA" -keyout "$PKI/ca.key" -out "$PKI/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$PKI/server.key" -out "$PKI/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$PKI/ext.cnf"
  openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -extfile "$PKI/ext.cnf" -out "$PKI/server.pem" 2>/dev/null
fi

URL="https://127.0.0.1:$PORT/sdk"
healthy() {
  # A SOAP RetrieveServiceContent answers when vcsim is ready.
  curl -s --cacert "$PKI/ca.pem" --max-time 2 -H 'Content-Type: text/xml; charset=utf-8' -H 'SOAPAction: "urn:vim25/6.5"' \
    --data-binary '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent></soapenv:Body></soapenv:Envelope>' \
    "$URL" 2>/dev/null | grep -q '<apiVersion>'
}

# 3. Start vcsim (or reuse a healthy one we started).
# A running vcsim built from an older main.go, or with another VM count, is restarted.
VMS=40
RUN_SUM="$SRC_SUM-vms$VMS"
if [ -f "$RUN/vcsim.pid" ] && kill -0 "$(cat "$RUN/vcsim.pid")" 2>/dev/null && healthy \
   && [ "$(cat "$RUN/vcsim.src" 2>/dev/null)" = "$RUN_SUM" ]; then
  log "vcsim already running (pid $(cat "$RUN/vcsim.pid")) at $URL"
else
  if [ -f "$RUN/vcsim.pid" ] && kill -0 "$(cat "$RUN/vcsim.pid")" 2>/dev/null; then
    log "stopping unhealthy or outdated vcsim pid $(cat "$RUN/vcsim.pid")"
    kill "$(cat "$RUN/vcsim.pid")" || true; sleep 1
  fi
  log "starting vcsim on 127.0.0.1:$PORT"
  # $VMS VMs per host/resource pool so every test and conformance check gets its own VM.
  nohup "$BIN" -l "127.0.0.1:$PORT" -username "$USER_NAME" -password "$PASSWORD" -vm "$VMS" -tools-running \
    -tls-cert "$PKI/server.pem" -tls-key "$PKI/server.key" \
    >"$RUN/vcsim.out" 2>"$RUN/vcsim.log" </dev/null &
  echo $! > "$RUN/vcsim.pid"
  echo "$RUN_SUM" > "$RUN/vcsim.src"
  for i in $(seq 1 100); do
    healthy && break
    kill -0 "$(cat "$RUN/vcsim.pid")" 2>/dev/null || die "vcsim exited; see $RUN/vcsim.log"
    sleep 0.1
  done
  healthy || die "vcsim did not answer within 10s; see $RUN/vcsim.log"
  log "vcsim ready (pid $(cat "$RUN/vcsim.pid"))"
fi

# 4. Trust exactly the test CA (verification stays on).
cp "$PKI/ca.pem" "$RUN/ca.pem"
CA_LINE="export VIRTRIGAUD_VSPHERE_CA_FILE=$RUN/ca.pem"
INSECURE=0
cat > "$ENVF" <<ENV
export VIRTRIGAUD_VSPHERE_URL=$URL
export VIRTRIGAUD_VSPHERE_USER=$USER_NAME
export VIRTRIGAUD_VSPHERE_PASSWORD=$PASSWORD
$CA_LINE
export VIRTRIGAUD_VSPHERE_INSECURE=$INSECURE
ENV
log "wrote $ENVF"
