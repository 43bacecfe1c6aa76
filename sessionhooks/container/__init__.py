"""Containers for a job's sessions: one interface (`base.Runtime`), one adapter per runtime.

The adapters are the only code that runs a container command (enroot, apptainer, podman)."""
