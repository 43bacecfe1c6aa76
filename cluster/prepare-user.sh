#!/usr/bin/env bash
# Prepare an unprivileged user on this (login) node to use islurm installed under PREFIX:
# an SSH key the job's sshd accepts, and the ssh config `islurmctl ssh-config --local` writes.
# Used by `make demo` and the real-tier test fixtures. Run as root.
#   cluster/prepare-user.sh USER PREFIX [CONFIG_TOML]
set -euo pipefail
user=${1:?usage: prepare-user.sh USER PREFIX [CONFIG_TOML]}
prefix=${2:?usage: prepare-user.sh USER PREFIX [CONFIG_TOML]}
config=${3:-}
home=$(getent passwd "$user" | cut -d: -f6)
[ -n "$home" ] || { echo "prepare-user: no user $user" >&2; exit 1; }

as_user() {
  runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" \
    PATH="$prefix/bin:/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8 "$@"
}

as_user mkdir -p -m 700 "$home/.ssh" "$home/.config/islurm"
[ -f "$home/.ssh/id_ed25519" ] || as_user ssh-keygen -q -t ed25519 -N "" -C "$user@islurm-test" -f "$home/.ssh/id_ed25519"
pub=$(cat "$home/.ssh/id_ed25519.pub")
if ! grep -qxF "$pub" "$home/.ssh/authorized_keys" 2>/dev/null; then
  printf '%s\n' "$pub" | as_user tee -a "$home/.ssh/authorized_keys" >/dev/null
fi
as_user chmod 600 "$home/.ssh/authorized_keys"
if [ -n "$config" ]; then
  as_user tee "$home/.config/islurm/config.toml" >/dev/null < "$config"
fi
as_user islurmctl ssh-config --local | as_user tee "$home/.ssh/islurm_config" >/dev/null
as_user chmod 600 "$home/.ssh/islurm_config"
# The same hosts with the shim relaying the bytes (`--relay`; by default ssh takes the socket).
as_user islurmctl ssh-config --local --relay | as_user tee "$home/.ssh/islurm_relay_config" >/dev/null
as_user chmod 600 "$home/.ssh/islurm_relay_config"
echo "$home/.ssh/islurm_config"
