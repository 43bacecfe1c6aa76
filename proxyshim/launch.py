"""What ssh's ProxyCommand runs: `<venv>/bin/python -I -S <site-packages>/islurm/proxyshim/
launch.py ARGS` (config/installs.py shim_command). Python compiles the file it is given at
every start and caches only what it imports: this file stays a few lines and main.py is
imported, its bytecode cached at install (compiling main.py cost 2-4 ms on every connect).

No site import (`-S`): site-packages, three levels up from this file's path as given, replaces
this file's own directory on `sys.path` (in the dev tree .dev/islurm/proxyshim is a symlink:
resolving it would lose the islurm/ level). Run through an install's `current` link, the
generation it names now is held on to, so an update switching it mid-session never mixes two
versions' modules in this process. Imported (islurmd --selftest imports every module), it does
nothing."""

import os
import sys


def site_packages(path: str) -> str:
    """The site-packages dir holding islurm, for this file's `path` as given."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    head, sep, tail = here.partition(os.sep + "current" + os.sep)
    if sep and os.path.islink(head + os.sep + "current"):
        here = os.path.join(head, os.readlink(head + os.sep + "current"), tail)
    return here


if __name__ == "__main__":
    sys.path[0] = site_packages(__file__)
    from islurm.proxyshim.main import main

    sys.exit(main())
