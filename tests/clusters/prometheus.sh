#!/usr/bin/env bash
# A real Prometheus (2.42) and Pushgateway (1.5) on this machine, for the ops integration tests
# and for trying the dashboards' queries: Debian's packages, scraping the Pushgateway every
# second and loading dashboards/prometheus/alerts.yml.
#
#   tests/clusters/prometheus.sh up      # install (apt, first time) and start; idempotent
#   tests/clusters/prometheus.sh down    # stop what it started; delete its data
#   tests/clusters/prometheus.sh status
#
# `up` prints two lines: PROMETHEUS_URL=... and PUSHGATEWAY_URL=... Ports: $PROMETHEUS_PORT
# (19090) and $PUSHGATEWAY_PORT (19091), on 127.0.0.1. State lives in $PROMETHEUS_TEST_DIR.
set -euo pipefail
DIR=${PROMETHEUS_TEST_DIR:-/var/tmp/alpaca-jobs-prometheus}
PROM_PORT=${PROMETHEUS_PORT:-19090}
PUSH_PORT=${PUSHGATEWAY_PORT:-19091}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROM_URL=http://127.0.0.1:$PROM_PORT
PUSH_URL=http://127.0.0.1:$PUSH_PORT

log() { echo "[prometheus.sh] $*" >&2; }

install() {
  if ! command -v prometheus >/dev/null || ! command -v prometheus-pushgateway >/dev/null \
      || ! command -v promtool >/dev/null || ! command -v curl >/dev/null; then
    log "installing Debian's prometheus and prometheus-pushgateway packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      prometheus prometheus-pushgateway curl >/dev/null
  fi
}

write_config() {
  mkdir -p "$DIR/data" "$DIR/log"
  cp "$ROOT/dashboards/prometheus/alerts.yml" "$DIR/alerts.yml"
  cat > "$DIR/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $DIR/alerts.yml
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:$PUSH_PORT"]
EOF
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "timed out waiting for $what"; return 1
}

ready() { curl -fsS "$1" >/dev/null; }

alive() {  # alive NAME: the process from our pid file runs
  local pid
  [ -f "$DIR/$1.pid" ] && pid=$(cat "$DIR/$1.pid") && kill -0 "$pid" 2>/dev/null
}

start() {  # start NAME COMMAND...: in the background, detached, pid in $DIR/NAME.pid
  local name=$1; shift
  setsid "$@" >"$DIR/log/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/$name.pid"
}

up() {
  install
  write_config
  if ! alive pushgateway; then
    start pushgateway prometheus-pushgateway --web.listen-address="127.0.0.1:$PUSH_PORT" \
      --web.enable-admin-api --persistence.file="$DIR/data/pushgateway.data"
  fi
  wait_for 30 pushgateway ready "$PUSH_URL/-/ready" || { tail -20 "$DIR/log/pushgateway.log" >&2; exit 1; }
  if alive prometheus; then
    curl -fsS -X POST "$PROM_URL/-/reload" >/dev/null  # pick up a changed alerts.yml
  else
    start prometheus prometheus --config.file="$DIR/prometheus.yml" \
      --storage.tsdb.path="$DIR/data/tsdb" --web.listen-address="127.0.0.1:$PROM_PORT" \
      --web.enable-lifecycle --web.enable-admin-api
  fi
  wait_for 60 prometheus ready "$PROM_URL/-/ready" || { tail -20 "$DIR/log/prometheus.log" >&2; exit 1; }
  log "up: prometheus $PROM_URL, pushgateway $PUSH_URL (state in $DIR)"
  echo "PROMETHEUS_URL=$PROM_URL"
  echo "PUSHGATEWAY_URL=$PUSH_URL"
}

stop() {  # stop NAME: only the process this script started
  if alive "$1"; then
    local pid; pid=$(cat "$DIR/$1.pid")
    kill "$pid" 2>/dev/null || true
    wait_for 30 "$1 to exit" bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/$1.pid"
}

down() {
  stop prometheus
  stop pushgateway
  rm -rf "$DIR/data"
  log "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status)
    for n in pushgateway prometheus; do
      if alive "$n"; then echo "$n: running (pid $(cat "$DIR/$n.pid"))"; else echo "$n: stopped"; fi
    done ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
