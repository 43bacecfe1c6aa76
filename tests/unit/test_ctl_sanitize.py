"""What islurmctl prints from the daemon or Slurm carries no terminal controls (one definition,
config/text.py, shared with the shim); --json stays exact; credentials stay out of the job's
session environment (sessionhooks/main.py `job_environment`)."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from islurm.config.text import terminal_safe
from islurm.daemon.ctl import main as ctl
from islurm.daemon.ctl import sessions
from islurm.daemon.ctl.common import Fail
from islurm.daemon.ctl.exits import Exit
from islurm.proxyshim import report
from islurm.sessionhooks.main import job_environment


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """islurmctl's main() points structlog at the (captured, soon closed) stderr."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


HOSTILE = "c1\x1b]0;owned\x07\x1b[2J\x9b31m\x7fend"


@pytest.mark.parametrize(
    ("raw", "shown", "one_line"),
    [
        ("plain ascii", "plain ascii", "plain ascii"),
        ("né 日本", "né 日本", "né 日本"),
        ("a\x1b[31mb", "a?[31mb", "a?[31mb"),
        ("bell\x07", "bell?", "bell?"),
        ("csi\x9b2J del\x7f", "csi?2J del?", "csi?2J del?"),
        ("nul\x00cr\r", "nul?cr?", "nul?cr?"),
        ("two\nlines\tand tab", "two\nlines\tand tab", "two?lines?and tab"),
    ],
)
def test_terminal_safe(raw: str, shown: str, one_line: str) -> None:
    assert terminal_safe(raw) == shown
    assert terminal_safe(raw, one_line=True) == one_line


def test_the_shim_uses_the_one_definition(capfd: pytest.CaptureFixture[str]) -> None:
    assert vars(report)["terminal_safe"] is terminal_safe  # imported, not re-implemented
    report.inform("queued \x1b[2J(Priority)")
    assert capfd.readouterr().err == "islurm: queued ?[2J(Priority)\n"


JOB = {"job_id": "42", "profile": "cpu", "state": "RUNNING", "node": HOSTILE, "reason": HOSTILE}


def test_list_sanitizes_every_cell(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ctl, "call", lambda args, method, **kw: {"jobs": [JOB]})
    assert ctl.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\x7f" not in out
    assert out.splitlines()[1].split()[3] == "c1?]0;owned??[2J?31m?end"


def test_list_json_stays_exact(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ctl, "call", lambda args, method, **kw: {"jobs": [JOB]})
    assert ctl.main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [JOB]


def test_status_sanitizes_the_watcher_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = {
        "version": "1",
        "pid": 1,
        "uptime": 1.0,
        "mode": "on-demand",
        "socket": "/s",
        "config": "/c",
        "state_dir": "/d",
        "log": "/l",
        "watcher": {"error": "squeue: " + HOSTILE + "\nforged line", "polls": 1, "interval": 30},
        "leases": 0,
        "submissions": 0,
    }
    job = {"job_id": "7", "profile": "cpu", "state": HOSTILE, "sessions": 0, "time_left": "1:00"}
    job |= {"idle_grace": 600, "idle_cancel_in": 75.0}
    answers = {"daemon.status": status, "session.list": {"jobs": [job]}}
    monkeypatch.setattr(ctl, "call", lambda args, method, **kw: answers[method])
    assert ctl.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "forged line" in out and not any(ln.startswith("forged") for ln in out.splitlines())
    assert "cancelled in 1m15s unless someone connects" in out


def test_errors_from_the_daemon_are_sanitized(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(args: Any, method: str, **kw: Any) -> Any:
        raise Fail(Exit.SLURM_UNREACHABLE, "Slurm says: " + HOSTILE)

    monkeypatch.setattr(ctl, "call", refuse)
    assert ctl.main(["list"]) == 5
    assert capsys.readouterr().err == "islurmctl: Slurm says: c1?]0;owned??[2J?31m?end\n"


def test_progress_relayed_by_gpuswap_is_sanitized(capsys: pytest.CaptureFixture[str]) -> None:
    class Rpc:
        def __init__(self) -> None:
            self.messages = [
                {"method": "session.progress", "params": {"message": "queued " + HOSTILE}},
                {"method": "session.ready", "params": {"job_id": "42", "node": "n1"}},
            ]

        def read_message(self) -> dict[str, Any]:
            return self.messages.pop(0)

    assert sessions._follow(Rpc(), as_json=False)["job_id"] == "42"
    assert capsys.readouterr().err == "islurm: queued c1?]0;owned??[2J?31m?end\n"


def test_credentials_stay_out_of_the_session_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLURM_JWT", "eyJhbGciOiJIUzI1NiJ9.secret")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_ACCOUNT", "o'brien")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("HOME_TOKEN", "not slurm")
    env = job_environment()
    assert "SLURM_JWT" not in env
    assert not any("eyJ" in v for v in env.values())
    assert (env["SLURM_JOB_ID"], env["SLURM_JOB_ACCOUNT"]) == ("42", "o'brien")
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert "HOME_TOKEN" not in env
