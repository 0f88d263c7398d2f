#!/bin/bash
# virtrigaud-kubevirt test backend: a real Kubernetes CRD apiserver (k8s.io/apiextensions-apiserver, built from
# Debian sid Go sources by build-kas.sh and cached) on Debian bookworm's etcd, on 127.0.0.1 only, with TLS and a
# client certificate in group system:masters; installs the project's KubeVirt CRDs (virtrigaud-kubevirt/crds) and
# writes `export VIRTRIGAUD_KUBECONFIG=...` to $STATE/kubevirt.env. Idempotent: reuses a healthy running server.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE=${VIRTRIGAUD_CACHE:-$HOME/.cache/virtrigaud}/kubevirt
STATE_ROOT=${VIRTRIGAUD_STATE_DIR:-/tmp/virtrigaud-state}
S=$STATE_ROOT/kubevirt
ENV_FILE=$STATE_ROOT/kubevirt.env
KAS_BIN=${KAS_BIN:-$CACHE/bin/apiextensions-apiserver}
PORT=${VIRTRIGAUD_KUBEVIRT_PORT:-16443}
ETCD_PORT=${VIRTRIGAUD_KUBEVIRT_ETCD_PORT:-23790}
ETCD_PEER_PORT=$((ETCD_PORT + 10))
CRD_DIR=$REPO/virtrigaud-kubevirt/crds
log() { echo "[kubevirt/setup] $*"; }
die() { echo "[kubevirt/setup] ERROR: $*" >&2; exit 1; }
mkdir -p "$S/pki" "$CACHE"
C=(--cacert "$S/pki/ca.crt" --cert "$S/pki/admin.crt" --key "$S/pki/admin.key")
B=https://127.0.0.1:$PORT

healthy() { [ -f "$S/pki/admin.key" ] && [ "$(curl -s -m 2 "${C[@]}" "$B/readyz?exclude=informer-sync" 2>/dev/null)" = ok ]; }

# 1. packages (skip apt when already installed)
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
fi

# 2. the apiserver binary (cached; cold build ~4-6 min)
if [ ! -x "$KAS_BIN" ]; then
  log "apiextensions-apiserver not cached: building (takes a few minutes)"
  KAS_BIN=$KAS_BIN "$HERE/build-kas.sh"
else
  log "using cached $KAS_BIN"
fi

if healthy; then
  log "apiserver already running and healthy on $B (reusing)"
else
  # 3. stop leftovers of an earlier run (only our own pid files)
  "$HERE/teardown.sh" --keep-env >/dev/null 2>&1 || true
  # 4. PKI: CA, serving cert for 127.0.0.1, client cert in system:masters
  cd "$S/pki"
  if [ ! -f admin.key ]; then
    log "creating test PKI in $S/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=virtrigaud-test-ca 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout serving.key -out serving.csr -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > serving.ext
    openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out serving.crt -extfile serving.ext 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj '/O=system:masters/CN=virtrigaud-test' 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > admin.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out admin.crt -extfile admin.ext 2>/dev/null
    chmod 600 ./*.key
  fi
  cd "$S"
  b64() { base64 -w0 < "$1"; }
  umask 077
  cat > "$S/kubeconfig" <<K
apiVersion: v1
kind: Config
clusters: [{name: virtrigaud-test, cluster: {server: "$B", certificate-authority-data: $(b64 pki/ca.crt)}}]
users: [{name: admin, user: {client-certificate-data: $(b64 pki/admin.crt), client-key-data: $(b64 pki/admin.key)}}]
contexts: [{name: virtrigaud-test, context: {cluster: virtrigaud-test, user: admin, namespace: default}}]
current-context: virtrigaud-test
K
  # delegated authn/authz and core informers point nowhere (as upstream's integration fixture does);
  # system:masters client certificates are authenticated locally and always authorized.
  cat > "$S/nowhere.kubeconfig" <<K
apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: nobody, user: {}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]
current-context: nowhere
K
  umask 022
  t0=$(date +%s.%N)
  rm -rf "$S/etcd-data"
  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  nohup etcd --name virtrigaud --data-dir "$S/etcd-data" \
     --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
     --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
     --initial-cluster "virtrigaud=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync \
     > "$S/etcd.log" 2>&1 < /dev/null &
  echo $! > "$S/etcd.pid"
  ok=0
  for _ in $(seq 1 100); do
    if curl -s -m 1 "http://127.0.0.1:$ETCD_PORT/health" | grep -q true; then ok=1; break; fi; sleep 0.1
  done
  [ $ok = 1 ] || { tail -20 "$S/etcd.log" >&2; die "etcd did not become healthy (log: $S/etcd.log)"; }
  log "starting apiextensions-apiserver on $B"
  nohup "$KAS_BIN" --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1 --secure-port="$PORT" \
    --tls-cert-file="$S/pki/serving.crt" --tls-private-key-file="$S/pki/serving.key" --client-ca-file="$S/pki/ca.crt" \
    --authentication-kubeconfig="$S/nowhere.kubeconfig" --authorization-kubeconfig="$S/nowhere.kubeconfig" \
    --kubeconfig="$S/nowhere.kubeconfig" --authentication-skip-lookup --enable-priority-and-fairness=false \
    --disable-admission-plugins=NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,MutatingAdmissionPolicy \
    > "$S/kas.log" 2>&1 < /dev/null &
  echo $! > "$S/kas.pid"
  for _ in $(seq 1 600); do healthy && break; kill -0 "$(cat "$S/kas.pid")" 2>/dev/null || break; sleep 0.1; done
  healthy || { tail -30 "$S/kas.log" >&2; die "apiserver did not become ready within 60 s (log: $S/kas.log)"; }
  log "apiserver ready after $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
fi

# 5. CRDs (create or update), then wait until Established
for f in "$CRD_DIR"/*.json; do
  name=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["name"])' "$f")
  code=$(curl -s -o "$S/crd-resp.json" -w '%{http_code}' "${C[@]}" -X POST -H 'Content-Type: application/json' \
         --data-binary @"$f" "$B/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
  case $code in
    201) log "CRD $name created" ;;
    409) code=$(curl -s -o "$S/crd-resp.json" -w '%{http_code}' "${C[@]}" -X PATCH -H 'Content-Type: application/merge-patch+json' \
                --data-binary @"$f" "$B/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$name")
         [ "$code" = 200 ] || die "updating CRD $name failed ($code): $(head -c 300 "$S/crd-resp.json")" ;;
    *) die "creating CRD $name failed ($code): $(head -c 300 "$S/crd-resp.json")" ;;
  esac
done
for f in "$CRD_DIR"/*.json; do
  name=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["name"])' "$f")
  est=""
  for _ in $(seq 1 100); do
    est=$(curl -s "${C[@]}" "$B/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$name" | python3 -c \
      'import json,sys; d=json.load(sys.stdin); print(any(c["type"]=="Established" and c["status"]=="True" for c in d.get("status",{}).get("conditions",[])))')
    [ "$est" = True ] && break; sleep 0.1
  done
  [ "$est" = True ] || die "CRD $name not Established"
done
# group discovery is served a moment after Established
for g in kubevirt.io/v1 snapshot.kubevirt.io/v1beta1 clone.kubevirt.io/v1beta1 cdi.kubevirt.io/v1beta1; do
  for _ in $(seq 1 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "${C[@]}" "$B/apis/$g")" = 200 ] && break; sleep 0.1
  done
done
log "KubeVirt CRDs established"

mkdir -p "$STATE_ROOT"
cat > "$ENV_FILE" <<E
export VIRTRIGAUD_KUBECONFIG=$S/kubeconfig
E
log "wrote $ENV_FILE (VIRTRIGAUD_KUBECONFIG=$S/kubeconfig)"
