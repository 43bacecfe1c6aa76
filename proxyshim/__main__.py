"""`python -m islurm.proxyshim PROFILE`: the same as `islurm-proxy PROFILE`."""

import sys

from islurm.proxyshim.main import main

if __name__ == "__main__":
    sys.exit(main())
