#!/usr/bin/env bash
# A real Slurm cluster on this machine, for the integration tests and for trying the Slurm
# backend without a cluster: Debian's slurmctld, slurmdbd (accounting, so sacct works), MariaDB
# and munge, and three slurmd compute nodes:
#   - this machine's own name, on 127.0.0.1, 2 fake a100 GPUs: partitions `debug` (default), `gpu`
#   - alpaca-n1 and alpaca-n2, 1 fake a100 GPU each, partition `multi`: each slurmd runs in
#     network, hostname and mount namespaces of its own (unshare; entered with nsenter), with
#     its own address on a private bridge (10.213.77.0/24) and a private hosts file, so a
#     job across them talks over those addresses, never through a shared loopback.
#
#   tests/clusters/slurm.sh up      # install (apt, first time) and start; idempotent
#   tests/clusters/slurm.sh down    # stop the daemons it started (and only those)
#   tests/clusters/slurm.sh env     # SLURM_CONF=...: export it to use this cluster
#   tests/clusters/slurm.sh status
#
# It lives apart from any other Slurm on the machine: its own config directory (SLURM_CONF, not
# /etc/slurm), its own ports, its own munged socket and key, its own MariaDB socket and port.
# Every daemon it starts is tracked by a pid file under $SLURM_TEST_DIR and stopped by that pid
# (after checking the process is still that daemon), never by name.
# Needs root (daemons, namespaces, a bridge).
set -euo pipefail
DIR=${SLURM_TEST_DIR:-/var/tmp/alpaca-jobs-slurm}
HOST=$(hostname -s)
ETC=$DIR/etc
export SLURM_CONF=$ETC/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket.2
DB_SOCKET=$DIR/db/mysqld.sock  # $DIR/db: mariadbd (user mysql) writes its socket and pid there
DB_PORT=13306
NET=10.213.77  # the bridge is .1 (slurmctld's address); node i is .1i
BRIDGE=aj-slurm0
NODES=(alpaca-n1 alpaca-n2)
LOG_TAG=slurm.sh
# shellcheck source=daemons.sh
source "$(dirname "$0")/daemons.sh"  # log, wait_for, alive PIDFILE MARK, stop PIDFILE MARK

install() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
    log "installing Debian's slurm, munge and mariadb packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
  fi
}

write_config() {
  mkdir -p "$DIR"/{state,spool,log,gpus,mysql,munge,db} "$ETC"
  for i in 0 1 2 3; do [ -e "$DIR/gpus/nvidia$i" ] || mknod "$DIR/gpus/nvidia$i" c 195 "$i"; done
  # More CPUs than the machine has (config_overrides) so that a few small jobs run at once.
  cat > "$ETC/slurm.conf" <<EOF
ClusterName=alpaca-test
SlurmctldHost=$HOST($NET.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10,socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=16819
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu,gres/gpu:a100
GresTypes=gpu
SchedulerParameters=sched_interval=5
SlurmdParameters=config_overrides
MinJobAge=600
ReturnToService=2
KillWait=10
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=16000 Gres=gpu:a100:2 State=UNKNOWN
NodeName=${NODES[0]} NodeAddr=$NET.11 CPUs=4 Boards=1 SocketsPerBoard=1 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=8000 Gres=gpu:a100:1 State=UNKNOWN
NodeName=${NODES[1]} NodeAddr=$NET.12 CPUs=4 Boards=1 SocketsPerBoard=1 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=8000 Gres=gpu:a100:1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=1024
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP DefMemPerCPU=1024
PartitionName=multi Nodes=${NODES[0]},${NODES[1]} MaxTime=INFINITE State=UP DefMemPerCPU=1024
EOF
  cat > "$ETC/gres.conf" <<EOF
NodeName=$HOST Name=gpu Type=a100 File=$DIR/gpus/nvidia[0-1]
NodeName=${NODES[0]} Name=gpu Type=a100 File=$DIR/gpus/nvidia2
NodeName=${NODES[1]} Name=gpu Type=a100 File=$DIR/gpus/nvidia3
EOF
  cat > "$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=16819
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm-test-only
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$ETC/slurmdbd.conf"
  {
    echo "127.0.0.1 localhost"
    echo "$NET.1 $HOST"
    for i in "${!NODES[@]}"; do echo "$NET.1$((i + 1)) ${NODES[$i]}"; done
  } > "$DIR/hosts"
}

db() { mariadb --socket="$DB_SOCKET" "$@"; }

start_munge() {
  alive "$DIR/munge/munged.pid" munged && return 0
  chown munge:munge "$DIR/munge"; chmod 755 "$DIR/munge"  # clients need x on the socket's directory
  [ -s "$DIR/munge/munge.key" ] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none; }
  chown munge:munge "$DIR/munge/munge.key"; chmod 600 "$DIR/munge/munge.key"
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
  wait_for 10 munged alive "$DIR/munge/munged.pid" munged
}

start_db() {
  if ! alive "$DIR/db/mariadb.pid" mariadbd; then
    [ -d "$DIR/mysql/mysql" ] || mariadb-install-db --user=mysql --datadir="$DIR/mysql" >/dev/null
    chown -R mysql:mysql "$DIR/mysql" "$DIR/db"
    (setsid mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql" --socket="$DB_SOCKET" \
       --pid-file="$DIR/db/mariadb.pid" --port=$DB_PORT --bind-address=127.0.0.1 \
       >"$DIR/log/mariadb.log" 2>&1 &)
  fi
  wait_for 60 mariadb db -e "select 1"
  db -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm-test-only';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm-test-only';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

# The bridge the namespaced nodes hang on; its address is slurmctld's.
start_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    echo "$BRIDGE" > "$DIR/bridge"  # ours: `down` removes it
  fi
  ip link set "$BRIDGE" up
}

# A node's namespaces are held by one `sleep infinity` (its pid file: ns-NODE.pid). Its veth
# end is eth0 there, with the node's address; hostname NODE; /etc/hosts is $DIR/hosts.
start_namespace() {  # start_namespace INDEX
  local node=${NODES[$1]} addr=$NET.1$(($1 + 1)) veth=aj-slurm$(($1 + 1)) pidf=$DIR/ns-${NODES[$1]}.pid pid
  alive "$pidf" sleep && return 0
  (setsid unshare --net --uts --mount --propagation private sleep infinity </dev/null >/dev/null 2>&1 &
   echo $! > "$pidf")
  wait_for 10 "namespaces of $node" alive "$pidf" sleep
  pid=$(cat "$pidf")
  # unshare execs sleep only once the namespaces exist: wait until its netns differs from ours.
  wait_for 10 "the network namespace of $node" bash -c "[ \"\$(readlink /proc/$pid/ns/net)\" != \"\$(readlink /proc/self/ns/net)\" ]"
  ip link del "$veth" 2>/dev/null || true
  ip link add "$veth" type veth peer name eth0 netns "$pid"
  ip link set "$veth" master "$BRIDGE"
  ip link set "$veth" up
  nsenter -t "$pid" -n -u -m sh -c "ip link set lo up && ip addr add $addr/24 dev eth0 && ip link set eth0 up \
    && hostname $node && mount --bind $DIR/hosts /etc/hosts"
}

start_node() {  # start_node INDEX: slurmd inside the node's namespaces
  local node=${NODES[$1]} pid
  alive "$DIR/slurmd-$node.pid" slurmd && return 0
  pid=$(cat "$DIR/ns-$node.pid")
  nsenter -t "$pid" -n -u -m env SLURM_CONF="$SLURM_CONF" slurmd
}

node_ready() {  # node_ready NODE
  wait_for 30 "node $1 idle" bash -c "sinfo -h -n $1 -o %t | grep -Eq '^(idle|mix|alloc)'" || {
    scontrol update nodename="$1" state=resume || true
    wait_for 20 "node $1 idle" bash -c "sinfo -h -n $1 -o %t | grep -Eq '^(idle|mix|alloc)'"
  }
}

up() {
  install
  write_config
  start_munge
  start_db
  alive "$DIR/slurmdbd.pid" slurmdbd || slurmdbd
  wait_for 30 slurmdbd bash -c "sacctmgr -n list cluster >/dev/null"
  start_bridge
  alive "$DIR/slurmctld.pid" slurmctld || slurmctld
  wait_for 30 slurmctld scontrol ping
  alive "$DIR/slurmd-$HOST.pid" slurmd || slurmd
  for i in "${!NODES[@]}"; do start_namespace "$i"; start_node "$i"; done
  for n in "$HOST" "${NODES[@]}"; do node_ready "$n"; done
  wait_for 30 "accounting" bash -c "sacct -n -X -S now-1minute >/dev/null"
  log "up: $(sinfo -h -o '%P %D %t %G' | tr '\n' ';') (export SLURM_CONF=$SLURM_CONF)"
}

down() {
  for n in "${NODES[@]}"; do stop "$DIR/slurmd-$n.pid" slurmd; done
  stop "$DIR/slurmd-$HOST.pid" slurmd
  stop "$DIR/slurmctld.pid" slurmctld
  stop "$DIR/slurmdbd.pid" slurmdbd
  stop "$DIR/db/mariadb.pid" mariadbd
  stop "$DIR/munge/munged.pid" munged
  for n in "${NODES[@]}"; do stop "$DIR/ns-$n.pid" sleep; done  # its veth goes with it
  if [ -s "$DIR/bridge" ]; then ip link del "$(cat "$DIR/bridge")" 2>/dev/null || true; rm -f "$DIR/bridge"; fi
  log "down"
}

running() {  # exit 0 when this cluster's controller runs
  alive "$DIR/slurmctld.pid" slurmctld
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "SLURM_CONF=$SLURM_CONF" ;;
  running) running ;;
  status) sinfo; squeue ;;
  *) echo "usage: $0 up|down|env|running|status" >&2; exit 2 ;;
esac
