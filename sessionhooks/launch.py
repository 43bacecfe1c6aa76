"""What the job runs: `<venv>/bin/python -I -S <site-packages>/islurm/sessionhooks/launch.py
ARGS` (docs/PROTOCOL.md §3). Python compiles the file it is given at every start and caches
only what it imports: this file stays a few lines, sessionhooks/main.py is imported (its
bytecode is cached at install). No site import (`-S`): site-packages, three levels up from
this file's path as given, replaces this file's own directory on `sys.path` (the dev tree's
islurm/sessionhooks is a symlink: resolving it would lose islurm/). Imported (islurmd
--selftest imports every module), it does nothing."""

import os
import sys

if __name__ == "__main__":
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from islurm.sessionhooks.main import main

    sys.exit(main())
