#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, to run the workflow through its SLURM profile
# (workflow/profiles/slurm) without a site: munged, slurmctld and slurmd, with every file they use
# (config, key, state, spool, logs, sockets) under one folder.
#
#   workflow/scripts/local_slurm.sh start    # write the config, start the daemons, wait for the node
#   workflow/scripts/local_slurm.sh status   # sinfo and squeue
#   workflow/scripts/local_slurm.sh stop     # stop the daemons (the folder stays, for the logs)
#   export SLURM_CONF=<dir>/slurm.conf      # what `start` prints: sbatch, squeue and the executor use it
#
# Needs the Debian packages slurmctld, slurmd, slurm-client and munge (apt-get install slurmctld slurmd
# slurm-client munge) and root, as SLURM's daemons do. SPOLAB_SLURM_DIR (default /tmp/spolab-slurm) is
# the folder. The node offers every core and the machine's memory less 1 GiB, in two partitions, `cpu`
# (the default) and `gpu`, so the profile's partition names resolve; it has no GPUs, and a CPU scale's
# jobs request none. No accounting database: the executor reads job states with squeue (its
# `status_command`), which keeps finished jobs for MinJobAge seconds. The config is also linked at SLURM's
# default path, /etc/slurm/slurm.conf (where none is, or our own link is): the executor's job step runs
# srun without the SLURM_* variables, SLURM_CONF among them, so srun finds the config only there.
set -euo pipefail

DIR=${SPOLAB_SLURM_DIR:-/tmp/spolab-slurm}
HOST=$(hostname -s)
CONF=$DIR/slurm.conf
DEFAULT_CONF=/etc/slurm/slurm.conf
MARK="# written by workflow/scripts/local_slurm.sh"

need() { command -v "$1" >/dev/null || { echo "local_slurm.sh: $1 not found; install the Debian packages slurmctld slurmd slurm-client munge" >&2; exit 1; }; }

write_conf() {
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
    mkdir -p "$DIR"/{state,spool,log,munge}
    cat > "$CONF" <<EOF
$MARK
ClusterName=spolab
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=86400
ReturnToService=2
MpiDefault=none
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
EOF
    if [ -e "$DEFAULT_CONF" ] && ! head -1 "$DEFAULT_CONF" | grep -qF "$MARK"; then
        echo "local_slurm.sh: $DEFAULT_CONF is another cluster's config; not replacing it" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$DEFAULT_CONF")" && ln -sfn "$CONF" "$DEFAULT_CONF"
    [ -s "$DIR/munge/munge.key" ] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none; chmod 400 "$DIR/munge/munge.key"; }
}

start() {
    need munged; need slurmctld; need slurmd; need sinfo
    write_conf
    munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed" --force
    SLURM_CONF=$CONF slurmctld -f "$CONF"
    SLURM_CONF=$CONF slurmd -f "$CONF"
    for _ in $(seq 60); do  # the node registers within seconds
        if SLURM_CONF=$CONF sinfo -h -N -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "local SLURM up: export SLURM_CONF=$CONF"
            SLURM_CONF=$CONF sinfo
            return 0
        fi
        sleep 1
    done
    echo "local_slurm.sh: the node did not come up; logs in $DIR/log" >&2
    SLURM_CONF=$CONF sinfo -N -l >&2 || true
    exit 1
}

stop() {
    for d in slurmd slurmctld; do
        [ -f "$DIR/$d.pid" ] && kill "$(cat "$DIR/$d.pid")" 2>/dev/null || true
    done
    [ -f "$DIR/munge/munged.pid" ] && kill "$(cat "$DIR/munge/munged.pid")" 2>/dev/null || true
    for _ in $(seq 20); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.5; done
    if [ -L "$DEFAULT_CONF" ] && [ "$(readlink "$DEFAULT_CONF")" = "$CONF" ]; then rm -f "$DEFAULT_CONF"; fi
    echo "local SLURM stopped (files in $DIR)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) SLURM_CONF=$CONF sinfo; SLURM_CONF=$CONF squeue ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
