#!/usr/bin/env bash
# `make demo`: a local Slurm cluster, islurm installed for an unprivileged user, and a real
# `ssh slurm-cpu hostname` through the ProxyCommand shim, the daemon, sbatch and the job's sshd.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${E2E_PREFIX:-/opt/islurm-test}

echo "== 1/4 local Slurm test cluster (munge, slurmctld, slurmd c1 c2)"
bash cluster/testcluster.sh up
# shellcheck disable=SC1090
eval "$(bash cluster/testcluster.sh env)"
user=$ISLURM_TEST_USER

echo "== 2/4 installing islurm into $prefix"
make --no-print-directory e2e-install E2E_PREFIX="$prefix" >/dev/null

echo "== 3/4 preparing user $user (ssh key, ssh config from islurmctl ssh-config --local)"
cfg=$(bash cluster/prepare-user.sh "$user" "$prefix")
home=$(getent passwd "$user" | cut -d: -f6)

echo "== 4/4 as $user: ssh -F $cfg slurm-cpu hostname"
start=$EPOCHREALTIME
node=$(runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" \
  PATH="$prefix/bin:/usr/bin:/bin" ssh -n -F "$cfg" slurm-cpu hostname)
end=$EPOCHREALTIME
echo
echo "compute node hostname via ssh slurm-cpu: $node   ($(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.2f", b-a}') s, cold)"
echo
echo "Try it:   runuser -u $user -- env HOME=$home PATH=$prefix/bin:/usr/bin:/bin ssh -F $cfg slurm-cpu"
echo "          runuser -u $user -- env HOME=$home $prefix/bin/islurmctl list"
echo "Stop:     make cluster-down"
