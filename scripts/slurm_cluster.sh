#!/usr/bin/env bash
# A single-node SLURM test cluster from Debian's packages (slurmctld, slurmd, munge), for the workflow's
# SLURM test (tests/workflow/test_slurm.py) and for trying profiles/slurm on one machine. Needs root.
#
#   scripts/slurm_cluster.sh start    # install the packages if missing, write the config, start the daemons
#   scripts/slurm_cluster.sh status   # sinfo; exit 0 when the node takes jobs
#   scripts/slurm_cluster.sh stop     # stop the daemons this script started (packages and config stay)
#
# The cluster: one node (this host), one partition `debug` (the default), munge authentication, no slurmdbd:
# snakemake-executor-plugin-slurm does not need accounting (it queries job states with squeue when
# MinJobAge is long enough, which the config sets; give it --slurm-status-command squeue), and with no
# account given it submits without -A. Finished jobs are recorded one line each in /var/log/slurm/jobcomp.log
# (jobcomp/filetxt: JobId, name, state, node), which the test reads.
# The node advertises 32 CPUs and 2 GPUs whatever the machine has (SlurmdParameters=config_overrides; the GPU
# GRES is two stand-in device files, /dev/quadranet-fakegpu{0,1}, which are the null device): profiles/slurm
# asks 8 CPUs per GPU, and a training job asking for 2 GPUs then starts torchrun with 2 processes, which run
# on the CPU with gloo. Oversubscription is the caller's to bound (snakemake --jobs).
# /etc/slurm/slurm.conf is written only when absent or written by this script: a real cluster's is never
# touched.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by quadranet scripts/slurm_cluster.sh"
STATE=/var/lib/slurm-quadranet
LOGS=/var/log/slurm
RUN=/run/slurm-quadranet

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }

node_up() {
  local state
  state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1) || return 1
  [[ $state == idle* || $state == mix* || $state == alloc* ]]
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null && return 0
  command -v apt-get >/dev/null || die "slurmctld/slurmd/munge are not installed and there is no apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d keeps the packages' own service start-up away: this script starts the daemons itself
  apt-get install -y -q --no-install-recommends slurmctld slurmd munge slurm-client >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends slurmctld slurmd munge \
         slurm-client >/dev/null; } || die "apt-get could not install slurmctld slurmd munge slurm-client"
}

write_config() {
  if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching a real cluster's configuration"
  fi
  local host mem
  host=$(hostname -s)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
  mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$LOGS" "$RUN"
  cat >"$CONF" <<EOF
$MARK
ClusterName=quadranet-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$host CPUs=32 RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  # two stand-in GPU device files (the null device's numbers): slurmd counts a GPU GRES by its files
  for i in 0 1; do [[ -e /dev/quadranet-fakegpu$i ]] || mknod -m 666 "/dev/quadranet-fakegpu$i" c 1 3; done
  printf '%s\nNodeName=%s Name=gpu File=/dev/quadranet-fakegpu[0-1]\n' "$MARK" "$host" >"$CONF_DIR/gres.conf"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  [[ -s /etc/munge/munge.key ]] || mungekey --create --force >/dev/null
  chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "munged did not start (see /var/log/munge/munged.log)"
}

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  [[ $(id -u) == 0 ]] || die "needs root (installs packages and starts daemons)"
  if node_up; then echo "slurm_cluster.sh: a cluster is already up"; sinfo; return 0; fi
  install_packages
  write_config
  start_munge
  alive "$RUN/slurmctld.pid" || slurmctld || die "slurmctld did not start (see $LOGS/slurmctld.log)"
  alive "$RUN/slurmd.pid" || slurmd || die "slurmd did not start (see $LOGS/slurmd.log)"
  for _ in $(seq 100); do
    if node_up; then sinfo; return 0; fi
    sleep 0.2
  done
  scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
  node_up || die "the node did not come up: $(sinfo -h -N -o '%T %E' 2>&1); see $LOGS/"
  sinfo
}

stop() {
  local pid
  for daemon in slurmd slurmctld; do
    if alive "$RUN/$daemon.pid"; then
      pid=$(cat "$RUN/$daemon.pid")
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  if [[ -s /run/munge/munged.pid ]] && grep -qF "$MARK" "$CONF" 2>/dev/null; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
  fi
  echo "slurm_cluster.sh: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo && node_up ;;
  *) die "usage: $0 start|status|stop" ;;
esac
