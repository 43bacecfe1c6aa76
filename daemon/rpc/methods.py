"""The RPC methods: validate, look up, enqueue, return. Waiting happens in follow-up tasks."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any

import structlog
from jsonrpcserver import Error, InvalidParams, Result, Success, dispatch

from islurm.config import protocol as proto
from islurm.daemon import direct, jobview, version
from islurm.daemon import gpuswap as swap
from islurm.daemon.errors import Code, RpcFault
from islurm.daemon.handed import HandedSessions
from islurm.daemon.manager import SessionManager
from islurm.daemon.rpc.server import Connection, deserialize
from islurm.daemon.slurm.client import SlurmError

log = structlog.get_logger("islurm.rpc")

Method = Callable[..., Result]


def _guarded(fn: Method) -> Method:
    """Map our faults to their codes and never let internal text reach the client."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Result:
        try:
            return fn(*args, **kwargs)
        except RpcFault as fault:
            return Error(int(fault.code), fault.message, fault.data)
        except Exception:
            log.exception("rpc.method_crashed", method=fn.__name__)
            return Error(int(Code.INTERNAL), "internal error (see the daemon log)")

    return wrapper


def _str(name: str, value: object, *, max_len: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise RpcFault(Code.INVALID_PARAMS, f"{name} must be a non-empty string")
    return value


def _opt_number(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e7:
        raise RpcFault(Code.INVALID_PARAMS, f"{name} must be a positive number of seconds")
    return float(value)


def _image(value: object) -> str:
    if not isinstance(value, str):
        raise RpcFault(Code.INVALID_PARAMS, "image must be a string")
    return value


def _endpoint(name: str, value: object) -> tuple[str, str, int]:
    """{job_id, host, port} of an endpoint a shim could not reach."""
    if not isinstance(value, dict):
        raise RpcFault(Code.INVALID_PARAMS, f"{name} must be an object")
    job_id = _str(f"{name}.job_id", value.get("job_id"), max_len=32)
    host = _str(f"{name}.host", value.get("host"), max_len=256)
    port = value.get("port")
    if not job_id.isdigit() or isinstance(port, bool) or not isinstance(port, int):
        raise RpcFault(Code.INVALID_PARAMS, f"{name} needs a Slurm job id and a port number")
    return job_id, host, port


def _protocol(value: object) -> None:
    """A client speaking a newer protocol than ours: say what to do (docs/PROTOCOL.md §2)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RpcFault(Code.INVALID_PARAMS, "protocol must be a positive integer")
    if value > proto.PROTOCOL:
        raise RpcFault(
            Code.PROTOCOL_MISMATCH,
            f"this islurmd ({version.VERSION}) speaks protocol {proto.PROTOCOL}, the client "
            f"{value}: islurm was updated and this islurmd has not handed over yet; it does so "
            "when no connect waits. Retry, or stop it now: kill -TERM "
            f"{os.getpid()} (the next connect starts the new one)",
            {"protocol": proto.PROTOCOL, "client": value},
        )


def build_methods(
    manager: SessionManager,
    status: Callable[[], dict[str, Any]],
    reload: Callable[[], str | None],
    handover: HandedSessions,
) -> dict[str, Method]:

    def acquire(
        ctx: Connection,
        profile: object,
        client_pid: object = None,
        timeout: object = None,
        unreachable: object = None,
        protocol: object = None,
        image: object = None,
        fdpass: object = None,
        take_socket: object = None,
    ) -> Result:
        _protocol(protocol)
        if fdpass is not None and not isinstance(fdpass, bool):
            return InvalidParams("fdpass must be true or false")
        if take_socket is not None and not isinstance(take_socket, bool):
            return InvalidParams("take_socket must be true or false")
        name = _str("profile", profile, max_len=64)
        limit = _opt_number("timeout", timeout)
        if client_pid is not None and (
            isinstance(client_pid, bool) or not isinstance(client_pid, int)
        ):
            return InvalidParams("client_pid must be an integer")
        manager.refuse_if_draining()
        manager.profile(name)  # unknown profile: fail fast, nothing submitted
        wanted = None if image is None else manager.jobs.resolve_image(_image(image))
        if unreachable is not None:
            manager.report_unreachable(*_endpoint("unreachable", unreachable))
        lease = manager.new_lease(name, wanted)
        lease.direct = fdpass is True
        if lease.direct:
            try:  # pinned now, while the shim waits: it will hold the lease once handed over
                lease.client = direct.client_of(ctx.pid)
            except direct.NoClient as exc:
                log.info("session.unpinned", lease=lease.id, error=str(exc))
        ctx.leases.add(lease.id)
        give = ctx.notify_with_socket if take_socket else None
        ctx.after_reply(functools.partial(manager.acquire, lease, ctx.notify, limit, give=give))
        return Success({"lease": lease.id, "profile": name})

    def handed(ctx: Connection, lease: object) -> Result:
        """The shim gave the connected socket to ssh (ProxyUseFdpass) and is leaving: the
        lease stays while that ssh runs (docs/PROTOCOL.md §2)."""
        lid = _str("lease", lease, max_len=64)
        if lid not in ctx.leases:
            raise RpcFault(Code.NOT_FOUND, f"no lease {lid} on this connection")
        held = handover.handed(lid)
        if held:
            ctx.leases.discard(lid)
        return Success({"lease": lid, "held": held})

    def attach(ctx: Connection, job_id: object, profile: object, protocol: object = None) -> Result:
        _protocol(protocol)
        jid, name = _str("job_id", job_id, max_len=32), _str("profile", profile, max_len=64)
        if not jid.isdigit():
            raise RpcFault(Code.INVALID_PARAMS, "job_id must be a Slurm job id")
        manager.refuse_if_draining()
        manager.profile(name)
        lease = manager.new_lease(name)
        ctx.leases.add(lease.id)
        ctx.after_reply(functools.partial(manager.attach, lease, jid, ctx.notify))
        return Success({"lease": lease.id})

    def check(ctx: Connection, job_id: object) -> Result:
        """A shim whose node hung up asks: poll Slurm now (session.ended follows if it ended)."""
        jid = _str("job_id", job_id, max_len=32)
        manager.watcher.kick()
        job = manager.table.get(jid)
        return Success({"job_id": jid, "state": job.state.value if job else "UNKNOWN"})

    def gpuswap(
        ctx: Connection,
        profile: object = "gpu",
        source: object = "cpu",
        release_cpu: object = False,
        keep_constraints: object = True,
        image: object = None,
        no_image: object = False,
    ) -> Result:
        target, src = _str("profile", profile, max_len=64), _str("source", source, max_len=64)
        if not (
            isinstance(release_cpu, bool)
            and isinstance(keep_constraints, bool)
            and isinstance(no_image, bool)
        ):
            raise RpcFault(
                Code.INVALID_PARAMS, "release_cpu, keep_constraints and no_image are booleans"
            )
        if no_image and image is not None:
            raise RpcFault(Code.INVALID_PARAMS, "give image or no_image, not both")
        manager.refuse_if_draining()
        manager.profile(target)
        wanted = None if image is None else manager.jobs.resolve_image(_image(image))
        job = swap.source_job(manager, src)
        if job is None:
            raise RpcFault(Code.NOT_FOUND, f"no running job for {src} to swap from")
        kept = "" if no_image else wanted or swap.kept_image(manager, job)
        lease = manager.new_lease(target, kept)
        ctx.leases.add(lease.id)
        ctx.after_reply(
            functools.partial(
                swap.gpuswap, manager, lease, job, release_cpu, keep_constraints, ctx.notify
            )
        )
        return Success(
            {"lease": lease.id, "profile": target, "source_job": job.job_id, "image": kept}
        )

    def list_(ctx: Connection) -> Result:
        return Success({"jobs": jobview.describe(manager)})

    def cancel(ctx: Connection, target: object) -> Result:
        what = _str("target", target, max_len=64)

        async def work() -> None:
            try:
                ids = await manager.jobs.cancel(what, manager.profile)
                ctx.notify("session.cancel.done", {"target": what, "job_ids": ids})
            except RpcFault as fault:
                ctx.notify(
                    "session.cancel.done",
                    {"target": what, "job_ids": [], "error": fault.as_params()},
                )

        ctx.after_reply(work)
        return Success({"target": what, "pending": True})

    def available(ctx: Connection) -> Result:
        """Would each profile's job start now? Answered by a notification (cached view)."""
        avail = manager.avail
        if avail is None:
            raise RpcFault(Code.INTERNAL, "this daemon does not look at the queue")

        async def work() -> None:
            try:
                view = await avail.get()
            except SlurmError as exc:  # only a crash of the view itself: verdicts keep theirs
                fault = RpcFault(Code.SLURM_UNREACHABLE, exc.message)
                ctx.notify("profiles.available.done", {"error": fault.as_params()})
                return
            ctx.notify("profiles.available.done", view.as_json())

        ctx.after_reply(work)
        return Success({"pending": True})

    def daemon_status(ctx: Connection) -> Result:
        return Success(status())

    def daemon_reload(ctx: Connection) -> Result:
        error = reload()
        return Success({"error": error, "config": status().get("config")})

    raw: dict[str, Method] = {
        "session.acquire": acquire,
        "session.attach": attach,
        "session.handed": handed,
        "session.check": check,
        "session.gpuswap": gpuswap,
        "session.list": list_,
        "session.cancel": cancel,
        "profiles.available": available,
        "daemon.status": daemon_status,
        "daemon.reload": daemon_reload,
    }
    return {name: _guarded(fn) for name, fn in raw.items()}


def _strict_dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False)


def make_dispatch(methods: dict[str, Method]) -> Callable[[str, Connection], str]:
    def run(text: str, conn: Connection) -> str:
        return str(
            dispatch(
                text,
                methods=methods,
                context=conn,
                deserializer=deserialize,
                serializer=_strict_dumps,
            )
        )

    return run
