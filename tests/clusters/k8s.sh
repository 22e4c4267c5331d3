#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, without Docker, for the integration tests:
# etcd, kube-apiserver, kube-controller-manager and kube-scheduler (v1.20, built once from
# Debian 12's `kubernetes` source package, which vendors its dependencies and builds offline)
# plus tests/clusters/fake_kubelet.py as the only node (see that file for what it stands for).
#
#   tests/clusters/k8s.sh build    # install go/etcd (apt) and build the binaries (~8 min, once)
#   tests/clusters/k8s.sh up       # build if needed, start everything; prints the kubeconfig path
#   tests/clusters/k8s.sh down
#   tests/clusters/k8s.sh running  # exit 0 when this script's control plane is up
#
# Needs root. Binaries are cached outside the checkout in $K8S_CACHE; state is in $K8S_TEST_DIR.
set -euo pipefail
CACHE=${K8S_CACHE:-/var/cache/alpaca-jobs/k8s}
DIR=${K8S_TEST_DIR:-/var/tmp/alpaca-jobs-k8s}
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
BIN=$CACHE/bin
TOKEN=alpaca-jobs-test-admin-token
PIDS=$DIR/pids
LOG_TAG=k8s.sh
# shellcheck source=daemons.sh
source "$HERE/daemons.sh"  # log, wait_for, alive/start/stop by pid file

build() {
  if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kube-scheduler" ]; then
    return 0
  fi
  log "installing go, etcd, rsync, dpkg-dev (apt)"
  # A fresh machine's package lists may be missing or stale ("unauthenticated packages").
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    golang-go rsync etcd-server dpkg-dev >/dev/null
  local apt=$CACHE/apt src=$CACHE/src
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$src" "$BIN"
  # A private apt configuration with a deb-src entry: /etc/apt stays untouched.
  local mirror
  mirror=$(grep -hoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v snapshot | head -1 || true)
  echo "deb-src ${mirror:-http://deb.debian.org/debian} bookworm main" > "$apt/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
  apt-get "${opts[@]}" update -q >/dev/null
  (cd "$src" && ls -d kubernetes-*/ >/dev/null 2>&1 || apt-get "${opts[@]}" source -q kubernetes >/dev/null)
  local tree
  tree=$(cd "$src" && ls -d kubernetes-*/ | head -1)
  mkdir -p "$src/.go/src/k8s.io"
  ln -sfn "$src/${tree%/}" "$src/.go/src/k8s.io/kubernetes"
  log "building kube-apiserver, kube-controller-manager, kube-scheduler (several minutes, once)"
  (cd "$src/.go/src/k8s.io/kubernetes" && GOPATH=$src/.go CGO_ENABLED=0 GOPROXY=off GO111MODULE=off \
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >"$CACHE/build.log" 2>&1)
  cp "$src/.go/src/k8s.io/kubernetes/_output/bin/"kube-{apiserver,controller-manager,scheduler} "$BIN/"
}

# Every daemon is started here and tracked by its pid file in $PIDS: `up` starts what is not
# running, `down` stops exactly those processes (never by name: another cluster's etcd or
# kube-apiserver on the machine is left alone).

up() {
  build
  command -v etcd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends etcd-server >/dev/null
  mkdir -p "$DIR"/{etcd,certs,log,pids}
  [ -f "$DIR/sa.key" ] || openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
  openssl rsa -in "$DIR/sa.key" -pubout -out "$DIR/sa.pub" 2>/dev/null
  echo "$TOKEN,admin,admin,system:masters" > "$DIR/tokens.csv"
  cat > "$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: $TOKEN}}]
contexts: [{name: test, context: {cluster: test, user: admin, namespace: default}}]
current-context: test
EOF
  start "$PIDS/etcd.pid" "--data-dir $DIR/etcd" "$DIR/log/etcd.log" etcd --name alpaca-test --data-dir "$DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380
  start "$PIDS/apiserver.pid" "$BIN/kube-apiserver" "$DIR/log/apiserver.log" "$BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=6443 --cert-dir="$DIR/certs" \
    --token-auth-file="$DIR/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$DIR/sa.pub" \
    --service-account-signing-key-file="$DIR/sa.key" --service-cluster-ip-range=10.96.0.0/16 \
    --allow-privileged=true
  wait_for 60 kube-apiserver kubectl --kubeconfig "$DIR/kubeconfig" get --raw /readyz
  start "$PIDS/controller-manager.pid" "$BIN/kube-controller-manager" "$DIR/log/controller-manager.log" \
    "$BIN/kube-controller-manager" --kubeconfig="$DIR/kubeconfig" --service-account-private-key-file="$DIR/sa.key" \
    --leader-elect=false --controllers='*'
  start "$PIDS/scheduler.pid" "$BIN/kube-scheduler" "$DIR/log/scheduler.log" "$BIN/kube-scheduler" \
    --kubeconfig="$DIR/kubeconfig" --leader-elect=false
  start "$PIDS/kubelet.pid" "$HERE/fake_kubelet.py" "$DIR/log/fake-kubelet.log" "$PYTHON" "$HERE/fake_kubelet.py" \
    --kubeconfig "$DIR/kubeconfig" --state "$DIR/node"
  wait_for 60 "node Ready" bash -c "kubectl --kubeconfig '$DIR/kubeconfig' get nodes 2>/dev/null | grep -q ' Ready'"
  wait_for 60 "default service account" kubectl --kubeconfig "$DIR/kubeconfig" get serviceaccount default
  log "up; KUBECONFIG=$DIR/kubeconfig"
  echo "$DIR/kubeconfig"
}

down() {
  stop "$PIDS/kubelet.pid" "$HERE/fake_kubelet.py"
  # The network namespaces (holders, by pid file) and the bridge the kubelet's pods used.
  python3 "$HERE/pod_network.py" "$DIR/node" 2>/dev/null || true
  stop "$PIDS/scheduler.pid" "$BIN/kube-scheduler"
  stop "$PIDS/controller-manager.pid" "$BIN/kube-controller-manager"
  stop "$PIDS/apiserver.pid" "$BIN/kube-apiserver"
  stop "$PIDS/etcd.pid" "--data-dir $DIR/etcd"
  log "down"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  running) alive "$PIDS/apiserver.pid" "$BIN/kube-apiserver" ;;  # this script's control plane (pid file) is up
  *) echo "usage: $0 build|up|down|running" >&2; exit 2 ;;
esac
