#!/usr/bin/env bash
# A real Prometheus (2.42) and Pushgateway (1.5) on this machine, for the ops integration tests
# and for trying the dashboards' queries: Debian's packages, scraping the Pushgateway every
# second and loading dashboards/prometheus/alerts.yml.
#
#   tests/clusters/prometheus.sh up      # install (apt, first time) and start; idempotent
#   tests/clusters/prometheus.sh down    # stop what it started; delete its data
#   tests/clusters/prometheus.sh running # exit 0 when the Prometheus this script started runs
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
# What marks each daemon as ours (its command line holds it): its data under $DIR.
PROM_MARK=--storage.tsdb.path=$DIR/data/tsdb
PUSH_MARK=--persistence.file=$DIR/data/pushgateway.data
LOG_TAG=prometheus.sh
# shellcheck source=daemons.sh
source "$(dirname "$0")/daemons.sh"  # log, wait_for, alive/start/stop by pid file

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

ready() { curl -fsS "$1" >/dev/null; }

up() {
  install
  write_config
  start "$DIR/pushgateway.pid" "$PUSH_MARK" "$DIR/log/pushgateway.log" prometheus-pushgateway \
    --web.listen-address="127.0.0.1:$PUSH_PORT" --web.enable-admin-api "$PUSH_MARK"
  wait_for 30 pushgateway ready "$PUSH_URL/-/ready" || { tail -20 "$DIR/log/pushgateway.log" >&2; exit 1; }
  if alive "$DIR/prometheus.pid" "$PROM_MARK"; then
    curl -fsS -X POST "$PROM_URL/-/reload" >/dev/null  # pick up a changed alerts.yml
  else
    start "$DIR/prometheus.pid" "$PROM_MARK" "$DIR/log/prometheus.log" prometheus \
      --config.file="$DIR/prometheus.yml" "$PROM_MARK" --web.listen-address="127.0.0.1:$PROM_PORT" \
      --web.enable-lifecycle --web.enable-admin-api
  fi
  wait_for 60 prometheus ready "$PROM_URL/-/ready" || { tail -20 "$DIR/log/prometheus.log" >&2; exit 1; }
  log "up: prometheus $PROM_URL, pushgateway $PUSH_URL (state in $DIR)"
  echo "PROMETHEUS_URL=$PROM_URL"
  echo "PUSHGATEWAY_URL=$PUSH_URL"
}

down() {
  stop "$DIR/prometheus.pid" "$PROM_MARK"
  stop "$DIR/pushgateway.pid" "$PUSH_MARK"
  rm -rf "$DIR/data"
  log "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  running) alive "$DIR/prometheus.pid" "$PROM_MARK" ;;  # exit 0 when this script's Prometheus runs
  status)
    for n in pushgateway:$PUSH_MARK prometheus:$PROM_MARK; do
      if alive "$DIR/${n%%:*}.pid" "${n#*:}"; then echo "${n%%:*}: running (pid $(cat "$DIR/${n%%:*}.pid"))"
      else echo "${n%%:*}: stopped"; fi
    done ;;
  *) echo "usage: $0 up|down|running|status" >&2; exit 2 ;;
esac
