"""config/settings.py: the shipped profiles (golden sbatch argv), the user overlay, durations
and refusals that point at file:line:key."""

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from islurm.config.settings import ConfigError, Profile, Settings, load_settings, parse_duration
from islurm.daemon.slurm.submission import sbatch_options

LOG = "/home/o'brien/state dir;$(touch x)/log/job-%j.log"
WORKDIR = '/home/o\'brien/my "work"\ndir'
IDENTITY = ["--dependency=singleton", "--no-requeue"]


def head() -> list[str]:
    return [f"--output={LOG}", f"--chdir={WORKDIR}"]


def tail(name: str) -> list[str]:
    return [f"--job-name=islurm-{name}", f"--comment=islurm:v1:{name}", *IDENTITY]


GOLDEN = {
    "cpu": ["--partition=interactive", "--cpus-per-task=2", "--mem=4G", "--time=08:00:00"],
    "gpu": [
        "--partition=gpu", "--gres=gpu:1", "--cpus-per-task=4", "--mem=16G", "--time=04:00:00"
    ],
    "development-cpu": [
        "--partition=interactive", "--cpus-per-task=2", "--mem=8G", "--time=04:00:00"
    ],
    "development-gpu": [
        "--partition=gpu", "--gres=gpu:1", "--cpus-per-task=6", "--mem=16G", "--time=02:00:00"
    ],
    "production-cpu": [
        "--partition=interactive", "--cpus-per-task=8", "--mem=32G", "--time=12:00:00"
    ],
    "production-gpu": [
        "--partition=gpu", "--gres=gpu:2", "--cpus-per-task=12", "--mem=64G", "--time=08:00:00"
    ],
    "gpu-intensive": [
        "--partition=gpu", "--gres=gpu:4", "--cpus-per-task=16", "--mem=64G", "--time=06:00:00"
    ],
}  # fmt: skip


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str | bytes], str]:
    """Write a config.toml under a hostile directory name; return its path."""
    folder = tmp_path / "conf dir;$(touch pwned) 'q\""
    folder.mkdir()

    def _write(text: str | bytes) -> str:
        path = folder / "config.toml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return str(path)

    return _write


def refusal(path: str, text: str) -> ConfigError:
    Path(path).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_shipped_profile_resolves_to_its_exact_sbatch_argv(name: str) -> None:
    profile = load_settings(None).profiles[name]
    argv = sbatch_options(profile, log_path=LOG, workdir=WORKDIR)
    assert argv == [*head(), *GOLDEN[name], *tail(name)]


def test_built_in_settings() -> None:
    s = load_settings(None)
    assert sorted(s.profiles) == sorted(GOLDEN)
    assert (s.path, s.daemon.port_range, s.daemon.poll_busy, s.daemon.poll_idle) == (
        "(built-in)", (20000, 29999), 0.5, 600.0
    )  # fmt: skip
    assert (s.update.mode, s.update.channel, s.update.interval) == ("auto", "", 86400.0)
    cpu = s.profiles["cpu"]
    assert (cpu.idle_grace, cpu.walltime_warnings, cpu.connect_timeout) == (600, (600, 120), 1800)


def test_missing_user_file_means_built_ins(tmp_path: Path) -> None:
    s = load_settings(str(tmp_path / "absent.toml"))
    assert s.path == str(tmp_path / "absent.toml")
    assert s.profiles == load_settings(None).profiles


def test_user_profile_and_overrides_are_laid_over_the_built_ins(
    write: Callable[[str | bytes], str],
) -> None:
    s: Settings = load_settings(
        write(
            "# mine\n"
            "[defaults]\n"
            'idle_grace = "5s"\n'
            "\n"
            '[profiles."a100-big"]\n'
            'description = "Big; \\"quoted\\" $(x)"\n'
            'sbatch = ["--partition=a100", "--gres=gpu:a100:2", "--comment=ignored"]\n'
            'connect_timeout = "2h"\n'
            "\n"
            "[profiles.gpu]\n"
            'sbatch = ["--partition=gpu-new", "--account=o\'brien lab"]\n'
            "\n"
            "[profiles.cpu]\n"
            'walltime_warnings = ["2m", 30, "10m"]\n'
            "idle_grace = 0\n"
        )
    )
    big = s.profiles["a100-big"]
    assert big == Profile(
        name="a100-big",
        sbatch=("--partition=a100", "--gres=gpu:a100:2", "--comment=ignored"),
        description='Big; "quoted" $(x)',
        idle_grace=5.0,
        connect_timeout=7200.0,
    )
    # a profile's --comment comes first: ours, last, is the one sbatch keeps
    assert sbatch_options(big, log_path=LOG, workdir=WORKDIR) == [
        *head(), "--partition=a100", "--gres=gpu:a100:2", "--comment=ignored", *tail("a100-big")
    ]  # fmt: skip
    gpu = s.profiles["gpu"]
    assert gpu.sbatch == ("--partition=gpu-new", "--account=o'brien lab")
    assert gpu.description == "One GPU on the gpu partition"  # kept from the built-in
    assert s.profiles["cpu"].sbatch == tuple(GOLDEN["cpu"])  # untouched keys stay
    assert s.profiles["cpu"].walltime_warnings == (600.0, 120.0, 30.0)
    assert s.profiles["cpu"].idle_grace == 0.0  # its own value beats [defaults]
    # [defaults] reaches every built-in profile that does not set the key itself
    others = {n: p.idle_grace for n, p in s.profiles.items() if n != "cpu"}
    assert others == dict.fromkeys(others, 5.0)
    assert s.defaults.idle_grace == 5.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90s", 90), ("10m", 600), (3600, 3600), ("4h", 14400), ("1d", 86400), ("1.5m", 90),
     (" 7 ", 7), (0, 0), (2.5, 2.5), ("0s", 0)],
)  # fmt: skip
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["10 minutes", "-5s", -1, True, "", "5x", "10M", None, [], "1e3", "m"]
)
def test_bad_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"duration|expected"):
        parse_duration(value)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_durations_are_refused(value: float) -> None:
    # TOML has nan and inf literals; poll_idle = nan made the watcher spin without polling.
    with pytest.raises(ValueError):
        parse_duration(value)


def test_nan_poll_interval_in_a_file_is_refused(write: Callable[[str | bytes], str]) -> None:
    path = write("[daemon]\npoll_idle = nan\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}:2: daemon.poll_idle: ")


def test_typo_key_names_file_line_key_and_the_allowed_keys(
    write: Callable[[str | bytes], str],
) -> None:
    path = write("")
    err = refusal(path, '# my config\n\n[profiles.cpu]\ndescription = "x"\nidel_grace = "5m"\n')
    assert str(err) == (
        f"{path}:5: profiles.cpu.idel_grace: unknown key; allowed here: connect_timeout, "
        "container, description, fallback_after, fallbacks, idle_grace, image, keep_pending, "
        "modules, runtime, sbatch, walltime_warnings"
    )
    assert (err.path, err.line, err.key) == (path, 5, "profiles.cpu.idel_grace")


@pytest.mark.parametrize(
    ("text", "line", "key", "detail"),
    [
        ('[profiles.cpu]\n\nsbatch = "x"\n', 3, "profiles.cpu.sbatch", "expected a list"),
        ("[profiles.cpu]\nsbatch = [1]\n", 2, "profiles.cpu.sbatch", "expected a list"),
        ('[profiles.cpu]\nsbatch = ["partition=gpu"]\n', 2, "profiles.cpu.sbatch",
         "'partition=gpu' is not an sbatch option"),
        ('\n[profiles."a;touch /tmp/pwned"]\nsbatch = ["-p"]\n', 2,
         'profiles."a;touch /tmp/pwned"', "profile names use a-z"),
        ('[profiles.GPU]\nsbatch = ["-p"]\n', 1, "profiles.GPU", "profile names use a-z"),
        ("[profiles.new]\ndescription = 'no sbatch'\n", 1, "profiles.new.sbatch",
         "a new profile needs its sbatch options"),
        ("[daemon]\n# low > high\nport_range = [30000, 20000]\n", 3, "daemon.port_range",
         "expected [low, high] with 1024 <= low <= high <= 65535"),
        ("[daemon]\nport_range = [80, 90]\n", 2, "daemon.port_range", "1024 <= low"),
        ("[daemon]\nport_range = [20000, 70000]\n", 2, "daemon.port_range", "1024 <= low"),
        ('[daemon]\nport_range = ["20000", 29999]\n', 2, "daemon.port_range", "1024 <= low"),
        ("[daemon]\nport_range = [20000]\n", 2, "daemon.port_range", "1024 <= low"),
        ('[daemon]\npoll_idle = "soon"\n', 2, "daemon.poll_idle", "got 'soon'"),
        ('[update]\nauto_update = "yes"\n', 2, "update.auto_update", "expected true or false"),
        ('[update]\nmode = "sometimes"\n', 2, "update.mode", "expected one of auto"),
        ('[update]\nmode = "off"\nauto_update = true\n', 3, "update.auto_update", "keep only mode"),
        ('[update]\nremote = "a"\nchannel = "b"\n', 2, "update.remote", "keep only channel"),
        ('[update]\ninterval = 5\n', 2, "update.interval", "at least 10 s"),
        ('[profiles.cpu]\ndescription = "a\\nb"\n', 2, "profiles.cpu.description", "newlines"),
        ("[defaults]\nwalltime_warnings = '10m'\n", 2, "defaults.walltime_warnings",
         "expected a list of durations"),
        ("# x\ndefaults = 5\n", 2, "defaults", "expected a table"),
        ("[profiles]\ncpu = 3\n", 2, "profiles.cpu", "expected a table"),
        ("[daemon]\nport = 1\n", 2, "daemon.port", "allowed here: idle_exit, poll_busy, poll_idle"),
    ],
)  # fmt: skip
def test_refusals_point_at_file_line_key(
    write: Callable[[str | bytes], str], text: str, line: int, key: str, detail: str
) -> None:
    path = write("")
    err = refusal(path, text)
    assert str(err).startswith(f"{path}:{line}: {key}: ")
    assert detail in err.detail
    assert (err.line, err.key) == (line, key)


def test_toml_syntax_error_names_its_line(write: Callable[[str | bytes], str]) -> None:
    path = write("[daemon]\npoll_busy = 1\n\npoll_idle = = 5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}:4: (syntax): ")
    assert caught.value.line == 4


def test_typo_in_a_section_name_points_at_its_line(write: Callable[[str | bytes], str]) -> None:
    path = write("")
    err = refusal(path, "# settings\n\n[deamon]\npoll_idle = 5\n")
    assert "deamon" in err.key
    assert "allowed at the top level: containers, daemon, defaults, profiles, update" in err.detail
    assert str(err).startswith(f"{path}:3: ")


def test_dotted_profile_name_points_at_its_line(write: Callable[[str | bytes], str]) -> None:
    path = write("")
    err = refusal(path, '# mine\n[profiles."gpu.big"]\nsbatch = ["-p"]\n')
    assert err.key == 'profiles."gpu.big"'
    assert err.line == 2


def test_file_that_is_not_utf8_is_a_config_error(write: Callable[[str | bytes], str]) -> None:
    # A Latin-1 editor's "Café": islurmd must refuse it like any bad file (its SIGHUP reload
    # only catches ConfigError and OSError, so anything else kills the daemon).
    path = write(b'[profiles.cpu]\ndescription = "Caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(path)
