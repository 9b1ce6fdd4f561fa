#!/usr/bin/env bash
# A single-node SLURM on this machine, for the cluster tests (tests/dip/test_cluster.py).
#
#   tests/cluster/slurm_up.sh          install slurm-wlm if needed, start it, wait for the node
#   tests/cluster/slurm_up.sh down     stop the daemons this script started
#
# Everything lives in $SLURM_TEST_DIR (default /tmp/slurm-test): slurm.conf, state, logs, pids.
# Clients find the cluster with SLURM_CONF=$SLURM_TEST_DIR/slurm.conf (the tests set it);
# /etc/slurm is not touched. Authentication is auth/none (localhost only, tests only).
# Needs root (apt-get, slurmd). Exits non-zero with one line when SLURM cannot come up.
set -euo pipefail
DIR=${SLURM_TEST_DIR:-/tmp/slurm-test}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

stop() {
    for name in slurmd slurmctld; do
        if [ -f "$DIR/$name.pid" ]; then
            kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true
            rm -f "$DIR/$name.pid"
        fi
    done
}

if [ "${1:-}" = down ]; then
    stop
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client >/dev/null
fi

stop
mkdir -p "$DIR/state" "$DIR/spool"
NODE=$(hostname -s)
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # the machine's, not a test run's OpenMP cap
cat >"$CONF" <<CONFIG
# written by tests/cluster/slurm_up.sh: one localhost node, for tests
ClusterName=localtest
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobRequeue=1
MinJobAge=600
KillWait=30
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONFIG

slurmctld -f "$CONF"
slurmd -f "$CONF"
for _ in $(seq 60); do
    if sinfo -h -N -o %T 2>/dev/null | grep -qx idle; then
        echo "SLURM is up: node $NODE idle with $CPUS CPUs (SLURM_CONF=$CONF)"
        exit 0
    fi
    sleep 1
done
echo "slurm_up.sh: the node did not become idle in 60 s; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
exit 1
