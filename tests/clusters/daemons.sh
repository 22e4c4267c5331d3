# Sourced by slurm.sh, k8s.sh and prometheus.sh: the daemons a test cluster starts, each
# tracked by a pid file and stopped by that pid, never by name, so that another Slurm, etcd or
# Prometheus on the machine is left alone. The caller sets LOG_TAG before sourcing.

log() { echo "[${LOG_TAG:-cluster}] $*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds, polling 5 times a second
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "timed out waiting for $what"; return 1
}

# alive PIDFILE MARK: the pid in PIDFILE runs and its command line holds MARK as a whole word
# (a pid the kernel has since given to another program is not ours).
alive() {
  local pid
  [ -s "$1" ] && pid=$(cat "$1") && [ -r "/proc/$pid/cmdline" ] \
    && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qwF -- "$2"
}

# start PIDFILE MARK LOGFILE COMMAND...: COMMAND in a session of its own, detached from this
# shell, its pid in PIDFILE; nothing when it already runs.
start() {
  local pidf=$1 mark=$2 logf=$3
  shift 3
  alive "$pidf" "$mark" && return 0
  setsid "$@" >"$logf" 2>&1 </dev/null &
  echo $! >"$pidf"
}

# stop PIDFILE MARK: SIGTERM, up to 30 s to exit, then SIGKILL; only the process PIDFILE names.
stop() {
  local pid
  if alive "$1" "$2"; then
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    wait_for 30 "$2 (pid $pid) to exit" bash -c "! [ -e /proc/$pid ]" || kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}
