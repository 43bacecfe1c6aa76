"""islurm's version, read once from the installed distribution's metadata."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("islurm")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    VERSION = "0+unknown"
