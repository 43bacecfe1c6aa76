"""The one interface to Slurm: submit, query, cancel. No other module runs Slurm commands."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import structlog
import trio

from islurm.daemon.slurm.capacity import SINFO_FORMAT, NodeFree, parse_sinfo_nodes
from islurm.daemon.slurm.parse import (
    SQUEUE_FORMAT,
    SlurmParseError,
    SqueueRow,
    is_controller_unreachable,
    is_invalid_job_id,
    parse_job_constraints,
    parse_sbatch_parsable,
    parse_squeue,
)

log = structlog.get_logger("islurm.slurm")


class SlurmError(Exception):
    """A Slurm command failed; carries the argv, exit code and output."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str):
        self.argv, self.returncode, self.stdout, self.stderr = (
            list(argv),
            returncode,
            stdout,
            stderr,
        )
        detail = stderr.strip() or stdout.strip() or f"exit code {returncode}"
        super().__init__(detail)

    @property
    def message(self) -> str:
        """Slurm's own words, for the user."""
        return str(self)


class SlurmUnreachable(SlurmError):
    """The controller did not answer: the last known state stands, keep waiting."""


class SlurmOutputError(SlurmError):
    """Slurm answered, but with output we cannot read: a failed call, not a crash.
    `raw` is the text that did not parse."""

    def __init__(self, argv: Sequence[str], stdout: str, error: SlurmParseError) -> None:
        super().__init__(argv, 0, stdout, "")
        self.raw = error.raw
        self.args = (str(error),)


class SlurmClient(abc.ABC):
    @abc.abstractmethod
    async def submit(self, options: Sequence[str], script: str) -> str:
        """Submit a batch job (script on stdin); return its id."""

    @abc.abstractmethod
    async def query(self) -> list[SqueueRow]:
        """All of the user's jobs that Slurm still knows, in one call."""

    @abc.abstractmethod
    async def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel jobs; cancelling a job that already ended is not an error."""

    @abc.abstractmethod
    async def constraints(self, job_id: str) -> list[str]:
        """sbatch options reproducing a job's placement constraints (for gpuswap)."""

    @abc.abstractmethod
    async def test_submit(self, options: Sequence[str]) -> str:
        """`sbatch --test-only`: Slurm's verdict on options without submitting."""

    @abc.abstractmethod
    async def nodes(self) -> list[NodeFree]:
        """What is free on every node, per partition, in one call (`sinfo -N`)."""


class SlurmCli(SlurmClient):
    """Slurm through its command-line tools, with machine-readable output."""

    def __init__(self, timeout: float = 30.0, bin_dir: str | None = None) -> None:
        self.timeout = timeout
        self.bin_dir = bin_dir
        self.calls = 0

    def _cmd(self, name: str) -> str:
        return f"{self.bin_dir}/{name}" if self.bin_dir else name

    async def _call(self, argv: list[str], stdin: bytes = b"") -> str:
        """The choke point: log the argv, run it bounded, raise with everything on failure."""
        self.calls += 1
        log.debug("slurm.call", argv=argv)
        try:
            with trio.fail_after(self.timeout):
                proc = await trio.run_process(
                    argv, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
                )
        except trio.TooSlowError:
            raise SlurmUnreachable(
                argv, None, "", f"{argv[0]} did not answer in {self.timeout:.0f} s"
            ) from None
        except OSError as exc:
            raise SlurmError(argv, None, "", f"cannot run {argv[0]}: {exc}") from None
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            cls = SlurmUnreachable if is_controller_unreachable(err) else SlurmError
            log.info("slurm.failed", argv=argv, returncode=proc.returncode, stderr=err.strip())
            raise cls(argv, proc.returncode, out, err)
        return out

    async def submit(self, options: Sequence[str], script: str) -> str:
        argv = [self._cmd("sbatch"), "--parsable", *options]
        out = await self._call(argv, script.encode())
        try:
            return parse_sbatch_parsable(out)
        except SlurmParseError as exc:
            raise SlurmOutputError(argv, out, exc) from None

    async def query(self) -> list[SqueueRow]:
        argv = [self._cmd("squeue"), "--me", "--noheader", "--states=all", "-o", SQUEUE_FORMAT]
        out = await self._call(argv)
        try:
            return parse_squeue(out)
        except SlurmParseError as exc:
            raise SlurmOutputError(argv, out, exc) from None

    async def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        try:
            await self._call([self._cmd("scancel"), *job_ids])
        except SlurmError as exc:
            if not is_invalid_job_id(exc.stderr):
                raise

    async def constraints(self, job_id: str) -> list[str]:
        argv = [self._cmd("scontrol"), "-o", "show", "job", job_id]
        out = await self._call(argv)
        try:
            return parse_job_constraints(out.strip().splitlines()[0] if out.strip() else out)
        except SlurmParseError as exc:
            raise SlurmOutputError(argv, out, exc) from None

    async def test_submit(self, options: Sequence[str]) -> str:
        argv = [self._cmd("sbatch"), "--test-only", *options]
        self.calls += 1
        log.debug("slurm.call", argv=argv)
        # --test-only answers on stderr, also on success.
        try:
            with trio.fail_after(self.timeout):
                proc = await trio.run_process(
                    argv,
                    stdin=b"#!/bin/sh\ntrue\n",
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
        except trio.TooSlowError:
            raise SlurmUnreachable(argv, None, "", "sbatch --test-only did not answer") from None
        except OSError as exc:
            raise SlurmError(argv, None, "", f"cannot run {argv[0]}: {exc}") from None
        err = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            cls = SlurmUnreachable if is_controller_unreachable(err) else SlurmError
            raise cls(argv, proc.returncode, "", err)
        return err.strip()

    async def nodes(self) -> list[NodeFree]:
        argv = [self._cmd("sinfo"), "--noheader", "--Node", "-O", SINFO_FORMAT]
        out = await self._call(argv)
        try:
            return parse_sinfo_nodes(out)
        except SlurmParseError as exc:
            raise SlurmOutputError(argv, out, exc) from None


__all__ = ["SlurmCli", "SlurmClient", "SlurmError", "SlurmOutputError", "SlurmUnreachable"]
