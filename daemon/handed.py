"""The sessions handed to ssh (ProxyUseFdpass), held by their ssh process (daemon/direct.py)
for the manager, and kept on disk so that a restarted islurmd still knows who is connected."""

from __future__ import annotations

import structlog

from islurm.config import records
from islurm.daemon import direct
from islurm.daemon.direct import SshClient
from islurm.daemon.jobs import Job
from islurm.daemon.manager import Lease, SessionManager

log = structlog.get_logger("islurm.sessions")


class Ledger:
    """The handed-over sessions on disk (`direct.json` in the state dir, 0600), so that a
    restarted islurmd (an update's hand-over, a crash) still knows who is connected."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: dict[str, dict[str, str | int]] = {}

    def load(self) -> list[dict[str, str | int]]:
        """The previous daemon's entries (kept until `restored` rewrites the file)."""
        try:
            data = records.read_json(self.path)
        except records.RecordError as exc:
            log.warning("direct.ledger_unreadable", path=self.path, error=str(exc))
            return []
        items = data.get("sessions") if isinstance(data, dict) else None
        return [
            e
            for e in (items if isinstance(items, list) else [])
            if isinstance(e, dict)
            and isinstance(e.get("job_id"), str)
            and isinstance(e.get("profile"), str)
            and isinstance(e.get("pid"), int)
            and isinstance(e.get("start"), str)
        ]

    def add(self, lease_id: str, job_id: str, profile: str, client: SshClient) -> None:
        self.entries[lease_id] = {
            "job_id": job_id,
            "profile": profile,
            "pid": client.pid,
            "start": client.start,
        }
        self.save()

    def remove(self, lease_id: str) -> None:
        if self.entries.pop(lease_id, None) is not None:
            self.save()

    def save(self) -> None:
        # Not fsynced: on every handed connect, and what a machine crash loses (the ssh
        # processes it names) goes with it.
        try:
            records.write_json(self.path, {"sessions": list(self.entries.values())}, durable=False)
        except OSError as exc:
            log.warning("direct.ledger_unwritable", path=self.path, error=str(exc))


class HandedSessions:
    """`session.handed`: the lease moves from the shim's connection to its ssh."""

    def __init__(self, manager: SessionManager, ledger: Ledger) -> None:
        self.manager, self.ledger = manager, ledger

    def handed(self, lease_id: str) -> bool:
        """The shim gave its connection to ssh and leaves: the lease is held by that ssh
        from now on (False: nothing to hold by, the lease ends with the shim's connection)."""
        m = self.manager
        lease = m.leases.get(lease_id)
        job = m.table.get(lease.job_id) if lease and lease.job_id else None
        if lease is None or lease.client is None or job is None:
            return False
        if not m.spawn(self._hold, lease, lease.client, job):
            return False
        _mark_laptop_route(job, lease.client)
        self.ledger.add(lease.id, job.job_id, lease.profile, lease.client)
        return True

    async def restore(self) -> int:
        """After a restart: take back the sessions the previous islurmd held by their ssh."""
        m = self.manager
        await m.watcher.synced.wait()
        restored = 0
        entries = self.ledger.load()
        if not entries:
            return 0  # nothing to take back, nothing to rewrite
        for entry in entries:
            job = m.table.get(str(entry["job_id"]))
            if job is None or not job.live:
                continue
            client = direct.repin(int(entry["pid"]), str(entry["start"]))
            if client is None:
                continue
            lease = m.new_lease(str(entry["profile"]))
            m.bind(lease, job)
            lease.client = client
            if not m.spawn(self._hold, lease, client, job):
                m.release(lease.id)
                continue
            _mark_laptop_route(job, client)
            self.ledger.add(lease.id, job.job_id, lease.profile, client)
            restored += 1
        self.ledger.save()  # entries not taken back are gone
        if restored:
            log.info("session.handed_restored", sessions=restored)
        return restored

    async def _hold(self, lease: Lease, client: SshClient, job: Job) -> None:
        m = self.manager
        log.info("session.handed", job_id=job.job_id, lease=lease.id, ssh_pid=client.pid)
        try:
            ended = await direct.hold(
                client,
                live=lambda: job.live,
                changed=job.wait_changed,
                stands=lambda: job.state.is_running and m.records.read(job.job_id) is not None,
                kick=m.watcher.kick,
            )
            if ended:
                client.tell(await m.end_text(job))
        finally:
            self.ledger.remove(lease.id)
            m.release(lease.id)


def _mark_laptop_route(job: Job, client: SshClient) -> None:
    """The laptop route pins the login node's sshd (the shim's parent): the laptop's next
    connects take its remembered route (proxyshim/shortcut.py), which islurmd never hears of,
    so idle reaping asks the job for its own session count."""
    if direct.comm(client.pid) == "sshd":
        job.direct_possible = True
