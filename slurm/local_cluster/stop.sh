#!/usr/bin/env bash
# Stop the cluster started by start.sh: cancel its jobs, then stop the slurmd's, slurmctld and munged
# by their PIDs and wait until they are gone. Safe to run when nothing is running.
set -uo pipefail

RUN=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
log() { echo "[local-slurm] $*"; }

running() {  # process exists and is not a zombie
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ]
}

stop_pid() {  # NAME PID: TERM, then KILL after 10 s
  local name=$1 pid=$2 waited=0
  running "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  while running "$pid" && [ $waited -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
  if running "$pid"; then kill -KILL "$pid" 2>/dev/null; log "$name ($pid) killed"; else log "$name ($pid) stopped"; fi
}

command -v scancel >/dev/null && timeout 10 scancel --full --signal=KILL --state=RUNNING,PENDING "--user=$(id -un)" 2>/dev/null
command -v scancel >/dev/null && timeout 10 scancel "--user=$(id -un)" 2>/dev/null

for pidfile in "$RUN"/slurmd-*.pid; do
  [ -f "$pidfile" ] && stop_pid "$(basename "$pidfile" .pid)" "$(cat "$pidfile")"
done
[ -f "$RUN/slurmctld.pid" ] && stop_pid slurmctld "$(cat "$RUN/slurmctld.pid")"
for pid in $(pgrep -x munged); do stop_pid munged "$pid"; done
rm -f "$RUN"/*.pid
exit 0
