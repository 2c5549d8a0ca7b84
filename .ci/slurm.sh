#!/usr/bin/env bash
# A real single-node Slurm cluster on loopback, for the tests marked `slurm` (CI, or your own Debian
# machine as root):
#
#   .ci/slurm.sh start   # installs Debian's slurmctld, slurmd, slurm-client and munge if missing, starts them
#   .ci/slurm.sh stop
#   .ci/slurm.sh env     # the variables that point clients at it: eval "$(.ci/slurm.sh env)"
#
# Everything lives under $FAIRCHEM_PRUNE_SLURM (default /tmp/fairchem-prune-slurm): slurm.conf, state,
# logs, pid files, and bin/sacct, a stand-in answering from `squeue --states=all` (there is no
# accounting database; submitit asks sacct for job states). Two partitions: `debug` (default) whose
# jobs a job of `high` preempts (requeue, after SIGUSR2 and a 30 s grace time).
set -euo pipefail

DIR="${FAIRCHEM_PRUNE_SLURM:-/tmp/fairchem-prune-slurm}"
CONF="$DIR/slurm.conf"

env_lines() {
    echo "export SLURM_CONF=$CONF"
    echo "export PATH=$DIR/bin:\$PATH"
}

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return 0
    echo "slurm.sh: installing slurmctld slurmd slurm-client munge (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    local host node
    host="$(hostname -s)"
    node="$(slurmd -C | head -n 1)"   # NodeName=<host> CPUs=... RealMemory=...
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/bin"
    cat > "$CONF" <<CONF
ClusterName=fairchemprune
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
CommunicationParameters=NoInAddrAny
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerParameters=sched_interval=1,bf_interval=1
KillWait=5
MinJobAge=600
MailProg=/bin/true
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=30
PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2
CONF
    cat > "$DIR/bin/sacct" <<'SACCT'
#!/usr/bin/env bash
# sacct stand-in for submitit: `sacct -o JobID,State,NodeList --parsable2 -j ID,...` from squeue.
ids=""
while [ $# -gt 0 ]; do
    case "$1" in -j) ids="$2"; shift 2 ;; -j*) ids="${1#-j}"; shift ;; *) shift ;; esac
done
echo "JobID|State|NodeList"
squeue --states=all -h -r -o "%i|%T|%N" ${ids:+-j "$ids"} 2>/dev/null
SACCT
    chmod +x "$DIR/bin/sacct"
}

start() {
    install_packages
    stop quiet
    write_config
    mkdir -p /run/munge && chown munge:munge /run/munge
    [ -f /etc/munge/munge.key ] || { /usr/sbin/mungekey -c -f >/dev/null 2>&1 || /usr/sbin/create-munge-key -f >/dev/null; }
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    slurmctld -f "$CONF"
    slurmd -f "$CONF"
    for _ in $(seq 100); do
        if [ "$(SLURM_CONF="$CONF" sinfo -h -N -o %t 2>/dev/null | sort -u)" = "idle" ]; then
            echo "slurm.sh: cluster up ($CONF)"
            return 0
        fi
        sleep 0.2
    done
    echo "slurm.sh: the node did not become idle; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
    return 1
}

stop() {
    # each daemon by its pid file and by its command line (a daemon whose pid file is gone), then wait:
    # slurmctld saves its state on SIGTERM, and one left running holds the ports of the next start
    local daemon pids pid
    for daemon in slurmd slurmctld; do
        pids="$(pgrep -f "^$daemon -f $CONF" || true)"
        [ -f "$DIR/$daemon.pid" ] && pids="$pids $(cat "$DIR/$daemon.pid")"
        for pid in $pids; do kill "$pid" 2>/dev/null || true; done
        for _ in $(seq 50); do
            alive=""
            for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ -z "$alive" ] && break
            sleep 0.2
        done
        for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
        rm -f "$DIR/$daemon.pid"
    done
    [ "${1:-}" = quiet ] || echo "slurm.sh: stopped"
    rm -rf "$DIR/state" "$DIR/spool"   # job ids restart at 1; tests use fresh submitit folders
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) env_lines ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
