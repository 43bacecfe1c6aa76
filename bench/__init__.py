"""islurm's benchmark suite: `python -m bench` (or `make bench`) as root from the repo root.

It brings the local Slurm test cluster up (cluster/testcluster.sh up, idempotent), installs the
product to /opt/islurm-test when that copy is missing or older than the source tree, prepares
the second test user (islurmtest2: the first one belongs to the e2e tests) and runs:

    startup         islurm-proxy start-up to first byte forwarded, vs socat and `python -I -S`
    shim-throughput the shim alone vs socat on a local TCP pair, both directions
    cold            cold connects, split into Slurm's, the hook's and our share; Slurm calls
    concurrent      32 cold connects at once: wall time, jobs submitted
    warm            `ssh slurm-cpu true` vs a socat ProxyCommand vs direct ssh, same sshd
    ssh-throughput  1 GiB through `ssh slurm-cpu` vs direct ssh, both directions
    idle            Slurm calls per idle minute with 1 and 20 sessions; daemon RSS and CPU

The local phases (startup, shim-throughput) run during the first idle window when `idle` is
among the phases: they need neither islurmd nor Slurm. One table on stdout; raw samples in
bench-results/latest.json (and a timestamped copy), the table and the machine in
bench-results/TABLE.md, and a comparison with the previous run.
Ratios are taken within one run, variants interleaved: absolute times on a shared 2-vCPU
machine are not comparable across runs.
"""
