"""The lines `islurmctl setup --container IMAGE` keeps in the login node's config.toml: one
marked block that sets the profiles' `image`, so `ssh slurm-<profile>` lands in that image.
Everything outside the block is the user's and stays byte for byte; `islurmctl uninstall
--remote` takes the block out again (and the file, when setup created it and nothing else is
in it). Pure text: the login node reads the result with the ordinary settings loader."""

from __future__ import annotations

from collections.abc import Iterable

import tomli_w

BEGIN = "# islurm setup: begin (written by `islurmctl setup --container`; re-run it to change)"
END = "# islurm setup: end"


def block(profiles: Iterable[str], image: str) -> str:
    """Our block: `[profiles.<p>] image = IMAGE` for each profile, between the markers."""
    body = tomli_w.dumps({"profiles": {p: {"image": image} for p in profiles}})
    return f"{BEGIN}\n{body.strip()}\n{END}\n"


def without_block(text: str) -> str:
    """`text` with our block (and the newline setup put before it) taken out; every
    other byte kept. A block whose end marker was deleted is left alone."""
    start = text.find(BEGIN + "\n")
    if start < 0:
        return text
    end = text.find(END + "\n", start)
    if end < 0:
        return text
    before, after = text[:start], text[end + len(END) + 1 :]
    if before.endswith("\n") and not after:  # the newline setup put before a block it appended
        before = before[:-1]
    return before + after


def with_image(text: str | None, profiles: Iterable[str], image: str | None) -> str | None:
    """The config.toml that sets `image` for `profiles` (None: no image, our block removed).
    None back means the file should not exist (it did not, and nothing goes in)."""
    rest = without_block(text or "")
    if not image:
        return None if text is None else rest
    return rest + ("\n" if rest else "") + block(profiles, image)


def has_block(text: str | None) -> bool:
    return text is not None and BEGIN + "\n" in text
