"""The container layer's one error, apart from the adapters: the session hook catches it
without importing them (they load only for a job with an image)."""


class ContainerError(RuntimeError):
    """A container could not be prepared, started or entered; the message says why."""
