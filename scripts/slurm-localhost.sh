#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine (munged, slurmctld, slurmd), for the Slurm executor's integration
# test and for trying `qatflow run --executor slurm` without a cluster. Needs root and Debian's slurm-wlm + munge
# (`make slurm` installs them). Idempotent: does nothing when `sinfo` already answers.
#
#   scripts/slurm-localhost.sh          start (or check) the cluster; prints sinfo
#   scripts/slurm-localhost.sh stop     stop the daemons
set -euo pipefail
host=$(hostname -s)
conf=/etc/slurm/slurm.conf

if [ "${1:-}" = stop ]; then
  pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x munged || true
  exit 0
fi
for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" > /dev/null || { echo "slurm-localhost: $tool not found; install slurm-wlm and munge (make slurm)" >&2; exit 3; }
done
if [ "$(id -u)" != 0 ]; then echo "slurm-localhost: needs root (starts daemons, writes $conf)" >&2; exit 3; fi
if timeout 5 sinfo -h > /dev/null 2>&1; then sinfo; exit 0; fi

# The controller and the node are this host: its name must resolve.
getent hosts "$host" > /dev/null || echo "127.0.1.1 $host" >> /etc/hosts

mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
if [ ! -s /etc/munge/munge.key ]; then dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
pgrep -x munged > /dev/null || runuser -u munge -- /usr/sbin/munged

cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$conf" <<CONF
# Written by qatflow's scripts/slurm-localhost.sh: one node, this host, no accounting daemon, no cgroups.
ClusterName=qatflow
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MinJobAge=3600
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
pgrep -x slurmctld > /dev/null || /usr/sbin/slurmctld
pgrep -x slurmd > /dev/null || /usr/sbin/slurmd
for _ in $(seq 1 30); do
  if sinfo -h -o %t 2> /dev/null | grep -qE '^(idle|mix|alloc)'; then sinfo; exit 0; fi
  scontrol update nodename="$host" state=resume > /dev/null 2>&1 || true
  sleep 1
done
echo "slurm-localhost: the node did not become idle in 30 s; logs in /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
