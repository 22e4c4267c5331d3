#!/usr/bin/env bash
# `make test`: what the test suite needs on this machine, set up for it and stopped after it
# (also on Ctrl-C), then the command given. Needs root, as the cluster scripts do.
#   - Debian's Chromium (the web page and rating page tests drive it), installed if missing
#   - a real Slurm cluster: a node on this machine and two in network namespaces of their own
#     (tests/clusters/slurm.sh up; apt the first time)
#   - the Kubernetes control-plane binaries, built once and cached (tests/clusters/k8s.sh build);
#     test_k8s.py starts the control plane, test_ops.py Prometheus and its Pushgateway
# Every daemon that was not running before the suite is stopped when it ends: Slurm, MariaDB,
# munge, etcd, the Kubernetes control plane, Prometheus, the Pushgateway.
# ALPACA_JOBS_SKIP_SLURM=1 / ALPACA_JOBS_SKIP_K8S=1 leave those clusters out (their tests skip).
#   tests/clusters/suite.sh .venv/bin/python -m pytest -q
set -uo pipefail
cd "$(dirname "$0")/../.."
C=tests/clusters

# Each cluster script answers `running` for its own daemons, by their pid files: another Slurm,
# control plane or Prometheus on the machine is not ours to leave up or to stop.
was_up() { if $C/"$1" running 2>/dev/null; then echo 1; else echo 0; fi; }
SLURM_WAS_UP=$(was_up slurm.sh)
K8S_WAS_UP=$(was_up k8s.sh)
PROM_WAS_UP=$(was_up prometheus.sh)

stop() {
  [ "$SLURM_WAS_UP" = 1 ] || $C/slurm.sh down >/dev/null 2>&1 || true
  [ "$K8S_WAS_UP" = 1 ] || $C/k8s.sh down >/dev/null 2>&1 || true
  [ "$PROM_WAS_UP" = 1 ] || $C/prometheus.sh down >/dev/null 2>&1 || true
}
trap stop EXIT

if ! command -v chromium >/dev/null; then
  echo "[suite] installing Debian's chromium (browser tests)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null || exit 1
fi
if [ "${ALPACA_JOBS_SKIP_SLURM:-0}" != 1 ]; then
  $C/slurm.sh up || exit 1
  export "$($C/slurm.sh env)"  # SLURM_CONF: the suite's cluster, not /etc/slurm
fi
if [ "${ALPACA_JOBS_SKIP_K8S:-0}" != 1 ]; then $C/k8s.sh build || exit 1; fi
# In the background and in a session of its own, so that a signal to this script is handled at
# once (bash runs traps only between foreground commands) and reaches the suite and every
# process it started; then the daemons are stopped.
setsid "$@" &
CHILD=$!
trap 'kill -TERM -- -$CHILD 2>/dev/null; wait $CHILD; exit 130' INT
trap 'kill -TERM -- -$CHILD 2>/dev/null; wait $CHILD; exit 143' TERM
wait $CHILD
