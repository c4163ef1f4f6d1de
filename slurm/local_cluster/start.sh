#!/usr/bin/env bash
# A real Slurm cluster on this one host, for tests and for trying the sbatch scripts out:
# slurmctld plus three emulated nodes n1, n2 and n3 (one `slurmd -N` each), munge authentication,
# one partition `debug`. Needs root. Installs Debian's slurmctld, slurmd, slurm-client and munge
# when they are missing, writes /etc/slurm/slurm.conf, starts the daemons without systemd and
# waits until every node is idle. Idempotent: a running cluster is left as it is.
#
#   bash slurm/local_cluster/start.sh      # then: sinfo; sbatch ...; bash slurm/local_cluster/stop.sh
#
# MaxArraySize is $SLURM_LOCAL_MAX_ARRAY_SIZE (default 8): run the pipeline here with
# executor.max_array_size=8; a stage of more tasks is submitted as several array jobs.
#
# State, spool folders, PID files and logs go to $SLURM_LOCAL_DIR (default /tmp/slurm-local).
set -euo pipefail

RUN=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
CONF=/etc/slurm/slurm.conf
MARKER="# written by slurm/local_cluster/start.sh"
NODES=(n1 n2 n3)  # a 2-node job can leave out a failed node and still run
READY_TIMEOUT=${SLURM_LOCAL_READY_TIMEOUT:-60}

log() { echo "[local-slurm] $*"; }
die() { echo "[local-slurm] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts slurmctld, slurmd and munged)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get to install it"
  log "installing slurmctld slurmd slurm-client munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null \
    || die "apt-get install slurmctld slurmd slurm-client munge failed"
fi

if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
  die "$CONF exists and was not written by this script: this host looks like part of a real cluster; not touching it"
fi

running() {  # process exists and is not a zombie (PID 1 here reaps late: <defunct> lingers)
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
alive() {  # a PID file whose process runs
  [ -f "$1" ] && running "$(cat "$1" 2>/dev/null)"
}
munged_running() {
  local pid
  for pid in $(pgrep -x munged); do running "$pid" && return 0; done
  return 1
}

mkdir -p "$RUN/ctld" "$RUN/log" /etc/slurm
for node in "${NODES[@]}"; do mkdir -p "$RUN/d/$node"; done
CPUS=${SLURM_LOCAL_CPUS_PER_NODE:-2}
# small, so that a test can run a stage of more tasks than one job array may hold; the pipeline then
# needs executor.max_array_size=$MAX_ARRAY_SIZE (or less) here
MAX_ARRAY_SIZE=${SLURM_LOCAL_MAX_ARRAY_SIZE:-8}

cat > "$CONF.tmp" <<CONFEOF
$MARKER
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again once the credentials of its last run expire: seconds, not minutes
AuthInfo=cred_expire=10
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$RUN/ctld
SlurmdSpoolDir=$RUN/d/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$RUN/log/slurmctld.log
SlurmdLogFile=$RUN/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$RUN/log/jobcomp.log
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
# a job whose afterok dependency failed is cancelled instead of pending forever
DependencyParameters=kill_invalid_depend
ReturnToService=2
JobRequeue=1
MailProg=/bin/true
InactiveLimit=0
KillWait=5
MinJobAge=600
# array indices 0 .. MaxArraySize-1
MaxArraySize=$MAX_ARRAY_SIZE
# the emulated nodes claim CPUs and memory of the same host; memory is not enforced here (no cgroups), and
# each claims enough for the pipeline's single-task stages (near_clusters asks 32 GB by default)
SlurmdParameters=config_overrides
NodeName=n[1-3] NodeHostname=localhost NodeAddr=127.0.0.1 Port=17001-17003 CPUs=$CPUS RealMemory=65536 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONFEOF
mv "$CONF.tmp" "$CONF"

mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if [ ! -f /etc/munge/munge.key ]; then
  mungekey --create >/dev/null 2>&1 || die "mungekey --create failed"
  chown munge:munge /etc/munge/munge.key
fi
if ! munged_running; then
  runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
fi

if alive "$RUN/slurmctld.pid"; then
  log "slurmctld already running"
else
  slurmctld || die "slurmctld did not start (see $RUN/log/slurmctld.log)"
fi
for node in "${NODES[@]}"; do
  if alive "$RUN/slurmd-$node.pid"; then
    log "slurmd $node already running"
  else
    slurmd -N "$node" || die "slurmd -N $node did not start (see $RUN/log/slurmd-$node.log)"
  fi
done

start=$SECONDS
while :; do
  idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 == "idle" || $2 == "mix" || $2 == "alloc"' | wc -l)
  [ "$idle" -ge "${#NODES[@]}" ] && break
  if [ $((SECONDS - start)) -ge "$READY_TIMEOUT" ]; then
    sinfo -N 2>&1 || true
    die "nodes not ready after ${READY_TIMEOUT}s (logs in $RUN/log)"
  fi
  sleep 0.5
done
log "ready in $((SECONDS - start))s: $(sinfo -h -N -o '%N=%t' | tr '\n' ' ')(conf $CONF, state and logs in $RUN)"
