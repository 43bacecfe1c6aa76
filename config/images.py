"""Per-connect container images: what an `--image` argument may be, and the short key that
tells apart jobs of one profile running different images (it is in the job's Slurm name and
comment: docs/PROTOCOL.md §3). Stdlib only and import-light: the shim checks its `--image`
with it (no `re`, hashlib imported only when a key is made)."""

from __future__ import annotations

MAX_IMAGE = 1024  # characters; paths on project storage are far shorter
KEY_LEN = 12  # hex digits of SHA-256: 48 bits, no collision among one user's images
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_NAME_CHARS = _NAME_FIRST | frozenset("_.-")
_SCHEME_CHARS = _NAME_FIRST | frozenset("+.-")


class ImageArgError(ValueError):
    """An image argument that cannot be used; the message says what is allowed."""


def is_name(value: str) -> bool:
    """A name from `[containers] images` (a-z, 0-9, '_', '.', '-'; at most 40)."""
    return 0 < len(value) <= 40 and value[0] in _NAME_FIRST and all(c in _NAME_CHARS for c in value)


def check_image(value: str) -> str:
    """`value` if it is an absolute path without `.`/`..` parts, a reference with a scheme
    (`docker://debian:12`), or an image name from the config; else ImageArgError."""
    if not value:
        raise ImageArgError("the image is empty")
    if len(value) > MAX_IMAGE:
        raise ImageArgError(f"the image is longer than {MAX_IMAGE} characters")
    if not value.isprintable():
        raise ImageArgError(f"the image {value!r} contains control characters")
    if value.startswith("/"):
        if any(part in (".", "..") for part in value.split("/")):
            raise ImageArgError(f"the image path {value} has '.' or '..' parts: give it plainly")
        return value
    scheme, sep, rest = value.partition("://")
    if sep:
        if not scheme or not all(c in _SCHEME_CHARS for c in scheme) or not rest.strip():
            raise ImageArgError(f"the image reference {value!r} is not scheme://name")
        if any(c.isspace() for c in value):
            raise ImageArgError(f"the image reference {value!r} contains white space")
        return value
    if is_name(value):
        return value
    raise ImageArgError(
        f"the image {value!r} is neither an absolute path, a reference such as "
        "docker://debian:12, nor a name (a-z, 0-9, '_', '.', '-') from [containers] images"
    )


def image_key(image: str) -> str:
    """The key of the image a job runs ("" for none): the same image, the same key."""
    if not image:
        return ""
    import hashlib

    return hashlib.sha256(image.encode()).hexdigest()[:KEY_LEN]


def is_key(value: str) -> bool:
    return len(value) == KEY_LEN and all(c in "0123456789abcdef" for c in value)
