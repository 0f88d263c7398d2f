#!/bin/bash
# Start fakepve (PyPI `fakepve[crypto]==0.5.0`, a test double of the PVE 9 API) on 127.0.0.1 for
# virtrigaud-proxmox's tests, with API tokens, real-time asynchronous tasks and a control API for
# fault injection. Idempotent: reuses a healthy running instance. Writes the env vars the tests
# read to ${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}/proxmox.env.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${VIRTRIGAUD_CACHE:-$HOME/.cache/virtrigaud}/proxmox"
STATE="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}/proxmox"
ENVFILE="${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}/proxmox.env"
PORT="${VIRTRIGAUD_PROXMOX_PORT:-18006}"
CPORT="${VIRTRIGAUD_PROXMOX_CONTROL_PORT:-18007}"
VENV="$CACHE/venv"
log() { echo "[proxmox setup] $*"; }
die() { echo "[proxmox setup] ERROR: $*" >&2; exit 1; }
mkdir -p "$CACHE" "$STATE"

# 1. Python venv with fakepve (cached).
if ! "$VENV/bin/python" -c 'import fakepve, cryptography, aiohttp' 2>/dev/null; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    log "installing python3-venv (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null && apt-get install -y -qq -o DPkg::Lock::Timeout=600 python3-venv >/dev/null || die "apt-get install python3-venv failed"
  fi
  log "creating venv $VENV and installing fakepve[crypto]==0.5.0"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV"; then
    log "python3 -m venv failed; installing python3-venv (apt) and retrying"
    rm -rf "$VENV"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null || true
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 python3-venv >/dev/null || die "apt-get install python3-venv failed"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check 'fakepve[crypto]==0.5.0' || die "pip install fakepve failed"
else
  log "venv ready: $VENV"
fi
SCHEMA="$("$VENV/bin/python" -c 'import fakepve, os; print(os.path.join(os.path.dirname(fakepve.__file__), "data", "pve-api.json.gz"))')"
[ -f "$SCHEMA" ] || die "PVE API schema not found at $SCHEMA"

# 2. Secrets (made once per state dir; test-only, loopback-only server).
SECRETS="$STATE/secrets"
if [ ! -f "$SECRETS" ]; then
  umask 077
  {
    echo "TOKEN_SECRET=$("$VENV/bin/python" -c 'import uuid; print(uuid.uuid4())')"
    echo "PASSWORD=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(12))')"
    echo "CONTROL_TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(16))')"
  } > "$SECRETS"
fi
# shellcheck disable=SC1090
. "$SECRETS"
TOKEN_ID='root@pam!virtrigaud'
CA="$STATE/ca.pem"
URL="https://127.0.0.1:$PORT"

healthy() {
  "$VENV/bin/python" - "$URL" "$CA" "$TOKEN_ID" "$TOKEN_SECRET" <<'PY' 2>/dev/null
import ssl, sys, urllib.request
url, ca, tid, sec = sys.argv[1:5]
req = urllib.request.Request(url + '/api2/json/version', headers={'Authorization': 'PVEAPIToken=%s=%s' % (tid, sec)})
ctx = ssl.create_default_context(cafile=ca)
sys.exit(0 if urllib.request.urlopen(req, context=ctx, timeout=3).status == 200 else 1)
PY
}

# 3. Start (or reuse) the server. A change of the launcher or the guests restarts it.
STAMP="$(cat "$HERE/fakepve_launch.py" "$HERE/guests.json" | sha256sum | cut -c1-16)-$PORT-$CPORT"
if [ -f "$STATE/fakepve.pid" ] && kill -0 "$(cat "$STATE/fakepve.pid")" 2>/dev/null && [ -f "$CA" ] \
   && [ "$(cat "$STATE/fakepve.stamp" 2>/dev/null)" = "$STAMP" ] && healthy; then
  log "fakepve already running (pid $(cat "$STATE/fakepve.pid")), reusing it"
else
  if [ -f "$STATE/fakepve.pid" ]; then
    kill "$(cat "$STATE/fakepve.pid")" 2>/dev/null || true
    rm -f "$STATE/fakepve.pid"
    sleep 0.5
  fi
  log "starting fakepve on $URL (control on 127.0.0.1:$CPORT)"
  start=$(date +%s)
  nohup "$VENV/bin/python" "$HERE/fakepve_launch.py" "$HERE/guests.json" \
    --port "$PORT" --control-port "$CPORT" --control-token "$CONTROL_TOKEN" \
    --time-scale 1 --lock-wait 3 --password "$PASSWORD" \
    --token "$TOKEN_ID=$TOKEN_SECRET" --node pve2 --cafile "$CA" \
    > "$STATE/fakepve.log" 2>&1 &
  echo $! > "$STATE/fakepve.pid"
  echo "$STAMP" > "$STATE/fakepve.stamp"
  ok=
  for _ in $(seq 1 150); do
    if ! kill -0 "$(cat "$STATE/fakepve.pid")" 2>/dev/null; then
      cat "$STATE/fakepve.log" >&2 || true
      die "fakepve exited during startup (log above)"
    fi
    if [ -f "$CA" ] && healthy; then ok=1; break; fi
    sleep 0.2
  done
  [ -n "$ok" ] || { cat "$STATE/fakepve.log" >&2 || true; die "fakepve not ready after 30 s"; }
  log "fakepve ready in $(( $(date +%s) - start )) s (pid $(cat "$STATE/fakepve.pid"))"
fi

# 4. Environment for the tests.
umask 077
cat > "$ENVFILE" <<ENV
export VIRTRIGAUD_PROXMOX_URL='$URL'
export VIRTRIGAUD_PROXMOX_TOKEN_ID='$TOKEN_ID'
export VIRTRIGAUD_PROXMOX_TOKEN_SECRET='$TOKEN_SECRET'
export VIRTRIGAUD_PROXMOX_USER='root@pam'
export VIRTRIGAUD_PROXMOX_PASSWORD='$PASSWORD'
export VIRTRIGAUD_PROXMOX_CA='$CA'
export VIRTRIGAUD_PROXMOX_CONTROL_URL='http://127.0.0.1:$CPORT'
export VIRTRIGAUD_PROXMOX_CONTROL_TOKEN='$CONTROL_TOKEN'
export VIRTRIGAUD_PVE_SCHEMA='$SCHEMA'
ENV
log "wrote $ENVFILE"
