#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the integration tests and for trying
# the Slurm backend without a cluster: Debian's slurmctld, slurmd, slurmdbd (accounting, so
# sacct works), MariaDB and munge; 2 fake GPUs of type a100 (character devices).
#
#   tests/clusters/slurm.sh up      # install (apt, first time) and start; idempotent
#   tests/clusters/slurm.sh down    # stop every daemon it started
#   tests/clusters/slurm.sh status
#
# Needs root (it writes /etc/slurm and starts daemons). State lives in $SLURM_TEST_DIR.
set -euo pipefail
DIR=${SLURM_TEST_DIR:-/var/tmp/alpaca-jobs-slurm}
HOST=$(hostname -s)
CONF=/etc/slurm

log() { echo "[slurm.sh] $*" >&2; }

install() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
    log "installing Debian's slurm, munge and mariadb packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
  fi
}

write_config() {
  mkdir -p "$DIR"/{state,spool,log,gpus,mysql} "$CONF"
  for i in 0 1; do [ -e "$DIR/gpus/nvidia$i" ] || mknod "$DIR/gpus/nvidia$i" c 195 "$i"; done
  # More CPUs than the machine has (config_overrides) so that a few small jobs run at once.
  cat > "$CONF/slurm.conf" <<EOF
ClusterName=alpaca-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu,gres/gpu:a100
GresTypes=gpu
SchedulerParameters=sched_interval=5
SlurmdParameters=config_overrides
MinJobAge=600
ReturnToService=2
KillWait=10
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=16000 Gres=gpu:a100:2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=1024
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP DefMemPerCPU=1024
EOF
  echo "Name=gpu Type=a100 File=$DIR/gpus/nvidia[0-1]" > "$CONF/gres.conf"
  cat > "$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm-test-only
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$CONF/slurmdbd.conf"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "timed out waiting for $what"; return 1
}

start_db() {
  if ! pgrep -x mariadbd >/dev/null; then
    [ -d "$DIR/mysql/mysql" ] || mariadb-install-db --user=mysql --datadir="$DIR/mysql" >/dev/null
    chown -R mysql:mysql "$DIR/mysql"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (setsid mariadbd --user=mysql --datadir="$DIR/mysql" --socket=/run/mysqld/mysqld.sock \
       --skip-networking=0 --bind-address=127.0.0.1 >"$DIR/log/mariadb.log" 2>&1 &)
  fi
  wait_for 60 mariadb mariadb -e "select 1"
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm-test-only';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

up() {
  install
  write_config
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
  fi
  start_db
  pgrep -x slurmdbd >/dev/null || slurmdbd
  wait_for 30 slurmdbd bash -c "sacctmgr -n list cluster >/dev/null"
  pgrep -x slurmctld >/dev/null || slurmctld
  wait_for 30 slurmctld scontrol ping
  pgrep -x slurmd >/dev/null || slurmd
  wait_for 30 "node $HOST idle" bash -c "sinfo -h -n $HOST -o %t | grep -Eq '^(idle|mix|alloc)'" || {
    scontrol update nodename="$HOST" state=resume || true
    wait_for 20 "node $HOST idle" bash -c "sinfo -h -n $HOST -o %t | grep -Eq '^(idle|mix|alloc)'"
  }
  wait_for 30 "accounting" bash -c "sacct -n -X -S now-1minute >/dev/null"
  log "up: $(sinfo -h -o '%P %D %t %G' | tr '\n' ';')"
}

gone() { ! pgrep -x "$1" >/dev/null; }

down() {
  for d in slurmd slurmctld slurmdbd mariadbd munged; do
    pkill -x "$d" 2>/dev/null || true
    wait_for 30 "$d to exit" gone "$d" || pkill -9 -x "$d" 2>/dev/null || true
  done
  log "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) sinfo; squeue ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
