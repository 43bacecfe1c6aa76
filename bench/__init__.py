"""islurm's benchmark suite: `python -m bench` (or `make bench`) as root from the repo root.

It brings the local Slurm test cluster up (cluster/testcluster.sh up, idempotent), installs the
product from this tree to /opt/islurm-bench (its own prefix: the e2e tests reinstall
/opt/islurm-test), prepares
the second test user (islurmtest2: the first one belongs to the e2e tests) and runs:

    startup         islurm-proxy start-up to first byte forwarded, vs socat and `python -I -S`
    shim-throughput the shim alone vs socat on a local TCP pair, both directions
    cold            cold connects, split into Slurm's, the hook's and our share; Slurm calls
    daemon-start    islurmd process start -> serving; cold connects that start it vs not
    concurrent      32 cold connects at once: wall time, jobs submitted
    warm            `ssh slurm-cpu true` (fdpass; relay) vs a socat ProxyCommand vs direct ssh,
                    lone and in a burst, as per-pair ratios
    ssh-throughput  1 GiB through `ssh slurm-cpu` (fdpass; relay) vs direct ssh, both ways
    two-hops        a loopback sshd as login node: the laptop route (`islurm-proxy --via
                    login cpu`) vs `ssh -J login`, warm connects and 1 GiB both ways
    idle            Slurm calls per idle minute with 1 and 20 sessions; daemon RSS and CPU
    many-users      50 users x (1 job, 2 idle sessions): sdiag RPCs, memory, CPU vs nc

The local phases (startup, shim-throughput) run during the first idle window when `idle` is
among the phases: they need neither islurmd nor Slurm. One table on stdout; raw samples in
bench-results/latest.json (and a timestamped copy), the table and the machine in
bench-results/TABLE.md, and a comparison with the previous run.
Ratios are taken within one run, variants interleaved: absolute times on a shared 2-vCPU
machine are not comparable across runs.
"""
