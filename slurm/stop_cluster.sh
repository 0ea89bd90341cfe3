#!/usr/bin/env bash
# stop_cluster.sh - stop the single-node SLURM cluster started by start_cluster.sh.
# Cancels remaining jobs, then stops slurmd, slurmctld and (only if start_cluster.sh
# started it) munged, each by the PID in its pidfile - never by process name.
# --purge also removes $SLURM_LOCAL_DIR (state, spool, logs).
set -uo pipefail

BASE=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
log() { echo "[slurm-local] $*" >&2; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {   # stop_pidfile NAME PIDFILE
    local name=$1 pf=$2 pid
    if ! alive "$pf"; then log "$name not running"; rm -f "$pf"; return 0; fi
    pid=$(cat "$pf")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not exit, sending KILL"; kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pf"
}

if alive "$BASE/run/slurmctld.pid"; then
    jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for _ in $(seq 1 20); do
            [ -z "$(squeue -h -t R,CG -o '%A' 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

stop_pidfile slurmd "$BASE/run/slurmd.pid"
stop_pidfile slurmctld "$BASE/run/slurmctld.pid"
if [ -e /run/munge/.started-by-slurm-local ]; then
    stop_pidfile munged /run/munge/munged.pid
    rm -f /run/munge/.started-by-slurm-local
fi

if [ "${1:-}" = "--purge" ]; then
    log "removing $BASE"
    rm -rf "$BASE"
fi
exit 0
